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

use aws_sdk_ecs::types::{Container, Task};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use crate::provider::contract::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};
use crate::provider::fargate::translate::{TAG_INIT_CONTAINERS, TAG_READINESS};
use crate::provider::kit::ownership::WORKLOAD;

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
    // A restarted pod is a new task: the previous run is not this task's to tell.
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
