//! CEL match expressions over a pod (`match.expression`), compiled once at load time.
//!
//! The expression sees one variable, `pod`, with `namespace`, `name`, `labels`, `annotations`,
//! `cpu` (vCPU), `memoryGiB` and `gpus`. It must evaluate to a boolean; anything else is a
//! non-match reported in the explanation.
//!
//! The common shapes (`pod.<field> <op> <literal>`, and `!`, `&&`, `||` of those) are also
//! compiled to native predicates ([`crate::policy::predicate`]), which the engine evaluates
//! instead of the interpreter, with the same results; anything else runs in the interpreter.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::pod::PodView;
use crate::policy::predicate::Predicate;

/// A compiled CEL expression.
pub struct Expression {
    source: String,
    program: cel::Program,
    /// The fields of `pod` the expression may read: building the `pod` variable is most of an
    /// evaluation's time (the label and annotation maps above all), so an expression gets only
    /// the fields it names.
    reads: Reads,
    /// The same expression as a native predicate, when it has one of the compiled shapes.
    native: Option<Predicate>,
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
            native: Predicate::compile(program.expression()).ok(),
            reads: Reads::of(source),
            source: source.to_string(),
            program,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it is compiled to a native predicate (else the CEL interpreter runs it).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Whether the pod matches: the expression evaluates to `true` (what [`Expression::eval`]
    /// gives as `Ok(true)`, without wording an error).
    pub fn matches(&self, pod: &PodView) -> bool {
        match &self.native {
            Some(p) => p.eval(pod) == Some(true),
            None => self.eval_cel(pod) == Ok(true),
        }
    }

    /// Evaluates against a pod: `Ok(bool)`, or why it could not (treated as no match).
    pub fn eval(&self, pod: &PodView) -> Result<bool, String> {
        match self.native.as_ref().and_then(|p| p.eval(pod)) {
            Some(b) => Ok(b),
            // Not compiled, or an error the interpreter words.
            None => self.eval_cel(pod),
        }
    }

    /// Evaluates in the CEL interpreter, whether or not a native predicate exists.
    pub(crate) fn eval_cel(&self, pod: &PodView) -> Result<bool, String> {
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

    /// Pods that make every comparison of the native tests go each way, and miss labels.
    fn pods() -> Vec<PodView> {
        let mut pods = Vec::new();
        for (i, (milli_cpu, memory_mib, gpus)) in [
            (0, 0, 0),
            (500, 512, 0),
            (1000, 1024, 1),
            (2000, 32 * 1024, 0),
            (8000, 32 * 1024 + 1, 4),
            (8001, 256 * 1024, 8),
            (u64::MAX, u64::MAX, u32::MAX),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = PodView {
                namespace: ["batch", "", "gold", "prod-1"][i % 4].into(),
                name: ["job-1", "8", "web"][i % 3].into(),
                ..Default::default()
            };
            if i % 3 != 0 {
                p.labels.insert("tier".into(), ["gold", "", "8"][i % 3].into());
            }
            if i % 2 == 0 {
                p.labels
                    .insert("app.kubernetes.io/name".into(), "batch".into());
                p.annotations.insert("team".into(), "gold".into());
            }
            if i % 4 == 1 {
                p.annotations
                    .insert("burstgate.io/objective".into(), "cost".into());
            }
            p.resources.milli_cpu = milli_cpu;
            p.resources.memory_mib = memory_mib;
            p.resources.gpus = gpus;
            pods.push(p);
        }
        pods
    }

    /// `pod.<field> <op> <literal>` both ways round, field against field, key tests.
    fn native_atoms() -> Vec<String> {
        let fields = [
            "pod.cpu",
            "pod.memoryGiB",
            "pod.gpus",
            "pod.namespace",
            "pod.name",
            "pod.labels.tier",
            "pod.labels['app.kubernetes.io/name']",
            "pod.annotations.team",
            "pod.annotations['burstgate.io/objective']",
        ];
        let literals = [
            "0",
            "1",
            "-1",
            "4",
            "0u",
            "2u",
            "0.5",
            "8.0",
            "32.0",
            "1e300",
            "18446744073709551615u",
            "9223372036854775807",
            "'gold'",
            "'batch'",
            "''",
            "'8'",
        ];
        let ops = ["==", "!=", "<", "<=", ">", ">="];
        let mut atoms = Vec::new();
        for f in fields {
            for op in ops {
                for l in literals {
                    atoms.push(format!("{f} {op} {l}"));
                    atoms.push(format!("{l} {op} {f}"));
                }
                for g in fields {
                    atoms.push(format!("{f} {op} {g}"));
                }
            }
        }
        for key in ["tier", "team", "app"] {
            for map in ["labels", "annotations"] {
                atoms.push(format!("has(pod.{map}.{key})"));
                atoms.push(format!("'{key}' in pod.{map}"));
            }
        }
        atoms
    }

    #[test]
    fn native_predicates_evaluate_as_the_interpreter_does_on_many_expressions_and_pods() {
        let atoms = native_atoms();
        let mut sources = atoms.clone();
        // Combinations, chosen by a fixed linear congruential sequence.
        let mut x: u64 = 13;
        let mut pick = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            atoms[(x >> 33) as usize % atoms.len()].as_str()
        };
        for i in 0..3000 {
            let (a, b, c) = (pick(), pick(), pick());
            sources.push(match i % 8 {
                0 => format!("{a} && {b}"),
                1 => format!("{a} || {b}"),
                2 => format!("!({a})"),
                3 => format!("({a} || {b}) && !({c})"),
                4 => format!("{a} && {b} && {c}"),
                5 => format!("{a} || {b} || {c}"),
                6 => format!("true && ({a} || false)"),
                _ => format!("!(false || {a}) || ({b} && !({c}))"),
            });
        }
        let pods = pods();
        let (mut yes, mut no, mut failed) = (0, 0, 0);
        for source in &sources {
            let e = Expression::compile(source).unwrap();
            let native = e
                .native
                .as_ref()
                .unwrap_or_else(|| panic!("{source} is not compiled natively"));
            for pod in &pods {
                let cel = e.eval_cel(pod);
                assert_eq!(
                    native.eval(pod),
                    cel.as_ref().ok().copied(),
                    "{source} on {pod:?}: interpreter says {cel:?}"
                );
                assert_eq!(e.eval(pod), cel, "{source}");
                assert_eq!(e.matches(pod), cel == Ok(true), "{source}");
                match cel {
                    Ok(true) => yes += 1,
                    Ok(false) => no += 1,
                    Err(_) => failed += 1,
                }
            }
        }
        // Each outcome is common enough that the equality above says something about it.
        let total = yes + no + failed;
        for (what, n) in [("true", yes), ("false", no), ("an error", failed)] {
            assert!(n * 10 >= total, "{what} in {n} of {total} evaluations");
        }
    }

    #[test]
    fn other_shapes_stay_with_the_interpreter_and_still_evaluate() {
        for (source, want) in [
            ("pod.namespace.startsWith('ba')", Ok(true)),
            ("size(pod.labels) == 1", Ok(true)),
            ("pod.gpus in [0u, 1u]", Ok(true)),
            ("pod.cpu + 1.0 > 4.5", Ok(true)),
            ("pod.cpu > 1.0 ? true : false", Ok(true)),
            ("pod.cpu == true", Ok(false)),
            ("pod.labels == {'tier': 'gold'}", Ok(true)),
            ("has(pod.cpu)", Ok(true)),
            ("pod.uid == ''", Err(())),
        ] {
            let e = Expression::compile(source).unwrap();
            assert!(!e.is_native(), "{source}");
            assert_eq!(e.eval(&pod()).map_err(|_| ()), want, "{source}");
        }
    }

    #[test]
    fn a_native_expression_words_its_errors_as_the_interpreter_does() {
        let e = Expression::compile("pod.labels.zone == 'west' && pod.cpu > 1.0").unwrap();
        assert!(e.is_native());
        let err = e.eval(&pod()).unwrap_err();
        assert_eq!(Err(err.clone()), e.eval_cel(&pod()));
        assert!(err.contains("zone"), "{err}");
        assert!(!e.matches(&pod()));
    }

    #[test]
    fn a_non_boolean_result_is_an_error_not_a_match() {
        let e = Expression::compile("pod.cpu").unwrap();
        assert!(e.eval(&pod()).is_err());
    }
}
