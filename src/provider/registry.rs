//! Which adapter serves each target. One adapter instance per target (its subscription, region,
//! cluster...), each with its own [`Layers`]; rebuilt when the policy changes the target's
//! provider, region, connection or rate limits, kept (with its limiter and circuit state) when
//! it does not. Adapters of targets removed from the policy stay, so the pods still running
//! there can be read and deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::policy::model::ProviderKind;
use crate::policy::{Policy, Target};
use crate::provider::Provider;
use crate::provider::layers::{self, Buckets, Layers, Observer};

/// Builds the adapter of one provider kind for a target.
#[async_trait::async_trait]
pub trait Factory: Send + Sync {
    /// The adapter of `target`, whose cloud calls go through `layers`. An error says what is
    /// missing or wrong (shown on the node's conditions); the target is then unusable.
    async fn build(&self, target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String>;
}

struct Entry {
    fingerprint: String,
    provider: Arc<dyn Provider>,
    layers: Layers,
}

/// Every target's adapter.
pub struct Registry {
    factories: BTreeMap<ProviderKind, Arc<dyn Factory>>,
    buckets: Buckets,
    settings: layers::Settings,
    observer: Arc<dyn Observer>,
    entries: RwLock<BTreeMap<String, Entry>>,
    problems: RwLock<BTreeMap<String, String>>,
}

fn fingerprint(t: &Target) -> String {
    format!(
        "{}|{}|{:?}|{:?}",
        t.provider, t.region, t.connection, t.rate_limits
    )
}

impl Registry {
    /// A registry that builds adapters with `factories` (a provider kind without one cannot be
    /// used by this gateway).
    pub fn new(
        factories: BTreeMap<ProviderKind, Arc<dyn Factory>>,
        settings: layers::Settings,
        observer: Arc<dyn Observer>,
    ) -> Registry {
        Registry {
            factories,
            buckets: Buckets::default(),
            settings,
            observer,
            entries: RwLock::default(),
            problems: RwLock::default(),
        }
    }

    /// Builds the adapters `policy` needs that are not built yet (or whose settings changed).
    /// Returns the targets that cannot be served, with why.
    pub async fn sync(&self, policy: &Policy) -> BTreeMap<String, String> {
        let mut problems = BTreeMap::new();
        for t in &policy.targets {
            let fp = fingerprint(t);
            if self
                .entries
                .read()
                .expect("registry lock")
                .get(&t.name)
                .is_some_and(|e| e.fingerprint == fp)
            {
                continue;
            }
            let Some(factory) = self.factories.get(&t.provider) else {
                problems.insert(
                    t.name.clone(),
                    format!("provider {} is not enabled on this gateway", t.provider),
                );
                continue;
            };
            let built = match Layers::new(t, &self.buckets, self.settings, self.observer.clone()) {
                Ok(layers) => factory.build(t, layers.clone()).await.map(|p| (p, layers)),
                Err(e) => Err(e.to_string()),
            };
            match built {
                Ok((provider, layers)) => {
                    tracing::info!(target_name = %t.name, provider = %t.provider, region = %t.region, "adapter ready");
                    self.observer.circuit(&t.name, layers.circuit_state());
                    self.entries.write().expect("registry lock").insert(
                        t.name.clone(),
                        Entry {
                            fingerprint: fp,
                            provider,
                            layers,
                        },
                    );
                }
                Err(why) => {
                    tracing::warn!(target_name = %t.name, %why, "target cannot be served");
                    self.entries.write().expect("registry lock").remove(&t.name);
                    problems.insert(t.name.clone(), why);
                }
            }
        }
        *self.problems.write().expect("registry lock") = problems.clone();
        problems
    }

    /// Lets every target's layers announce a circuit whose cool-down has passed
    /// ([`Layers::tick`]).
    pub fn tick_circuits(&self) {
        for entry in self.entries.read().expect("registry lock").values() {
            entry.layers.tick();
        }
    }

    /// The adapter of `target`.
    pub fn get(&self, target: &str) -> Option<Arc<dyn Provider>> {
        self.entries
            .read()
            .expect("registry lock")
            .get(target)
            .map(|e| e.provider.clone())
    }

    /// The layers of `target` (their circuit state).
    pub fn layers(&self, target: &str) -> Option<Layers> {
        self.entries
            .read()
            .expect("registry lock")
            .get(target)
            .map(|e| e.layers.clone())
    }

    /// Every adapter built so far, by target name.
    pub fn all(&self) -> Vec<(String, Arc<dyn Provider>)> {
        self.entries
            .read()
            .expect("registry lock")
            .iter()
            .map(|(n, e)| (n.clone(), e.provider.clone()))
            .collect()
    }

    /// Why `target` has no adapter, when the last sync could not build one.
    pub fn problem(&self, target: &str) -> Option<String> {
        self.problems
            .read()
            .expect("registry lock")
            .get(target)
            .cloned()
    }

    /// Whether this gateway can build adapters of `kind` at all.
    pub fn supports(&self, kind: ProviderKind) -> bool {
        self.factories.contains_key(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;
    use crate::provider::sim::{SimCloud, SimProvider};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait::async_trait]
    impl Factory for Counting {
        async fn build(&self, target: &Target, _: Layers) -> Result<Arc<dyn Provider>, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if target.region == "broken" {
                return Err("no credentials".into());
            }
            Ok(Arc::new(SimProvider::new(SimCloud::new(
                Duration::ZERO,
                10,
            ))))
        }
    }

    fn policy(region: &str) -> Policy {
        let yaml = format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {{name: a, provider: sim, region: {region}}}\n    - {{name: b, provider: aci, region: eastus}}\n"
        );
        load_files(&[("p.yaml".into(), yaml)]).unwrap()
    }

    fn registry(f: Arc<Counting>) -> Registry {
        Registry::new(
            BTreeMap::from([(ProviderKind::Sim, f as Arc<dyn Factory>)]),
            Default::default(),
            Arc::new(layers::Unobserved),
        )
    }

    #[tokio::test]
    async fn an_unchanged_target_keeps_its_adapter_across_syncs() {
        let f = Arc::new(Counting::default());
        let r = registry(f.clone());
        r.sync(&policy("r1")).await;
        let first = r.get("a").unwrap();
        r.sync(&policy("r1")).await;
        assert!(Arc::ptr_eq(&first, &r.get("a").unwrap()));
        assert_eq!(f.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_changed_region_builds_a_new_adapter() {
        let f = Arc::new(Counting::default());
        let r = registry(f.clone());
        r.sync(&policy("r1")).await;
        r.sync(&policy("r2")).await;
        assert_eq!(f.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_provider_without_factory_or_a_failed_build_is_a_named_problem() {
        let r = registry(Arc::default());
        let problems = r.sync(&policy("broken")).await;
        assert_eq!(problems["a"], "no credentials");
        assert_eq!(problems["b"], "provider aci is not enabled on this gateway");
        assert!(r.get("a").is_none() && r.get("b").is_none());
        assert_eq!(
            r.problem("b").as_deref(),
            Some("provider aci is not enabled on this gateway")
        );
    }
}
