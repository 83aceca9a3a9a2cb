//! Evaluation of a parsed expression against an event (§3).
//!
//! The evaluator runs in the spec's "complete evaluation mode" (§4.1): an error does not
//! stop evaluation. The error is recorded, and
//!
//! - a failed implicit cast of an operand lets the operator carry on with the zero value
//!   of the target type (so `NOT 10` is `true` plus a cast error);
//! - an operator or function whose own computation fails (division by zero, overflow, a
//!   bad argument) yields the zero value of its return type, unless the spec names
//!   another value (`ABS(-2147483648)` is `2147483647`, `LEFT('abc', -1)` is `'abc'`);
//! - an operator or function one of whose operands failed (including a reference to a
//!   missing attribute) yields the zero value of its return type, without operating.
//!
//! Only `AND`/`OR` skip their right operand, by short-circuit.

use crate::ast::{BinaryOp, Expr};
use crate::value::{cast_implicit, to_boolean, to_integer, to_string};
use crate::{CesqlError, EventAttributes, Type, Value};

/// The outcome of evaluating an expression: always a value, plus the errors met on the
/// way (empty when evaluation succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The result. Where an error decided it, the zero value of the failing operator.
    pub value: Value,
    /// Errors in the order they occurred. Never parse errors: those come from `parse`.
    pub errors: Vec<CesqlError>,
}

impl Evaluation {
    /// The first error, if evaluation had any.
    pub fn error(&self) -> Option<&CesqlError> {
        self.errors.first()
    }

    /// Whether this is the Boolean `true` without errors: the only outcome that lets an
    /// event through a filter (§1.2).
    pub fn is_true(&self) -> bool {
        self.errors.is_empty() && self.value == Value::Boolean(true)
    }
}

pub(crate) fn evaluate(root: &Expr, event: &dyn EventAttributes) -> Evaluation {
    let mut evaluator = Evaluator { event, errors: Vec::new() };
    let value = evaluator.eval(root);
    Evaluation { value, errors: evaluator.errors }
}

struct Evaluator<'a> {
    event: &'a dyn EventAttributes,
    errors: Vec<CesqlError>,
}

