//! A seeded random corpus of decisions, and the same decisions in Rego (`policy.rego` beside this
//! file, evaluated by regorus), compared target by target.
//!
//! Shared by the equivalence test (`tests/it/decide_rego.rs`, in CI) and the bench
//! (`benches/decide.rs`), which include this file with `#[path]`. A corpus is a few random
//! policies and, for each, random pods, ledger states and exclusions, drawn so that every rule of
//! the engine refuses or decides a meaningful share of cases ([`Shares`] counts them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use burstgate::policy::engine::{Rejection, Resource, TargetVerdict};
use burstgate::policy::model::{
    AllowSpec, BudgetSpec, DefaultsSpec, LimitsSpec, MatchSpec, NamedObjective, ObjectiveSpec,
    OnNoTarget, PolicyDocument, PolicySpec, PricingSpec, ProviderKind, QuotaSpec, RuleSpec,
    TargetSpec, WeightsSpec,
};
use burstgate::policy::sizing::SizingError;
use burstgate::policy::{
    Decision, Exclusion, ExclusionReason, Ledger, Objective, Outcome, PodView, Policy, Reservation,
    Usage, Verdict, load_files,
};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The Rego twin of the engine.
pub const REGO: &str = include_str!("policy.rego");
/// The rule regorus evaluates.
pub const RULE: &str = "data.burstgate.decision";

/// One random policy: as written (the Rego's data), and as the engine loads it.
pub struct CorpusPolicy {
    /// The document, as JSON (also the YAML the loader reads: JSON is YAML).
    pub spec: Value,
    /// The checked policy.
    pub policy: Policy,
}

/// One decision to make.
pub struct Case {
    /// Index into [`Corpus::policies`].
    pub policy: usize,
    /// The pod.
    pub pod: PodView,
    /// What is in use.
    pub ledger: Ledger,
    /// Targets kept out from outside.
    pub excluded: Vec<Exclusion>,
    /// The same pod, ledger and exclusions as the Rego input.
    pub input: Value,
}

/// Policies and cases.
pub struct Corpus {
    /// The policies.
    pub policies: Vec<CorpusPolicy>,
    /// The cases, policy after policy.
    pub cases: Vec<Case>,
}

const NAMESPACES: [&str; 7] = ["web", "batch", "ml", "team-a", "team-b", "cloud", "default"];
const EXPRESSIONS: [&str; 3] = ["pod.gpus > 0", "pod.cpu >= 8.0", "pod.memoryGiB > 32.0"];
const CLASS: &str = "burstgate.io/class";

fn pick<T: Copy>(rng: &mut SmallRng, xs: &[T]) -> T {
    *xs.choose(rng).expect("non-empty")
}

fn maybe<T>(rng: &mut SmallRng, p: f64, f: impl FnOnce(&mut SmallRng) -> T) -> Option<T> {
    if rng.random_bool(p) {
        Some(f(rng))
    } else {
        None
    }
}

/// A price with at most six decimals, jittered around a published one.
fn price(rng: &mut SmallRng, base: f64) -> f64 {
    let f = pick(rng, &[0.8, 0.9, 1.0, 1.0, 1.1, 1.25]);
    (base * f * 1e6).round() / 1e6
}

fn regions(p: ProviderKind) -> &'static [&'static str] {
    match p {
        ProviderKind::Aci => &["eastus", "westus", "westeurope"],
        ProviderKind::Fargate => &["us-east-1", "us-west-2", "eu-west-1"],
        ProviderKind::Cluster => &["local"],
        ProviderKind::Sim => &["sim-a", "sim-b"],
    }
}

