//! `/stats/summary` and `/metrics/resource`: what the gateway knows about the node's pods, with
//! the CPU and memory usage their providers report ([`Provider::usage`]: ACI from Azure Monitor,
//! on-cluster from the target cluster's metrics.k8s.io or its nodes' kubelets; Fargate and sim
//! report none).
//!
//! A pod whose provider reports no usage (or has no sample yet) carries no usage fields in the
//! summary and no usage series in `/metrics/resource`: metrics-server then skips it rather than
//! show zeros. Each figure is stamped with the provider's sample time, and the cumulative CPU
//! counter (`usageCoreNanoSeconds`, `container_cpu_usage_seconds_total`) is integrated from the
//! sampled rates by the provider's [`UsageCache`](crate::provider::kit::usage::UsageCache), so
//! metrics-server's rate between two scrapes of different samples is the newer sample's rate.
//! The node's usage is the sum over the pods that have one; with none, the node has none.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{Value, json};

use crate::controller::workloads::{Location, Workloads};
use crate::kubelet::error::{Error, Result};
use crate::kubelet::server::Shared;
use crate::provider::{ProviderError, WorkloadUsage};

/// The node's pods' usage, by pod UID, and whether a provider that reports usage failed.
#[derive(Debug, Default)]
pub struct Usage {
    /// The last sample of each pod that has one.
    pub pods: HashMap<String, WorkloadUsage>,
    /// A provider's usage read failed (`scrape_error 1`).
    pub failed: bool,
}

/// Summed figures at the newest sample time of what was summed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    time: DateTime<Utc>,
    cores: f64,
    core_seconds: f64,
    memory: u64,
}

impl Figures {
    fn of(usage: &WorkloadUsage) -> Figures {
        Figures {
            time: usage.sampled_at,
            cores: usage.containers.iter().map(|c| c.cpu_cores).sum(),
            core_seconds: usage.containers.iter().map(|c| c.cpu_core_seconds).sum(),
            memory: usage.containers.iter().map(|c| c.memory_bytes).sum(),
        }
    }

    fn plus(self, other: Figures) -> Figures {
        Figures {
            time: self.time.max(other.time),
            cores: self.cores + other.cores,
            core_seconds: self.core_seconds + other.core_seconds,
            memory: self.memory + other.memory,
        }
    }

    fn cpu(&self) -> Value {
        json!({
            "time": stamp(self.time),
            "usageNanoCores": (self.cores * 1e9).round() as u64,
            "usageCoreNanoSeconds": (self.core_seconds * 1e9).round() as u64,
        })
    }

