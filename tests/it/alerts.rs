//! The alert rules operators install: valid for Prometheus, unit-tested, and every runbook link
//! points at a section that exists in docs/operations.md.

use std::path::PathBuf;

use crate::common::{peers, run_tool};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = repo().join("deploy/prometheus/rules.yaml");
    let (code, out) = run_tool(
        &peers().path("PROMTOOL"),
        &["check", "rules", rules.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let tests = repo().join("deploy/prometheus/rules.test.yaml");
    let (code, out) = run_tool(
        &peers().path("PROMTOOL"),
        &["test", "rules", tests.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yaml")).unwrap();
    let ops = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let anchors: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.split("operations.md#").nth(1))
        .map(|a| a.trim_end_matches('"'))
        .collect();
    assert_eq!(anchors.len(), 8);
    for anchor in anchors {
        let heading = ops.lines().any(|l| {
            l.strip_prefix("### ")
                .is_some_and(|h| h.to_lowercase() == anchor)
        });
        assert!(heading, "docs/operations.md has no section for #{anchor}");
    }
}
