//! Recursive-descent parser for CESQL v1 (§2), with the precedence of §3.6.
//!
//! From tightest to loosest binding:
//!
//! 1. literals, attributes, `EXISTS name`, function calls, `( ... )`
//! 2. unary `NOT` and `-`
//! 3. postfix `[NOT] LIKE 'pattern'` and `[NOT] IN (...)`
//! 4. `*`, `/`, `%`
//! 5. `+`, `-`
//! 6. `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`
//! 7. `AND`, `OR`, `XOR`: one level, left to right as §3.6 says (so `a OR b AND c` is
//!    `(a OR b) AND c`; write parentheses when mixing them)
//!
//! Every binary level associates to the left.

use crate::ast::{BinaryOp, Expr};
use crate::functions::Function;
use crate::lexer::{Token, TokenKind, tokenize};
use crate::like::LikePattern;
use crate::{CesqlError, Value};

/// Deepest syntax tree accepted. Evaluation and drop recurse over the tree, so this
/// bounds their stack use for expressions that come from users.
pub(crate) const MAX_DEPTH: usize = 256;

/// Deepest nesting of brackets, argument lists and unary operators accepted. The parser
/// recurses through every precedence level per bracket, so this is lower than
/// [`MAX_DEPTH`] to keep unoptimised builds well within a 2 MiB thread stack.
pub(crate) const MAX_NESTING: usize = 64;

const KEYWORDS: [&str; 9] = ["AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"];

pub(crate) fn parse(src: &str) -> Result<Expr, CesqlError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser { tokens, next: 0, end: src.len(), nesting: 0 };
    let root = parser.expression()?;
    match parser.peek() {
        None => Ok(root.expr),
        Some(token) => Err(CesqlError::parse(token.pos, format!("unexpected {}", describe(&token.kind)))),
    }
}

/// An expression under construction, with the depth of its tree.
struct Node {
    expr: Expr,
    depth: usize,
}

impl Node {
    fn leaf(expr: Expr) -> Self {
        Self { expr, depth: 1 }
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Byte length of the source, the position reported for "unexpected end".
    end: usize,
    /// Current recursion depth through brackets, argument lists and unary operators.
    nesting: usize,
}

type Parsed = Result<Node, CesqlError>;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_kind(&self) -> Option<&TokenKind> {
        self.peek().map(|t| &t.kind)
    }

    /// Position of the next token, or the end of the source.
    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    /// Whether the token `offset` places ahead is the keyword `keyword` (any case).
    fn keyword_at(&self, offset: usize, keyword: &str) -> bool {
        matches!(
            self.tokens.get(self.next + offset),
            Some(Token { kind: TokenKind::Word(w), .. }) if w.eq_ignore_ascii_case(keyword)
        )
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.keyword_at(0, keyword)
    }