    fn memory(&self) -> Value {
        json!({"time": stamp(self.time), "workingSetBytes": self.memory, "usageBytes": self.memory})
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

/// The node's figures: the sum over `usage`'s pods, none when no pod has usage.
fn node_figures(usage: &Usage) -> Option<Figures> {
    usage.pods.values().map(Figures::of).reduce(Figures::plus)
}

/// The Summary API document (`stats/v1alpha1`) for `node`, up since `started`.
pub fn summary(node: &str, started: DateTime<Utc>, pods: &[Pod], usage: &Usage) -> Value {
    let pods: Vec<Value> = pods
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let sample = usage.pods.get(uid(p));
            let containers: Vec<Value> = status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    let started = c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()).map(|t| t.0.to_string());
                    let mut out = json!({"name": c.name, "startTime": started});
                    if let Some(s) = sample
                        && let Some(u) = s.containers.iter().find(|u| u.name == c.name)
                    {
                        let f = Figures { time: s.sampled_at, cores: u.cpu_cores, core_seconds: u.cpu_core_seconds, memory: u.memory_bytes };
                        out["cpu"] = f.cpu();
                        out["memory"] = f.memory();
                    }
                    out
                })
                .collect();
            let mut out = json!({
                "podRef": {"name": p.metadata.name, "namespace": p.metadata.namespace, "uid": p.metadata.uid},
                "startTime": status.start_time.map(|t| t.0.to_string()),
                "containers": containers,
            });
            if let Some(s) = sample {
                let f = Figures::of(s);
                out["cpu"] = f.cpu();
                out["memory"] = f.memory();
            }
            out
        })
        .collect();
    let mut node = json!({"nodeName": node, "startTime": stamp(started), "systemContainers": []});
    if let Some(f) = node_figures(usage) {
        node["cpu"] = f.cpu();
        node["memory"] = f.memory();
    }
    json!({"node": node, "pods": pods})
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The resource metrics (Prometheus text format, as the kubelet's `/metrics/resource`) for
/// `pods`: usage series (with the sample's timestamp, milliseconds) for the pods in `usage`,
/// the node's sum, container start times and `scrape_error`.
pub fn resource_metrics(pods: &[Pod], usage: &Usage) -> String {
    let mut out = String::new();
    let labels = |p: &Pod| {
        (
            escape(p.metadata.name.as_deref().unwrap_or_default()),
            escape(p.metadata.namespace.as_deref().unwrap_or_default()),
        )
    };
    let sampled: Vec<(&Pod, &WorkloadUsage)> = pods
        .iter()
        .filter_map(|p| Some((p, usage.pods.get(uid(p))?)))
        .collect();
    let series = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
        ),
    ];
    for (i, (name, kind, help)) in series.into_iter().enumerate() {
        header(&mut out, name, kind, help);
        for (p, s) in &sampled {
            let (pod, namespace) = labels(p);
            let ms = s.sampled_at.timestamp_millis();
            for c in &s.containers {
                let value = if i == 0 {
                    c.cpu_core_seconds.to_string()
                } else {
                    c.memory_bytes.to_string()
                };
                let _ = writeln!(
                    out,
                    "{name}{{container=\"{}\",namespace=\"{namespace}\",pod=\"{pod}\"}} {value} {ms}",
                    escape(&c.name)
                );
            }
        }
    }
    let pod_series = [
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
        ),
        (
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
        ),
    ];
    for (i, (name, kind, help)) in pod_series.into_iter().enumerate() {
        header(&mut out, name, kind, help);
        for (p, s) in &sampled {
            let (pod, namespace) = labels(p);
            let f = Figures::of(s);
            let value = if i == 0 {
                f.core_seconds.to_string()
            } else {
                f.memory.to_string()
            };
            let ms = f.time.timestamp_millis();
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{namespace}\",pod=\"{pod}\"}} {value} {ms}"
            );
        }
    }
    if let Some(f) = node_figures(usage) {
        let ms = f.time.timestamp_millis();
        header(
            &mut out,
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds (the sum over its pods that report usage)",
        );
        let _ = writeln!(out, "node_cpu_usage_seconds_total {} {ms}", f.core_seconds);
        header(
            &mut out,
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes (the sum over its pods that report usage)",
        );
        let _ = writeln!(out, "node_memory_working_set_bytes {} {ms}", f.memory);
    }
    header(
        &mut out,
        "scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "scrape_error {}", u8::from(usage.failed));
    header(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    for p in pods {
        let (name, namespace) = labels(p);
        for c in p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(started) = c
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
            else {
                continue;
            };
            let seconds = started.0.as_second();
            let _ = writeln!(
                out,
                "container_start_time_seconds{{container=\"{}\",namespace=\"{namespace}\",pod=\"{name}\"}} {seconds}",
                escape(&c.name),
            );
        }
    }
    out
}

/// The node's pods, metadata and status only, listed a page at a time (a scrape never holds
/// every pod's spec).
async fn node_pods(shared: &Shared) -> Result<Vec<Pod>> {
    let node = shared.workloads.node_name();
    let api: Api<Pod> = Api::all(shared.workloads.client().clone());
    crate::controller::listing::statuses(&api, &format!("spec.nodeName={node}"))
        .await
        .map_err(|source| Error::Api {
            pod: format!("*/* on {node}"),
            source,
        })
}

/// A target's provider and its pods on this node: (workload id, pod UID).
type TargetPods = (Arc<dyn crate::provider::Provider>, Vec<(String, String)>);

/// The usage of `pods`, one [`Provider::usage`](crate::provider::Provider::usage) call per
/// target; a provider that reports none leaves its pods without usage, one that failed also sets
/// [`Usage::failed`].
pub async fn usage(workloads: &dyn Workloads, pods: &[Pod]) -> Usage {
    let mut by_target: BTreeMap<String, TargetPods> = BTreeMap::new();
    for p in pods {
        if let Location::Found {
            target,
            workload,
            provider,
        } = workloads.locate(p)
        {
            by_target
                .entry(target)
                .or_insert_with(|| (provider, Vec::new()))
                .1
                .push((workload, uid(p).to_string()));
        }
    }
    let mut out = Usage::default();
    for (target, (provider, placed)) in by_target {
        let ids: Vec<String> = placed.iter().map(|(w, _)| w.clone()).collect();
        match provider.usage(&ids).await {
            Ok(mut samples) => {
                for (workload, pod_uid) in placed {
                    if let Some(sample) = samples.remove(&workload) {
                        out.pods.insert(pod_uid, sample);
                    }
                }
            }
            Err(ProviderError::NotSupported { .. }) => {
                tracing::debug!(%target, "kubelet API: the target reports no usage");
            }
            Err(e) => {
                tracing::info!(%target, error = %e, "kubelet API: reading usage failed");
                out.failed = true;
            }
        }
    }
    out
}

