//! Shadow pod status -> `WorkloadStatus` (pure): phase, podIP, start time, container states with
//! exit codes, restarts and readiness; plus the "cluster full" verdict and exec exit statuses.
//!
//! # Cluster full
//! A shadow pod the target's scheduler cannot place (`PodScheduled=False`, reason
//! `Unschedulable`) is `Pending` with every container `Waiting { reason: "Unschedulable" }` and
//! the scheduler's message, for a grace period (default [`DEFAULT_UNSCHEDULABLE_GRACE`], counted
//! from the condition's transition time). Past it the phase is
//! `WorkloadPhase::Rejected(TargetRejection::Unschedulable)` with a message saying the cluster is
//! full, so the controller treats it like a create the target refused, without knowing which
//! adapter said it: delete the workload (the shadow pod is still Pending there and would start
//! later), release the reservation, exclude the target and decide again.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStatus as KStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::provider::contract::{
    ContainerState, ContainerStatus, ProviderError, TargetRejection, WorkloadPhase, WorkloadStatus,
};

/// How long a shadow pod may stay unschedulable before its status says the cluster is full.
pub(crate) const DEFAULT_UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(60);
/// The container waiting reason (and error code) of an unschedulable shadow pod.
const UNSCHEDULABLE: &str = "Unschedulable";

fn ts(t: &Time) -> String {
    t.0.to_string()
}

fn container_state(s: Option<&KState>, unscheduled: Option<&str>) -> ContainerState {
    let s = s.cloned().unwrap_or_default();
    if let Some(r) = s.running {
        return ContainerState::Running {
            started_at: r.started_at.as_ref().map(ts).unwrap_or_default(),
        };
    }
    if let Some(t) = s.terminated {
        return ContainerState::Terminated {
            exit_code: t.exit_code,
            reason: t.reason.unwrap_or_else(|| {
                if t.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            }),
            message: t.message.unwrap_or_default(),
            started_at: t.started_at.as_ref().map(ts).unwrap_or_default(),
            finished_at: t.finished_at.as_ref().map(ts).unwrap_or_default(),
        };
    }
    if let Some(w) = s.waiting {
        return ContainerState::Waiting {
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
        };
    }
    match unscheduled {
        Some(message) => ContainerState::Waiting {
            reason: UNSCHEDULABLE.into(),
            message: message.into(),
        },
        None => ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
    }
}

/// The workload status of shadow pod `pod` at `now`; unschedulable for `grace` or more turns it
/// `Rejected` (see the module doc).
pub(crate) fn workload_status(pod: &Pod, now: Timestamp, grace: Duration) -> WorkloadStatus {
    let status = pod.status.clone().unwrap_or_default();
    let unschedulable = unschedulable(pod, &status);
    let scheduler_message = unschedulable.map(|(_, why)| why);
    let (mut phase, mut message) = phase_and_message(&status);
    if let Some((cond, why)) = unschedulable {
        let since = cond
            .last_transition_time
            .as_ref()
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let waited = Duration::try_from(now.duration_since(since)).unwrap_or_default();
        if phase == WorkloadPhase::Pending && waited >= grace {
            let full = format!(
                "cluster full: the target cluster could not schedule the shadow pod for {}s (grace {}s): {why}",
                waited.as_secs(),
                grace.as_secs()
            );
            phase = WorkloadPhase::Rejected(TargetRejection::Unschedulable {
                message: full.clone(),
            });
            message = Some(full);
        } else {
            message = Some(format!("waiting for room in the target cluster: {why}"));
        }
    }
    WorkloadStatus {
        id: pod.metadata.name.clone().unwrap_or_default(),
        phase,
        ip: status.pod_ip.clone().filter(|ip| !ip.is_empty()),
        started_at: status
            .start_time
            .as_ref()
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(ts),
        containers: containers(
            pod.spec.iter().flat_map(|s| &s.containers),
            status.container_statuses.as_deref().unwrap_or_default(),
            scheduler_message,
        ),
        init_containers: containers(
            pod.spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten()),
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default(),
            scheduler_message,
        ),
        // The shadow pod's kubelet publishes its own Events about the shadow pod.
        events: Vec::new(),
        message,
    }
}

/// The `PodScheduled=False` condition (reason `Unschedulable`) of a pod not bound to a node, and
/// the scheduler's message.
fn unschedulable<'a>(pod: &Pod, status: &'a PodStatus) -> Option<(&'a PodCondition, &'a str)> {
    let bound = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()));
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .filter(|c| !bound && c.status == "False" && c.reason.as_deref() == Some(UNSCHEDULABLE))
        .map(|c| (c, c.message.as_deref().unwrap_or("no node fits the pod")))
}

