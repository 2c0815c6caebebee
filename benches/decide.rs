//! One decision with 20 targets and 100 rules, explanation included, against the same policy
//! written in Rego and evaluated by `regorus`, side by side. After criterion's runs it prints
//! the p50/p99 latency of single decisions (the issue's target is p99 <= 5 us).
//!
//! Run: `cargo bench --bench decide` (see docs/performance.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use burstgate::policy::{Ledger, PodView, decide, explain, load_files};
use criterion::Criterion;

const PROVIDERS: [&str; 4] = ["aci", "fargate", "cluster", "sim"];
const REGIONS: [&str; 5] = ["eastus", "westus", "us-east-1", "us-west-2", "local"];

/// The benchmark policy: 20 targets, 100 rules (the pod matches rule 95), 4 budgets.
fn policy_yaml() -> String {
    let mut y =
        String::from("apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n");
    for i in 0..20 {
        y += &format!(
            "    - {{name: t{i:02}, provider: {}, region: {}, latencyMs: {}, spot: {}, pricing: {{vcpuHour: {:.4}, gibHour: {:.5}}}, quota: {{vcpu: {}, pods: 100}}}}\n",
            PROVIDERS[i % 4],
            REGIONS[i % 5],
            5 + (i * 7) % 60,
            i % 6 == 5,
            0.03 + (i as f64) * 0.001,
            0.004 + (i as f64) * 0.0001,
            50 + i * 10
        );
    }
    y += "  budgets:\n";
    for b in 0..4 {
        y += &format!(
            "    - {{name: b{b}, namespaces: [ns-{}], maxHourlyCost: 100}}\n",
            90 + b * 2
        );
    }
    y += "  rules:\n";
    for r in 0..100 {
        let providers = [PROVIDERS[r % 4], PROVIDERS[(r + 1) % 4]].join(", ");
        y += &format!(
            "    - {{name: r{r:03}, match: {{namespaces: [ns-{r}], labels: {{tier: t{}}}}}, allow: {{providers: [{providers}]}}, maxLatencyMs: {}}}\n",
            r % 3,
            30 + r % 40
        );
    }
    y
}

/// The same policy as data for the Rego version.
fn rego_data() -> serde_json::Value {
    let targets: Vec<_> = (0..20)
        .map(|i| {
            serde_json::json!({
                "name": format!("t{i:02}"), "provider": PROVIDERS[i % 4], "region": REGIONS[i % 5],
                "latencyMs": 5 + (i * 7) % 60, "spot": i % 6 == 5,
                "vcpuHour": 0.03 + (i as f64) * 0.001, "gibHour": 0.004 + (i as f64) * 0.0001,
                "quotaVcpu": 50 + i * 10, "quotaPods": 100,
            })
        })
        .collect();
    let rules: Vec<_> = (0..100)
        .map(|r| {
            serde_json::json!({
                "name": format!("r{r:03}"), "namespaces": [format!("ns-{r}")], "labels": {"tier": format!("t{}", r % 3)},
                "providers": [PROVIDERS[r % 4], PROVIDERS[(r + 1) % 4]], "maxLatencyMs": 30 + r % 40,
            })
        })
        .collect();
    let budgets: Vec<_> = (0..4).map(|b| serde_json::json!({"name": format!("b{b}"), "namespaces": [format!("ns-{}", 90 + b * 2)], "maxHourlyCost": 100})).collect();
    serde_json::json!({"targets": targets, "rules": rules, "budgets": budgets})
}

const REGO: &str = r#"
package burstgate
import rego.v1

matches(r) if {
    input.pod.namespace in r.namespaces
    every k, v in r.labels { input.pod.labels[k] == v }
}

matching := [i | some i; matches(data.rules[i])]
rule := data.rules[min(matching)]

cost(t) := (input.pod.cpu * t.vcpuHour) + (input.pod.memoryGiB * t.gibHour)

budgets := [b | some b in data.budgets; input.pod.namespace in b.namespaces]

reason(t) := "provider not allowed by rule" if not t.provider in rule.providers
else := "spot target, rule does not allow spot" if t.spot
else := sprintf("latency %d > %d ms", [t.latencyMs, rule.maxLatencyMs]) if t.latencyMs > rule.maxLatencyMs
else := sprintf("quota: %v of %v vCPU left, pod needs %v", [t.quotaVcpu - input.usage[t.name].vcpu, t.quotaVcpu, input.pod.cpu]) if input.usage[t.name].vcpu + input.pod.cpu > t.quotaVcpu
else := sprintf("quota: pods full (%v)", [t.quotaPods]) if input.usage[t.name].pods + 1 > t.quotaPods
else := sprintf("budget %s spend exceeded", [b.name]) if {
    some b in budgets
    input.budgetUsage[b.name] + cost(t) > b.maxHourlyCost
}
else := ""

