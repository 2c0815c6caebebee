//! Reads that every pod of a namespace shares, made once per namespace every few seconds instead
//! of once per pod: the namespace's Services (service-link variables), the master Service
//! `default/kubernetes` (`KUBERNETES_SERVICE_*`) and the namespace's `kube-root-ca.crt` (the
//! `ca.crt` of a projected token volume). The kubelet's older `Cache` strategy for referenced
//! objects works the same way (a TTL, not a watch), and so needs no more RBAC than a read by name
//! and a LIST in the namespace: the gateway's roles can still be confined to the namespaces that
//! burst (docs/deployment.md). A burst of 10,000 pods in one namespace makes a few LISTs, not
//! 10,000 (docs/performance.md). What is read may be up to [`TTL`] old, as on a kubelet.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, Client};
use tokio::sync::OnceCell;

/// The ConfigMap every namespace gets from the root-CA publisher.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// How long a read is reused.
pub const TTL: Duration = Duration::from_secs(5);

/// The shared reads of one gateway.
pub struct SharedReads {
    client: Client,
    services: TtlCache<String, Vec<Arc<Service>>>,
    master: TtlCache<(), Option<Arc<Service>>>,
    root_cas: TtlCache<String, Option<Arc<ConfigMap>>>,
}

impl SharedReads {
    /// Reads with `client`, each kept for [`TTL`].
    pub fn new(client: Client) -> Self {
        SharedReads {
            client,
            services: TtlCache::new(TTL),
            master: TtlCache::new(TTL),
            root_cas: TtlCache::new(TTL),
        }
    }

    /// The Services of namespace `ns`.
    pub async fn services_in(&self, ns: &str) -> Result<Vec<Arc<Service>>, kube::Error> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        self.services
            .get(ns.to_owned(), || async move {
                let list = api.list(&Default::default()).await?;
                Ok(list.items.into_iter().map(Arc::new).collect())
            })
            .await
    }

    /// The master Service `kubernetes` of `default`.
    pub async fn master(&self) -> Result<Option<Arc<Service>>, kube::Error> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        self.master
            .get((), || async move {
                Ok(api.get_opt("kubernetes").await?.map(Arc::new))
            })
            .await
    }

    /// The `kube-root-ca.crt` of namespace `ns`.
    pub async fn root_ca(&self, ns: &str) -> Result<Option<Arc<ConfigMap>>, kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        self.root_cas
            .get(ns.to_owned(), || async move {
                Ok(api.get_opt(ROOT_CA).await?.map(Arc::new))
            })
            .await
    }
}

/// Values by key, each fetched once per `ttl` however many callers ask at once; a failed fetch
/// is not kept (the next caller tries again).
struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    by_key: HashMap<K, (Instant, Arc<OnceCell<V>>)>,
    swept: Instant,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(Entries {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// The value of `key`: the one fetched less than `ttl` ago, or `fetch`'s.
    async fn get<F, Fut>(&self, key: K, fetch: F) -> Result<V, kube::Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, kube::Error>>,
    {
        let cell = self.cell(key, Instant::now());
        cell.get_or_try_init(fetch).await.cloned()
    }

    /// The cell of `key` that is fresh at `now`, made anew when missing or stale; entries
    /// older than `ttl` are forgotten at most once per `ttl`.
    fn cell(&self, key: K, now: Instant) -> Arc<OnceCell<V>> {
        let mut e = self.entries.lock().expect("cache lock");
        if now.duration_since(e.swept) >= self.ttl {
            let ttl = self.ttl;
            e.by_key.retain(|_, (at, _)| now.duration_since(*at) < ttl);
            e.swept = now;
        }
        match e.by_key.get(&key) {
            Some((at, cell)) if now.duration_since(*at) < self.ttl => cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                e.by_key.insert(key, (now, cell.clone()));
                cell
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn many_callers_at_once_share_one_fetch_per_key() {
        let cache: TtlCache<&str, usize> = TtlCache::new(Duration::from_secs(60));
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(7)
        };
        let all = futures::future::join_all((0..50).map(|_| cache.get("ns", fetch))).await;
        assert!(all.iter().all(|v| matches!(v, Ok(7))));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        cache.get("other", fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept() {
        let cache: TtlCache<&str, usize> = TtlCache::new(Duration::from_secs(60));
        let failed = cache
            .get("ns", || async {
                Err(kube::Error::Api(
                    kube::core::Status::failure("boom", "InternalError")
                        .with_code(500)
                        .boxed(),
                ))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.get("ns", || async { Ok(3) }).await.unwrap(), 3);
    }

    #[test]
    fn a_stale_entry_is_fetched_again_and_old_ones_are_forgotten() {
        let cache: TtlCache<&str, usize> = TtlCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let first = cache.cell("a", t0);
        assert!(Arc::ptr_eq(
            &first,
            &cache.cell("a", t0 + Duration::from_secs(4))
        ));
        cache.cell("b", t0 + Duration::from_secs(4));
        let later = cache.cell("a", t0 + Duration::from_secs(6));
        assert!(!Arc::ptr_eq(&first, &later));
        // The sweep at t0+6s forgot nothing fresh: "a" (new) and "b" (2 s old).
        assert_eq!(cache.len(), 2);
        cache.cell("c", t0 + Duration::from_secs(12));
        // At t0+12s both are older than 5 s.
        assert_eq!(cache.len(), 1);
    }
}