/// The phase the pod reports, and its reason and message (`Unknown` said in words).
fn phase_and_message(status: &PodStatus) -> (WorkloadPhase, Option<String>) {
    let phase = match status.phase.as_deref() {
        Some("Running") => WorkloadPhase::Running,
        Some("Succeeded") => WorkloadPhase::Succeeded,
        Some("Failed") => WorkloadPhase::Failed,
        _ => WorkloadPhase::Pending,
    };
    let message = match (status.reason.as_deref(), status.message.as_deref()) {
        (Some(r), Some(m)) => Some(format!("{r}: {m}")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_string()),
        (None, None) => None,
    };
    if status.phase.as_deref() == Some("Unknown") {
        let message = format!(
            "the shadow pod's phase is Unknown (its node stopped reporting){}",
            message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        return (phase, Some(message));
    }
    (phase, message)
}

/// Each container of `spec` with the state the kubelet reports for it in `reported` (or, while
/// the pod is unschedulable, the scheduler's message).
fn containers<'a>(
    spec: impl Iterator<Item = &'a Container>,
    reported: &[KStatus],
    scheduler_message: Option<&str>,
) -> Vec<ContainerStatus> {
    spec.map(|c| {
        let r = reported.iter().find(|r| r.name == c.name);
        ContainerStatus {
            name: c.name.clone(),
            state: container_state(r.and_then(|r| r.state.as_ref()), scheduler_message),
            restart_count: r.map_or(0, |r| r.restart_count),
            ready: r.is_some_and(|r| r.ready),
            last_state: r
                .and_then(|r| r.last_state.as_ref())
                .filter(|s| s.terminated.is_some())
                .map(|s| container_state(Some(s), None)),
        }
    })
    .collect()
}

