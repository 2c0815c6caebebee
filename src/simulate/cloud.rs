//! The simulated clouds: request buckets, regional capacity and cold starts per target.
//!
//! Every target gets the buckets [`crate::provider::limits`] gives it; targets with the same
//! bucket key share one bucket (all ACI targets share ARM's, ACI targets in one region share
//! ACI's create limits). Capacity is counted per provider, region and spot/regular: two ACI
//! targets in `eastus` share its 100 container groups whatever their policy quotas say.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::model::{OperationClass, ProviderKind};
use crate::policy::sizing::Size;
use crate::policy::{Policy, TargetId};
use crate::provider::limits::{self, Capacity};
use crate::simulate::bucket::{self, VirtualBucket};
use crate::simulate::workload::{Micros, Providers, Range};

/// Why a provider refused a create, as counted in reports.
pub(crate) const REFUSED_GROUPS: &str = "capacity: container groups";
/// Why a provider refused a create, as counted in reports.
pub(crate) const REFUSED_CORES: &str = "capacity: cores";
/// Why a provider refused a create, as counted in reports.
pub(crate) const REFUSED_OUTAGE: &str = "outage";

/// When a booked request goes, and which bucket made it wait (`None`: it did not wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Booking {
    /// When the request goes.
    pub at: Micros,
    /// Index of the bucket that held it longest.
    pub held_by: Option<usize>,
}

struct TargetCloud {
    create: Vec<usize>,
    delete: Vec<usize>,
    register: Vec<usize>,
    pool: Option<usize>,
    cold_start: Range,
}

struct Pool {
    region: String,
    capacity: Capacity,
    pods: u64,
    milli_cpu: u64,
    targets: Vec<TargetId>,
}

/// Every simulated provider the policy's targets live on.
pub(crate) struct Cloud {
    buckets: Vec<VirtualBucket>,
    bucket_names: Vec<String>,
    targets: Vec<TargetCloud>,
    pools: Vec<Pool>,
    /// (group, target) pairs whose Fargate task definition is registered.
    registered: BTreeSet<(u32, u16)>,
}

impl Cloud {
    /// Builds buckets, pools and cold starts for `policy`'s targets.
    pub fn new(policy: &Policy, providers: &Providers) -> Cloud {
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        let mut buckets = Vec::new();
        let mut bucket_names = Vec::new();
        let mut pool_index: BTreeMap<(ProviderKind, String, bool), usize> = BTreeMap::new();
        let mut pools: Vec<Pool> = Vec::new();
        let mut targets = Vec::with_capacity(policy.targets.len());
        for t in &policy.targets {
            let mut indices = |ops: &[OperationClass]| -> Vec<usize> {
                let mut out = Vec::new();
                for op in ops {
                    for b in limits::effective(t, *op) {
                        let i = *keys.entry(b.key.clone()).or_insert_with(|| {
                            buckets.push(VirtualBucket::new(b.burst, b.per_second));
                            bucket_names.push(b.name.clone());
                            buckets.len() - 1
                        });
                        out.push(i);
                    }
                }
                out
            };
            // A Fargate pod is one RunTask call that launches one task: both buckets count it.
            let create = indices(&[OperationClass::Create, OperationClass::Launch]);
            let delete = indices(&[OperationClass::Delete]);
            let register = if t.provider == ProviderKind::Fargate {
                indices(&[OperationClass::Register])
            } else {
                Vec::new()
            };
            let settings = providers.get(t.provider);
            let capacity = settings.capacity;
            let pool = (capacity != Capacity::default()).then(|| {
                let key = (t.provider, t.region.clone(), t.spot);
                let i = *pool_index.entry(key).or_insert_with(|| {
                    pools.push(Pool {
                        region: t.region.clone(),
                        capacity,
                        pods: 0,
                        milli_cpu: 0,
                        targets: Vec::new(),
                    });
                    pools.len() - 1
                });
                pools[i].targets.push(t.id);
                i
            });
            targets.push(TargetCloud {
                create,
                delete,
                register,
                pool,
                cold_start: settings.cold_start,
            });
        }
        Cloud {
            buckets,
            bucket_names,
            targets,
            pools,
            registered: BTreeSet::new(),
        }
    }

