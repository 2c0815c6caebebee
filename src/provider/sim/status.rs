//! Simulated workload state at a point in time (pure): cold start, running, exits, restarts.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::provider::contract::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};
use crate::provider::sim::translate::SimWorkload;

/// Pause between an exit and the restart, when the restart policy restarts.
const RESTART_DELAY: Duration = Duration::from_secs(1);

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Where a workload is in its life, some time after its containers first started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Runs before the current one (its restart count).
    cycle: u32,
    /// When the current run started, after the first start.
    start: Duration,
    /// How long the current run has run (up to its exit).
    ran: Duration,
    /// Whether the current run has exited.
    exited: bool,
    /// Whether a restart follows an exit (the restart policy says so).
    restarts: bool,
}

/// The current run of `w`, `t` after its containers first started.
fn current_run(w: &SimWorkload, t: Duration) -> Run {
    let Some(run) = w.exit_after_seconds.map(Duration::from_secs) else {
        return Run {
            cycle: 0,
            start: Duration::ZERO,
            ran: t,
            exited: false,
            restarts: false,
        };
    };
    let restarts = match w.restart_policy.as_str() {
        "Never" => false,
        "OnFailure" => w.exit_code != 0,
        _ => true,
    };
    if !restarts {
        return Run {
            cycle: 0,
            start: Duration::ZERO,
            ran: t.min(run),
            exited: t >= run,
            restarts,
        };
    }
    let period = run + RESTART_DELAY;
    let cycle = (t.as_millis() / period.as_millis().max(1)) as u32;
    let into = t - period * cycle;
    Run {
        cycle,
        start: period * cycle,
        ran: into.min(run),
        exited: into >= run,
        restarts,
    }
}

/// The status of `w`, created at `created`, `elapsed` after creation.
pub(crate) fn status_at(
    id: &str,
    w: &SimWorkload,
    ip: &str,
    created: DateTime<Utc>,
    cold_start: Duration,
    elapsed: Duration,
) -> WorkloadStatus {
    let containers =
        |state: ContainerState, restart_count: u32, ready: bool| -> Vec<ContainerStatus> {
            w.containers
                .iter()
                .map(|(name, _)| ContainerStatus {
                    name: name.clone(),
                    state: state.clone(),
                    restart_count: restart_count as i32,
                    ready,
                    last_state: None,
                })
                .collect()
        };
    let cold = ContainerState::Waiting {
        reason: "ContainerCreating".into(),
        message: "cold start".into(),
    };
    let mut status = WorkloadStatus {
        id: id.to_string(),
        phase: WorkloadPhase::Pending,
        ip: None,
        started_at: Some(ts(created)),
        containers: containers(cold, 0, false),
        init_containers: Vec::new(),
        events: Vec::new(),
        message: None,
    };
    let Some(t) = elapsed.checked_sub(cold_start) else {
        return status;
    };
    status.ip = Some(ip.to_string());
    status.phase = WorkloadPhase::Running;
    let run = current_run(w, t);
    let start = created + cold_start + run.start;
    status.containers = match (run.exited, run.restarts) {
        (false, _) => containers(
            ContainerState::Running {
                started_at: ts(start),
            },
            run.cycle,
            true,
        ),
        (true, true) => containers(
            ContainerState::Waiting {
                reason: "Restarting".into(),
                message: format!("exited with {}", w.exit_code),
            },
            run.cycle + 1,
            false,
        ),
        (true, false) => {
            status.phase = if w.exit_code == 0 {
                WorkloadPhase::Succeeded
            } else {
                WorkloadPhase::Failed
            };
            let terminated = ContainerState::Terminated {
                exit_code: w.exit_code,
                reason: if w.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                message: String::new(),
                started_at: ts(start),
                finished_at: ts(start + run.ran),
            };
            containers(terminated, 0, false)
        }
    };
    status
}

/// One log line of a simulated container, with the time it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// When it was written.
    pub(crate) at: DateTime<Utc>,
    /// The text, without a newline.
    pub(crate) text: String,
}

/// The log of `container` of `w` (created at `created`), `elapsed` after creation: a line when
/// the workload was created, one when the current run started, one per second of run time, and
/// the exit. Like a kubelet, it shows the current run only (earlier runs are gone).
pub(crate) fn log_lines(
    w: &SimWorkload,
    container: &str,
    created: DateTime<Utc>,
    cold_start: Duration,
    elapsed: Duration,
) -> Vec<LogLine> {
    let mut lines = vec![LogLine {
        at: created,
        text: format!("sim: container {container} created"),
    }];
    let Some(t) = elapsed.checked_sub(cold_start) else {
        return lines;
    };
    let Run {
        start: run_start,
        ran,
        exited,
        ..
    } = current_run(w, t);
    let first_start = created + cold_start;
    let start = first_start + run_start;
    lines.push(LogLine {
        at: start,
        text: format!("sim: container {container} started"),
    });
    for k in 1..=ran.as_secs() {
        lines.push(LogLine {
            at: start + Duration::from_secs(k),
            text: format!("sim: container {container} running for {k}s"),
        });
    }
    if exited {
        lines.push(LogLine {
            at: start + ran,
            text: format!(
                "sim: container {container} exited with code {}",
                w.exit_code
            ),
        });
    }
    lines
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

    fn texts(w: &SimWorkload, secs: u64) -> Vec<String> {
        log_lines(
            w,
            "app",
            DateTime::UNIX_EPOCH,
            Duration::from_secs(2),
            Duration::from_secs(secs),
        )
        .into_iter()
        .map(|l| l.text)
        .collect()
    }

    #[test]
    fn the_log_grows_by_one_line_per_second_of_run_time() {
        let w = workload(None, 0, "Always");
        assert_eq!(texts(&w, 1), vec!["sim: container app created"]);
        assert_eq!(
            texts(&w, 5),
            vec![
                "sim: container app created",
                "sim: container app started",
                "sim: container app running for 1s",
                "sim: container app running for 2s",
                "sim: container app running for 3s"
            ]
        );
        let at: Vec<_> = log_lines(
            &w,
            "app",
            DateTime::UNIX_EPOCH,
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
        .into_iter()
        .map(|l| l.at.timestamp())
        .collect();
        assert_eq!(at, vec![0, 2, 3, 4, 5]);
    }

    #[test]
    fn a_finished_container_logs_its_exit_and_a_restarted_one_only_its_current_run() {
        let done = texts(&workload(Some(2), 3, "Never"), 10);
        assert_eq!(
            done.last().map(String::as_str),
            Some("sim: container app exited with code 3")
        );
        assert_eq!(done.len(), 5);
        // cold 2 s, run 3 s, delay 1 s: the second run started at 6 s; at 8 s it has run 2 s.
        assert_eq!(
            texts(&workload(Some(3), 1, "Always"), 8)[1..],
            [
                "sim: container app started",
                "sim: container app running for 1s",
                "sim: container app running for 2s"
            ]
        );
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
