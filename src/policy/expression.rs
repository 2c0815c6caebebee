//! CEL match expressions over a pod (`match.expression`), compiled once at load time.
//!
//! The expression sees one variable, `pod`, with `namespace`, `name`, `labels`, `annotations`,
//! `cpu` (vCPU), `memoryGiB` and `gpus`. It must evaluate to a boolean; anything else is a
//! non-match reported in the explanation.
//!
//! The common shapes (`pod.<field> <op> <literal>`, and `!`, `&&`, `||` of those) are also
//! compiled to native predicates ([`crate::policy::predicate`]), which the engine evaluates
//! instead of the interpreter, with the same results; anything else runs in the interpreter.

use std::cell::{Cell, RefCell};
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
    /// Every field `other` names is named here too.
    fn covers(self, other: Reads) -> bool {
        self.union(other) == self
    }

    /// The fields either names.
    fn union(self, other: Reads) -> Reads {
        Reads {
            namespace: self.namespace || other.namespace,
            name: self.name || other.name,
            labels: self.labels || other.labels,
            annotations: self.annotations || other.annotations,
            cpu: self.cpu || other.cpu,
            memory_gib: self.memory_gib || other.memory_gib,
            gpus: self.gpus || other.gpus,
        }
    }

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
        Activation::with(pod, |a| a.matches(self))
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
        Activation::with(pod, |a| a.interpret(self))
    }
}

// The standard library is registered once per thread, not once per evaluation.
thread_local! {
    static ROOT: cel::Context<'static, 'static> = cel::Context::default();
}

/// One decision's pod as its match expressions see it. Native predicates read the [`PodView`];
/// for the interpreted ones the `pod` variable is built at most once per decision (again only
/// when a later expression reads a field the earlier ones did not), whatever the number of rules
/// with an expression the decision tries.
pub struct Activation<'a> {
    pod: &'a PodView,
    root: &'a cel::Context<'static, 'static>,
    /// The interpreter's scope holding `pod`, once built, and which fields that `pod` carries.
    scope: RefCell<Option<(Reads, cel::Context<'a, 'static>)>>,
    /// How many times `pod` was built (for the tests).
    builds: Cell<u32>,
}

impl Activation<'_> {
    /// Runs `f` with an activation for `pod` (one decision's worth).
    pub fn with<R>(pod: &PodView, f: impl FnOnce(&Activation<'_>) -> R) -> R {
        ROOT.with(|root| {
            f(&Activation {
                pod,
                root,
                scope: RefCell::new(None),
                builds: Cell::new(0),
            })
        })
    }

    /// The pod.
    pub fn pod(&self) -> &PodView {
        self.pod
    }

    /// Whether the pod matches `e`: it evaluates to `true` ([`Expression::matches`]).
    pub fn matches(&self, e: &Expression) -> bool {
        match &e.native {
            Some(p) => p.eval(self.pod) == Some(true),
            None => self.interpret(e) == Ok(true),
        }
    }

    /// Evaluates `e` in the CEL interpreter.
    fn interpret(&self, e: &Expression) -> Result<bool, String> {
        let mut scope = self.scope.borrow_mut();
        let reads = match &*scope {
            Some((have, _)) if have.covers(e.reads) => None,
            Some((have, _)) => Some(have.union(e.reads)),
            None => Some(e.reads),
        };
        if let Some(reads) = reads {
            let mut ctx = self.root.new_inner_scope();
            ctx.add_variable("pod", CelPod::of(self.pod, reads))
                .map_err(|e| e.to_string())?;
            self.builds.set(self.builds.get() + 1);
            *scope = Some((reads, ctx));
        }
        let Some((_, ctx)) = &*scope else {
            unreachable!("the scope was built above")
        };
        match e.program.execute(ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("expression returned {other:?}, not a boolean")),
            Err(e) => Err(format!("expression failed: {e}")),
        }
    }
}

impl<'a> CelPod<'a> {
    /// The `pod` variable with the fields `r` names.
    fn of(pod: &'a PodView, r: Reads) -> CelPod<'a> {
        CelPod {
            namespace: r.namespace.then_some(pod.namespace.as_str()),
            name: r.name.then_some(pod.name.as_str()),
            labels: r.labels.then_some(&pod.labels),
            annotations: r.annotations.then_some(&pod.annotations),
            cpu: r.cpu.then(|| pod.resources.vcpu()),
            memory_gib: r.memory_gib.then(|| pod.resources.memory_gib()),
            gpus: r.gpus.then_some(pod.resources.gpus as u64),
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
                p.labels
                    .insert("tier".into(), ["gold", "", "8"][i % 3].into());
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
    fn a_decision_builds_the_interpreters_pod_once_unless_a_later_expression_reads_more() {
        let interpreted = [
            "pod.cpu + 1.0 > 4.5",
            "pod.cpu * 2.0 == 8.0",
            "size(pod.labels) == 1 && pod.cpu - 1.0 == 3.0",
            "pod.namespace.startsWith('ba')",
        ]
        .map(|s| Expression::compile(s).unwrap());
        let native = Expression::compile("pod.cpu > 1.0 && pod.labels.tier == 'gold'").unwrap();
        assert!(interpreted.iter().all(|e| !e.is_native()) && native.is_native());
        let pod = pod();
        Activation::with(&pod, |a| {
            assert!(a.matches(&native));
            assert_eq!(a.builds.get(), 0, "a native predicate builds nothing");
            for (i, (e, builds)) in interpreted.iter().zip([1, 1, 2, 3]).enumerate() {
                assert!(a.matches(e), "{}", e.source());
                assert_eq!(a.builds.get(), builds, "after expression {i}");
                // The same answer as an evaluation on its own, with only its own fields.
                assert_eq!(a.interpret(e), e.eval(&pod));
            }
            // Everything read so far is in `pod` now: nothing more is built.
            for e in &interpreted {
                assert_eq!(a.interpret(e), Ok(true));
            }
            assert_eq!(a.builds.get(), 3);
        });
    }

    #[test]
    fn a_non_boolean_result_is_an_error_not_a_match() {
        let e = Expression::compile("pod.cpu").unwrap();
        assert!(e.eval(&pod()).is_err());
    }
}
