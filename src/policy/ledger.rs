//! The quota ledger: what every target and budget has reserved right now, per pod.
//!
//! Decisions read it; [`Ledger::place`] decides and reserves in one `&mut` step so that
//! concurrent pods never over-commit a quota or budget. It is rebuilt from pod annotations when
//! the gateway starts ([`Ledger::restore`]) and re-indexed when the policy changes
//! ([`Ledger::rebind`]); reservations are kept by target and budget NAME so they survive reloads.

use std::collections::{BTreeMap, HashMap};

use crate::policy::checked::{Policy, TargetId};
use crate::policy::engine::{self, Decision, Exclusion, Outcome, Placement};
use crate::policy::pod::PodView;
use crate::policy::sizing::Size;

/// Amounts in use, in integer units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Millicores.
    pub milli_cpu: u64,
    /// MiB.
    pub memory_mib: u64,
    /// Pods.
    pub pods: u64,
    /// Micro-USD per hour.
    pub hourly_micros: u64,
}

impl Usage {
    /// The usage of one pod of `size` costing `hourly_micros`.
    pub fn of_pod(size: Size, hourly_micros: u64) -> Usage {
        Usage {
            milli_cpu: size.milli_cpu,
            memory_mib: size.memory_mib,
            pods: 1,
            hourly_micros,
        }
    }
    /// Saturating: a pod too large to count (see `policy::pod`) fills a target, never wraps it.
    fn add(&mut self, o: Usage) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory_mib = self.memory_mib.saturating_add(o.memory_mib);
        self.pods = self.pods.saturating_add(o.pods);
        self.hourly_micros = self.hourly_micros.saturating_add(o.hourly_micros);
    }
    fn sub(&mut self, o: Usage) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory_mib = self.memory_mib.saturating_sub(o.memory_mib);
        self.pods = self.pods.saturating_sub(o.pods);
        self.hourly_micros = self.hourly_micros.saturating_sub(o.hourly_micros);
    }
}

/// One pod's reservation, by name so it survives policy reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Target name.
    pub target: String,
    /// Names of the budgets the pod counts against.
    pub budgets: Vec<String>,
    /// What it holds.
    pub usage: Usage,
}

/// Why a reservation was refused. Not retryable as is: decide again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The ledger is bound to another policy version; call [`Ledger::rebind`] first.
    #[error("ledger is bound to policy {ledger}, decision made with {policy}")]
    StalePolicy {
        /// Hash the ledger is bound to.
        ledger: String,
        /// Hash of the policy passed in.
        policy: String,
    },
    /// The placement no longer fits (another pod took the room).
    #[error("placement no longer fits: {0}")]
    NoLongerFits(String),
}

/// Usage per target and budget of one policy, plus every pod's reservation.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    policy_hash: String,
    targets: Vec<Usage>,
    budgets: Vec<Usage>,
    target_index: HashMap<String, usize>,
    budget_index: HashMap<String, usize>,
    reservations: BTreeMap<String, Reservation>,
}

impl Ledger {
    /// An empty ledger bound to `policy`.
    pub fn new(policy: &Policy) -> Ledger {
        let mut l = Ledger::default();
        l.rebind(policy);
        l
    }

