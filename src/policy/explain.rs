//! Decision traces for people: one-line Event messages, per-target tables, and the JSON shape
//! of `burstgate policy explain --output json`.
//!
//! The engine records verdicts as data; only this module turns them into words, so the hot path
//! never formats a string.

use serde_json::json;

use crate::policy::checked::{AllowRejection, Policy, micros_to_usd};
use crate::policy::engine::{
    Decision, ExclusionReason, Outcome, Rejection, Resource, TargetVerdict, Verdict,
};
use crate::policy::model::OnNoTarget;

fn amount(resource: Resource, v: u64) -> String {
    match resource {
        Resource::Vcpu => trim(v as f64 / 1000.0),
        Resource::Memory => trim(v as f64 / 1024.0).to_string(),
        Resource::Pods => v.to_string(),
        Resource::HourlyCost => trim(micros_to_usd(v)),
    }
}

fn unit(resource: Resource) -> &'static str {
    match resource {
        Resource::Vcpu => "vCPU",
        Resource::Memory => "GiB",
        Resource::Pods => "pods",
        Resource::HourlyCost => "$/h",
    }
}

/// A number without trailing zeros (`4`, `0.25`, `4.9`), at most 4 decimals.
fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Why a target was rejected, in words (`latency 45 > 30 ms`, `quota: 2 of 100 vCPU left, pod needs 4`).
// Long on purpose: one match arm per `Rejection` variant; a new variant lands here by compile error.
pub fn describe_rejection(policy: &Policy, target: usize, r: &Rejection) -> String {
    let t = &policy.targets[target];
    match r {
        Rejection::NotAllowed(AllowRejection::Provider) => {
            format!("provider {} not allowed by rule", t.provider)
        }
        Rejection::NotAllowed(AllowRejection::Region) => {
            format!("region {} not allowed by rule", t.region)
        }
        Rejection::NotAllowed(AllowRejection::Target) => "target not allowed by rule".into(),
        Rejection::NotAllowed(AllowRejection::Spot) => {
            "spot target, rule does not allow spot".into()
        }
        Rejection::ProviderNotInAnnotation => format!(
            "provider {} not in pod annotation burstgate.io/providers",
            t.provider
        ),
        Rejection::RegionNotInAnnotation => format!(
            "region {} not in pod annotation burstgate.io/regions",
            t.region
        ),
        Rejection::Latency { latency_ms, max_ms } => format!("latency {latency_ms} > {max_ms} ms"),
        Rejection::Size(e) => format!("pod too large for {}: {e}", t.provider),
        Rejection::PodTooLarge {
            resource,
            need,
            max,
        } => format!(
            "pod needs {} {u}, target allows at most {} {u} per pod",
            amount(*resource, *need),
            amount(*resource, *max),
            u = unit(*resource)
        ),
        Rejection::NoGpu => "pod needs nvidia.com/gpu, target offers no GPUs".into(),
        Rejection::GpuSkuMissing(sku) => format!(
            "GPU sku {sku} missing (target offers {})",
            t.gpus.join(", ")
        ),
        Rejection::CostTooHigh { cost, max } => format!(
            "cost {} > {} $/h",
            trim(micros_to_usd(*cost)),
            trim(micros_to_usd(*max))
        ),
        Rejection::Quota {
            resource,
            used,
            need,
            limit,
        } => {
            let left = limit.saturating_sub(*used);
            format!(
                "quota: {} of {} {} left, pod needs {}",
                amount(*resource, left),
                amount(*resource, *limit),
                unit(*resource),
                amount(*resource, *need)
            )
        }
        Rejection::Budget {
            budget,
            resource,
            used,
            need,
            limit,
        } => format!(
            "budget {} {} {} + {} > {} {}",
            policy.budgets[*budget].name,
            match resource {
                Resource::HourlyCost => "spend",
                Resource::Vcpu => "vCPU",
                Resource::Memory => "memory",
                Resource::Pods => "pods",
            },
            amount(*resource, *used),
            amount(*resource, *need),
            amount(*resource, *limit),
            unit(*resource)
        ),
        Rejection::Excluded(ExclusionReason::CircuitOpen) => "circuit open".into(),
        Rejection::Excluded(ExclusionReason::RejectedByProvider(why)) => {
            format!("rejected by provider: {why}")
        }
        Rejection::Excluded(ExclusionReason::Unusable(why)) => format!("unusable: {why}"),
        Rejection::Excluded(ExclusionReason::CannotRun(uses)) => {
            format!("its provider cannot run: {}", uses.join(", "))
        }
    }
}

