//! Orphan garbage collection: cloud workloads tagged with this cluster id and node whose pod no
//! longer exists, or whose pod now runs on another target (a stray copy), are deleted, only after the pod cache has synced and past a minimum age; ledger
//! reservations of vanished pods are released.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use crate::controller::cached_pod::CachedPod;
use crate::controller::context::Gateway;
use crate::controller::placement::Workload;
use crate::metrics::TargetLabels;
use crate::provider::{OwnedWorkload, Owner, Provider, ProviderError};

/// Why a workload is garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbage {
    /// No pod on the node has its UID.
    Orphan,
    /// Its pod lives, but was placed on another target since (a re-decision after a rejection
    /// whose outcome was unknown, or after a crash): a second copy of the pod, billed.
    Stray {
        /// The target the pod is placed on now.
        placed_on: String,
    },
}

/// The workloads `target` listed that are garbage, older than `min_age` (a pod created a moment
/// ago may not be in the list yet). `placed` maps each live pod's UID to the target its
/// annotations place it on; `listed` maps each target whose listing succeeded to every workload
/// id it listed. A workload is a stray only when its pod's target listed and did not list it:
/// targets sharing an account list the same workloads, and an unreachable target proves nothing.
pub fn garbage<'a>(
    target: &str,
    owned: &'a [OwnedWorkload],
    placed: &HashMap<String, Option<String>>,
    listed: &HashMap<String, HashSet<String>>,
    min_age: Duration,
) -> Vec<(&'a OwnedWorkload, Garbage)> {
    owned
        .iter()
        .filter(|w| w.age >= min_age)
        .filter_map(|w| match placed.get(&w.owner.pod_uid) {
            None => Some((w, Garbage::Orphan)),
            Some(Some(now))
                if now != target && listed.get(now).is_some_and(|ids| !ids.contains(&w.id)) =>
            {
                Some((
                    w,
                    Garbage::Stray {
                        placed_on: now.clone(),
                    },
                ))
            }
            Some(_) => None,
        })
        .collect()
}

/// When GC first saw each listed workload. A provider that cannot tell a workload's age (moto
/// leaves ECS `createdAt` out; a tag may be missing) reports zero; such a workload then ages
/// from its first sighting, so it is still collected, `min_age` after this process first saw it.
#[derive(Debug, Default)]
pub struct Sightings(HashMap<String, Instant>);

impl Sightings {
    /// `owned` with each age at least the time since its first sighting; workloads no longer
    /// listed by `target` are forgotten.
    pub fn aged(
        &mut self,
        target: &str,
        owned: Vec<OwnedWorkload>,
        now: Instant,
    ) -> Vec<OwnedWorkload> {
        let key = |id: &str| format!("{target}/{id}");
        let listed: HashSet<String> = owned.iter().map(|w| key(&w.id)).collect();
        let prefix = format!("{target}/");
        self.0
            .retain(|k, _| !k.starts_with(&prefix) || listed.contains(k));
        owned
            .into_iter()
            .map(|mut w| {
                let first = *self.0.entry(key(&w.id)).or_insert(now);
                w.age = w.age.max(now.saturating_duration_since(first));
                w
            })
            .collect()
    }
}

/// When each target is next listed: a target whose last listing was large waits until that
/// listing fits a tenth of its read bucket ([`Provider::listing_interval`]), others a pass.
#[derive(Debug, Default)]
pub struct Schedule(HashMap<String, Instant>);

impl Schedule {
    /// Whether `target` is due for a listing at `now`.
    pub fn due(&self, target: &str, now: Instant) -> bool {
        self.0.get(target).is_none_or(|next| *next <= now)
    }

    /// `target` was listed at `now` and waits `interval` before its next listing.
    pub fn listed(&mut self, target: &str, now: Instant, interval: Duration) {
        self.0.insert(target.to_owned(), now + interval);
    }

    /// Forgets every target not in `current` (one the policy no longer has); returns them.
    pub fn keep_only(&mut self, current: &HashSet<&str>) -> Vec<String> {
        let gone: Vec<String> = self
            .0
            .keys()
            .filter(|t| !current.contains(t.as_str()))
            .cloned()
            .collect();
        for t in &gone {
            self.0.remove(t);
        }
        gone
    }
}

/// How many confirming reads of pods, and deletes of workloads, one pass has in flight at once
/// (a target's deletes are paced by the delete bucket of its layers, not by this).
const IN_FLIGHT: usize = 8;