fn target(rng: &mut SmallRng, i: usize) -> TargetSpec {
    let provider = pick(
        rng,
        &[
            ProviderKind::Aci,
            ProviderKind::Aci,
            ProviderKind::Fargate,
            ProviderKind::Fargate,
            ProviderKind::Cluster,
            ProviderKind::Sim,
        ],
    );
    let region = pick(rng, regions(provider)).to_string();
    let cloud = matches!(provider, ProviderKind::Aci | ProviderKind::Fargate);
    let spot = cloud && rng.random_bool(0.25);
    let (vcpu, gib) = match (provider, spot) {
        (ProviderKind::Aci, false) => (0.0405, 0.00445),
        (ProviderKind::Aci, true) => (0.01215, 0.001335),
        (ProviderKind::Fargate, false) => (0.04048, 0.004445),
        (ProviderKind::Fargate, true) => (0.01246, 0.00137),
        (ProviderKind::Cluster, _) => (pick(rng, &[0.0, 0.0, 0.01]), 0.0),
        (ProviderKind::Sim, _) => (0.03, 0.004),
    };
    let gpus: Vec<String> = match provider {
        ProviderKind::Aci if rng.random_bool(0.5) => pick(rng, &[&["V100", "T4"][..], &["A100"]]),
        ProviderKind::Sim | ProviderKind::Cluster if rng.random_bool(0.3) => &["t4", "a100"][..],
        _ => &[][..],
    }
    .iter()
    .map(|s| s.to_string())
    .collect();
    TargetSpec {
        name: format!("{}-{region}-{i}", provider.as_str()),
        provider,
        region,
        pricing: PricingSpec {
            vcpu_hour: price(rng, vcpu),
            gib_hour: price(rng, gib),
            minimum_seconds: 0,
        },
        spot,
        quota: QuotaSpec {
            vcpu: maybe(rng, 0.8, |r| {
                pick(r, &[16.0, 32.0, 64.0, 100.0, 200.0, 12.5])
            }),
            memory_gib: maybe(rng, 0.5, |r| pick(r, &[64.0, 128.0, 400.0, 96.5])),
            pods: maybe(rng, 0.6, |r| pick(r, &[10, 20, 100])),
            hourly_cost: maybe(rng, 0.2, |r| pick(r, &[1.0, 5.0, 2.5])),
        },
        latency_ms: if provider == ProviderKind::Cluster {
            rng.random_range(1..4)
        } else {
            rng.random_range(5..80)
        },
        limits: LimitsSpec {
            max_pod_vcpu: maybe(rng, 0.2, |r| pick(r, &[4.0, 8.0, 2.5])),
            max_pod_memory_gib: maybe(rng, 0.2, |r| pick(r, &[16.0, 32.0, 7.5])),
            gpus,
        },
        rate_limits: vec![],
        aci: None,
        fargate: None,
        cluster: None,
    }
}

fn objective(rng: &mut SmallRng) -> ObjectiveSpec {
    match rng.random_range(0..4) {
        0 | 1 => ObjectiveSpec::Named(NamedObjective::Cost),
        2 => ObjectiveSpec::Named(NamedObjective::Latency),
        _ => ObjectiveSpec::Weighted {
            weights: WeightsSpec {
                cost: pick(rng, &[1.0, 2.0, 0.5]),
                latency: pick(rng, &[1.0, 0.0, 3.0]),
            },
        },
    }
}

fn some_of<T: Clone>(rng: &mut SmallRng, xs: &[T], max: usize) -> Vec<T> {
    let n = rng.random_range(1..=max.min(xs.len()));
    xs.choose_multiple(rng, n).cloned().collect()
}

