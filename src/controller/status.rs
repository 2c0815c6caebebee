//! Provider state -> Kubernetes PodStatus (pure): phase, conditions, containerStatuses, IPs,
//! start time; plus the statuses of pods that wait or fail before reaching a provider.

use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as KStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::provider::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};

fn parse_time(s: &str) -> Option<Time> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

fn condition(pod: &Pod, type_: &str, ok: bool, reason: Option<&str>, now: &Time) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the condition's status does not change.
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let last = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: last,
        reason: reason.map(str::to_string),
        ..Default::default()
    }
}

/// A pod's phase, as Kubernetes spells it in `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Accepted, not every container running yet (or no status at all).
    Pending,
    /// Bound and a container runs.
    Running,
    /// Every container exited 0 and will not restart.
    Succeeded,
    /// A container failed and will not restart, or the pod was refused.
    Failed,
    /// The phase could not be read (`Unknown`, or a value this code does not know).
    Unknown,
}

impl PodPhase {
    /// The phase of `pod` (`Pending` when it has no status yet).
    pub fn of(pod: &Pod) -> PodPhase {
        Self::of_status(pod.status.as_ref())
    }

    /// The phase a pod's status says.
    pub fn of_status(status: Option<&PodStatus>) -> PodPhase {
        match status.and_then(|s| s.phase.as_deref()) {
            None | Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        }
    }

    /// Whether the pod is over: Succeeded or Failed.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

/// A pod's `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart every container that stops (the default).
    Always,
    /// Restart containers that fail.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The restart policy of `pod` (`Always` when unset, as the API server defaults it).
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
}

/// The status of container `c` as the provider `reported` it (`None`: not yet) for workload `id`.
fn container_status(c: &Container, reported: Option<&ContainerStatus>, id: &str) -> KStatus {
    let state = reported.map(|r| &r.state);
    let running = matches!(state, Some(ContainerState::Running { .. }));
    KStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        container_id: running.then(|| format!("burstgate://{id}/{}", c.name)),
        ready: reported.is_some_and(|r| r.ready),
        restart_count: reported.map_or(0, |r| r.restart_count),
        started: Some(running),
        state: Some(k_state(state, id, &c.name)),
        last_state: reported
            .and_then(|r| r.last_state.as_ref())
            .map(|s| k_state(Some(s), id, &c.name)),
        ..Default::default()
    }
}