/// `chosen`, `eligible`, `fallback-unused` or `rejected`.
pub fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Chosen { .. } => "chosen",
        Verdict::Eligible { .. } => "eligible",
        Verdict::FallbackUnused => "fallback-unused",
        Verdict::Rejected(_) => "rejected",
    }
}

/// The reason column of a verdict row.
pub fn verdict_reason(policy: &Policy, d: &Decision, row: &TargetVerdict) -> String {
    let cost = row
        .hourly_micros
        .map(|c| format!("${}/h", trim(micros_to_usd(c))))
        .unwrap_or_default();
    match &row.verdict {
        Verdict::Chosen { .. } if d.placement().is_some_and(|p| p.via_fallback) => {
            format!("fallback of rule, {cost}")
        }
        Verdict::Chosen { .. } => format!("best by {}, {cost}", d.objective),
        Verdict::Eligible { .. } => format!("eligible, {cost}"),
        Verdict::FallbackUnused => "fallback only; an allowed target fits".into(),
        Verdict::Rejected(r) => describe_rejection(policy, row.target.index(), r),
    }
}

fn rule_name(policy: &Policy, d: &Decision) -> String {
    d.rule.map_or_else(
        || "defaults (no rule matched)".to_string(),
        |i| format!("rule {}", policy.rules[i].name),
    )
}

/// A one-line summary for an Event: the choice, why, and the nearest alternatives.
pub fn summary(policy: &Policy, d: &Decision) -> String {
    let rule = rule_name(policy, d);
    match &d.outcome {
        Outcome::InvalidAnnotation {
            key,
            value,
            expected,
        } => {
            format!("annotation {key}={value:?} is invalid: expected {expected}")
        }
        Outcome::Placed(p) => {
            let t = policy.target(p.target);
            let mut s = format!(
                "placed on {} ({} {}, ${}/h) by {rule}, {}",
                t.name,
                t.provider,
                t.region,
                trim(micros_to_usd(p.hourly_micros)),
                if p.via_fallback {
                    "as fallback".to_string()
                } else {
                    format!("objective {}", d.objective)
                }
            );
            let others = nearest(policy, d, 3);
            if !others.is_empty() {
                s.push_str("; alternatives: ");
                s.push_str(&others.join("; "));
            }
            s
        }
        Outcome::NoTarget(mode) => {
            let verb = if *mode == OnNoTarget::Fail {
                "failed"
            } else {
                "pending"
            };
            let rows: Vec<String> = d
                .verdicts
                .iter()
                .map(|v| {
                    format!(
                        "{}: {}",
                        policy.target(v.target).name,
                        verdict_reason(policy, d, v)
                    )
                })
                .collect();
            format!(
                "{verb}: no eligible target under {rule}: {}",
                rows.join("; ")
            )
        }
    }
}

/// The alternatives closest to being chosen: eligible ones by score, then rejected ones that got
/// furthest (a size and cost were computed, so only quota, budget or caps stopped them).
fn nearest(policy: &Policy, d: &Decision, n: usize) -> Vec<String> {
    let mut eligible: Vec<_> = d
        .verdicts
        .iter()
        .filter_map(|v| match v.verdict {
            Verdict::Eligible { score } => Some((score, v)),
            _ => None,
        })
        .collect();
    eligible.sort_by(|a, b| a.0.total_cmp(&b.0));
    let sized_rejections = d
        .verdicts
        .iter()
        .filter(|v| matches!(v.verdict, Verdict::Rejected(_)) && v.hourly_micros.is_some());
    eligible
        .into_iter()
        .map(|(_, v)| v)
        .chain(sized_rejections)
        .take(n)
        .map(|v| {
            format!(
                "{} {}",
                policy.target(v.target).name,
                verdict_reason(policy, d, v)
            )
        })
        .collect()
}

