//! The policy engine: filter every target, score the eligible ones, choose one, and say why.
//!
//! Pure and synchronous: no I/O, no clock, no randomness, no async. The same policy, pod, ledger
//! and exclusions always give the same [`Decision`]. Every target gets a verdict, so an operator
//! can see why each one was or was not chosen. Reserving the choice is [`Ledger::place`]'s job.

use crate::policy::checked::{
    AllowRejection, Objective, Policy, Rule, Target, TargetId, micros_to_usd, usd_to_micros,
};
use crate::policy::expression::Activation;
use crate::policy::ledger::{Ledger, Usage};
use crate::policy::model::{OnNoTarget, ProviderKind};
use crate::policy::pod::{PodView, Resources};
use crate::policy::sizing::{self, Size, SizingError};

/// Annotation: a latency cap (ms) tighter than the rule's.
pub const ANNOTATION_MAX_LATENCY: &str = "burstgate.io/max-latency-ms";
/// Annotation: a per-pod hourly cost cap (USD) tighter than the rule's.
pub const ANNOTATION_MAX_HOURLY_COST: &str = "burstgate.io/max-hourly-cost";
/// Annotation: the objective (`cost`, `latency`, `weights:cost=1,latency=2`).
pub const ANNOTATION_OBJECTIVE: &str = "burstgate.io/objective";
/// Annotation: comma-separated providers the pod accepts (within the rule's).
pub const ANNOTATION_PROVIDERS: &str = "burstgate.io/providers";
/// Annotation: comma-separated regions the pod accepts (within the rule's).
pub const ANNOTATION_REGIONS: &str = "burstgate.io/regions";

/// A target kept out of this decision by the world outside the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// Which target.
    pub target: TargetId,
    /// Why.
    pub reason: ExclusionReason,
}

/// Why a target is excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusionReason {
    /// Its circuit breaker is open after repeated target-level failures.
    CircuitOpen,
    /// The provider already rejected this pod there for a target-level reason (quota, capacity...).
    RejectedByProvider(String),
    /// The target cannot be served by this gateway (its provider is not enabled, its adapter
    /// could not be built: no configuration, no credentials), with why.
    Unusable(String),
    /// The target's adapter cannot run features the pod uses (each named, with where), as its
    /// declared capabilities say; another target may.
    CannotRun(Vec<String>),
}

/// Which resource a quota or budget ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// vCPU (values in millicores).
    Vcpu,
    /// Memory (values in MiB).
    Memory,
    /// Pods.
    Pods,
    /// Spend (values in micro-USD per hour).
    HourlyCost,
}

/// Why a target cannot take this pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The rule's `allow` keeps it out.
    NotAllowed(AllowRejection),
    /// The pod's `burstgate.io/providers` annotation keeps it out.
    ProviderNotInAnnotation,
    /// The pod's `burstgate.io/regions` annotation keeps it out.
    RegionNotInAnnotation,
    /// Slower than the cap.
    Latency {
        /// Target latency.
        latency_ms: u32,
        /// Cap.
        max_ms: u32,
    },
    /// The provider has no size this big.
    Size(SizingError),
    /// Bigger than the target's per-pod limit.
    PodTooLarge {
        /// Which resource.
        resource: Resource,
        /// Pod size after rounding.
        need: u64,
        /// Limit.
        max: u64,
    },
    /// The pod asks for GPUs and the target has none.
    NoGpu,
    /// The pod asks for a GPU SKU the target does not list.
    GpuSkuMissing(String),
    /// More expensive per hour than the cap.
    CostTooHigh {
        /// This pod here, micro-USD per hour.
        cost: u64,
        /// Cap.
        max: u64,
    },
    /// Not enough quota left on the target.
    Quota {
        /// Which resource.
        resource: Resource,
        /// In use.
        used: u64,
        /// Pod needs.
        need: u64,
        /// Quota.
        limit: u64,
    },
    /// A budget the pod counts against would be exceeded.
    Budget {
        /// Budget index in the policy.
        budget: usize,
        /// Which resource.
        resource: Resource,
        /// In use.
        used: u64,
        /// Pod needs.
        need: u64,
        /// Cap.
        limit: u64,
    },
    /// Kept out from outside (circuit open, provider rejected this pod there).
    Excluded(ExclusionReason),
}

/// A target's verdict in one decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The target chosen.
    Chosen {
        /// Its score (lower is better).
        score: f64,
    },
    /// Eligible, not chosen.
    Eligible {
        /// Its score.
        score: f64,
    },
    /// Eligible only as a fallback, and not needed because an allowed target was eligible.
    FallbackUnused,
    /// Not eligible.
    Rejected(Rejection),
}

