//! Orphan garbage collection: cloud workloads tagged with this cluster id and node whose pod no
//! longer exists are deleted, only after the pod cache has synced and past a minimum age; ledger
//! reservations of vanished pods are released.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tokio_util::sync::CancellationToken;

use crate::controller::context::Gateway;
use crate::provider::OwnedWorkload;

/// The workloads of `owned` that are orphans: no live pod has their UID, and they are older
/// than `min_age` (a pod created a moment ago may not be in the cache yet).
pub fn orphans<'a>(
    owned: &'a [OwnedWorkload],
    live_uids: &HashSet<String>,
    min_age: Duration,
) -> Vec<&'a OwnedWorkload> {
    owned
        .iter()
        .filter(|w| !live_uids.contains(&w.owner.pod_uid) && w.age >= min_age)
        .collect()
}

/// One collection pass; returns the number of workloads deleted. The live pods come from a
/// fresh LIST, never from a cache that may not have synced yet: a half-filled cache would make
/// every running workload look orphaned.
pub async fn collect(gw: &Gateway) -> Result<usize, kube::Error> {
    let pods: Api<Pod> = Api::all(gw.client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", gw.config.node_name)))
        .await?;
    let live: HashSet<String> = list.items.iter().filter_map(|p| p.uid()).collect();
    let vanished: Vec<String> = {
        let ledger = gw.ledger.lock().expect("ledger lock");
        ledger
            .reservations()
            .map(|(uid, _)| uid.clone())
            .filter(|uid| !live.contains(uid))
            .collect()
    };
    if !vanished.is_empty() {
        let mut ledger = gw.ledger.lock().expect("ledger lock");
        for uid in &vanished {
            ledger.release(uid);
        }
        drop(ledger);
        tracing::info!(
            count = vanished.len(),
            "released reservations of pods that no longer exist"
        );
        gw.nudge.notify_waiters();
    }
    let mut deleted = 0;
    let mut seen = std::collections::HashSet::new();
    for (_, provider) in gw.providers.all() {
        let owned = match provider
            .list_owned(&gw.config.cluster_id, &gw.config.node_name)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(provider = provider.name(), error = %e, "orphan GC could not list workloads");
                continue;
            }
        };
        // Targets sharing an account and region list the same workloads: handle each once.
        let owned: Vec<_> = owned
            .into_iter()
            .filter(|w| seen.insert(w.id.clone()))
            .collect();
        for w in orphans(&owned, &live, gw.config.gc_min_age()) {
            match provider.delete(&w.id).await {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(provider = provider.name(), workload = %w.id, pod = %format!("{}/{}", w.owner.namespace, w.owner.pod), "deleted orphan workload");
                }
                Err(e) => {
                    tracing::warn!(provider = provider.name(), workload = %w.id, error = %e, "orphan GC could not delete")
                }
            }
        }
    }
    Ok(deleted)
}

/// Collects orphans every minute (or every half minimum age, if shorter) until `shutdown`.
/// `ready` turns true once the ledger has been rebuilt.
pub async fn run(
    gw: Arc<Gateway>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
    }
    let period =
        (gw.config.gc_min_age() / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match collect(&gw).await {
                    Ok(deleted) => {
                        gw.metrics.orphans_collected.inc_by(deleted as u64);
                    }
                    Err(e) => {
                        gw.metrics.gc_failures.inc();
                        tracing::warn!(error = %e, "orphan GC could not list the node's pods; skipping this pass");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Owner;

    fn owned(uid: &str, age_secs: u64) -> OwnedWorkload {
        OwnedWorkload {
            id: format!("bg-{uid}"),
            owner: Owner {
                cluster_id: "c".into(),
                node: "n".into(),
                namespace: "d".into(),
                pod: "p".into(),
                pod_uid: uid.into(),
            },
            age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn only_old_workloads_without_a_live_pod_are_orphans() {
        let all = [
            owned("live", 9999),
            owned("gone-old", 900),
            owned("gone-young", 30),
        ];
        let live = HashSet::from(["live".to_string()]);
        let got: Vec<&str> = orphans(&all, &live, Duration::from_secs(600))
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(got, vec!["bg-gone-old"]);
    }
}
