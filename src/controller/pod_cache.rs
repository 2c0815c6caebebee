//! The node's pods, cached for the whole life of the process: one watch of
//! `spec.nodeName=<node>` that every replica keeps, leading or standing by, so a replica that
//! gains leadership (again) starts from a warm cache instead of listing every pod of the node
//! (at 100,000 pods one LIST took 46-91 s and 400 MiB of the apiserver's, docs/performance.md).
//! Each term of leadership subscribes to the changes; the subscription starts with every pod
//! cached, so the new term reconciles them all, as kube-runtime's shared streams do.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::cached_pod::CachedPod;
use crate::controller::context::Gateway;

/// Where the current term's subscription is (none while this replica stands by).
type Subscriber = Arc<Mutex<Option<mpsc::UnboundedSender<ObjectRef<CachedPod>>>>>;

/// The cache of the node's pods, and the subscription of the current term to its changes.
#[derive(Clone)]
pub struct PodCache {
    store: Store<CachedPod>,
    /// Whether the store holds the watch's first LIST whole. Not `Store::wait_until_ready`: its
    /// one-shot channel wakes only the last of several waiters, and the controller waits on it.
    listed: watch::Receiver<bool>,
    subscriber: Subscriber,
}

impl PodCache {
    /// The cache, and the watch that fills it, to run until `shutdown` (once per process).
    pub fn new(
        gw: &Gateway,
        shutdown: CancellationToken,
    ) -> (PodCache, impl Future<Output = ()> + use<>) {
        let selector = format!("spec.nodeName={}", gw.config.node_name);
        let (store, writer) = kube::runtime::reflector::store();
        let (listed_tx, listed) = watch::channel(false);
        let subscriber = Subscriber::default();
        let metrics = gw.metrics.clone();
        let events = watcher(
            Api::<CachedPod>::all(gw.client.clone()),
            watcher::Config::default().fields(&selector),
        )
        // A failed LIST or watch is retried after 0.8 s doubling to 30 s, not at once in a loop:
        // the ledger's rebuild waits for the first LIST, which at 100,000 pods the apiserver feels.
        .default_backoff()
        // An event comes out of the reflector once the store holds it.
        .reflect(writer);
        let (reader, to_subscriber) = (store.clone(), subscriber.clone());
        let watch = async move {
            let forwarded = events.for_each(|event| {
                match event {
                    Ok(watcher::Event::Apply(pod)) => send(&to_subscriber, ObjectRef::from(&pod)),
                    // The store swaps a (re-)LIST in whole: then every pod is news.
                    Ok(watcher::Event::InitDone) => {
                        metrics.pod_cache_lists.inc();
                        listed_tx.send_replace(true);
                        for pod in reader.state() {
                            send(&to_subscriber, ObjectRef::from(&*pod));
                        }
                    }
                    Ok(_) => {}
                    // The watch's history expired (410): it lists again, as it should.
                    Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                        tracing::debug!(%status, "pod watch expired; listing again")
                    }
                    // The apiserver unreachable, or refusing (RBAC): the pods go unwatched.
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
                futures::future::ready(())
            });
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = forwarded => {}
            }
        };
        let cache = PodCache {
            store,
            listed,
            subscriber,
        };
        (cache, watch)
    }

    /// The node's pods as last seen.
    pub fn store(&self) -> Store<CachedPod> {
        self.store.clone()
    }

    /// Waits until the cache holds the node's pods whole (at once, after the first LIST);
    /// `false` if the watch has stopped without.
    pub async fn listed(&self) -> bool {
        self.listed.clone().wait_for(|l| *l).await.is_ok()
    }

    /// A term's subscription: every pod cached now, then every pod the watch changes (and every
    /// pod again after a re-LIST), until the next subscription replaces this one.
    pub fn subscribe(&self) -> impl Stream<Item = ObjectRef<CachedPod>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        // Subscribed before the snapshot: a pod changing in between comes twice, never not.
        *self.subscriber.lock().expect("subscriber lock") = Some(tx);
        let now: Vec<_> = if *self.listed.borrow() {
            self.store
                .state()
                .iter()
                .map(|pod| ObjectRef::from(&**pod))
                .collect()
        } else {
            Vec::new() // the first LIST's end sends them all
        };
        futures::stream::iter(now).chain(rx)
    }
}

/// Hands `pod` to the term's subscription, if there is one and it still listens.
fn send(subscriber: &Subscriber, pod: ObjectRef<CachedPod>) {
    let mut subscriber = subscriber.lock().expect("subscriber lock");
    if subscriber
        .as_ref()
        .is_some_and(|tx| tx.unbounded_send(pod).is_err())
    {
        *subscriber = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> CachedPod {
        let pod = serde_json::json!({"metadata": {"name": name, "namespace": "ns", "uid": name}});
        CachedPod::of(serde_json::from_value(pod).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_subscription_gets_what_is_sent_after_it_and_a_dropped_one_is_forgotten() {
        let subscriber = Subscriber::default();
        send(&subscriber, ObjectRef::from(&pod("before")));
        let (tx, rx) = mpsc::unbounded();
        *subscriber.lock().unwrap() = Some(tx);
        send(&subscriber, ObjectRef::from(&pod("a")));
        send(&subscriber, ObjectRef::from(&pod("b")));
        drop(subscriber.lock().unwrap().take());
        let got: Vec<String> = rx.map(|r| r.name).collect().await;
        assert_eq!(got, ["a", "b"]);

        let (tx, rx) = mpsc::unbounded();
        *subscriber.lock().unwrap() = Some(tx);
        drop(rx);
        send(&subscriber, ObjectRef::from(&pod("c")));
        assert!(subscriber.lock().unwrap().is_none(), "a term that ended");
    }
}
