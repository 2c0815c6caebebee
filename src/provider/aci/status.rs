//! ACI container group state -> [`WorkloadStatus`] and [`OwnedWorkload`] (pure), and when a
//! listed group needs a GET.
//!
//! ARM's list of container groups omits `instanceView` (the spec's `ListResultContainerGroup`
//! has none, and real ACI leaves it out: Azure/azure-rest-api-specs#21280,
//! Azure/azure-sdk-for-java#39755), so the list tells only whether a group exists, its
//! `provisioningState` and its IP; container states, exit codes and restarts need a GET. The
//! adapter therefore lists the resource group once per status batch and GETs only the groups
//! [`needs_get`] picks: unknown ones, ones whose listed state changed, Pending ones every
//! `pending_refresh`, Running ones every `running_refresh`; finished ones never again.
//!
//! Reads per Running pod-minute, with the default [`Cadence`]: while every asked-for group is
//! known and settled (Running or finished) no list is made at all (the last one serves; a group
//! deleted behind the gateway's back answers its next GET with 404), and each Running group is
//! read every 29.5 s, 30 s with the status loop's 1 s tick: **2 reads per Running pod-minute**
//! (azure-aci spends 12), and a container that exits or restarts is seen at most ~30 s later.
//! When that many GETs would take more than half the target's read bucket ([`Cadence::within`],
//! [`READ_SHARE`](crate::provider::kit::cadence::READ_SHARE)), the interval grows with the number of Running groups instead:
//! `R / (READ_SHARE * reads_per_second)` (ARM's 25 reads/s: 30 s up to 368 Running groups, 80 s
//! at 1,000), so the status sync never spends the subscription's read budget.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::provider::aci::translate::{OWNER_TAGS, TAG_CREATED, TAG_SIDECARS};
use crate::provider::contract::{
    ContainerState, ContainerStatus, OwnedWorkload, ProviderEvent, WorkloadPhase, WorkloadStatus,
};
use crate::provider::kit::cadence::status_interval;

/// A container group as ARM returns it (GET or list item); only what the mapping reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GroupView {
    /// Resource id.
    pub(crate) id: Option<String>,
    /// Name (the workload id).
    pub(crate) name: Option<String>,
    /// Tags.
    pub(crate) tags: Option<BTreeMap<String, String>>,
    /// Properties.
    pub(crate) properties: GroupPropsView,
    /// ARM system data (creation time).
    pub(crate) system_data: Option<SystemDataView>,
}

/// `systemData`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct SystemDataView {
    /// RFC 3339.
    pub(crate) created_at: Option<String>,
}

/// Group properties.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GroupPropsView {
    /// `Pending`, `Creating`, `Succeeded`, `Failed`...
    pub(crate) provisioning_state: Option<String>,
    /// `Always`, `OnFailure`, `Never`.
    pub(crate) restart_policy: Option<String>,
    /// App containers.
    pub(crate) containers: Vec<ContainerView>,
    /// Init containers.
    pub(crate) init_containers: Vec<ContainerView>,
    /// IP.
    pub(crate) ip_address: Option<IpView>,
    /// Group instance view (GET only).
    pub(crate) instance_view: Option<GroupInstanceView>,
}

/// `IpAddress` (the parts read).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct IpView {
    /// The IP.
    pub(crate) ip: Option<String>,
}

/// Group `instanceView`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GroupInstanceView {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Stopped`.
    pub(crate) state: Option<String>,
    /// Group events.
    pub(crate) events: Vec<EventView>,
}

/// A container (app or init).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct ContainerView {
    /// Name.
    pub(crate) name: String,
    /// Properties.
    pub(crate) properties: ContainerPropsView,
}

/// Container properties (the parts read).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContainerPropsView {
    /// Container instance view (GET only).
    pub(crate) instance_view: Option<ContainerInstanceView>,
}

/// Container `instanceView`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContainerInstanceView {
    /// Restarts.
    pub(crate) restart_count: Option<i32>,
    /// Now.
    pub(crate) current_state: Option<StateView>,
    /// Before the last restart.
    pub(crate) previous_state: Option<StateView>,
    /// Events (`Pulling`, `Failed`, `Killing`...).
    pub(crate) events: Vec<EventView>,
}

