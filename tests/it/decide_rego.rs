//! The engine and its Rego twin (`benches/decide/policy.rego`) decide alike: on a seeded random
//! corpus of 10,000 pods and ledger states, the chosen target and every target's verdict agree.

#[path = "../../benches/decide/corpus.rs"]
mod corpus;

use burstgate::policy::decide;

/// Policies in the corpus, and cases per policy (10,000 decisions in all).
const POLICIES: usize = 8;
const CASES_PER_POLICY: usize = 1250;

#[test]
fn the_rego_policy_decides_every_corpus_case_as_the_engine_does() {
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
    let mut shares = corpus::Shares::default();
    let mut mismatches = Vec::new();
    for (i, case) in corpus.cases.iter().enumerate() {
        let policy = &corpus.policies[case.policy].policy;
        let d = decide(policy, &case.pod, &case.ledger, &case.excluded);
        let ours = corpus::engine_json(policy, &d);
        let theirs = corpus::rego_decide(&mut engines[case.policy], corpus::rego_input(case));
        shares.add(&ours);
        if let Some(diff) = corpus::difference(&ours, &theirs) {
            mismatches.push((case.policy, format!(
                "case {i} (seed {seed}, policy {}):\n{diff}  input: {}\n  engine: {ours}\n  rego:   {theirs}",
                case.policy, case.input
            )));
        }
    }
    println!(
        "{} decisions, {} policies, seed {seed}; cases where each rule bites:\n{}",
        shares.cases,
        corpus.policies.len(),
        shares.table()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ; the first 3:\n{}\npolicy of the first: {}",
        mismatches.len(),
        corpus.cases.len(),
        mismatches
            .iter()
            .take(3)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        mismatches
            .first()
            .map_or(String::new(), |(p, _)| corpus.policies[*p].spec.to_string())
    );
    // Every rule of the engine must bite in a meaningful share of cases, or the equality above
    // proves little about it.
    for (key, min) in [
        ("refused:quota", 0.05),
        ("refused:quota:vcpu", 0.05),
        ("refused:quota:memory", 0.05),
        ("refused:quota:pods", 0.05),
        ("refused:quota:cost", 0.01),
        ("refused:budget", 0.05),
        ("refused:size", 0.05),
        ("refused:too-large", 0.05),
        ("refused:gpu", 0.05),
        ("refused:gpu:sku", 0.01),
        ("refused:latency", 0.05),
        ("refused:cost", 0.05),
        ("refused:annotation", 0.05),
        ("refused:not-allowed", 0.05),
        ("refused:excluded", 0.05),
        ("outcome:placed", 0.3),
        ("outcome:placed-via-fallback", 0.02),
        ("outcome:pending", 0.05),
        ("outcome:fail", 0.02),
        ("outcome:invalid", 0.01),
        ("objective:cost", 0.05),
        ("objective:latency", 0.05),
        ("objective:weights", 0.05),
        ("rule:none-matched", 0.01),
    ] {
        assert!(
            shares.share(key) >= min,
            "{key} bites in {:.1}% of cases, under {:.0}%",
            100.0 * shares.share(key),
            100.0 * min
        );
    }
}
