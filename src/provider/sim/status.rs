//! Simulated workload state at a point in time (pure): cold start, running, exits, restarts.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::provider::contract::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};
use crate::provider::sim::translate::SimWorkload;

/// Pause between an exit and the restart, when the restart policy restarts.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The status of `w`, created at `created`, `elapsed` after creation.
pub fn status_at(
    id: &str,
    w: &SimWorkload,
    ip: &str,
    created: DateTime<Utc>,
    cold_start: Duration,
    elapsed: Duration,
) -> WorkloadStatus {
    let containers =
        |state: ContainerState, restart_count: i32, ready: bool| -> Vec<ContainerStatus> {
            w.containers
                .iter()
                .map(|(name, _)| ContainerStatus {
                    name: name.clone(),
                    state: state.clone(),
                    restart_count,
                    ready,
                })
                .collect()
        };
    let mut status = WorkloadStatus {
        id: id.to_string(),
        phase: WorkloadPhase::Pending,
        ip: None,
        started_at: Some(ts(created)),
        containers: containers(
            ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: "cold start".into(),
            },
            0,
            false,
        ),
        message: None,
    };
    let Some(t) = elapsed.checked_sub(cold_start) else {
        return status;
    };
    status.ip = Some(ip.to_string());
    status.phase = WorkloadPhase::Running;
    let first_start = created + cold_start;
    let Some(run) = w.exit_after_seconds.map(Duration::from_secs) else {
        status.containers = containers(
            ContainerState::Running {
                started_at: ts(first_start),
            },
            0,
            true,
        );
        return status;
    };
    let restarts = match w.restart_policy.as_str() {
        "Never" => false,
        "OnFailure" => w.exit_code != 0,
        _ => true,
    };
    let terminated = |start: DateTime<Utc>| ContainerState::Terminated {
        exit_code: w.exit_code,
        reason: if w.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
        message: String::new(),
        started_at: ts(start),
        finished_at: ts(start + run),
    };
    if !restarts {
        if t < run {
            status.containers = containers(
                ContainerState::Running {
                    started_at: ts(first_start),
                },
                0,
                true,
            );
        } else {
            status.phase = if w.exit_code == 0 {
                WorkloadPhase::Succeeded
            } else {
                WorkloadPhase::Failed
            };
            status.containers = containers(terminated(first_start), 0, false);
        }
        return status;
    }
    let period = run + RESTART_DELAY;
    let cycle = (t.as_millis() / period.as_millis().max(1)) as i32;
    let into = t - period * cycle as u32;
    let start = first_start + period * cycle as u32;
    status.containers = if into < run {
        containers(
            ContainerState::Running {
                started_at: ts(start),
            },
            cycle,
            true,
        )
    } else {
        containers(
            ContainerState::Waiting {
                reason: "Restarting".into(),
                message: format!("exited with {}", w.exit_code),
            },
            cycle + 1,
            false,
        )
    };
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(exit_after: Option<u64>, code: i32, policy: &str) -> SimWorkload {
        SimWorkload {
            containers: vec![("app".into(), "nginx".into())],
            restart_policy: policy.into(),
            exit_after_seconds: exit_after,
            exit_code: code,
        }
    }

    fn at(w: &SimWorkload, secs: u64) -> WorkloadStatus {
        status_at(
            "bg-1",
            w,
            "10.244.0.2",
            DateTime::UNIX_EPOCH,
            Duration::from_secs(2),
            Duration::from_secs(secs),
        )
    }

    #[test]
    fn a_workload_is_pending_without_an_ip_during_its_cold_start() {
        let s = at(&workload(None, 0, "Always"), 1);
        assert_eq!((s.phase, s.ip.as_deref()), (WorkloadPhase::Pending, None));
    }

    #[test]
    fn a_long_running_workload_is_running_and_ready_after_its_cold_start() {
        let s = at(&workload(None, 0, "Always"), 3);
        assert_eq!(
            (s.phase, s.ip.as_deref(), s.containers[0].ready),
            (WorkloadPhase::Running, Some("10.244.0.2"), true)
        );
    }

    #[test]
    fn an_exit_zero_with_restart_never_succeeds_and_non_zero_fails() {
        assert_eq!(
            at(&workload(Some(5), 0, "Never"), 10).phase,
            WorkloadPhase::Succeeded
        );
        let failed = at(&workload(Some(5), 3, "Never"), 10);
        assert_eq!(failed.phase, WorkloadPhase::Failed);
        assert!(matches!(
            failed.containers[0].state,
            ContainerState::Terminated { exit_code: 3, .. }
        ));
    }

    #[test]
    fn restart_on_failure_reruns_a_failing_container_and_counts_restarts() {
        // cold 2 s, run 3 s, delay 1 s: runs at 2-5, 6-9, 10-13 ...; at 11 s it has restarted twice.
        let s = at(&workload(Some(3), 1, "OnFailure"), 11);
        assert_eq!(
            (s.phase, s.containers[0].restart_count),
            (WorkloadPhase::Running, 2)
        );
        assert_eq!(
            at(&workload(Some(3), 0, "OnFailure"), 11).phase,
            WorkloadPhase::Succeeded
        );
    }
}
