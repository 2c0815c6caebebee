//! The pod lifecycle: every pod bound to the virtual node is admitted, decided, recorded, created
//! at its provider, kept in sync, and deleted. This is where a pod's journey happens.
//!
//! - `reconcile` runs per pod on every change (kube-runtime `Controller`, watching
//!   `spec.nodeName=<node>`, no per-pod polling of the API) and on every policy/health nudge.
//!   It reads as a straight line: delete, or find the pod's next [`Outcome`] (`place`,
//!   `create`, over, tracked) and `apply` it.
//! - `sync_statuses` reads provider statuses in batches (fast while Pending, slow while Running);
//!   each read's [`Outcome`] is applied the same way, and `/status` is patched only on change.
//! - `apply` is the one place where an outcome takes effect: withdraw, memory, ledger,
//!   annotations, status, Event, nudge, requeue. Which outcome, is decided by the pure
//!   functions of [`outcome`].
//! - Placement annotations are written BEFORE any provider call; workload ids derive from the
//!   pod UID, so a crash anywhere never makes a second workload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::controller::cached_pod::CachedPod;
use crate::controller::context::Gateway;
use crate::controller::downward::Host;
use crate::controller::events::Event;
use crate::controller::outcome::{self, Outcome, Room, Withdraw};
use crate::controller::pod_cache::PodCache;
use crate::controller::recorder::{Publication, Recorder};
use crate::controller::resolve;
use crate::controller::restarts::{self, Backoff, Wait};
use crate::controller::shared_reads::SharedReads;
use crate::controller::status::{PodPhase, RestartPolicy};
use crate::controller::{admission, gc, placement, provider_events, status};
use crate::failpoint::{self, FailPoint};
use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, PodView, Policy};
use crate::provider::{
    Capabilities, Owner, Provider, ProviderError, WorkloadPhase, WorkloadSpec, WorkloadStatus,
    workload_id,
};
use schedule::Schedule;

pub mod renewal;
mod schedule;
mod warnings;

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

    /// Whether the API server gave no answer at all (unreachable, connection refused or
    /// reset): then every other call of the same round would fail the same way.
    pub fn apiserver_unanswered(&self) -> bool {
        matches!(
            self,
            Error::Kube(kube::Error::Service(_) | kube::Error::HyperError(_))
        )
    }

    /// The race this error is, when it is one the gateway expects: the pod was deleted, or
    /// changed, between the read and the write. Such errors are retried (or end with the pod)
    /// and counted, never logged as warnings one per pod.
    pub fn expected_race(&self) -> Option<Race> {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => Some(Race::PodGone),
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => Some(Race::PodChanged),
            _ => None,
        }
    }
}

/// A race the pod controller expects (see [`Error::expected_race`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Race {
    /// The pod was deleted between the read and the write (404).
    PodGone,
    /// The pod changed between the read and the write (409).
    PodChanged,
}

impl Race {
    /// The `kind` label of `burstgate_expected_races_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Race::PodGone => "pod_gone",
            Race::PodChanged => "pod_changed",
        }
    }
}

/// How often Pending workloads are read from their provider (Running ones: as often as the
/// provider's `running_poll` says).
const POLL_PENDING: Duration = Duration::from_secs(2);

/// How long a nudge waits for the ones that follow it before pending pods are looked for: each
/// delete of a burst frees room and nudges, and one pass over the node's pods per nudge made a
/// 10,000-pod delete quadratic (a pass per delete); one pass per quarter second is not.
const NUDGE_COALESCE: Duration = Duration::from_millis(250);

/// When a pod's workload was last read, and what the read found when it changed nothing.
#[derive(Debug, Clone, Copy)]
struct Polled {
    at: Instant,
    /// A digest of the Running workload's status and the pod's resourceVersion it was applied
    /// to; the same digest on the next read means nothing changed, so the pod is not decoded.
    settled: Option<u64>,
}

impl Polled {
    fn now() -> Polled {
        Polled {
            at: Instant::now(),
            settled: None,
        }
    }
}

/// What the status loop keeps of a pod with a workload: the pod's `namespace/name`, to find it
/// in the cache, and its workload's last read.
#[derive(Debug)]
struct Tracked {
    pod: Box<str>,
    read: Option<Polled>,
}

impl Tracked {
    fn of(pod: &impl ResourceExt) -> Tracked {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        Tracked {
            pod: format!("{ns}/{name}").into(),
            read: None,
        }
    }

    /// The pod's key in the pod cache.
    fn cache_key(&self) -> ObjectRef<CachedPod> {
        let (ns, name) = self.pod.split_once('/').unwrap_or(("", &self.pod));
        ObjectRef::new(name).within(ns)
    }
}

/// The pod controller's state, shared by reconciles and the status loop.
pub struct PodController {
    gw: Arc<Gateway>,
    recorder: Recorder,
    /// Services and root CAs, read once per namespace every few seconds for every pod's
    /// environment and token volume.
    shared: SharedReads,
    /// Pod UIDs whose workload is known to exist at its provider.
    created: Mutex<HashSet<String>>,
    /// Targets that rejected a pod, per pod UID: (target name, why).
    rejected: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Per pod UID with a workload created: where the pod is in the cache, when its workload
    /// was last read, and when the status loop looks at it next.
    tracked: Mutex<Schedule<Tracked>>,
    /// Failed writes about each pod, warned of once while they repeat.
    warned: warnings::Warnings,
    /// Per pod UID, a fingerprint of the status last written: the status sync compares against
    /// it as well as the (possibly lagging) watch cache, so it never re-sends a status it wrote.
    written: Mutex<HashMap<String, u64>>,
    /// Pod UIDs kept on a target that does not answer (one `TargetUnreachable` or
    /// `WorkloadInDoubt` Event each).
    unreachable: Mutex<HashSet<String>>,
    /// Pod UIDs whose workload may exist on the target they are placed on although no create
    /// there was confirmed: a create's outcome was unknown, or the gateway that placed the pod
    /// died and the target did not answer the listing at start. Such a pod leaves its target
    /// only once the target confirmed the workload is gone (`Withdraw::First`).
    in_doubt: Mutex<HashSet<String>>,
    /// Per pod UID, the names of the provider events already forwarded as pod Events.
    forwarded: Mutex<HashMap<String, HashSet<String>>>,
    /// Pod UIDs this process deleted in the last minute (workload and pod object).
    deleted: Recent,
    /// Pod UIDs whose tokens this process renewed in the last minute (`pod/renewal.rs`).
    renewed: Recent,
    /// Per pod UID, the back-off of failed token renewals (`pod/renewal.rs`).
    renewal_retries: renewal::Retries,
    /// Per pod UID whose provider does not restart containers itself (Fargate), the back-off of
    /// its restarts (in memory, as a kubelet keeps it: `controller/restarts.rs`).
    backoffs: Mutex<HashMap<String, Backoff>>,
    /// True once the ledger has been rebuilt from the pods on the node.
    ready: watch::Sender<bool>,
}