fn rule(rng: &mut SmallRng, i: usize, targets: &[TargetSpec]) -> RuleSpec {
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let mut regions: Vec<String> = targets.iter().map(|t| t.region.clone()).collect();
    regions.dedup();
    let mut m = MatchSpec::default();
    match rng.random_range(0..6) {
        0 => m.expression = Some(pick(rng, &EXPRESSIONS).to_string()),
        1 => m.labels = BTreeMap::from([("tier".into(), "frontend".into())]),
        2 => m.annotations = BTreeMap::from([(CLASS.into(), "batch".into())]),
        3 => {
            m.labels = BTreeMap::from([("team".into(), pick(rng, &["a", "b"]).into())]);
            m.namespaces = some_of(rng, &NAMESPACES, 3)
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        _ => {
            m.namespaces = some_of(rng, &NAMESPACES, 2)
                .iter()
                .map(|s| s.to_string())
                .collect()
        }
    }
    RuleSpec {
        name: format!("r{i}"),
        matches: m,
        allow: AllowSpec {
            providers: maybe(rng, 0.4, |r| {
                some_of(
                    r,
                    &[
                        ProviderKind::Aci,
                        ProviderKind::Fargate,
                        ProviderKind::Cluster,
                        ProviderKind::Sim,
                    ],
                    2,
                )
            }),
            regions: maybe(rng, 0.15, |r| some_of(r, &regions, 2)),
            targets: maybe(rng, 0.15, |r| some_of(r, &names, 4)),
            spot: rng.random_bool(0.3),
        },
        max_latency_ms: maybe(rng, 0.3, |r| r.random_range(10..60)),
        max_hourly_cost: maybe(rng, 0.2, |r| pick(r, &[0.1, 0.25, 0.5, 1.0])),
        objective: maybe(rng, 0.6, objective),
        fallback: maybe(rng, 0.45, |r| some_of(r, &names, 3)).unwrap_or_default(),
        on_no_target: maybe(rng, 0.5, |r| {
            pick(r, &[OnNoTarget::Pending, OnNoTarget::Fail])
        }),
    }
}

fn budget(rng: &mut SmallRng, j: usize) -> BudgetSpec {
    let (namespaces, labels) = match rng.random_range(0..3) {
        0 => (
            vec![],
            BTreeMap::from([("team".into(), pick(rng, &["a", "b"]).into())]),
        ),
        _ => (
            some_of(rng, &NAMESPACES, 2)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            BTreeMap::new(),
        ),
    };
    let mut b = BudgetSpec {
        name: format!("b{j}"),
        namespaces,
        labels,
        max_vcpu: maybe(rng, 0.5, |r| pick(r, &[16.0, 32.0, 64.0])),
        max_memory_gib: maybe(rng, 0.4, |r| pick(r, &[64.0, 128.0])),
        max_hourly_cost: maybe(rng, 0.5, |r| pick(r, &[1.0, 2.0, 5.0])),
    };
    if b.max_vcpu.is_none() && b.max_memory_gib.is_none() && b.max_hourly_cost.is_none() {
        b.max_hourly_cost = Some(2.0);
    }
    b
}

/// A random policy: 6-14 targets, 0-4 budgets, 3-12 rules (most often a catch-all last).
pub fn random_policy(rng: &mut SmallRng) -> PolicyDocument {
    let targets: Vec<TargetSpec> = (0..rng.random_range(6..15))
        .map(|i| target(rng, i))
        .collect();
    let budgets = (0..rng.random_range(1..5))
        .map(|j| budget(rng, j))
        .collect();
    let mut rules: Vec<RuleSpec> = (0..rng.random_range(3..13))
        .map(|i| rule(rng, i, &targets))
        .collect();
    if rng.random_bool(0.7) {
        let mut all = rule(rng, rules.len(), &targets);
        all.matches = MatchSpec::default();
        rules.push(all);
    }
    PolicyDocument {
        api_version: "burstgate.io/v1alpha1".into(),
        kind: "BurstPolicy".into(),
        metadata: Default::default(),
        spec: PolicySpec {
            targets,
            budgets,
            rules,
            defaults: maybe(rng, 0.5, |r| DefaultsSpec {
                objective: maybe(r, 0.7, objective),
                on_no_target: maybe(r, 0.7, |r| {
                    pick(r, &[OnNoTarget::Pending, OnNoTarget::Fail])
                }),
            }),
        },
    }
}

fn annotation(rng: &mut SmallRng, p: f64, good: &[&str], bad: &[&str]) -> Option<String> {
    if !rng.random_bool(p) {
        return None;
    }
    Some(
        if rng.random_bool(0.08) {
            pick(rng, bad)
        } else {
            pick(rng, good)
        }
        .to_string(),
    )
}

/// A random pod: sizes from tiny to beyond every provider, GPUs, tightening annotations (a few
/// malformed), labels and namespaces the rules and budgets select on.
pub fn random_pod(rng: &mut SmallRng, i: usize) -> PodView {
    let mut pod = PodView {
        namespace: pick(rng, &NAMESPACES).into(),
        name: format!("pod-{i}"),
        uid: format!("uid-{i}"),
        ..Default::default()
    };
    if rng.random_bool(0.35) {
        pod.labels
            .insert("tier".into(), pick(rng, &["frontend", "backend"]).into());
    }
    if rng.random_bool(0.4) {
        pod.labels
            .insert("team".into(), pick(rng, &["a", "b", "c"]).into());
    }
    let a = &mut pod.annotations;
    if rng.random_bool(0.15) {
        a.insert(CLASS.into(), "batch".into());
    }
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            a.insert(k.into(), v);
        }
    };
    put(
        "burstgate.io/max-latency-ms",
        annotation(
            rng,
            0.15,
            &["5", "10", "20", "30", "50", " 40 ", "+25", "007"],
            &["fast", "-3", "1.5", "99999999999"],
        ),
    );
    put(
        "burstgate.io/max-hourly-cost",
        annotation(
            rng,
            0.15,
            &["0.05", "0.1", "0.2", "0.5", "1", "2.5", ".3", "1e-1", "0"],
            &["cheap", "-1", "$1"],
        ),
    );
    put(
        "burstgate.io/objective",
        annotation(
            rng,
            0.15,
            &[
                "cost",
                "latency",
                " latency ",
                "weights:cost=1,latency=1",
                "weights:cost=2, latency=0.5",
                "weights:latency=1",
                "weights:cost=1,cost=0,latency=2",
            ],
            &[
                "fastest",
                "weights:cost=0,latency=0",
                "weights:speed=1",
                "weights:cost",
            ],
        ),
    );
    put(
        "burstgate.io/providers",
        annotation(
            rng,
            0.12,
            &[
                "aci",
                "fargate",
                "cluster,sim",
                "aci, fargate",
                "fargate,cluster",
            ],
            &["aci,gcp", "aci,"],
        ),
    );
    put(
        "burstgate.io/regions",
        annotation(
            rng,
            0.1,
            &[
                "eastus",
                "us-east-1,westus",
                "local, eastus,us-west-2",
                "sim-a,,eu-west-1",
            ],
            &[" "],
        ),
    );
    let r = &mut pod.resources;
    r.milli_cpu = match rng.random_range(0..100) {
        0..5 => 0,
        5..55 => rng.random_range(1..2000),
        55..85 => rng.random_range(2000..8000),
        85..95 => rng.random_range(8000..20_000),
        _ => rng.random_range(20_000..40_000),
    };
    r.memory_mib = match rng.random_range(0..100) {
        0..5 => 0,
        5..55 => rng.random_range(1..4096),
        55..85 => rng.random_range(4096..32_768),
        85..95 => rng.random_range(32_768..131_072),
        _ => rng.random_range(131_072..260_000),
    };
    if rng.random_bool(0.15) {
        r.gpus = rng.random_range(1..3);
    }
    if rng.random_bool(if r.gpus > 0 { 0.6 } else { 0.05 }) {
        pod.gpu_sku = Some(pick(rng, &["V100", "T4", "A100", "t4", "H100"]).into());
    }
    pod
}

