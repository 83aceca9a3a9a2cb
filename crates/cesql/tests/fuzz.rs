//! Property tests of CESQL on untrusted input: trigger authors write the expressions and
//! event senders choose the attributes they are evaluated against.
//!
//! Checks that lexing, parsing and evaluation never panic — on generated well-formed
//! expressions, on the same expressions mutated (characters deleted, tokens inserted,
//! slices duplicated), on arbitrary text and on deep nesting — and that what does parse
//! behaves: the source is kept verbatim, evaluation is deterministic, `matches` is
//! `is_true`, and wrapping an expression in parentheses changes nothing.
//!
//! Deterministic: a fixed seed and no failure files (see [`config`]).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
use serde_json::{Map, Value as Json, json};
use serval_cesql::parse;

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0xCE5_0001),
        ..Config::default()
    }
}

/// Attribute names the generated expressions and events share (and some events lack).
const ATTRIBUTES: [&str; 10] =
    ["id", "source", "type", "subject", "specversion", "num", "flag", "text", "missing", "data"];

const FUNCTIONS: [&str; 17] = [
    "ABS",
    "LENGTH",
    "CONCAT",
    "CONCAT_WS",
    "LOWER",
    "UPPER",
    "TRIM",
    "LEFT",
    "RIGHT",
    "SUBSTRING",
    "INT",
    "BOOL",
    "STRING",
    "IS_BOOL",
    "IS_INT",
    "nope",
    "abs",
];

const BINARY_OPERATORS: [&str; 14] = ["AND", "OR", "XOR", "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/"];

/// A string literal in either quote style, with the other quote, escapes and `LIKE`
/// wildcards inside.
fn string_literal() -> impl Strategy<Value = String> {
    (r#"[a-zA-Z0-9 %_\\'"é€]{0,8}"#, any::<bool>()).prop_map(|(text, single)| {
        let quote = if single { '\'' } else { '"' };
        let escaped = text.replace('\\', "\\\\").replace(quote, &format!("{quote}{quote}"));
        format!("{quote}{escaped}{quote}")
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i32>().prop_map(|i| i.to_string()),
        (0u32..100).prop_map(|i| i.to_string()),
        prop::sample::select(vec!["0", "2147483647", "2147483648", "99999999999", "TRUE", "false", "''", "'1'"])
            .prop_map(str::to_owned),
        string_literal(),
    ]
}

fn attribute() -> impl Strategy<Value = String> {
    prop::sample::select(ATTRIBUTES.to_vec()).prop_map(str::to_owned)
}

/// Well-formed expressions (up to unknown functions, wrong arities and out-of-range
/// integers, which fail to parse as they should).
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![literal(), attribute(), attribute().prop_map(|a| format!("EXISTS {a}"))];
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("-{e}")),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), prop::sample::select(BINARY_OPERATORS.to_vec()), inner.clone())
                .prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            (inner.clone(), any::<bool>(), string_literal())
                .prop_map(|(e, not, pattern)| { format!("{e} {}LIKE {pattern}", if not { "NOT " } else { "" }) }),
            (inner.clone(), any::<bool>(), prop::collection::vec(inner.clone(), 1..4))
                .prop_map(|(e, not, set)| { format!("{e} {}IN ({})", if not { "NOT " } else { "" }, set.join(", ")) }),
            (prop::sample::select(FUNCTIONS.to_vec()), prop::collection::vec(inner, 0..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        ]
    })
}

