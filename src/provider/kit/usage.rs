//! The usage cache adapters share: which workloads' CPU and memory are due for a read (at most
//! once per freshness period each, and never faster than a share of the target's read budget
//! allows), the last sample of each, and the cumulative CPU counter `/metrics/resource` needs,
//! integrated from the sampled rates.
//!
//! Pure but for its lock: every method takes `now`, so tests drive the clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::provider::contract::WorkloadUsage;

/// How long a workload's usage sample serves before it is read again, by default. Azure
/// Monitor aggregates per minute, so reading more often gives the same figure.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// The share of a target's read bucket usage reads may spend (status reads take half, see
/// [`READ_SHARE`](crate::provider::kit::cadence::READ_SHARE)).
pub const USAGE_READ_SHARE: f64 = 0.2;

/// An entry not asked for in this long is dropped (its workload is gone or moved).
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct Entry {
    /// When it was last read (whatever the read gave).
    read_at: Instant,
    /// When it was last asked for.
    asked_at: Instant,
    /// The last sample, with cumulative CPU filled in.
    usage: Option<WorkloadUsage>,
}

/// The usage cache of one target.
pub struct UsageCache {
    refresh: Duration,
    reads_per_second: Option<f64>,
    entries: Mutex<HashMap<String, Entry>>,
}