    /// The display name of a bucket.
    pub fn bucket_name(&self, i: usize) -> &str {
        &self.bucket_names[i]
    }

    /// Why the provider refuses a create of `size` on `target` right now, as (report key,
    /// message), or `None` when it has room.
    pub fn refusal(&self, target: TargetId, size: Size) -> Option<(&'static str, String)> {
        let pool = &self.pools[self.targets[target.index()].pool?];
        if let Some(limit) = pool.capacity.pods
            && pool.pods + 1 > limit
        {
            return Some((
                REFUSED_GROUPS,
                format!(
                    "container group quota exceeded in region {} ({limit} in use)",
                    pool.region
                ),
            ));
        }
        if let Some(limit) = pool.capacity.milli_cpu
            && pool.milli_cpu + size.milli_cpu > limit
        {
            return Some((
                REFUSED_CORES,
                format!(
                    "core quota exceeded in region {} ({} of {} cores in use, pod needs {})",
                    pool.region,
                    pool.milli_cpu as f64 / 1000.0,
                    limit as f64 / 1000.0,
                    size.milli_cpu as f64 / 1000.0
                ),
            ));
        }
        None
    }

    /// Counts a workload of `size` in its target's regional capacity.
    pub fn hold(&mut self, target: TargetId, size: Size) {
        if let Some(p) = self.targets[target.index()].pool {
            self.pools[p].pods += 1;
            self.pools[p].milli_cpu += size.milli_cpu;
        }
    }

    /// Gives back what [`Self::hold`] counted; returns the targets sharing that capacity.
    pub fn free(&mut self, target: TargetId, size: Size) -> &[TargetId] {
        match self.targets[target.index()].pool {
            Some(p) => {
                let pool = &mut self.pools[p];
                pool.pods = pool.pods.saturating_sub(1);
                pool.milli_cpu = pool.milli_cpu.saturating_sub(size.milli_cpu);
                &pool.targets
            }
            None => &[],
        }
    }

    /// Takes the tokens of a create of a pod of `group` on `target` at `now` if every bucket it
    /// passes has one (a Fargate task definition registers first, once per group and target);
    /// else says when they all might, and which bucket is furthest out.
    ///
    /// Tokens are only ever taken at the current virtual time: a create waiting for one bucket
    /// (ACI's hourly limit) must not hold a token of a bucket it shares with other targets (ARM
    /// writes) meanwhile, which booking ahead would do.
    pub fn try_create(&mut self, target: TargetId, group: u32, now: Micros) -> Result<(), Booking> {
        let t = &self.targets[target.index()];
        let register = !t.register.is_empty() && !self.registered.contains(&(group, target.0));
        let indices = t.create.iter().chain(if register {
            t.register.iter()
        } else {
            [].iter()
        });
        let mut wait = Booking {
            at: now,
            held_by: None,
        };
        for &i in indices.clone() {
            let e = self.buckets[i].earliest(now);
            if e > wait.at {
                wait = Booking {
                    at: e,
                    held_by: Some(i),
                };
            }
        }
        if wait.at > now {
            return Err(wait);
        }
        for &i in indices {
            self.buckets[i].take(now);
        }
        if register {
            self.registered.insert((group, target.0));
        }
        Ok(())
    }

    /// Books the delete of a workload on `target`, asked at `now`. Delete buckets are never shared
    /// in part (one provider bucket, or a target's own overrides) and deletes are asked in time
    /// order, so booking ahead is exact here.
    pub fn book_delete(&mut self, target: TargetId, now: Micros) -> Booking {
        let (at, held_by) =
            bucket::book(&mut self.buckets, &self.targets[target.index()].delete, now);
        Booking { at, held_by }
    }