/// The exit code an exec's final status reports: 0 on success, the code of a `NonZeroExitCode`
/// failure; any other failure (container not found, not running) is the pod's error.
pub(crate) fn exec_exit_code(status: &Status) -> Result<i32, ProviderError> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let reason = status.reason.clone().unwrap_or_default();
    if reason == "NonZeroExitCode" {
        let code = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter().flatten())
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.trim().parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    let code = if reason.is_empty() {
        "ExecFailed".to_string()
    } else {
        reason
    };
    let message = status
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "exec failed without a message".into());
    Err(match code.as_str() {
        "NotFound" => ProviderError::not_found(message),
        _ => ProviderError::cloud_pod(code, message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pod(status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("bg-1".into()),
                creation_timestamp: Some(Time(at("2026-01-01T00:00:00Z"))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        ..Default::default()
                    },
                    Container {
                        name: "side".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn state(running: bool, exit: Option<i32>) -> KState {
        KState {
            running: running.then(|| ContainerStateRunning {
                started_at: Some(Time(at("2026-01-01T00:00:05Z"))),
            }),
            terminated: exit.map(|code| ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(at("2026-01-01T00:01:00Z"))),
                ..Default::default()
            }),
            waiting: None,
        }
    }

    fn reported(name: &str, state: KState, ready: bool, restarts: i32) -> KStatus {
        KStatus {
            name: name.into(),
            state: Some(state),
            ready,
            restart_count: restarts,
            ..Default::default()
        }
    }

    fn unschedulable(since: &str) -> PodStatus {
        PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                last_transition_time: Some(Time(at(since))),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    const NOW: &str = "2026-01-01T00:02:00Z";

    #[test]
    fn a_running_shadow_pod_gives_a_running_workload_with_its_ip_and_container_states() {
        let p = pod(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            start_time: Some(Time(at("2026-01-01T00:00:02Z"))),
            container_statuses: Some(vec![
                reported("side", state(true, None), false, 0),
                reported("app", state(true, None), true, 2),
            ]),
            ..Default::default()
        });
        let ws = workload_status(&p, at(NOW), DEFAULT_UNSCHEDULABLE_GRACE);
        assert_eq!(
            (ws.phase, ws.ip.as_deref(), ws.started_at.as_deref()),
            (
                WorkloadPhase::Running,
                Some("10.1.2.3"),
                Some("2026-01-01T00:00:02Z")
            )
        );
        assert_eq!(
            ws.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["app", "side"],
            "pod spec order"
        );
        assert_eq!(
            (ws.containers[0].ready, ws.containers[0].restart_count),
            (true, 2)
        );
        assert_eq!(
            ws.containers[0].state,
            ContainerState::Running {
                started_at: "2026-01-01T00:00:05Z".into()
            }
        );
        assert!(!ws.containers[1].ready);
    }

    #[test]
    fn a_failed_shadow_pod_keeps_each_containers_exit_code() {
        let p = pod(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![
                reported("app", state(false, Some(1)), false, 0),
                reported("side", state(false, Some(0)), false, 0),
            ]),
            ..Default::default()
        });
        let ws = workload_status(&p, at(NOW), DEFAULT_UNSCHEDULABLE_GRACE);
        assert_eq!(ws.phase, WorkloadPhase::Failed);
        assert!(
            matches!(&ws.containers[0].state, ContainerState::Terminated { exit_code: 1, reason, .. } if reason == "Error")
        );
        assert!(
            matches!(&ws.containers[1].state, ContainerState::Terminated { exit_code: 0, reason, .. } if reason == "Completed")
        );
        assert!(
            !matches!(ws.phase, WorkloadPhase::Rejected(_)),
            "a crash is not a full cluster"
        );
    }

    #[test]
    fn an_image_pull_error_is_a_waiting_container_with_the_kubelets_reason() {
        let waiting = KState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image".into()),
            }),
            ..Default::default()
        };
        let p = pod(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![reported("app", waiting, false, 0)]),
            ..Default::default()
        });
        let ws = workload_status(&p, at(NOW), DEFAULT_UNSCHEDULABLE_GRACE);
        assert_eq!(
            ws.containers[0].state,
            ContainerState::Waiting {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image".into()
            }
        );
        assert_eq!(
            ws.containers[1].state,
            ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new()
            }
        );
    }

    #[test]
    fn an_evicted_shadow_pod_fails_with_the_eviction_reason() {
        let p = pod(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("Evicted".into()),
            message: Some("The node was low on resource: memory.".into()),
            ..Default::default()
        });
        let ws = workload_status(&p, at(NOW), DEFAULT_UNSCHEDULABLE_GRACE);
        assert_eq!(
            (ws.phase, ws.message.as_deref()),
            (
                WorkloadPhase::Failed,
                Some("Evicted: The node was low on resource: memory.")
            )
        );
    }

    #[test]
    fn an_unschedulable_shadow_pod_waits_within_its_grace_period() {
        let ws = workload_status(
            &pod(unschedulable("2026-01-01T00:01:30Z")),
            at(NOW),
            Duration::from_secs(60),
        );
        assert_eq!(ws.phase, WorkloadPhase::Pending);
        assert!(
            matches!(&ws.containers[0].state, ContainerState::Waiting { reason, .. } if reason == "Unschedulable")
        );
        assert!(ws.message.as_deref().unwrap().contains("Insufficient cpu"));
        assert_eq!(ws.phase, WorkloadPhase::Pending);
    }

    #[test]
    fn an_unschedulable_shadow_pod_past_its_grace_fails_as_cluster_full_and_is_a_target_rejection()
    {
        let ws = workload_status(
            &pod(unschedulable("2026-01-01T00:00:30Z")),
            at(NOW),
            Duration::from_secs(60),
        );
        let message = ws.message.clone().unwrap();
        assert!(
            message.starts_with("cluster full:")
                && message.contains("for 90s")
                && message.contains("3 Insufficient cpu"),
            "{message}"
        );
        match ws.phase {
            WorkloadPhase::Rejected(TargetRejection::Unschedulable { message: m }) => {
                assert_eq!(m, message)
            }
            other => panic!("expected a target rejection, got {other:?}"),
        }
    }

    fn exec_status(
        status: &str,
        reason: &str,
        message: &str,
        causes: Option<Vec<StatusCause>>,
    ) -> Status {
        Status {
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            details: causes.map(|c| StatusDetails {
                causes: Some(c),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_exec_status_gives_zero_on_success_and_the_code_of_a_non_zero_exit() {
        assert_eq!(exec_exit_code(&exec_status("Success", "", "", None)), Ok(0));
        let cause = StatusCause {
            reason: Some("ExitCode".into()),
            message: Some("3".into()),
            field: None,
        };
        let failed = exec_status(
            "Failure",
            "NonZeroExitCode",
            "command terminated with non-zero exit code",
            Some(vec![cause]),
        );
        assert_eq!(exec_exit_code(&failed), Ok(3));
    }

    #[test]
    fn an_exec_failure_without_an_exit_code_is_the_pods_error_with_its_message() {
        let err = exec_exit_code(&exec_status(
            "Failure",
            "InternalError",
            "container not found (\"x\")",
            None,
        ))
        .unwrap_err();
        assert_eq!(
            err,
            ProviderError::cloud_pod("InternalError", "container not found (\"x\")")
        );
    }
}
