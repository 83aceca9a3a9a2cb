//! The crate's single error type and the spec's error kinds.

use std::fmt;

/// Everything that can go wrong while parsing or evaluating a CESQL expression.
///
/// The variants are the error types of CESQL v1 §3.3. [`parse`](crate::parse) returns
/// `Parse` (and `MissingFunction`, because function calls are resolved when the
/// expression is compiled); every other variant is reported by
/// [`Expression::evaluate`](crate::Expression::evaluate) next to a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CesqlError {
    /// The expression text is not valid CESQL. `position` is a byte offset into it.
    #[error("parse error at byte {position}: {message}")]
    Parse { position: usize, message: String },
    /// Division or modulo by zero, or integer overflow.
    #[error("math error: {0}")]
    Math(String),
    /// An implicit or explicit type cast that cannot be performed.
    #[error("cast error: {0}")]
    Cast(String),
    /// A call to a function that does not exist with that name and number of arguments.
    #[error("missing function: no function {name} taking {arity} argument(s)")]
    MissingFunction { name: String, arity: usize },
    /// A built-in function rejected its arguments (for example `LEFT('abc', -1)`).
    #[error("error evaluating {function}: {message}")]
    FunctionEvaluation { function: &'static str, message: String },
    /// The expression addressed an attribute that the event does not carry.
    #[error("missing attribute: {0}")]
    MissingAttribute(String),
    /// Any other error.
    #[error("{0}")]
    Generic(String),
}

impl CesqlError {
    /// The kind of this error, as named by the spec and its TCK.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Parse { .. } => ErrorKind::Parse,
            Self::Math(_) => ErrorKind::Math,
            Self::Cast(_) => ErrorKind::Cast,
            Self::MissingFunction { .. } => ErrorKind::MissingFunction,
            Self::FunctionEvaluation { .. } => ErrorKind::FunctionEvaluation,
            Self::MissingAttribute(_) => ErrorKind::MissingAttribute,
            Self::Generic(_) => ErrorKind::Generic,
        }
    }

    pub(crate) fn parse(position: usize, message: impl Into<String>) -> Self {
        Self::Parse { position, message: message.into() }
    }
}

/// The kind of a [`CesqlError`], one per error type of CESQL v1 §3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Parse,
    Math,
    Cast,
    MissingFunction,
    FunctionEvaluation,
    MissingAttribute,
    Generic,
}

impl ErrorKind {
    /// The name the CESQL TCK uses for this kind (`parse`, `math`, `cast`,
    /// `missingFunction`, `functionEvaluation`, `missingAttribute`, `generic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Math => "math",
            Self::Cast => "cast",
            Self::MissingFunction => "missingFunction",
            Self::FunctionEvaluation => "functionEvaluation",
            Self::MissingAttribute => "missingAttribute",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_use_tck_names() {
        assert_eq!(CesqlError::parse(0, "x").kind().as_str(), "parse");
        assert_eq!(CesqlError::MissingAttribute("a".into()).kind().as_str(), "missingAttribute");
        let missing = CesqlError::MissingFunction { name: "F".into(), arity: 0 };
        assert_eq!(missing.kind().to_string(), "missingFunction");
        let function = CesqlError::FunctionEvaluation { function: "LEFT", message: "m".into() };
        assert_eq!(function.kind(), ErrorKind::FunctionEvaluation);
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(CesqlError::parse(3, "unexpected ')'").to_string(), "parse error at byte 3: unexpected ')'");
        assert_eq!(CesqlError::MissingAttribute("subject".into()).to_string(), "missing attribute: subject");
    }
}
