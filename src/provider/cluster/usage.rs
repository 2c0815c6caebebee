//! The target cluster's `metrics.k8s.io` PodMetrics of shadow pods -> their usage (pure): what
//! metrics-server there measured (`usage.cpu`, `usage.memory` per container, at `timestamp`,
//! over `window`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::policy::pod::parse_quantity;
use crate::provider::contract::{ContainerUsage, WorkloadUsage};

/// A `PodMetricsList`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodMetricsList {
    /// One per pod metrics-server has a sample of.
    #[serde(default)]
    pub(crate) items: Vec<PodMetrics>,
}

/// One pod's `PodMetrics`.
#[derive(Debug, Deserialize)]
pub(crate) struct PodMetrics {
    /// Its name is the shadow pod's (the workload id).
    pub(crate) metadata: Named,
    /// When metrics-server took the sample (RFC 3339).
    #[serde(default)]
    pub(crate) timestamp: Option<String>,
    /// The window the CPU figure is averaged over (`30s`, or a Go duration like `1m0s`).
    #[serde(default)]
    pub(crate) window: Option<String>,
    /// Per container.
    #[serde(default)]
    pub(crate) containers: Vec<ContainerMetrics>,
}

/// An object's name.
#[derive(Debug, Deserialize)]
pub(crate) struct Named {
    /// The name.
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// One container's figures.
#[derive(Debug, Deserialize)]
pub(crate) struct ContainerMetrics {
    /// Container name.
    pub(crate) name: String,
    /// `cpu` and `memory` quantities.
    #[serde(default)]
    pub(crate) usage: std::collections::BTreeMap<String, String>,
}

/// A Go duration as metrics-server writes it (`30s`, `1m0s`, `1.5s`, `500ms`); `None` otherwise.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += value
            * match &rest[..unit] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return None,
            };
        rest = &rest[unit..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The usage of `pod`, `None` when it has no readable timestamp or no container figures.
pub(crate) fn usage_of(pod: &PodMetrics) -> Option<WorkloadUsage> {
    let sampled_at = DateTime::parse_from_rfc3339(pod.timestamp.as_deref()?)
        .ok()?
        .with_timezone(&Utc);
    let containers: Vec<ContainerUsage> = pod
        .containers
        .iter()
        .filter_map(|c| {
            Some(ContainerUsage {
                name: c.name.clone(),
                cpu_cores: parse_quantity(c.usage.get("cpu")?)?,
                cpu_core_seconds: 0.0,
                memory_bytes: parse_quantity(c.usage.get("memory")?)?.round() as u64,
            })
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    Some(WorkloadUsage {
        sampled_at,
        window: pod
            .window
            .as_deref()
            .and_then(go_duration)
            .unwrap_or(Duration::from_secs(30)),
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_metrics_item_reads_in_cores_and_bytes() {
        let list: PodMetricsList =
            serde_json::from_value(json!({"kind": "PodMetricsList", "items": [{
                "metadata": {"name": "bg-1", "namespace": "shadow"},
                "timestamp": "2026-12-06T10:00:00Z", "window": "1m0s",
                "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "64Mi"}},
                               {"name": "side", "usage": {"cpu": "12345n"}}]
            }]}))
            .unwrap();
        let usage = usage_of(&list.items[0]).unwrap();
        assert_eq!(usage.window, Duration::from_secs(60));
        assert_eq!(
            usage.containers,
            vec![ContainerUsage {
                name: "app".into(),
                cpu_cores: 0.25,
                cpu_core_seconds: 0.0,
                memory_bytes: 64 << 20
            }],
            "a container without a memory figure has no sample"
        );
    }

    #[test]
    fn go_durations_as_metrics_server_writes_them_parse() {
        assert_eq!(go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("soon"), None);
    }
}
