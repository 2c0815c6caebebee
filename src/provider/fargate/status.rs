//! An ECS task as DescribeTasks returns it -> the workload's status (pure).
//!
//! `PROVISIONING`/`PENDING`/`ACTIVATING` are Pending; `RUNNING` (and the stopping states before
//! `STOPPED`) are Running, with the ENI's private IP; `STOPPED` is Succeeded only when every
//! essential container (the pod's containers, not its init containers) exited 0, and Failed
//! otherwise, with ECS's stop code, stopped reason and the containers' reasons.
//!
//! A running container is ready unless ECS reports its health check `UNHEALTHY`; a container
//! whose health check stands for a readiness probe (tag `burstgate.io/readiness-checked`) is
//! ready only once it is `HEALTHY` (`UNKNOWN` is "not evaluated yet", as a readiness probe that
//! has not passed).
//!
//! A stopped task stays stopped: a pod whose `restartPolicy` restarts it gets a new task from the
//! controller (after a kubelet-like back-off), tagged with the run's number
//! ([`TAG_RESTARTS`]: the containers' `restartCount`) and how the previous task's containers
//! ended ([`TAG_LAST_EXIT`], [`TAG_LAST_FINISHED`]: their `lastState`), so both survive a gateway
//! restart without any read of older tasks; [`relaunch`] computes those tags from the stopped
//! tasks of the workload.

use aws_sdk_ecs::types::{Container, Task};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use crate::provider::contract::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};
use crate::provider::fargate::translate::{TAG_INIT_CONTAINERS, TAG_READINESS};
use crate::provider::kit::ownership::WORKLOAD;

/// Tag: how many tasks of the workload ran before this one (its containers' `restartCount`).
/// Absent on the first task.
pub(crate) const TAG_RESTARTS: &str = "burstgate.io/restarts";
/// Tag: how the previous task's containers ended, `name=exitCode` separated by spaces (`-1`:
/// the container never ran), within ECS's 256 characters of a tag value (containers that do not
/// fit are left out). Absent on the first task.
pub(crate) const TAG_LAST_EXIT: &str = "burstgate.io/last-exit";
/// Tag: RFC 3339 time the previous task stopped (ECS's `stoppedAt`, else when the gateway saw it
/// stopped). Absent on the first task.
pub(crate) const TAG_LAST_FINISHED: &str = "burstgate.io/last-finished";
/// The `reason` burstgate gives StopTask when it deletes a workload: a task stopped so did not
/// end on its own.
pub(crate) const DELETED_REASON: &str = "deleted by burstgate";
/// At most this many characters in an ECS tag value.
const TAG_VALUE_MAX: usize = 256;

/// The number of tasks of the workload that ran before `task` ([`TAG_RESTARTS`], 0 when absent).
pub(crate) fn restarts(task: &Task) -> u32 {
    tag(task, TAG_RESTARTS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether `task` stopped on its own (its containers exited, or it failed), not because
/// burstgate deleted the workload.
pub(crate) fn ended_on_its_own(task: &Task) -> bool {
    task.last_status() == Some("STOPPED") && task.stopped_reason() != Some(DELETED_REASON)
}

/// The latest of `tasks` (the one with the most runs before it; the first listed on a tie).
pub(crate) fn latest<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Option<&'a Task> {
    tasks
        .into_iter()
        .fold(None, |best: Option<&Task>, t| match best {
            Some(b) if restarts(b) >= restarts(t) => Some(b),
            _ => Some(t),
        })
}

/// The next run of a workload whose tasks so far are `tasks`: its number and the tags that
/// carry it (`now`: RFC 3339, when the previous task's stop time is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relaunch {
    /// Tasks of the workload before this one: the containers' `restartCount`.
    pub(crate) restarts: u32,
    /// [`TAG_RESTARTS`], [`TAG_LAST_EXIT`] and [`TAG_LAST_FINISHED`].
    pub(crate) tags: Vec<(String, String)>,
}