/// Keys seen in the last [`Recent::KEEP`], forgotten in a sweep at most once per `KEEP`.
#[derive(Default)]
struct Recent(Mutex<(HashMap<String, Instant>, Option<Instant>)>);

impl Recent {
    const KEEP: Duration = Duration::from_secs(60);

    fn insert(&self, key: String) {
        let now = Instant::now();
        let mut r = self.0.lock().expect("recent lock");
        if r.1.is_none_or(|t| now.duration_since(t) >= Self::KEEP) {
            r.0.retain(|_, at| now.duration_since(*at) < Self::KEEP);
            r.1 = Some(now);
        }
        r.0.insert(key, now);
    }

    fn recent(&self, key: &str) -> bool {
        let r = self.0.lock().expect("recent lock");
        r.0.get(key).is_some_and(|at| at.elapsed() < Self::KEEP)
    }
}

/// Whether a nudge (policy, quota or health changed) may move `pod`: not over, not being
/// deleted (its own change reconciles it, and a pod this process deleted stays in the cache until
/// the watch says so: nudging it would delete it again), and with no workload created yet.
fn redecidable(pod: &CachedPod, created: &HashSet<String>) -> bool {
    !pod.phase.is_terminal()
        && pod.metadata.deletion_timestamp.is_none()
        && !created.contains(pod.metadata.uid.as_deref().unwrap_or_default())
}