/// A provider's container state in Kubernetes' words (`None`: creating).
fn k_state(state: Option<&ContainerState>, id: &str, name: &str) -> KState {
    match state {
        Some(ContainerState::Running { started_at }) => KState {
            running: Some(ContainerStateRunning {
                started_at: parse_time(started_at),
            }),
            ..Default::default()
        },
        Some(ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        }) => KState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
                started_at: parse_time(started_at),
                finished_at: parse_time(finished_at),
                container_id: Some(format!("burstgate://{id}/{name}")),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some(ContainerState::Waiting { reason, message }) => KState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        None => KState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

/// The merge patch of pods/status that writes `desired`: a merge patch keeps the fields it does
/// not mention, so the ones a new state drops are cleared (set to null).
pub fn merge_patch(desired: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(desired).expect("a PodStatus serialises");
    for key in ["reason", "message", "podIP", "podIPs"] {
        value
            .as_object_mut()
            .expect("object")
            .entry(key)
            .or_insert(serde_json::Value::Null);
    }
    serde_json::json!({ "status": value })
}

/// The status of a pod whose workload the provider reports as `ws`.
pub fn from_workload(pod: &Pod, ws: &WorkloadStatus, host_ip: &str, now: &Time) -> PodStatus {
    let spec_containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let reported = |list: &[ContainerStatus], c: &Container| {
        let r = list.iter().find(|x| x.name == c.name);
        container_status(c, r, &ws.id)
    };
    let container_statuses: Vec<KStatus> = spec_containers
        .iter()
        .map(|c| reported(&ws.containers, c))
        .collect();
    // Init containers the provider reports (all of the spec's, or none).
    let init_statuses: Option<Vec<KStatus>> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .filter(|_| !ws.init_containers.is_empty())
        .map(|inits| {
            inits
                .iter()
                .map(|c| reported(&ws.init_containers, c))
                .collect()
        });
    // A workload started again after it stopped (a new Fargate task) is a restart: the pod stays
    // Running while the new run starts, as at a kubelet.
    let restarted = ws.containers.iter().any(|c| c.restart_count > 0);
    let phase = match ws.phase {
        WorkloadPhase::Pending if restarted => PodPhase::Running,
        // A rejected workload never started; the controller moves the pod before it shows.
        WorkloadPhase::Pending | WorkloadPhase::Rejected(_) => PodPhase::Pending,
        WorkloadPhase::Running => PodPhase::Running,
        WorkloadPhase::Succeeded => PodPhase::Succeeded,
        WorkloadPhase::Failed => PodPhase::Failed,
    }
    .as_str();
    let all_ready = !container_statuses.is_empty() && container_statuses.iter().all(|c| c.ready);
    let started = restarted
        || !matches!(
            ws.phase,
            WorkloadPhase::Pending | WorkloadPhase::Rejected(_)
        );
    let not_ready_reason = match ws.phase {
        WorkloadPhase::Succeeded | WorkloadPhase::Failed => Some("PodCompleted"),
        _ if !all_ready => Some("ContainersNotReady"),
        _ => None,
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition(pod, "PodScheduled", true, None, now),
            condition(
                pod,
                "Initialized",
                started,
                (!started).then_some("ContainersNotInitialized"),
                now,
            ),
            condition(pod, "ContainersReady", all_ready, not_ready_reason, now),
            condition(pod, "Ready", all_ready, not_ready_reason, now),
        ]),
        container_statuses: Some(container_statuses),
        init_container_statuses: init_statuses,
        host_ip: Some(host_ip.into()),
        pod_ip: ws.ip.clone(),
        pod_ips: ws.ip.as_ref().map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: ws
            .started_at
            .as_deref()
            .and_then(parse_time)
            .or_else(|| pod.status.as_ref().and_then(|s| s.start_time.clone())),
        message: ws
            .message
            .clone()
            .filter(|_| ws.phase == WorkloadPhase::Failed),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

/// The pod as the kubelet names it in its Events and messages: `name_namespace(uid)`.
pub fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The status of a pod whose workload `ws` stopped and waits `delay` before it is started again:
/// Running, as at a kubelet, each container waiting in `CrashLoopBackOff` with the run that
/// ended as its `lastState` (its `restartCount` grows when the next run starts).
pub fn backing_off(
    pod: &Pod,
    ws: &WorkloadStatus,
    delay: std::time::Duration,
    host_ip: &str,
    now: &Time,
) -> PodStatus {
    let mut status = from_workload(pod, ws, host_ip, now);
    let label = pod_label(pod);
    for c in status.container_statuses.iter_mut().flatten() {
        let ended = c.state.take().filter(|s| s.terminated.is_some());
        c.last_state = ended.or(c.last_state.take());
        c.state = Some(KState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={label}",
                    delay.as_secs(),
                    c.name
                )),
            }),
            ..Default::default()
        });
        c.ready = false;
        c.started = Some(false);
        c.container_id = None;
    }
    let not_ready = |type_: &str| condition(pod, type_, false, Some("ContainersNotReady"), now);
    for cond in status.conditions.iter_mut().flatten() {
        if cond.type_ == "Ready" || cond.type_ == "ContainersReady" {
            *cond = not_ready(&cond.type_.clone());
        }
    }
    status.phase = Some(PodPhase::Running.as_str().into());
    status.message = None;
    status
}

/// Why a pod waits before it reaches a provider (its `status.reason`, as `kubectl get pods`
/// shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// No valid policy is loaded.
    NoPolicy,
    /// The policy has no target for the pod now; it is decided again on every change.
    BurstPending,
}

impl WaitReason {
    /// As the pod's `status.reason` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::NoPolicy => "NoPolicy",
            WaitReason::BurstPending => "BurstPending",
        }
    }
}

/// The status of a pod waiting for a target (`reason` shows in `kubectl get pods`).
pub fn waiting(pod: &Pod, reason: &str, message: &str, host_ip: &str, now: &Time) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        conditions: Some(vec![
            condition(pod, "PodScheduled", true, None, now),
            condition(pod, "Ready", false, Some(reason), now),
        ]),
        host_ip: Some(host_ip.into()),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(now.clone())),
        ..Default::default()
    }
}

/// The status of a pod that failed before or at its provider (`Unsupported`, `NoTarget`,
/// `InaccessibleImage`, `WorkloadLost`...).
pub fn failed(pod: &Pod, reason: &str, message: &str, host_ip: &str, now: &Time) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        ..waiting(pod, reason, message, host_ip, now)
    }
}

/// Whether the pod shows a status a node wrote (the gateway's, or a kubelet's before it): every
/// status written here carries the host IP, which neither the apiserver nor the scheduler sets.
pub fn node_wrote(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| s.host_ip.is_some())
}