/// The run that follows `tasks` (every task of the workload ECS still knows; the latest decides,
/// see [`latest`]); `None` when there is none (the first run).
pub(crate) fn relaunch<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    now: &str,
) -> Option<Relaunch> {
    let previous = latest(tasks)?;
    let inits: Vec<&str> = tag(previous, TAG_INIT_CONTAINERS)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let mut exits = String::new();
    for c in previous
        .containers()
        .iter()
        .filter(|c| !inits.contains(&c.name().unwrap_or_default()))
    {
        let entry = format!(
            "{}={}",
            c.name().unwrap_or_default(),
            c.exit_code().unwrap_or(-1)
        );
        if exits.len() + 1 + entry.len() > TAG_VALUE_MAX {
            break;
        }
        if !exits.is_empty() {
            exits.push(' ');
        }
        exits.push_str(&entry);
    }
    let restarts = restarts(previous) + 1;
    let finished = previous
        .stopped_at()
        .map(rfc3339)
        .unwrap_or_else(|| now.to_string());
    Some(Relaunch {
        restarts,
        tags: vec![
            (TAG_RESTARTS.to_string(), restarts.to_string()),
            (TAG_LAST_EXIT.to_string(), exits),
            (TAG_LAST_FINISHED.to_string(), finished),
        ],
    })
}

/// How container `name` of the previous task ended, from `task`'s tags.
fn last_state(task: &Task, name: &str) -> Option<ContainerState> {
    let code: i32 = tag(task, TAG_LAST_EXIT)?
        .split(' ')
        .filter_map(|e| e.split_once('='))
        .find(|(n, _)| *n == name)?
        .1
        .parse()
        .ok()?;
    Some(ContainerState::Terminated {
        exit_code: code,
        reason: match code {
            0 => "Completed",
            -1 => "ContainerCannotRun",
            _ => "Error",
        }
        .into(),
        message: String::new(),
        started_at: String::new(),
        finished_at: tag(task, TAG_LAST_FINISHED).unwrap_or_default().to_string(),
    })
}

/// RFC 3339 of an AWS timestamp.
fn rfc3339(t: &DateTime) -> String {
    t.fmt(Format::DateTime).unwrap_or_default()
}

/// The value of tag `key` on `task` (DescribeTasks with `include=TAGS`).
pub(crate) fn tag<'a>(task: &'a Task, key: &str) -> Option<&'a str> {
    task.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The workload id of a task: its ownership tag, else its `startedBy`.
pub(crate) fn workload_of(task: &Task) -> Option<&str> {
    tag(task, WORKLOAD).or(task.started_by())
}

/// The ENI's private IPv4 address of an awsvpc task.
fn private_ip(task: &Task) -> Option<String> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .map(str::to_string)
}

/// The status of workload `id` from its task.
pub(crate) fn workload_status(id: &str, task: &Task) -> WorkloadStatus {
    let inits: Vec<&str> = tag(task, TAG_INIT_CONTAINERS)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let readiness: Vec<&str> = tag(task, TAG_READINESS)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let essential: Vec<&Container> = task
        .containers()
        .iter()
        .filter(|c| !inits.contains(&c.name().unwrap_or_default()))
        .collect();
    let last = task.last_status().unwrap_or("PROVISIONING");
    let started = task.started_at().map(rfc3339);
    let stopped = task.stopped_at().map(rfc3339);
    let status_of = |c: &Container| {
        container_status(
            c,
            readiness.contains(&c.name().unwrap_or_default()),
            last,
            started.as_deref(),
            stopped.as_deref(),
            task.stopped_reason(),
        )
    };
    let restarts = restarts(task) as i32;
    let status_of = |c: &Container| ContainerStatus {
        restart_count: restarts,
        last_state: last_state(task, c.name().unwrap_or_default()),
        ..status_of(c)
    };
    let containers = essential.iter().map(|c| status_of(c)).collect();
    // The pod's init containers, in the order the tag names them (the spec's).
    let init_containers = inits
        .iter()
        .filter_map(|name| {
            task.containers()
                .iter()
                .find(|c| c.name() == Some(*name))
                .map(status_of)
        })
        .collect();
    let (phase, message) = match last {
        "PROVISIONING" | "PENDING" | "ACTIVATING" => (WorkloadPhase::Pending, None),
        "STOPPED" => {
            let all_zero =
                !essential.is_empty() && essential.iter().all(|c| c.exit_code() == Some(0));
            if all_zero {
                (WorkloadPhase::Succeeded, None)
            } else {
                (
                    WorkloadPhase::Failed,
                    Some(failure_message(task, &essential)),
                )
            }
        }
        _ => (WorkloadPhase::Running, None),
    };
    WorkloadStatus {
        id: id.to_string(),
        ip: if phase == WorkloadPhase::Running {
            private_ip(task)
        } else {
            None
        },
        started_at: task.created_at().map(rfc3339),
        containers,
        init_containers,
        events: Vec::new(),
        message,
        phase,
    }
}

