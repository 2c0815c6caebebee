//! Pod spec -> simulated workload (pure): containers, restart policy, behaviour annotations, and
//! the checks a real cloud would make before accepting it.

use crate::provider::contract::{ProviderError, WorkloadSpec};
use crate::provider::sim::retry::SimFault;

/// Annotation: containers exit after running this many seconds.
pub const ANNOTATION_EXIT_AFTER: &str = "sim.burstgate.io/exit-after-seconds";
/// Annotation: the exit code they exit with (default 0).
pub const ANNOTATION_EXIT_CODE: &str = "sim.burstgate.io/exit-code";
/// Images on this registry are "not accessible", as ACI answers for a wrong registry secret.
const INACCESSIBLE_REGISTRY: &str = "invalid.example";

/// What the simulated cloud runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimWorkload {
    /// Container names and images, in pod order.
    pub(crate) containers: Vec<(String, String)>,
    /// `Always`, `OnFailure` or `Never`.
    pub(crate) restart_policy: String,
    /// Seconds each run lasts before the containers exit; `None` runs forever.
    pub(crate) exit_after_seconds: Option<u64>,
    /// Exit code of each run.
    pub(crate) exit_code: i32,
}

/// Translates a pod into a simulated workload, refusing what the cloud would refuse.
pub(crate) fn translate(spec: &WorkloadSpec) -> Result<SimWorkload, ProviderError> {
    let pod_spec = spec
        .pod
        .spec
        .as_ref()
        .ok_or_else(|| SimFault::InvalidSpec("pod has no spec".into()).into_error())?;
    let containers: Vec<(String, String)> = pod_spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    if containers.is_empty() {
        return Err(SimFault::InvalidSpec("pod has no containers".into()).into_error());
    }
    if let Some((_, image)) = containers
        .iter()
        .find(|(_, image)| image.split('/').next() == Some(INACCESSIBLE_REGISTRY))
    {
        return Err(SimFault::InaccessibleImage {
            image: image.clone(),
            group: spec.id.clone(),
        }
        .into_error());
    }
    let annotations = spec.pod.metadata.annotations.clone().unwrap_or_default();
    let number = |key: &str| -> Result<Option<i64>, ProviderError> {
        annotations
            .get(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    SimFault::InvalidSpec(format!("annotation {key}={v:?} is not an integer"))
                        .into_error()
                })
            })
            .transpose()
    };
    Ok(SimWorkload {
        containers,
        restart_policy: pod_spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        exit_after_seconds: number(ANNOTATION_EXIT_AFTER)?.map(|v| v.max(0) as u64),
        exit_code: number(ANNOTATION_EXIT_CODE)?.unwrap_or(0) as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sizing::Size;
    use crate::provider::contract::Owner;
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

    fn spec(image: &str, annotations: &[(&str, &str)]) -> WorkloadSpec {
        let mut pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        WorkloadSpec {
            id: "bg-1".into(),
            owner: Owner {
                cluster_id: "c".into(),
                node: "n".into(),
                namespace: "d".into(),
                pod: "p".into(),
                pod_uid: "1".into(),
            },
            target: "sim".into(),
            region: "local".into(),
            size: Size::default(),
            pod,
            resolved: Default::default(),
        }
    }

    #[test]
    fn an_image_on_an_unreachable_registry_is_refused_as_inaccessible() {
        let err = translate(&spec("invalid.example/app:1", &[])).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Pod(crate::provider::PodRejection::Cloud { code, .. }) if code == "InaccessibleImage"),
            "{err}"
        );
        assert!(err.to_string().contains("invalid.example/app:1"));
    }

    #[test]
    fn behaviour_annotations_set_exit_time_and_code() {
        let w = translate(&spec(
            "nginx",
            &[(ANNOTATION_EXIT_AFTER, "3"), (ANNOTATION_EXIT_CODE, "2")],
        ))
        .unwrap();
        assert_eq!(
            (w.exit_after_seconds, w.exit_code, w.restart_policy.as_str()),
            (Some(3), 2, "Always")
        );
    }

    #[test]
    fn a_malformed_behaviour_annotation_is_an_invalid_spec() {
        let err = translate(&spec("nginx", &[(ANNOTATION_EXIT_CODE, "x")])).unwrap_err();
        assert!(matches!(err, ProviderError::Pod(_)));
    }
}