/// One row of the explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetVerdict {
    /// Which target.
    pub target: TargetId,
    /// Verdict.
    pub verdict: Verdict,
    /// The size the provider would bill, when it has one.
    pub size: Option<Size>,
    /// This pod's hourly cost there, micro-USD, when sized.
    pub hourly_micros: Option<u64>,
}

/// A set of budgets by index (at most 64 per policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSet(pub u64);

impl BudgetSet {
    /// Membership.
    pub fn contains(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
}

/// A chosen target and what the pod will hold there.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The target.
    pub target: TargetId,
    /// Billed size.
    pub size: Size,
    /// Hourly cost, micro-USD.
    pub hourly_micros: u64,
    /// Budgets it counts against.
    pub budgets: BudgetSet,
    /// Chosen from the rule's `fallback` list.
    pub via_fallback: bool,
}

/// What happens to the pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Run it here.
    Placed(Placement),
    /// No target fits; wait (`Pending`) or fail, per the rule.
    NoTarget(OnNoTarget),
    /// A `burstgate.io/*` annotation is malformed; the pod fails.
    InvalidAnnotation {
        /// Annotation key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The engine's answer for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What happens.
    pub outcome: Outcome,
    /// The rule that decided (index into `policy.rules`), `None` for the defaults.
    pub rule: Option<usize>,
    /// The objective used (after annotations).
    pub objective: Objective,
    /// The pod's effective request.
    pub request: Resources,
    /// One verdict per target, in target order (empty for invalid annotations).
    pub verdicts: Vec<TargetVerdict>,
}

impl Decision {
    /// `placed`, `pending` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self.outcome {
            Outcome::Placed(_) => "placed",
            Outcome::NoTarget(OnNoTarget::Pending) => "pending",
            Outcome::NoTarget(OnNoTarget::Fail) | Outcome::InvalidAnnotation { .. } => "failed",
        }
    }

    /// The placement, if placed.
    pub fn placement(&self) -> Option<&Placement> {
        match &self.outcome {
            Outcome::Placed(p) => Some(p),
            _ => None,
        }
    }
}

/// The constraints in force for this pod: the rule's, tightened by the pod's annotations.
struct Constraints<'a> {
    rule: Option<&'a Rule>,
    max_latency_ms: Option<u32>,
    max_hourly_micros: Option<u64>,
    objective: Objective,
    providers: Option<Vec<ProviderKind>>,
    regions: Option<Vec<&'a str>>,
}

/// Decides where `pod` runs under `policy`, given what `ledger` holds and what is `excluded`.
pub fn decide(policy: &Policy, pod: &PodView, ledger: &Ledger, excluded: &[Exclusion]) -> Decision {
    let rule_index = Activation::with(pod, |a| {
        policy.rules.iter().position(|r| rule_matches(r, a))
    });
    let rule = rule_index.map(|i| &policy.rules[i]);
    let base_objective = rule.map_or(policy.default_objective, |r| r.objective);
    let fail = |key, value: &String, expected| Decision {
        outcome: Outcome::InvalidAnnotation {
            key,
            value: value.clone(),
            expected,
        },
        rule: rule_index,
        objective: base_objective,
        request: pod.resources,
        verdicts: Vec::new(),
    };
    let constraints = match constraints(pod, rule, base_objective) {
        Ok(c) => c,
        Err((key, value, expected)) => return fail(key, value, expected),
    };
    let budgets = covering_budgets(policy, pod);

    let mut verdicts: Vec<TargetVerdict> = Vec::with_capacity(policy.targets.len());
    let mut any_primary = false;
    for t in &policy.targets {
        let v = judge(t, pod, &constraints, ledger, policy, budgets, excluded);
        any_primary |= matches!(v.verdict, Verdict::Eligible { .. });
        verdicts.push(v);
    }

    let chosen = if any_primary {
        score_and_choose(policy, &mut verdicts, constraints.objective)
    } else {
        choose_fallback(rule, &mut verdicts)
    };
    let outcome = match chosen {
        Some((id, via_fallback)) => {
            let v = &verdicts[id.index()];
            Outcome::Placed(Placement {
                target: id,
                size: v.size.unwrap_or_default(),
                hourly_micros: v.hourly_micros.unwrap_or_default(),
                budgets,
                via_fallback,
            })
        }
        None => Outcome::NoTarget(rule.map_or(policy.default_on_no_target, |r| r.on_no_target)),
    };
    Decision {
        outcome,
        rule: rule_index,
        objective: constraints.objective,
        request: pod.resources,
        verdicts,
    }
}

