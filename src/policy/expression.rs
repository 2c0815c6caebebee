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
    /// Whether the expression may read `pod.labels` / `pod.annotations`: the maps are the
    /// costly part of the `pod` variable (most of a decision's time when copied every
    /// evaluation), so an expression that never names them gets a `pod` without them.
    reads_labels: bool,
    reads_annotations: bool,
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
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
    cpu: f64,
    #[serde(rename = "memoryGiB")]
    memory_gib: f64,
    gpus: u64,
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
        // `pod` used other than as `pod.<field>` (`pod["labels"]`, `size(pod)`, a macro over its
        // keys, the word inside a string) may see every field.
        let whole = source
            .match_indices("pod")
            .any(|(i, _)| !source[i + 3..].starts_with('.'));
        Ok(Expression {
            reads_labels: whole || source.contains("labels"),
            reads_annotations: whole || source.contains("annotations"),
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
        let view = CelPod {
            namespace: &pod.namespace,
            name: &pod.name,
            labels: self.reads_labels.then_some(&pod.labels),
            annotations: self.reads_annotations.then_some(&pod.annotations),
            cpu: pod.resources.vcpu(),
            memory_gib: pod.resources.memory_gib(),
            gpus: pod.resources.gpus as u64,
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
        assert!(!e.reads_labels && !e.reads_annotations);
        assert_eq!(e.eval(&pod()), Ok(true));
        // Any other use of `pod` sees the whole variable.
        for whole in [
            "size(pod) == 7",
            "pod['labels']['tier'] == 'gold'",
            "'labels' in pod",
        ] {
            let e = Expression::compile(whole).unwrap();
            assert!(e.reads_labels && e.reads_annotations, "{whole}");
            assert_eq!(e.eval(&pod()), Ok(true), "{whole}");
        }
        let e = Expression::compile("pod.annotations.size() == 0").unwrap();
        assert!(!e.reads_labels && e.reads_annotations);
        assert_eq!(e.eval(&pod()), Ok(true));
    }

    #[test]
    fn a_non_boolean_result_is_an_error_not_a_match() {
        let e = Expression::compile("pod.cpu").unwrap();
        assert!(e.eval(&pod()).is_err());
    }
}