/// The pod whose tracked `uid` came due, if its workload is still read: `cached` is the cache's
/// pod of that name when the workload is known to exist (else `None`). Not when the pod is gone
/// or replaced by a namesake, over, or being deleted (its cleanup needs no read).
fn still_read(uid: &str, cached: Option<Arc<CachedPod>>) -> Option<Arc<CachedPod>> {
    cached.filter(|p| {
        p.metadata.uid.as_deref() == Some(uid)
            && !p.phase.is_terminal()
            && p.metadata.deletion_timestamp.is_none()
    })
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

/// The grace period of a pod being deleted: the delete's (`metadata.deletionGracePeriodSeconds`),
/// else the spec's `terminationGracePeriodSeconds`, else Kubernetes' default 30 s.
fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Whether a delete failed without the target answering it (a transient failure or timeout,
/// retries exhausted whatever their cause, an open circuit): the workload may still run, so the
/// pod stays Terminating and the delete is tried again. Wider than
/// [`ProviderError::outcome_unknown`], which is about whether a call may have been carried out
/// (an open circuit made no call: the workload is still there all the same).
fn delete_unanswered(e: &ProviderError) -> bool {
    use crate::provider::TargetRejection;
    e.is_retryable()
        || e.outcome_unknown()
        || matches!(
            e,
            ProviderError::Target(
                TargetRejection::CircuitOpen { .. } | TargetRejection::GaveUp { .. }
            )
        )
}

impl PodController {
    fn new(gw: Arc<Gateway>) -> Arc<PodController> {
        Arc::new(PodController {
            recorder: Recorder::new(gw.client.clone(), "burstgate", gw.config.identity()),
            shared: SharedReads::new(gw.client.clone()),
            gw,
            created: Mutex::default(),
            rejected: Mutex::default(),
            tracked: Mutex::default(),
            warned: warnings::Warnings::default(),
            forwarded: Mutex::default(),
            backoffs: Mutex::default(),
            written: Mutex::default(),
            unreachable: Mutex::default(),
            in_doubt: Mutex::default(),
            deleted: Recent::default(),
            renewed: Recent::default(),
            renewal_retries: renewal::Retries::default(),
            ready: watch::channel(false).0,
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

    async fn publish(&self, pod: &Pod, event: Event) {
        let ev = Publication {
            type_: event.type_(),
            reason: event.reason.as_str(),
            note: truncate(event.note, 1000),
            action: "Burst",
            regarding: pod.object_ref(&()),
        };
        if let Err(e) = self.recorder.publish(ev).await {
            tracing::warn!(pod = %pod.name_any(), error = %e, "could not publish an event");
        }
    }

    /// Forwards the provider's container events about `pod` it has not forwarded yet.
    async fn forward_events(&self, pod: &Pod, events: &[crate::provider::ProviderEvent]) {
        let uid = pod.uid().unwrap_or_default();
        let mut sent = self
            .forwarded
            .lock()
            .expect("forwarded lock")
            .remove(&uid)
            .unwrap_or_default();
        provider_events::forward(
            &self.gw.client,
            pod,
            events,
            &self.gw.config.node_name,
            &mut sent,
        )
        .await;
        self.forwarded
            .lock()
            .expect("forwarded lock")
            .insert(uid, sent);
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.gw.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn patch_status(&self, pod: &Pod, desired: PodStatus) -> Result<(), Error> {
        let uid = pod.uid().unwrap_or_default();
        let fingerprint = status::fingerprint(&desired);
        let written = self.written.lock().expect("written lock").get(&uid) == Some(&fingerprint);
        if written || !status::differs(pod.status.as_ref(), &desired) {
            return Ok(());
        }
        self.pod_api(pod)
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status::merge_patch(&desired)),
            )
            .await?;
        self.written
            .lock()
            .expect("written lock")
            .insert(uid, fingerprint);
        failpoint::after(FailPoint::StatusPatched);
        Ok(())
    }

    /// Writes `annotations` onto `pod`; `as_read` only onto the pod as this reconcile read it
    /// (see [`annotation_patch`]).
    async fn patch_annotations(
        &self,
        pod: &Pod,
        annotations: serde_json::Value,
        as_read: bool,
    ) -> Result<(), Error> {
        let read = as_read.then(|| pod.resource_version()).flatten();
        let patch = annotation_patch(annotations, read.as_deref());
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
    /// which workloads exist, before any new decision is made; returns each answering target's
    /// listing.
    async fn restore(&self, pods: &[Arc<CachedPod>]) -> gc::Listings {
        let live =
            |p: &&Arc<CachedPod>| !p.phase.is_terminal() && p.metadata.deletion_timestamp.is_none();
        if let Some(policy) = self.gw.current_policy() {
            // Read before the lock: each pod's annotations are inflated from the cache.
            let reservations: Vec<_> = pods
                .iter()
                .filter(live)
                .filter_map(|p| Some((p.uid()?, placement::reservation(&p.annotations())?)))
                .collect();
            let mut ledger = self.gw.ledger.lock().expect("ledger lock");
            ledger.rebind(&policy);
            for (uid, r) in reservations {
                ledger.restore(&policy, &uid, r);
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
        let mut answered = gc::Listings::new();
        for (target, listed) in listings {
            match listed {
                Ok(Ok(owned)) => {
                    created.extend(
                        owned
                            .iter()
                            .filter(|o| !o.leftover)
                            .map(|o| o.owner.pod_uid.clone()),
                    );
                    answered.insert(target, owned);
                }
                Ok(Err(e)) => {
                    tracing::warn!(target = %target, error = %e, "could not list owned workloads at start")
                }
                Err(_) => {
                    tracing::warn!(target = %target, timeout = ?RESTORE_LIST_TIMEOUT, "could not list owned workloads at start: no answer in time")
                }
            }
        }
        // A pod placed before this process started, whose target did not list its workload,
        // may have one there all the same when the listing failed.
        let in_doubt: HashSet<String> = pods
            .iter()
            .filter(live)
            .filter_map(|p| Some((p.uid()?, p.target()?)))
            .filter(|(uid, target)| !created.contains(uid) && !answered.contains_key(*target))
            .map(|(uid, _)| uid)
            .collect();
        tracing::info!(
            pods = pods.len(),
            workloads = created.len(),
            in_doubt = in_doubt.len(),
            "ledger rebuilt from pod annotations"
        );
        {
            let now = Instant::now();
            let mut tracked = self.tracked.lock().expect("tracked lock");
            for pod in pods.iter().filter(live) {
                if let Some(uid) = pod.uid().filter(|uid| created.contains(uid)) {
                    tracked.track(&uid, || Tracked::of(pod.as_ref()));
                    tracked.at(&uid, now);
                }
            }
        }
        *self.created.lock().expect("created lock") = created;
        *self.in_doubt.lock().expect("in-doubt lock") = in_doubt;
        self.ready.send_replace(true);
        answered
    }

    /// One pod's step: wait for the ledger, then delete, or find where the pod stands and apply
    /// that outcome.
    async fn reconcile(cached: Arc<CachedPod>, ctx: Arc<PodController>) -> Result<Action, Error> {
        tracing::debug!(pod = %cached.name_any(), "reconcile");
        let mut ready = ctx.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
        let pod = cached.pod();
        if pod.metadata.deletion_timestamp.is_some() {
            return ctx.delete(&pod).await;
        }
        let outcome = ctx.next(&pod).await?;
        ctx.apply(&pod, outcome).await
    }

    fn error_policy(pod: Arc<CachedPod>, error: &Error, ctx: Arc<PodController>) -> Action {
        ctx.failed(pod.as_ref(), error, "reconcile failed; retrying");
        Action::requeue(Duration::from_secs(5))
    }

    /// Where a pod that is not being deleted goes next: over, placed (the workload is created
    /// once), or decided.
    async fn next(&self, pod: &Pod) -> Result<Outcome, Error> {
        if is_terminal(pod) {
            return Ok(Outcome::Over);
        }
        if !pod.annotations().contains_key(placement::TARGET) {
            return Ok(self.place(pod));
        }
        let uid = pod.uid().unwrap_or_default();
        if self.created.lock().expect("created lock").contains(&uid) {
            return Ok(Outcome::Tracked);
        }
        self.create(pod).await
    }

    /// Makes `outcome` of `pod` true: the one place where a step of a pod's journey takes
    /// effect. In this order: a workload left on a refusing target goes; the controller's memory
    /// and the ledger follow; then the placement annotations, the status and the Event are
    /// written; pending pods are nudged; the requeue is the outcome's.
    async fn apply(&self, pod: &Pod, outcome: Outcome) -> Result<Action, Error> {
        let uid = pod.uid().unwrap_or_default();
        // A workload that may be left on a refusing target goes first; while the target cannot
        // confirm that, the pod stays placed there.
        let outcome = match outcome {
            Outcome::Rejected {
                target,
                why,
                withdraw: Withdraw::First,
                kind,
            } => match self.withdraw(pod, &target).await {
                Ok(()) => Outcome::Rejected {
                    target,
                    why,
                    kind,
                    withdraw: Withdraw::First,
                },
                Err(e) => Outcome::InDoubt {
                    target,
                    why: format!("{why}; the delete: {e}"),
                },
            },
            other => other,
        };
        let news = self.remember(&uid, &outcome);
        if matches!(outcome, Outcome::Created { .. } | Outcome::BackOff { .. }) {
            // Read now (a create answers with the workload's status); the loop looks at the pod
            // at its next tick and schedules its next read.
            let now = Instant::now();
            let mut tracked = self.tracked.lock().expect("tracked lock");
            tracked.track(&uid, || Tracked::of(pod)).read = Some(Polled::now());
            tracked.sooner(&uid, now);
        }
        match outcome.room() {
            Room::Kept => {}
            Room::Released => self.release(&uid),
            Room::ReleasedForOthers => {
                self.release(&uid);
                self.gw.nudge.notify_waiters();
            }
        }
        // A placement goes only onto the pod it was decided from (a decision made from a cache
        // behind another writer is made again); the other annotations are this leader's own.
        let placed = matches!(outcome, Outcome::Placed { .. });
        if let Some(annotations) = outcome.annotations()
            && let Err(e) = self.patch_annotations(pod, annotations, placed).await
        {
            if placed {
                // The placement is not recorded: its reservation must not outlive it.
                self.release(&uid);
            }
            return Err(e);
        }
        if placed {
            failpoint::after(FailPoint::Annotated);
        }
        outcome.log(pod);
        if let Some(status) = outcome.status(pod, &self.gw.config.node_ip, &now()) {
            self.patch_status(pod, status).await?;
        }
        if let Some(event) = outcome.event().filter(|_| news) {
            self.publish(pod, event).await;
        }
        if outcome.redecides() {
            self.gw.nudge.notify_waiters();
        }
        Ok(outcome
            .requeue_after()
            .map_or_else(Action::await_change, Action::requeue))
    }

    /// Keeps the controller's memory of the pod with `uid` true to `outcome`. Returns whether
    /// the outcome is news (a pod kept on an unreachable target is announced once).
    fn remember(&self, uid: &str, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Created { .. } | Outcome::BackOff { .. } => {
                self.unreachable
                    .lock()
                    .expect("unreachable lock")
                    .remove(uid);
                self.created
                    .lock()
                    .expect("created lock")
                    .insert(uid.to_string());
            }
            Outcome::Unreachable { .. } | Outcome::InDoubt { .. } => {
                return self
                    .unreachable
                    .lock()
                    .expect("unreachable lock")
                    .insert(uid.to_string());
            }
            Outcome::Rejected { target, why, .. } => {
                self.created.lock().expect("created lock").remove(uid);
                self.in_doubt.lock().expect("in-doubt lock").remove(uid);
                self.unreachable
                    .lock()
                    .expect("unreachable lock")
                    .remove(uid);
                self.rejected
                    .lock()
                    .expect("rejected lock")
                    .entry(uid.to_string())
                    .or_default()
                    .push((target.clone(), why.clone()));
            }
            Outcome::Lost { .. } => {
                self.created.lock().expect("created lock").remove(uid);
            }
            _ => {}
        }
        true
    }

    fn release(&self, uid: &str) {
        self.gw.ledger.lock().expect("ledger lock").release(uid);
    }

    /// Deletes the workload `pod` may have left on `target`; `Ok` once the target confirmed it
    /// is gone (or the target no longer has an adapter: nothing can reach it).
    async fn withdraw(&self, pod: &Pod, target: &str) -> Result<(), ProviderError> {
        let Some(provider) = self.gw.provider_for_target(target) else {
            tracing::warn!(pod = %pod.name_any(), %target, "no adapter for the target any more: cannot take back a workload that may be left there");
            return Ok(());
        };
        provider
            .delete(&workload_id(&pod.uid().unwrap_or_default()))
            .await
    }

    /// Admits and decides a pod that has no target yet (the ledger reserves its room when the
    /// engine places it).
    fn place(&self, pod: &Pod) -> Outcome {
        let features = admission::unsupported_features(pod, &self.capabilities());
        if !features.is_empty() {
            return Outcome::Unsupported { features };
        }
        let Some(policy) = self.gw.current_policy() else {
            return Outcome::NoPolicy;
        };
        let view = match PodView::from_pod(pod) {
            Ok(v) => v,
            Err(e) => {
                return Outcome::InvalidPod {
                    error: e.to_string(),
                };
            }
        };
        let exclusions = self.exclusions(&policy, pod, &view.uid);
        let started = Instant::now();
        let decision =
            self.gw
                .ledger
                .lock()
                .expect("ledger lock")
                .place(&policy, &view, &exclusions);
        failpoint::after(FailPoint::Decided);
        let chosen = decision
            .placement()
            .map(|p| policy.target(p.target).name.as_str());
        self.gw
            .metrics
            .decided(chosen, decision.kind(), started.elapsed().as_secs_f64());
        let message = pod.status.as_ref().and_then(|s| s.message.as_deref());
        let uses = crate::provider::kit::pod_features(pod);
        let without = |target: &str| match self.gw.provider_for_target(target) {
            Some(p) => p
                .capabilities()
                .ignored(&uses)
                .iter()
                .map(|u| u.to_string())
                .collect(),
            None => Vec::new(),
        };
        outcome::decided(&policy, &decision, &view.uid, message, without)
    }

    /// What the engine must leave out for `pod`: unhealthy targets, targets that cannot run it,
    /// and targets that refused it.
    fn exclusions(&self, policy: &Policy, pod: &Pod, uid: &str) -> Vec<Exclusion> {
        let mut exclusions = self.gw.exclusions(policy);
        exclusions.extend(self.capability_exclusions(policy, pod));
        if let Some(rejected) = self.rejected.lock().expect("rejected lock").get(uid) {
            for (name, why) in rejected {
                if let Some(t) = policy.target_by_name(name) {
                    exclusions.push(Exclusion {
                        target: t.id,
                        reason: ExclusionReason::RejectedByProvider(why.clone()),
                    });
                }
            }
        }
        exclusions
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

    /// The workload spec of a placed pod, with the values it references resolved, and its
    /// target's adapter; or the outcome that keeps the pod from a create now.
    async fn prepare(
        &self,
        pod: &Pod,
    ) -> Result<Result<(WorkloadSpec, Arc<dyn Provider>), Outcome>, Error> {
        let Some((_, mut spec)) = self.spec_for(pod) else {
            return Ok(Err(Outcome::Rejected {
                target: "?".into(),
                why: "placement annotations are incomplete".into(),
                kind: "incomplete",
                withdraw: Withdraw::No,
            }));
        };
        let host = Host {
            ip: &self.gw.config.node_ip,
            size: spec.size,
        };
        spec.resolved = match resolve::resolve(&self.gw.client, &self.shared, pod, host).await {
            Ok(r) => r,
            Err(resolve::Error::Api(e)) => return Err(e.into()),
            // As a kubelet does: the pod waits until its references exist, and says why.
            Err(e) => {
                return Ok(Err(Outcome::Unresolved {
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                }));
            }
        };
        let Some(provider) = self.gw.provider_for_target(&spec.target) else {
            return Ok(Err(match self.gw.providers.problem(&spec.target) {
                Some(why) => Outcome::Rejected {
                    target: spec.target,
                    why,
                    kind: "unusable",
                    withdraw: Withdraw::No,
                },
                // The adapter is being built for a policy that just arrived.
                None => Outcome::AdapterPending,
            }));
        };
        Ok(Ok((spec, provider)))
    }

    /// Creates the workload of a placed pod at its target (idempotent: the id derives from the
    /// pod UID), once the values it references are resolved.
    async fn create(&self, pod: &Pod) -> Result<Outcome, Error> {
        let (spec, provider) = match self.prepare(pod).await? {
            Ok(ready) => ready,
            Err(outcome) => return Ok(outcome),
        };
        let result = provider.create(&spec).await;
        if result.is_ok() {
            failpoint::after(FailPoint::ProviderAccepted);
            self.note_renewal(pod, &spec).await;
        }
        let in_doubt = {
            let uid = pod.uid().unwrap_or_default();
            let mut in_doubt = self.in_doubt.lock().expect("in-doubt lock");
            match &result {
                Ok(_) => {
                    in_doubt.remove(&uid);
                    false
                }
                Err(e) => {
                    if e.outcome_unknown() {
                        in_doubt.insert(uid.clone());
                    }
                    in_doubt.contains(&uid)
                }
            }
        };
        let created = outcome::created(&spec.target, result, mirrors_a_workload(pod), in_doubt);
        self.settle(pod, provider.as_ref(), &spec.target, created)
            .await
    }

    /// `outcome` as it stands for a pod whose provider may leave its stopped workload stopped:
    /// a workload that stopped on a provider that does not restart containers itself, for a pod
    /// whose restart policy restarts it, waits out its back-off and is then started again
    /// ([`Provider::restart`]); any other outcome is what it is.
    async fn settle(
        &self,
        pod: &Pod,
        provider: &dyn Provider,
        target: &str,
        outcome: Outcome,
    ) -> Result<Outcome, Error> {
        match outcome {
            Outcome::Created { workload } | Outcome::Observed { workload }
                if !provider.restarts_containers()
                    && restarts::restarts(&workload.phase, RestartPolicy::of(pod)) =>
            {
                self.restart_or_wait(pod, target, workload).await
            }
            Outcome::Observed { workload } if renewal::due(pod, &workload, SystemTime::now()) => {
                self.renew_tokens(pod, provider, workload).await
            }
            other => Ok(other),
        }
    }

    /// The stopped `workload` of `pod` waits out its back-off (a `BackOff` Event when the wait
    /// starts), then is started again on `target`.
    async fn restart_or_wait(
        &self,
        pod: &Pod,
        target: &str,
        workload: WorkloadStatus,
    ) -> Result<Outcome, Error> {
        let uid = pod.uid().unwrap_or_default();
        let wait = self
            .backoffs
            .lock()
            .expect("back-off lock")
            .entry(uid.clone())
            .or_default()
            .stopped(Instant::now());
        let backing_off = |delay, announce| Outcome::BackOff {
            workload: workload.clone(),
            delay,
            announce,
            pod: status::pod_label(pod),
        };
        match wait {
            Wait::Started(delay) => return Ok(backing_off(delay, true)),
            Wait::Waiting(delay) => return Ok(backing_off(delay, false)),
            Wait::Over => {}
        }
        let (spec, provider) = match self.prepare(pod).await? {
            Ok(ready) => ready,
            Err(outcome) => return Ok(outcome),
        };
        let result = provider.restart(&spec).await;
        if result.is_ok() {
            if let Some(b) = self.backoffs.lock().expect("back-off lock").get_mut(&uid) {
                b.restarted(Instant::now());
            }
        }
        // The pod ran: a target that cannot be reached keeps it (`Unreachable`).
        Ok(outcome::created(target, result, true, false))
    }

    async fn delete(&self, pod: &Pod) -> Result<Action, Error> {
        let uid = pod.uid().unwrap_or_default();
        // A change that arrived while this pod was being deleted runs the reconcile once more
        // before the watch reports the pod gone: its workload and the pod are gone already.
        if self.deleted.recent(&uid) {
            return Ok(Action::await_change());
        }
        self.unreachable
            .lock()
            .expect("unreachable lock")
            .remove(&uid);
        if let Some((_, spec)) = self.spec_for(pod)
            && let Some(provider) = self.gw.provider_for_target(&spec.target)
        {
            self.stop_within_grace(pod, provider.as_ref(), &spec.id)
                .await;
            match provider.delete(&spec.id).await {
                Ok(()) => failpoint::after(FailPoint::DeleteCalled),
                // The target could not be reached (retries exhausted, circuit open): the
                // workload may still run, so the pod stays Terminating and the delete is tried
                // again (`error_policy`) until the target answers; no orphan is left to GC.
                Err(e) if delete_unanswered(&e) => return Err(e.into()),
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
        self.in_doubt.lock().expect("in-doubt lock").remove(&uid);
        self.rejected.lock().expect("rejected lock").remove(&uid);
        self.tracked.lock().expect("tracked lock").forget(&uid);
        self.warned.clear(&uid);
        self.forwarded.lock().expect("forwarded lock").remove(&uid);
        self.backoffs.lock().expect("back-off lock").remove(&uid);
        self.renewal_retries.forget(&uid);
        self.written.lock().expect("written lock").remove(&uid);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pod_api(pod).delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.deleted.insert(uid);
        if released {
            self.gw.nudge.notify_waiters();
        }
        Ok(Action::await_change())
    }

    /// Stops the workload of `pod`, deleted with a grace period, before its delete, as a kubelet
    /// stops containers: at most for the grace period; whatever the answer, the delete follows
    /// (a target that cannot be reached fails the delete too, which keeps the pod Terminating).
    async fn stop_within_grace(&self, pod: &Pod, provider: &dyn Provider, id: &str) {
        let grace = grace_period(pod);
        if grace.is_zero() {
            return;
        }
        match tokio::time::timeout(grace, provider.stop(id, grace)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!(pod = %pod.name_any(), error = %e, "could not stop the workload before its delete; deleting it")
            }
            Err(_) => {
                tracing::info!(pod = %pod.name_any(), ?grace, "the workload did not stop within the grace period; deleting it")
            }
        }
    }

    /// The pods a nudge (policy, quota or health changed) may move: [`redecidable`] ones. The
    /// others' reconcile would only find them tracked, and decoding every pod of a 10,000-pod
    /// node per nudge costs ~0.5 s of CPU.
    fn redecidable(&self, store: &Store<CachedPod>) -> Vec<ObjectRef<CachedPod>> {
        let created = self.created.lock().expect("created lock");
        store
            .state()
            .iter()
            .filter(|p| redecidable(p, &created))
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// One pass of batched status reads; returns how many workloads were read.
    async fn sync_statuses(&self, store: &Store<CachedPod>) -> usize {
        let mut read = 0;
        for (target, pods) in self.due(store) {
            read += self.sync_target(&target, &pods).await;
        }
        read
    }

    /// The pods whose workload is due for a status read, by target: every 2 s while Pending,
    /// at the provider's `running_poll` while Running, and as soon as a restart's back-off is
    /// over. Only the pods the schedule says are due are looked at, each then scheduled again
    /// for its next read; a pod [`still_read`] refuses is forgotten (a create tracks it again,
    /// as the restore at start does), so the schedule holds no slot for a pod gone or over.
    fn due(&self, store: &Store<CachedPod>) -> BTreeMap<String, Vec<Arc<CachedPod>>> {
        let now = Instant::now();
        let mut by_target: BTreeMap<String, Vec<Arc<CachedPod>>> = BTreeMap::new();
        let mut running_poll: BTreeMap<String, Duration> = BTreeMap::new();
        let created = self.created.lock().expect("created lock");
        let backoffs = self.backoffs.lock().expect("back-off lock");
        let mut tracked = self.tracked.lock().expect("tracked lock");
        for uid in tracked.take_due(now) {
            let Some(t) = tracked.get(&uid) else {
                continue;
            };
            let cached = created
                .contains(uid.as_ref())
                .then(|| store.get(&t.cache_key()))
                .flatten();
            let Some(pod) = still_read(&uid, cached) else {
                tracked.forget(&uid);
                continue;
            };
            // Created, but the cache does not show the placement yet.
            let Some(workload) = pod.workload.as_ref() else {
                tracked.at(&uid, now + POLL_PENDING);
                continue;
            };
            let every = if pod.phase == PodPhase::Running {
                *running_poll
                    .entry(workload.target.clone())
                    .or_insert_with(|| {
                        self.gw
                            .provider_for_target(&workload.target)
                            .map_or(POLL_PENDING, |p| p.running_poll())
                    })
            } else {
                POLL_PENDING
            };
            let restart = backoffs.get(uid.as_ref()).and_then(Backoff::due_at);
            let at = next_read(t.read.map(|r| r.at), every, restart, now);
            if at <= now {
                // Read now; next after `every` (a read that fails is tried again then).
                tracked.at(&uid, now + every);
                by_target
                    .entry(workload.target.clone())
                    .or_default()
                    .push(pod);
            } else {
                tracked.at(&uid, at);
            }
        }
        by_target
    }

    /// Reads the workloads of `pods`, all placed on `target`, in one batch and applies what each
    /// read means; returns how many were read.
    async fn sync_target(&self, target: &str, pods: &[Arc<CachedPod>]) -> usize {
        let Some(provider) = self.gw.provider_for_target(target) else {
            return 0;
        };
        let ids: Vec<String> = pods
            .iter()
            .map(|p| workload_id(&p.uid().unwrap_or_default()))
            .collect();
        let statuses = match provider.status(&ids).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(provider = provider.name(), error = %e, "status read failed");
                return 0;
            }
        };
        // Applied concurrently, as many at once as reconciles may run: one at a time, the status
        // patches of a 10,000-pod burst took minutes. A round stops starting pods once the
        // API server does not answer.
        let unanswered = AtomicBool::new(false);
        let limit = usize::from(self.gw.config.max_concurrent_reconciles.max(1));
        futures::stream::iter(pods.iter().zip(&ids))
            .for_each_concurrent(limit, |(cached, id)| {
                let (statuses, unanswered, provider) = (&statuses, &unanswered, &provider);
                async move {
                    if unanswered.load(Ordering::Relaxed) {
                        return;
                    }
                    // A Running workload read as it was when last applied to this version of
                    // the pod changes nothing (no tokens due, no events): the pod is not even
                    // decoded. At 10,000 pods this is most of the steady CPU.
                    let uid = cached.uid().unwrap_or_default();
                    let digest = statuses
                        .get(id)
                        .filter(|s| s.phase == WorkloadPhase::Running && s.events.is_empty())
                        .filter(|_| cached.renew_at.is_none_or(|at| at > SystemTime::now()))
                        .map(|s| status::digest(s, cached.metadata.resource_version.as_deref()));
                    {
                        let mut tracked = self.tracked.lock().expect("tracked lock");
                        // Forgotten since it was due: the pod was deleted meanwhile.
                        let Some(t) = tracked.get_mut(&uid) else {
                            return;
                        };
                        let last = t.read.replace(Polled::now());
                        if digest.is_some() && last.and_then(|p| p.settled) == digest {
                            t.read = Some(Polled { settled: digest, ..Polled::now() });
                            return;
                        }
                    }
                    // Decoded only while applied: a burst's pods are never all whole at once.
                    let pod = &cached.pod();
                    if let Some(events) = statuses
                        .get(id)
                        .map(|s| &s.events)
                        .filter(|e| !e.is_empty())
                    {
                        self.forward_events(pod, events).await;
                    }
                    let outcome =
                        outcome::observed(target, statuses.get(id), RestartPolicy::of(pod));
                    let settled = match self.settle(pod, provider.as_ref(), target, outcome).await {
                        Ok(outcome) => self.follow(pod, outcome).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = settled {
                        if e.apiserver_unanswered() {
                            // One line per round, not one per pod: the rest waits for the next.
                            if !unanswered.swap(true, Ordering::Relaxed) {
                                tracing::warn!(error = %e, target, "the API server does not answer; status patches wait for the next round");
                            }
                            return;
                        }
                        self.failed(pod, &e, "status patch failed");
                        return;
                    }
                    if let Some(read) = self
                        .tracked
                        .lock()
                        .expect("tracked lock")
                        .get_mut(&uid)
                        .and_then(|t| t.read.as_mut())
                    {
                        read.settled = digest;
                    }
                    self.warned.clear(&uid);
                }
            })
            .await;
        ids.len()
    }

    /// Reports a failed write about `pod`: an expected race is counted and logged at debug, any
    /// other failure is a warning the first time, and a debug line while it repeats.
    fn failed(&self, pod: &impl ResourceExt, error: &Error, what: &str) {
        if let Some(race) = error.expected_race() {
            self.gw.metrics().expected_race(race.as_str());
            tracing::debug!(pod = %pod.name_any(), race = race.as_str(), error = %error, "{what} (an expected race)");
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        if self.warned.is_news(&uid, &format!("{what}: {error}")) {
            tracing::warn!(pod = %pod.name_any(), error = %error, kind = error.metric_label(), "{what}");
        } else {
            tracing::debug!(pod = %pod.name_any(), error = %error, kind = error.metric_label(), "{what} (again)");
        }
    }

    /// Applies the outcome of a status read; a lost workload the pod restarts is created again,
    /// and that create's outcome applied too.
    async fn follow(&self, pod: &Pod, outcome: Outcome) -> Result<(), Error> {
        let recreate = matches!(outcome, Outcome::Lost { recreate: true });
        self.apply(pod, outcome).await?;
        if recreate {
            let created = self.create(pod).await?;
            self.apply(pod, created).await?;
        }
        Ok(())
    }
}

/// The merge patch writing `annotations`. With `read`, the resourceVersion a decision read, the
/// apiserver applies it only to that version of the pod and answers 409 otherwise: a placement
/// decided from a cache that had not yet seen another writer's change (a previous leader's last
/// placement, at the start of a term) is not written over it, and the pod is decided again
/// from the newer version.
fn annotation_patch(annotations: serde_json::Value, read: Option<&str>) -> serde_json::Value {
    let mut metadata = json!({ "annotations": annotations });
    if let Some(version) = read {
        metadata["resourceVersion"] = version.into();
    }
    json!({ "metadata": metadata })
}

/// When a workload last read at `polled` (never: `None`) is next read: `every` after that read,
/// or when a restart's back-off is over (`restart`), whichever comes first.
fn next_read(
    polled: Option<Instant>,
    every: Duration,
    restart: Option<Instant>,
    now: Instant,
) -> Instant {
    let read = polled.map_or(now, |p| p + every);
    restart.map_or(read, |r| r.min(read))
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

/// Rebuilds the ledger from the node's pods before any decision (the reconciles wait for it),
/// then reads workload statuses every second until `shutdown`. Only the leader runs this, so
/// nobody else is placing. The pods are the process's pod cache, once it holds the node's pods
/// whole: a replica lists the node's pods once in its life, not once per term.
async fn restore_then_sync(
    ctx: Arc<PodController>,
    cache: PodCache,
    restored: oneshot::Sender<gc::Listings>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        listed = cache.listed() => if !listed { return },
    }
    let store = cache.store();
    // Orphan GC's first pass judges what restore listed, not a second listing of each target.
    let _ = restored.send(ctx.restore(&store.state()).await);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                // An open circuit whose cool-down has passed offers its target again.
                ctx.gw.providers.tick_circuits();
                ctx.recorder.sweep(Instant::now());
                ctx.sync_statuses(&store).await;
            }
        }
    }
}

/// Runs the pod lifecycle for one term of leadership, until `shutdown`: the reconciler (on
/// every pod of `cache` at the start, then on each change), the batched status loop, and the
/// orphan collector. Returns when all three have stopped.
pub async fn run(gw: Arc<Gateway>, cache: PodCache, shutdown: CancellationToken) {
    let ctx = PodController::new(gw.clone());
    let store = cache.store();
    // The controller's own trigger stream is empty: its pods come from the term's subscription
    // (`reconcile_on`), which ends only when the next term subscribes.
    let controller = Controller::for_stream(
        futures::stream::empty::<Result<CachedPod, watcher::Error>>(),
        store.clone(),
    );
    let changes = cache.subscribe();
    *gw.pods.lock().expect("pod cache lock") = Some(store.clone());

    let mut tasks = tokio::task::JoinSet::new();
    let (restored, listings) = oneshot::channel();
    tasks.spawn(restore_then_sync(
        ctx.clone(),
        cache,
        restored,
        shutdown.clone(),
    ));
    {
        let (gw, shutdown) = (ctx.gw.clone(), shutdown.clone());
        let pods = store.clone();
        tasks.spawn(async move { gc::run(gw, pods, listings, shutdown).await });
    }

    // Pending pods are decided again whenever policy, quota or health change: the nudges of a
    // quarter second together, in one pass over the node's pods made after them.
    let nudges = futures::stream::unfold(
        (gw.clone(), gw.policy.clone()),
        |(gw, mut policy)| async move {
            tokio::select! {
                _ = gw.nudge.notified() => {}
                r = policy.changed() => if r.is_err() { return None },
            }
            tokio::time::sleep(NUDGE_COALESCE).await;
            Some(((), (gw, policy)))
        },
    );
    let redecide = {
        let (ctx, store) = (ctx.clone(), store.clone());
        nudges.flat_map(move |()| futures::stream::iter(ctx.redecidable(&store)))
    };
    let reconcile_ctx = ctx.clone();
    let concurrency = gw.config.max_concurrent_reconciles.max(1);
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .reconcile_on(changes)
        .reconcile_on(redecide)
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
    *gw.pods.lock().expect("pod cache lock") = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_workload_is_read_every_period_after_its_last_read_or_when_its_restart_is_due() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(next_read(None, secs(10), None, now), now);
        assert_eq!(next_read(Some(now), secs(10), None, now), now + secs(10));
        assert_eq!(
            next_read(Some(now), secs(10), Some(now + secs(3)), now),
            now + secs(3)
        );
        assert_eq!(
            next_read(Some(now), secs(2), Some(now + secs(30)), now),
            now + secs(2)
        );
    }

    /// The cache's pod `u1`, in `phase`, being deleted or not.
    fn cached(phase: &str, deleting: bool) -> Arc<CachedPod> {
        let mut meta = serde_json::json!({"name": "p", "namespace": "ns", "uid": "u1"});
        if deleting {
            meta["deletionTimestamp"] = "2026-12-07T05:00:00Z".into();
        }
        let pod = serde_json::json!({"metadata": meta, "status": {"phase": phase}});
        Arc::new(CachedPod::of(serde_json::from_value(pod).unwrap()).unwrap())
    }

    #[test]
    fn a_placement_is_written_only_onto_the_pod_version_it_was_decided_from() {
        let annotations = json!({"burstgate.io/target": "sim-local"});
        assert_eq!(
            annotation_patch(annotations.clone(), Some("42")),
            json!({"metadata": {"annotations": annotations, "resourceVersion": "42"}})
        );
        assert_eq!(
            annotation_patch(annotations.clone(), None),
            json!({"metadata": {"annotations": annotations}})
        );
    }

    #[test]
    fn a_nudge_moves_only_pods_alive_not_deleting_and_without_a_workload() {
        let none = HashSet::new();
        let created = HashSet::from(["u1".to_string()]);
        assert!(redecidable(&cached("Pending", false), &none));
        assert!(!redecidable(&cached("Pending", false), &created));
        assert!(!redecidable(&cached("Pending", true), &none));
        assert!(!redecidable(&cached("Failed", false), &none));
        assert!(!redecidable(&cached("Succeeded", false), &none));
    }

    #[test]
    fn a_due_pod_is_read_only_while_its_workload_and_the_same_live_pod_exist() {
        let read = |uid: &str, pod: Option<Arc<CachedPod>>| still_read(uid, pod).is_some();
        assert!(read("u1", Some(cached("Running", false))));
        assert!(read("u1", Some(cached("Pending", false))));
        // Forgotten: the workload is not known (no pod looked up), the pod is gone or is a
        // namesake, over, or being deleted.
        assert!(!read("u1", None));
        assert!(!read("u2", Some(cached("Running", false))));
        assert!(!read("u1", Some(cached("Succeeded", false))));
        assert!(!read("u1", Some(cached("Running", true))));
    }

    #[test]
    fn a_deleted_pod_is_recent_and_others_are_not() {
        let deleted = Recent::default();
        deleted.insert("u1".into());
        assert!(deleted.recent("u1"));
        assert!(!deleted.recent("u2"));
    }

    #[test]
    fn a_pod_deleted_or_changed_under_a_write_is_an_expected_race_and_other_failures_are_not() {
        use kube::core::Status;
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(
                Status::failure("x", "y").with_code(code).boxed(),
            ))
        };
        assert_eq!(api(404).expected_race(), Some(Race::PodGone));
        assert_eq!(api(409).expected_race(), Some(Race::PodChanged));
        assert_eq!(api(500).expected_race(), None);
        assert_eq!(api(403).expected_race(), None);
        assert_eq!(
            Error::Provider(ProviderError::not_found("gone")).expected_race(),
            None,
            "a provider's answer is not a race of the pod object"
        );
    }

    #[test]
    fn an_apiserver_that_does_not_answer_is_told_apart_from_one_that_refuses() {
        use kube::core::Status;
        let silent = Error::Kube(kube::Error::Service("client error (Connect)".into()));
        assert!(silent.apiserver_unanswered());
        assert_eq!(silent.expected_race(), None);
        let refused = Error::Kube(kube::Error::Api(
            Status::failure("x", "y").with_code(503).boxed(),
        ));
        assert!(!refused.apiserver_unanswered());
        assert!(!Error::Provider(ProviderError::not_found("gone")).apiserver_unanswered());
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
    fn the_grace_period_is_the_deletes_else_the_specs_else_thirty_seconds() {
        let pod = |meta: Option<i64>, spec: Option<i64>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "deletionGracePeriodSeconds": meta},
                "spec": {"containers": [], "terminationGracePeriodSeconds": spec}
            }))
            .unwrap()
        };
        assert_eq!(
            grace_period(&pod(Some(5), Some(60))),
            Duration::from_secs(5)
        );
        assert_eq!(grace_period(&pod(None, Some(60))), Duration::from_secs(60));
        assert_eq!(grace_period(&pod(None, None)), Duration::from_secs(30));
        assert_eq!(grace_period(&pod(Some(0), Some(60))), Duration::ZERO);
    }

    #[test]
    fn a_pod_only_waiting_or_without_status_mirrors_nothing() {
        assert!(!mirrors_a_workload(&pod(serde_json::json!({}))));
        let waiting = serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        assert!(!mirrors_a_workload(&pod(waiting)));
    }

    #[test]
    fn a_delete_the_target_never_answered_is_retried_and_a_refusal_is_left_to_the_orphan_collector()
    {
        use crate::provider::{GaveUpCause, TargetRejection};
        let gave_up = |cause| {
            ProviderError::Target(TargetRejection::GaveUp {
                cause,
                api: "StopTask",
                target: "t".into(),
                attempts: 3,
                elapsed: Duration::from_secs(20),
                last: "503".into(),
            })
        };
        for unanswered in [
            gave_up(GaveUpCause::Unavailable),
            gave_up(GaveUpCause::Throttled),
            ProviderError::Target(TargetRejection::CircuitOpen { target: "t".into() }),
            ProviderError::TimedOut {
                api: "StopTask",
                after: Duration::from_secs(5),
            },
        ] {
            assert!(delete_unanswered(&unanswered), "{unanswered}");
        }
        let refused = ProviderError::Target(TargetRejection::Cloud {
            code: "AuthorizationFailed".into(),
            message: "no".into(),
        });
        assert!(!delete_unanswered(&refused), "{refused}");
    }

    #[test]
    fn only_calls_that_may_have_been_carried_out_leave_the_outcome_unknown() {
        use crate::provider::{GaveUpCause, TargetRejection};
        let gave_up = |cause| TargetRejection::GaveUp {
            cause,
            api: "RunTask",
            target: "t".into(),
            attempts: 3,
            elapsed: Duration::from_secs(20),
            last: "503".into(),
        };
        let unknown = gave_up(GaveUpCause::Unavailable);
        assert!(unknown.outcome_unknown(), "{unknown}");
        assert!(ProviderError::Target(unknown).outcome_unknown());
        assert!(
            ProviderError::TimedOut {
                api: "RunTask",
                after: Duration::from_secs(5)
            }
            .outcome_unknown()
        );
        for known in [
            // Every attempt was refused by throttling; an open circuit made no attempt.
            gave_up(GaveUpCause::Throttled),
            TargetRejection::CircuitOpen { target: "t".into() },
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
