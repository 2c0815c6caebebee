//! `burstgate policy test`: policy test files (`policies/tests/*.yaml`), like `opa test`.
//!
//! A test file lists cases: a pod, optionally what is already in use, and the decision the pod
//! must get. This module reads the files (it is a CLI helper, not part of the pure engine).
//!
//! ```yaml
//! apiVersion: burstgate.io/v1alpha1
//! kind: PolicyTest
//! cases:
//!   - name: a GPU job goes to ACI
//!     pod: {metadata: {namespace: ml}, spec: {containers: [...]}}
//!     given: {targets: {aci-eastus: {vcpu: 98}}, budgets: {team-a: {hourlyCost: 4.9}}}
//!     expect: {decision: placed, target: aci-eastus, reason: "latency"}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::policy::checked::{Policy, usd_to_micros};
use crate::policy::explain;
use crate::policy::ledger::{Ledger, Reservation, Usage};
use crate::policy::pod::PodView;

/// A policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestFile {
    api_version: String,
    kind: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    pod: serde_json::Value,
    #[serde(default)]
    given: Given,
    expect: Expect,
}

/// What is already in use before the case's pod is decided.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Given {
    #[serde(default)]
    targets: BTreeMap<String, Amount>,
    #[serde(default)]
    budgets: BTreeMap<String, Amount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Amount {
    #[serde(default)]
    vcpu: f64,
    #[serde(default, rename = "memoryGiB")]
    memory_gib: f64,
    #[serde(default)]
    pods: u64,
    #[serde(default)]
    hourly_cost: f64,
}

impl Amount {
    fn usage(&self) -> Usage {
        Usage {
            milli_cpu: (self.vcpu * 1000.0).round() as u64,
            memory_mib: (self.memory_gib * 1024.0).round() as u64,
            pods: self.pods,
            hourly_micros: usd_to_micros(self.hourly_cost),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    decision: String,
    #[serde(default)]
    target: Option<String>,
    /// A substring the one-line explanation must contain.
    #[serde(default)]
    reason: Option<String>,
}

/// Errors reading test files or pod manifests. Never retryable: fix the file.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// Path.
        path: String,
        /// Line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    /// `file: case name`.
    pub name: String,
    /// Failure description, `None` when it passed.
    pub failure: Option<String>,
}

/// The results of every case.
#[derive(Debug, Default)]
pub struct TestReport {
    /// In file, then case order.
    pub cases: Vec<CaseResult>,
}

impl TestReport {
    /// True when every case passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.cases.is_empty() && self.cases.iter().all(|c| c.failure.is_none())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            match &c.failure {
                None => writeln!(f, "PASS  {}", c.name)?,
                Some(why) => writeln!(
                    f,
                    "FAIL  {}\n      {}",
                    c.name,
                    why.replace('\n', "\n      ")
                )?,
            }
        }
        let failed = self.cases.iter().filter(|c| c.failure.is_some()).count();
        if self.cases.is_empty() {
            writeln!(f, "no test cases found")
        } else {
            writeln!(f, "{} passed, {failed} failed", self.cases.len() - failed)
        }
    }
}

