//! The checked policy the engine runs on: targets indexed by id, rules with precomputed verdicts.
//!
//! Only [`crate::policy::load`] builds a [`Policy`]; once built it is immutable and cheap to share
//! (`Arc<Policy>`). Money is held as integer micro-USD per hour and sizes as millicores / MiB so
//! that accounting never drifts.

use std::collections::BTreeMap;

use crate::policy::expression::Expression;
use crate::policy::model::{OnNoTarget, ProviderKind, RateLimitSpec};
use crate::policy::pod::PodView;
use crate::policy::sizing::Size;

/// Index of a target in [`Policy::targets`]; valid only for the policy that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(pub u16);

impl TargetId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Most targets one policy may define (the engine keeps target sets in a 128-bit mask).
pub const MAX_TARGETS: usize = 128;

/// A set of targets of one policy, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TargetSet(u128);

impl TargetSet {
    /// The empty set.
    pub const EMPTY: TargetSet = TargetSet(0);
    /// Adds a target.
    pub fn insert(&mut self, id: TargetId) {
        self.0 |= 1u128 << id.0;
    }
    /// Membership.
    pub fn contains(&self, id: TargetId) -> bool {
        self.0 & (1u128 << id.0) != 0
    }
    /// True when no target is in the set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// Converts USD per hour into integer micro-USD per hour, rounding up.
pub fn usd_to_micros(usd: f64) -> u64 {
    (usd * 1e6 - 1e-6).ceil().max(0.0) as u64
}

/// Converts micro-USD back to USD (for display and reports).
pub fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Where a policy object was written, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

/// Prices of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// USD per vCPU-hour.
    pub vcpu_hour: f64,
    /// USD per GiB-hour.
    pub gib_hour: f64,
    /// Minimum billed seconds per pod.
    pub minimum_seconds: u32,
}

impl Pricing {
    /// Hourly cost of a pod of `size`, micro-USD.
    pub fn hourly_micros(&self, size: &Size) -> u64 {
        usd_to_micros(size.vcpu() * self.vcpu_hour + size.memory_gib() * self.gib_hour)
    }
}

/// Capacity; `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quota {
    /// Millicores.
    pub milli_cpu: Option<u64>,
    /// MiB.
    pub memory_mib: Option<u64>,
    /// Pods.
    pub pods: Option<u64>,
    /// Micro-USD per hour.
    pub hourly_micros: Option<u64>,
}

/// A checked target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its id in this policy.
    pub id: TargetId,
    /// Unique name.
    pub name: String,
    /// Provider kind.
    pub provider: ProviderKind,
    /// Region.
    pub region: String,
    /// Spot capacity?
    pub spot: bool,
    /// Prices.
    pub pricing: Pricing,
    /// Capacity.
    pub quota: Quota,
    /// Latency, ms.
    pub latency_ms: u32,
    /// Largest pod, millicores (after rounding).
    pub max_pod_milli_cpu: Option<u64>,
    /// Largest pod, MiB (after rounding).
    pub max_pod_memory_mib: Option<u64>,
    /// GPU SKUs offered.
    pub gpus: Vec<String>,
    /// Rate-limit overrides for the adapter.
    pub rate_limits: Vec<RateLimitSpec>,
    /// Where the adapter sends the pods (subscription, cluster, namespace...).
    pub connection: Connection,
    /// Where it was written.
    pub source: Source,
}

/// A target's provider-specific settings, as written in its `aci`, `fargate` or `cluster` block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Connection {
    /// No block written (the simulator needs none; `burstgate run` refuses `aci` and `fargate`
    /// targets without one).
    #[default]
    None,
    /// `aci:`.
    Aci(crate::policy::model::AciSpec),
    /// `fargate:`.
    Fargate(crate::policy::model::FargateSpec),
    /// `cluster:`.
    Cluster(crate::policy::model::ClusterSpec),
}

/// A checked budget.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Unique name.
    pub name: String,
    /// Namespaces that count (empty with empty labels: all pods).
    pub namespaces: Vec<String>,
    /// Labels that all must be present.
    pub labels: Vec<(String, String)>,
    /// Millicores at once.
    pub max_milli_cpu: Option<u64>,
    /// MiB at once.
    pub max_memory_mib: Option<u64>,
    /// Micro-USD per hour at once.
    pub max_hourly_micros: Option<u64>,
    /// Where it was written.
    pub source: Source,
}