/// Workloads a pass judged garbage but could not collect (reading the pod failed, or the delete
/// did), by target: judged again at the next pass without listing the target again, whose next
/// listing may be many minutes away ([`Schedule`]).
#[derive(Debug, Default)]
pub struct Carried(HashMap<String, Vec<OwnedWorkload>>);

impl Carried {
    /// What `target` offers this pass: its `listing` when it was listed (which supersedes
    /// anything carried for it), else what was carried over for it.
    pub fn take(
        &mut self,
        target: &str,
        listing: Option<Vec<OwnedWorkload>>,
    ) -> Vec<OwnedWorkload> {
        let carried = self.0.remove(target).unwrap_or_default();
        listing.unwrap_or(carried)
    }

    /// `w`, listed by `target`, is judged again next pass.
    pub fn carry(&mut self, target: &str, w: OwnedWorkload) {
        self.0.entry(target.to_owned()).or_default().push(w);
    }

    /// Forgets what was carried for targets not in `current` (the policy dropped them).
    pub fn keep_only(&mut self, current: &HashSet<&str>) {
        self.0.retain(|t, _| current.contains(t.as_str()));
    }
}

/// Each target's workloads, as one listing of it gave them.
pub type Listings = HashMap<String, Vec<OwnedWorkload>>;

/// What one GC pass carries over to the next.
#[derive(Debug, Default)]
pub struct Passes {
    /// Listings made for this pass already: the term's start (`pod.rs::restore`) listed every
    /// target it could, moments before the first pass, which judges those instead of listing
    /// each target a second time.
    pub listed_before: Listings,
    /// When each listed workload was first seen.
    pub sightings: Sightings,
    /// When each target is listed next.
    pub schedule: Schedule,
    /// Garbage this pass could not collect, for the next.
    pub carried: Carried,
    /// The period of passes: the least interval between two listings of a target.
    pub period: Duration,
}

/// A workload to delete: its target, that target's provider, the workload and why.
type Doomed = (String, Arc<dyn Provider>, OwnedWorkload, Garbage);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Workloads deleted.
    pub deleted: usize,
    /// Listings, confirming reads of pods and deletes that failed (each is tried again next pass).
    pub failed: usize,
}