    fn expect(&mut self, kind: &TokenKind) -> Result<(), CesqlError> {
        if self.peek_kind() == Some(kind) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected {}", describe(kind))))
        }
    }

    /// An error about the next token (or the end of input).
    fn unexpected(&self, context: &str) -> CesqlError {
        let found = match self.peek_kind() {
            Some(kind) => describe(kind),
            None => "end of expression".to_owned(),
        };
        CesqlError::parse(self.pos(), format!("{context}, found {found}"))
    }

    fn enter(&mut self) -> Result<(), CesqlError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(CesqlError::parse(
                self.pos(),
                format!("brackets or operators nested deeper than {MAX_NESTING}"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Wraps children into a new node, enforcing [`MAX_DEPTH`].
    fn node(&self, pos: usize, children_depth: usize, expr: Expr) -> Parsed {
        let depth = children_depth + 1;
        if depth > MAX_DEPTH {
            return Err(CesqlError::parse(pos, format!("expression nested deeper than {MAX_DEPTH}")));
        }
        Ok(Node { expr, depth })
    }

    fn binary(&self, pos: usize, op: BinaryOp, left: Node, right: Node) -> Parsed {
        let depth = left.depth.max(right.depth);
        self.node(pos, depth, Expr::Binary { op, left: Box::new(left.expr), right: Box::new(right.expr) })
    }

    /// expression := comparison ((AND | OR | XOR) comparison)*
    fn expression(&mut self) -> Parsed {
        self.enter()?;
        let result = self.logic();
        self.leave();
        result
    }

    fn logic(&mut self) -> Parsed {
        let mut left = self.comparison()?;
        loop {
            let op = if self.at_keyword("AND") {
                BinaryOp::And
            } else if self.at_keyword("OR") {
                BinaryOp::Or
            } else if self.at_keyword("XOR") {
                BinaryOp::Xor
            } else {
                return Ok(left);
            };
            let pos = self.pos();
            self.next += 1;
            let right = self.comparison()?;
            left = self.binary(pos, op, left, right)?;
        }
    }

    /// comparison := additive (("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") additive)*
    fn comparison(&mut self) -> Parsed {
        let mut left = self.additive()?;
        loop {
            let op = match self.peek_kind() {
                Some(TokenKind::Eq) => BinaryOp::Eq,
                Some(TokenKind::NotEq) => BinaryOp::NotEq,
                Some(TokenKind::Lt) => BinaryOp::Lt,
                Some(TokenKind::LtEq) => BinaryOp::LtEq,
                Some(TokenKind::Gt) => BinaryOp::Gt,
                Some(TokenKind::GtEq) => BinaryOp::GtEq,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.next += 1;
            let right = self.additive()?;
            left = self.binary(pos, op, left, right)?;
        }
    }

    /// additive := multiplicative (("+" | "-") multiplicative)*
    fn additive(&mut self) -> Parsed {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek_kind() {
                Some(TokenKind::Plus) => BinaryOp::Add,
                Some(TokenKind::Minus) => BinaryOp::Sub,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.next += 1;
            let right = self.multiplicative()?;
            left = self.binary(pos, op, left, right)?;
        }
    }

    /// multiplicative := postfix (("*" | "/" | "%") postfix)*
    fn multiplicative(&mut self) -> Parsed {
        let mut left = self.postfix()?;
        loop {
            let op = match self.peek_kind() {
                Some(TokenKind::Star) => BinaryOp::Mul,
                Some(TokenKind::Slash) => BinaryOp::Div,
                Some(TokenKind::Percent) => BinaryOp::Mod,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.next += 1;
            let right = self.postfix()?;
            left = self.binary(pos, op, left, right)?;
        }
    }

    /// postfix := unary ([NOT] LIKE string-literal | [NOT] IN "(" expression ("," expression)* ")")*
    fn postfix(&mut self) -> Parsed {
        let mut node = self.unary()?;
        loop {
            let pos = self.pos();
            let negated = self.at_keyword("NOT") && (self.keyword_at(1, "LIKE") || self.keyword_at(1, "IN"));
            if negated {
                self.next += 1;
            }
            if self.at_keyword("LIKE") {
                self.next += 1;
                let pattern = match self.peek_kind() {
                    Some(TokenKind::Str(pattern)) => LikePattern::new(pattern),
                    _ => {
                        return Err(self.unexpected("the pattern of LIKE must be a string literal"));
                    }
                };
                self.next += 1;
                node = self.node(pos, node.depth, Expr::Like { expr: Box::new(node.expr), pattern, negated })?;
            } else if self.at_keyword("IN") {
                self.next += 1;
                let (set, depth) = self.list(false)?;
                let depth = depth.max(node.depth);
                node = self.node(pos, depth, Expr::In { expr: Box::new(node.expr), set, negated })?;
            } else {
                return Ok(node);
            }
        }
    }

    /// unary := NOT unary | "-" unary | primary
    ///
    /// A `-` or `+` directly before an integer literal is part of the literal, so that
    /// `-2147483648` is representable.
    fn unary(&mut self) -> Parsed {
        let pos = self.pos();
        let negate = match self.peek_kind() {
            Some(TokenKind::Minus) => true,
            Some(TokenKind::Plus) => false,
            _ if self.at_keyword("NOT") => {
                self.next += 1;
                self.enter()?;
                let operand = self.unary();
                self.leave();
                let operand = operand?;
                return self.node(pos, operand.depth, Expr::Not(Box::new(operand.expr)));
            }
            _ => return self.primary(),
        };
        self.next += 1;
        if let Some(TokenKind::Integer(digits)) = self.peek_kind() {
            let literal = integer_literal(pos, digits, negate)?;
            self.next += 1;
            return Ok(Node::leaf(Expr::Literal(Value::Integer(literal))));
        }
        if !negate {
            return Err(self.unexpected("expected an integer after '+'"));
        }
        self.enter()?;
        let operand = self.unary();
        self.leave();
        let operand = operand?;
        self.node(pos, operand.depth, Expr::Negate(Box::new(operand.expr)))
    }

    /// primary := literal | attribute | EXISTS attribute | function-call | "(" expression ")"
    fn primary(&mut self) -> Parsed {
        let pos = self.pos();

        let Some(token) = self.advance() else {
            return Err(CesqlError::parse(pos, "unexpected end of expression"));
        };
        match token.kind {
            TokenKind::Integer(digits) => {
                Ok(Node::leaf(Expr::Literal(Value::Integer(integer_literal(pos, &digits, false)?))))
            }
            TokenKind::Str(s) => Ok(Node::leaf(Expr::Literal(Value::String(s)))),
            TokenKind::LParen => {
                let inner = self.expression()?;
                self.expect(&TokenKind::RParen)?;
                Ok(inner)
            }
            TokenKind::Word(word) => self.word(pos, word),
            other => Err(CesqlError::parse(pos, format!("unexpected {}", describe(&other)))),
        }
    }

    /// A word in operand position: a boolean literal, `EXISTS`, a function call or an
    /// attribute name.
    fn word(&mut self, pos: usize, word: String) -> Parsed {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "TRUE" => return Ok(Node::leaf(Expr::Literal(Value::Boolean(true)))),
            "FALSE" => return Ok(Node::leaf(Expr::Literal(Value::Boolean(false)))),
            "EXISTS" => {
                let name_pos = self.pos();
                return match self.advance() {
                    Some(Token { kind: TokenKind::Word(name), .. }) if is_attribute_name(&name) => {
                        Ok(Node::leaf(Expr::Exists(name.to_ascii_lowercase())))
                    }
                    _ => Err(CesqlError::parse(name_pos, "expected an attribute name after EXISTS")),
                };
            }
            keyword if KEYWORDS.contains(&keyword) => {
                return Err(CesqlError::parse(pos, format!("unexpected keyword {upper}")));
            }
            _ => {}
        }
        if self.peek_kind() == Some(&TokenKind::LParen) {
            if !is_function_name(&word) {
                return Err(CesqlError::parse(pos, format!("invalid function name {word:?}")));
            }
            self.next += 1;
            let (args, depth) = self.list(true)?;
            let function = Function::resolve(&upper, args.len())
                .ok_or(CesqlError::MissingFunction { name: upper, arity: args.len() })?;
            return self.node(pos, depth, Expr::Call { function, args });
        }
        if !is_attribute_name(&word) {
            return Err(CesqlError::parse(pos, format!("invalid attribute name {word:?}")));
        }
        // Attribute names are lowercase by the CloudEvents naming rules; like keywords,
        // they are matched case-insensitively (the TCK uses `EXISTS SOURCE`).
        Ok(Node::leaf(Expr::Attribute(word.to_ascii_lowercase())))
    }

    /// A comma-separated list of expressions closed by ")", after its "(" (which `IN`
    /// still has to consume). Returns the elements and their greatest depth.
    fn list(&mut self, open_consumed: bool) -> Result<(Vec<Expr>, usize), CesqlError> {
        if !open_consumed {
            self.expect(&TokenKind::LParen)?;
        }
        let mut items = Vec::new();
        let mut depth = 0;
        if open_consumed && self.peek_kind() == Some(&TokenKind::RParen) {
            self.next += 1;
            return Ok((items, depth));
        }
        loop {
            let item = self.expression()?;
            depth = depth.max(item.depth);
            items.push(item.expr);
            match self.peek_kind() {
                Some(TokenKind::Comma) => self.next += 1,
                Some(TokenKind::RParen) => {
                    self.next += 1;
                    return Ok((items, depth));
                }
                _ => return Err(self.unexpected("expected ',' or ')'")),
            }
        }
    }
}

/// Reads an integer literal, which must fit 32 bits once its sign is applied.
fn integer_literal(pos: usize, digits: &str, negative: bool) -> Result<i32, CesqlError> {
    let out_of_range = || {
        let sign = if negative { "-" } else { "" };
        CesqlError::parse(pos, format!("integer literal {sign}{digits} does not fit 32 bits"))
    };
    let magnitude: i64 = digits.parse().map_err(|_| out_of_range())?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).map_err(|_| out_of_range())
}

/// `value-identifier ::= ( lowercase-char | digit )+`, accepted in any case.
fn is_attribute_name(word: &str) -> bool {
    !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric())
        && !KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// `function-identifier ::= char ( "_" | char )*`
fn is_function_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic()) && word.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
}

fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::LParen => "'('".to_owned(),
        TokenKind::RParen => "')'".to_owned(),
        TokenKind::Comma => "','".to_owned(),
        TokenKind::Plus => "'+'".to_owned(),
        TokenKind::Minus => "'-'".to_owned(),
        TokenKind::Star => "'*'".to_owned(),
        TokenKind::Slash => "'/'".to_owned(),
        TokenKind::Percent => "'%'".to_owned(),
        TokenKind::Eq => "'='".to_owned(),
        TokenKind::NotEq => "'!='".to_owned(),
        TokenKind::Lt => "'<'".to_owned(),
        TokenKind::LtEq => "'<='".to_owned(),
        TokenKind::Gt => "'>'".to_owned(),
        TokenKind::GtEq => "'>='".to_owned(),
        TokenKind::Integer(digits) => format!("integer {digits}"),
        TokenKind::Str(s) => format!("string {s:?}"),
        TokenKind::Word(w) => format!("{w:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn lit(v: impl Into<Value>) -> Expr {
        Expr::Literal(v.into())
    }

    fn attr(name: &str) -> Expr {
        Expr::Attribute(name.to_owned())
    }

    fn bin(op: BinaryOp, left: Expr, right: Expr) -> Expr {
        Expr::Binary { op, left: Box::new(left), right: Box::new(right) }
    }

    fn ok(src: &str) -> Expr {
        parse(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e}"))
    }

    fn err(src: &str) -> CesqlError {
        match parse(src) {
            Ok(expr) => panic!("{src:?} should not parse, got {expr:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn literals() {
        assert_eq!(ok("TRUE"), lit(true));
        assert_eq!(ok("fAlSe"), lit(false));
        assert_eq!(ok("0"), lit(0));
        assert_eq!(ok("'aBc'"), lit("aBc"));
        assert_eq!(ok("\"x\""), lit("x"));
        assert_eq!(ok("2147483647"), lit(i32::MAX));
        assert_eq!(ok("-2147483648"), lit(i32::MIN));
        assert_eq!(ok("+ 5"), lit(5));
        assert_eq!(ok("--1"), Expr::Negate(Box::new(lit(-1))));
        assert_eq!(ok("-'1'"), Expr::Negate(Box::new(lit("1"))));
        assert_eq!(err("2147483648").kind(), ErrorKind::Parse);
        assert_eq!(err("-2147483649").kind(), ErrorKind::Parse);
        assert_eq!(err("99999999999999999999999").kind(), ErrorKind::Parse);
    }

    #[test]
    fn arithmetic_precedence_and_associativity() {
        use BinaryOp::*;
        assert_eq!(ok("4 * 2 + 4 / 2"), bin(Add, bin(Mul, lit(4), lit(2)), bin(Div, lit(4), lit(2))));
        assert_eq!(ok("4 * (2 + 4) / 2"), bin(Div, bin(Mul, lit(4), bin(Add, lit(2), lit(4))), lit(2)));
        assert_eq!(ok("1 - 2 - 3"), bin(Sub, bin(Sub, lit(1), lit(2)), lit(3)));
        assert_eq!(ok("5 -3"), bin(Sub, lit(5), lit(3)));
        assert_eq!(ok("-a * b"), bin(Mul, Expr::Negate(Box::new(attr("a"))), attr("b")));
        assert_eq!(ok("1 + 2 = 3"), bin(Eq, bin(Add, lit(1), lit(2)), lit(3)));
        assert_eq!(ok("a <> b"), bin(NotEq, attr("a"), attr("b")));
    }

    #[test]
    fn logic_operators_share_one_level_left_to_right() {
        use BinaryOp::*;
        assert_eq!(ok("a OR b AND c"), bin(And, bin(Or, attr("a"), attr("b")), attr("c")));
        assert_eq!(ok("a AND b XOR c"), bin(Xor, bin(And, attr("a"), attr("b")), attr("c")));
        assert_eq!(ok("a = 1 and b < 2"), bin(And, bin(Eq, attr("a"), lit(1)), bin(Lt, attr("b"), lit(2))));
        assert_eq!(ok("a OR (b AND c)"), bin(Or, attr("a"), bin(And, attr("b"), attr("c"))));
    }

    #[test]
    fn unary_binds_tighter_than_like_in_and_binary_operators() {
        let not_a = Expr::Not(Box::new(attr("a")));
        assert_eq!(ok("NOT a = b"), bin(BinaryOp::Eq, not_a.clone(), attr("b")));
        assert_eq!(
            ok("not a like 'x'"),
            Expr::Like { expr: Box::new(not_a), pattern: LikePattern::new("x"), negated: false }
        );
        assert_eq!(ok("NOT EXISTS time"), Expr::Not(Box::new(Expr::Exists("time".into()))));
    }

    #[test]
    fn like_and_in() {
        assert_eq!(
            ok("a + b NOT LIKE 'x%'"),
            bin(
                BinaryOp::Add,
                attr("a"),
                Expr::Like { expr: Box::new(attr("b")), pattern: LikePattern::new("x%"), negated: true }
            )
        );
        assert_eq!(
            ok("x not in (1, 'a', y)"),
            Expr::In { expr: Box::new(attr("x")), set: vec![lit(1), lit("a"), attr("y")], negated: true }
        );
        assert_eq!(ok("x IN (1)"), Expr::In { expr: Box::new(attr("x")), set: vec![lit(1)], negated: false });
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(ok("EXISTS SOURCE"), Expr::Exists("source".into()));
        assert_eq!(ok("MyExt1"), attr("myext1"));
        assert_eq!(ok("1abc"), attr("1abc"));
        assert_eq!(ok("int(hop)"), Expr::Call { function: Function::Int, args: vec![attr("hop")] });
        assert_eq!(ok("Concat_Ws(',')"), Expr::Call { function: Function::ConcatWs, args: vec![lit(",")] });
        assert_eq!(ok("CONCAT()"), Expr::Call { function: Function::Concat, args: vec![] });
    }

    #[test]
    fn unknown_functions_fail_at_parse_time() {
        assert_eq!(err("CONCAT_WS()"), CesqlError::MissingFunction { name: "CONCAT_WS".into(), arity: 0 });
        assert_eq!(err("nope(1, 2)"), CesqlError::MissingFunction { name: "NOPE".into(), arity: 2 });
        assert_eq!(err("ABS(1, 2)").kind(), ErrorKind::MissingFunction);
    }

    #[test]
    fn syntax_errors() {
        for src in [
            "",
            "ABC(",
            "(1",
            "1)",
            "1 2",
            "x LIKE 123",
            "x LIKE y",
            "x IN ()",
            "x IN 1",
            "x IN (1,)",
            "a_b",
            "f1(2)",
            "_f(1)",
            "EXISTS 1",
            "EXISTS",
            "EXISTS and",
            "NOT",
            "AND",
            "a NOT b",
            "1 +",
            "+a",
            "TRUE(1)",
            "f(1 2)",
            "a ! b",
            "'open",
        ] {
            assert_eq!(err(src).kind(), ErrorKind::Parse, "{src:?}");
        }
    }

    #[test]
    fn errors_carry_positions() {
        assert_eq!(err("1 + )"), CesqlError::parse(4, "unexpected ')'"));
        assert_eq!(err("(1"), CesqlError::parse(2, "expected ')', found end of expression"));
        assert_eq!(
            err("x LIKE 123"),
            CesqlError::parse(7, "the pattern of LIKE must be a string literal, found integer 123")
        );
    }

    #[test]
    fn depth_is_bounded() {
        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(ok(&nested(MAX_NESTING - 1)), lit(1));
        assert_eq!(err(&nested(MAX_NESTING + 1)).kind(), ErrorKind::Parse);
        assert_eq!(err(&nested(100_000)).kind(), ErrorKind::Parse);
        assert_eq!(err(&"NOT ".repeat(100_000)).kind(), ErrorKind::Parse);
        assert_eq!(err(&"-".repeat(100_000)).kind(), ErrorKind::Parse);
        let chain = vec!["a = 1"; 100_000].join(" OR ");
        assert_eq!(err(&chain).kind(), ErrorKind::Parse);
        let chain = vec!["a = 1"; MAX_DEPTH - 2].join(" OR ");
        assert!(parse(&chain).is_ok());
        let chain = vec!["a = 1"; MAX_DEPTH].join(" OR ");
        assert_eq!(err(&chain).kind(), ErrorKind::Parse);
        let args = format!("CONCAT({})", nested(300));
        assert_eq!(err(&args).kind(), ErrorKind::Parse);
    }
}
