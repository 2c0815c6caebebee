//! Native predicates: the common shapes of CEL match expressions compiled to plain Rust at load
//! time, so that a decision evaluates them without building a CEL value or running the
//! interpreter, with the interpreter's own results.
//!
//! Compiled (everything else stays with the CEL interpreter, [`Unsupported`] says why):
//! - comparisons `==`, `!=`, `<`, `<=`, `>`, `>=` between `pod.<field>` and literals (int, uint,
//!   double, string) or other fields, either side; the fields are `namespace`, `name`, `cpu`,
//!   `memoryGiB`, `gpus`, `labels.<key>`, `labels['<key>']`, `annotations.<key>` and
//!   `annotations['<key>']`;
//! - `has(pod.labels.<key>)`, `'<key>' in pod.labels` (and the same for `annotations`);
//! - `true`, `false`, and `!`, `&&`, `||` over all of these.
//!
//! The semantics are those of the `cel` crate (0.15), which the tests prove by evaluating both
//! ways on many expressions and pods: numbers compare across int, uint and double; a string
//! compares only with a string; `==` between values that do not compare is `false` where `<` is
//! an error; a missing label or annotation is an error; `&&` and `||` absorb an error when the
//! other side decides (`false && error` is `false`, `true || error` is `true`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use crate::policy::pod::PodView;

/// Why an expression is not compiled natively (it is then evaluated by the CEL interpreter, so
/// none of these is an error an operator sees). Never retryable: the expression is what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A function, method or operator outside the subset (`startsWith`, `size`, `+`, `?:`...).
    #[error("function or operator `{0}` is not compiled natively")]
    Function(String),
    /// A construct outside the subset (a list, a map, a comprehension, a variable other than
    /// `pod`, a bool or null literal as an operand...).
    #[error("{0} is not compiled natively")]
    Construct(&'static str),
    /// `pod.<field>` where the field is not one of the pod's scalar fields or maps.
    #[error("`pod.{0}` is not a field compiled natively")]
    Field(String),
}

/// A boolean-valued expression. [`Predicate::eval`] gives `None` where CEL fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `true` or `false`.
    Const(bool),
    /// `!p`.
    Not(Box<Predicate>),
    /// `a && b`.
    And(Box<Predicate>, Box<Predicate>),
    /// `a || b`.
    Or(Box<Predicate>, Box<Predicate>),
    /// `a <op> b`.
    Compare(Op, Operand, Operand),
    /// `has(pod.<map>.<key>)`, `'<key>' in pod.<map>`.
    HasKey(Map, String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A scalar operand of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A field of the pod.
    Field(Field),
    /// An int literal.
    Int(i64),
    /// A uint literal (`1u`).
    UInt(u64),
    /// A double literal.
    Double(f64),
    /// A string literal.
    Str(String),
}

/// A scalar field of `pod`.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `pod.namespace` (string).
    Namespace,
    /// `pod.name` (string).
    Name,
    /// `pod.cpu`, vCPU (double).
    Cpu,
    /// `pod.memoryGiB` (double).
    MemoryGib,
    /// `pod.gpus` (uint).
    Gpus,
    /// `pod.labels.<key>` (string; an error when absent).
    Label(String),
    /// `pod.annotations.<key>` (string; an error when absent).
    Annotation(String),
}

/// A map of `pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// `pod.labels`.
    Labels,
    /// `pod.annotations`.
    Annotations,
}

/// A value as CEL types it, borrowed from the pod or the predicate.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(&'a str),
}