/// `ContainerState`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct StateView {
    /// `Waiting`, `Running`, `Terminated`.
    pub(crate) state: Option<String>,
    /// RFC 3339.
    pub(crate) start_time: Option<String>,
    /// Exit code.
    pub(crate) exit_code: Option<i32>,
    /// RFC 3339.
    pub(crate) finish_time: Option<String>,
    /// `CrashLoopBackOff: Back-off restarting failed`, `Completed`, `Error`...
    pub(crate) detail_status: Option<String>,
}

/// `Event`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct EventView {
    /// Count.
    pub(crate) count: Option<i32>,
    /// RFC 3339.
    pub(crate) first_timestamp: Option<String>,
    /// RFC 3339.
    pub(crate) last_timestamp: Option<String>,
    /// `Pulling`, `Failed`, `InsufficientCapacity`...
    pub(crate) name: Option<String>,
    /// Text.
    pub(crate) message: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
}

impl GroupView {
    /// Whether this answer carries instance views (a GET does; the list does not).
    pub(crate) fn has_instance_view(&self) -> bool {
        self.properties.instance_view.is_some()
            || self
                .properties
                .containers
                .iter()
                .any(|c| c.properties.instance_view.is_some())
    }

    /// What changes in the list when something worth a GET happened: provisioning state and IP.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "{}|{}",
            self.properties.provisioning_state.as_deref().unwrap_or(""),
            self.properties
                .ip_address
                .as_ref()
                .and_then(|i| i.ip.as_deref())
                .unwrap_or("")
        )
    }

    /// A tag's value.
    pub(crate) fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .as_ref()
            .and_then(|t| t.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.as_str())
    }
}

fn state_of(view: Option<&ContainerInstanceView>) -> Option<&StateView> {
    view.and_then(|v| v.current_state.as_ref())
}

fn container_status(c: &ContainerView, fallback_waiting: &str) -> ContainerStatus {
    let view = c.properties.instance_view.as_ref();
    let restart_count = view.and_then(|v| v.restart_count).unwrap_or(0);
    let state = match state_of(view) {
        Some(s) if s.state.as_deref() == Some("Running") => ContainerState::Running {
            started_at: s.start_time.clone().unwrap_or_default(),
        },
        Some(s) if s.state.as_deref() == Some("Terminated") => terminated(s),
        Some(s) => {
            // ACI's detail reads like `CrashLoopBackOff: Back-off restarting failed container`.
            let detail = s.detail_status.clone().unwrap_or_default();
            let reason = detail
                .split(':')
                .next()
                .map(str::trim)
                .filter(|r| !r.is_empty() && !r.contains(' '))
                .unwrap_or(fallback_waiting);
            let message = last_warning(view.map(|v| v.events.as_slice()).unwrap_or_default())
                .unwrap_or(detail.clone());
            ContainerState::Waiting {
                reason: reason.to_string(),
                message,
            }
        }
        None => ContainerState::Waiting {
            reason: fallback_waiting.to_string(),
            message: last_warning(view.map(|v| v.events.as_slice()).unwrap_or_default())
                .unwrap_or_default(),
        },
    };
    let ready = matches!(state, ContainerState::Running { .. });
    // ACI keeps the run before the last restart as `previousState`.
    let last_state = view
        .and_then(|v| v.previous_state.as_ref())
        .filter(|s| s.state.as_deref() == Some("Terminated"))
        .map(terminated);
    ContainerStatus {
        name: c.name.clone(),
        state,
        restart_count,
        ready,
        last_state,
    }
}