    /// Re-indexes every reservation for a new policy version. Reservations on targets or budgets
    /// the new policy no longer has are kept (the workloads still run) but count nowhere.
    pub fn rebind(&mut self, policy: &Policy) {
        self.policy_hash = policy.hash.clone();
        self.targets = vec![Usage::default(); policy.targets.len()];
        self.budgets = vec![Usage::default(); policy.budgets.len()];
        self.target_index = policy
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.id.index()))
            .collect();
        self.budget_index = policy
            .budgets
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.clone(), i))
            .collect();
        for r in self.reservations.values() {
            if let Some(t) = policy.target_by_name(&r.target) {
                self.targets[t.id.index()].add(r.usage);
            }
            for b in &r.budgets {
                if let Some(i) = policy.budgets.iter().position(|x| x.name == *b) {
                    self.budgets[i].add(r.usage);
                }
            }
        }
    }

    /// The policy hash this ledger is indexed for.
    pub fn policy_hash(&self) -> &str {
        &self.policy_hash
    }

    /// What a target holds now.
    pub fn target_usage(&self, id: TargetId) -> Usage {
        self.targets.get(id.index()).copied().unwrap_or_default()
    }

    /// What a budget (by index in the policy) holds now.
    pub fn budget_usage(&self, index: usize) -> Usage {
        self.budgets.get(index).copied().unwrap_or_default()
    }

    /// The reservation of a pod, if any.
    pub fn reservation(&self, pod_uid: &str) -> Option<&Reservation> {
        self.reservations.get(pod_uid)
    }

    /// Every reservation, by pod UID.
    pub fn reservations(&self) -> impl Iterator<Item = (&String, &Reservation)> {
        self.reservations.iter()
    }

    /// Decides for `pod` and, when placed, reserves in the same step. A pod that already holds a
    /// reservation is re-decided from scratch (its old reservation is released first).
    pub fn place(&mut self, policy: &Policy, pod: &PodView, excluded: &[Exclusion]) -> Decision {
        if self.policy_hash != policy.hash {
            self.rebind(policy);
        }
        // A pod placed again (fallback after a provider rejection) gives its old room back first.
        self.release(&pod.uid);
        let decision = engine::decide(policy, pod, self, excluded);
        if let Outcome::Placed(p) = &decision.outcome {
            // decide() checked against this very ledger, so this cannot fail; keep the check anyway.
            if let Err(e) = self.reserve(policy, &pod.uid, p) {
                panic!(
                    "ledger invariant broken: decide() chose a placement reserve() refuses: {e}"
                );
            }
        }
        decision
    }

    /// Reserves `placement` for `pod_uid`, refusing anything that would exceed a quota or budget.
    /// Reserving again for the same pod replaces its previous reservation.
    pub fn reserve(
        &mut self,
        policy: &Policy,
        pod_uid: &str,
        placement: &Placement,
    ) -> Result<(), LedgerError> {
        if self.policy_hash != policy.hash {
            return Err(LedgerError::StalePolicy {
                ledger: self.policy_hash.clone(),
                policy: policy.hash.clone(),
            });
        }
        let previous = self.release(pod_uid);
        let usage = Usage::of_pod(placement.size, placement.hourly_micros);
        let target = policy.target(placement.target);
        let fits = |used: Usage, lim: [Option<u64>; 4]| {
            let mut after = used;
            after.add(usage);
            let after = [
                after.milli_cpu,
                after.memory_mib,
                after.pods,
                after.hourly_micros,
            ];
            after
                .iter()
                .zip(lim)
                .all(|(a, l)| l.is_none_or(|l| *a <= l))
        };
        let q = &target.quota;
        let mut problem = None;
        if !fits(
            self.targets[target.id.index()],
            [q.milli_cpu, q.memory_mib, q.pods, q.hourly_micros],
        ) {
            problem = Some(format!("target {} quota", target.name));
        }
        for (i, b) in policy.budgets.iter().enumerate() {
            if placement.budgets.contains(i)
                && !fits(
                    self.budgets[i],
                    [b.max_milli_cpu, b.max_memory_mib, None, b.max_hourly_micros],
                )
            {
                problem.get_or_insert(format!("budget {}", b.name));
            }
        }
        if let Some(problem) = problem {
            if let Some(prev) = previous {
                self.insert(pod_uid, prev);
            }
            return Err(LedgerError::NoLongerFits(problem));
        }
        let budgets = policy
            .budgets
            .iter()
            .enumerate()
            .filter(|(i, _)| placement.budgets.contains(*i))
            .map(|(_, b)| b.name.clone())
            .collect();
        self.insert(
            pod_uid,
            Reservation {
                target: target.name.clone(),
                budgets,
                usage,
            },
        );
        Ok(())
    }

    /// Records a reservation that already exists in the world (rebuilding from pod annotations at
    /// start), even when it exceeds today's quota: reality wins, new decisions see less room.
    pub fn restore(&mut self, policy: &Policy, pod_uid: &str, reservation: Reservation) {
        if self.policy_hash != policy.hash {
            self.rebind(policy);
        }
        self.release(pod_uid);
        self.insert(pod_uid, reservation);
    }

    fn insert(&mut self, pod_uid: &str, r: Reservation) {
        if let Some(&i) = self.target_index.get(&r.target) {
            self.targets[i].add(r.usage);
        }
        for name in &r.budgets {
            if let Some(&i) = self.budget_index.get(name) {
                self.budgets[i].add(r.usage);
            }
        }
        self.reservations.insert(pod_uid.to_string(), r);
    }

    /// Releases a pod's reservation (deleted, failed, or re-decided); returns what it held.
    pub fn release(&mut self, pod_uid: &str) -> Option<Reservation> {
        let r = self.reservations.remove(pod_uid)?;
        if let Some(&i) = self.target_index.get(&r.target) {
            self.targets[i].sub(r.usage);
        }
        for name in &r.budgets {
            if let Some(&i) = self.budget_index.get(name) {
                self.budgets[i].sub(r.usage);
            }
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::load_files;
    use crate::policy::pod::Resources;

    const POLICY: &str = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: local, provider: cluster, region: local, latencyMs: 1}
";

    #[test]
    fn pods_too_large_to_count_fill_a_target_without_quota_rather_than_wrap_its_usage() {
        let p = load_files(&[("p.yaml".into(), POLICY.into())]).unwrap();
        let mut ledger = Ledger::new(&p);
        for uid in ["a", "b"] {
            let pod = PodView {
                namespace: "web".into(),
                name: uid.into(),
                uid: uid.into(),
                resources: Resources {
                    milli_cpu: u64::MAX,
                    memory_mib: u64::MAX,
                    gpus: 0,
                },
                ..Default::default()
            };
            assert!(ledger.place(&p, &pod, &[]).placement().is_some());
        }
        let local = p.target_by_name("local").unwrap().id;
        assert_eq!(ledger.target_usage(local).milli_cpu, u64::MAX);
    }
}