fn container_status(
    c: &Container,
    readiness_checked: bool,
    task_last: &str,
    started: Option<&str>,
    stopped: Option<&str>,
    task_reason: Option<&str>,
) -> ContainerStatus {
    let name = c.name().unwrap_or_default().to_string();
    let finished = c.last_status() == Some("STOPPED") || task_last == "STOPPED";
    let state = match c.exit_code() {
        Some(code) if finished => ContainerState::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: c.reason().unwrap_or_default().to_string(),
            started_at: started.unwrap_or_default().to_string(),
            finished_at: stopped.unwrap_or_default().to_string(),
        },
        // It never ran (image pull, dependency or resource failure): no exit code.
        None if finished => ContainerState::Terminated {
            exit_code: -1,
            reason: "ContainerCannotRun".into(),
            message: c.reason().or(task_reason).unwrap_or_default().to_string(),
            started_at: started.unwrap_or_default().to_string(),
            finished_at: stopped.unwrap_or_default().to_string(),
        },
        _ if c.last_status() == Some("RUNNING") => ContainerState::Running {
            started_at: started.unwrap_or_default().to_string(),
        },
        _ => ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: c
                .reason()
                .map(str::to_string)
                .unwrap_or_else(|| format!("task is {task_last}")),
        },
    };
    let health = c.health_status().map(|h| h.as_str());
    let ready = matches!(state, ContainerState::Running { .. })
        && if readiness_checked {
            health == Some("HEALTHY")
        } else {
            health != Some("UNHEALTHY")
        };
    // A restarted pod is a new task: its tags tell the previous run (`workload_status`).
    ContainerStatus {
        name,
        state,
        restart_count: 0,
        ready,
        last_state: None,
    }
}