/// The `/stats/summary` handler.
pub async fn summary_handler(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let pods = node_pods(&shared).await?;
    let usage = usage(shared.workloads.as_ref(), &pods).await;
    let body = summary(shared.workloads.node_name(), shared.started, &pods, &usage).to_string();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The `/metrics/resource` handler.
pub async fn resource_metrics_handler(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let pods = node_pods(&shared).await?;
    let usage = usage(shared.workloads.as_ref(), &pods).await;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        resource_metrics(&pods, &usage),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ContainerUsage;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "status": {"startTime": "2026-11-27T07:00:00Z", "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "image": "nginx", "imageID": "",
                 "state": {"running": {"startedAt": "2026-11-27T07:00:02Z"}}}
            ]}
        }))
        .unwrap()
    }

    fn usage() -> Usage {
        let sample = WorkloadUsage {
            sampled_at: "2026-11-27T07:05:00Z".parse().unwrap(),
            window: std::time::Duration::from_secs(60),
            containers: vec![ContainerUsage {
                name: "app".into(),
                cpu_cores: 0.25,
                cpu_core_seconds: 15.5,
                memory_bytes: 50 << 20,
            }],
        };
        Usage {
            pods: HashMap::from([("u1".to_string(), sample)]),
            failed: false,
        }
    }

    #[test]
    fn the_summary_lists_each_pod_with_its_containers() {
        let s = summary(
            "burstgate",
            DateTime::UNIX_EPOCH,
            &[pod()],
            &Usage::default(),
        );
        assert_eq!(s["node"]["nodeName"], "burstgate");
        assert_eq!(
            s["pods"][0]["podRef"],
            json!({"name": "web", "namespace": "team", "uid": "u1"})
        );
        assert_eq!(s["pods"][0]["containers"][0]["name"], "app");
        assert_eq!(
            s["pods"][0]["containers"][0]["startTime"],
            "2026-11-27T07:00:02Z"
        );
    }

    #[test]
    fn a_pod_without_usage_has_no_usage_fields_and_neither_has_the_node() {
        let s = summary(
            "burstgate",
            DateTime::UNIX_EPOCH,
            &[pod()],
            &Usage::default(),
        );
        assert!(s["pods"][0].get("cpu").is_none(), "{s}");
        assert!(s["pods"][0]["containers"][0].get("memory").is_none(), "{s}");
        assert!(s["node"].get("cpu").is_none(), "{s}");
        let text = resource_metrics(&[pod()], &Usage::default());
        assert!(
            !text.contains("container_cpu_usage_seconds_total{"),
            "{text}"
        );
        assert!(!text.contains("node_memory_working_set_bytes"), "{text}");
    }

    #[test]
    fn the_summary_carries_the_providers_sample_per_container_pod_and_node() {
        let s = summary("burstgate", DateTime::UNIX_EPOCH, &[pod()], &usage());
        let cpu = json!({"time": "2026-11-27T07:05:00Z", "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": 15_500_000_000u64});
        let memory = json!({"time": "2026-11-27T07:05:00Z", "workingSetBytes": 50u64 << 20, "usageBytes": 50u64 << 20});
        assert_eq!(s["pods"][0]["containers"][0]["cpu"], cpu);
        assert_eq!(s["pods"][0]["containers"][0]["memory"], memory);
        assert_eq!(s["pods"][0]["cpu"], cpu);
        assert_eq!(s["node"]["cpu"], cpu);
        assert_eq!(s["node"]["memory"], memory);
    }

    #[test]
    fn resource_metrics_carry_usage_with_the_sample_time_and_the_start_times() {
        let text = resource_metrics(&[pod()], &usage());
        let ms = 1795763100000i64;
        for line in [
            format!("container_cpu_usage_seconds_total{{container=\"app\",namespace=\"team\",pod=\"web\"}} 15.5 {ms}"),
            format!("container_memory_working_set_bytes{{container=\"app\",namespace=\"team\",pod=\"web\"}} 52428800 {ms}"),
            format!("pod_cpu_usage_seconds_total{{namespace=\"team\",pod=\"web\"}} 15.5 {ms}"),
            format!("pod_memory_working_set_bytes{{namespace=\"team\",pod=\"web\"}} 52428800 {ms}"),
            format!("node_cpu_usage_seconds_total 15.5 {ms}"),
            format!("node_memory_working_set_bytes 52428800 {ms}"),
            "scrape_error 0".to_string(),
            "container_start_time_seconds{container=\"app\",namespace=\"team\",pod=\"web\"} 1795762802".to_string(),
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing from:\n{text}");
        }
        assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
    }
}
