//! Admission: the pod features no configured provider can run (pure). A pod using any of them
//! fails at once with reason `Unsupported`, instead of waiting Pending forever.

use k8s_openapi::api::core::v1::Pod;

use crate::provider::Capabilities;

/// The features of `pod` that none of the providers (whose capabilities are `caps`) supports,
/// in words, in a stable order. Empty when the pod can run.
pub fn unsupported_features(pod: &Pod, caps: &Capabilities) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else { return out };
    if spec.host_network == Some(true) {
        out.push("hostNetwork".to_string());
    }
    if spec.host_pid == Some(true) {
        out.push("hostPID".to_string());
    }
    if spec.host_ipc == Some(true) {
        out.push("hostIPC".to_string());
    }
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in all {
        if !caps.privileged && c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
        {
            out.push(format!("privileged container {}", c.name));
        }
        for p in c.ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                out.push(format!(
                    "hostPort {} in container {}",
                    p.host_port.unwrap_or(0),
                    c.name
                ));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if !caps.host_path && v.host_path.is_some() {
            out.push(format!("hostPath volume {}", v.name));
        }
        if !caps.persistent_volumes && v.persistent_volume_claim.is_some() {
            out.push(format!("persistentVolumeClaim volume {}", v.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, HostPathVolumeSource, PodSpec, SecurityContext, Volume,
    };

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_pod_is_supported() {
        let p = pod(PodSpec {
            containers: vec![Container {
                name: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(unsupported_features(&p, &Capabilities::default()).is_empty());
    }

    #[test]
    fn host_path_privileged_and_host_network_are_all_listed() {
        let p = pod(PodSpec {
            host_network: Some(true),
            containers: vec![Container {
                name: "a".into(),
                security_context: Some(SecurityContext {
                    privileged: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "logs".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/log".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            unsupported_features(&p, &Capabilities::default()),
            vec![
                "hostNetwork",
                "privileged container a",
                "hostPath volume logs"
            ]
        );
    }

    #[test]
    fn a_provider_declaring_host_path_support_admits_it() {
        let p = pod(PodSpec {
            containers: vec![Container {
                name: "a".into(),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "v".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/x".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(
            unsupported_features(
                &p,
                &Capabilities {
                    host_path: true,
                    ..Default::default()
                }
            )
            .is_empty()
        );
    }
}