/// How full a quota or budget is: empty (`empty` in 10), part used, or nearly full (`10 - full`).
fn used(
    rng: &mut SmallRng,
    limit: Option<f64>,
    unit: f64,
    fallback: u64,
    empty: u32,
    full: u32,
) -> u64 {
    let limit = limit.map_or(fallback, |l| (l * unit).floor() as u64);
    match rng.random_range(0..10) {
        n if n < empty => 0,
        n if n < full => rng.random_range(0..=limit * 9 / 10),
        _ => limit.saturating_sub(rng.random_range(0..=limit / 8)),
    }
}

fn random_ledger(rng: &mut SmallRng, doc: &PolicySpec, policy: &Policy) -> Ledger {
    let mut ledger = Ledger::new(policy);
    for t in &doc.targets {
        let q = &t.quota;
        let usage = Usage {
            milli_cpu: used(rng, q.vcpu, 1000.0, 64_000, 4, 8),
            memory_mib: used(rng, q.memory_gib, 1024.0, 131_072, 4, 8),
            pods: used(rng, q.pods.map(f64::from), 1.0, 50, 4, 8),
            hourly_micros: used(rng, q.hourly_cost, 1e6, 3_000_000, 4, 8),
        };
        let r = Reservation {
            target: t.name.clone(),
            budgets: vec![],
            usage,
        };
        ledger.restore(policy, &format!("in-use-{}", t.name), r);
    }
    for b in &doc.budgets {
        let usage = Usage {
            milli_cpu: used(rng, b.max_vcpu, 1000.0, 32_000, 3, 6),
            memory_mib: used(rng, b.max_memory_gib, 1024.0, 65_536, 3, 6),
            pods: 0,
            hourly_micros: used(rng, b.max_hourly_cost, 1e6, 2_000_000, 3, 6),
        };
        let r = Reservation {
            target: String::new(),
            budgets: vec![b.name.clone()],
            usage,
        };
        ledger.restore(policy, &format!("in-use-{}", b.name), r);
    }
    ledger
}

