//! The type system of CESQL v1 (§3.1) and its casts (§3.7).

use std::fmt;

use crate::CesqlError;

/// A CESQL value: one of the three primitive types of the spec.
///
/// URIs, URI references and timestamps are represented as `String` (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Boolean(bool),
    /// A 32-bit signed integer; arithmetic that leaves this range is a math error.
    Integer(i32),
    String(String),
}

/// The type of a [`Value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Boolean,
    Integer,
    String,
}

impl Type {
    /// The zero value of the type (`false`, `0`, `""`), which operators return on error.
    pub fn zero(self) -> Value {
        match self {
            Self::Boolean => Value::Boolean(false),
            Self::Integer => Value::Integer(0),
            Self::String => Value::String(String::new()),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Boolean => "Boolean",
            Self::Integer => "Integer",
            Self::String => "String",
        })
    }
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> Type {
        match self {
            Self::Boolean(_) => Type::Boolean,
            Self::Integer(_) => Type::Integer,
            Self::String(_) => Type::String,
        }
    }

    /// Explicit cast to Integer (the semantics of `INT`): booleans become 1/0, strings
    /// are read as base-10 32-bit integers with an optional sign.
    pub(crate) fn cast_to_integer(&self) -> Result<i32, CesqlError> {
        match self {
            Self::Integer(i) => Ok(*i),
            Self::Boolean(b) => Ok(i32::from(*b)),
            Self::String(s) => {
                s.parse::<i32>().map_err(|_| CesqlError::Cast(format!("cannot cast string {s:?} to Integer")))
            }
        }
    }

    /// Explicit cast to Boolean (the semantics of `BOOL`): integers are `true` unless 0,
    /// strings must be `true` or `false` in any case.
    pub(crate) fn cast_to_boolean(&self) -> Result<bool, CesqlError> {
        match self {
            Self::Boolean(b) => Ok(*b),
            Self::Integer(i) => Ok(*i != 0),
            Self::String(s) => match s.to_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(CesqlError::Cast(format!("cannot cast string {s:?} to Boolean"))),
            },
        }
    }
}

/// Renders the value as the `Integer -> String` and `Boolean -> String` casts do:
/// base-10 integers, `true`/`false`, and strings verbatim (unquoted).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Boolean(b) => write!(f, "{b}"),
            Self::Integer(i) => write!(f, "{i}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Integer(i)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

/// Implicit cast to Integer, as operators and functions apply it to their operands.
/// On failure the cast error is recorded and the zero value `0` is used.
pub(crate) fn to_integer(value: &Value, errors: &mut Vec<CesqlError>) -> i32 {
    value.cast_to_integer().unwrap_or_else(|e| {
        errors.push(e);
        0
    })
}

/// Implicit cast to Boolean. Unlike the explicit `BOOL`, an Integer operand is a cast
/// error here (the TCK requires `NOT 10` to fail); a failed cast yields `false`.
pub(crate) fn to_boolean(value: &Value, errors: &mut Vec<CesqlError>) -> bool {
    let cast = match value {
        Value::Integer(i) => Err(CesqlError::Cast(format!("cannot implicitly cast Integer {i} to Boolean (use BOOL)"))),
        other => other.cast_to_boolean(),
    };
    cast.unwrap_or_else(|e| {
        errors.push(e);
        false
    })
}

/// Cast to String; every value has a string form, so this cannot fail.
pub(crate) fn to_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Implicit cast of `value` to `target`, recording any cast error.
pub(crate) fn cast_implicit(value: &Value, target: Type, errors: &mut Vec<CesqlError>) -> Value {
    match target {
        Type::Boolean => Value::Boolean(to_boolean(value, errors)),
        Type::Integer => Value::Integer(to_integer(value, errors)),
        Type::String => Value::String(to_string(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_casts_follow_the_spec_table() {
        assert_eq!(Value::from("-12").cast_to_integer(), Ok(-12));
        assert_eq!(Value::from("+7").cast_to_integer(), Ok(7));
        assert!(Value::from("2147483648").cast_to_integer().is_err());
        assert!(Value::from(" 1").cast_to_integer().is_err());
        assert!(Value::from("").cast_to_integer().is_err());
        assert_eq!(Value::from(true).cast_to_integer(), Ok(1));
        assert_eq!(Value::from("TrUe").cast_to_boolean(), Ok(true));
        assert_eq!(Value::from("FALSE").cast_to_boolean(), Ok(false));
        assert!(Value::from("yes").cast_to_boolean().is_err());
        assert_eq!(Value::from(-3).cast_to_boolean(), Ok(true));
        assert_eq!(Value::from(0).cast_to_boolean(), Ok(false));
        assert_eq!(Value::from(-3).to_string(), "-3");
        assert_eq!(Value::from(false).to_string(), "false");
    }

    #[test]
    fn implicit_casts_record_errors_and_yield_zero() {
        let mut errors = Vec::new();
        assert_eq!(to_integer(&Value::from("x"), &mut errors), 0);
        assert!(!to_boolean(&Value::from(1), &mut errors));
        assert_eq!(errors.len(), 2);
        assert!(errors.iter().all(|e| e.kind() == crate::ErrorKind::Cast));
        assert_eq!(cast_implicit(&Value::from(true), Type::String, &mut errors), Value::from("true"));
        assert_eq!(cast_implicit(&Value::from("5"), Type::Integer, &mut errors), Value::from(5));
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn zero_values() {
        assert_eq!(Type::Boolean.zero(), Value::Boolean(false));
        assert_eq!(Type::Integer.zero(), Value::Integer(0));
        assert_eq!(Type::String.zero(), Value::String(String::new()));
    }
}