/// A table of every target's verdict, for `burstgate policy explain`.
pub fn table(policy: &Policy, d: &Decision) -> String {
    let mut out = format!("{}\n", summary(policy, d));
    out.push_str(&format!(
        "pod request: {} vCPU, {} GiB, {} GPU; {}\n\n",
        trim(d.request.vcpu()),
        trim(d.request.memory_gib()),
        d.request.gpus,
        rule_name(policy, d)
    ));
    let name_w = policy
        .targets
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:<name_w$}  {:<15}  {:>10}  {:>8}  REASON\n",
        "TARGET", "VERDICT", "$/HOUR", "SCORE"
    ));
    for v in &d.verdicts {
        let score = match v.verdict {
            Verdict::Chosen { score } | Verdict::Eligible { score } => trim(score),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<name_w$}  {:<15}  {:>10}  {:>8}  {}\n",
            policy.target(v.target).name,
            verdict_name(&v.verdict),
            v.hourly_micros
                .map_or("-".into(), |c| trim(micros_to_usd(c))),
            score,
            verdict_reason(policy, d, v)
        ));
    }
    out
}

/// The JSON shape of `policy explain --output json`.
pub fn to_json(policy: &Policy, d: &Decision) -> serde_json::Value {
    let placed = d.placement().map(|p| policy.target(p.target));
    json!({
        "decision": d.kind(),
        "target": placed.map(|t| t.name.clone()),
        "provider": placed.map(|t| t.provider.as_str()),
        "region": placed.map(|t| t.region.clone()),
        "hourlyCost": d.placement().map(|p| micros_to_usd(p.hourly_micros)),
        "rule": d.rule.map(|i| policy.rules[i].name.clone()),
        "objective": d.objective.to_string(),
        "summary": summary(policy, d),
        "targets": d.verdicts.iter().map(|v| json!({
            "name": policy.target(v.target).name,
            "verdict": verdict_name(&v.verdict),
            "reason": verdict_reason(policy, d, v),
            "hourlyCost": v.hourly_micros.map(micros_to_usd),
            "score": match v.verdict { Verdict::Chosen { score } | Verdict::Eligible { score } => Some(score), _ => None },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ledger::{Ledger, Reservation, Usage};
    use crate::policy::load::load_files;
    use crate::policy::pod::PodView;

    const POLICY: &str = r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: cluster-local, provider: cluster, region: local, latencyMs: 2, quota: {vcpu: 4}}
    - {name: aci-eastus, provider: aci, region: eastus, latencyMs: 25, pricing: {vcpuHour: 0.0405, gibHour: 0.00445}, quota: {vcpu: 100}}
    - {name: aci-westus, provider: aci, region: westus, latencyMs: 70, pricing: {vcpuHour: 0.0405, gibHour: 0.00445}}
    - {name: fargate-use1, provider: fargate, region: us-east-1, latencyMs: 20, pricing: {vcpuHour: 0.04048, gibHour: 0.004445}}
    - {name: fargate-spot, provider: fargate, region: us-east-1, spot: true, pricing: {vcpuHour: 0.01246, gibHour: 0.00137}}
  budgets:
    - {name: team-a, namespaces: [team-a], maxHourlyCost: 5}
  rules:
    - {name: web, match: {namespaces: [team-a]}, maxLatencyMs: 30}
"#;

    #[test]
    fn the_explanation_gives_every_target_a_verdict_and_a_precise_reason() {
        let p = load_files(&[("p.yaml".into(), POLICY.into())]).unwrap();
        let mut ledger = Ledger::new(&p);
        ledger.restore(
            &p,
            "old",
            Reservation {
                target: "cluster-local".into(),
                budgets: vec!["team-a".into()],
                usage: Usage {
                    milli_cpu: 2000,
                    pods: 1,
                    hourly_micros: 4_900_000,
                    memory_mib: 0,
                },
            },
        );
        let mut pod = PodView {
            namespace: "team-a".into(),
            name: "web-1".into(),
            uid: "u1".into(),
            ..Default::default()
        };
        pod.resources.milli_cpu = 4000;
        pod.resources.memory_mib = 1024;
        let d = ledger.place(&p, &pod, &[]);
        insta::assert_snapshot!(table(&p, &d));
    }
}
