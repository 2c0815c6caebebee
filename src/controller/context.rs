//! What every controller of a running gateway shares: the API client, config, the live policy,
//! the ledger, the providers, target health, and the nudge that re-decides pending pods.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, Ledger, Policy};
use crate::provider::Provider;

/// The live policy: `None` until the first good load; a bad reload leaves the last good one.
pub type PolicyWatch = watch::Receiver<Option<Arc<Policy>>>;

/// Shared state of a running gateway.
pub struct Gateway {
    /// API client (the gateway's own identity).
    pub client: kube::Client,
    /// `burstgate run` settings.
    pub config: RunConfig,
    /// The live policy.
    pub policy: PolicyWatch,
    /// Reservations of every placed pod; decisions take the lock for microseconds.
    pub ledger: Mutex<Ledger>,
    /// One adapter per provider kind the policy may name.
    pub providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    /// Targets currently unusable (circuit open), by target name, with why.
    pub unhealthy: Mutex<BTreeMap<String, ExclusionReason>>,
    /// Notified when policy, quota or health change: pending pods are decided again.
    pub nudge: Notify,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    /// The current policy, if one has loaded.
    pub fn current_policy(&self) -> Option<Arc<Policy>> {
        self.policy.borrow().clone()
    }

    /// The adapter of a provider kind.
    pub fn provider(&self, kind: ProviderKind) -> Option<Arc<dyn Provider>> {
        self.providers.get(&kind).cloned()
    }

    /// The adapter serving the target named `target` in the current policy (what the kubelet
    /// API uses to reach a placed pod's workload: the pod's `burstgate.io/target` annotation).
    pub fn provider_for_target(&self, target: &str) -> Option<Arc<dyn Provider>> {
        let policy = self.current_policy()?;
        let t = policy.targets.iter().find(|t| t.name == target)?;
        self.provider(t.provider)
    }

    /// Exclusions for the engine: unhealthy targets that exist in `policy`.
    pub fn exclusions(&self, policy: &Policy) -> Vec<Exclusion> {
        let unhealthy = self.unhealthy.lock().expect("health lock");
        policy
            .targets
            .iter()
            .filter_map(|t| unhealthy.get(&t.name).map(|r| Exclusion { target: t.id, reason: r.clone() }))
            .collect()
    }

    /// Names of the targets that can take pods now (configured provider, not unhealthy).
    pub fn usable_targets(&self, policy: &Policy) -> Vec<String> {
        let unhealthy = self.unhealthy.lock().expect("health lock");
        policy
            .targets
            .iter()
            .filter(|t| self.providers.contains_key(&t.provider) && !unhealthy.contains_key(&t.name))
            .map(|t| t.name.clone())
            .collect()
    }
}

impl Gateway {
    /// A gateway with an empty ledger.
    pub fn new(
        client: kube::Client,
        config: RunConfig,
        policy: PolicyWatch,
        providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            client,
            config,
            policy,
            ledger: Mutex::new(Ledger::default()),
            providers,
            unhealthy: Mutex::default(),
            nudge: Notify::new(),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Refreshes the quota and spend gauges from the ledger (called at scrape time).
    pub fn refresh_metrics(&self) {
        if let Some(policy) = self.current_policy() {
            let ledger = self.ledger.lock().expect("ledger lock");
            self.metrics.observe_ledger(&policy, &ledger);
        }
    }
}