fn rule_matches(rule: &Rule, a: &Activation) -> bool {
    rule.matcher.matches_static(a.pod())
        && rule
            .matcher
            .expression
            .as_ref()
            .is_none_or(|e| a.matches(e))
}

type AnnotationError<'a> = (&'static str, &'a String, &'static str);

fn constraints<'a>(
    pod: &'a PodView,
    rule: Option<&'a Rule>,
    objective: Objective,
) -> Result<Constraints<'a>, AnnotationError<'a>> {
    let mut c = Constraints {
        rule,
        max_latency_ms: rule.and_then(|r| r.max_latency_ms),
        max_hourly_micros: rule.and_then(|r| r.max_hourly_micros),
        objective,
        providers: None,
        regions: None,
    };
    let a = &pod.annotations;
    if let Some(v) = a.get(ANNOTATION_MAX_LATENCY) {
        let ms: u32 = v
            .trim()
            .parse()
            .map_err(|_| (ANNOTATION_MAX_LATENCY, v, "a whole number of milliseconds"))?;
        c.max_latency_ms = Some(c.max_latency_ms.map_or(ms, |r| r.min(ms)));
    }
    if let Some(v) = a.get(ANNOTATION_MAX_HOURLY_COST) {
        let usd: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|u: &f64| u.is_finite() && *u >= 0.0)
            .ok_or((
                ANNOTATION_MAX_HOURLY_COST,
                v,
                "a number of USD per hour >= 0",
            ))?;
        let micros = usd_to_micros(usd);
        c.max_hourly_micros = Some(c.max_hourly_micros.map_or(micros, |r| r.min(micros)));
    }
    if let Some(v) = a.get(ANNOTATION_OBJECTIVE) {
        c.objective = Objective::parse(v).ok_or((
            ANNOTATION_OBJECTIVE,
            v,
            "cost, latency or weights:cost=W,latency=W",
        ))?;
    }
    if let Some(v) = a.get(ANNOTATION_PROVIDERS) {
        let list = v
            .split(',')
            .map(|p| ProviderKind::parse(p.trim()))
            .collect::<Option<Vec<_>>>()
            .ok_or((
                ANNOTATION_PROVIDERS,
                v,
                "a comma-separated list of aci, fargate, cluster, sim",
            ))?;
        c.providers = Some(list);
    }
    if let Some(v) = a.get(ANNOTATION_REGIONS) {
        c.regions = Some(
            v.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect(),
        );
    }
    Ok(c)
}

fn covering_budgets(policy: &Policy, pod: &PodView) -> BudgetSet {
    let mut set = 0u64;
    for (i, b) in policy.budgets.iter().enumerate().take(64) {
        if b.covers(pod) {
            set |= 1 << i;
        }
    }
    BudgetSet(set)
}

