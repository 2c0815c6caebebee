//! The adapters' pure steps, reachable by the fuzz targets in `fuzz/` (feature `fuzzing` only).
//!
//! The translators, status mappings and error classifiers of the adapters are `pub(crate)`: the
//! rest of the crate reaches them through the `Provider` impls, which need a cloud. These
//! functions run each step as its adapter does, from plain inputs (a `WorkloadSpec`, a reply's
//! status, headers and bytes), and return what a fuzz target can check. `targets` holds the
//! bodies of the fuzz targets and what they share (arbitrary pods, replies, a stub ECS client);
//! `short_run` runs them in the test suite. Only test builds and the `fuzzing` feature have them.

pub mod ecs;
pub mod harness;
pub mod pod;
pub mod reply;
#[cfg(test)]
mod short_run;
pub mod targets;
pub mod words;

use std::time::Duration;

use aws_sdk_ecs::types::Task;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

use crate::provider::contract::{OwnedWorkload, ProviderError, WorkloadSpec, WorkloadStatus};
use crate::provider::kit::TranslateError;
use crate::provider::{aci, cluster, fargate};

/// The time every fuzzed translation is stamped with, and status is read at.
const NOW: &str = "2026-11-27T05:00:00Z";

/// ACI: the container group PUT body for `spec` on the target `settings` describes, as JSON.
pub fn aci_translate(
    spec: &WorkloadSpec,
    settings: &aci::Settings,
) -> Result<serde_json::Value, TranslateError> {
    let body = aci::translate::translate(spec, settings, NOW)?;
    Ok(serde_json::to_value(&body).expect("a container group body serializes"))
}

/// What the ACI adapter makes of one ARM answer to a container group GET.
#[derive(Debug)]
pub struct AciReply {
    /// The error (a non-200 answer, or a 200 whose body is not a container group), classified.
    pub error: Option<ProviderError>,
    /// The group's status, when the body is one.
    pub status: Option<WorkloadStatus>,
    /// The group as orphan GC sees it, when it is ours.
    pub owned: Option<OwnedWorkload>,
    /// Whether a listed group like it would be read again.
    pub needs_get: bool,
    /// The request budget ARM says is low, if any.
    pub low_budget: Option<String>,
}

/// ACI: the ARM answer `status`, `headers` (lower-case names) and `body` to a container group
/// GET of workload `id`, read as `aci/arm.rs` reads it, then mapped by `aci/status.rs`.
pub fn aci_reply(id: &str, status: u16, headers: &[(String, String)], body: &[u8]) -> AciReply {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let low_budget = aci::retry::ArmBudget::from_headers(header).low();
    let mut reply = AciReply {
        error: None,
        status: None,
        owned: None,
        needs_get: false,
        low_budget,
    };
    if status != 200 {
        let after = aci::retry::retry_after(header);
        reply.error = Some(aci::retry::arm_error(status, body, after).into_provider_error());
        return reply;
    }
    match serde_json::from_slice::<aci::status::GroupView>(body) {
        Ok(group) => {
            let now = now();
            reply.status = Some(aci::status::workload_status(id, &group));
            reply.owned = aci::status::owned_workload(&group, now, "cluster", "burstgate");
            let cadence = aci::status::Cadence::eager();
            reply.needs_get =
                aci::status::needs_get(None, &group, &cadence, cadence.running_interval(1));
        }
        Err(e) => {
            let decode = aci::retry::AciError::Decode {
                what: "ContainerGroups_Get",
                message: e.to_string(),
            };
            reply.error = Some(decode.into_provider_error());
        }
    }
    reply
}

/// Fargate: the task definition (secret names replaced by made-up ARNs, as after Secrets
/// Manager answered), the secrets and the RunTask tags for `spec`, as JSON.
pub fn fargate_translate(
    spec: &WorkloadSpec,
    settings: &fargate::Settings,
) -> Result<serde_json::Value, TranslateError> {
    let plan = fargate::translate::plan(spec, settings)?;
    let arns = plan
        .secrets
        .iter()
        .map(|s| {
            let arn = format!(
                "arn:aws:secretsmanager:us-east-1:1:secret:{}-AbCdEf",
                s.name
            );
            (s.name.clone(), arn)
        })
        .collect();
    let def = plan.finish(&arns)?;
    Ok(serde_json::json!({
        "definition": serde_json::to_value(&def).expect("a task definition serializes"),
        "secrets": plan.secrets.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "tags": plan.tags,
        "startedBy": plan.started_by,
        "clientToken": plan.client_token,
    }))
}

/// Fargate: the status of the task DescribeTasks returned, and the workload it belongs to.
pub fn fargate_task_status(task: &Task) -> (Option<String>, WorkloadStatus) {
    let id = fargate::status::workload_of(task).map(str::to_string);
    let status = fargate::status::workload_status(id.as_deref().unwrap_or("bg-x"), task);
    (id, status)
}

/// Fargate: an AWS SDK error of the call `api`, classified.
pub fn fargate_error<E>(api: &str, err: &SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fargate::retry::classify(api, err)
}

/// Fargate: one entry of RunTask's `failures`, classified.
pub fn fargate_failure(
    reason: Option<&str>,
    detail: Option<&str>,
    arn: Option<&str>,
) -> ProviderError {
    fargate::retry::classify_failure(reason, detail, arn)
}

/// Cluster: the shadow pod (and its Secrets) for `spec` in `namespace`, as JSON.
pub fn cluster_translate(
    spec: &WorkloadSpec,
    namespace: &str,
) -> Result<serde_json::Value, TranslateError> {
    let shadow = cluster::translate::translate(spec, namespace)?;
    Ok(serde_json::json!({
        "pod": shadow.pod,
        "secret": shadow.secret,
        "registrySecret": shadow.registry_secret,
    }))
}

/// Cluster: the status of shadow pod `pod` (as the API server returned it), read at a fixed
/// time with a 60 s unschedulable grace.
pub fn cluster_status(pod: &Pod) -> WorkloadStatus {
    let now = NOW.parse().expect("a timestamp");
    cluster::status::workload_status(pod, now, Duration::from_secs(60))
}

/// Cluster: an error Status the API server returned (`kube::Error::Api`), classified.
pub fn cluster_error(status: kube::core::Status) -> ProviderError {
    cluster::retry::provider_error(&kube::Error::Api(status.boxed()))
}

/// Cluster: the exit code of an exec's final Status, or the pod's error.
pub fn cluster_exec_exit(status: &Status) -> Result<i32, ProviderError> {
    cluster::status::exec_exit_code(status)
}

fn now() -> DateTime<Utc> {
    aci::status::parse_time(NOW).expect("a time")
}