impl Budget {
    /// Does this pod count against the budget?
    pub fn covers(&self, pod: &PodView) -> bool {
        let ns_ok = self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace);
        ns_ok && labels_match(&self.labels, &pod.labels)
    }
}

/// How eligible targets are ranked (lower score wins).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Hourly cost.
    Cost,
    /// Latency.
    Latency,
    /// Weighted sum of cost and latency, each normalised to the largest among eligible targets.
    Weighted {
        /// Cost weight.
        cost: f64,
        /// Latency weight.
        latency: f64,
    },
}

impl Objective {
    /// Parses the annotation / policy spelling: `cost`, `latency`, `weights:cost=1,latency=2`.
    pub fn parse(s: &str) -> Option<Objective> {
        match s.trim() {
            "cost" => Some(Objective::Cost),
            "latency" => Some(Objective::Latency),
            other => {
                let body = other.strip_prefix("weights:")?;
                let (mut cost, mut latency) = (0.0, 0.0);
                for part in body.split(',') {
                    let (k, v) = part.split_once('=')?;
                    let v: f64 = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
                    match k.trim() {
                        "cost" => cost = v,
                        "latency" => latency = v,
                        _ => return None,
                    }
                }
                (cost + latency > 0.0).then_some(Objective::Weighted { cost, latency })
            }
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Objective::Cost => f.write_str("cost"),
            Objective::Latency => f.write_str("latency"),
            Objective::Weighted { cost, latency } => {
                write!(f, "weights:cost={cost},latency={latency}")
            }
        }
    }
}

/// Why a rule's `allow` keeps a target out, decided once at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowRejection {
    /// `allow.providers` does not list the target's provider.
    Provider,
    /// `allow.regions` does not list the target's region.
    Region,
    /// `allow.targets` does not list the target.
    Target,
    /// The target is spot and the rule does not set `allow.spot`.
    Spot,
}

/// The match part of a rule.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Namespaces (any).
    pub namespaces: Vec<String>,
    /// Labels (all).
    pub labels: Vec<(String, String)>,
    /// Annotations (all).
    pub annotations: Vec<(String, String)>,
    /// CEL expression.
    pub expression: Option<Expression>,
}

impl Matcher {
    /// Matches without the expression (cheap part first).
    pub fn matches_static(&self, pod: &PodView) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace))
            && labels_match(&self.labels, &pod.labels)
            && labels_match(&self.annotations, &pod.annotations)
    }
}

fn labels_match(want: &[(String, String)], have: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, v)| have.get(k).is_some_and(|h| h == v))
}

/// A checked rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Which pods.
    pub matcher: Matcher,
    /// Per target (by id): `None` when `allow` lets it through, else why not.
    pub allow: Vec<Option<AllowRejection>>,
    /// Allowed providers as written (for annotation tightening checks).
    pub providers: Option<Vec<ProviderKind>>,
    /// Allowed regions as written.
    pub regions: Option<Vec<String>>,
    /// Latency cap.
    pub max_latency_ms: Option<u32>,
    /// Per-pod cost cap, micro-USD per hour.
    pub max_hourly_micros: Option<u64>,
    /// Ranking.
    pub objective: Objective,
    /// Fallback targets in order.
    pub fallback: Vec<TargetId>,
    /// No-target behaviour.
    pub on_no_target: OnNoTarget,
    /// Where it was written.
    pub source: Source,
}

/// A loaded, checked policy: immutable, shared by every decision.
#[derive(Debug)]
pub struct Policy {
    /// Targets; `targets[i].id == TargetId(i)`.
    pub targets: Vec<Target>,
    /// Budgets.
    pub budgets: Vec<Budget>,
    /// Rules in evaluation order (files in name order, then file order).
    pub rules: Vec<Rule>,
    /// Objective for pods no rule matches.
    pub default_objective: Objective,
    /// No-target behaviour for pods no rule matches.
    pub default_on_no_target: OnNoTarget,
    /// sha256 of the files (names and bytes), hex; changes whenever the policy does.
    pub hash: String,
    /// The files it was loaded from, in order.
    pub files: Vec<String>,
}

impl Policy {
    /// The target with this name.
    pub fn target_by_name(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
    /// The target with this id.
    pub fn target(&self, id: TargetId) -> &Target {
        &self.targets[id.index()]
    }
}