// Long on purpose: one flat ladder of checks, cheapest first, each returning its typed rejection.
fn judge(
    t: &Target,
    pod: &PodView,
    c: &Constraints<'_>,
    ledger: &Ledger,
    policy: &Policy,
    budgets: BudgetSet,
    excluded: &[Exclusion],
) -> TargetVerdict {
    let mut row = TargetVerdict {
        target: t.id,
        verdict: Verdict::FallbackUnused,
        size: None,
        hourly_micros: None,
    };
    let reject = |mut row: TargetVerdict, r: Rejection| {
        row.verdict = Verdict::Rejected(r);
        row
    };
    // Policy-level filters first: they explain the most common "why not" in one word.
    // Without a matching rule every target is allowed, except spot capacity.
    let not_allowed = match c.rule {
        Some(r) => r.allow[t.id.index()],
        None => t.spot.then_some(AllowRejection::Spot),
    };
    let in_fallback = c.rule.is_some_and(|r| r.fallback.contains(&t.id));
    if let Some(why) = not_allowed
        && !in_fallback
    {
        return reject(row, Rejection::NotAllowed(why));
    }
    if c.providers
        .as_ref()
        .is_some_and(|ps| !ps.contains(&t.provider))
    {
        return reject(row, Rejection::ProviderNotInAnnotation);
    }
    if c.regions
        .as_ref()
        .is_some_and(|rs| !rs.contains(&t.region.as_str()))
    {
        return reject(row, Rejection::RegionNotInAnnotation);
    }
    if let Some(e) = excluded.iter().find(|e| e.target == t.id) {
        return reject(row, Rejection::Excluded(e.reason.clone()));
    }
    let req = &pod.resources;
    if req.gpus > 0 {
        if t.gpus.is_empty() {
            return reject(row, Rejection::NoGpu);
        }
        if let Some(sku) = &pod.gpu_sku
            && !t.gpus.iter().any(|g| g.eq_ignore_ascii_case(sku))
        {
            return reject(row, Rejection::GpuSkuMissing(sku.clone()));
        }
    }
    let size = match sizing::fit(t.provider, req) {
        Ok(s) => s,
        Err(e) => return reject(row, Rejection::Size(e)),
    };
    let cost = t.pricing.hourly_micros(&size);
    row.size = Some(size);
    row.hourly_micros = Some(cost);
    if let Some(max) = t.max_pod_milli_cpu
        && size.milli_cpu > max
    {
        return reject(
            row,
            Rejection::PodTooLarge {
                resource: Resource::Vcpu,
                need: size.milli_cpu,
                max,
            },
        );
    }
    if let Some(max) = t.max_pod_memory_mib
        && size.memory_mib > max
    {
        return reject(
            row,
            Rejection::PodTooLarge {
                resource: Resource::Memory,
                need: size.memory_mib,
                max,
            },
        );
    }
    if let Some(max) = c.max_latency_ms
        && t.latency_ms > max
    {
        return reject(
            row,
            Rejection::Latency {
                latency_ms: t.latency_ms,
                max_ms: max,
            },
        );
    }
    if let Some(max) = c.max_hourly_micros
        && cost > max
    {
        return reject(row, Rejection::CostTooHigh { cost, max });
    }
    let need = Usage::of_pod(size, cost);
    let q = &t.quota;
    if let Some((resource, used, need, limit)) = over(
        ledger.target_usage(t.id),
        need,
        [q.milli_cpu, q.memory_mib, q.pods, q.hourly_micros],
    ) {
        return reject(
            row,
            Rejection::Quota {
                resource,
                used,
                need,
                limit,
            },
        );
    }
    for (i, b) in policy.budgets.iter().enumerate() {
        if !budgets.contains(i) {
            continue;
        }
        if let Some((resource, used, need, limit)) = over(
            ledger.budget_usage(i),
            need,
            [b.max_milli_cpu, b.max_memory_mib, None, b.max_hourly_micros],
        ) {
            return reject(
                row,
                Rejection::Budget {
                    budget: i,
                    resource,
                    used,
                    need,
                    limit,
                },
            );
        }
    }
    row.verdict = if not_allowed.is_some() {
        Verdict::FallbackUnused
    } else {
        Verdict::Eligible { score: 0.0 }
    };
    row
}

/// The first resource `need` would push past its limit, as (resource, used, need, limit).
fn over(used: Usage, need: Usage, limits: [Option<u64>; 4]) -> Option<(Resource, u64, u64, u64)> {
    let rows = [
        (Resource::Vcpu, used.milli_cpu, need.milli_cpu),
        (Resource::Memory, used.memory_mib, need.memory_mib),
        (Resource::Pods, used.pods, need.pods),
        (Resource::HourlyCost, used.hourly_micros, need.hourly_micros),
    ];
    rows.into_iter()
        .zip(limits)
        .find_map(|((r, u, n), l)| l.filter(|l| u.saturating_add(n) > *l).map(|l| (r, u, n, l)))
}

fn score_and_choose(
    policy: &Policy,
    verdicts: &mut [TargetVerdict],
    objective: Objective,
) -> Option<(TargetId, bool)> {
    let (mut max_cost, mut max_latency) = (0u64, 0u32);
    for v in verdicts
        .iter()
        .filter(|v| matches!(v.verdict, Verdict::Eligible { .. }))
    {
        max_cost = max_cost.max(v.hourly_micros.unwrap_or(0));
        max_latency = max_latency.max(policy.target(v.target).latency_ms);
    }
    let norm = |x: f64, max: f64| if max > 0.0 { x / max } else { 0.0 };
    let mut best: Option<(f64, u64, u32, &str, TargetId)> = None;
    for v in verdicts.iter_mut() {
        if !matches!(v.verdict, Verdict::Eligible { .. }) {
            continue;
        }
        let t = policy.target(v.target);
        let cost = v.hourly_micros.unwrap_or(0);
        let score = match objective {
            Objective::Cost => micros_to_usd(cost),
            Objective::Latency => t.latency_ms as f64,
            Objective::Weighted {
                cost: wc,
                latency: wl,
            } => {
                wc * norm(cost as f64, max_cost as f64)
                    + wl * norm(t.latency_ms as f64, max_latency as f64)
            }
        };
        v.verdict = Verdict::Eligible { score };
        // Ties: the other criterion, then the name (deterministic, independent of file order).
        let key = match objective {
            Objective::Latency => (score, cost, 0, t.name.as_str(), t.id),
            _ => (score, 0, t.latency_ms, t.name.as_str(), t.id),
        };
        let better = best.as_ref().is_none_or(|b| {
            key.0
                .total_cmp(&b.0)
                .then(key.1.cmp(&b.1))
                .then(key.2.cmp(&b.2))
                .then(key.3.cmp(b.3))
                .is_lt()
        });
        if better {
            best = Some(key);
        }
    }
    let (score, _, _, _, id) = best?;
    verdicts[id.index()].verdict = Verdict::Chosen { score };
    Some((id, false))
}

