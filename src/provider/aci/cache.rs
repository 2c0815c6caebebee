//! The status cache of one target, which keeps reads per pod low: the last GET of each group,
//! the last list of the resource group, and the groups created a moment ago; it splits a status
//! batch into what it already knows and what needs a GET (the rule is
//! [`needs_get`](crate::provider::aci::status::needs_get)).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::provider::aci::status::{Cadence, GroupView, Known, needs_get, workload_status};
use crate::provider::contract::{WorkloadPhase, WorkloadStatus};

/// How long a group the adapter created is looked up by GET when the list does not show it yet.
const CREATED_GRACE: Duration = Duration::from_secs(60);

/// What the cache remembers of one group.
struct Entry {
    status: WorkloadStatus,
    fingerprint: String,
    fetched: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    last_list: Option<(Instant, HashMap<String, GroupView>)>,
    created: HashMap<String, Instant>,
}

/// A status batch split by [`StatusCache::plan`].
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Statuses known without another call.
    pub(crate) known: BTreeMap<String, WorkloadStatus>,
    /// Groups to GET, with their listed fingerprint (empty when the list did not show them).
    pub(crate) to_get: Vec<(String, String)>,
}

/// The cache, re-reading groups at its [`Cadence`].
pub(crate) struct StatusCache {
    cadence: Cadence,
    inner: Mutex<Inner>,
}

impl StatusCache {
    /// An empty cache re-reading at `cadence`.
    pub(crate) fn new(cadence: Cadence) -> StatusCache {
        StatusCache {
            cadence,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("aci status cache lock")
    }

    /// The last list, when it is fresh and every id is in it and settled (not Pending).
    pub(crate) fn reusable_list(&self, ids: &[String]) -> Option<HashMap<String, GroupView>> {
        let cache = self.lock();
        let (at, groups) = cache.last_list.as_ref()?;
        let settled = |id: &String| {
            groups.contains_key(id)
                && cache
                    .entries
                    .get(id)
                    .is_some_and(|e| e.status.phase != WorkloadPhase::Pending)
        };
        (at.elapsed() < self.cadence.list_reuse && ids.iter().all(settled)).then(|| groups.clone())
    }

    /// Keeps `groups` (by name) as the last list, listed now.
    pub(crate) fn store_list(&self, groups: HashMap<String, GroupView>) {
        self.lock().last_list = Some((Instant::now(), groups));
    }

    /// Notes that the adapter created `id` now (the list may not show it for a while).
    pub(crate) fn created(&self, id: &str) {
        self.lock().created.insert(id.to_string(), Instant::now());
    }

    /// Forgets everything about `id` (deleted).
    pub(crate) fn forget(&self, id: &str) {
        let mut cache = self.lock();
        cache.entries.remove(id);
        cache.created.remove(id);
        if let Some((_, groups)) = cache.last_list.as_mut() {
            groups.remove(id);
        }
    }

    /// Remembers `status` of `id` as read now, with the group's listed `fingerprint`.
    pub(crate) fn remember(&self, id: &str, status: &WorkloadStatus, fingerprint: String) {
        self.lock().entries.insert(
            id.to_string(),
            Entry {
                status: status.clone(),
                fingerprint,
                fetched: Instant::now(),
            },
        );
    }

    /// Splits `ids` by what `listed` shows: a listed group with instance views, or one that needs
    /// no GET and is known, has its status; a listed one that needs a GET, or one just created
    /// and not listed yet, is to be fetched; any other unlisted one is gone and forgotten.
    pub(crate) fn plan(&self, ids: &[String], listed: &HashMap<String, GroupView>) -> Plan {
        let mut plan = Plan::default();
        let mut cache = self.lock();
        cache.created.retain(|_, at| at.elapsed() < CREATED_GRACE);
        let running = cache
            .entries
            .values()
            .filter(|e| e.status.phase == WorkloadPhase::Running)
            .count();
        let interval = self.cadence.running_interval(running);
        for id in ids {
            match listed.get(id) {
                None if cache.created.contains_key(id) => {
                    plan.to_get.push((id.clone(), String::new()))
                }
                None => {
                    cache.entries.remove(id);
                }
                Some(group) => {
                    let known = cache.entries.get(id).map(|e| Known {
                        phase: e.status.phase.clone(),
                        fingerprint: e.fingerprint.clone(),
                        age: e.fetched.elapsed(),
                    });
                    if group.has_instance_view() {
                        plan.known.insert(id.clone(), workload_status(id, group));
                    } else if needs_get(known.as_ref(), group, &self.cadence, interval) {
                        plan.to_get.push((id.clone(), group.fingerprint()));
                    } else if let Some(e) = cache.entries.get(id) {
                        plan.known.insert(id.clone(), e.status.clone());
                    }
                }
            }
        }
        plan
    }

    /// Records the GET of `id` that [`plan`](Self::plan) asked for (`None`: the group is gone)
    /// and returns its status; `fingerprint` is the listed one, empty when it was not listed.
    pub(crate) fn fetched(
        &self,
        id: &str,
        fingerprint: String,
        group: Option<&GroupView>,
    ) -> Option<WorkloadStatus> {
        let Some(group) = group else {
            self.lock().entries.remove(id);
            return None;
        };
        let status = workload_status(id, group);
        let fingerprint = if fingerprint.is_empty() {
            group.fingerprint()
        } else {
            fingerprint
        };
        self.remember(id, &status, fingerprint);
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, state: &str) -> (String, GroupView) {
        let mut g = GroupView {
            name: Some(name.into()),
            ..Default::default()
        };
        g.properties.provisioning_state = Some(state.into());
        (name.into(), g)
    }

    #[test]
    fn a_group_created_a_moment_ago_is_fetched_though_the_list_does_not_show_it_yet() {
        let cache = StatusCache::new(Cadence::default());
        let ids = vec!["bg-new".to_string(), "bg-gone".to_string()];
        cache.created("bg-new");
        let plan = cache.plan(&ids, &HashMap::new());
        assert_eq!(plan.to_get, vec![("bg-new".to_string(), String::new())]);
        assert!(plan.known.is_empty());
    }

    #[test]
    fn a_settled_group_is_served_from_the_cache_until_its_listed_state_changes() {
        let cache = StatusCache::new(Cadence::default());
        let ids = vec!["bg-1".to_string()];
        let (name, group) = listed("bg-1", "Succeeded");
        let mut groups = HashMap::from([(name, group.clone())]);
        assert_eq!(cache.plan(&ids, &groups).to_get.len(), 1);
        let mut running = workload_status("bg-1", &group);
        running.phase = WorkloadPhase::Running;
        cache.remember("bg-1", &running, group.fingerprint());
        cache.store_list(groups.clone());
        assert!(cache.reusable_list(&ids).is_some());
        let plan = cache.plan(&ids, &groups);
        assert!(plan.to_get.is_empty());
        assert_eq!(plan.known["bg-1"].phase, WorkloadPhase::Running);
        groups.insert("bg-1".into(), listed("bg-1", "Failed").1);
        assert_eq!(cache.plan(&ids, &groups).to_get.len(), 1);
    }
}
