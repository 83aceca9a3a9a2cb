//! The built-in functions (§3.5), plus the casting functions the TCK exercises.

use crate::value::{to_integer, to_string};
use crate::{CesqlError, Type, Value};

/// A built-in function. Calls are resolved by name and arity when parsing, so an unknown
/// function is reported before any event is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    /// `ABS(x): Integer -> Integer`
    Abs,
    /// `LENGTH(x): String -> Integer`
    Length,
    /// `CONCAT(x1, ...): String^n -> String`, n >= 0
    Concat,
    /// `CONCAT_WS(delimiter, x1, ...): String x String^n -> String`, n >= 0
    ConcatWs,
    /// `LOWER(x): String -> String`
    Lower,
    /// `UPPER(x): String -> String`
    Upper,
    /// `TRIM(x): String -> String`
    Trim,
    /// `LEFT(x, y): String x Integer -> String`
    Left,
    /// `RIGHT(x, y): String x Integer -> String`
    Right,
    /// `SUBSTRING(x, pos): String x Integer -> String`
    Substring,
    /// `SUBSTRING(x, pos, len): String x Integer x Integer -> String`
    SubstringLen,
    /// `INT(x): Any -> Integer`, the explicit cast.
    Int,
    /// `BOOL(x): Any -> Boolean`, the explicit cast.
    Bool,
    /// `STRING(x): Any -> String`, the explicit cast.
    String,
    /// `IS_BOOL(x): Any -> Boolean`, whether `BOOL(x)` succeeds.
    IsBool,
    /// `IS_INT(x): Any -> Boolean`, whether `INT(x)` succeeds.
    IsInt,
}

