//! The virtual node: registers the one Node, keeps its labels, taint, capacity and conditions true
//! to the live policy and target health, and heartbeats through a Lease in `kube-node-lease`.
//!
//! What the node says means something: it is `Ready` only while a policy is loaded and at least
//! one of its targets can take pods, and its capacity is the sum of the usable targets' quotas.
//! Everything it writes is additive: labels and taints of others stay, and the status patch is a
//! strategic merge that only names the condition types this module owns, so conditions written by
//! others (node-problem-detector, the node-lifecycle controller) survive.
//!
//! The pure half ([`node_labels`], [`spec_patch`], [`capacity`], [`readiness`], [`conditions`],
//! [`node_status`], [`node_object`]) decides; [`run_node`] talks to the API server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, ObjectReference, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;
use crate::controller::context::Gateway;
use crate::controller::events::{Event, EventReason};
use crate::policy::{ExclusionReason, Policy};

/// Namespace of the node heartbeat Leases (the kubelet's convention).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Annotation listing the label keys this gateway set, so it can remove the ones it no longer sets.
pub const OWNED_LABELS_ANNOTATION: &str = "burstgate.io/owned-labels";
/// Annotation naming the taint key this gateway set, so a changed key does not leave the old taint.
pub const OWNED_TAINT_ANNOTATION: &str = "burstgate.io/owned-taint";
/// Namespace of the Events about the node (see [`node_event`]).
pub const NODE_EVENT_NAMESPACE: &str = "kube-system";
/// The name under which the gateway reports Events.
pub const REPORTING_CONTROLLER: &str = "burstgate";
/// The Kubernetes version whose kubelet API burstgate serves.
pub const KUBELET_API_VERSION: &str = "v1.20.2";

/// vCPU a target without a vCPU quota counts for, in millicores (1000 vCPU).
pub const UNLIMITED_MILLI_CPU: u64 = 1_000_000;
/// Memory a target without a memory quota counts for, in MiB (4 TiB).
pub const UNLIMITED_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// Pods a target without a pod quota counts for.
pub const UNLIMITED_PODS: u64 = 1000;

/// Condition types this module owns; every other type on the Node belongs to someone else.
pub const OWNED_CONDITIONS: [&str; 5] = [
    "Ready",
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
    "NetworkUnavailable",
];

/// Ready reason: a policy is loaded and a target can take pods.
pub const REASON_READY: &str = "KubeletReady";
/// Ready reason: no valid policy has loaded yet.
pub const REASON_NO_POLICY: &str = "NoPolicy";
/// Ready reason: the policy names no target that can take pods now.
pub const REASON_NO_USABLE_TARGET: &str = "NoUsableTarget";

/// Why the node is Ready or not: the Ready condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessReason {
    /// A policy is loaded and a target can take pods ([`REASON_READY`]).
    Ready,
    /// No valid policy has loaded yet ([`REASON_NO_POLICY`]).
    NoPolicy,
    /// The policy names no target that can take pods now ([`REASON_NO_USABLE_TARGET`]).
    NoUsableTarget,
}

impl ReadinessReason {
    /// The Ready condition's reason, as the node shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadinessReason::Ready => REASON_READY,
            ReadinessReason::NoPolicy => REASON_NO_POLICY,
            ReadinessReason::NoUsableTarget => REASON_NO_USABLE_TARGET,
        }
    }

    /// The reason of the Event that says the node became so.
    pub fn event(self) -> EventReason {
        match self {
            ReadinessReason::Ready => EventReason::NodeReady,
            ReadinessReason::NoPolicy => EventReason::NoPolicy,
            ReadinessReason::NoUsableTarget => EventReason::NoUsableTarget,
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call. Retryable unless the server called the request
    /// invalid (400/422: the node configuration is wrong) — see [`Error::is_retryable`].
    #[error("{action}: {source}")]
    Api {
        /// What the gateway was doing.
        action: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A call did not answer in time. Retryable.
    #[error("{action}: no answer within {after:?}")]
    Timeout {
        /// What the gateway was doing.
        action: &'static str,
        /// The bound.
        after: Duration,
    },
    /// Every conditional update met a concurrent change (409) several times in a row. Retryable.
    #[error("{action}: the object kept changing under concurrent updates")]
    Contended {
        /// What the gateway was doing.
        action: &'static str,
    },
    /// Shutdown was requested while the call was in flight. Not retryable: the caller stops.
    #[error("{action}: cancelled by shutdown")]
    Cancelled {
        /// What the gateway was doing.
        action: &'static str,
    },
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => !matches!(status.code, 400 | 422),
            Error::Api { .. } | Error::Timeout { .. } | Error::Contended { .. } => true,
            Error::Cancelled { .. } => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { .. } => "api",
            Error::Timeout { .. } => "timeout",
            Error::Contended { .. } => "contended",
            Error::Cancelled { .. } => "cancelled",
        }
    }

    fn status_code(&self) -> Option<u16> {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    fn is_conflict(&self) -> bool {
        self.status_code() == Some(409)
    }
}

/// How often the node controller does what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTiming {
    /// Period of the heartbeat Lease renewal (the kubelet's default: 10 s).
    pub lease_renew: Duration,
    /// `leaseDurationSeconds` of the heartbeat Lease (the kubelet's default: 40 s).
    pub lease_duration: Duration,
    /// Period of re-evaluating readiness and capacity from policy and target health; a policy
    /// change is seen at once.
    pub evaluate: Duration,
    /// The status (with fresh `lastHeartbeatTime`s) is patched at least this often, changed or not.
    pub status_refresh: Duration,
    /// Bound on each API call.
    pub call_timeout: Duration,
}

