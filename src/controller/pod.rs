//! The pod lifecycle: every pod bound to the virtual node is admitted, decided, recorded, created
//! at its provider, kept in sync, and deleted. This is where a pod's journey happens.
//!
//! - `reconcile` runs per pod on every change (kube-runtime `Controller`, watching
//!   `spec.nodeName=<node>`, no per-pod polling of the API) and on every policy/health nudge.
//! - `sync_statuses` reads provider statuses in batches (fast while Pending, slow while Running)
//!   and patches `/status` only on change.
//! - Placement annotations are written BEFORE any provider call; workload ids derive from the
//!   pod UID, so a crash anywhere never makes a second workload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::controller::context::Gateway;
use crate::controller::resolve;
use crate::controller::status::{PodPhase, RestartPolicy};
use crate::controller::{admission, placement, status};
use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, Outcome, PodView, Policy, explain};
use crate::provider::{
    Capabilities, Owner, ProviderError, WorkloadPhase, WorkloadSpec, workload_id,
};

/// Errors of one reconcile; all are retried with backoff by `error_policy`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call. Retryable.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A provider call failed transiently. Retryable.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Provider(e) => e.metric_label(),
        }
    }
}

/// How often Pending and Running workloads are read from their provider.
const POLL_PENDING: Duration = Duration::from_secs(2);
const POLL_RUNNING: Duration = Duration::from_secs(10);

/// The pod controller's state, shared by reconciles and the status loop.
pub struct PodController {
    gw: Arc<Gateway>,
    api: Api<Pod>,
    recorder: Recorder,
    /// Pod UIDs whose workload is known to exist at its provider.
    created: Mutex<HashSet<String>>,
    /// Targets that rejected a pod, per pod UID: (target name, why).
    rejected: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// When each pod's workload was last read.
    polled: Mutex<HashMap<String, Instant>>,
    /// Pod UIDs kept on a target that does not answer (one `TargetUnreachable` Event each).
    unreachable: Mutex<HashSet<String>>,
    /// True once the ledger has been rebuilt from the pods on the node.
    ready: watch::Sender<bool>,
    /// Background work a reconcile started (removing a workload of unknown outcome), owned by
    /// the shutdown path: `run` waits for it.
    tasks: TaskTracker,
}

fn is_terminal(pod: &Pod) -> bool {
    PodPhase::of(pod).is_terminal()
}