impl Function {
    /// Finds the function called `name` (any case) that takes `arity` arguments.
    pub(crate) fn resolve(name: &str, arity: usize) -> Option<Self> {
        let function = match (name.to_ascii_uppercase().as_str(), arity) {
            ("ABS", 1) => Self::Abs,
            ("LENGTH", 1) => Self::Length,
            ("CONCAT", _) => Self::Concat,
            ("CONCAT_WS", 1..) => Self::ConcatWs,
            ("LOWER", 1) => Self::Lower,
            ("UPPER", 1) => Self::Upper,
            ("TRIM", 1) => Self::Trim,
            ("LEFT", 2) => Self::Left,
            ("RIGHT", 2) => Self::Right,
            ("SUBSTRING", 2) => Self::Substring,
            ("SUBSTRING", 3) => Self::SubstringLen,
            ("INT", 1) => Self::Int,
            ("BOOL", 1) => Self::Bool,
            ("STRING", 1) => Self::String,
            ("IS_BOOL", 1) => Self::IsBool,
            ("IS_INT", 1) => Self::IsInt,
            _ => return None,
        };
        Some(function)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Abs => "ABS",
            Self::Length => "LENGTH",
            Self::Concat => "CONCAT",
            Self::ConcatWs => "CONCAT_WS",
            Self::Lower => "LOWER",
            Self::Upper => "UPPER",
            Self::Trim => "TRIM",
            Self::Left => "LEFT",
            Self::Right => "RIGHT",
            Self::Substring | Self::SubstringLen => "SUBSTRING",
            Self::Int => "INT",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::IsBool => "IS_BOOL",
            Self::IsInt => "IS_INT",
        }
    }

    pub(crate) fn return_type(self) -> Type {
        match self {
            Self::Abs | Self::Length | Self::Int => Type::Integer,
            Self::Bool | Self::IsBool | Self::IsInt => Type::Boolean,
            Self::Concat
            | Self::ConcatWs
            | Self::Lower
            | Self::Upper
            | Self::Trim
            | Self::Left
            | Self::Right
            | Self::Substring
            | Self::SubstringLen
            | Self::String => Type::String,
        }
    }

    /// Applies the function to already-evaluated arguments, casting each to its parameter
    /// type. Errors are recorded in `errors`; the returned value is always of
    /// [`Self::return_type`].
    pub(crate) fn call(self, args: &[Value], errors: &mut Vec<CesqlError>) -> Value {
        let fail = |errors: &mut Vec<CesqlError>, message: String, value: Value| {
            errors.push(CesqlError::FunctionEvaluation { function: self.name(), message });
            value
        };
        match (self, args) {
            (Self::Abs, [x]) => {
                let x = to_integer(x, errors);
                match x.checked_abs() {
                    Some(abs) => Value::Integer(abs),
                    None => {
                        // §3.5.2: ABS(-2147483648) is 2147483647 plus a math error.
                        errors.push(CesqlError::Math(format!("ABS({x}) overflows a 32-bit integer")));
                        Value::Integer(i32::MAX)
                    }
                }
            }
            (Self::Length, [x]) => {
                let length = to_string(x).chars().count();
                match i32::try_from(length) {
                    Ok(length) => Value::Integer(length),
                    Err(_) => fail(errors, format!("length {length} does not fit an Integer"), Value::Integer(0)),
                }
            }
            (Self::Concat, xs) => Value::String(xs.iter().map(to_string).collect()),
            (Self::ConcatWs, [delimiter, xs @ ..]) => {
                let parts: Vec<String> = xs.iter().map(to_string).collect();
                Value::String(parts.join(&to_string(delimiter)))
            }
            (Self::Lower, [x]) => Value::String(to_string(x).to_lowercase()),
            (Self::Upper, [x]) => Value::String(to_string(x).to_uppercase()),
            (Self::Trim, [x]) => Value::String(to_string(x).trim().to_owned()),
            (Self::Left | Self::Right, [x, count]) => {
                let x = to_string(x);
                let count = to_integer(count, errors);
                let Ok(count) = usize::try_from(count) else {
                    return fail(errors, format!("negative length {count}"), Value::String(x));
                };
                let length = x.chars().count();
                let skip = if self == Self::Left { 0 } else { length.saturating_sub(count) };
                Value::String(x.chars().skip(skip).take(count).collect())
            }
            (Self::Substring, [x, pos]) => {
                let x = to_string(x);
                let pos = to_integer(pos, errors);
                match substring(&x, pos, None) {
                    Ok(s) => Value::String(s),
                    Err(message) => fail(errors, message, Value::String(String::new())),
                }
            }
            (Self::SubstringLen, [x, pos, len]) => {
                let x = to_string(x);
                let pos = to_integer(pos, errors);
                let len = to_integer(len, errors);
                match substring(&x, pos, Some(len)) {
                    Ok(s) => Value::String(s),
                    Err(message) => fail(errors, message, Value::String(String::new())),
                }
            }
            (Self::Int, [x]) => Value::Integer(x.cast_to_integer().unwrap_or_else(|e| {
                errors.push(e);
                0
            })),
            (Self::Bool, [x]) => Value::Boolean(x.cast_to_boolean().unwrap_or_else(|e| {
                errors.push(e);
                false
            })),
            (Self::String, [x]) => Value::String(to_string(x)),
            (Self::IsBool, [x]) => Value::Boolean(x.cast_to_boolean().is_ok()),
            (Self::IsInt, [x]) => Value::Boolean(x.cast_to_integer().is_ok()),
            // `resolve` only hands out functions for arities they accept.
            (_, args) => fail(errors, format!("called with {} argument(s)", args.len()), self.return_type().zero()),
        }
    }
}