impl Default for NodeTiming {
    fn default() -> Self {
        NodeTiming {
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            evaluate: Duration::from_secs(5),
            status_refresh: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// What the node advertises it can hold: the sum over usable targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// vCPU, millicores.
    pub milli_cpu: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Pods.
    pub pods: u64,
    /// `nvidia.com/gpu`: one per pod the GPU-offering targets can hold (the engine, not the
    /// scheduler, matches each pod to a target with its SKU); 0 leaves the resource out.
    pub gpus: u64,
}

/// The extended resource a GPU pod requests.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

impl Resources {
    /// As a Node's `capacity` / `allocatable` map (`cpu`, `memory`, `pods`, and
    /// `nvidia.com/gpu` when a usable target offers GPUs).
    pub fn quantities(&self) -> BTreeMap<String, Quantity> {
        let cpu = if self.milli_cpu % 1000 == 0 {
            format!("{}", self.milli_cpu / 1000)
        } else {
            format!("{}m", self.milli_cpu)
        };
        let mut q = BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu)),
            ("memory".to_owned(), Quantity(memory(self.memory_mib))),
            ("pods".to_owned(), Quantity(self.pods.to_string())),
        ]);
        if self.gpus > 0 {
            q.insert(GPU_RESOURCE.to_owned(), Quantity(self.gpus.to_string()));
        }
        q
    }
}

/// MiB in the canonical form the API server stores (`32Gi`, not `32768Mi`), so that what the
/// node controller sends is what it reads back.
fn memory(mib: u64) -> String {
    match mib {
        0 => "0".to_owned(),
        m if m % (1024 * 1024) == 0 => format!("{}Ti", m / (1024 * 1024)),
        m if m % 1024 == 0 => format!("{}Gi", m / 1024),
        m => format!("{m}Mi"),
    }
}

/// The sum of the quotas of the `usable` targets of `policy`; a target without a quota for a
/// resource counts [`UNLIMITED_MILLI_CPU`], [`UNLIMITED_MEMORY_MIB`] or [`UNLIMITED_PODS`].
pub fn capacity(policy: &Policy, usable: &[String]) -> Resources {
    policy
        .targets
        .iter()
        .filter(|t| usable.contains(&t.name))
        .fold(Resources::default(), |sum, t| Resources {
            milli_cpu: sum
                .milli_cpu
                .saturating_add(t.quota.milli_cpu.unwrap_or(UNLIMITED_MILLI_CPU)),
            memory_mib: sum
                .memory_mib
                .saturating_add(t.quota.memory_mib.unwrap_or(UNLIMITED_MEMORY_MIB)),
            pods: sum
                .pods
                .saturating_add(t.quota.pods.unwrap_or(UNLIMITED_PODS)),
            gpus: if t.gpus.is_empty() {
                sum.gpus
            } else {
                sum.gpus
                    .saturating_add(t.quota.pods.unwrap_or(UNLIMITED_PODS))
            },
        })
}

/// Which targets of the live policy can take pods now, and why each other one cannot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetHealth {
    /// Names of the usable targets, in policy order.
    pub usable: Vec<String>,
    /// `(target, why not)` for every other target, in policy order.
    pub unusable: Vec<(String, String)>,
}

/// The health of `policy`'s targets as the gateway sees it: [`Gateway::usable_targets`], and for
/// the others a reason (no adapter for their provider, or circuit open).
pub fn target_health(gw: &Gateway, policy: &Policy) -> TargetHealth {
    let usable = gw.usable_targets(policy);
    let unhealthy = gw.unhealthy.lock().expect("health lock").clone();
    let unusable = policy
        .targets
        .iter()
        .filter(|t| !usable.contains(&t.name))
        .map(|t| {
            let why = if let Some(problem) = gw.providers.problem(&t.name) {
                problem
            } else if gw.providers.get(&t.name).is_none() {
                format!("no {} adapter is ready yet", t.provider)
            } else {
                match unhealthy.get(&t.name) {
                    Some(ExclusionReason::CircuitOpen) => {
                        "circuit open after repeated failures".to_owned()
                    }
                    Some(ExclusionReason::RejectedByProvider(m)) => {
                        format!("rejected by its provider: {m}")
                    }
                    Some(ExclusionReason::Unusable(why)) => why.clone(),
                    Some(ExclusionReason::CannotRun(uses)) => {
                        format!("its provider cannot run: {}", uses.join(", "))
                    }
                    None => "unusable".to_owned(),
                }
            };
            (t.name.clone(), why)
        })
        .collect();
    TargetHealth { usable, unusable }
}

/// Whether the node is Ready, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Ready or not.
    pub ready: bool,
    /// Why (`KubeletReady`, `NoPolicy` or `NoUsableTarget` on the condition).
    pub reason: ReadinessReason,
    /// A sentence for `kubectl describe node`.
    pub message: String,
}