fn usage_json(u: Usage) -> Value {
    json!({"milliCpu": u.milli_cpu, "memoryMib": u.memory_mib, "pods": u.pods, "hourlyMicros": u.hourly_micros})
}

/// The Rego input of one decision, read back from the very ledger the engine gets.
pub fn input(policy: &Policy, pod: &PodView, ledger: &Ledger, excluded: &[Exclusion]) -> Value {
    let targets: serde_json::Map<String, Value> = policy
        .targets
        .iter()
        .map(|t| (t.name.clone(), usage_json(ledger.target_usage(t.id))))
        .collect();
    let budgets: serde_json::Map<String, Value> = policy
        .budgets
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.clone(), usage_json(ledger.budget_usage(i))))
        .collect();
    json!({
        "pod": {
            "namespace": pod.namespace, "name": pod.name, "labels": pod.labels,
            "annotations": pod.annotations, "milliCpu": pod.resources.milli_cpu,
            "memoryMib": pod.resources.memory_mib, "gpus": pod.resources.gpus, "gpuSku": pod.gpu_sku,
        },
        "usage": {"targets": targets, "budgets": budgets},
        "excluded": excluded.iter().map(|e| policy.target(e.target).name.clone()).collect::<Vec<_>>(),
    })
}

/// `cases_per_policy` cases for each of `policies` random policies, all from `seed`.
pub fn generate(seed: u64, policies: usize, cases_per_policy: usize) -> Corpus {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut corpus = Corpus {
        policies: vec![],
        cases: vec![],
    };
    for p in 0..policies {
        let doc = random_policy(&mut rng);
        let spec = serde_json::to_value(&doc.spec).expect("a policy serialises");
        let text = serde_json::to_string_pretty(&doc).expect("a policy serialises");
        let policy = load_files(&[(format!("corpus-{p}.yaml"), text.clone())])
            .unwrap_or_else(|e| panic!("random policy {p} does not load: {e:?}\n{text}"));
        for i in 0..cases_per_policy {
            let pod = random_pod(&mut rng, i);
            let ledger = random_ledger(&mut rng, &doc.spec, &policy);
            let excluded: Vec<Exclusion> = if rng.random_bool(0.12) {
                policy
                    .targets
                    .choose_multiple(&mut rng, 2)
                    .map(|t| Exclusion {
                        target: t.id,
                        reason: ExclusionReason::CircuitOpen,
                    })
                    .collect()
            } else {
                vec![]
            };
            let input = input(&policy, &pod, &ledger, &excluded);
            corpus.cases.push(Case {
                policy: p,
                pod,
                ledger,
                excluded,
                input,
            });
        }
        corpus.policies.push(CorpusPolicy { spec, policy });
    }
    corpus
}

/// A regorus engine holding the Rego twin and one policy as data.
pub fn rego_engine(spec: &Value) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("policy.rego".into(), REGO.into())
        .expect("policy.rego parses");
    let data = json!({ "policy": spec });
    engine
        .add_data(regorus::Value::from_json_str(&data.to_string()).expect("data converts"))
        .expect("data loads");
    engine
}

