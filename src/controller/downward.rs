//! The downward API as a kubelet computes it: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef` with `containerName` and `divisor`), for env vars and for the files of
//! `downwardAPI` volumes and projected sources. Pure: the pod and the burst size in, text out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

use crate::policy::pod::parse_quantity;
use crate::policy::sizing::Size;

/// Why a downward-API reference has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `resourceFieldRef.containerName` names no container of the pod. Not retryable: the pod
    /// spec is immutable.
    #[error("resourceFieldRef names container {0}, which the pod does not have")]
    NoSuchContainer(String),
    /// The resource is not one the downward API exposes (or the divisor is not a quantity).
    #[error("resourceFieldRef {0} is not a resource the downward API exposes")]
    Unsupported(String),
}

/// What the pod runs in: the node's address and the size the gateway gave the workload (the
/// "node allocatable" of a burst pod, what an unset limit reports, as on a kubelet).
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// `status.hostIP`.
    pub ip: &'a str,
    /// The workload's size.
    pub size: Size,
}

/// A `fieldRef` value; `status.podIP` is unknown before the workload exists (empty), the
/// adapters that can fill it at run time (on-cluster) do.
pub fn field(pod: &Pod, path: &str, host_ip: &str) -> String {
    let m = &pod.metadata;
    let bracketed = |prefix: &str| path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']"));
    if let Some(k) = bracketed("metadata.labels['") {
        return m
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .cloned()
            .unwrap_or_default();
    }
    if let Some(k) = bracketed("metadata.annotations['") {
        return m
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
            .unwrap_or_default();
    }
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => m.labels.as_ref().map(key_values),
        "metadata.annotations" => m.annotations.as_ref().map(key_values),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => Some(host_ip.to_string()),
        _ => None,
    }
    .unwrap_or_default()
}

/// All labels or annotations as a downwardAPI volume file holds them: `key="value"` lines,
/// sorted by key, values quoted.
fn key_values(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef` value for `own` (the container whose env or mount asks), as the kubelet
/// computes it: the container named by `containerName` (else `own`), its limit (the burst size
/// when unset) or request, divided by `divisor` (default 1) and rounded up.
pub fn resource(
    pod: &Pod,
    own: Option<&Container>,
    selector: &ResourceFieldSelector,
    host: Host<'_>,
) -> Result<String, Error> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NoSuchContainer(name.to_string()))?,
        None => own.ok_or_else(|| Error::NoSuchContainer(String::new()))?,
    };
    let unsupported = || Error::Unsupported(selector.resource.clone());
    let (kind, name) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let resources = container.resources.as_ref();
    let quantity = |list: Option<&BTreeMap<String, _>>| {
        list.and_then(
            |l: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                l.get(name)
            },
        )
        .and_then(|q| parse_quantity(&q.0))
    };
    let allocatable = match name {
        "cpu" => host.size.milli_cpu as f64 / 1000.0,
        "memory" => host.size.memory_mib as f64 * 1024.0 * 1024.0,
        "ephemeral-storage" => 0.0,
        _ => return Err(unsupported()),
    };
    let value = match kind {
        "limits" => quantity(resources.and_then(|r| r.limits.as_ref())).unwrap_or(allocatable),
        "requests" => quantity(resources.and_then(|r| r.requests.as_ref())).unwrap_or(0.0),
        _ => return Err(unsupported()),
    };
    let divisor = match selector.divisor.as_ref() {
        Some(d) => parse_quantity(&d.0)
            .filter(|d| *d > 0.0)
            .ok_or_else(unsupported)?,
        None => 1.0,
    };
    // Milli-units first, as the kubelet divides MilliValue()s: no float noise in `500m / 1m`.
    let (value, divisor) = (
        (value * 1000.0).round(),
        (divisor * 1000.0).round().max(1.0),
    );
    Ok(((value / divisor).ceil() as u64).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "cart", "tier": "front \"end\""}},
            "spec": {"nodeName": "vk", "containers": [
                {"name": "app", "image": "nginx",
                 "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                               "limits": {"cpu": "1500m"}}},
                {"name": "sidecar", "image": "envoy",
                 "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "128Mi"}}}
            ]}
        }))
        .unwrap()
    }

    fn host() -> Host<'static> {
        Host {
            ip: "10.0.0.1",
            size: Size {
                milli_cpu: 2000,
                memory_mib: 4096,
            },
        }
    }

    fn selector(
        resource: &str,
        container: Option<&str>,
        divisor: Option<&str>,
    ) -> ResourceFieldSelector {
        ResourceFieldSelector {
            resource: resource.into(),
            container_name: container.map(str::to_string),
            divisor: divisor.map(|d| Quantity(d.into())),
        }
    }

    fn value(resource: &str, container: Option<&str>, divisor: Option<&str>) -> String {
        let pod = pod();
        let own = &pod.spec.as_ref().unwrap().containers[0];
        resource_value(&pod, own, resource, container, divisor)
    }

    fn resource_value(
        pod: &Pod,
        own: &Container,
        r: &str,
        c: Option<&str>,
        d: Option<&str>,
    ) -> String {
        resource(pod, Some(own), &selector(r, c, d), host()).unwrap()
    }

    #[test]
    fn downward_api_fields_come_from_the_pod_and_the_node() {
        let pod = pod();
        assert_eq!(field(&pod, "metadata.name", "10.0.0.1"), "web");
        assert_eq!(field(&pod, "metadata.labels['app']", "10.0.0.1"), "cart");
        assert_eq!(field(&pod, "spec.nodeName", "10.0.0.1"), "vk");
        assert_eq!(field(&pod, "status.hostIP", "10.0.0.1"), "10.0.0.1");
        assert_eq!(field(&pod, "status.podIP", "10.0.0.1"), "");
    }

    #[test]
    fn all_labels_are_sorted_quoted_key_value_lines_as_in_a_downward_api_volume() {
        assert_eq!(
            field(&pod(), "metadata.labels", ""),
            "app=\"cart\"\ntier=\"front \\\"end\\\"\""
        );
    }

    #[test]
    fn a_cpu_value_is_rounded_up_to_whole_cores_unless_a_divisor_says_otherwise() {
        assert_eq!(value("requests.cpu", None, None), "1");
        assert_eq!(value("requests.cpu", None, Some("1m")), "250");
        assert_eq!(value("limits.cpu", None, Some("500m")), "3");
    }

    #[test]
    fn memory_is_in_bytes_or_divided_by_the_divisor() {
        assert_eq!(value("requests.memory", None, None), "67108864");
        assert_eq!(value("requests.memory", None, Some("1Mi")), "64");
    }

    #[test]
    fn an_unset_limit_reports_the_burst_size_as_a_node_reports_its_allocatable() {
        assert_eq!(value("limits.memory", None, Some("1Mi")), "4096");
    }

    #[test]
    fn container_name_reads_another_containers_resources() {
        assert_eq!(value("limits.memory", Some("sidecar"), Some("1Mi")), "128");
        let pod = pod();
        let own = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            resource(
                &pod,
                Some(own),
                &selector("limits.cpu", Some("nope"), None),
                host()
            ),
            Err(Error::NoSuchContainer("nope".into()))
        );
    }

    #[test]
    fn a_resource_the_downward_api_does_not_expose_is_an_error() {
        let pod = pod();
        let own = &pod.spec.as_ref().unwrap().containers[0];
        assert!(matches!(
            resource(
                &pod,
                Some(own),
                &selector("limits.nvidia.com/gpu", None, None),
                host()
            ),
            Err(Error::Unsupported(_))
        ));
    }
}