/// One collection pass over `pods` (the pod cache, whole: the pass runs only once the ledger
/// was rebuilt from it), the pass of the tick at `tick`. Only targets due in `passes.schedule`
/// at `tick` are listed (or, at the first pass, taken from `passes.listed_before`), and are due
/// again from `tick` on (the next tick, a period later, finds a target listed at the period
/// due); a target not due offers what an earlier pass could not
/// collect ([`Carried`]). A workload is judged a stray only against its pod's target listed in
/// the same pass. The cache decides which workloads may be garbage; each of those is confirmed by
/// reading its pod from the apiserver before it is deleted (a cache behind the apiserver must
/// never make a live pod's workload look orphaned), so a pass with no garbage reads nothing from
/// the apiserver. A read or delete that fails holds back only its own workload, carried to the
/// next pass; reads and deletes run [`IN_FLIGHT`] at a time.
pub async fn collect(
    gw: &Gateway,
    pods: &Store<CachedPod>,
    passes: &mut Passes,
    tick: Instant,
) -> Swept {
    let mut swept = Swept::default();
    let mut placed: HashMap<String, Option<String>> = pods
        .state()
        .iter()
        .filter_map(|p| Some((p.uid()?, p.target().map(str::to_owned))))
        .collect();
    // A reservation is only ever made for a pod in the cache, which forgets a pod only when it
    // is gone: one the cache does not hold is a pod deleted.
    let vanished: Vec<String> = {
        let ledger = gw.ledger.lock().expect("ledger lock");
        ledger
            .reservations()
            .map(|(uid, _)| uid.clone())
            .filter(|uid| !placed.contains_key(uid))
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
    // Every target's listing first: a stray is judged against its pod's current target's.
    let mut listed: HashMap<String, HashSet<String>> = HashMap::new();
    let mut listings = Vec::new();
    let mut seen = HashSet::new();
    let providers = gw.providers.all();
    let current: HashSet<&str> = providers.iter().map(|(t, _)| t.as_str()).collect();
    for target in passes.schedule.keep_only(&current) {
        gw.metrics
            .gc_listing_interval
            .remove(&TargetLabels { target });
    }
    passes.carried.keep_only(&current);
    for (target, provider) in providers {
        let listing = if let Some(owned) = passes.listed_before.remove(&target) {
            crate::failpoint::after(crate::failpoint::FailPoint::GcListed);
            listed_at(gw, &target, provider.as_ref(), passes, tick, owned.len());
            Some(owned)
        } else if passes.schedule.due(&target, tick) {
            list(gw, &target, provider.as_ref(), passes, tick, &mut swept).await
        } else {
            None
        };
        let fresh = listing.is_some();
        if let Some(owned) = &listing {
            listed.insert(target.clone(), owned.iter().map(|w| w.id.clone()).collect());
        }
        // Targets sharing an account and region list the same workloads: handle each once.
        let owned: Vec<_> = passes
            .carried
            .take(&target, listing)
            .into_iter()
            .filter(|w| seen.insert(w.id.clone()))
            .collect();
        let owned = if fresh {
            passes.sightings.aged(&target, owned, Instant::now())
        } else {
            owned
        };
        listings.push((target, provider, owned));
    }
    // Only the first pass has them (a target the policy dropped meanwhile left its own).
    passes.listed_before.clear();
    // What the cache calls garbage, confirmed by the pods as the apiserver has them now: each
    // pod read once, whatever the number of its workloads.
    let min_age = gw.config.gc_min_age();
    let suspects: HashMap<String, Owner> = listings
        .iter()
        .flat_map(|(target, _, owned)| garbage(target, owned, &placed, &listed, min_age))
        .map(|(w, _)| (w.owner.pod_uid.clone(), w.owner.clone()))
        .collect();
    let reads: Vec<_> = stream::iter(suspects)
        .map(|(uid, owner)| async move {
            let read = placement_now(gw, &owner).await;
            (uid, read)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut unconfirmed = HashSet::new();
    for (uid, read) in reads {
        match read {
            Ok(Some(target)) => {
                placed.insert(uid, target);
            }
            Ok(None) => {
                placed.remove(&uid);
            }
            Err(e) => {
                tracing::debug!(pod_uid = %uid, error = %e, "orphan GC could not read a pod it would collect the workload of");
                unconfirmed.insert(uid);
            }
        }
    }
    if !unconfirmed.is_empty() {
        swept.failed += unconfirmed.len();
        tracing::warn!(
            pods = unconfirmed.len(),
            "orphan GC could not read pods whose workloads it would collect; they are judged again next pass"
        );
    }
    let mut doomed: Vec<Doomed> = Vec::new();
    for (target, provider, owned) in &listings {
        for (w, why) in garbage(target, owned, &placed, &listed, min_age) {
            if unconfirmed.contains(&w.owner.pod_uid) {
                passes.carried.carry(target, w.clone());
            } else {
                doomed.push((target.clone(), provider.clone(), w.clone(), why));
            }
        }
    }
    // Boxed before they enter the stream: a closure over `Arc<dyn Provider>` there trips
    // rustc's check that the pass's future is `Send` (rust-lang/rust#102211).
    let deletes: Vec<_> = doomed.into_iter().map(|d| delete(d).boxed()).collect();
    let deletes: Vec<_> = stream::iter(deletes)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for ((target, _, w, why), result) in deletes {
        let pod = format!("{}/{}", w.owner.namespace, w.owner.pod);
        match (result, why) {
            (Ok(()), Garbage::Orphan) => {
                swept.deleted += 1;
                tracing::info!(target = %target, workload = %w.id, %pod, "deleted orphan workload")
            }
            (Ok(()), Garbage::Stray { placed_on }) => {
                swept.deleted += 1;
                tracing::warn!(target = %target, workload = %w.id, %pod, %placed_on, "deleted a stray copy of a pod placed elsewhere")
            }
            (Err(e), _) => {
                swept.failed += 1;
                tracing::warn!(target = %target, workload = %w.id, error = %e, "orphan GC could not delete; tried again next pass");
                passes.carried.carry(&target, w);
            }
        }
    }
    swept
}

/// Deletes a doomed workload.
async fn delete(doomed: Doomed) -> (Doomed, Result<(), ProviderError>) {
    let result = doomed.1.delete(&doomed.2.id).await;
    (doomed, result)
}

/// `target`'s owned workloads, listed now, its next listing scheduled from `tick`; `None`, and a
/// failure counted in `swept`, when the listing failed (the target is due again next pass).
async fn list(
    gw: &Gateway,
    target: &str,
    provider: &dyn Provider,
    passes: &mut Passes,
    tick: Instant,
    swept: &mut Swept,
) -> Option<Vec<OwnedWorkload>> {
    match provider
        .list_owned(&gw.config.cluster_id, &gw.config.node_name)
        .await
    {
        Ok(owned) => {
            crate::failpoint::after(crate::failpoint::FailPoint::GcListed);
            listed_at(gw, target, provider, passes, tick, owned.len());
            Some(owned)
        }
        Err(e) => {
            swept.failed += 1;
            tracing::warn!(provider = provider.name(), target = %target, error = %e, "orphan GC could not list workloads");
            None
        }
    }
}

/// `target` was listed (`workloads` of it) for the pass of `tick`: it is listed next when its
/// provider says a listing that large fits its read bucket.
fn listed_at(
    gw: &Gateway,
    target: &str,
    provider: &dyn Provider,
    passes: &mut Passes,
    tick: Instant,
    workloads: usize,
) {
    let interval = provider.listing_interval(passes.period);
    if interval > passes.period {
        tracing::debug!(target = %target, seconds = interval.as_secs(), workloads, "orphan GC lists this target less often: its listing is large for its read bucket");
    }
    passes.schedule.listed(target, tick, interval);
    gw.metrics
        .gc_listing_interval
        .get_or_create(&TargetLabels {
            target: target.to_owned(),
        })
        .set(interval.as_secs_f64());
}

/// The target the pod `owner` names is placed on as the apiserver has it now (`Some(None)`:
/// the pod lives but is not placed), or `None` when that pod is gone: no pod of that name, one
/// of another UID (deleted and created again), or one on another node.
async fn placement_now(gw: &Gateway, owner: &Owner) -> Result<Option<Option<String>>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(gw.client.clone(), &owner.namespace);
    let pod = api.get_opt(&owner.pod).await?;
    Ok(pod
        .filter(|p| {
            p.uid().as_deref() == Some(owner.pod_uid.as_str())
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                    == Some(gw.config.node_name.as_str())
        })
        .map(|p| Workload::of_meta(&p.metadata).map(|w| w.target)))
}

/// Collects orphans every minute (or every half minimum age, if shorter) until `shutdown`,
/// listing each target at that period or, when its listing is large, as its read bucket allows.
/// `restored` gives, once the ledger has been rebuilt from `pods`, what the term's start listed.
pub async fn run(
    gw: Arc<Gateway>,
    pods: Store<CachedPod>,
    restored: tokio::sync::oneshot::Receiver<Listings>,
    shutdown: CancellationToken,
) {
    let listed_before = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = restored => match r { Ok(listings) => listings, Err(_) => return },
    };
    let period =
        (gw.config.gc_min_age() / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    // A pass that outlasts the period (a large listing, many confirming reads) is followed by
    // the next a period later, not by the missed ticks at once.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes = Passes {
        period,
        listed_before,
        ..Passes::default()
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            at = tick.tick() => {
                let swept = collect(&gw, &pods, &mut passes, at.into_std()).await;
                gw.metrics.orphans_collected.inc_by(swept.deleted as u64);
                if swept.failed > 0 {
                    gw.metrics.gc_failures.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Owner;

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
            leftover: false,
        }
    }

    fn listed(entries: &[(&str, &[&str])]) -> HashMap<String, HashSet<String>> {
        entries
            .iter()
            .map(|(t, ids)| (t.to_string(), ids.iter().map(|i| i.to_string()).collect()))
            .collect()
    }

    #[test]
    fn only_old_workloads_without_a_live_pod_are_orphans() {
        let all = [
            owned("live", 9999),
            owned("gone-old", 900),
            owned("gone-young", 30),
        ];
        let placed = HashMap::from([("live".to_string(), Some("aci".to_string()))]);
        let got: Vec<(&str, Garbage)> = garbage(
            "aci",
            &all,
            &placed,
            &listed(&[("aci", &["bg-live"])]),
            Duration::from_secs(600),
        )
        .into_iter()
        .map(|(w, why)| (w.id.as_str(), why))
        .collect();
        assert_eq!(got, vec![("bg-gone-old", Garbage::Orphan)]);
    }

    #[test]
    fn a_copy_of_a_pod_now_placed_on_another_target_that_listed_it_elsewhere_is_a_stray() {
        let all = [owned("moved", 900)];
        let placed = HashMap::from([("moved".to_string(), Some("fargate".to_string()))]);
        let got = garbage(
            "aci",
            &all,
            &placed,
            &listed(&[("aci", &["bg-moved"]), ("fargate", &["bg-moved-2"])]),
            Duration::from_secs(600),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].1,
            Garbage::Stray {
                placed_on: "fargate".into()
            }
        );
    }

    #[test]
    fn a_workload_its_pods_target_also_lists_or_could_not_list_is_kept() {
        let all = [owned("shared", 900)];
        let placed = HashMap::from([("shared".to_string(), Some("fargate-b".to_string()))]);
        // Two targets in one account list the same task.
        let shared = listed(&[("fargate-a", &["bg-shared"]), ("fargate-b", &["bg-shared"])]);
        assert!(garbage("fargate-a", &all, &placed, &shared, Duration::ZERO).is_empty());
        // The pod's target did not answer: nothing is known.
        let down = listed(&[("fargate-a", &["bg-shared"])]);
        assert!(garbage("fargate-a", &all, &placed, &down, Duration::ZERO).is_empty());
        // A pod not placed yet (annotations cleared for a re-decision) keeps it too.
        let undecided = HashMap::from([("shared".to_string(), None)]);
        assert!(garbage("fargate-a", &all, &undecided, &down, Duration::ZERO).is_empty());
    }

    #[test]
    fn a_workload_of_unknown_age_ages_from_its_first_sighting_and_is_forgotten_when_gone() {
        let mut sightings = Sightings::default();
        let t0 = Instant::now();
        let first = sightings.aged("fargate", vec![owned("a", 0), owned("b", 900)], t0);
        assert_eq!(
            first.iter().map(|w| w.age.as_secs()).collect::<Vec<_>>(),
            vec![0, 900]
        );
        let later = sightings.aged(
            "fargate",
            vec![owned("a", 0)],
            t0 + Duration::from_secs(700),
        );
        assert_eq!(later[0].age, Duration::from_secs(700));
        // "b" was not listed in between: seen again, it starts over (its own age still counts).
        let again = sightings.aged(
            "fargate",
            vec![owned("b", 0)],
            t0 + Duration::from_secs(800),
        );
        assert_eq!(again[0].age, Duration::ZERO);
    }

    #[test]
    fn a_target_never_listed_is_due_and_a_listed_one_waits_its_interval() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        assert!(schedule.due("fargate", t0));
        schedule.listed("fargate", t0, Duration::from_secs(1_000));
        assert!(!schedule.due("fargate", t0 + Duration::from_secs(999)));
        assert!(schedule.due("fargate", t0 + Duration::from_secs(1_000)));
        // Another target keeps its own pace.
        assert!(schedule.due("aci", t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_target_the_policy_no_longer_has_is_forgotten() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        schedule.listed("old", t0, Duration::from_secs(60));
        schedule.listed("kept", t0, Duration::from_secs(60));
        let gone = schedule.keep_only(&HashSet::from(["kept", "new"]));
        assert_eq!(gone, vec!["old".to_string()]);
        assert!(!schedule.due("kept", t0));
        assert!(schedule.due("old", t0), "forgotten: due as if never listed");
    }

    #[test]
    fn sightings_of_one_target_do_not_touch_another_targets() {
        let mut sightings = Sightings::default();
        let t0 = Instant::now();
        sightings.aged("aci", vec![owned("a", 0)], t0);
        sightings.aged("fargate", vec![], t0 + Duration::from_secs(10));
        let aci = sightings.aged("aci", vec![owned("a", 0)], t0 + Duration::from_secs(600));
        assert_eq!(aci[0].age, Duration::from_secs(600));
    }

    fn ids(owned: &[OwnedWorkload]) -> Vec<&str> {
        owned.iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn a_workload_carried_over_is_offered_again_while_its_target_is_not_listed() {
        let mut carried = Carried::default();
        carried.carry("fargate", owned("a", 900));
        assert_eq!(ids(&carried.take("aci", None)), Vec::<&str>::new());
        assert_eq!(ids(&carried.take("fargate", None)), vec!["bg-a"]);
        // Offered once: a pass that cannot collect it again carries it again.
        assert!(carried.take("fargate", None).is_empty());
    }

    #[test]
    fn a_fresh_listing_supersedes_what_was_carried_for_its_target() {
        let mut carried = Carried::default();
        carried.carry("fargate", owned("a", 900));
        let listing = vec![owned("b", 900)];
        assert_eq!(ids(&carried.take("fargate", Some(listing))), vec!["bg-b"]);
        assert!(carried.take("fargate", None).is_empty());
    }

    #[test]
    fn what_was_carried_for_a_target_the_policy_dropped_is_forgotten() {
        let mut carried = Carried::default();
        carried.carry("old", owned("a", 900));
        carried.carry("kept", owned("b", 900));
        carried.keep_only(&HashSet::from(["kept"]));
        assert!(carried.take("old", None).is_empty());
        assert_eq!(ids(&carried.take("kept", None)), vec!["bg-b"]);
    }
}