fn invalid(path: &Path, line: Option<usize>, message: impl Into<String>) -> TestError {
    TestError::Invalid {
        path: path.display().to_string(),
        line,
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, TestError> {
    std::fs::read_to_string(path).map_err(|source| TestError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn yaml_error(path: &Path, e: serde_saphyr::Error) -> TestError {
    let line = e.location().map(|l| l.line() as usize);
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or_default();
    invalid(
        path,
        line,
        first.split(" at line ").next().unwrap_or(first).to_string(),
    )
}

/// Reads a Pod manifest file into the engine's view.
pub fn read_pod_file(path: &Path) -> Result<(Pod, PodView), TestError> {
    let text = read(path)?;
    let value: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| yaml_error(path, e))?;
    let pod = pod_object_from_value(value).map_err(|m| invalid(path, None, m))?;
    let view = PodView::from_pod(&pod).map_err(|e| invalid(path, None, e.to_string()))?;
    Ok((pod, view))
}

/// The engine's view of a Pod given as a YAML/JSON value (see [`pod_object_from_value`]).
pub fn pod_from_value(value: serde_json::Value) -> Result<PodView, String> {
    PodView::from_pod(&pod_object_from_value(value)?).map_err(|e| e.to_string())
}

/// The exclusions a gateway would apply to `pod` for its features: targets whose provider kind
/// cannot run them ([`declared`](crate::provider::kit::declared) capabilities).
pub fn feature_exclusions(policy: &Policy, pod: &Pod) -> Vec<crate::policy::Exclusion> {
    crate::provider::kit::exclusions(policy, pod, |t| {
        Some(crate::provider::kit::declared(t.provider))
    })
}

/// A Pod from a YAML/JSON value; `apiVersion: v1` and `kind: Pod` may be left out.
pub fn pod_object_from_value(mut value: serde_json::Value) -> Result<Pod, String> {
    let obj = value.as_object_mut().ok_or("a pod must be a mapping")?;
    obj.entry("apiVersion").or_insert("v1".into());
    obj.entry("kind").or_insert("Pod".into());
    obj.entry("metadata").or_insert(serde_json::json!({}));
    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.entry("name").or_insert("test-pod".into());
    }
    serde_json::from_value(value).map_err(|e| format!("not a valid Pod: {e}"))
}

/// Runs every `*.yaml` test file in `dir` against `policy`.
pub fn run_dir(policy: &Policy, dir: &Path) -> Result<TestReport, TestError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| TestError::Io {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut report = TestReport::default();
    for path in paths {
        run_file(policy, &path, &mut report)?;
    }
    Ok(report)
}

fn run_file(policy: &Policy, path: &Path, report: &mut TestReport) -> Result<(), TestError> {
    let text = read(path)?;
    let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| yaml_error(path, e))?;
    if file.api_version != crate::policy::model::API_VERSION || file.kind != "PolicyTest" {
        return Err(invalid(
            path,
            Some(1),
            "must be apiVersion: burstgate.io/v1alpha1, kind: PolicyTest",
        ));
    }
    let short = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for case in file.cases {
        let failure = run_case(policy, &case).err();
        report.cases.push(CaseResult {
            name: format!("{short}: {}", case.name),
            failure,
        });
    }
    Ok(())
}

fn run_case(policy: &Policy, case: &Case) -> Result<(), String> {
    let object = pod_object_from_value(case.pod.clone())?;
    let pod = PodView::from_pod(&object).map_err(|e| e.to_string())?;
    let mut ledger = Ledger::new(policy);
    for (name, amount) in &case.given.targets {
        if policy.target_by_name(name).is_none() {
            return Err(format!("given.targets names unknown target {name:?}"));
        }
        let r = Reservation {
            target: name.clone(),
            budgets: vec![],
            usage: amount.usage(),
        };
        ledger.restore(policy, &format!("given-target-{name}"), r);
    }
    for (name, amount) in &case.given.budgets {
        if !policy.budgets.iter().any(|b| b.name == *name) {
            return Err(format!("given.budgets names unknown budget {name:?}"));
        }
        let r = Reservation {
            target: String::new(),
            budgets: vec![name.clone()],
            usage: amount.usage(),
        };
        ledger.restore(policy, &format!("given-budget-{name}"), r);
    }
    let decision = ledger.place(policy, &pod, &feature_exclusions(policy, &object));
    let got_target = decision
        .placement()
        .map(|p| policy.target(p.target).name.clone());
    let summary = explain::summary(policy, &decision);
    let mut problems = Vec::new();
    if decision.kind() != case.expect.decision {
        problems.push(format!(
            "expected decision {}, got {}",
            case.expect.decision,
            decision.kind()
        ));
    }
    if case.expect.target.is_some() && case.expect.target != got_target {
        problems.push(format!(
            "expected target {:?}, got {:?}",
            case.expect.target.as_deref().unwrap_or("-"),
            got_target.as_deref().unwrap_or("none")
        ));
    }
    if let Some(reason) = &case.expect.reason
        && !summary.contains(reason.as_str())
    {
        problems.push(format!("expected the explanation to contain {reason:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("; "), summary))
    }
}