fn choose_fallback(
    rule: Option<&Rule>,
    verdicts: &mut [TargetVerdict],
) -> Option<(TargetId, bool)> {
    let rule = rule?;
    for (rank, id) in rule.fallback.iter().enumerate() {
        if matches!(verdicts[id.index()].verdict, Verdict::FallbackUnused) {
            verdicts[id.index()].verdict = Verdict::Chosen { score: rank as f64 };
            return Some((*id, true));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::explain;
    use crate::policy::load::load_files;
    use proptest::prelude::*;

    const POLICY: &str = r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: cluster-local, provider: cluster, region: local, latencyMs: 1, quota: {vcpu: 8, pods: 20}}
    - {name: aci-eastus, provider: aci, region: eastus, latencyMs: 20,
       pricing: {vcpuHour: 0.0405, gibHour: 0.00445}, quota: {vcpu: 100, pods: 100}, limits: {gpus: [V100, T4]}}
    - {name: aci-westus, provider: aci, region: westus, latencyMs: 45,
       pricing: {vcpuHour: 0.0405, gibHour: 0.00445}, quota: {vcpu: 100}}
    - {name: fargate-use1, provider: fargate, region: us-east-1, latencyMs: 15,
       pricing: {vcpuHour: 0.04048, gibHour: 0.004445, minimumSeconds: 60}, quota: {vcpu: 200}}
    - {name: fargate-spot-use1, provider: fargate, region: us-east-1, latencyMs: 15, spot: true,
       pricing: {vcpuHour: 0.01246, gibHour: 0.00137}}
  budgets:
    - {name: team-a, namespaces: [team-a], maxHourlyCost: 5.0}
  rules:
    - name: gpu
      match: {expression: "pod.gpus > 0"}
      allow: {providers: [aci]}
    - name: batch-spot
      match: {namespaces: [batch]}
      allow: {spot: true, providers: [fargate]}
    - name: latency-critical
      match: {labels: {tier: frontend}}
      maxLatencyMs: 30
      objective: latency
    - name: cloud-only
      match: {namespaces: [cloud]}
      allow: {providers: [aci]}
      fallback: [fargate-use1]
      onNoTarget: fail
    - name: default
      match: {}
      objective: cost
"#;

    fn policy() -> Policy {
        load_files(&[("p.yaml".into(), POLICY.into())]).unwrap()
    }

    fn pod(ns: &str, milli_cpu: u64, memory_mib: u64) -> PodView {
        PodView {
            namespace: ns.into(),
            name: "p".into(),
            uid: format!("uid-{ns}-{milli_cpu}-{memory_mib}"),
            resources: Resources {
                milli_cpu,
                memory_mib,
                gpus: 0,
            },
            ..Default::default()
        }
    }

    fn chosen(p: &Policy, d: &Decision) -> Option<String> {
        d.placement().map(|pl| p.target(pl.target).name.clone())
    }

    fn reason_of(p: &Policy, d: &Decision, target: &str) -> String {
        let id = p.target_by_name(target).unwrap().id;
        explain::verdict_reason(p, d, &d.verdicts[id.index()])
    }

    #[test]
    fn a_pod_too_large_to_count_is_over_quota_where_others_run_and_placed_nowhere() {
        let p = policy();
        let mut ledger = Ledger::new(&p);
        assert!(
            ledger
                .place(&p, &pod("web", 500, 512), &[])
                .placement()
                .is_some()
        );
        let d = ledger.place(&p, &pod("web", u64::MAX, u64::MAX), &[]);
        assert_eq!(chosen(&p, &d), None);
    }

    #[test]
    fn should_prefer_the_free_cluster_under_the_cost_objective() {
        let p = policy();
        let d = decide(&p, &pod("web", 500, 512), &Ledger::new(&p), &[]);
        assert_eq!(chosen(&p, &d).as_deref(), Some("cluster-local"));
        assert_eq!(
            d.verdicts.len(),
            p.targets.len(),
            "every target gets a verdict"
        );
    }

    #[test]
    fn should_fall_back_to_next_target_when_quota_is_exhausted() {
        let p = policy();
        let mut ledger = Ledger::new(&p);
        let first = ledger.place(&p, &pod("web", 6000, 1024), &[]);
        assert_eq!(chosen(&p, &first).as_deref(), Some("cluster-local"));
        let d = ledger.place(&p, &pod("web", 4000, 1024), &[]);
        assert_eq!(
            reason_of(&p, &d, "cluster-local"),
            "quota: 2 of 8 vCPU left, pod needs 4"
        );
        // Fargate 4 vCPU/8 GiB costs more than ACI 4 vCPU/1 GiB, so ACI eastus wins on cost.
        assert_eq!(chosen(&p, &d).as_deref(), Some("aci-eastus"));
    }

    #[test]
    fn should_reject_targets_slower_than_the_rules_latency_cap() {
        let p = policy();
        let mut web = pod("web", 500, 512);
        web.labels.insert("tier".into(), "frontend".into());
        let d = decide(&p, &web, &Ledger::new(&p), &[]);
        assert_eq!(reason_of(&p, &d, "aci-westus"), "latency 45 > 30 ms");
        assert_eq!(chosen(&p, &d).as_deref(), Some("cluster-local"));
    }

    #[test]
    fn should_only_use_spot_targets_when_the_rule_allows_spot() {
        let p = policy();
        let d = decide(&p, &pod("batch", 1000, 2048), &Ledger::new(&p), &[]);
        assert_eq!(chosen(&p, &d).as_deref(), Some("fargate-spot-use1"));
        let d = decide(&p, &pod("web", 1000, 2048), &Ledger::new(&p), &[]);
        assert_eq!(
            reason_of(&p, &d, "fargate-spot-use1"),
            "spot target, rule does not allow spot"
        );
    }

    #[test]
    fn should_send_gpu_pods_only_to_targets_listing_their_sku() {
        let p = policy();
        let mut gpu = pod("ml", 4000, 16384);
        gpu.resources.gpus = 1;
        gpu.gpu_sku = Some("T4".into());
        let d = decide(&p, &gpu, &Ledger::new(&p), &[]);
        assert_eq!(chosen(&p, &d).as_deref(), Some("aci-eastus"));
        assert_eq!(
            reason_of(&p, &d, "aci-westus"),
            "pod needs nvidia.com/gpu, target offers no GPUs"
        );
        gpu.gpu_sku = Some("A100".into());
        let d = decide(&p, &gpu, &Ledger::new(&p), &[]);
        assert_eq!(
            reason_of(&p, &d, "aci-eastus"),
            "GPU sku A100 missing (target offers V100, T4)"
        );
        assert_eq!(d.kind(), "pending");
    }

    #[test]
    fn should_reject_a_target_whose_cost_would_break_a_budget() {
        let p = policy();
        let mut ledger = Ledger::new(&p);
        let used = crate::policy::ledger::Reservation {
            target: String::new(),
            budgets: vec!["team-a".into()],
            usage: Usage {
                hourly_micros: 4_900_000,
                ..Default::default()
            },
        };
        ledger.restore(&p, "earlier", used);
        // 4 vCPU / 8 GiB on ACI: 0.162 + 0.0356 = ~0.198 $/h, over the 0.1 left.
        let mut big = pod("team-a", 4000, 8192);
        big.labels.insert("tier".into(), "x".into());
        let mut l2 = ledger.clone();
        l2.restore(
            &p,
            "cluster-full",
            crate::policy::ledger::Reservation {
                target: "cluster-local".into(),
                budgets: vec![],
                usage: Usage {
                    milli_cpu: 8000,
                    ..Default::default()
                },
            },
        );
        let d = decide(&p, &big, &l2, &[]);
        assert_eq!(
            reason_of(&p, &d, "aci-eastus"),
            "budget team-a spend 4.9 + 0.1976 > 5 $/h"
        );
    }

    #[test]
    fn should_use_the_rules_fallback_list_when_no_allowed_target_fits() {
        let p = policy();
        let aci: Vec<Exclusion> = ["aci-eastus", "aci-westus"]
            .iter()
            .map(|n| Exclusion {
                target: p.target_by_name(n).unwrap().id,
                reason: ExclusionReason::CircuitOpen,
            })
            .collect();
        let d = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &aci);
        assert_eq!(chosen(&p, &d).as_deref(), Some("fargate-use1"));
        assert!(d.placement().unwrap().via_fallback);
        assert_eq!(reason_of(&p, &d, "aci-eastus"), "circuit open");
    }

    #[test]
    fn should_send_the_pod_to_a_target_that_can_run_it_when_the_cheapest_cannot() {
        let p = policy();
        let base = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &[]);
        let cheapest = chosen(&p, &base).unwrap();
        let cannot = vec![Exclusion {
            target: p.target_by_name(&cheapest).unwrap().id,
            reason: ExclusionReason::CannotRun(vec!["httpGet probe in container app".into()]),
        }];
        let d = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &cannot);
        let now = chosen(&p, &d).unwrap();
        assert_ne!(now, cheapest);
        assert_eq!(
            reason_of(&p, &d, &cheapest),
            "its provider cannot run: httpGet probe in container app"
        );
    }

    #[test]
    fn should_never_choose_a_target_the_gateway_cannot_serve_and_say_why() {
        let p = policy();
        let base = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &[]);
        let cheapest = chosen(&p, &base).unwrap();
        let unusable = vec![Exclusion {
            target: p.target_by_name(&cheapest).unwrap().id,
            reason: ExclusionReason::Unusable("provider aci is not enabled on this gateway".into()),
        }];
        let d = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &unusable);
        assert_ne!(chosen(&p, &d).unwrap(), cheapest);
        assert_eq!(
            reason_of(&p, &d, &cheapest),
            "unusable: provider aci is not enabled on this gateway"
        );
    }

    #[test]
    fn should_fail_the_pod_when_the_rule_says_fail_and_nothing_fits() {
        let p = policy();
        let all: Vec<Exclusion> = p
            .targets
            .iter()
            .map(|t| Exclusion {
                target: t.id,
                reason: ExclusionReason::CircuitOpen,
            })
            .collect();
        let d = decide(&p, &pod("cloud", 1000, 1024), &Ledger::new(&p), &all);
        assert_eq!(d.kind(), "failed");
        let d = decide(&p, &pod("web", 1000, 1024), &Ledger::new(&p), &all);
        assert_eq!(d.kind(), "pending");
        assert!(
            explain::summary(&p, &d).starts_with("pending: no eligible target under rule default")
        );
    }

    #[test]
    fn annotations_can_tighten_but_never_loosen_the_latency_cap() {
        let p = policy();
        let mut web = pod("web", 500, 512);
        web.labels.insert("tier".into(), "frontend".into());
        web.annotations
            .insert(ANNOTATION_MAX_LATENCY.into(), "100".into());
        let d = decide(&p, &web, &Ledger::new(&p), &[]);
        assert_eq!(reason_of(&p, &d, "aci-westus"), "latency 45 > 30 ms");
        web.annotations
            .insert(ANNOTATION_MAX_LATENCY.into(), "10".into());
        let d = decide(&p, &web, &Ledger::new(&p), &[]);
        assert_eq!(reason_of(&p, &d, "fargate-use1"), "latency 15 > 10 ms");
    }

    #[test]
    fn a_malformed_annotation_fails_the_pod_with_what_was_expected() {
        let p = policy();
        let mut web = pod("web", 500, 512);
        web.annotations
            .insert(ANNOTATION_PROVIDERS.into(), "aci,gcp".into());
        let d = decide(&p, &web, &Ledger::new(&p), &[]);
        assert_eq!(d.kind(), "failed");
        assert!(explain::summary(&p, &d).contains("burstgate.io/providers"));
    }

    #[test]
    fn ties_are_broken_by_target_name() {
        let yaml = r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: zeta, provider: sim, region: r, pricing: {vcpuHour: 1}}
    - {name: alpha, provider: sim, region: r, pricing: {vcpuHour: 1}}