/// How long the listing of a target's workloads at start may take before new pods go ahead.
const RESTORE_LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the pod's status already mirrors a workload: an IP, or a container that started.
/// Only the status sync writes those, from a workload that existed.
fn mirrors_a_workload(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.pod_ip.is_some()
        || status.container_statuses.iter().flatten().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl PodController {
    fn new(gw: Arc<Gateway>) -> Arc<PodController> {
        let reporter = Reporter {
            controller: "burstgate".into(),
            instance: Some(gw.config.identity()),
        };
        Arc::new(PodController {
            api: Api::all(gw.client.clone()),
            recorder: Recorder::new(gw.client.clone(), reporter),
            gw,
            created: Mutex::default(),
            rejected: Mutex::default(),
            polled: Mutex::default(),
            unreachable: Mutex::default(),
            ready: watch::channel(false).0,
            tasks: TaskTracker::new(),
        })
    }

    /// What the gateway's adapters can run together (admission refuses the rest).
    fn capabilities(&self) -> Capabilities {
        self.gw
            .providers
            .all()
            .into_iter()
            .map(|(_, p)| p.capabilities())
            .fold(Capabilities::NONE, Capabilities::union)
    }

    /// Targets whose adapter cannot run a feature `pod` uses (an httpGet probe on Fargate), as
    /// exclusions for the engine: the pod goes to a target that can, and `explain` says why.
    fn capability_exclusions(&self, policy: &Policy, pod: &Pod) -> Vec<Exclusion> {
        crate::provider::kit::exclusions(policy, pod, |t| {
            Some(self.gw.provider_for_target(&t.name)?.capabilities())
        })
    }

    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: "Burst".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::warn!(pod = %pod.name_any(), error = %e, "could not publish an event");
        }
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.gw.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn patch_status(&self, pod: &Pod, desired: PodStatus) -> Result<(), Error> {
        if !status::differs(pod.status.as_ref(), &desired) {
            return Ok(());
        }
        let mut value = serde_json::to_value(&desired).expect("a PodStatus serialises");
        // A merge patch keeps fields it does not mention: clear the ones a new state drops.
        for key in ["reason", "message", "podIP", "podIPs"] {
            value
                .as_object_mut()
                .expect("object")
                .entry(key)
                .or_insert(serde_json::Value::Null);
        }
        self.pod_api(pod)
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": value })),
            )
            .await?;
        Ok(())
    }

    async fn patch_annotations(
        &self,
        pod: &Pod,
        annotations: serde_json::Value,
    ) -> Result<(), Error> {
        let patch = json!({ "metadata": { "annotations": annotations } });
        self.pod_api(pod)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    /// Rebuilds the ledger from the placement annotations of the pods on the node, and learns
    /// which workloads exist, before any new decision is made.
    async fn restore(&self, pods: &[Pod]) {
        if let Some(policy) = self.gw.current_policy() {
            let mut ledger = self.gw.ledger.lock().expect("ledger lock");
            ledger.rebind(&policy);
            for pod in pods
                .iter()
                .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
            {
                if let Some(r) = placement::reservation(pod.annotations()) {
                    ledger.restore(&policy, &pod.uid().unwrap_or_default(), r);
                }
            }
        }
        // Which pods already have a workload, so they are not created again. Every target is
        // asked at once, each for at most RESTORE_LIST_TIMEOUT: a target that hangs must not hold
        // back every new pod. Pods of a target that did not answer go through create, which is
        // idempotent, and a pod that already ran is never moved off it (`mirrors_a_workload`).
        let (cluster_id, node) = (&self.gw.config.cluster_id, &self.gw.config.node_name);
        let listings = futures::future::join_all(self.gw.providers.all().into_iter().map(
            |(target, provider)| async move {
                let listed = tokio::time::timeout(
                    RESTORE_LIST_TIMEOUT,
                    provider.list_owned(cluster_id, node),
                )
                .await;
                (target, listed)
            },
        ))
        .await;
        let mut created = HashSet::new();
        for (target, listed) in listings {
            match listed {
                Ok(Ok(owned)) => created.extend(
                    owned
                        .into_iter()
                        .filter(|o| !o.leftover)
                        .map(|o| o.owner.pod_uid),
                ),
                Ok(Err(e)) => {
                    tracing::warn!(target = %target, error = %e, "could not list owned workloads at start")
                }
                Err(_) => {
                    tracing::warn!(target = %target, timeout = ?RESTORE_LIST_TIMEOUT, "could not list owned workloads at start: no answer in time")
                }
            }
        }
        tracing::info!(
            pods = pods.len(),
            workloads = created.len(),
            "ledger rebuilt from pod annotations"
        );
        *self.created.lock().expect("created lock") = created;
        self.ready.send_replace(true);
    }

    async fn reconcile(pod: Arc<Pod>, ctx: Arc<PodController>) -> Result<Action, Error> {
        tracing::debug!(pod = %pod.name_any(), "reconcile");
        let mut ready = ctx.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
        if pod.metadata.deletion_timestamp.is_some() {
            return ctx.delete(&pod).await;
        }
        let uid = pod.uid().unwrap_or_default();
        if is_terminal(&pod) {
            ctx.gw.ledger.lock().expect("ledger lock").release(&uid);
            return Ok(Action::await_change());
        }
        if pod.annotations().contains_key(placement::TARGET) {
            if !ctx.created.lock().expect("created lock").contains(&uid) {
                return ctx.create(&pod).await;
            }
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        ctx.place(&pod).await
    }

    fn error_policy(pod: Arc<Pod>, error: &Error, _ctx: Arc<PodController>) -> Action {
        tracing::warn!(pod = %pod.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
        Action::requeue(Duration::from_secs(5))
    }

    async fn place(&self, pod: &Pod) -> Result<Action, Error> {
        let host_ip = self.gw.config.node_ip.clone();
        let unsupported = admission::unsupported_features(pod, &self.capabilities());
        if !unsupported.is_empty() {
            let msg = format!(
                "no provider of this gateway supports: {}",
                unsupported.join(", ")
            );
            self.patch_status(
                pod,
                status::failed(pod, "Unsupported", &msg, &host_ip, &now()),
            )
            .await?;
            self.event(pod, EventType::Warning, "Unsupported", msg)
                .await;
            return Ok(Action::await_change());
        }
        let Some(policy) = self.gw.current_policy() else {
            self.patch_status(
                pod,
                status::waiting(
                    pod,
                    "NoPolicy",
                    "no valid burst policy is loaded",
                    &host_ip,
                    &now(),
                ),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        };
        let view = match PodView::from_pod(pod) {
            Ok(v) => v,
            Err(e) => {
                self.patch_status(
                    pod,
                    status::failed(pod, "InvalidPod", &e.to_string(), &host_ip, &now()),
                )
                .await?;
                self.event(pod, EventType::Warning, "InvalidPod", e.to_string())
                    .await;
                return Ok(Action::await_change());
            }
        };
        let mut exclusions = self.gw.exclusions(&policy);
        exclusions.extend(self.capability_exclusions(&policy, pod));
        if let Some(rejected) = self.rejected.lock().expect("rejected lock").get(&view.uid) {
            for (name, why) in rejected {
                if let Some(t) = policy.target_by_name(name) {
                    exclusions.push(Exclusion {
                        target: t.id,
                        reason: ExclusionReason::RejectedByProvider(why.clone()),
                    });
                }
            }
        }
        let started = Instant::now();
        let decision =
            self.gw
                .ledger
                .lock()
                .expect("ledger lock")
                .place(&policy, &view, &exclusions);
        let chosen = decision
            .placement()
            .map(|p| policy.target(p.target).name.as_str());
        self.gw
            .metrics
            .decided(chosen, decision.kind(), started.elapsed().as_secs_f64());
        let summary = explain::summary(&policy, &decision);
        match &decision.outcome {
            Outcome::Placed(p) => {
                let annotations = placement::annotations(&policy, p, &view.uid);
                if let Err(e) = self.patch_annotations(pod, json!(annotations)).await {
                    self.gw
                        .ledger
                        .lock()
                        .expect("ledger lock")
                        .release(&view.uid);
                    return Err(e);
                }
                tracing::info!(pod = %view.name, namespace = %view.namespace, target = %policy.target(p.target).name, "placed");
                self.event(pod, EventType::Normal, "Placed", summary).await;
                // The annotation patch triggers the next reconcile, which creates the workload.
                Ok(Action::await_change())
            }
            Outcome::NoTarget(crate::policy::model::OnNoTarget::Pending) => {
                let changed = pod.status.as_ref().and_then(|s| s.message.as_deref())
                    != Some(summary.as_str());
                self.patch_status(
                    pod,
                    status::waiting(pod, "BurstPending", &summary, &host_ip, &now()),
                )
                .await?;
                if changed {
                    self.event(pod, EventType::Warning, "NoTarget", summary)
                        .await;
                }
                Ok(Action::requeue(Duration::from_secs(60)))
            }
            Outcome::NoTarget(crate::policy::model::OnNoTarget::Fail) => {
                self.patch_status(
                    pod,
                    status::failed(pod, "NoTarget", &summary, &host_ip, &now()),
                )
                .await?;
                self.event(pod, EventType::Warning, "NoTarget", summary)
                    .await;
                Ok(Action::await_change())
            }
            Outcome::InvalidAnnotation { .. } => {
                self.patch_status(
                    pod,
                    status::failed(pod, "InvalidAnnotation", &summary, &host_ip, &now()),
                )
                .await?;
                self.event(pod, EventType::Warning, "InvalidAnnotation", summary)
                    .await;
                Ok(Action::await_change())
            }
        }
    }

    fn spec_for(&self, pod: &Pod) -> Option<(ProviderKind, WorkloadSpec)> {
        let a = pod.annotations();
        let kind = ProviderKind::parse(a.get(placement::PROVIDER)?)?;
        let reservation = placement::reservation(a)?;
        let uid = pod.uid()?;
        Some((
            kind,
            WorkloadSpec {
                id: workload_id(&uid),
                owner: Owner {
                    cluster_id: self.gw.config.cluster_id.clone(),
                    node: self.gw.config.node_name.clone(),
                    namespace: pod.namespace().unwrap_or_default(),
                    pod: pod.name_any(),
                    pod_uid: uid,
                },
                target: reservation.target,
                region: a.get(placement::REGION).cloned().unwrap_or_default(),
                size: crate::policy::sizing::Size {
                    milli_cpu: reservation.usage.milli_cpu,
                    memory_mib: reservation.usage.memory_mib,
                },
                pod: pod.clone(),
                resolved: Default::default(),
            },
        ))
    }

    async fn create(&self, pod: &Pod) -> Result<Action, Error> {
        let host_ip = self.gw.config.node_ip.clone();
        let uid = pod.uid().unwrap_or_default();
        let Some((_, mut spec)) = self.spec_for(pod) else {
            return self
                .redecide(pod, "?", "placement annotations are incomplete".into())
                .await;
        };
        spec.resolved = match resolve::resolve(&self.gw.client, pod, &host_ip).await {
            Ok(r) => r,
            Err(resolve::Error::Api(e)) => return Err(e.into()),
            Err(e) => {
                // As a kubelet does: the pod waits until its references exist, and says why.
                self.event(
                    pod,
                    EventType::Warning,
                    "CreateContainerConfigError",
                    e.to_string(),
                )
                .await;
                return Ok(Action::requeue(Duration::from_secs(if e.is_retryable() {
                    15
                } else {
                    60
                })));
            }
        };
        let Some(provider) = self.gw.provider_for_target(&spec.target) else {
            return match self.gw.providers.problem(&spec.target) {
                Some(why) => self.redecide(pod, &spec.target, why).await,
                // The adapter is being built for a policy that just arrived.
                None => Ok(Action::requeue(Duration::from_secs(1))),
            };
        };
        match provider.create(&spec).await {
            Ok(ws) => {
                self.unreachable
                    .lock()
                    .expect("unreachable lock")
                    .remove(&uid);
                self.created
                    .lock()
                    .expect("created lock")
                    .insert(uid.clone());
                self.polled
                    .lock()
                    .expect("polled lock")
                    .insert(uid, Instant::now());
                self.patch_status(pod, status::from_workload(pod, &ws, &host_ip, &now()))
                    .await?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Err(e) if e.is_retryable() => {
                tracing::info!(pod = %pod.name_any(), error = %e, "create throttled; retrying");
                Ok(Action::requeue(
                    e.retry_after().unwrap_or(Duration::from_secs(5)),
                ))
            }
            Err(ProviderError::Target(rejection)) if mirrors_a_workload(pod) => {
                // A workload ran for this pod (its status came from one) before this process
                // started: it most likely still runs on the target, billed. Starting a second
                // one elsewhere would run the app twice; wait for the target to answer.
                tracing::warn!(pod = %pod.name_any(), target = %spec.target, %rejection, "the target of a pod that already ran cannot be reached; keeping the pod there");
                let first = self
                    .unreachable
                    .lock()
                    .expect("unreachable lock")
                    .insert(uid.clone());
                if first {
                    let note = format!(
                        "target {} cannot confirm the pod's workload ({rejection}); keeping the pod there until it answers",
                        spec.target
                    );
                    self.event(pod, EventType::Warning, "TargetUnreachable", note)
                        .await;
                }
                Ok(Action::requeue(Duration::from_secs(30)))
            }
            Err(ProviderError::Target(rejection)) => {
                if rejection.outcome_unknown() {
                    // An earlier attempt (or a gateway that died) may have started the workload:
                    // remove it, without holding the pod back (the delete may wait out the same
                    // failing target). Orphan GC removes it as a stray if this fails.
                    let (provider, id, pod_name, target) = (
                        provider.clone(),
                        spec.id.clone(),
                        pod.name_any(),
                        spec.target.clone(),
                    );
                    self.tasks.spawn(async move {
                        if let Err(e) = provider.delete(&id).await {
                            tracing::info!(pod = %pod_name, target = %target, error = %e, "could not remove a possible workload left on the target; orphan GC will");
                        }
                    });
                }
                self.redecide(pod, &spec.target, rejection.to_string())
                    .await
            }
            Err(e) => {
                self.gw.ledger.lock().expect("ledger lock").release(&uid);
                let reason = match &e {
                    ProviderError::Pod(rejection) => rejection.reason().to_string(),
                    _ => "NotSupported".into(),
                };
                let msg = e.to_string();
                self.patch_status(pod, status::failed(pod, &reason, &msg, &host_ip, &now()))
                    .await?;
                self.event(pod, EventType::Warning, &reason, msg).await;
                Ok(Action::await_change())
            }
        }
    }

    /// A target refused the pod for a target-level reason: give its room back, exclude it for
    /// this pod, and decide again (the annotation removal triggers the next reconcile).
    async fn redecide(&self, pod: &Pod, target: &str, why: String) -> Result<Action, Error> {
        let uid = pod.uid().unwrap_or_default();
        self.gw.ledger.lock().expect("ledger lock").release(&uid);
        self.rejected
            .lock()
            .expect("rejected lock")
            .entry(uid)
            .or_default()
            .push((target.to_string(), why.clone()));
        let cleared: serde_json::Map<String, serde_json::Value> = placement::ALL
            .iter()
            .map(|k| (k.to_string(), serde_json::Value::Null))
            .collect();
        self.patch_annotations(pod, serde_json::Value::Object(cleared))
            .await?;
        self.event(
            pod,
            EventType::Warning,
            "ProviderRejected",
            format!("target {target} rejected the pod ({why}); deciding again without it"),
        )
        .await;
        self.gw.nudge.notify_waiters();
        Ok(Action::await_change())
    }

    async fn delete(&self, pod: &Pod) -> Result<Action, Error> {
        let uid = pod.uid().unwrap_or_default();
        self.unreachable
            .lock()
            .expect("unreachable lock")
            .remove(&uid);
        if let Some((_, spec)) = self.spec_for(pod)
            && let Some(provider) = self.gw.provider_for_target(&spec.target)
        {
            match provider.delete(&spec.id).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "provider refused the delete; the orphan collector will retry")
                }
            }
        }
        let released = self
            .gw
            .ledger
            .lock()
            .expect("ledger lock")
            .release(&uid)
            .is_some();
        self.created.lock().expect("created lock").remove(&uid);
        self.rejected.lock().expect("rejected lock").remove(&uid);
        self.polled.lock().expect("polled lock").remove(&uid);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pod_api(pod).delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        if released {
            self.gw.nudge.notify_waiters();
        }
        Ok(Action::await_change())
    }

    /// Counts the node's pods by target and phase for the metrics.
    fn observe_pods(&self, store: &Store<Pod>) {
        let pods = store.state();
        let now = k8s_openapi::jiff::Timestamp::now();
        self.gw.metrics.observe_pods(pods.iter().map(|p| {
            let target = p.annotations().get(placement::TARGET).map(String::as_str);
            let phase = PodPhase::of(p);
            let waiting = (target.is_none() && phase == PodPhase::Pending)
                .then(|| {
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| now.duration_since(t.0).as_secs_f64())
                })
                .flatten();
            (target, phase.as_str(), waiting)
        }));
    }

    /// One pass of batched status reads; returns how many workloads were read.
    async fn sync_statuses(&self, store: &Store<Pod>) -> usize {
        let host_ip = self.gw.config.node_ip.clone();
        let mut by_target: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        {
            let created = self.created.lock().expect("created lock");
            let polled = self.polled.lock().expect("polled lock");
            for pod in store.state() {
                let uid = pod.uid().unwrap_or_default();
                if is_terminal(&pod)
                    || pod.metadata.deletion_timestamp.is_some()
                    || !created.contains(&uid)
                {
                    continue;
                }
                let running = PodPhase::of(&pod) == PodPhase::Running;
                let due = polled.get(&uid).is_none_or(|t| {
                    t.elapsed() >= if running { POLL_RUNNING } else { POLL_PENDING }
                });
                if let (true, Some(target)) = (due, pod.annotations().get(placement::TARGET)) {
                    by_target.entry(target.clone()).or_default().push(pod);
                }
            }
        }
        let mut read = 0;
        for (target, pods) in by_target {
            let Some(provider) = self.gw.provider_for_target(&target) else {
                continue;
            };
            let ids: Vec<String> = pods
                .iter()
                .map(|p| workload_id(&p.uid().unwrap_or_default()))
                .collect();
            let statuses = match provider.status(&ids).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(provider = provider.name(), error = %e, "status read failed");
                    continue;
                }
            };
            read += ids.len();
            for (pod, id) in pods.iter().zip(ids) {
                let uid = pod.uid().unwrap_or_default();
                self.polled
                    .lock()
                    .expect("polled lock")
                    .insert(uid.clone(), Instant::now());
                let result = match statuses.get(&id) {
                    Some(ws) if let WorkloadPhase::Rejected(rejection) = &ws.phase => {
                        // The target took the workload but cannot run it (a full cluster): take
                        // it back and burst elsewhere, like a create-time target rejection.
                        if let Err(e) = provider.delete(&id).await {
                            tracing::warn!(pod = %pod.name_any(), error = %e, "could not take back an unschedulable workload; the orphan collector will retry");
                        }
                        self.created.lock().expect("created lock").remove(&uid);
                        self.redecide(pod, &target, rejection.to_string())
                            .await
                            .map(|_| ())
                    }
                    Some(ws) => {
                        if matches!(ws.phase, WorkloadPhase::Succeeded | WorkloadPhase::Failed) {
                            self.gw.ledger.lock().expect("ledger lock").release(&uid);
                            self.gw.nudge.notify_waiters();
                        }
                        self.patch_status(pod, status::from_workload(pod, ws, &host_ip, &now()))
                            .await
                    }
                    None => self.lost(pod).await,
                };
                if let Err(e) = result {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "status patch failed");
                }
            }
        }
        read
    }

    /// The workload disappeared behind the gateway's back: recreate it when the pod's restart
    /// policy restarts, otherwise fail the pod with a true status.
    async fn lost(&self, pod: &Pod) -> Result<(), Error> {
        let uid = pod.uid().unwrap_or_default();
        self.created.lock().expect("created lock").remove(&uid);
        let msg = "the workload was deleted at its provider outside burstgate".to_string();
        if RestartPolicy::of(pod) == RestartPolicy::Always {
            self.event(
                pod,
                EventType::Warning,
                "WorkloadLost",
                format!("{msg}; creating it again"),
            )
            .await;
            self.create(pod).await?;
        } else {
            self.gw.ledger.lock().expect("ledger lock").release(&uid);
            self.patch_status(
                pod,
                status::failed(pod, "WorkloadLost", &msg, &self.gw.config.node_ip, &now()),
            )
            .await?;
            self.event(pod, EventType::Warning, "WorkloadLost", msg)
                .await;
        }
        Ok(())
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Runs the pod lifecycle until `shutdown`: the reconciler, the batched status loop, and the
/// orphan collector. Returns when all three have stopped.
pub async fn run(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let ctx = PodController::new(gw.clone());
    let selector = format!("spec.nodeName={}", gw.config.node_name);
    let controller = Controller::new(
        ctx.api.clone(),
        watcher::Config::default().fields(&selector),
    );
    let store = controller.store();

    let mut tasks = tokio::task::JoinSet::new();
    {
        let (ctx, store, shutdown, selector) = (
            ctx.clone(),
            store.clone(),
            shutdown.clone(),
            selector.clone(),
        );
        tasks.spawn(async move {
            // Rebuild the ledger from one LIST of the node's pods before any decision: the
            // reconciles wait for it. (Only the leader runs this, so nobody else is placing.)
            let list = ListParams::default().fields(&selector);
            loop {
                let attempt = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = ctx.api.list(&list) => r,
                };
                match attempt {
                    Ok(pods) => {
                        ctx.restore(&pods.items).await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the node's pods to rebuild the ledger; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        ctx.sync_statuses(&store).await;
                        ctx.observe_pods(&store);
                    }
                }
            }
        });
    }
    {
        let (gw, shutdown) = (ctx.gw.clone(), shutdown.clone());
        let ready = ctx.ready.subscribe();
        tasks.spawn(async move { crate::controller::gc::run(gw, ready, shutdown).await });
    }

    // Pending pods are decided again whenever policy, quota or health change.
    let nudges = futures::stream::unfold(
        (gw.clone(), gw.policy.clone()),
        |(gw, mut policy)| async move {
            tokio::select! {
                _ = gw.nudge.notified() => {}
                r = policy.changed() => if r.is_err() { return None },
            }
            Some(((), (gw, policy)))
        },
    );
    let reconcile_ctx = ctx.clone();
    controller
        .reconcile_all_on(nudges)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            PodController::reconcile,
            PodController::error_policy,
            reconcile_ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    ctx.tasks.close();
    ctx.tasks.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_pod_with_an_ip_or_a_started_container_mirrors_a_workload() {
        assert!(mirrors_a_workload(&pod(
            serde_json::json!({"podIP": "10.0.0.7"})
        )));
        let running = serde_json::json!({"containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"running": {}}}]});
        assert!(mirrors_a_workload(&pod(running)));
    }

    #[test]
    fn a_pod_only_waiting_or_without_status_mirrors_nothing() {
        assert!(!mirrors_a_workload(&pod(serde_json::json!({}))));
        let waiting = serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        assert!(!mirrors_a_workload(&pod(waiting)));
    }

    #[test]
    fn only_deadlines_throttling_and_open_circuits_leave_the_outcome_unknown() {
        use crate::provider::{GaveUpCause, TargetRejection};
        let gave_up = |cause| TargetRejection::GaveUp {
            cause,
            api: "RunTask",
            target: "t".into(),
            attempts: 3,
            elapsed: Duration::from_secs(20),
            last: "503".into(),
        };
        for unknown in [
            gave_up(GaveUpCause::Unavailable),
            gave_up(GaveUpCause::Throttled),
            TargetRejection::CircuitOpen { target: "t".into() },
        ] {
            assert!(unknown.outcome_unknown(), "{unknown}");
            assert!(ProviderError::Target(unknown).outcome_unknown());
        }
        for known in [
            TargetRejection::Quota {
                code: "ContainerGroupQuotaReached".into(),
                message: "full".into(),
            },
            TargetRejection::Unschedulable {
                message: "full".into(),
            },
        ] {
            assert!(!known.outcome_unknown(), "{known}");
        }
        assert!(!ProviderError::cloud_pod("RunTaskFailure", "bad image").outcome_unknown());
    }
}
