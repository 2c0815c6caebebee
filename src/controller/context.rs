//! What every controller of a running gateway shares: the API client, config, the live policy,
//! the ledger, the providers, target health, and the nudge that re-decides pending pods.
//!
//! Its fields belong to the controllers; the rest of the crate goes through its methods, and the
//! kubelet API sees only [`Workloads`](crate::controller::workloads::Workloads).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::config::RunConfig;
use crate::controller::cached_pod::CachedPod;
use crate::controller::events::{Event, EventReason};
use crate::controller::status::PodPhase;
use crate::metrics::Metrics;
use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, Ledger, Policy};
use crate::provider::Provider;
use crate::provider::layers::{self, CircuitState, Observer};
use crate::provider::registry::{Factory, Registry};

/// The live policy: `None` until the first good load; a bad reload leaves the last good one.
pub type PolicyWatch = watch::Receiver<Option<Arc<Policy>>>;

/// Shared state of a running gateway.
pub struct Gateway {
    /// API client (the gateway's own identity).
    pub(in crate::controller) client: kube::Client,
    /// `burstgate run` settings.
    pub(in crate::controller) config: RunConfig,
    /// The live policy.
    pub(in crate::controller) policy: PolicyWatch,
    /// Reservations of every placed pod; decisions take the lock for microseconds.
    pub(in crate::controller) ledger: Mutex<Ledger>,
    /// One adapter per target, built from the live policy.
    pub(in crate::controller) providers: Registry,
    /// Targets currently unusable (circuit open), by target name, with why.
    pub(in crate::controller) unhealthy: Mutex<BTreeMap<String, ExclusionReason>>,
    /// Notified when policy, quota or health change: pending pods are decided again.
    pub(in crate::controller) nudge: Notify,
    /// Prometheus metrics.
    pub(in crate::controller) metrics: Arc<Metrics>,
    /// The leader's cache of the node's pods (`None` while this replica does not lead): the pod
    /// gauges are counted from it when scraped, not on a timer.
    pub(in crate::controller) pods: Mutex<Option<Store<CachedPod>>>,
    /// Work started outside any controller's loop (the Event about a circuit, which the layers
    /// report from inside a provider call): owned here, and waited for by [`Gateway::drain`].
    background: TaskTracker,
}

impl Gateway {
    /// The current policy, if one has loaded.
    pub fn current_policy(&self) -> Option<Arc<Policy>> {
        self.policy.borrow().clone()
    }

    /// The adapter serving the target named `target` (a placed pod's `burstgate.io/target`
    /// annotation): the controllers and the kubelet API reach workloads through it.
    pub fn provider_for_target(&self, target: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(target)
    }

    /// The live policy, to wait for its changes.
    pub fn policy_watch(&self) -> PolicyWatch {
        self.policy.clone()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The leader's cache of the node's pods; `None` while this replica does not lead.
    pub fn pod_store(&self) -> Option<Store<CachedPod>> {
        self.pods.lock().expect("pod cache lock").clone()
    }

    /// How many pods hold a reservation in the ledger.
    pub fn reserved_pods(&self) -> usize {
        self.ledger
            .lock()
            .expect("ledger lock")
            .reservations()
            .count()
    }

    /// Excludes `target` from decisions for `reason`, or with `None` offers it again (what the
    /// layers' health observer does as its circuit opens and closes). True when this changed
    /// anything; the caller nudges.
    pub fn set_exclusion(&self, target: &str, reason: Option<ExclusionReason>) -> bool {
        let mut unhealthy = self.unhealthy.lock().expect("health lock");
        match reason {
            Some(reason) => unhealthy.insert(target.to_string(), reason).is_none(),
            None => unhealthy.remove(target).is_some(),
        }
    }

    /// Exclusions for the engine: unhealthy targets that exist in `policy`.
    /// Targets that cannot be served at all (their provider is not enabled, their adapter failed
    /// to build: no configuration, no credentials) are excluded too, so no Event or
    /// explanation ever offers them as eligible. A target whose adapter is still being built is
    /// not: the registry nudges pending pods once it is ready.
    pub fn exclusions(&self, policy: &Policy) -> Vec<Exclusion> {
        let unhealthy = self.unhealthy.lock().expect("health lock");
        policy
            .targets
            .iter()
            .filter_map(|t| {
                let reason = match self.providers.problem(&t.name) {
                    Some(why) => ExclusionReason::Unusable(why),
                    None => unhealthy.get(&t.name)?.clone(),
                };
                Some(Exclusion {
                    target: t.id,
                    reason,
                })
            })
            .collect()
    }

    /// Names of the targets that can take pods now (configured provider, not unhealthy).
    pub fn usable_targets(&self, policy: &Policy) -> Vec<String> {
        let unhealthy = self.unhealthy.lock().expect("health lock");
        policy
            .targets
            .iter()
            .filter(|t| self.providers.get(&t.name).is_some() && !unhealthy.contains_key(&t.name))
            .map(|t| t.name.clone())
            .collect()
    }
}

impl Gateway {
    /// A gateway with an empty ledger, building each target's adapter with the factory of its
    /// provider kind.
    pub fn new(
        client: kube::Client,
        config: RunConfig,
        policy: PolicyWatch,
        factories: BTreeMap<ProviderKind, Arc<dyn Factory>>,
        layer_settings: layers::Settings,
    ) -> Arc<Gateway> {
        Arc::new_cyclic(|gw: &Weak<Gateway>| Gateway {
            client,
            config,
            policy,
            ledger: Mutex::new(Ledger::default()),
            providers: Registry::new(
                factories,
                layer_settings,
                Arc::new(Health { gw: gw.clone() }),
            ),
            unhealthy: Mutex::default(),
            nudge: Notify::new(),
            metrics: Arc::new(Metrics::new()),
            pods: Mutex::default(),
            background: TaskTracker::new(),
        })
    }