/// The events ACI keeps for container `c` (GET only).
fn container_events(c: &ContainerView) -> Vec<ProviderEvent> {
    let Some(view) = c.properties.instance_view.as_ref() else {
        return Vec::new();
    };
    view.events
        .iter()
        .filter_map(|e| {
            Some(ProviderEvent {
                container: c.name.clone(),
                reason: e.name.clone().filter(|n| !n.is_empty())?,
                message: e.message.clone().unwrap_or_default(),
                warning: e.type_.as_deref() == Some("Warning"),
                count: e.count.unwrap_or(1),
                last_seen: e
                    .last_timestamp
                    .clone()
                    .or_else(|| e.first_timestamp.clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A `Terminated` state view in Kubernetes' words.
fn terminated(s: &StateView) -> ContainerState {
    let exit_code = s.exit_code.unwrap_or(-1);
    ContainerState::Terminated {
        exit_code,
        reason: if exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
        message: s.detail_status.clone().unwrap_or_default(),
        started_at: s.start_time.clone().unwrap_or_default(),
        finished_at: s.finish_time.clone().unwrap_or_default(),
    }
}

fn last_warning(events: &[EventView]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") || e.name.as_deref() == Some("Failed"))
        .max_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp))
        .map(|e| {
            format!(
                "{}: {}",
                e.name.as_deref().unwrap_or("Warning"),
                e.message.as_deref().unwrap_or("")
            )
        })
}

/// The workload status of `group` (a GET answer, or a list item for what the list holds).
pub(crate) fn workload_status(id: &str, group: &GroupView) -> WorkloadStatus {
    let p = &group.properties;
    let fallback = if !p.init_containers.is_empty() && init_running(p) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    // Sidecars run as containers of the group but are the pod's init containers: reported there
    // (started and ready while running, as a kubelet does), never judging the pod's phase.
    let sidecars: Vec<&str> = group
        .tag(TAG_SIDECARS)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let (sidecar_views, app_views): (Vec<&ContainerView>, Vec<&ContainerView>) = p
        .containers
        .iter()
        .partition(|c| sidecars.contains(&c.name.as_str()));
    let containers: Vec<ContainerStatus> = app_views
        .into_iter()
        .map(|c| container_status(c, fallback))
        .collect();
    let init_containers = p
        .init_containers
        .iter()
        .map(|c| container_status(c, "PodInitializing"))
        .chain(
            sidecar_views
                .into_iter()
                .map(|c| container_status(c, fallback)),
        )
        .collect();
    let (phase, message) = phase_of(p, &containers);
    let started_at = group
        .system_data
        .as_ref()
        .and_then(|s| s.created_at.clone())
        .or_else(|| group.tag(TAG_CREATED).map(str::to_string));
    WorkloadStatus {
        id: id.to_string(),
        phase,
        ip: p
            .ip_address
            .as_ref()
            .and_then(|i| i.ip.clone())
            .filter(|ip| !ip.is_empty()),
        started_at,
        containers,
        init_containers,
        events: p
            .init_containers
            .iter()
            .chain(&p.containers)
            .flat_map(container_events)
            .collect(),
        message,
    }
}

/// Whether an init container has not terminated yet.
fn init_running(p: &GroupPropsView) -> bool {
    p.init_containers.iter().any(|c| {
        !matches!(
            state_of(c.properties.instance_view.as_ref()).and_then(|s| s.state.as_deref()),
            Some("Terminated")
        )
    })
}

/// The first init container that exited with a non-zero code, said in words.
fn init_failure(p: &GroupPropsView) -> Option<String> {
    p.init_containers.iter().find_map(|c| {
        let s = state_of(c.properties.instance_view.as_ref())?;
        (s.state.as_deref() == Some("Terminated") && s.exit_code.unwrap_or(0) != 0).then(|| {
            format!(
                "init container {} exited with {}",
                c.name,
                s.exit_code.unwrap_or(-1)
            )
        })
    })
}

/// The group's last warning event, else the first waiting container's message.
fn events_message(p: &GroupPropsView, containers: &[ContainerStatus]) -> Option<String> {
    let group_events = p
        .instance_view
        .as_ref()
        .map(|v| v.events.as_slice())
        .unwrap_or_default();
    last_warning(group_events).or_else(|| {
        containers.iter().find_map(|c| match &c.state {
            ContainerState::Waiting { message, .. } if !message.is_empty() => {
                Some(format!("{}: {message}", c.name))
            }
            _ => None,
        })
    })
}

/// The phase (and why, when it is not plain) from the provisioning state, the group state, the
/// restart policy and the app `containers`' states.
fn phase_of(p: &GroupPropsView, containers: &[ContainerStatus]) -> (WorkloadPhase, Option<String>) {
    let provisioning = p.provisioning_state.as_deref().unwrap_or("Pending");
    let group_state = p.instance_view.as_ref().and_then(|v| v.state.as_deref());
    let failed_init = init_failure(p);
    let restart_policy = p.restart_policy.as_deref().unwrap_or("Always");
    let all_terminated = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Terminated { .. }));
    let all_zero = containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }));
    let any_running = containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running { .. }));
    let any_started = containers
        .iter()
        .any(|c| c.restart_count > 0 || !matches!(c.state, ContainerState::Waiting { .. }));
    match (provisioning, group_state) {
        ("Failed" | "Canceled", _) => (
            WorkloadPhase::Failed,
            events_message(p, containers)
                .or_else(|| Some(format!("container group provisioning {provisioning}"))),
        ),
        (_, Some("Failed")) => (
            WorkloadPhase::Failed,
            failed_init.or_else(|| events_message(p, containers)),
        ),
        (_, Some("Succeeded")) => (WorkloadPhase::Succeeded, None),
        (_, Some("Stopped")) => (
            WorkloadPhase::Failed,
            Some("the container group was stopped (by a user, or a Spot eviction)".into()),
        ),
        _ if failed_init.is_some() && restart_policy == "Never" => {
            (WorkloadPhase::Failed, failed_init)
        }
        _ if all_terminated
            && restart_policy != "Always"
            && (restart_policy == "Never" || all_zero) =>
        {
            if all_zero {
                (WorkloadPhase::Succeeded, None)
            } else {
                (
                    WorkloadPhase::Failed,
                    Some("a container exited with a non-zero code".into()),
                )
            }
        }
        _ if any_running || any_started => (WorkloadPhase::Running, None),
        _ => (WorkloadPhase::Pending, events_message(p, containers)),
    }
}