/// Fragments inserted by mutations: tokens, half tokens and characters the lexer rejects.
const FRAGMENTS: [&str; 22] = [
    "(",
    ")",
    "'",
    "\"",
    "\\",
    ",",
    " NOT ",
    " AND ",
    " LIKE ",
    " IN ",
    "%",
    "_",
    "-",
    "2147483648",
    "é",
    "\0",
    " ",
    "EXISTS",
    "()",
    "!",
    "<",
    "=",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: &'static str },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..4).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS.to_vec()))
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// Applies mutations on character positions (so the text stays valid UTF-8).
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        let at = |at: usize| if chars.is_empty() { 0 } else { at % (chars.len() + 1) };
        match *mutation {
            Mutation::Delete { at: pos, len } => {
                let pos = at(pos);
                let end = (pos + len).min(chars.len());
                chars.drain(pos..end);
            }
            Mutation::Insert { at: pos, fragment } => {
                let pos = at(pos);
                chars.splice(pos..pos, fragment.chars());
            }
            Mutation::Duplicate { at: pos, len } => {
                let pos = at(pos);
                let end = (pos + len).min(chars.len());
                let slice: Vec<char> = chars[pos..end].to_vec();
                chars.splice(end..end, slice);
            }
        }
    }
    chars.into_iter().collect()
}

/// An event whose optional attributes have random JSON types (or are absent).
fn event() -> impl Strategy<Value = Map<String, Json>> {
    let value = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i32>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        r"[a-zA-Z0-9 %_.é-]{0,12}".prop_map(Json::from),
        prop::sample::select(vec!["true", "FALSE", "42", "-0", " 7", "2147483648"]).prop_map(Json::from),
    ];
    prop::collection::vec(value, ATTRIBUTES.len()).prop_map(|values| {
        let mut event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        let map = event.as_object_mut().expect("an object");
        for (name, value) in ATTRIBUTES.iter().zip(values).skip(3) {
            if !value.is_null() {
                map.insert((*name).to_owned(), value);
            }
        }
        std::mem::take(map)
    })
}

/// Parses and, when that works, evaluates with every property that must hold.
fn check(text: &str, event: &Map<String, Json>) -> Result<(), TestCaseError> {
    let Ok(expression) = parse(text) else { return Ok(()) };
    prop_assert_eq!(expression.source(), text);
    let first = expression.evaluate(event);
    let second = expression.evaluate(event);
    prop_assert_eq!(&first.value, &second.value);
    prop_assert_eq!(&first.errors, &second.errors);
    prop_assert_eq!(expression.matches(event), first.is_true());
    // Brackets change nothing (unless they pass the nesting limit, a parse error).
    if let Ok(bracketed) = parse(&format!("({text})")) {
        let evaluation = bracketed.evaluate(event);
        prop_assert_eq!(&evaluation.value, &first.value, "({})", text);
        prop_assert_eq!(&evaluation.errors, &first.errors, "({})", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_expressions(text in expression(), event in event()) {
        check(&text, &event)?;
    }

    #[test]
    fn mutated_expressions(
        text in expression(),
        mutations in prop::collection::vec(mutation(), 1..6),
        event in event(),
    ) {
        check(&mutate(&text, &mutations), &event)?;
    }

    #[test]
    fn arbitrary_text(text in r#"[a-zA-Z0-9_ '"()%,+*/<>=!\\.é\t\n-]{0,64}"#, event in event()) {
        check(&text, &event)?;
    }

    #[test]
    fn any_characters(text in any::<String>(), event in event()) {
        check(&text, &event)?;
    }

    /// Nesting past the limits (64 brackets, 256 levels) is a parse error, never a
    /// stack overflow.
    #[test]
    fn deep_nesting(depth in 0usize..400, kind in 0usize..6, event in event()) {
        let text = match kind {
            0 => format!("{}1{}", "(".repeat(depth), ")".repeat(depth)),
            1 => format!("{}true", "NOT ".repeat(depth)),
            2 => format!("{}1", "-".repeat(depth)),
            3 => format!("{}1{}", "ABS(".repeat(depth), ")".repeat(depth)),
            4 => format!("num{}", " + num".repeat(depth)),
            _ => format!("{}text{}", "(text IN (".repeat(depth), "))".repeat(depth)),
        };
        check(&text, &event)?;
    }
}