    /// Cold starts on `target`.
    pub fn cold_start(&self, target: TargetId) -> Range {
        self.targets[target.index()].cold_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;
    use crate::simulate::workload::SECOND;

    fn policy() -> Policy {
        let text = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: aci-a, provider: aci, region: eastus}
    - {name: aci-b, provider: aci, region: eastus}
    - {name: aci-w, provider: aci, region: westus}
    - {name: fargate, provider: fargate, region: us-east-1}
";
        load_files(&[("p.yaml".into(), text.into())]).unwrap()
    }

    #[test]
    fn aci_targets_in_one_region_share_its_container_group_limit() {
        let p = policy();
        let mut cloud = Cloud::new(&p, &Providers::default());
        let small = Size {
            milli_cpu: 100,
            memory_mib: 128,
        };
        for i in 0..100 {
            let t = TargetId(i % 2);
            assert_eq!(cloud.refusal(t, small), None);
            cloud.hold(t, small);
        }
        assert_eq!(
            cloud.refusal(TargetId(1), small).map(|r| r.0),
            Some(REFUSED_GROUPS)
        );
        assert_eq!(
            cloud.refusal(TargetId(2), small),
            None,
            "westus has its own limit"
        );
        assert_eq!(cloud.free(TargetId(0), small), &[TargetId(0), TargetId(1)]);
        assert_eq!(cloud.refusal(TargetId(1), small), None);
    }

    #[test]
    fn aci_refuses_a_create_beyond_its_regional_cores() {
        let p = policy();
        let mut cloud = Cloud::new(&p, &Providers::default());
        let big = Size {
            milli_cpu: 30_000,
            memory_mib: 1024,
        };
        for _ in 0..3 {
            cloud.hold(TargetId(0), big);
        }
        let (key, why) = cloud.refusal(TargetId(0), big).unwrap();
        assert_eq!(key, REFUSED_CORES);
        assert_eq!(
            why,
            "core quota exceeded in region eastus (90 of 100 cores in use, pod needs 30)"
        );
    }

    #[test]
    fn aci_creates_in_two_regions_wait_in_separate_create_limits() {
        let p = policy();
        let mut cloud = Cloud::new(&p, &Providers::default());
        for _ in 0..100 {
            assert_eq!(cloud.try_create(TargetId(0), 0, 0), Ok(()));
        }
        let east = cloud.try_create(TargetId(1), 0, 0).unwrap_err();
        assert_eq!(east.at, 3 * SECOND);
        assert_eq!(
            cloud.bucket_name(east.held_by.unwrap()),
            "ACI creates per 5 minutes"
        );
        assert_eq!(cloud.try_create(TargetId(2), 0, 0), Ok(()));
        assert_eq!(cloud.try_create(TargetId(1), 0, 3 * SECOND), Ok(()));
    }

    #[test]
    fn a_create_waiting_for_its_region_holds_no_token_of_the_shared_arm_bucket() {
        let p = policy();
        let mut cloud = Cloud::new(&p, &Providers::default());
        // eastus exhausts its hourly create limit (300) over 15 minutes; westus still creates at once.
        let mut now = 0;
        let mut created = 0;
        while created < 300 {
            match cloud.try_create(TargetId(0), 0, now) {
                Ok(()) => created += 1,
                Err(wait) => now = wait.at,
            }
        }
        assert!(cloud.try_create(TargetId(0), 0, now).is_err());
        assert_eq!(cloud.try_create(TargetId(2), 0, now), Ok(()));
    }

    #[test]
    fn a_fargate_group_registers_its_task_definition_once() {
        let p = policy();
        let mut cloud = Cloud::new(&p, &Providers::default());
        // 20 registrations go at once, the 21st waits a second; later pods of a group do not register.
        for g in 0..20 {
            assert_eq!(cloud.try_create(TargetId(3), g, 0), Ok(()));
        }
        assert_eq!(cloud.try_create(TargetId(3), 20, 0).unwrap_err().at, SECOND);
        assert_eq!(cloud.try_create(TargetId(3), 0, 0), Ok(()));
    }
}