/// The workload `group` stands for when its ownership tags name `cluster_id` and `node`, aged
/// from its `burstgate.io-created` tag (else ARM's `systemData.createdAt`, else zero) at `now`;
/// `None` for a group without name or of another gateway.
pub(crate) fn owned_workload(
    group: &GroupView,
    now: DateTime<Utc>,
    cluster_id: &str,
    node: &str,
) -> Option<OwnedWorkload> {
    let id = group.name.clone()?;
    let created = group.tag(TAG_CREATED).and_then(parse_time).or_else(|| {
        group
            .system_data
            .as_ref()?
            .created_at
            .as_deref()
            .and_then(parse_time)
    });
    let age = created
        .and_then(|c| (now - c).to_std().ok())
        .unwrap_or(Duration::ZERO);
    let owner = OWNER_TAGS.read_owned_by(|k| group.tag(k), cluster_id, node)?;
    Some(OwnedWorkload {
        owner,
        id,
        age,
        leftover: false,
    })
}

/// An RFC 3339 time (ACI's timestamps, our `burstgate.io-created` tag).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How often the status sync re-reads groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cadence {
    /// A Pending group is read again after this long, even when its listed state did not change.
    pub pending_refresh: Duration,
    /// A Running group is read again after this long (an exit does not show in the list), or
    /// longer when `reads_per_second` says so.
    pub running_refresh: Duration,
    /// The last list serves again within this long when every asked-for group is known and
    /// settled (Running or finished).
    pub list_reuse: Duration,
    /// The rate of the target's read bucket (`None`: no bucket); with R Running groups, each
    /// is read every `max(running_refresh, R / (READ_SHARE * reads_per_second))`
    /// ([`status_interval`], one GET per group).
    pub reads_per_second: Option<f64>,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            pending_refresh: Duration::from_secs(10),
            running_refresh: Duration::from_millis(29_500),
            list_reuse: Duration::MAX,
            reads_per_second: None,
        }
    }
}

impl Cadence {
    /// Every status call reads everything (tests).
    pub fn eager() -> Cadence {
        Cadence {
            pending_refresh: Duration::ZERO,
            running_refresh: Duration::ZERO,
            list_reuse: Duration::ZERO,
            reads_per_second: None,
        }
    }

    /// This cadence, spending at most [`READ_SHARE`](crate::provider::kit::cadence::READ_SHARE)
    /// of a read bucket refilling `reads_per_second` (`None`: unlimited) on Running groups.
    pub fn within(self, reads_per_second: Option<f64>) -> Cadence {
        Cadence {
            reads_per_second,
            ..self
        }
    }

    /// How long a Running group goes unread when `running` groups are Running.
    pub fn running_interval(&self, running: usize) -> Duration {
        status_interval(self.running_refresh, self.reads_per_second, 1, running)
    }
}

/// What the adapter knows of a group from its last GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    /// Phase then.
    pub(crate) phase: WorkloadPhase,
    /// The listed fingerprint then.
    pub(crate) fingerprint: String,
    /// How long ago.
    pub(crate) age: Duration,
}