"#;
        let p = load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let d = decide(&p, &pod("x", 1000, 0), &Ledger::new(&p), &[]);
        assert_eq!(chosen(&p, &d).as_deref(), Some("alpha"));
    }

    fn arb_pod() -> impl Strategy<Value = PodView> {
        (
            prop::sample::select(vec!["web", "batch", "team-a", "cloud", "ml"]),
            0u64..20_000,
            0u64..70_000,
            0u32..2,
            prop::option::of(prop::sample::select(vec!["1", "10", "20", "50"])),
            prop::option::of(prop::sample::select(vec![
                "aci",
                "fargate",
                "cluster",
                "aci,fargate",
            ])),
            any::<bool>(),
        )
            .prop_map(|(ns, cpu, mem, gpus, lat, providers, frontend)| {
                let mut p = pod(ns, cpu, mem);
                p.resources.gpus = gpus;
                if let Some(l) = lat {
                    p.annotations
                        .insert(ANNOTATION_MAX_LATENCY.into(), l.into());
                }
                if let Some(pr) = providers {
                    p.annotations.insert(ANNOTATION_PROVIDERS.into(), pr.into());
                }
                if frontend {
                    p.labels.insert("tier".into(), "frontend".into());
                }
                p
            })
    }

    fn eligible(d: &Decision) -> Vec<TargetId> {
        d.verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v.verdict,
                    Verdict::Chosen { .. } | Verdict::Eligible { .. } | Verdict::FallbackUnused
                )
            })
            .map(|v| v.target)
            .collect()
    }

    proptest! {
        #[test]
        fn the_same_inputs_always_give_the_same_decision(pods in prop::collection::vec(arb_pod(), 1..30)) {
            let p = policy();
            let (mut a, mut b) = (Ledger::new(&p), Ledger::new(&p));
            for (i, mut pod) in pods.into_iter().enumerate() {
                pod.uid = format!("u{i}");
                prop_assert_eq!(a.place(&p, &pod, &[]), b.place(&p, &pod, &[]));
            }
        }

        #[test]
        fn no_decision_violates_a_hard_constraint(pods in prop::collection::vec(arb_pod(), 1..40)) {
            let p = policy();
            let mut ledger = Ledger::new(&p);
            for (i, mut pod) in pods.into_iter().enumerate() {
                pod.uid = format!("u{i}");
                let d = ledger.place(&p, &pod, &[]);
                let Some(pl) = d.placement() else { continue };
                let t = p.target(pl.target);
                let rule = d.rule.map(|r| &p.rules[r]);
                if let Some(r) = rule {
                    prop_assert!(r.allow[t.id.index()].is_none() || r.fallback.contains(&t.id));
                    if let Some(max) = r.max_latency_ms { prop_assert!(t.latency_ms <= max); }
                }
                if let Some(l) = pod.annotations.get(ANNOTATION_MAX_LATENCY) {
                    prop_assert!(t.latency_ms <= l.parse::<u32>().unwrap());
                }
                if let Some(ps) = pod.annotations.get(ANNOTATION_PROVIDERS) {
                    prop_assert!(ps.split(',').any(|x| x == t.provider.as_str()));
                }
                if pod.resources.gpus > 0 { prop_assert!(!t.gpus.is_empty()); }
                prop_assert!(pl.size.milli_cpu >= pod.resources.milli_cpu && pl.size.memory_mib >= pod.resources.memory_mib);
            }
        }

        #[test]
        fn quotas_and_budgets_are_never_over_committed(ops in prop::collection::vec((arb_pod(), 0usize..40, any::<bool>()), 1..80)) {
            let p = policy();
            let mut ledger = Ledger::new(&p);
            for (i, (mut pod, release, do_release)) in ops.into_iter().enumerate() {
                if do_release {
                    ledger.release(&format!("u{release}"));
                    continue;
                }
                pod.uid = format!("u{i}");
                ledger.place(&p, &pod, &[]);
                for t in &p.targets {
                    let u = ledger.target_usage(t.id);
                    prop_assert!(t.quota.milli_cpu.is_none_or(|q| u.milli_cpu <= q));
                    prop_assert!(t.quota.pods.is_none_or(|q| u.pods <= q));
                    prop_assert!(t.quota.hourly_micros.is_none_or(|q| u.hourly_micros <= q));
                }
                for (i, b) in p.budgets.iter().enumerate() {
                    let u = ledger.budget_usage(i);
                    prop_assert!(b.max_hourly_micros.is_none_or(|m| u.hourly_micros <= m));
                }
            }
            // Releasing everything gives every unit back.
            let uids: Vec<String> = ledger.reservations().map(|(k, _)| k.clone()).collect();
            for u in uids { ledger.release(&u); }
            for t in &p.targets { prop_assert_eq!(ledger.target_usage(t.id), Usage::default()); }
        }

        #[test]
        fn tightening_annotations_never_widen_the_choice(pod in arb_pod(), lat in 0u32..60, providers in prop::sample::select(vec!["aci", "fargate", "cluster"])) {
            let p = policy();
            let ledger = Ledger::new(&p);
            let mut plain = pod.clone();
            plain.annotations.clear();
            let before = eligible(&decide(&p, &plain, &ledger, &[]));
            let mut tight = plain.clone();
            tight.annotations.insert(ANNOTATION_MAX_LATENCY.into(), lat.to_string());
            tight.annotations.insert(ANNOTATION_PROVIDERS.into(), providers.into());
            tight.annotations.insert(ANNOTATION_MAX_HOURLY_COST.into(), "0.5".into());
            let after = eligible(&decide(&p, &tight, &ledger, &[]));
            prop_assert!(after.iter().all(|t| before.contains(t)), "{:?} not within {:?}", after, before);
        }
    }
}