/// Ready only while a policy is loaded and at least one target is usable; the message names the
/// policy and, target by target, why the others are not usable.
pub fn readiness(policy: Option<&Policy>, health: &TargetHealth) -> Readiness {
    let Some(policy) = policy else {
        return Readiness {
            ready: false,
            reason: ReadinessReason::NoPolicy,
            message:
                "no valid policy has loaded yet; see the gateway log and the PolicyInvalid events"
                    .to_owned(),
        };
    };
    let short_hash: String = policy.hash.chars().take(12).collect();
    let why_not = health
        .unusable
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    if health.usable.is_empty() {
        let message = if policy.targets.is_empty() {
            format!("policy {short_hash} defines no target")
        } else {
            format!("policy {short_hash}: no target can take pods ({why_not})")
        };
        return Readiness {
            ready: false,
            reason: ReadinessReason::NoUsableTarget,
            message,
        };
    }
    let mut message = format!(
        "burstgate is ready: policy {short_hash}, {} of {} targets usable ({})",
        health.usable.len(),
        policy.targets.len(),
        health.usable.join(", ")
    );
    if !why_not.is_empty() {
        message.push_str(&format!("; unusable: {why_not}"));
    }
    Readiness {
        ready: true,
        reason: ReadinessReason::Ready,
        message,
    }
}

/// Everything the node's status reports, apart from times: a change of it is patched at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The Ready condition.
    pub readiness: Readiness,
    /// Capacity and allocatable.
    pub resources: Resources,
}

/// The report for `policy` (if one is loaded) and its targets' health.
pub fn report(policy: Option<&Policy>, health: &TargetHealth) -> Report {
    let resources = policy
        .map(|p| capacity(p, &health.usable))
        .unwrap_or_default();
    Report {
        readiness: readiness(policy, health),
        resources,
    }
}

/// The labels of the node: the AKS virtual-node set (always), after the configured extra ones.
pub fn node_labels(config: &RunConfig) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = config.node_labels.iter().cloned().collect();
    for (k, v) in [
        ("type", "virtual-kubelet"),
        ("kubernetes.io/role", "agent"),
        ("kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ] {
        labels.insert(k.to_owned(), v.to_owned());
    }
    labels.insert(
        "kubernetes.io/hostname".to_owned(),
        config.node_name.clone(),
    );
    labels
}

/// The node's own taint (`virtual-kubelet.io/provider=azure:NoSchedule` by default).
pub fn node_taint(config: &RunConfig) -> Taint {
    Taint {
        key: config.taint_key.clone(),
        value: Some(config.taint_value.clone()),
        effect: config.taint_effect.clone(),
        time_added: None,
    }
}

/// `kubeletVersion`: the kubelet API burstgate serves, then burstgate's own version.
pub fn kubelet_version() -> String {
    format!(
        "{KUBELET_API_VERSION}-burstgate-{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The five conditions this module owns, for `report`'s readiness at `now`. A condition keeps its
/// `lastTransitionTime` from `previous` while its status does not change.
pub fn conditions(
    readiness: &Readiness,
    previous: &[NodeCondition],
    now: Timestamp,
) -> Vec<NodeCondition> {
    let ready_status = if readiness.ready { "True" } else { "False" };
    let wanted = [
        (
            "Ready",
            ready_status,
            readiness.reason.as_str(),
            readiness.message.clone(),
        ),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "memory is the targets' concern, not the node's".to_owned(),
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "disk is the targets' concern, not the node's".to_owned(),
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "processes run on the targets, not on the node".to_owned(),
        ),
        (
            "NetworkUnavailable",
            "False",
            "NetworkReady",
            "pods get their network from their target".to_owned(),
        ),
    ];
    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let since = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(since),
            }
        })
        .collect()
}