    /// Waits for the background work of this gateway (Events still being published) to end.
    /// Part of the shutdown path: `gateway::run` calls it inside its bounded drain. Work started
    /// during or after the wait is owned all the same; this returns once none is left.
    pub async fn drain(&self) {
        self.background.close();
        self.background.wait().await;
    }

    /// Builds the adapters the current policy needs (after each policy change).
    pub async fn sync_providers(&self) {
        let Some(policy) = self.current_policy() else {
            return;
        };
        let problems = self.providers.sync(&policy).await;
        for (target, why) in &problems {
            tracing::warn!(target_name = %target, %why, "target has no adapter");
        }
        self.nudge.notify_waiters();
    }

    /// Refreshes the quota and spend gauges from the ledger, and the pod gauges from the pod
    /// cache (called at scrape time).
    pub fn refresh_metrics(&self) {
        if let Some(policy) = self.current_policy() {
            let ledger = self.ledger.lock().expect("ledger lock");
            self.metrics.observe_ledger(&policy, &ledger);
        }
        let pods = self
            .pods
            .lock()
            .expect("pod cache lock")
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        self.metrics.observe_pods(pods.iter().map(|p| {
            let target = p.target();
            let phase = p.phase;
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
}

/// Hears the layers of every target: records metrics, and excludes a target from decisions while
/// its circuit is open (a Warning Event on the node says so), offering it again when a probe may go.
struct Health {
    gw: Weak<Gateway>,
}

impl Observer for Health {
    fn request(&self, provider: &str, region: &str, api: &str, result: &str, seconds: f64) {
        if let Some(gw) = self.gw.upgrade() {
            gw.metrics
                .provider_request(provider, region, api, result, seconds);
        }
    }

    fn waited(&self, provider: &str, region: &str, class: &str, seconds: f64) {
        if let Some(gw) = self.gw.upgrade() {
            let labels = crate::metrics::LimiterLabels {
                provider: provider.into(),
                region: region.into(),
                class: class.into(),
            };
            gw.metrics
                .rate_limiter_wait_seconds
                .get_or_create(&labels)
                .observe(seconds);
        }
    }

    fn circuit(&self, target: &str, state: CircuitState) {
        let Some(gw) = self.gw.upgrade() else { return };
        let previous = gw
            .metrics
            .circuit_state
            .get_or_create(&crate::metrics::TargetLabels {
                target: target.into(),
            })
            .set(state.gauge());
        // An adapter (re)built reports its closed circuit: a transition only if the state moved.
        if previous != state.gauge() {
            gw.metrics
                .circuit_transitions
                .get_or_create(&crate::metrics::CircuitLabels {
                    target: target.into(),
                    state: state.as_str().into(),
                })
                .inc();
        }
        let reason = match state {
            CircuitState::Open => Some(ExclusionReason::CircuitOpen),
            CircuitState::HalfOpen | CircuitState::Closed => None,
        };
        let changed = gw.set_exclusion(target, reason);
        if !changed {
            return;
        }
        gw.nudge.notify_waiters();
        let event = match state {
            CircuitState::Open => Event::new(
                EventReason::CircuitOpen,
                format!(
                    "target {target} excluded: its circuit opened after repeated target-level failures"
                ),
            ),
            CircuitState::HalfOpen | CircuitState::Closed => Event::new(
                EventReason::CircuitProbing,
                format!(
                    "target {target} offered again: its circuit is {}",
                    state.as_str()
                ),
            ),
        };
        // The layers report from inside a provider call, which must not wait on the API server:
        // the Event is published by a task the gateway owns (see `Gateway::drain`).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let owner = gw.clone();
            gw.background.spawn_on(
                async move {
                    if let Err(e) = crate::controller::node::node_event(&owner, &event).await {
                        tracing::warn!(error = %e, "could not record the circuit Event");
                    }
                },
                &rt,
            );
        }
    }
}
