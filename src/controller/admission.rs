//! Admission: the pod features no configured provider can run (pure). A pod using any of them
//! fails at once with reason `Unsupported`, instead of waiting Pending forever. The features and
//! what each adapter runs come from the adapter kit (`provider::kit::features`).

use k8s_openapi::api::core::v1::Pod;

use crate::provider::Capabilities;
use crate::provider::kit::pod_features;

/// The features of `pod` that none of the providers (whose capabilities together are `caps`)
/// runs, in words, in a stable order. Empty when the pod can run.
pub fn unsupported_features(pod: &Pod, caps: &Capabilities) -> Vec<String> {
    let uses = pod_features(pod);
    caps.missing(&uses).iter().map(|u| u.to_string()).collect()
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
                "privileged container in container a",
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
                &Capabilities::NONE.running(&[crate::provider::kit::Feature::HostPathVolume])
            )
            .is_empty()
        );
    }
}