impl Predicate {
    /// Compiles a CEL expression tree, or says why it stays with the interpreter.
    pub fn compile(e: &IdedExpr) -> Result<Predicate, Unsupported> {
        match &e.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => Ok(Predicate::Const(*b.inner())),
            Expr::Select(s) if s.test => Ok(Predicate::HasKey(map(&s.operand)?, s.field.clone())),
            Expr::Call(call) if call.target.is_none() => {
                let boxed = |a: &IdedExpr| Predicate::compile(a).map(Box::new);
                let op = match call.func_name.as_str() {
                    operators::EQUALS => Op::Eq,
                    operators::NOT_EQUALS => Op::Ne,
                    operators::LESS => Op::Lt,
                    operators::LESS_EQUALS => Op::Le,
                    operators::GREATER => Op::Gt,
                    operators::GREATER_EQUALS => Op::Ge,
                    name => {
                        return match (name, call.args.as_slice()) {
                            (operators::LOGICAL_NOT, [a]) => Ok(Predicate::Not(boxed(a)?)),
                            (operators::LOGICAL_AND, [a, b]) => {
                                Ok(Predicate::And(boxed(a)?, boxed(b)?))
                            }
                            (operators::LOGICAL_OR, [a, b]) => {
                                Ok(Predicate::Or(boxed(a)?, boxed(b)?))
                            }
                            (operators::IN, [key, m]) => match &key.expr {
                                Expr::Literal(LiteralValue::String(k)) => {
                                    Ok(Predicate::HasKey(map(m)?, k.inner().to_string()))
                                }
                                _ => Err(Unsupported::Construct(
                                    "`in` with a key other than a string literal",
                                )),
                            },
                            _ => Err(Unsupported::Function(name.to_string())),
                        };
                    }
                };
                match call.args.as_slice() {
                    [a, b] => Ok(Predicate::Compare(op, operand(a)?, operand(b)?)),
                    _ => Err(Unsupported::Function(call.func_name.clone())),
                }
            }
            Expr::Call(call) => Err(Unsupported::Function(call.func_name.clone())),
            Expr::Literal(_) => Err(Unsupported::Construct("a literal other than a bool")),
            Expr::Select(_) | Expr::Ident(_) => {
                Err(Unsupported::Construct("a value as a condition"))
            }
            Expr::Comprehension(_) => Err(Unsupported::Construct("a comprehension (macro)")),
            Expr::List(_) | Expr::Map(_) | Expr::Struct(_) | Expr::Unspecified => {
                Err(Unsupported::Construct("a list, map or struct"))
            }
        }
    }

    /// Evaluates against a pod: `Some(result)`, or `None` where the CEL interpreter returns an
    /// error (which it then does; it alone words the error). Allocates nothing.
    pub fn eval(&self, pod: &PodView) -> Option<bool> {
        match self {
            Predicate::Const(b) => Some(*b),
            Predicate::Not(p) => p.eval(pod).map(|b| !b),
            // CEL: left first; `false` decides; then the right side's error wins; an error on the
            // left is absorbed only by a deciding right side.
            Predicate::And(a, b) => {
                let left = a.eval(pod);
                if left == Some(false) {
                    return Some(false);
                }
                let right = b.eval(pod)?;
                match left {
                    Some(_) => Some(right),
                    None => (!right).then_some(false),
                }
            }
            Predicate::Or(a, b) => {
                let left = a.eval(pod);
                if left == Some(true) {
                    return Some(true);
                }
                let right = b.eval(pod)?;
                match left {
                    Some(_) => Some(right),
                    None => right.then_some(true),
                }
            }
            Predicate::Compare(op, a, b) => {
                let (a, b) = (a.value(pod)?, b.value(pod)?);
                let order = compare(a, b);
                match op {
                    Op::Eq => Some(order == Some(Ordering::Equal)),
                    Op::Ne => Some(order != Some(Ordering::Equal)),
                    Op::Lt => order.map(Ordering::is_lt),
                    Op::Le => order.map(Ordering::is_le),
                    Op::Gt => order.map(Ordering::is_gt),
                    Op::Ge => order.map(Ordering::is_ge),
                }
            }
            Predicate::HasKey(m, key) => Some(m.of(pod).contains_key(key)),
        }
    }
}

impl Operand {
    /// The value, or `None` for a missing label or annotation (an error in CEL).
    fn value<'a>(&'a self, pod: &'a PodView) -> Option<Scalar<'a>> {
        Some(match self {
            Operand::Int(i) => Scalar::Int(*i),
            Operand::UInt(u) => Scalar::UInt(*u),
            Operand::Double(d) => Scalar::Double(*d),
            Operand::Str(s) => Scalar::Str(s),
            Operand::Field(f) => match f {
                Field::Namespace => Scalar::Str(&pod.namespace),
                Field::Name => Scalar::Str(&pod.name),
                Field::Cpu => Scalar::Double(pod.resources.vcpu()),
                Field::MemoryGib => Scalar::Double(pod.resources.memory_gib()),
                Field::Gpus => Scalar::UInt(u64::from(pod.resources.gpus)),
                Field::Label(k) => Scalar::Str(pod.labels.get(k)?),
                Field::Annotation(k) => Scalar::Str(pod.annotations.get(k)?),
            },
        })
    }
}

impl Map {
    fn of(self, pod: &PodView) -> &BTreeMap<String, String> {
        match self {
            Map::Labels => &pod.labels,
            Map::Annotations => &pod.annotations,
        }
    }
}