impl UsageCache {
    /// A cache serving each sample for `refresh`, reading at most
    /// [`USAGE_READ_SHARE`] of `reads_per_second` (`None`: no bound but `refresh`).
    pub fn new(refresh: Duration, reads_per_second: Option<f64>) -> UsageCache {
        UsageCache {
            refresh,
            reads_per_second: reads_per_second.map(|r| r * USAGE_READ_SHARE),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long a sample serves when `tracked` workloads are read: `refresh`, or longer when
    /// reading them all that often would spend more than the budget's share.
    pub fn interval(&self, tracked: usize) -> Duration {
        let by_budget = self
            .reads_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map_or(Duration::ZERO, |r| {
                Duration::try_from_secs_f64(tracked as f64 / r).unwrap_or(Duration::MAX)
            });
        self.refresh.max(by_budget)
    }

    /// The ids of `ids` to read now: never read, or read longer than [`interval`](Self::interval)
    /// ago. Marks them all asked for, and drops entries nobody asked for in a long while.
    pub fn due(&self, ids: &[String], now: Instant) -> Vec<String> {
        let mut entries = self.entries.lock().expect("usage cache lock");
        entries.retain(|_, e| now.saturating_duration_since(e.asked_at) < FORGET_AFTER);
        let interval = self.interval(entries.len().max(ids.len()));
        let mut due = Vec::new();
        for id in ids {
            match entries.get_mut(id) {
                Some(e) => {
                    e.asked_at = now;
                    if now.saturating_duration_since(e.read_at) >= interval {
                        due.push(id.clone());
                    }
                }
                None => due.push(id.clone()),
            }
        }
        due
    }

    /// Records a read of `id` at `now`: its new sample (`None`: the provider has none, e.g. too
    /// soon after the start), the cumulative CPU of each container carried on from the last
    /// sample. A failed read is recorded with [`read_failed`](Self::read_failed).
    pub fn store(&self, id: &str, sample: Option<WorkloadUsage>, now: Instant) {
        let mut entries = self.entries.lock().expect("usage cache lock");
        let previous = entries.get(id).and_then(|e| e.usage.clone());
        let usage = match (sample, previous) {
            (Some(new), previous) => Some(accumulate(previous.as_ref(), new)),
            (None, previous) => previous,
        };
        entries.insert(
            id.to_string(),
            Entry {
                read_at: now,
                asked_at: now,
                usage,
            },
        );
    }

    /// Records that reading `id` failed at `now`: the last sample keeps serving, and the next
    /// read waits a whole interval, so a failing cloud is not asked more often.
    pub fn read_failed(&self, id: &str, now: Instant) {
        let mut entries = self.entries.lock().expect("usage cache lock");
        let entry = entries.entry(id.to_string()).or_insert(Entry {
            read_at: now,
            asked_at: now,
            usage: None,
        });
        entry.read_at = now;
    }

    /// The last sample of each of `ids` that has one.
    pub fn known(&self, ids: &[String]) -> BTreeMap<String, WorkloadUsage> {
        let entries = self.entries.lock().expect("usage cache lock");
        ids.iter()
            .filter_map(|id| {
                let usage = entries.get(id)?.usage.clone()?;
                Some((id.clone(), usage))
            })
            .collect()
    }
}

/// `new` with each container's cumulative CPU (core-seconds): the last sample's plus the new
/// rate over the time between the two; a container seen first starts at its rate over the
/// sample's window. A sample no newer than the last one keeps the last one's counter.
pub fn accumulate(previous: Option<&WorkloadUsage>, mut new: WorkloadUsage) -> WorkloadUsage {
    let elapsed = previous
        .map(|p| (new.sampled_at - p.sampled_at).to_std().unwrap_or_default())
        .unwrap_or_default();
    for c in &mut new.containers {
        let before = previous.and_then(|p| p.containers.iter().find(|o| o.name == c.name));
        c.cpu_core_seconds = match before {
            Some(b) if elapsed.is_zero() => b.cpu_core_seconds,
            Some(b) => b.cpu_core_seconds + c.cpu_cores * elapsed.as_secs_f64(),
            None => c.cpu_cores * new.window.as_secs_f64(),
        };
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::contract::ContainerUsage;
    use chrono::{DateTime, Utc};

    fn sample(at_seconds: i64, cpu_cores: f64) -> WorkloadUsage {
        WorkloadUsage {
            sampled_at: DateTime::<Utc>::from_timestamp(1_800_000_000 + at_seconds, 0).unwrap(),
            window: Duration::from_secs(60),
            containers: vec![ContainerUsage {
                name: "app".into(),
                cpu_cores,
                cpu_core_seconds: 0.0,
                memory_bytes: 1 << 20,
            }],
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_workload_is_read_once_per_refresh_and_its_sample_serves_meanwhile() {
        let cache = UsageCache::new(Duration::from_secs(60), None);
        let t0 = Instant::now();
        assert_eq!(cache.due(&ids(&["bg-1"]), t0), ids(&["bg-1"]));
        cache.store("bg-1", Some(sample(0, 0.25)), t0);
        assert!(
            cache
                .due(&ids(&["bg-1"]), t0 + Duration::from_secs(59))
                .is_empty()
        );
        assert_eq!(
            cache.known(&ids(&["bg-1"]))["bg-1"].containers[0].cpu_cores,
            0.25
        );
        assert_eq!(
            cache.due(&ids(&["bg-1"]), t0 + Duration::from_secs(60)),
            ids(&["bg-1"])
        );
    }

    #[test]
    fn many_workloads_are_read_no_faster_than_the_budget_share_allows() {
        // 25 reads/s, a fifth of it: 5 reads/s; 600 workloads: each every 120 s.
        let cache = UsageCache::new(Duration::from_secs(60), Some(25.0));
        assert_eq!(cache.interval(600), Duration::from_secs(120));
        assert_eq!(cache.interval(10), Duration::from_secs(60));
    }

    #[test]
    fn a_failed_read_keeps_the_last_sample_and_waits_a_whole_interval() {
        let cache = UsageCache::new(Duration::from_secs(60), None);
        let t0 = Instant::now();
        cache.store("bg-1", Some(sample(0, 0.5)), t0);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(cache.due(&ids(&["bg-1"]), t1), ids(&["bg-1"]));
        cache.read_failed("bg-1", t1);
        assert!(
            cache
                .due(&ids(&["bg-1"]), t1 + Duration::from_secs(30))
                .is_empty()
        );
        assert_eq!(
            cache.known(&ids(&["bg-1"]))["bg-1"].containers[0].cpu_cores,
            0.5
        );
    }

    #[test]
    fn no_sample_means_no_usage_not_zero() {
        let cache = UsageCache::new(Duration::from_secs(60), None);
        cache.store("bg-1", None, Instant::now());
        assert!(cache.known(&ids(&["bg-1"])).is_empty());
    }

    #[test]
    fn the_cpu_counter_integrates_each_new_rate_over_the_time_since_the_last_sample() {
        let first = accumulate(None, sample(0, 0.5));
        assert_eq!(first.containers[0].cpu_core_seconds, 30.0);
        let second = accumulate(Some(&first), sample(20, 1.0));
        assert_eq!(second.containers[0].cpu_core_seconds, 50.0);
        let same = accumulate(Some(&second), sample(20, 2.0));
        assert_eq!(same.containers[0].cpu_core_seconds, 50.0);
    }

    #[test]
    fn workloads_nobody_asks_for_are_forgotten() {
        let cache = UsageCache::new(Duration::from_secs(60), None);
        let t0 = Instant::now();
        cache.store("bg-old", Some(sample(0, 0.5)), t0);
        cache.due(&ids(&["bg-new"]), t0 + FORGET_AFTER);
        assert!(cache.known(&ids(&["bg-old"])).is_empty());
    }
}