/// The regorus value of a case's input (built once; evaluating it is the timed work).
pub fn rego_input(case: &Case) -> regorus::Value {
    regorus::Value::from_json_str(&case.input.to_string()).expect("input converts")
}

/// Evaluates one case in regorus, as JSON.
pub fn rego_decide(engine: &mut regorus::Engine, input: regorus::Value) -> Value {
    engine.set_input(input);
    let out = engine
        .eval_rule(RULE.into())
        .expect("the Rego decision evaluates");
    serde_json::from_str(&out.to_json_str().expect("a decision serialises")).expect("JSON")
}

fn resource(r: Resource) -> &'static str {
    match r {
        Resource::Vcpu => "vcpu",
        Resource::Memory => "memory",
        Resource::Pods => "pods",
        Resource::HourlyCost => "cost",
    }
}

/// A rejection in the Rego's words: its class and every number it carries.
fn reason(policy: &Policy, r: &Rejection) -> Value {
    use burstgate::policy::checked::AllowRejection as A;
    match r {
        Rejection::NotAllowed(why) => json!([
            "not-allowed",
            match why {
                A::Provider => "provider",
                A::Region => "region",
                A::Target => "target",
                A::Spot => "spot",
            }
        ]),
        Rejection::ProviderNotInAnnotation => json!(["annotation", "providers"]),
        Rejection::RegionNotInAnnotation => json!(["annotation", "regions"]),
        Rejection::Latency { latency_ms, max_ms } => json!(["latency", latency_ms, max_ms]),
        Rejection::Size(SizingError::CpuTooLarge {
            need_milli,
            max_milli,
        }) => {
            json!(["size", "cpu", need_milli, max_milli])
        }
        Rejection::Size(SizingError::MemoryTooLarge { need_mib, max_mib }) => {
            json!(["size", "memory", need_mib, max_mib])
        }
        Rejection::PodTooLarge {
            resource: r,
            need,
            max,
        } => {
            json!(["too-large", resource(*r), need, max])
        }
        Rejection::NoGpu => json!(["gpu", "none"]),
        Rejection::GpuSkuMissing(sku) => json!(["gpu", "sku", sku]),
        Rejection::CostTooHigh { cost, max } => json!(["cost", cost, max]),
        Rejection::Quota {
            resource: r,
            used,
            need,
            limit,
        } => {
            json!(["quota", resource(*r), used, need, limit])
        }
        Rejection::Budget {
            budget,
            resource: r,
            used,
            need,
            limit,
        } => {
            json!([
                "budget",
                policy.budgets[*budget].name,
                resource(*r),
                used,
                need,
                limit
            ])
        }
        Rejection::Excluded(_) => json!(["excluded"]),
    }
}

fn objective_json(o: Objective) -> Value {
    match o {
        Objective::Cost => json!("cost"),
        Objective::Latency => json!("latency"),
        Objective::Weighted { cost, latency } => json!({"cost": cost, "latency": latency}),
    }
}

fn verdict_json(policy: &Policy, v: &TargetVerdict) -> Value {
    let (verdict, score, why) = match &v.verdict {
        Verdict::Chosen { score } => ("chosen", json!(score), Value::Null),
        Verdict::Eligible { score } => ("eligible", json!(score), Value::Null),
        Verdict::FallbackUnused => ("fallback-unused", Value::Null, Value::Null),
        Verdict::Rejected(r) => ("rejected", Value::Null, reason(policy, r)),
    };
    json!({
        "target": policy.target(v.target).name, "verdict": verdict, "score": score, "reason": why,
        "size": v.size.map(|s| json!([s.milli_cpu, s.memory_mib])), "micros": v.hourly_micros,
    })
}

