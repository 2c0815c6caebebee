//! The `burstgate` binary as operators call it: `policy check|explain|test|schema` and `simulate`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn burstgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burstgate"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the burstgate binary runs")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn assert_clean_failure(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 expected; stdout: {} stderr: {stderr}",
        text(&out.stdout)
    );
    assert!(
        !stderr.contains("panicked"),
        "a bad input must never panic: {stderr}"
    );
    stderr
}

fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

const TARGETS: &str = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {vcpuHour: 0.0405, gibHour: 0.00445}
";

#[test]
fn policy_check_accepts_the_shipped_policies() {
    let out = burstgate(&["policy", "check", "policies"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("policies: ok (5 files, 6 targets"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_demo_policies_need_no_cloud_account_and_check_clean() {
    let out = burstgate(&["policy", "check", "examples/policies-demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let policy = burstgate::policy::load::load_dir(&repo().join("examples/policies-demo")).unwrap();
    assert!(
        policy
            .targets
            .iter()
            .all(|t| t.provider == burstgate::policy::model::ProviderKind::Sim),
        "every demo target runs on the simulator"
    );
}

#[test]
fn policy_check_names_file_line_and_field_of_every_problem() {
    let bad_rules = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: westus
      pricing: {vcpuHour: -0.5}
  rules:
    - name: r1
      match:
        expression: \"pod.cpu >\"
      fallback: [nowhere]
";
    let dir = policy_dir(&[("a.yaml", TARGETS), ("b.yaml", bad_rules)]);
    let stderr = assert_clean_failure(&burstgate(&[
        "policy",
        "check",
        dir.path().to_str().unwrap(),
    ]));
    let b = dir.path().join("b.yaml").display().to_string();
    let a = dir.path().join("a.yaml").display().to_string();
    assert!(stderr.contains(&format!("{b}:5: spec.targets[0].name: duplicate target name \"aci-eastus\" (first defined at {a}:5)")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{b}:12: spec.rules[0].match.expression: invalid CEL expression"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{b}:13: spec.rules[0].fallback[0]: unknown target \"nowhere\""
        )),
        "{stderr}"
    );
}

#[test]
fn policy_check_rejects_unknown_fields_and_malformed_yaml_with_their_lines() {
    let unknown = TARGETS.replace(
        "      region: eastus",
        "      region: eastus\n      regoin: westus",
    );
    let dir = policy_dir(&[("a.yaml", &unknown)]);
    let stderr = assert_clean_failure(&burstgate(&[
        "policy",
        "check",
        dir.path().to_str().unwrap(),
    ]));
    assert!(
        stderr.contains("a.yaml:8: spec.targets[0].regoin: unknown field `regoin`"),
        "{stderr}"
    );

    let dir = policy_dir(&[(
        "a.yaml",
        "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets: [{name: x\n",
    )]);
    let stderr = assert_clean_failure(&burstgate(&[
        "policy",
        "check",
        dir.path().to_str().unwrap(),
    ]));
    assert!(stderr.contains("a.yaml:"), "{stderr}");
}

#[test]
fn policy_check_of_a_missing_directory_is_a_clear_error() {
    let stderr = assert_clean_failure(&burstgate(&["policy", "check", "/nonexistent/policies"]));
    assert!(
        stderr.contains("cannot read /nonexistent/policies"),
        "{stderr}"
    );
}

#[test]
fn policy_explain_prints_the_documented_json_shape_with_every_target() {
    let pod = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pod.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: web}\nspec:\n  containers:\n    - {name: app, image: nginx, resources: {requests: {cpu: 500m, memory: 512Mi}}}\n",
    )
    .unwrap();
    let out = burstgate(&[
        "policy",
        "explain",
        "--policy",
        "policies",
        pod.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "placed");
    assert_eq!(v["target"], "cluster-local");
    assert_eq!(v["provider"], "cluster");
    assert_eq!(v["region"], "local");
    assert_eq!(v["rule"], "latency-first");
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6, "every target has a verdict");
    for t in targets {
        for key in ["name", "verdict", "reason", "hourlyCost", "score"] {
            assert!(t.get(key).is_some(), "{key} missing in {t}");
        }
    }
    let westus = targets.iter().find(|t| t["name"] == "aci-westus").unwrap();
    assert_eq!(westus["verdict"], "rejected");
    assert_eq!(westus["reason"], "latency 70 > 30 ms");
}

#[test]
fn policy_explain_of_a_pod_file_that_is_not_a_pod_fails_cleanly() {
    let pod = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pod.path(), "spec: {containers: 3}\n").unwrap();
    let stderr = assert_clean_failure(&burstgate(&[
        "policy",
        "explain",
        "--policy",
        "policies",
        pod.path().to_str().unwrap(),
    ]));
    assert!(stderr.contains("not a valid Pod"), "{stderr}");
}

/// A pod as admission makes it, explained against the shipped policies: where its provider
/// would run it without the automatic token, explain says so (text and JSON).
#[test]
fn policy_explain_says_which_targets_would_run_a_pod_without_its_automatic_token() {
    let pod = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pod.path(),
        include_str!("../fixtures/pods/deployment-web.json"),
    )
    .unwrap();
    let path = pod.path().to_str().unwrap();
    let args = |output| {
        [
            "policy", "explain", "--policy", "policies", path, "--output", output,
        ]
    };
    let out = burstgate(&args("text"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("note: on fargate-use1 the pod runs without: automatic service-account token kube-api-access-"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("note: on aci-"),
        "ACI mounts the token: {stdout}"
    );
    // What kubectl cannot do there, per target: Fargate's exec needs ECS Exec.
    assert!(
        stdout.contains("kubectl on fargate-use1 (fargate): kubectl exec, attach and port-forward answer 501 (ECS Exec needs tasks run with enableExecuteCommand"),
        "{stdout}"
    );
    let out = burstgate(&args("json"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["runsWithout"]["fargate-use1"][0]
            .as_str()
            .unwrap()
            .starts_with("automatic service-account token"),
        "{v}"
    );
    assert!(
        v["kubectlLimits"]["fargate-use1"]
            .as_str()
            .is_some_and(|l| l.contains("SSM agent")),
        "{v}"
    );
}

#[test]
fn policy_test_passes_every_shipped_case() {
    let out = burstgate(&["policy", "test", "policies"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn policy_test_fails_with_exit_1_and_says_why_when_a_case_is_wrong() {
    let dir = policy_dir(&[("a.yaml", TARGETS)]);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/t.yaml"),
        "apiVersion: burstgate.io/v1alpha1\nkind: PolicyTest\ncases:\n  - name: wrong\n    pod: {metadata: {namespace: x}, spec: {containers: [{name: a, image: b}]}}\n    expect: {decision: pending}\n",
    )
    .unwrap();
    let out = burstgate(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL  t.yaml: wrong"), "{stdout}");
    assert!(
        stdout.contains("expected decision pending, got placed"),
        "{stdout}"
    );
}

#[test]
fn the_published_schema_matches_the_rust_types() {
    let out = burstgate(&["policy", "schema"]);
    assert!(out.status.success());
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let published: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        generated, published,
        "policies/schema.json is stale: run `burstgate policy schema > policies/schema.json`"
    );
    assert_eq!(
        generated["properties"]["spec"]["$ref"],
        "#/$defs/PolicySpec"
    );
}

#[test]
fn simulate_with_its_defaults_writes_a_report_and_a_chart() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = burstgate(&[
        "simulate",
        "--quiet",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(report.is_object());
    let svg = std::fs::read_to_string(out_dir.path().join("running.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "an SVG chart"
    );
    assert!(
        text(&out.stdout).contains("cluster-local"),
        "the table lists targets: {}",
        text(&out.stdout)
    );
}

#[test]
fn simulate_with_a_workload_that_points_nowhere_is_a_clear_error() {
    let stderr = assert_clean_failure(&burstgate(&[
        "simulate",
        "--quiet",
        "--workload",
        "/nonexistent/burst.yaml",
    ]));
    assert!(stderr.contains("/nonexistent/burst.yaml"), "{stderr}");
}