verdicts := [v |
    some t in data.targets
    r := reason(t)
    v := {"name": t.name, "eligible": r == "", "reason": r, "hourlyCost": cost(t)}
]

best := min([[v.hourlyCost, v.name] | some v in verdicts; v.eligible])

decision := {"decision": "placed", "target": best[1], "hourlyCost": best[0], "rule": rule.name, "targets": verdicts} if best
"#;

fn bench_pod() -> PodView {
    let mut p = PodView {
        namespace: "ns-95".into(),
        name: "web-1".into(),
        uid: "u".into(),
        ..Default::default()
    };
    p.labels.insert("tier".into(), "t2".into());
    p.labels.insert("app".into(), "web".into());
    p.resources.milli_cpu = 1000;
    p.resources.memory_mib = 2048;
    p
}

fn rego_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("burstgate.rego".into(), REGO.into())
        .expect("valid rego");
    engine
        .add_data(regorus::Value::from_json_str(&rego_data().to_string()).unwrap())
        .unwrap();
    let usage: serde_json::Map<String, serde_json::Value> = (0..20)
        .map(|i| {
            (
                format!("t{i:02}"),
                serde_json::json!({"vcpu": 0, "pods": 0}),
            )
        })
        .collect();
    let input = serde_json::json!({
        "pod": {"namespace": "ns-95", "labels": {"tier": "t2", "app": "web"}, "cpu": 1.0, "memoryGiB": 2.0},
        "usage": usage,
        "budgetUsage": {"b0": 0, "b1": 0, "b2": 0, "b3": 0},
    });
    engine.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    engine
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let policy =
        load_files(&[("bench.yaml".into(), policy_yaml())]).expect("bench policy is valid");
    let ledger = Ledger::new(&policy);
    let pod = bench_pod();
    let d = decide(&policy, &pod, &ledger, &[]);
    assert_eq!(
        policy.rules[d.rule.unwrap()].name,
        "r095",
        "the pod must walk 95 rules"
    );
    assert_eq!(d.kind(), "placed");
    let mut rego = rego_engine();
    let r = rego
        .eval_rule("data.burstgate.decision".into())
        .expect("rego evaluates");
    assert_eq!(
        r["decision"],
        regorus::Value::from("placed"),
        "rego decision: {r}"
    );
    assert_eq!(
        r["target"].as_string().unwrap().as_ref(),
        policy.target(d.placement().unwrap().target).name,
        "both engines choose the same target"
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("decide_20_targets_100_rules");
    g.bench_function("burstgate", |b| {
        b.iter(|| decide(black_box(&policy), black_box(&pod), &ledger, &[]))
    });
    g.bench_function("burstgate_with_summary_text", |b| {
        b.iter(|| {
            let d = decide(black_box(&policy), black_box(&pod), &ledger, &[]);
            explain::summary(&policy, &d)
        })
    });
    g.bench_function("regorus", |b| {
        b.iter(|| {
            rego.eval_rule(black_box("data.burstgate.decision".into()))
                .unwrap()
        })
    });
    g.finish();
    c.final_summary();

    // Single-decision latency distribution (criterion reports means; the target is a p99).
    if std::env::args().any(|a| a == "--bench") {
        let mut samples = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            let t = Instant::now();
            black_box(decide(black_box(&policy), black_box(&pod), &ledger, &[]));
            samples.push(t.elapsed());
        }
        let mut rego_samples = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let t = Instant::now();
            black_box(rego.eval_rule("data.burstgate.decision".into()).unwrap());
            rego_samples.push(t.elapsed());
        }
        let (p50, p99) = (percentile(samples.clone(), 0.50), percentile(samples, 0.99));
        let (r50, r99) = (
            percentile(rego_samples.clone(), 0.50),
            percentile(rego_samples, 0.99),
        );
        println!("burstgate decide: p50 {p50:?}  p99 {p99:?}  (200000 single decisions)");
        println!("regorus decision: p50 {r50:?}  p99 {r99:?}  (2000 evaluations)");
        println!(
            "ratio at p50: {:.0}x",
            r50.as_secs_f64() / p50.as_secs_f64()
        );
    }
}