/// `s` without what does not make a status news: condition times, the QoS class, and an empty
/// `lastState` (the apiserver stores a container status without one as `lastState: {}`: compared
/// as written, every pod that never restarted would be written again by each new term).
fn strip(s: &PodStatus) -> PodStatus {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_transition_time = None;
        c.last_probe_time = None;
    }
    let statuses = s.container_statuses.iter_mut().flatten();
    for c in statuses.chain(s.init_container_statuses.iter_mut().flatten()) {
        if c.last_state
            .as_ref()
            .is_some_and(|l| l.running.is_none() && l.terminated.is_none() && l.waiting.is_none())
        {
            c.last_state = None;
        }
    }
    s.qos_class = None;
    s
}

/// Whether `desired` says anything `current` does not (times of unchanged conditions aside).
pub fn differs(current: Option<&PodStatus>, desired: &PodStatus) -> bool {
    let Some(current) = current else { return true };
    strip(current) != strip(desired)
}

/// A digest of `workload` as read and of the pod version (`resource_version`) it was applied
/// to, hashed from its `Debug` form without building the string.
pub fn digest(workload: &WorkloadStatus, resource_version: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    struct Feed<'a>(&'a mut std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for Feed<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let _ = std::fmt::write(&mut Feed(&mut h), format_args!("{workload:?}"));
    resource_version.hash(&mut h);
    h.finish()
}

