//! Per-decision latency of the engine and of its Rego twin (`benches/decide/policy.rego` in
//! regorus), side by side in one run, on the equivalence corpus (`benches/decide/corpus.rs`):
//! 8 random policies, 10,000 random pods, ledger states and exclusions. Both sides do equal
//! work: one verdict per target (refusal reason, size, cost, score) and the choice.
//!
//! Before timing, every case is decided by both and compared (the same check as
//! `tests/it/decide_rego.rs`); a difference aborts the bench. Then each engine decision is timed
//! one by one over `PASSES` passes of the corpus, and each Rego evaluation once per case. Besides
//! the distribution of all the engine's samples, the bench prints that of each case's median
//! over the passes, which leaves out the scheduler's interruptions on a shared machine.
//!
//! Run: `cargo bench --bench decide` (docs/performance.md); `BURSTGATE_CORPUS_SEED` changes the
//! corpus.

#[path = "decide/corpus.rs"]
mod corpus;

use std::hint::black_box;
use std::time::{Duration, Instant};

use burstgate::policy::expression::{Activation, Expression};
use burstgate::policy::{PodView, decide, explain};

const POLICIES: usize = 8;
const CASES_PER_POLICY: usize = 1250;
/// Passes of the corpus timed for the engine (the Rego side is timed over one pass).
const PASSES: usize = 20;

struct Stats {
    n: usize,
    mean: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    Stats {
        n: samples.len(),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: *samples.last().unwrap(),
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<34} n {:>7}  mean {:>10.2?}  p50 {:>10.2?}  p90 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}",
        s.n, s.mean, s.p50, s.p90, s.p99, s.max
    );
}

fn main() {
    let seed = std::env::var("BURSTGATE_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    let corpus = corpus::generate(seed, POLICIES, CASES_PER_POLICY);
    let mut engines: Vec<regorus::Engine> = corpus
        .policies
        .iter()
        .map(|p| corpus::rego_engine(&p.spec))
        .collect();
    let inputs: Vec<regorus::Value> = corpus.cases.iter().map(corpus::rego_input).collect();
    let targets: usize = corpus
        .cases
        .iter()
        .map(|c| corpus.policies[c.policy].policy.targets.len())
        .sum();
    let rules: usize = corpus
        .cases
        .iter()
        .map(|c| corpus.policies[c.policy].policy.rules.len())
        .sum();
    println!(
        "corpus: seed {seed}, {} policies, {} cases, on average {:.1} targets and {:.1} rules per decision",
        corpus.policies.len(),
        corpus.cases.len(),
        targets as f64 / corpus.cases.len() as f64,
        rules as f64 / corpus.cases.len() as f64,
    );

    // Both sides agree on every case before anything is timed.
    for (i, case) in corpus.cases.iter().enumerate() {
        let policy = &corpus.policies[case.policy].policy;
        let ours = corpus::engine_json(
            policy,
            &decide(policy, &case.pod, &case.ledger, &case.excluded),
        );
        let theirs = corpus::rego_decide(&mut engines[case.policy], inputs[i].clone());
        if let Some(diff) = corpus::difference(&ours, &theirs) {
            panic!("case {i} differs between the engine and the Rego twin:\n{diff}");
        }
    }
    println!(
        "equivalence: all {} cases decided alike",
        corpus.cases.len()
    );

    // Which decisions try a rule with a CEL expression (one tried before or as the deciding
    // rule), and how many of those run the interpreter (an expression not compiled natively).
    let tries: Vec<(bool, bool)> = corpus
        .cases
        .iter()
        .map(|case| {
            let policy = &corpus.policies[case.policy].policy;
            let d = decide(policy, &case.pod, &case.ledger, &case.excluded);
            let tried = d.rule.map_or(policy.rules.len(), |r| r + 1);
            let mut tried = policy.rules[..tried]
                .iter()
                .filter(|r| r.matcher.matches_static(&case.pod))
                .filter_map(|r| r.matcher.expression.as_ref());
            let (mut any, mut interpreted) = (false, false);
            for e in &mut tried {
                any = true;
                interpreted |= !e.is_native();
            }
            (any, interpreted)
        })
        .collect();
    println!(
        "match expressions: tried in {} decisions, run by the CEL interpreter in {}",
        tries.iter().filter(|t| t.0).count(),
        tries.iter().filter(|t| t.1).count(),
    );
    let mut ours = Vec::with_capacity(corpus.cases.len() * PASSES);
    let (mut ours_expr, mut ours_plain) = (Vec::new(), Vec::new());
    let mut with_text = Vec::with_capacity(corpus.cases.len());
    for pass in 0..=PASSES {
        for (i, case) in corpus.cases.iter().enumerate() {
            let policy = &corpus.policies[case.policy].policy;
            let t = Instant::now();
            let d = decide(
                black_box(policy),
                black_box(&case.pod),
                &case.ledger,
                &case.excluded,
            );
            let took = t.elapsed();
            black_box(&d);
            // Pass 0 warms the caches up and is not counted.
            if pass > 0 {
                ours.push(took);
                if tries[i].0 {
                    &mut ours_expr
                } else {
                    &mut ours_plain
                }
                .push(took);
            }
            if pass == 1 {
                let t = Instant::now();
                let d = decide(
                    black_box(policy),
                    black_box(&case.pod),
                    &case.ledger,
                    &case.excluded,
                );
                black_box(explain::summary(policy, &d));
                with_text.push(t.elapsed());
            }
        }
    }
    let mut theirs = Vec::with_capacity(corpus.cases.len());
    for (i, case) in corpus.cases.iter().enumerate() {
        let engine = &mut engines[case.policy];
        let t = Instant::now();
        engine.set_input(inputs[i].clone());
        let out = engine.eval_rule(black_box(corpus::RULE.into())).unwrap();
        let took = t.elapsed();
        black_box(out);
        theirs.push(took);
    }
    // Each case's median over the passes: what a decision costs, without the moments the
    // scheduler took the core away (a shared machine's tail).
    let n = corpus.cases.len();
    let medians = stats(
        (0..n)
            .map(|i| {
                let mut s: Vec<Duration> = (0..PASSES).map(|p| ours[p * n + i]).collect();
                s.sort();
                s[PASSES / 2]
            })
            .collect(),
    );
    let (ours, with_text, theirs) = (stats(ours), stats(with_text), stats(theirs));
    print("burstgate decide", &ours);
    print("  of which trying a match expression", &stats(ours_expr));
    print("  of which trying none", &stats(ours_plain));
    print("burstgate decide, median per case", &medians);
    print("burstgate decide + summary text", &with_text);
    print("regorus (policy.rego)", &theirs);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "regorus / burstgate: {:.0}x at p50, {:.0}x at p99, {:.0}x by mean (goals: burstgate p99 <= 5 us, >= 50x)",
        ratio(theirs.p50, ours.p50),
        ratio(theirs.p99, ours.p99),
        ratio(theirs.mean, ours.mean),
    );
    expressions(&corpus.cases.iter().map(|c| &c.pod).collect::<Vec<_>>());
}