/// `SUBSTRING` with 1-based `pos` (negative counts from the end, 0 yields "") and an
/// optional `len`.
fn substring(x: &str, pos: i32, len: Option<i32>) -> Result<String, String> {
    let length = i64::try_from(x.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > length || pos < -length {
        return Err(format!("position {pos} is outside a string of length {length}"));
    }
    if let Some(len) = len.filter(|len| *len < 0) {
        return Err(format!("negative length {len}"));
    }
    if pos == 0 {
        return Ok(String::new());
    }
    let start = if pos > 0 { pos - 1 } else { length + pos };
    let chars = x.chars().skip(usize::try_from(start).unwrap_or(usize::MAX));
    Ok(match len {
        Some(len) => chars.take(usize::try_from(len).unwrap_or(usize::MAX)).collect(),
        None => chars.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn call(name: &str, args: &[Value]) -> (Value, Vec<ErrorKind>) {
        let function = Function::resolve(name, args.len()).expect("function exists");
        let mut errors = Vec::new();
        let value = function.call(args, &mut errors);
        (value, errors.iter().map(CesqlError::kind).collect())
    }

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn resolution_is_case_insensitive_and_by_arity() {
        assert_eq!(Function::resolve("concat_ws", 3), Some(Function::ConcatWs));
        assert_eq!(Function::resolve("Concat", 0), Some(Function::Concat));
        assert_eq!(Function::resolve("CONCAT_WS", 0), None);
        assert_eq!(Function::resolve("substring", 2), Some(Function::Substring));
        assert_eq!(Function::resolve("SUBSTRING", 3), Some(Function::SubstringLen));
        assert_eq!(Function::resolve("SUBSTRING", 4), None);
        assert_eq!(Function::resolve("ABS", 2), None);
        assert_eq!(Function::resolve("NOPE", 1), None);
    }

    #[test]
    fn string_functions() {
        assert_eq!(call("LENGTH", &[s("héllo")]), (Value::from(5), vec![]));
        assert_eq!(call("LENGTH", &[Value::from(-12)]), (Value::from(3), vec![]));
        assert_eq!(call("CONCAT", &[s("a"), Value::from(1), Value::from(true)]), (s("a1true"), vec![]));
        assert_eq!(call("CONCAT_WS", &[s(", "), s("a"), s("b")]), (s("a, b"), vec![]));
        assert_eq!(call("LOWER", &[s("ÀB")]), (s("àb"), vec![]));
        assert_eq!(call("UPPER", &[s("straße")]), (s("STRASSE"), vec![]));
        assert_eq!(call("TRIM", &[s("\u{2003} a \t\n")]), (s("a"), vec![]));
        assert_eq!(call("LEFT", &[s("héllo"), Value::from(2)]), (s("hé"), vec![]));
        assert_eq!(call("RIGHT", &[s("héllo"), Value::from(4)]), (s("éllo"), vec![]));
        assert_eq!(call("RIGHT", &[s("abc"), Value::from(-1)]), (s("abc"), vec![ErrorKind::FunctionEvaluation]));
        assert_eq!(call("LEFT", &[s("abc"), s("x")]), (s(""), vec![ErrorKind::Cast]));
    }

    #[test]
    fn substring_edges() {
        let sub = |pos: i32, len: Option<i32>| substring("abcdef", pos, len);
        assert_eq!(sub(6, None), Ok("f".into()));
        assert_eq!(sub(-6, None), Ok("abcdef".into()));
        assert!(sub(7, None).is_err());
        assert!(sub(-7, None).is_err());
        assert_eq!(sub(-2, Some(10)), Ok("ef".into()));
        assert_eq!(sub(2, Some(0)), Ok(String::new()));
        assert!(sub(2, Some(-1)).is_err());
        assert!(sub(0, Some(-1)).is_err());
        assert_eq!(sub(0, Some(3)), Ok(String::new()));
        assert_eq!(substring("", 0, None), Ok(String::new()));
        assert!(substring("", 1, None).is_err());
        assert_eq!(sub(i32::MIN, None).map_err(|_| ()), Err(()));
    }

    #[test]
    fn casting_functions() {
        assert_eq!(call("INT", &[s("+42")]), (Value::from(42), vec![]));
        assert_eq!(call("INT", &[s("4x")]), (Value::from(0), vec![ErrorKind::Cast]));
        assert_eq!(call("BOOL", &[Value::from(7)]), (Value::from(true), vec![]));
        assert_eq!(call("BOOL", &[s("nope")]), (Value::from(false), vec![ErrorKind::Cast]));
        assert_eq!(call("STRING", &[Value::from(-7)]), (s("-7"), vec![]));
        assert_eq!(call("IS_INT", &[s("12")]), (Value::from(true), vec![]));
        assert_eq!(call("IS_INT", &[s("1.5")]), (Value::from(false), vec![]));
        assert_eq!(call("IS_BOOL", &[s("False")]), (Value::from(true), vec![]));
        assert_eq!(call("IS_BOOL", &[s("0")]), (Value::from(false), vec![]));
    }

    #[test]
    fn abs_overflow_is_a_math_error() {
        assert_eq!(call("ABS", &[Value::from(i32::MIN)]), (Value::from(i32::MAX), vec![ErrorKind::Math]));
        assert_eq!(call("ABS", &[s("-3")]), (Value::from(3), vec![]));
    }
}
