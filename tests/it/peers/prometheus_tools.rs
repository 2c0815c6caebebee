//! Prometheus' own tools as the metrics tests use them: `promtool check metrics` accepts a valid
//! exposition, flags a lint problem and rejects a malformed one; the server binary is the pinned one.

use crate::common;

const VALID: &str = "\
# HELP burstgate_pods_total Pods the gateway handled.
# TYPE burstgate_pods_total counter
burstgate_pods_total{provider=\"aci\",region=\"eastus\"} 3
# HELP burstgate_decision_seconds Time to decide a target.
# TYPE burstgate_decision_seconds histogram
burstgate_decision_seconds_bucket{le=\"0.001\"} 1
burstgate_decision_seconds_bucket{le=\"+Inf\"} 2
burstgate_decision_seconds_sum 0.0021
burstgate_decision_seconds_count 2
";

#[test]
fn promtool_accepts_a_valid_exposition_and_rejects_a_bad_one() {
    let promtool = common::peers().path("PROMTOOL");
    let check = |text: &str| common::run_tool(&promtool, &["check", "metrics"], text);

    let (code, out) = check(VALID);
    assert_eq!(code, 0, "a valid exposition passes: {out}");

    // promtool exits 3 for lint problems: a counter without the _total suffix.
    let (code, out) =
        check("# HELP burstgate_pods Pods.\n# TYPE burstgate_pods counter\nburstgate_pods 3\n");
    assert_eq!(code, 3, "a lint problem is reported: {out}");
    assert!(out.contains("_total"), "{out}");

    // ... and 1 for text it cannot parse.
    let (code, out) = check("burstgate_pods_total{provider=\"aci\" 3\n");
    assert_eq!(code, 1, "a malformed exposition is rejected: {out}");
    assert!(out.contains("parsing error"), "{out}");
}

#[test]
fn the_prometheus_server_is_the_pinned_version() {
    let prometheus = common::peers().path("PROMETHEUS");
    let (code, out) = common::run_tool(&prometheus, &["--version"], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("version 2.42.0"), "{out}");
}