/// The engine's decision in the Rego's shape.
pub fn engine_json(policy: &Policy, d: &Decision) -> Value {
    let (outcome, invalid, target, via_fallback, budgets) = match &d.outcome {
        Outcome::Placed(p) => {
            let budgets: Vec<&str> = policy
                .budgets
                .iter()
                .enumerate()
                .filter(|(i, _)| p.budgets.contains(*i))
                .map(|(_, b)| b.name.as_str())
                .collect();
            (
                "placed",
                Value::Null,
                json!(policy.target(p.target).name),
                p.via_fallback,
                json!(budgets),
            )
        }
        Outcome::NoTarget(OnNoTarget::Pending) => {
            ("pending", Value::Null, Value::Null, false, json!([]))
        }
        Outcome::NoTarget(OnNoTarget::Fail) => ("fail", Value::Null, Value::Null, false, json!([])),
        Outcome::InvalidAnnotation { key, .. } => {
            ("invalid", json!(key), Value::Null, false, json!([]))
        }
    };
    json!({
        "outcome": outcome, "invalid": invalid, "rule": d.rule, "objective": objective_json(d.objective),
        "target": target, "viaFallback": via_fallback, "budgets": budgets,
        "verdicts": d.verdicts.iter().map(|v| verdict_json(policy, v)).collect::<Vec<_>>(),
    })
}

/// Where two decisions differ (`None`: equal). Numbers compare as numbers (`5` equals `5.0`);
/// integral ones exactly, fractional ones (scores, weights) within 1e-9 relative.
pub fn difference(engine: &Value, rego: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, at: &str, out: &mut String) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                let same = if x.fract() == 0.0 && y.fract() == 0.0 {
                    x == y
                } else {
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
                };
                if !same {
                    let _ = writeln!(out, "  {at}: engine {x} rego {y}");
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    walk(x, y, &format!("{at}[{i}]"), out);
                }
            }
            (Value::Object(x), Value::Object(y))
                if x.keys().collect::<Vec<_>>() == y.keys().collect::<Vec<_>>() =>
            {
                for (k, v) in x {
                    walk(v, &y[k], &format!("{at}.{k}"), out);
                }
            }
            _ if a == b => {}
            _ => {
                let _ = writeln!(out, "  {at}: engine {a} rego {b}");
            }
        }
    }
    let mut out = String::new();
    walk(engine, rego, "decision", &mut out);
    (!out.is_empty()).then_some(out)
}

/// How often each rule of the engine bites, over a set of decisions (engine JSON).
#[derive(Debug, Default)]
pub struct Shares {
    /// Decisions counted.
    pub cases: usize,
    /// Cases where at least one target got a refusal of this class (`quota`, `budget`...), and
    /// outcomes (`outcome:placed`, `outcome:fallback`...), each counted once per case.
    pub counts: BTreeMap<String, usize>,
}

impl Shares {
    /// Counts one decision.
    pub fn add(&mut self, d: &Value) {
        self.cases += 1;
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(format!("outcome:{}", d["outcome"].as_str().unwrap()));
        if d["viaFallback"] == json!(true) {
            seen.insert("outcome:placed-via-fallback".into());
        }
        if d["rule"].is_null() {
            seen.insert("rule:none-matched".into());
        }
        if d["outcome"] == json!("placed") {
            let o = match &d["objective"] {
                Value::String(s) => s.clone(),
                _ => "weights".into(),
            };
            seen.insert(format!("objective:{o}"));
        }
        for v in d["verdicts"].as_array().unwrap() {
            if let Some(r) = v["reason"].as_array() {
                let class = r[0].as_str().unwrap();
                seen.insert(format!("refused:{class}"));
                if matches!(class, "quota" | "budget" | "size" | "too-large") {
                    let res = r[if class == "budget" { 2 } else { 1 }].as_str().unwrap();
                    seen.insert(format!("refused:{class}:{res}"));
                }
                if class == "gpu" || class == "annotation" || class == "not-allowed" {
                    seen.insert(format!("refused:{class}:{}", r[1].as_str().unwrap()));
                }
            }
        }
        for k in seen {
            *self.counts.entry(k).or_default() += 1;
        }
    }

    /// The share of cases (0-1) counted under `key`.
    pub fn share(&self, key: &str) -> f64 {
        self.counts.get(key).copied().unwrap_or(0) as f64 / self.cases.max(1) as f64
    }

    /// One line per key, with its share.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for (k, n) in &self.counts {
            let _ = writeln!(
                s,
                "  {k:<32} {n:>6}  {:>5.1}%",
                100.0 * *n as f64 / self.cases as f64
            );
        }
        s
    }
}