/// Whether a listed group needs a GET now, Running ones being read every `running_interval`.
pub(crate) fn needs_get(
    known: Option<&Known>,
    listed: &GroupView,
    cadence: &Cadence,
    running_interval: Duration,
) -> bool {
    if listed.has_instance_view() {
        return false;
    }
    let Some(k) = known else { return true };
    if k.fingerprint != listed.fingerprint() {
        return true;
    }
    match k.phase {
        WorkloadPhase::Pending => k.age >= cadence.pending_refresh,
        WorkloadPhase::Running => k.age >= running_interval,
        WorkloadPhase::Succeeded | WorkloadPhase::Failed | WorkloadPhase::Rejected(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(v: serde_json::Value) -> GroupView {
        serde_json::from_value(v).expect("a group view")
    }

    fn running(name: &str, restarts: i32) -> serde_json::Value {
        json!({"name": name, "properties": {"image": "x", "instanceView": {"restartCount": restarts, "currentState": {"state": "Running", "startTime": "2026-11-27T07:00:05Z"}}}})
    }

    fn terminated(name: &str, code: i32) -> serde_json::Value {
        json!({"name": name, "properties": {"instanceView": {"restartCount": 0, "currentState": {"state": "Terminated", "exitCode": code, "startTime": "2026-11-27T07:00:05Z", "finishTime": "2026-11-27T07:01:00Z", "detailStatus": if code == 0 {"Completed"} else {"Error"}}}}})
    }

    #[test]
    fn a_provisioned_group_with_running_containers_is_running_with_its_ip() {
        let g = group(
            json!({"name": "bg-1", "properties": {"provisioningState": "Succeeded", "restartPolicy": "Always",
            "ipAddress": {"ip": "20.1.2.3", "type": "Public", "ports": []}, "instanceView": {"state": "Running"},
            "containers": [running("app", 2)]}, "systemData": {"createdAt": "2026-11-27T07:00:00Z"}}),
        );
        let s = workload_status("bg-1", &g);
        assert_eq!(
            (s.phase, s.ip.as_deref(), s.started_at.as_deref()),
            (
                WorkloadPhase::Running,
                Some("20.1.2.3"),
                Some("2026-11-27T07:00:00Z")
            )
        );
        assert_eq!(s.containers[0].restart_count, 2);
        assert!(s.containers[0].ready);
    }

    #[test]
    fn a_restarted_container_says_how_its_previous_run_ended_and_init_containers_report_their_own()
    {
        let g = group(
            json!({"properties": {"provisioningState": "Succeeded", "restartPolicy": "Always",
            "initContainers": [terminated("setup", 0)],
            "containers": [{"name": "app", "properties": {"instanceView": {"restartCount": 1,
                "currentState": {"state": "Running", "startTime": "2026-11-27T07:01:01Z"},
                "previousState": {"state": "Terminated", "exitCode": 2, "detailStatus": "Error",
                    "startTime": "2026-11-27T07:00:05Z", "finishTime": "2026-11-27T07:01:00Z"}}}}]}}),
        );
        let s = workload_status("bg-1", &g);
        assert_eq!(s.containers[0].restart_count, 1);
        assert_eq!(
            s.containers[0].last_state,
            Some(ContainerState::Terminated {
                exit_code: 2,
                reason: "Error".into(),
                message: "Error".into(),
                started_at: "2026-11-27T07:00:05Z".into(),
                finished_at: "2026-11-27T07:01:00Z".into(),
            })
        );
        assert_eq!(s.init_containers.len(), 1);
        assert_eq!(s.init_containers[0].name, "setup");
        assert!(matches!(
            s.init_containers[0].state,
            ContainerState::Terminated { exit_code: 0, .. }
        ));
        assert_eq!(s.init_containers[0].last_state, None);
    }

    #[test]
    fn a_sidecar_running_in_the_group_is_reported_as_a_started_ready_init_container_only() {
        let s = workload_status(
            "w1",
            &group(json!({
                "tags": {"burstgate.io-sidecars": "proxy"},
                "properties": {"provisioningState": "Succeeded", "restartPolicy": "Always",
                "initContainers": [terminated("setup", 0)],
                "containers": [running("proxy", 0), terminated("app", 1)]}
            })),
        );
        let names = |v: &[ContainerStatus]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&s.containers), ["app"]);
        assert_eq!(names(&s.init_containers), ["setup", "proxy"]);
        let proxy = &s.init_containers[1];
        assert!(proxy.ready && matches!(proxy.state, ContainerState::Running { .. }));
        // The app container's exit, not the sidecar, says where the pod is.
        assert!(matches!(
            s.containers[0].state,
            ContainerState::Terminated { exit_code: 1, .. }
        ));
        assert_eq!(s.phase, WorkloadPhase::Running);
    }

    #[test]
    fn a_creating_group_is_pending_and_says_what_it_waits_for() {
        let g = group(
            json!({"properties": {"provisioningState": "Creating", "containers": [{"name": "app", "properties": {"instanceView": {
            "currentState": {"state": "Waiting", "detailStatus": "ImagePullBackOff: pulling"},
            "events": [{"name": "Failed", "type": "Warning", "message": "Failed to pull image", "lastTimestamp": "2026-11-27T07:00:09Z"}]}}}]}}),
        );
        let s = workload_status("bg-1", &g);
        assert_eq!(s.phase, WorkloadPhase::Pending);
        assert_eq!(
            s.containers[0].state,
            ContainerState::Waiting {
                reason: "ImagePullBackOff".into(),
                message: "Failed: Failed to pull image".into()
            }
        );
    }

    #[test]
    fn all_containers_exiting_zero_with_restart_never_succeeds_and_non_zero_fails() {
        let ok = group(
            json!({"properties": {"provisioningState": "Succeeded", "restartPolicy": "Never", "containers": [terminated("a", 0), terminated("b", 0)]}}),
        );
        assert_eq!(workload_status("bg-1", &ok).phase, WorkloadPhase::Succeeded);
        let bad = group(
            json!({"properties": {"provisioningState": "Succeeded", "restartPolicy": "Never", "containers": [terminated("a", 0), terminated("b", 3)]}}),
        );
        let s = workload_status("bg-1", &bad);
        assert_eq!(s.phase, WorkloadPhase::Failed);
        assert!(matches!(
            s.containers[1].state,
            ContainerState::Terminated { exit_code: 3, .. }
        ));
    }

    #[test]
    fn on_failure_succeeds_only_when_every_container_exited_zero() {
        let ok = group(
            json!({"properties": {"provisioningState": "Succeeded", "restartPolicy": "OnFailure", "containers": [terminated("a", 0)]}}),
        );
        assert_eq!(workload_status("bg-1", &ok).phase, WorkloadPhase::Succeeded);
        // A non-zero exit under OnFailure is being restarted: still Running.
        let restarting = group(
            json!({"properties": {"provisioningState": "Succeeded", "restartPolicy": "OnFailure", "containers": [terminated("a", 1)]}}),
        );
        assert_eq!(
            workload_status("bg-1", &restarting).phase,
            WorkloadPhase::Running
        );
    }

    #[test]
    fn a_failed_provisioning_fails_the_workload_with_acis_event() {
        let g = group(
            json!({"properties": {"provisioningState": "Failed", "containers": [{"name": "app", "properties": {}}],
            "instanceView": {"events": [{"name": "InsufficientCapacity", "type": "Warning", "message": "The requested resource is not available in the location 'eastus'"}]}}}),
        );
        let s = workload_status("bg-1", &g);
        assert_eq!(s.phase, WorkloadPhase::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some(
                "InsufficientCapacity: The requested resource is not available in the location 'eastus'"
            )
        );
    }

    #[test]
    fn a_stopped_group_fails_and_a_group_state_of_succeeded_wins() {
        let stopped = group(
            json!({"properties": {"provisioningState": "Succeeded", "instanceView": {"state": "Stopped"}, "containers": [running("a", 0)]}}),
        );
        assert_eq!(
            workload_status("bg-1", &stopped).phase,
            WorkloadPhase::Failed
        );
        let done = group(
            json!({"properties": {"provisioningState": "Succeeded", "instanceView": {"state": "Succeeded"}, "containers": [terminated("a", 0)]}}),
        );
        assert_eq!(
            workload_status("bg-1", &done).phase,
            WorkloadPhase::Succeeded
        );
    }

    #[test]
    fn app_containers_wait_with_pod_initializing_while_an_init_container_runs() {
        let g = group(
            json!({"properties": {"provisioningState": "Succeeded", "initContainers": [running("init", 0)], "containers": [{"name": "app", "properties": {}}]}}),
        );
        let s = workload_status("bg-1", &g);
        assert_eq!(s.phase, WorkloadPhase::Pending);
        assert!(
            matches!(&s.containers[0].state, ContainerState::Waiting { reason, .. } if reason == "PodInitializing")
        );
    }

    #[test]
    fn an_owned_workload_is_aged_from_its_created_tag_and_a_nameless_or_foreign_group_is_none() {
        let g = group(
            json!({"name": "bg-1", "tags": {OWNER_TAGS.cluster_id: "c1", OWNER_TAGS.node: "n", OWNER_TAGS.pod_uid: "u",
            TAG_CREATED: "2026-11-27T07:00:00Z"}, "systemData": {"createdAt": "2026-11-27T06:00:00Z"}}),
        );
        let now = parse_time("2026-11-27T07:10:00Z").unwrap();
        let owned = owned_workload(&g, now, "c1", "n").expect("named");
        assert_eq!(
            (owned.id.as_str(), owned.age, owned.owner.pod_uid.as_str()),
            ("bg-1", Duration::from_secs(600), "u")
        );
        assert_eq!(owned.owner.namespace, "");
        assert!(owned_workload(&GroupView::default(), now, "c1", "n").is_none());
        assert!(
            owned_workload(&g, now, "c2", "n").is_none(),
            "another gateway's group is not ours"
        );
    }

    #[test]
    fn a_listed_group_is_read_only_when_new_changed_or_due() {
        let cadence = Cadence::default();
        let every = cadence.running_interval(1);
        let listed = group(
            json!({"properties": {"provisioningState": "Succeeded", "ipAddress": {"ip": "1.2.3.4"}}}),
        );
        let known = |phase, age_s: u64, fp: &str| Known {
            phase,
            age: Duration::from_secs(age_s),
            fingerprint: fp.into(),
        };
        assert!(needs_get(None, &listed, &cadence, every), "unknown");
        assert!(
            needs_get(
                Some(&known(WorkloadPhase::Running, 5, "Creating|")),
                &listed,
                &cadence,
                every
            ),
            "changed"
        );
        assert!(
            !needs_get(
                Some(&known(WorkloadPhase::Running, 20, "Succeeded|1.2.3.4")),
                &listed,
                &cadence,
                every
            ),
            "running, fresh"
        );
        assert!(
            needs_get(
                Some(&known(WorkloadPhase::Running, 30, "Succeeded|1.2.3.4")),
                &listed,
                &cadence,
                every
            ),
            "running, due"
        );
        assert!(
            !needs_get(
                Some(&known(WorkloadPhase::Pending, 5, "Succeeded|1.2.3.4")),
                &listed,
                &cadence,
                every
            ),
            "pending, fresh"
        );
        assert!(
            needs_get(
                Some(&known(WorkloadPhase::Pending, 10, "Succeeded|1.2.3.4")),
                &listed,
                &cadence,
                every
            ),
            "pending, due"
        );
        assert!(
            !needs_get(
                Some(&known(WorkloadPhase::Succeeded, 9999, "Succeeded|1.2.3.4")),
                &listed,
                &cadence,
                every
            ),
            "finished"
        );
    }

    #[test]
    fn a_list_item_that_carries_instance_views_needs_no_get() {
        let listed = group(
            json!({"properties": {"provisioningState": "Succeeded", "containers": [running("a", 0)]}}),
        );
        assert!(!needs_get(
            None,
            &listed,
            &Cadence::default(),
            Duration::ZERO
        ));
    }

    #[test]
    fn running_groups_are_read_every_30_s_until_that_would_spend_more_than_half_the_read_bucket() {
        // ARM's published read refill: 25/s per subscription.
        let cadence = Cadence::default().within(Some(25.0));
        assert_eq!(cadence.running_interval(1), Duration::from_millis(29_500));
        assert_eq!(cadence.running_interval(368), Duration::from_millis(29_500));
        assert_eq!(cadence.running_interval(1_000), Duration::from_secs(80));
        assert_eq!(cadence.running_interval(10_000), Duration::from_secs(800));
        // Two reads per Running pod-minute with the status loop's 1 s tick, at most.
        let per_minute = 60.0 / (cadence.running_interval(50).as_secs_f64() + 0.5);
        assert!(per_minute <= 2.0, "{per_minute}");
        assert_eq!(
            Cadence::default().running_interval(1_000_000),
            Duration::from_millis(29_500)
        );
    }
}