impl Evaluator<'_> {
    fn eval(&mut self, expr: &Expr) -> Value {
        match expr {
            Expr::Literal(value) => value.clone(),
            // A bare attribute's consumer is unknown, so §3.2 makes a missing one `false`.
            Expr::Attribute(_) => self.operand(expr).unwrap_or(Value::Boolean(false)),
            Expr::Exists(name) => Value::Boolean(self.event.attribute(name).is_some()),
            Expr::Not(operand) => match self.operand(operand) {
                Some(v) => Value::Boolean(!to_boolean(&v, &mut self.errors)),
                None => Value::Boolean(false),
            },
            Expr::Negate(operand) => match self.operand(operand) {
                Some(v) => {
                    let i = to_integer(&v, &mut self.errors);
                    Value::Integer(self.checked(i.checked_neg(), || format!("-({i}) overflows a 32-bit integer")))
                }
                None => Value::Integer(0),
            },
            Expr::Binary { op: BinaryOp::And, left, right } => Value::Boolean(self.logic(left, right, false)),
            Expr::Binary { op: BinaryOp::Or, left, right } => Value::Boolean(self.logic(left, right, true)),
            Expr::Binary { op, left, right } => {
                let left = self.operand(left);
                let right = self.operand(right);
                match (left, right) {
                    (Some(left), Some(right)) => self.binary(*op, &left, &right),
                    _ => binary_type(*op).zero(),
                }
            }
            Expr::Like { expr, pattern, negated } => match self.operand(expr) {
                Some(v) => Value::Boolean(pattern.matches(&to_string(&v)) != *negated),
                None => Value::Boolean(false),
            },
            Expr::In { expr, set, negated } => match self.operand(expr) {
                Some(v) => match self.contains(&v, set) {
                    Some(found) => Value::Boolean(found != *negated),
                    None => Value::Boolean(false),
                },
                None => Value::Boolean(false),
            },
            Expr::Call { function, args } => {
                let args: Vec<Option<Value>> = args.iter().map(|arg| self.operand(arg)).collect();
                match args.into_iter().collect::<Option<Vec<Value>>>() {
                    Some(args) => function.call(&args, &mut self.errors),
                    None => function.return_type().zero(),
                }
            }
        }
    }

    /// Evaluates an operand. `None` means its evaluation failed (the error is recorded):
    /// an attribute the event lacks, or a subexpression that reported an error. The
    /// caller must then yield the zero value of its own return type instead of operating
    /// on the operand (§3.2, §3.3); the TCK requires this propagation, e.g.
    /// `true AND (1 != 1 / 0)` is `false` with a math error.
    fn operand(&mut self, expr: &Expr) -> Option<Value> {
        if let Expr::Attribute(name) = expr {
            let value = self.event.attribute(name);
            if value.is_none() {
                self.errors.push(CesqlError::MissingAttribute(name.clone()));
            }
            return value;
        }
        let errors_before = self.errors.len();
        let value = self.eval(expr);
        (self.errors.len() == errors_before).then_some(value)
    }

    /// `AND` (`short_circuit_on = false`) and `OR` (`true`): the right operand is only
    /// evaluated when the left one does not decide the result.
    fn logic(&mut self, left: &Expr, right: &Expr, short_circuit_on: bool) -> bool {
        let left = match self.operand(left) {
            Some(v) => to_boolean(&v, &mut self.errors),
            // A failed left operand makes the result `false`; for AND that also decides it.
            None if !short_circuit_on => return false,
            None => {
                let _ = self.operand(right);
                return false;
            }
        };
        if left == short_circuit_on {
            return left;
        }
        match self.operand(right) {
            Some(v) => to_boolean(&v, &mut self.errors),
            None => false,
        }
    }

    fn binary(&mut self, op: BinaryOp, left: &Value, right: &Value) -> Value {
        let errors = &mut self.errors;
        match op {
            BinaryOp::Xor => Value::Boolean(to_boolean(left, errors) != to_boolean(right, errors)),
            BinaryOp::Eq => Value::Boolean(equals(left, right, errors)),
            BinaryOp::NotEq => Value::Boolean(!equals(left, right, errors)),
            BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
                let (l, r) = (to_integer(left, errors), to_integer(right, errors));
                Value::Boolean(match op {
                    BinaryOp::Lt => l < r,
                    BinaryOp::LtEq => l <= r,
                    BinaryOp::Gt => l > r,
                    _ => l >= r,
                })
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                let (l, r) = (to_integer(left, errors), to_integer(right, errors));
                if r == 0 && matches!(op, BinaryOp::Div | BinaryOp::Mod) {
                    self.errors.push(CesqlError::Math(format!("division by zero in {l} {} 0", symbol(op))));
                    return Value::Integer(0);
                }
                let result = match op {
                    BinaryOp::Add => l.checked_add(r),
                    BinaryOp::Sub => l.checked_sub(r),
                    BinaryOp::Mul => l.checked_mul(r),
                    BinaryOp::Div => l.checked_div(r),
                    // Truncated remainder; MIN % -1 is mathematically 0, not an overflow.
                    _ => Some(l.wrapping_rem(r)),
                };
                Value::Integer(self.checked(result, || format!("{l} {} {r} overflows a 32-bit integer", symbol(op))))
            }
            // Short-circuit operators never reach here; keep the match total anyway.
            BinaryOp::And => Value::Boolean(to_boolean(left, errors) && to_boolean(right, errors)),
            BinaryOp::Or => Value::Boolean(to_boolean(left, errors) || to_boolean(right, errors)),
        }
    }

    /// `x [NOT] IN (...)` membership, comparing like `=` with `x`'s type as the target of
    /// the casts (§3.7). Stops at the first match, as the equivalent chain of `OR`s
    /// would. `None` when an element is a missing attribute.
    fn contains(&mut self, needle: &Value, set: &[Expr]) -> Option<bool> {
        let target = needle.value_type();
        for element in set {
            let element = self.operand(element)?;
            if cast_implicit(&element, target, &mut self.errors) == *needle {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Unwraps an arithmetic result, recording a math error (and yielding 0) on overflow.
    fn checked(&mut self, result: Option<i32>, message: impl FnOnce() -> String) -> i32 {
        result.unwrap_or_else(|| {
            self.errors.push(CesqlError::Math(message()));
            0
        })
    }
}

/// `=` is overloaded for all three types; the right operand's type picks the overload
/// and the left operand is cast to it (§3.7).
fn equals(left: &Value, right: &Value, errors: &mut Vec<CesqlError>) -> bool {
    cast_implicit(left, right.value_type(), errors) == *right
}

/// The return type of a binary operator, whose zero value it yields on a missing operand.
fn binary_type(op: BinaryOp) -> Type {
    match op {
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => Type::Integer,
        _ => Type::Boolean,
    }
}

fn symbol(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::And => "AND",
        BinaryOp::Or => "OR",
        BinaryOp::Xor => "XOR",
        BinaryOp::Eq => "=",
        BinaryOp::NotEq => "!=",
        BinaryOp::Lt => "<",
        BinaryOp::LtEq => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::GtEq => ">=",
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Mod => "%",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value as Json, json};

    use crate::{ErrorKind, Value, parse};

    fn event() -> Map<String, Json> {
        match json!({
            "specversion": "1.0", "id": "42", "source": "/src", "type": "t",
            "subject": "héllo", "count": 7, "flag": true, "num": "10", "word": "abc",
        }) {
            Json::Object(map) => map,
            _ => unreachable!("an object literal"),
        }
    }

    /// Evaluates `src` against [`event`], returning the value and the error kinds.
    fn eval(src: &str) -> (Value, Vec<ErrorKind>) {
        let expression = parse(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e}"));
        let evaluation = expression.evaluate(&event());
        (evaluation.value, evaluation.errors.iter().map(crate::CesqlError::kind).collect())
    }

    fn ok(v: impl Into<Value>) -> (Value, Vec<ErrorKind>) {
        (v.into(), vec![])
    }

    fn failed(v: impl Into<Value>, kind: ErrorKind) -> (Value, Vec<ErrorKind>) {
        (v.into(), vec![kind])
    }

    #[test]
    fn attributes_keep_their_types() {
        assert_eq!(eval("id"), ok("42"));
        assert_eq!(eval("count"), ok(7));
        assert_eq!(eval("FLAG"), ok(true));
        assert_eq!(eval("count + num"), ok(17));
        assert_eq!(eval("id = 42"), ok(true));
        assert_eq!(eval("LENGTH(subject)"), ok(5));
    }

    #[test]
    fn missing_attributes_yield_the_zero_value_of_their_consumer() {
        use ErrorKind::MissingAttribute as M;
        assert_eq!(eval("missing"), failed(false, M));
        assert_eq!(eval("missing * 5"), failed(0, M));
        assert_eq!(eval("1 / missing"), failed(0, M));
        assert_eq!(eval("NOT missing"), failed(false, M));
        assert_eq!(eval("missing NOT LIKE 'x'"), failed(false, M));
        assert_eq!(eval("missing NOT IN (1)"), failed(false, M));
        assert_eq!(eval("1 IN (missing)"), failed(false, M));
        assert_eq!(eval("CONCAT('a', missing)"), failed("", M));
        assert_eq!(eval("EXISTS missing"), ok(false));
        assert_eq!(eval("NOT EXISTS missing"), ok(true));
        // The zero value replaces the failed operator only; its parents see that value.
        assert_eq!(eval("(missing = 1) = FALSE"), failed(false, M));
    }

    #[test]
    fn errors_in_operands_propagate_as_zero_values() {
        assert_eq!(eval("true AND (1 != 1 / 0)"), failed(false, ErrorKind::Math));
        assert_eq!(eval("1 + 1 % 0"), failed(0, ErrorKind::Math));
        assert_eq!(eval("LENGTH(STRING(1 / 0))"), failed(0, ErrorKind::Math));
        assert_eq!(eval("NOT NOT 10"), failed(false, ErrorKind::Cast));
    }

    #[test]
    fn failed_casts_carry_on_with_the_zero_value() {
        assert_eq!(eval("NOT 10"), failed(true, ErrorKind::Cast));
        assert_eq!(eval("'abc' + 1"), failed(1, ErrorKind::Cast));
        assert_eq!(eval("word < 1"), failed(true, ErrorKind::Cast));
        assert_eq!(eval("1 = TRUE"), failed(false, ErrorKind::Cast));
        assert_eq!(eval("TRUE AND 1"), failed(false, ErrorKind::Cast));
    }

    #[test]
    fn equality_casts_the_left_operand_to_the_right_type() {
        assert_eq!(eval("'TRUE' = true"), ok(true));
        assert_eq!(eval("true = 'TRUE'"), ok(false));
        assert_eq!(eval("TRUE = 1"), ok(true));
        assert_eq!(eval("'07' = 7"), ok(true));
        assert_eq!(eval("7 = '07'"), ok(false));
        assert_eq!(eval("'a' <> 'A'"), ok(true));
        assert_eq!(eval("TRUE = \"true\" AND FALSE = \"false\""), ok(true));
        assert_eq!(eval("TRUE = \"TRUE\" OR FALSE = \"FALSE\""), ok(false));
    }

    #[test]
    fn in_casts_elements_to_the_left_type_and_stops_at_a_match() {
        assert_eq!(eval("'1' IN (1, 2)"), ok(true));
        assert_eq!(eval("1 IN ('1', '2')"), ok(true));
        assert_eq!(eval("count IN (1, 7)"), ok(true));
        assert_eq!(eval("count NOT IN (1, 2)"), ok(true));
        assert_eq!(eval("source IN (source, missing)"), ok(true));
        assert_eq!(eval("1 IN (2, 'x')"), failed(false, ErrorKind::Cast));
    }

    #[test]
    fn logic_short_circuits() {
        assert_eq!(eval("false AND missing"), ok(false));
        assert_eq!(eval("true OR 1 / 0 = 0"), ok(true));
        assert_eq!(eval("missing AND true"), failed(false, ErrorKind::MissingAttribute));
        assert_eq!(
            eval("missing OR 1 / 0 = 0"),
            (Value::Boolean(false), vec![ErrorKind::MissingAttribute, ErrorKind::Math])
        );
        assert_eq!(eval("'true' XOR FALSE"), ok(true));
        assert_eq!(eval("TRUE XOR 'true'"), ok(false));
    }

    #[test]
    fn integer_arithmetic_is_32_bit_and_truncating() {
        assert_eq!(eval("-7 / 2"), ok(-3));
        assert_eq!(eval("-7 % 3"), ok(-1));
        assert_eq!(eval("7 % -3"), ok(1));
        assert_eq!(eval("-2147483648 % -1"), ok(0));
        assert_eq!(eval("2147483647 + 1"), failed(0, ErrorKind::Math));
        assert_eq!(eval("-2147483648 - 1"), failed(0, ErrorKind::Math));
        assert_eq!(eval("65536 * 65536"), failed(0, ErrorKind::Math));
        assert_eq!(eval("-2147483648 / -1"), failed(0, ErrorKind::Math));
        assert_eq!(eval("--2147483648"), failed(0, ErrorKind::Math));
        assert_eq!(eval("-(-2147483647)"), ok(i32::MAX));
        assert_eq!(eval("1 < 2 < 3"), ok(true));
    }

    #[test]
    fn like_casts_its_operand_to_string() {
        assert_eq!(eval("count LIKE '_'"), ok(true));
        assert_eq!(eval("flag LIKE 'tr%'"), ok(true));
        assert_eq!(eval("subject LIKE 'h_llo'"), ok(true));
        assert_eq!(eval("subject NOT LIKE 'H%'"), ok(true));
    }

    #[test]
    fn matches_requires_boolean_true_without_errors() {
        let event = event();
        let matches = |src: &str| parse(src).expect("valid").matches(&event);
        assert!(matches("type = 't' AND EXISTS subject"));
        assert!(!matches("type = 'x'"));
        assert!(!matches("'true'"));
        assert!(!matches("1"));
        assert!(!matches("NOT 10"));
        assert!(!matches("type = 'x' OR missing = 1 OR TRUE"));
        // Short-circuit: the missing attribute is never looked at.
        assert!(matches("type = 't' OR missing = 1"));
    }

    #[test]
    fn deepest_accepted_expression_evaluates() {
        let chain = vec!["missing = 1"; crate::parser::MAX_DEPTH - 2].join(" OR ");
        let expression = parse(&chain).expect("within the depth limit");
        let evaluation = expression.evaluate(&event());
        assert_eq!(evaluation.value, Value::Boolean(false));
        assert_eq!(evaluation.errors.len(), crate::parser::MAX_DEPTH - 2);
    }

    #[test]
    fn expressions_are_reusable_and_display_their_source() {
        let expression: crate::Expression = "count > 5".parse().expect("valid");
        assert_eq!(expression.to_string(), "count > 5");
        assert_eq!(expression.source(), "count > 5");
        let first = expression.evaluate(&event());
        assert_eq!(first, expression.evaluate(&event()));
        assert!(first.is_true());
        assert_eq!(first.error(), None);
    }
}
