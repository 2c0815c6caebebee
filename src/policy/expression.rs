//! CEL match expressions over a pod (`match.expression`), compiled once at load time.
//!
//! The expression sees one variable, `pod`, with `namespace`, `name`, `labels`, `annotations`,
//! `cpu` (vCPU), `memoryGiB` and `gpus`. It must evaluate to a boolean; anything else is a
//! non-match reported in the explanation.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::pod::PodView;

/// A compiled CEL expression.
pub struct Expression {
    source: String,
    program: cel::Program,
    /// The fields of `pod` the expression may read: building the `pod` variable is most of an
    /// evaluation's time (the label and annotation maps above all), so an expression gets only
    /// the fields it names.
    reads: Reads,
}

/// Which fields of `pod` an expression may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reads {
    namespace: bool,
    name: bool,
    labels: bool,
    annotations: bool,
    cpu: bool,
    memory_gib: bool,
    gpus: bool,
}

impl Reads {
    /// The fields `source` names; every field when it uses `pod` other than as `pod.<field>`
    /// (`pod["labels"]`, `size(pod)`, a macro over its keys, the word inside a string).
    fn of(source: &str) -> Reads {
        let whole = source
            .match_indices("pod")
            .any(|(i, _)| !source[i + 3..].starts_with('.'));
        let names = |field: &str| whole || source.contains(field);
        Reads {
            namespace: names("namespace"),
            name: names("name"),
            labels: names("labels"),
            annotations: names("annotations"),
            cpu: names("cpu"),
            memory_gib: names("memoryGiB"),
            gpus: names("gpus"),
        }
    }
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// The `pod` variable as CEL sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CelPod<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<f64>,
    #[serde(rename = "memoryGiB", skip_serializing_if = "Option::is_none")]
    memory_gib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpus: Option<u64>,
}

impl Expression {
    /// Compiles `source`; the error says what is wrong, for a file:line:field message.
    pub fn compile(source: &str) -> Result<Expression, String> {
        let program =
            cel::Program::compile(source).map_err(|e| format!("invalid CEL expression: {e}"))?;
        let unknown: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|v| *v != "pod")
            .map(str::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "CEL expression uses unknown variable(s) {}; only `pod` is defined",
                unknown.join(", ")
            ));
        }
        Ok(Expression {
            reads: Reads::of(source),
            source: source.to_string(),
            program,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a pod: `Ok(bool)`, or why it could not (treated as no match).
    pub fn eval(&self, pod: &PodView) -> Result<bool, String> {
        let r = self.reads;
        let view = CelPod {
            namespace: r.namespace.then_some(pod.namespace.as_str()),
            name: r.name.then_some(pod.name.as_str()),
            labels: r.labels.then_some(&pod.labels),
            annotations: r.annotations.then_some(&pod.annotations),
            cpu: r.cpu.then(|| pod.resources.vcpu()),
            memory_gib: r.memory_gib.then(|| pod.resources.memory_gib()),
            gpus: r.gpus.then_some(pod.resources.gpus as u64),
        };
        // The standard library is registered once per thread, not once per evaluation.
        thread_local! {
            static ROOT: cel::Context<'static, 'static> = cel::Context::default();
        }
        let result = ROOT.with(|root| {
            let mut ctx = root.new_inner_scope();
            ctx.add_variable("pod", view).map_err(|e| e.to_string())?;
            Ok::<_, String>(self.program.execute(&ctx))
        })?;
        match result {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("expression returned {other:?}, not a boolean")),
            Err(e) => Err(format!("expression failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodView {
        let mut p = PodView {
            namespace: "batch".into(),
            name: "job-1".into(),
            ..Default::default()
        };
        p.labels.insert("tier".into(), "gold".into());
        p.resources.milli_cpu = 4000;
        p
    }

    #[test]
    fn an_expression_sees_the_pods_labels_and_size() {
        let e = Expression::compile("pod.labels.tier == 'gold' && pod.cpu >= 2.0").unwrap();
        assert_eq!(e.eval(&pod()), Ok(true));
        let e = Expression::compile("pod.namespace.startsWith('prod')").unwrap();
        assert_eq!(e.eval(&pod()), Ok(false));
    }

    #[test]
    fn an_expression_with_a_syntax_error_is_rejected_at_compile_time() {
        assert!(
            Expression::compile("pod.labels.tier ==")
                .unwrap_err()
                .starts_with("invalid CEL expression")
        );
    }

    #[test]
    fn an_expression_naming_an_unknown_variable_is_rejected() {
        assert!(
            Expression::compile("node.cpu > 1")
                .unwrap_err()
                .contains("unknown variable(s) node")
        );
    }

    #[test]
    fn an_expression_that_never_names_the_maps_evaluates_the_same_without_them() {
        let e = Expression::compile("pod.cpu >= 2.0 && pod.namespace == 'batch'").unwrap();
        assert!(!e.reads.labels && !e.reads.annotations && !e.reads.gpus);
        assert!(e.reads.cpu && e.reads.namespace);
        assert_eq!(e.eval(&pod()), Ok(true));
        // Any other use of `pod` sees the whole variable.
        for whole in [
            "size(pod) == 7",
            "pod['labels']['tier'] == 'gold'",
            "'labels' in pod",
        ] {
            let e = Expression::compile(whole).unwrap();
            assert!(
                e.reads.labels && e.reads.annotations && e.reads.gpus,
                "{whole}"
            );
            assert_eq!(e.eval(&pod()), Ok(true), "{whole}");
        }
        let e = Expression::compile("pod.annotations.size() == 0").unwrap();
        assert!(!e.reads.labels && e.reads.annotations);
        assert_eq!(e.eval(&pod()), Ok(true));
    }

    #[test]
    fn a_non_boolean_result_is_an_error_not_a_match() {
        let e = Expression::compile("pod.cpu").unwrap();
        assert!(e.eval(&pod()).is_err());
    }
}