/// CEL's ordering of two scalars (`Val::compare` of the `cel` crate's int, uint, double and
/// string types); `None` where they do not compare.
fn compare(a: Scalar, b: Scalar) -> Option<Ordering> {
    use Scalar::*;
    match (a, b) {
        (Int(a), Int(b)) => Some(a.cmp(&b)),
        (Int(a), UInt(b)) => Some(u64::try_from(a).map_or(Ordering::Less, |a| a.cmp(&b))),
        (Int(a), Double(b)) => (a as f64).partial_cmp(&b),
        (UInt(a), UInt(b)) => Some(a.cmp(&b)),
        (UInt(a), Int(b)) => Some(i64::try_from(a).map_or(Ordering::Greater, |a| a.cmp(&b))),
        (UInt(a), Double(b)) => (a as f64).partial_cmp(&b),
        (Double(a), Double(b)) => a.partial_cmp(&b),
        (Double(a), Int(b)) => a.partial_cmp(&(b as f64)),
        (Double(a), UInt(b)) => a.partial_cmp(&(b as f64)),
        (Str(a), Str(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn operand(e: &IdedExpr) -> Result<Operand, Unsupported> {
    match &e.expr {
        Expr::Literal(LiteralValue::Int(i)) => Ok(Operand::Int(*i.inner())),
        Expr::Literal(LiteralValue::UInt(u)) => Ok(Operand::UInt(*u.inner())),
        Expr::Literal(LiteralValue::Double(d)) => Ok(Operand::Double(*d.inner())),
        Expr::Literal(LiteralValue::String(s)) => Ok(Operand::Str(s.inner().to_string())),
        Expr::Literal(_) => Err(Unsupported::Construct("a bool, null or bytes operand")),
        Expr::Select(s) if !s.test => {
            if is_pod(&s.operand) {
                return match s.field.as_str() {
                    "namespace" => Ok(Operand::Field(Field::Namespace)),
                    "name" => Ok(Operand::Field(Field::Name)),
                    "cpu" => Ok(Operand::Field(Field::Cpu)),
                    "memoryGiB" => Ok(Operand::Field(Field::MemoryGib)),
                    "gpus" => Ok(Operand::Field(Field::Gpus)),
                    other => Err(Unsupported::Field(other.to_string())),
                };
            }
            Ok(entry(map(&s.operand)?, s.field.clone()))
        }
        Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
            match call.args.as_slice() {
                [m, key] => match &key.expr {
                    Expr::Literal(LiteralValue::String(k)) => {
                        Ok(entry(map(m)?, k.inner().to_string()))
                    }
                    _ => Err(Unsupported::Construct(
                        "an index other than a string literal",
                    )),
                },
                _ => Err(Unsupported::Function(call.func_name.clone())),
            }
        }
        Expr::Call(call) => Err(Unsupported::Function(call.func_name.clone())),
        _ => Err(Unsupported::Construct(
            "an operand other than a literal or a pod field",
        )),
    }
}

fn entry(m: Map, key: String) -> Operand {
    Operand::Field(match m {
        Map::Labels => Field::Label(key),
        Map::Annotations => Field::Annotation(key),
    })
}

fn is_pod(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::Ident(name) if name == "pod")
}

fn map(e: &IdedExpr) -> Result<Map, Unsupported> {
    match &e.expr {
        Expr::Select(s) if !s.test && is_pod(&s.operand) => match s.field.as_str() {
            "labels" => Ok(Map::Labels),
            "annotations" => Ok(Map::Annotations),
            other => Err(Unsupported::Field(other.to_string())),
        },
        _ => Err(Unsupported::Construct(
            "a map other than pod.labels or pod.annotations",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(source: &str) -> Result<Predicate, Unsupported> {
        Predicate::compile(cel::Program::compile(source).unwrap().expression())
    }

    #[test]
    fn a_comparison_with_a_literal_compiles_to_the_field_and_the_value() {
        assert_eq!(
            compile("pod.cpu >= 8.0"),
            Ok(Predicate::Compare(
                Op::Ge,
                Operand::Field(Field::Cpu),
                Operand::Double(8.0)
            ))
        );
        assert_eq!(
            compile("'web' == pod.labels['app.kubernetes.io/name']"),
            Ok(Predicate::Compare(
                Op::Eq,
                Operand::Str("web".into()),
                Operand::Field(Field::Label("app.kubernetes.io/name".into()))
            ))
        );
        assert_eq!(
            compile("!('gpu' in pod.annotations) && has(pod.labels.tier)"),
            Ok(Predicate::And(
                Box::new(Predicate::Not(Box::new(Predicate::HasKey(
                    Map::Annotations,
                    "gpu".into()
                )))),
                Box::new(Predicate::HasKey(Map::Labels, "tier".into()))
            ))
        );
    }

    #[test]
    fn shapes_outside_the_subset_say_why_they_stay_interpreted() {
        assert_eq!(
            compile("pod.namespace.startsWith('a')"),
            Err(Unsupported::Function("startsWith".into()))
        );
        assert_eq!(
            compile("pod.uid == ''"),
            Err(Unsupported::Field("uid".into()))
        );
        assert_eq!(
            compile("pod.cpu"),
            Err(Unsupported::Construct("a value as a condition"))
        );
        assert!(matches!(
            compile("pod.labels.all(k, k != '')"),
            Err(Unsupported::Construct(_))
        ));
        assert!(matches!(
            compile("pod.gpus in [0u, 1u]"),
            Err(Unsupported::Construct(_))
        ));
    }

    #[test]
    fn and_and_or_absorb_an_error_only_when_the_other_side_decides() {
        let pod = PodView::default();
        let eval = |s: &str| compile(s).unwrap().eval(&pod);
        assert_eq!(eval("pod.labels.x == 'a' && false"), Some(false));
        assert_eq!(eval("pod.labels.x == 'a' && true"), None);
        assert_eq!(eval("pod.labels.x == 'a' || true"), Some(true));
        assert_eq!(eval("false || pod.labels.x == 'a'"), None);
        assert_eq!(eval("!(pod.labels.x == 'a')"), None);
        // Values that do not compare: unequal, but not ordered.
        assert_eq!(eval("pod.cpu == 'a'"), Some(false));
        assert_eq!(eval("pod.cpu != 'a'"), Some(true));
        assert_eq!(eval("pod.cpu < 'a'"), None);
    }
}
