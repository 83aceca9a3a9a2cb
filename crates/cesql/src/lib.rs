//! CloudEvents SQL (CESQL v1): the expression language Knative-style triggers use to
//! filter events.
//!
//! Owns: the language — lexer, parser, syntax tree, the type system with its implicit and
//! explicit casts, the built-in functions, and evaluation with the spec's "value plus
//! errors" semantics. [`parse`] compiles an expression once; [`Expression::evaluate`]
//! runs it against any event that implements [`EventAttributes`].
//!
//! Must not depend on: any other serval crate, or any IO. It is pure and sans-IO so the
//! eventing code can call it on its hot path and tests can call it directly.
//!
//! ```
//! use serval_cesql::{parse, Value};
//!
//! let filter = parse("type LIKE 'com.example.%' AND INT(sequence) > 10").expect("valid CESQL");
//! let event = serde_json::json!({
//!     "specversion": "1.0", "id": "1", "source": "/s",
//!     "type": "com.example.created", "sequence": "11",
//! });
//! let event = event.as_object().expect("an object");
//! assert!(filter.matches(event));
//! assert_eq!(filter.evaluate(event).value, Value::Boolean(true));
//! ```

mod ast;
mod error;
mod eval;
mod event;
mod functions;
mod lexer;
mod like;
mod parser;
mod value;

use std::fmt;
use std::str::FromStr;

pub use error::{CesqlError, ErrorKind};
pub use eval::Evaluation;
pub use event::EventAttributes;
pub use value::{Type, Value};

/// Compiles a CESQL expression.
///
/// Keywords, function names and attribute names are case-insensitive. Fails with a
/// [`CesqlError::Parse`] for malformed text (including a `LIKE` pattern that is not a
/// string literal, integer literals outside 32 bits, and expressions deeper than 256
/// levels or with brackets nested deeper than 64), and with
/// [`CesqlError::MissingFunction`] for a call to a function that does not exist with that
/// number of arguments.
pub fn parse(expr: &str) -> Result<Expression, CesqlError> {
    let root = parser::parse(expr)?;
    Ok(Expression { source: expr.to_owned(), root })
}

/// A compiled CESQL expression. Immutable, cheap to share, and evaluable any number of
/// times against different events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    source: String,
    root: ast::Expr,
}

impl Expression {
    /// Evaluates the expression against `event`.
    ///
    /// Evaluation is total: it always yields a value. Runtime errors (a missing
    /// attribute, a failed cast, division by zero, ...) are collected in
    /// [`Evaluation::errors`], and the operator that failed yields the zero value of its
    /// return type, as CESQL v1 §3.2–3.3 require.
    pub fn evaluate(&self, event: &dyn EventAttributes) -> Evaluation {
        eval::evaluate(&self.root, event)
    }

    /// Whether `event` passes this expression used as a filter: only a Boolean `true`
    /// with no errors passes (CESQL v1 §1.2).
    pub fn matches(&self, event: &dyn EventAttributes) -> bool {
        self.evaluate(event).is_true()
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl FromStr for Expression {
    type Err = CesqlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}