/// What one match expression costs, native or interpreted, over the corpus's pods (the loop
/// timed as a whole and divided: a native predicate takes less than `Instant` itself); and two
/// interpreted expressions in one decision's activation against one each.
fn expressions(pods: &[&PodView]) {
    const ROUNDS: usize = 5;
    let per_eval = |f: &dyn Fn(&PodView) -> bool| {
        let mut yes = 0usize;
        let t = Instant::now();
        for _ in 0..ROUNDS {
            for pod in pods {
                yes += usize::from(f(black_box(pod)));
            }
        }
        black_box(yes);
        t.elapsed() / (ROUNDS * pods.len()) as u32
    };
    let compile = |s: &str| Expression::compile(s).unwrap();
    for source in [
        "pod.gpus > 0",
        "pod.cpu >= 8.0 || pod.memoryGiB > 32.0",
        "has(pod.labels.tier) && pod.labels.tier == 'gold'",
        "pod.namespace.startsWith('batch')",
        "pod.cpu * 2.0 >= 16.0",
    ] {
        let e = compile(source);
        let kind = if e.is_native() {
            "native"
        } else {
            "interpreted"
        };
        let took = per_eval(&|pod: &PodView| e.matches(pod));
        println!("match expression {source:<50} {kind:<11} {took:>9.2?} per evaluation");
    }
    // The first reads every field the second does, so one `pod` serves both.
    let (a, b) = (
        compile("pod.cpu * 2.0 >= 16.0 && pod.namespace != ''"),
        compile("pod.namespace.startsWith('batch')"),
    );
    let apart = per_eval(&|pod: &PodView| a.matches(pod) | b.matches(pod));
    let shared =
        per_eval(&|pod: &PodView| Activation::with(pod, |x| x.matches(&a) | x.matches(&b)));
    println!(
        "two interpreted expressions: {apart:.2?} with an activation each, {shared:.2?} sharing one"
    );
}
