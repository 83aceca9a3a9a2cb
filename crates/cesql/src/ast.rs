//! The syntax tree a parsed expression is evaluated from.

use crate::Value;
use crate::functions::Function;
use crate::like::LikePattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Literal(Value),
    /// A context attribute or extension, by its (lowercased) name.
    Attribute(String),
    /// `EXISTS name`.
    Exists(String),
    /// `NOT x`.
    Not(Box<Expr>),
    /// `-x`.
    Negate(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `x [NOT] LIKE 'pattern'`.
    Like {
        expr: Box<Expr>,
        pattern: LikePattern,
        negated: bool,
    },
    /// `x [NOT] IN (y1, y2, ...)`, with at least one element.
    In {
        expr: Box<Expr>,
        set: Vec<Expr>,
        negated: bool,
    },
    /// A call to a built-in function, resolved by name and arity at parse time.
    Call {
        function: Function,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    And,
    Or,
    Xor,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}