/// The node status for `report` at `now`: conditions, capacity, addresses, kubelet endpoint and
/// node info. `boot_id` changes with every start of the gateway.
pub fn node_status(
    config: &RunConfig,
    report: &Report,
    previous: &[NodeCondition],
    now: Timestamp,
    boot_id: &str,
) -> NodeStatus {
    let resources = report.resources.quantities();
    NodeStatus {
        conditions: Some(conditions(&report.readiness, previous, now)),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: config.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: config.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            operating_system: "linux".to_owned(),
            kubelet_version: kubelet_version(),
            kube_proxy_version: format!("burstgate-{}", env!("CARGO_PKG_VERSION")),
            container_runtime_version: format!("burstgate://{}", env!("CARGO_PKG_VERSION")),
            os_image: "burstgate virtual node (pods run on the policy's targets)".to_owned(),
            kernel_version: "n/a (virtual node)".to_owned(),
            machine_id: format!("{}/{}", config.cluster_id, config.node_name),
            system_uuid: format!("{}/{}", config.cluster_id, config.node_name),
            boot_id: boot_id.to_owned(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// The Node to create: labels, ownership annotations, taint, and `status`.
pub fn node_object(config: &RunConfig, status: NodeStatus) -> Node {
    let labels = node_labels(config);
    let annotations = BTreeMap::from([
        (
            OWNED_LABELS_ANNOTATION.to_owned(),
            labels.keys().cloned().collect::<Vec<_>>().join(","),
        ),
        (OWNED_TAINT_ANNOTATION.to_owned(), config.taint_key.clone()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![node_taint(config)]),
            ..NodeSpec::default()
        }),
        status: Some(status),
    }
}

/// The JSON merge patch that makes an `existing` Node carry this gateway's labels and taint while
/// keeping everyone else's; `None` when it already does. Labels this gateway set before (see
/// [`OWNED_LABELS_ANNOTATION`]) and no longer sets are removed, as is a taint under a previous key.
/// The patch carries the Node's `resourceVersion`: a concurrent change makes it fail with 409.
pub fn spec_patch(existing: &Node, config: &RunConfig) -> Option<Value> {
    let desired = node_labels(config);
    let current = existing.metadata.labels.clone().unwrap_or_default();
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let owned_before: Vec<&str> = annotations
        .get(OWNED_LABELS_ANNOTATION)
        .map(|s| s.split(',').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();

    let mut labels = Map::new();
    for (k, v) in &desired {
        if current.get(k) != Some(v) {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in owned_before {
        if !desired.contains_key(k) && current.contains_key(k) {
            labels.insert(k.to_owned(), Value::Null);
        }
    }

    let mut new_annotations = Map::new();
    let owned_labels = desired.keys().cloned().collect::<Vec<_>>().join(",");
    if annotations.get(OWNED_LABELS_ANNOTATION) != Some(&owned_labels) {
        new_annotations.insert(
            OWNED_LABELS_ANNOTATION.to_owned(),
            Value::String(owned_labels),
        );
    }
    if annotations.get(OWNED_TAINT_ANNOTATION) != Some(&config.taint_key) {
        new_annotations.insert(
            OWNED_TAINT_ANNOTATION.to_owned(),
            Value::String(config.taint_key.clone()),
        );
    }

    let previous_key = annotations.get(OWNED_TAINT_ANNOTATION);
    let ours = node_taint(config);
    let taints = existing
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut kept: Vec<Taint> = taints
        .iter()
        .filter(|t| t.key != ours.key && Some(&t.key) != previous_key)
        .cloned()
        .collect();
    let same = |a: &Taint, b: &Taint| {
        a.key == b.key
            && a.value.as_deref().unwrap_or("") == b.value.as_deref().unwrap_or("")
            && a.effect == b.effect
    };
    let taints_ok = kept.len() + 1 == taints.len() && taints.iter().any(|t| same(t, &ours));
    kept.push(ours);

    if labels.is_empty() && new_annotations.is_empty() && taints_ok {
        return None;
    }
    let mut metadata = Map::new();
    metadata.insert(
        "resourceVersion".to_owned(),
        json!(existing.metadata.resource_version),
    );
    if !labels.is_empty() {
        metadata.insert("labels".to_owned(), Value::Object(labels));
    }
    if !new_annotations.is_empty() {
        metadata.insert("annotations".to_owned(), Value::Object(new_annotations));
    }
    let mut patch = json!({ "metadata": metadata });
    if !taints_ok {
        patch["spec"] = json!({ "taints": kept });
    }
    Some(patch)
}

/// The reference Events about the node carry. Its `uid` is the node's name, as the kubelet does,
/// which is what `kubectl describe node` searches for.
pub fn node_reference(node_name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Node".to_owned()),
        name: Some(node_name.to_owned()),
        uid: Some(node_name.to_owned()),
        ..ObjectReference::default()
    }
}

/// `note` cut to the 1 kB an Event note may hold, at a character boundary.
fn event_note(note: &str) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note.to_owned();
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// Publishes `event` about the node (shown by `kubectl describe node`): `Warning` for problems
/// (e.g. reason `PolicyInvalid`), `Normal` for news. The action is the reason; the note is cut
/// to the 1 kB an Event allows. Errors are the API server's (retryable; callers log and go on).
///
/// The Event is an `events.k8s.io/v1` Event in [`NODE_EVENT_NAMESPACE`]: Kubernetes 1.20 accepts
/// such an Event about a cluster-scoped object only there (later versions also in `default`),
/// which is why this does not go through `kube::runtime::events::Recorder` (it would put it in
/// `default`).
pub async fn node_event(gw: &Gateway, event: &Event) -> Result<(), Error> {
    let now = Timestamp::now();
    let node = &gw.config.node_name;
    let event = k8s_openapi::api::events::v1::Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.as_nanosecond())),
            namespace: Some(NODE_EVENT_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(match event.type_() {
            EventType::Normal => "Normal".to_owned(),
            EventType::Warning => "Warning".to_owned(),
        }),
        reason: Some(event.reason.as_str().to_owned()),
        action: Some(event.reason.as_str().to_owned()),
        note: Some(event_note(&event.note)),
        regarding: Some(node_reference(node)),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(gw.config.identity()),
        ..k8s_openapi::api::events::v1::Event::default()
    };
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(gw.client.clone(), NODE_EVENT_NAMESPACE)
        .create(&PostParams::default(), &event)
        .await
        .map(drop)
        .map_err(|source| Error::Api {
            action: "publishing an event about the node",
            source,
        })
}

/// Runs the node controller with [`NodeTiming::default`] until `shutdown` is cancelled: registers
/// the Node (create, or fix labels and taint of an existing one), renews its heartbeat Lease, and
/// patches its status when a re-evaluation (on a policy change, on `gw.nudge`, and every
/// [`NodeTiming::evaluate`]) finds a change, and at least every minute.
///
/// API errors are logged and retried; it returns an error only when the API server calls the node
/// invalid (a configuration mistake, e.g. a bad taint effect), and `Ok` on shutdown. It leaves the
/// Node in place on shutdown: a standby replica keeps heartbeating it.
pub async fn run_node(gw: Arc<Gateway>, shutdown: CancellationToken) -> Result<(), Error> {
    run_node_with(gw, shutdown, NodeTiming::default()).await
}

/// [`run_node`] with explicit timing.
pub async fn run_node_with(
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    timing: NodeTiming,
) -> Result<(), Error> {
    let boot_id = format!(
        "{}-{}-{}",
        gw.config.identity(),
        std::process::id(),
        Timestamp::now().as_millisecond()
    );
    let mut controller = NodeController {
        nodes: Api::all(gw.client.clone()),
        leases: Api::namespaced(gw.client.clone(), NODE_LEASE_NAMESPACE),
        gw,
        shutdown,
        timing,
        boot_id,
        observed: None,
        sent: None,
        sent_at: None,
    };
    match controller.run().await {
        Err(Error::Cancelled { .. }) => Ok(()),
        other => other,
    }
}

/// The node controller's state between ticks.
struct NodeController {
    gw: Arc<Gateway>,
    nodes: Api<Node>,
    leases: Api<Lease>,
    shutdown: CancellationToken,
    timing: NodeTiming,
    boot_id: String,
    /// The Node as the API server last returned it.
    observed: Option<Node>,
    /// The report last patched, and when.
    sent: Option<Report>,
    sent_at: Option<Instant>,
}

impl NodeController {
    async fn run(&mut self) -> Result<(), Error> {
        self.come_online().await?;
        let gw = self.gw.clone();
        let mut policy = gw.policy.clone();
        let mut policy_open = true;
        let mut lease_tick = tokio::time::interval_at(
            Instant::now() + self.timing.lease_renew,
            self.timing.lease_renew,
        );
        let mut evaluate_tick =
            tokio::time::interval_at(Instant::now() + self.timing.evaluate, self.timing.evaluate);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        evaluate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let present = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(()),
                _ = lease_tick.tick() => {
                    self.renew_lease().await;
                    true
                }
                changed = policy.changed(), if policy_open => {
                    policy_open = changed.is_ok();
                    self.sync_status().await?
                }
                () = gw.nudge.notified() => self.sync_status().await?,
                _ = evaluate_tick.tick() => self.sync_status().await?,
            };
            if !present {
                tracing::warn!(node = %self.gw.config.node_name, "the node was deleted; registering it again");
                self.come_online().await?;
            }
        }
    }

    /// Registers the node, then patches its status and renews its Lease.
    async fn come_online(&mut self) -> Result<(), Error> {
        loop {
            self.register_until_done().await?;
            if self.sync_status().await? {
                self.renew_lease().await;
                return Ok(());
            }
        }
    }

    /// Bounds `call` by the call timeout and by shutdown.
    async fn call<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Error::Cancelled { action }),
            answer = tokio::time::timeout(self.timing.call_timeout, call) => match answer {
                Ok(result) => result.map_err(|source| Error::Api { action, source }),
                Err(_) => Err(Error::Timeout { action, after: self.timing.call_timeout }),
            },
        }
    }

    /// Registers the node, retrying retryable errors with a growing pause (at most 30 s).
    async fn register_until_done(&mut self) -> Result<(), Error> {
        let mut pause = Duration::from_millis(500);
        loop {
            match self.register().await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_retryable() => {
                    tracing::warn!(node = %self.gw.config.node_name, error = %err, retry_in = ?pause, "registering the node failed; retrying");
                }
                Err(err) => return Err(err),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Error::Cancelled { action: "registering the node" }),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Creates the Node, or brings an existing one's labels and taint in line.
    async fn register(&mut self) -> Result<(), Error> {
        let name = self.gw.config.node_name.clone();
        let existing = self
            .call("reading the node", self.nodes.get_opt(&name))
            .await?;
        let node = match existing {
            None => {
                let report = self.current_report();
                let status = node_status(
                    &self.gw.config,
                    &report,
                    &[],
                    Timestamp::now(),
                    &self.boot_id,
                );
                let created = self
                    .call(
                        "creating the node",
                        self.nodes.create(
                            &PostParams::default(),
                            &node_object(&self.gw.config, status),
                        ),
                    )
                    .await?;
                tracing::info!(node = %name, "registered the virtual node");
                created
            }
            Some(existing) => {
                let node = self.fix_spec(existing).await?;
                tracing::info!(node = %name, "took over the existing virtual node");
                node
            }
        };
        self.observed = Some(node);
        Ok(())
    }

    /// Applies [`spec_patch`] to `node` if it needs it; a 409 means someone changed the node in
    /// between, so it reads the node again and retries (a few times).
    async fn fix_spec(&self, mut node: Node) -> Result<Node, Error> {
        let name = self.gw.config.node_name.clone();
        for _ in 0..5 {
            let Some(patch) = spec_patch(&node, &self.gw.config) else {
                return Ok(node);
            };
            match self
                .call(
                    "updating the node's labels and taint",
                    self.nodes
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(updated) => {
                    tracing::info!(node = %name, "updated the node's labels and taint");
                    return Ok(updated);
                }
                Err(err) if err.is_conflict() => {
                    node = self.call("reading the node", self.nodes.get(&name)).await?
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Contended {
            action: "updating the node's labels and taint",
        })
    }

    fn current_report(&self) -> Report {
        let policy = self.gw.current_policy();
        let health = policy
            .as_deref()
            .map(|p| target_health(&self.gw, p))
            .unwrap_or_default();
        report(policy.as_deref(), &health)
    }

    /// Patches the status when the report changed or the last patch is older than the refresh
    /// period. `Ok(false)` when the node is gone (deleted by someone); API errors are logged and
    /// retried at the next tick; only shutdown escapes as an error.
    async fn sync_status(&mut self) -> Result<bool, Error> {
        let report = self.current_report();
        let due = self
            .sent_at
            .is_none_or(|at| at.elapsed() >= self.timing.status_refresh);
        if !due && self.sent.as_ref() == Some(&report) {
            return Ok(true);
        }
        let previous = self
            .observed
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let status = node_status(
            &self.gw.config,
            &report,
            &previous,
            Timestamp::now(),
            &self.boot_id,
        );
        let patch = json!({ "status": status });
        let name = self.gw.config.node_name.clone();
        match self
            .call(
                "patching the node status",
                self.nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)),
            )
            .await
        {
            Ok(node) => {
                let before = self.sent.as_ref().map(|r| r.readiness.clone());
                if before.as_ref() != Some(&report.readiness) {
                    tracing::info!(node = %name, ready = report.readiness.ready, reason = report.readiness.reason.as_str(), message = %report.readiness.message, "node readiness changed");
                }
                self.note_readiness(before.as_ref(), &report.readiness)
                    .await;
                self.sent = Some(report);
                self.sent_at = Some(Instant::now());
                let node = if spec_patch(&node, &self.gw.config).is_some() {
                    match self.fix_spec(node.clone()).await {
                        Ok(fixed) => fixed,
                        Err(err) => {
                            tracing::warn!(node = %name, error = %err, "restoring the node's labels and taint failed; retrying later");
                            node
                        }
                    }
                } else {
                    node
                };
                self.observed = Some(node);
                Ok(true)
            }
            Err(err) if err.is_not_found() => {
                self.sent = None;
                self.sent_at = None;
                self.observed = None;
                Ok(false)
            }
            Err(Error::Cancelled { action }) => Err(Error::Cancelled { action }),
            Err(err) => {
                tracing::warn!(node = %name, error = %err, "patching the node status failed; retrying");
                Ok(true)
            }
        }
    }

    /// An Event when readiness flips (or first shows not ready).
    async fn note_readiness(&self, before: Option<&Readiness>, now: &Readiness) {
        let flipped = match before {
            None => !now.ready,
            Some(b) => b.ready != now.ready || b.reason != now.reason,
        };
        if !flipped {
            return;
        }
        let event = Event::new(now.reason.event(), now.message.clone());
        if let Err(err) = node_event(&self.gw, &event).await {
            tracing::warn!(node = %self.gw.config.node_name, error = %err, "could not publish the readiness event");
        }
    }

    /// The heartbeat: renews (or creates) the node's Lease. Failures are logged; the next tick
    /// tries again well within the lease duration.
    async fn renew_lease(&mut self) {
        let name = self.gw.config.node_name.clone();
        let owner = self
            .observed
            .as_ref()
            .and_then(|n| n.metadata.uid.clone())
            .map(|uid| OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: name.clone(),
                uid,
                ..OwnerReference::default()
            });
        let spec = LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        };
        let patch = json!({ "metadata": { "ownerReferences": owner.iter().collect::<Vec<_>>() }, "spec": spec });
        let renewed = self
            .call(
                "renewing the node lease",
                self.leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        let result = match renewed {
            Err(err) if err.is_not_found() => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        owner_references: owner.map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.call(
                    "creating the node lease",
                    self.leases.create(&PostParams::default(), &lease),
                )
                .await
            }
            other => other,
        };
        match result {
            Ok(_) => tracing::debug!(node = %name, "renewed the node lease"),
            Err(Error::Cancelled { .. }) => {}
            Err(err) => {
                tracing::warn!(node = %name, error = %err, "renewing the node lease failed; retrying at the next heartbeat")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    fn config() -> RunConfig {
        RunConfig::from_flags(&[
            "--node-name",
            "burstgate",
            "--node-ip",
            "10.0.0.7",
            "--cluster-id",
            "c1",
            "--node-label",
            "team=burst",
            "--node-label",
            "type=not-virtual",
        ])
        .expect("valid flags")
    }

    const POLICY: &str = r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
metadata: {name: t}
spec:
  targets:
    - name: small
      provider: sim
      region: local
      quota: {vcpu: 4, memoryGiB: 16, pods: 10}
    - name: open
      provider: aci
      region: eastus
"#;

    fn policy() -> Policy {
        load_files(&[("p.yaml".into(), POLICY.into())]).expect("a valid policy")
    }

    fn health(usable: &[&str], unusable: &[(&str, &str)]) -> TargetHealth {
        TargetHealth {
            usable: usable.iter().map(|s| s.to_string()).collect(),
            unusable: unusable
                .iter()
                .map(|(t, w)| (t.to_string(), w.to_string()))
                .collect(),
        }
    }

    #[test]
    fn capacity_sums_the_quotas_of_usable_targets_only() {
        let r = capacity(&policy(), &["small".into()]);
        assert_eq!(
            r,
            Resources {
                milli_cpu: 4000,
                memory_mib: 16 * 1024,
                pods: 10,
                gpus: 0,
            }
        );
    }

    #[test]
    fn a_target_without_quota_counts_the_documented_large_defaults() {
        let r = capacity(&policy(), &["small".into(), "open".into()]);
        assert_eq!(r.milli_cpu, 4000 + UNLIMITED_MILLI_CPU);
        assert_eq!(r.memory_mib, 16 * 1024 + UNLIMITED_MEMORY_MIB);
        assert_eq!(r.pods, 10 + UNLIMITED_PODS);
    }

    #[test]
    fn the_node_offers_a_gpu_per_pod_of_the_usable_targets_with_gpus() {
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: t4, provider: aci, region: eastus, quota: {pods: 6}, limits: {gpus: [T4]}}\n    - {name: cpu, provider: aci, region: westus, quota: {pods: 50}}\n";
        let p = load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let both = capacity(&p, &["t4".into(), "cpu".into()]);
        assert_eq!(both.gpus, 6);
        assert_eq!(both.quantities()[GPU_RESOURCE].0, "6");
        assert_eq!(
            capacity(&p, &["cpu".into()]).gpus,
            0,
            "the GPU target is unusable"
        );
    }

    #[test]
    fn quantities_are_in_the_canonical_form_the_api_server_stores() {
        let q = Resources {
            milli_cpu: 4000,
            memory_mib: 2048,
            pods: 3,
            gpus: 0,
        }
        .quantities();
        assert!(
            !q.contains_key(GPU_RESOURCE),
            "no GPU target, no GPU resource"
        );
        assert_eq!(q["cpu"].0, "4");
        assert_eq!(q["memory"].0, "2Gi");
        assert_eq!(
            Resources {
                memory_mib: 1536,
                ..Resources::default()
            }
            .quantities()["memory"]
                .0,
            "1536Mi"
        );
        assert_eq!(
            Resources {
                memory_mib: UNLIMITED_MEMORY_MIB,
                ..Resources::default()
            }
            .quantities()["memory"]
                .0,
            "4Ti"
        );
        assert_eq!(Resources::default().quantities()["memory"].0, "0");
        assert_eq!(q["pods"].0, "3");
        assert_eq!(
            Resources {
                milli_cpu: 1500,
                ..Resources::default()
            }
            .quantities()["cpu"]
                .0,
            "1500m"
        );
    }

    #[test]
    fn the_node_is_not_ready_without_a_policy() {
        let r = report(None, &TargetHealth::default());
        assert!(!r.readiness.ready);
        assert_eq!(r.readiness.reason, ReadinessReason::NoPolicy);
        assert_eq!(
            r.resources,
            Resources::default(),
            "no capacity without a policy"
        );
    }

    #[test]
    fn the_node_is_not_ready_when_no_target_is_usable_and_says_why_for_each() {
        let p = policy();
        let r = report(
            Some(&p),
            &health(
                &[],
                &[
                    ("small", "circuit open after repeated failures"),
                    ("open", "no aci provider is configured"),
                ],
            ),
        );
        assert!(!r.readiness.ready);
        assert_eq!(r.readiness.reason, ReadinessReason::NoUsableTarget);
        assert!(
            r.readiness.message.contains("small: circuit open"),
            "{}",
            r.readiness.message
        );
        assert!(
            r.readiness.message.contains("open: no aci provider"),
            "{}",
            r.readiness.message
        );
        assert_eq!(r.resources, Resources::default());
    }

    #[test]
    fn the_node_is_ready_when_a_target_is_usable_and_names_the_policy() {
        let p = policy();
        let r = report(
            Some(&p),
            &health(&["small"], &[("open", "no aci provider is configured")]),
        );
        assert!(r.readiness.ready);
        assert_eq!(r.readiness.reason, ReadinessReason::Ready);
        assert!(
            r.readiness.message.contains(&p.hash[..12]),
            "{}",
            r.readiness.message
        );
        assert!(
            r.readiness
                .message
                .contains("1 of 2 targets usable (small)"),
            "{}",
            r.readiness.message
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_the_status_holds() {
        let ready = Readiness {
            ready: true,
            reason: ReadinessReason::Ready,
            message: "ok".into(),
        };
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = conditions(&ready, &[], t0);
        assert_eq!(
            first.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            OWNED_CONDITIONS
        );
        let second = conditions(&ready, &first, t1);
        let ready_cond = second.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready_cond.last_transition_time, Some(Time(t0)));
        assert_eq!(ready_cond.last_heartbeat_time, Some(Time(t1)));

        let not_ready = Readiness {
            ready: false,
            reason: ReadinessReason::NoPolicy,
            message: "none".into(),
        };
        let third = conditions(&not_ready, &second, t1);
        let ready_cond = third.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready_cond.status, "False");
        assert_eq!(
            ready_cond.last_transition_time,
            Some(Time(t1)),
            "a flip restarts the transition time"
        );
        let memory = third.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(
            (memory.status.as_str(), memory.last_transition_time.clone()),
            ("False", Some(Time(t0)))
        );
    }

    #[test]
    fn the_aks_labels_win_over_configured_extras_and_extras_are_kept() {
        let labels = node_labels(&config());
        assert_eq!(labels["type"], "virtual-kubelet");
        assert_eq!(labels["kubernetes.io/role"], "agent");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/hostname"], "burstgate");
        assert_eq!(labels["team"], "burst");
    }

    #[test]
    fn the_status_advertises_address_kubelet_port_and_a_burstgate_kubelet_version() {
        let c = config();
        let r = report(None, &TargetHealth::default());
        let s = node_status(&c, &r, &[], Timestamp::now(), "boot");
        let addresses = s.addresses.unwrap();
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == "10.0.0.7")
        );
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "Hostname" && a.address == "burstgate")
        );
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        let info = s.node_info.unwrap();
        assert_eq!(
            (info.operating_system.as_str(), info.architecture.as_str()),
            ("linux", "amd64")
        );
        assert!(
            info.kubelet_version.starts_with("v1.20.2-burstgate-"),
            "{}",
            info.kubelet_version
        );
        assert!(info.kubelet_version.ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn a_new_node_needs_no_spec_patch() {
        let c = config();
        let mut node = node_object(&c, NodeStatus::default());
        node.metadata.resource_version = Some("7".into());
        assert_eq!(spec_patch(&node, &c), None);
    }

    #[test]
    fn the_spec_patch_adds_our_labels_and_taint_and_keeps_everyone_elses() {
        let c = config();
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "burstgate", "resourceVersion": "42",
                "labels": { "owner": "ops", "type": "virtual-kubelet" },
            },
            "spec": { "taints": [
                { "key": "node.kubernetes.io/unreachable", "effect": "NoExecute" },
                { "key": "dedicated", "value": "ops", "effect": "NoSchedule" },
            ] },
        }))
        .unwrap();
        let patch = spec_patch(&node, &c).expect("a patch");
        assert_eq!(
            patch["metadata"]["resourceVersion"], "42",
            "optimistic concurrency"
        );
        let labels = patch["metadata"]["labels"].as_object().unwrap();
        assert!(
            !labels.contains_key("owner"),
            "the patch leaves others' labels alone"
        );
        assert!(
            !labels.contains_key("type"),
            "an already right label is not rewritten"
        );
        assert_eq!(labels["kubernetes.io/role"], "agent");
        let taints: Vec<Taint> = serde_json::from_value(patch["spec"]["taints"].clone()).unwrap();
        let keys: Vec<&str> = taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "node.kubernetes.io/unreachable",
                "dedicated",
                "virtual-kubelet.io/provider"
            ]
        );
    }

    #[test]
    fn the_spec_patch_removes_labels_and_taints_it_owned_before_but_no_longer_sets() {
        let c = config();
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "burstgate", "resourceVersion": "42",
                "labels": { "old-extra": "x", "kept": "y" },
                "annotations": { OWNED_LABELS_ANNOTATION: "old-extra", OWNED_TAINT_ANNOTATION: "example.com/old" },
            },
            "spec": { "taints": [
                { "key": "example.com/old", "value": "azure", "effect": "NoSchedule" },
                { "key": "virtual-kubelet.io/provider", "value": "aws", "effect": "NoSchedule" },
            ] },
        }))
        .unwrap();
        let patch = spec_patch(&node, &c).expect("a patch");
        assert_eq!(
            patch["metadata"]["labels"]["old-extra"],
            Value::Null,
            "removed"
        );
        assert!(
            patch["metadata"]["labels"].get("kept").is_none(),
            "never ours, never touched"
        );
        let taints: Vec<Taint> = serde_json::from_value(patch["spec"]["taints"].clone()).unwrap();
        assert_eq!(
            taints,
            vec![node_taint(&c)],
            "the old key and the stale value are replaced by ours"
        );
    }

    #[test]
    fn an_invalid_node_is_not_retried_but_conflicts_and_outages_are() {
        let api = |code: u16| Error::Api {
            action: "registering",
            source: kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ),
        };
        assert!(
            !api(422).is_retryable(),
            "a bad taint effect will not fix itself"
        );
        assert!(!api(400).is_retryable());
        assert!(api(409).is_retryable() && api(503).is_retryable() && api(403).is_retryable());
        assert!(
            Error::Timeout {
                action: "x",
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!Error::Cancelled { action: "x" }.is_retryable());
    }

    #[test]
    fn a_long_event_note_is_cut_at_a_character_boundary() {
        let note = "é".repeat(1000);
        let cut = event_note(&note);
        assert!(cut.len() <= 1024 && cut.ends_with("..."));
        assert_eq!(event_note("short"), "short");
    }
}