fn failure_message(task: &Task, essential: &[&Container]) -> String {
    let mut parts = Vec::new();
    match (task.stop_code().map(|c| c.as_str()), task.stopped_reason()) {
        (Some(code), Some(reason)) => parts.push(format!("{code}: {reason}")),
        (Some(code), None) => parts.push(code.to_string()),
        (None, Some(reason)) => parts.push(reason.to_string()),
        (None, None) => {}
    }
    for c in essential {
        let name = c.name().unwrap_or_default();
        match (c.exit_code(), c.reason()) {
            (Some(0), _) => {}
            (Some(code), Some(reason)) => {
                parts.push(format!("container {name} exited {code}: {reason}"))
            }
            (Some(code), None) => parts.push(format!("container {name} exited {code}")),
            (None, Some(reason)) => parts.push(format!("container {name}: {reason}")),
            (None, None) => parts.push(format!("container {name} has no exit code")),
        }
    }
    if essential.is_empty() {
        parts.push("the task has no containers".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, KeyValuePair, Tag, TaskStopCode};

    fn container(name: &str, last: &str, exit: Option<i32>, reason: Option<&str>) -> Container {
        Container::builder()
            .name(name)
            .last_status(last)
            .set_exit_code(exit)
            .set_reason(reason.map(str::to_string))
            .build()
    }

    fn task(last: &str, containers: Vec<Container>) -> aws_sdk_ecs::types::builders::TaskBuilder {
        let eni = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(
                KeyValuePair::builder()
                    .name("subnetId")
                    .value("subnet-1")
                    .build(),
            )
            .details(
                KeyValuePair::builder()
                    .name("privateIPv4Address")
                    .value("10.0.1.23")
                    .build(),
            )
            .build();
        Task::builder()
            .last_status(last)
            .attachments(eni)
            .set_containers(Some(containers))
            .created_at(DateTime::from_secs(1_700_000_000))
            .started_at(DateTime::from_secs(1_700_000_030))
    }

    #[test]
    fn a_running_task_is_running_with_its_eni_private_ip() {
        let s = workload_status(
            "bg-1",
            &task("RUNNING", vec![container("app", "RUNNING", None, None)]).build(),
        );
        assert_eq!(
            (s.phase, s.ip.as_deref()),
            (WorkloadPhase::Running, Some("10.0.1.23"))
        );
        assert_eq!(s.started_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(
            matches!(s.containers[0].state, ContainerState::Running { .. })
                && s.containers[0].ready
        );
    }

    #[test]
    fn provisioning_and_pending_tasks_are_pending_without_an_ip() {
        for last in ["PROVISIONING", "PENDING", "ACTIVATING"] {
            let s = workload_status(
                "bg-1",
                &task(last, vec![container("app", "PENDING", None, None)]).build(),
            );
            assert_eq!(
                (s.phase, s.ip.as_deref()),
                (WorkloadPhase::Pending, None),
                "{last}"
            );
        }
    }

    #[test]
    fn stopped_with_every_essential_container_exiting_zero_is_succeeded() {
        let s = workload_status(
            "bg-1",
            &task("STOPPED", vec![container("app", "STOPPED", Some(0), None)])
                .stopped_reason("Essential container in task exited")
                .build(),
        );
        assert_eq!(
            (s.phase, s.ip.as_deref(), s.message.as_deref()),
            (WorkloadPhase::Succeeded, None, None)
        );
        assert!(matches!(
            s.containers[0].state,
            ContainerState::Terminated { exit_code: 0, .. }
        ));
    }

    #[test]
    fn stopped_with_exit_1_is_failed_and_says_why() {
        let t = task(
            "STOPPED",
            vec![
                container("app", "STOPPED", Some(0), None),
                container("worker", "STOPPED", Some(1), Some("boom")),
            ],
        )
        .stop_code(TaskStopCode::EssentialContainerExited)
        .stopped_reason("Essential container in task exited")
        .build();
        let s = workload_status("bg-1", &t);
        assert_eq!(s.phase, WorkloadPhase::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some(
                "EssentialContainerExited: Essential container in task exited; container worker exited 1: boom"
            )
        );
        assert!(matches!(
            s.containers[1].state,
            ContainerState::Terminated { exit_code: 1, .. }
        ));
    }

    #[test]
    fn stopped_without_exit_codes_is_failed_not_succeeded() {
        let t = task(
            "STOPPED",
            vec![container(
                "app",
                "STOPPED",
                None,
                Some("CannotPullContainerError: pull access denied"),
            )],
        )
        .stop_code(TaskStopCode::TaskFailedToStart)
        .stopped_reason("Task failed to start")
        .build();
        let s = workload_status("bg-1", &t);
        assert_eq!(s.phase, WorkloadPhase::Failed);
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("CannotPullContainerError"),
            "{:?}",
            s.message
        );
        assert!(
            matches!(&s.containers[0].state, ContainerState::Terminated { exit_code: -1, reason, .. } if reason == "ContainerCannotRun")
        );
    }

    #[test]
    fn init_containers_are_left_out_and_do_not_decide_success() {
        let t = task(
            "STOPPED",
            vec![
                container("init", "STOPPED", Some(0), None),
                container("app", "STOPPED", Some(0), None),
            ],
        )
        .tags(
            Tag::builder()
                .key(TAG_INIT_CONTAINERS)
                .value("init")
                .build(),
        )
        .build();
        let s = workload_status("bg-1", &t);
        assert_eq!(s.phase, WorkloadPhase::Succeeded);
        assert_eq!(
            s.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["app"]
        );
    }

    #[test]
    fn an_unhealthy_running_container_is_not_ready() {
        let c = Container::builder()
            .name("app")
            .last_status("RUNNING")
            .health_status(aws_sdk_ecs::types::HealthStatus::Unhealthy)
            .build();
        let s = workload_status("bg-1", &task("RUNNING", vec![c]).build());
        assert!(!s.containers[0].ready);
    }

    #[test]
    fn a_readiness_checked_container_is_ready_only_once_ecs_reports_it_healthy() {
        use aws_sdk_ecs::types::HealthStatus;
        let running = |name: &str, health: HealthStatus| {
            Container::builder()
                .name(name)
                .last_status("RUNNING")
                .health_status(health)
                .build()
        };
        let ready = |health: HealthStatus| {
            let t = task(
                "RUNNING",
                vec![
                    running("web", health.clone()),
                    running("side", HealthStatus::UnknownValue),
                ],
            )
            .tags(Tag::builder().key(TAG_READINESS).value("web").build())
            .build();
            workload_status("bg-1", &t)
                .containers
                .iter()
                .map(|c| c.ready)
                .collect::<Vec<_>>()
        };
        // `side` has no readiness probe: UNKNOWN (no check, or not evaluated) is ready.
        assert_eq!(ready(HealthStatus::UnknownValue), vec![false, true]);
        assert_eq!(ready(HealthStatus::Healthy), vec![true, true]);
        assert_eq!(ready(HealthStatus::Unhealthy), vec![false, true]);
    }

    #[test]
    fn the_next_run_counts_the_runs_before_it_and_tags_how_the_latest_one_ended() {
        assert_eq!(relaunch(&[], "2026-01-01T00:00:00Z"), None);
        let first = task(
            "STOPPED",
            vec![
                container("app", "STOPPED", Some(3), None),
                container("side", "STOPPED", None, None),
            ],
        )
        .build();
        let next = relaunch([&first], "2026-01-01T00:00:09Z").unwrap();
        assert_eq!(next.restarts, 1);
        assert_eq!(
            next.tags,
            vec![
                (TAG_RESTARTS.to_string(), "1".to_string()),
                (TAG_LAST_EXIT.to_string(), "app=3 side=-1".to_string()),
                (
                    TAG_LAST_FINISHED.to_string(),
                    "2026-01-01T00:00:09Z".to_string()
                ),
            ]
        );
        // The second run stopped too (ECS gave its stop time): the third counts both.
        let mut tags: Vec<Tag> = next
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tags.push(Tag::builder().key(TAG_RESTARTS).value("1").build());
        let second = task("STOPPED", vec![container("app", "STOPPED", Some(0), None)])
            .set_tags(Some(tags))
            .stopped_at(DateTime::from_secs(1_700_000_100))
            .build();
        let third = relaunch([&second, &first], "x").unwrap();
        assert_eq!(third.restarts, 2);
        assert_eq!(third.tags[1].1, "app=0");
        assert_eq!(third.tags[2].1, "2023-11-14T22:15:00Z");
    }

    #[test]
    fn a_restarted_task_reports_its_restart_count_and_the_previous_runs_exit_as_last_state() {
        let t = task("RUNNING", vec![container("app", "RUNNING", None, None)])
            .tags(Tag::builder().key(TAG_RESTARTS).value("2").build())
            .tags(Tag::builder().key(TAG_LAST_EXIT).value("app=137").build())
            .tags(
                Tag::builder()
                    .key(TAG_LAST_FINISHED)
                    .value("2026-01-01T00:00:09Z")
                    .build(),
            )
            .build();
        let s = workload_status("bg-1", &t);
        let c = &s.containers[0];
        assert_eq!(c.restart_count, 2);
        assert!(
            matches!(&c.last_state, Some(ContainerState::Terminated { exit_code: 137, reason, finished_at, .. })
                if reason == "Error" && finished_at == "2026-01-01T00:00:09Z"),
            "{:?}",
            c.last_state
        );
    }

    #[test]
    fn only_a_task_that_stopped_by_itself_ended_on_its_own() {
        let exited = task("STOPPED", vec![]).stopped_reason("Essential container in task exited");
        assert!(ended_on_its_own(&exited.build()));
        let deleted = task("STOPPED", vec![])
            .stopped_reason(DELETED_REASON)
            .build();
        assert!(!ended_on_its_own(&deleted));
        assert!(!ended_on_its_own(&task("RUNNING", vec![]).build()));
    }

    #[test]
    fn the_workload_of_a_task_is_its_tag_or_else_started_by() {
        let tagged = Task::builder()
            .started_by("x")
            .tags(Tag::builder().key(WORKLOAD).value("bg-1").build())
            .build();
        assert_eq!(workload_of(&tagged), Some("bg-1"));
        assert_eq!(
            workload_of(&Task::builder().started_by("bg-2").build()),
            Some("bg-2")
        );
    }
}