/// A fingerprint of what `desired` says (as [`differs`] compares it): equal fingerprints, no news.
pub fn fingerprint(desired: &PodStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&strip(desired))
        .expect("a PodStatus serialises")
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ContainerStatus;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> Time {
        Time("2026-11-27T05:00:00Z".parse().unwrap())
    }

    #[test]
    fn a_status_that_differs_only_in_condition_times_has_the_same_fingerprint() {
        let at = |t: &str| PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(t.parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let a = at("2026-11-27T05:00:00Z");
        assert_eq!(fingerprint(&a), fingerprint(&at("2026-11-27T05:01:00Z")));
        let mut pending = a.clone();
        pending.phase = Some("Pending".into());
        assert_ne!(fingerprint(&a), fingerprint(&pending));
    }

    fn ws(phase: WorkloadPhase, state: ContainerState, ready: bool) -> WorkloadStatus {
        WorkloadStatus {
            id: "bg-1".into(),
            phase,
            ip: Some("10.244.0.2".into()),
            started_at: Some("2026-11-27T04:59:00Z".into()),
            containers: vec![ContainerStatus {
                name: "app".into(),
                state,
                restart_count: 2,
                ready,
                last_state: None,
            }],
            init_containers: Vec::new(),
            events: Vec::new(),
            message: None,
        }
    }

    #[test]
    fn a_digest_changes_with_the_workload_or_the_pod_version_and_only_then() {
        let running = |ready| {
            let started_at = "2026-11-27T05:00:00Z".to_string();
            ws(
                WorkloadPhase::Running,
                ContainerState::Running { started_at },
                ready,
            )
        };
        let d = digest(&running(true), Some("41"));
        assert_eq!(d, digest(&running(true), Some("41")));
        assert_ne!(d, digest(&running(false), Some("41")));
        assert_ne!(d, digest(&running(true), Some("42")));
        assert_ne!(d, digest(&running(true), None));
    }

    #[test]
    fn a_stopped_workload_waiting_to_restart_keeps_the_pod_running_in_crash_loop_back_off() {
        let mut p = pod();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("d".into());
        p.metadata.uid = Some("u1".into());
        let stopped = ws(
            WorkloadPhase::Failed,
            ContainerState::Terminated {
                exit_code: 3,
                reason: "Error".into(),
                message: String::new(),
                started_at: "2026-11-27T04:59:30Z".into(),
                finished_at: "2026-11-27T04:59:50Z".into(),
            },
            false,
        );
        let s = backing_off(
            &p,
            &stopped,
            std::time::Duration::from_secs(20),
            "h",
            &now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        let waiting = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            waiting.message.as_deref(),
            Some("back-off 20s restarting failed container=app pod=web_d(u1)")
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!((c.ready, c.restart_count), (false, 2));
    }

    #[test]
    fn a_restarted_workload_that_is_starting_again_leaves_the_pod_running() {
        let starting = ws(
            WorkloadPhase::Pending,
            ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            false,
        );
        let s = from_workload(&pod(), &starting, "h", &now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let mut first = starting.clone();
        first.containers[0].restart_count = 0;
        let s = from_workload(&pod(), &first, "h", &now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn a_running_workload_gives_a_ready_running_pod_with_its_ip() {
        let s = from_workload(
            &pod(),
            &ws(
                WorkloadPhase::Running,
                ContainerState::Running {
                    started_at: "2026-11-27T04:59:30Z".into(),
                },
                true,
            ),
            "10.0.0.1",
            &now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.2"));
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!((c.ready, c.restart_count), (true, 2));
        assert!(c.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn a_non_zero_exit_gives_a_failed_pod_with_the_exit_code() {
        let term = ContainerState::Terminated {
            exit_code: 3,
            reason: "Error".into(),
            message: String::new(),
            started_at: "2026-11-27T04:59:30Z".into(),
            finished_at: "2026-11-27T04:59:40Z".into(),
        };
        let s = from_workload(&pod(), &ws(WorkloadPhase::Failed, term, false), "h", &now());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let t = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.exit_code, 3);
    }

    #[test]
    fn a_restart_shows_as_last_state_and_reported_init_containers_as_init_container_statuses() {
        let mut p = pod();
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "setup".into(),
            image: Some("busybox".into()),
            ..Default::default()
        }]);
        let exited = |code| ContainerState::Terminated {
            exit_code: code,
            reason: "Error".into(),
            message: String::new(),
            started_at: "2026-11-27T04:59:30Z".into(),
            finished_at: "2026-11-27T04:59:40Z".into(),
        };
        let running = ContainerState::Running {
            started_at: "2026-11-27T04:59:41Z".into(),
        };
        let mut w = ws(WorkloadPhase::Running, running, true);
        w.containers[0].last_state = Some(exited(2));
        let s = from_workload(&p, &w, "h", &now());
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 2);
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 2);
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert_eq!(s.init_container_statuses, None, "not reported, not made up");

        w.init_containers = vec![ContainerStatus {
            name: "setup".into(),
            state: exited(0),
            restart_count: 0,
            ready: false,
            last_state: None,
        }];
        let s = from_workload(&p, &w, "h", &now());
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(init.name, "setup");
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            0
        );
    }

    #[test]
    fn an_unchanged_status_is_not_patched_again() {
        let w = ws(
            WorkloadPhase::Running,
            ContainerState::Running {
                started_at: "2026-11-27T04:59:30Z".into(),
            },
            true,
        );
        let first = from_workload(&pod(), &w, "h", &now());
        let mut p = pod();
        p.status = Some(first.clone());
        let later = Time("2026-11-27T06:00:00Z".parse().unwrap());
        let second = from_workload(&p, &w, "h", &later);
        assert!(!differs(Some(&first), &second));
        assert_eq!(
            first.conditions, second.conditions,
            "transition times are kept"
        );
    }

    #[test]
    fn a_status_as_the_apiserver_stores_it_with_an_empty_last_state_is_not_news() {
        let w = ws(
            WorkloadPhase::Running,
            ContainerState::Running {
                started_at: "2026-11-27T04:59:30Z".into(),
            },
            true,
        );
        let desired = from_workload(&pod(), &w, "h", &now());
        // What the apiserver answers for that status: it defaults `lastState` to `{}`.
        let mut stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&desired).unwrap()).unwrap();
        for c in stored.container_statuses.iter_mut().flatten() {
            assert!(
                c.last_state.is_none(),
                "the gateway writes no lastState here"
            );
            c.last_state = Some(Default::default());
        }
        assert!(!differs(Some(&stored), &desired));
        // A real last state still is news.
        let mut restarted = stored.clone();
        restarted.container_statuses.as_mut().unwrap()[0].last_state =
            Some(k8s_openapi::api::core::v1::ContainerState {
                terminated: Some(Default::default()),
                ..Default::default()
            });
        assert!(differs(Some(&restarted), &desired));
    }

    #[test]
    fn a_waiting_pod_says_why_in_its_reason() {
        let s = waiting(
            &pod(),
            WaitReason::BurstPending.as_str(),
            "no eligible target",
            "h",
            &now(),
        );
        assert_eq!(
            (s.phase.as_deref(), s.reason.as_deref()),
            (Some("Pending"), Some("BurstPending"))
        );
    }

    #[test]
    fn a_status_patch_clears_the_reason_and_ip_a_new_state_no_longer_has() {
        let s = waiting(&pod(), "ContainerCreating", "starting", "h", &now());
        let patch = merge_patch(&s);
        let status = &patch["status"];
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["reason"], "ContainerCreating");
        for dropped in ["podIP", "podIPs"] {
            assert!(
                status.get(dropped).is_some_and(serde_json::Value::is_null),
                "{dropped} is cleared, not left as it was: {patch}"
            );
        }
    }
}
