//! `/stats/summary` and `/metrics/resource`: what the gateway knows about the node's pods.
//!
//! Providers report no CPU or memory usage yet, so the summary lists the node and each pod with
//! its containers and start times, without usage fields (metrics-server then skips them), and
//! `/metrics/resource` carries `scrape_error 0` and container start times.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::kubelet::error::{Error, Result};
use crate::kubelet::server::Shared;

/// The Summary API document (`stats/v1alpha1`) for `node`, up since `started`.
pub fn summary(node: &str, started: DateTime<Utc>, pods: &[Pod]) -> Value {
    let pods: Vec<Value> = pods
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let containers: Vec<Value> = status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    let started = c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()).map(|t| t.0.to_string());
                    json!({"name": c.name, "startTime": started})
                })
                .collect();
            json!({
                "podRef": {"name": p.metadata.name, "namespace": p.metadata.namespace, "uid": p.metadata.uid},
                "startTime": status.start_time.map(|t| t.0.to_string()),
                "containers": containers,
            })
        })
        .collect();
    json!({
        "node": {"nodeName": node, "startTime": started.to_rfc3339_opts(SecondsFormat::Secs, true), "systemContainers": []},
        "pods": pods,
    })
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The resource metrics (Prometheus text format) for `pods`.
pub fn resource_metrics(pods: &[Pod]) -> String {
    let mut out = String::new();
    out.push_str("# HELP scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n");
    out.push_str("# TYPE scrape_error gauge\nscrape_error 0\n");
    out.push_str("# HELP container_start_time_seconds Start time of the container since unix epoch in seconds\n");
    out.push_str("# TYPE container_start_time_seconds gauge\n");
    for p in pods {
        let (name, namespace) = (
            p.metadata.name.clone().unwrap_or_default(),
            p.metadata.namespace.clone().unwrap_or_default(),
        );
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
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {seconds}",
                escape(&c.name),
                escape(&namespace),
                escape(&name)
            );
        }
    }
    out
}

async fn node_pods(shared: &Shared) -> Result<Vec<Pod>> {
    let node = shared.workloads.node_name();
    let api: Api<Pod> = Api::all(shared.workloads.client().clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let list = api.list(&params).await.map_err(|source| Error::Api {
        pod: format!("*/* on {node}"),
        source,
    })?;
    Ok(list.items)
}

/// The `/stats/summary` handler.
pub async fn summary_handler(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let pods = node_pods(&shared).await?;
    let body = summary(shared.workloads.node_name(), shared.started, &pods).to_string();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The `/metrics/resource` handler.
pub async fn resource_metrics_handler(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let pods = node_pods(&shared).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        resource_metrics(&pods),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_summary_lists_each_pod_with_its_containers() {
        let s = summary("burstgate", DateTime::UNIX_EPOCH, &[pod()]);
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
    fn resource_metrics_carry_no_scrape_error_and_the_start_times() {
        let text = resource_metrics(&[pod()]);
        assert!(text.contains("scrape_error 0\n"), "{text}");
        assert!(text.contains("container_start_time_seconds{container=\"app\",namespace=\"team\",pod=\"web\"} 1795762802\n"), "{text}");
    }
}
