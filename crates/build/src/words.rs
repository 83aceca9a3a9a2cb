//! Docker's word rules, shared by the parser and the planner: splitting an instruction's
//! arguments into words that keep their quotes ([`split_words`]), and processing one word —
//! quote removal, escapes, and variable substitution ([`expand`]).
//!
//! Substitution follows Docker's shell lexer: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?message}`, `${VAR?message}`; the
//! default and alternative words are themselves processed (quotes, nested `${…}`), a value is
//! inserted as it is (never expanded again). Inside single quotes nothing is special; inside
//! double quotes `$` expands and the escape character escapes only `"`, `$` and itself; outside
//! quotes the escape character makes the next character literal. An unset variable expands to
//! the empty string. Nesting and output length are bounded ([`crate::limits`]).

use crate::limits::{MAX_SUBSTITUTION_DEPTH, MAX_WORD_BYTES};

/// Looks a variable up by name: `None` when it is not set.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Processes one word: removes quotes, applies escapes and substitutes variables.
///
/// The error is a message without a location; the caller names the line.
pub fn expand(word: &str, escape: char, vars: Vars<'_>) -> Result<String, String> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, escape, vars, depth: 0 };
    lexer.process(None)
}

/// Splits `text` into words at unquoted whitespace, keeping quotes and escapes in the words
/// (they are removed later by [`expand`]); an escape character at the very end is dropped.
/// Docker's `parseWords`, used for `ENV`, `LABEL` and `ARG`.
pub fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A quoted word may be empty (`A=""` still makes a word).
    let mut keep_empty = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None if ch.is_whitespace() => {
                if keep_empty || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                keep_empty = false;
            }
            None => {
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    keep_empty = true;
                }
                if ch == escape {
                    match chars.next() {
                        // An escape at the end of the text is dropped.
                        None => break,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                // In double quotes the escape character protects the next one (a quote too);
                // single quotes protect everything.
                if ch == escape && q != '\'' {
                    match chars.next() {
                        None => break,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if keep_empty || !word.is_empty() {
        words.push(word);
    }
    words
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: Vars<'a>,
    depth: usize,
}

fn push(out: &mut String, s: &str) -> Result<(), String> {
    if out.len() + s.len() > MAX_WORD_BYTES {
        return Err(format!("a word is longer than {MAX_WORD_BYTES} bytes after substitution"));
    }
    out.push_str(s);
    Ok(())
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed), or to the end when `stop` is `None`.
    fn process(&mut self, stop: Option<char>) -> Result<String, String> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok(out);
            }
            let piece = match ch {
                '\'' => self.single_quoted()?,
                '"' => self.double_quoted()?,
                '$' => self.dollar()?,
                _ => {
                    self.pos += 1;
                    let literal = if ch == self.escape {
                        match self.next() {
                            Some(next) => next,
                            // An escape at the end of the word is dropped.
                            None => break,
                        }
                    } else {
                        ch
                    };
                    let mut buf = [0u8; 4];
                    push(&mut out, literal.encode_utf8(&mut buf))?;
                    continue;
                }
            };
            push(&mut out, &piece)?;
        }
        match stop {
            Some(stop) => Err(format!("unexpected end of statement while looking for matching {stop}")),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => return Ok(out),
                Some(ch) => out.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    push(&mut out, &value)?;
                }
                Some(ch) => {
                    self.pos += 1;
                    let mut literal = ch;
                    if ch == self.escape {
                        match self.peek() {
                            // The escape character escapes only these; others stay as written.
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                literal = next;
                            }
                            None => continue,
                            Some(_) => {}
                        }
                    }
                    let mut buf = [0u8; 4];
                    push(&mut out, literal.encode_utf8(&mut buf))?;
                }
            }
        }
    }

    /// A name: letters, digits and `_`; a name that starts with a digit is only digits.
    fn name(&mut self) -> String {
        let mut name = String::new();
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                name.push(c);
                self.pos += 1;
            }
            return name;
        }
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.vars)(&name).unwrap_or_default());
        }
        self.pos += 1;
        self.depth += 1;
        if self.depth > MAX_SUBSTITUTION_DEPTH {
            return Err(format!("substitutions nested deeper than {MAX_SUBSTITUTION_DEPTH}"));
        }
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        if name.is_empty() {
            return Err("syntax error: bad substitution".into());
        }
        let value = (self.vars)(&name);
        let result = match self.next() {
            None => return Err("syntax error: missing '}'".into()),
            Some('}') => value.unwrap_or_default(),
            Some(':') => {
                let modifier = self.next();
                let word = self.process(Some('}'))?;
                let value = value.unwrap_or_default();
                match modifier {
                    Some('-') if value.is_empty() => word,
                    Some('-') => value,
                    Some('+') if value.is_empty() => String::new(),
                    Some('+') => word,
                    Some('?') if value.is_empty() => return Err(unset_message(&name, &word, "empty")),
                    Some('?') => value,
                    Some(other) => return Err(format!("unsupported modifier ({other}) in substitution")),
                    None => return Err("syntax error: missing '}'".into()),
                }
            }
            Some(modifier @ ('-' | '+' | '?')) => {
                let word = self.process(Some('}'))?;
                match (modifier, value) {
                    ('-', None) => word,
                    ('+', Some(_)) => word,
                    ('+', None) => String::new(),
                    ('?', None) => return Err(unset_message(&name, &word, "unset")),
                    (_, Some(value)) => value,
                    (_, None) => String::new(),
                }
            }
            Some(other) => return Err(format!("unsupported modifier ({other}) in substitution")),
        };
        self.depth -= 1;
        Ok(result)
    }
}

fn unset_message(name: &str, word: &str, what: &str) -> String {
    if word.is_empty() { format!("{name}: is not allowed to be {what}") } else { format!("{name}: {word}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SPACE" => Some("x y".into()),
            "DOLLAR" => Some("$A".into()),
            _ => None,
        }
    }

    fn ex(word: &str) -> String {
        expand(word, '\\', &vars).expect("expands")
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(ex("$A"), "a");
        assert_eq!(ex("${A}"), "a");
        assert_eq!(ex("x${A}y"), "xay");
        assert_eq!(ex("$A.b"), "a.b");
        assert_eq!(ex("$UNSET-z"), "-z");
        assert_eq!(ex("a$"), "a$");
        assert_eq!(ex("$/x"), "$/x");
        // Values are inserted, never expanded again.
        assert_eq!(ex("$DOLLAR"), "$A");
    }

    #[test]
    fn modifiers() {
        assert_eq!(ex("${UNSET:-d}"), "d");
        assert_eq!(ex("${EMPTY:-d}"), "d");
        assert_eq!(ex("${EMPTY-d}"), "");
        assert_eq!(ex("${UNSET-d}"), "d");
        assert_eq!(ex("${A:-d}"), "a");
        assert_eq!(ex("${A:+alt}"), "alt");
        assert_eq!(ex("${EMPTY:+alt}"), "");
        assert_eq!(ex("${EMPTY+alt}"), "alt");
        assert_eq!(ex("${UNSET:+alt}"), "");
        assert_eq!(ex("${UNSET:-${A}-${UNSET:-x}}"), "a-x");
        assert_eq!(ex("${UNSET:-\"q }\"}"), "q }");
        assert_eq!(expand("${UNSET:?must be set}", '\\', &vars), Err("UNSET: must be set".into()));
        assert_eq!(expand("${EMPTY?x}", '\\', &vars), Ok(String::new()));
        assert!(expand("${A/x/y}", '\\', &vars).expect_err("unsupported").contains("unsupported modifier"));
        assert!(expand("${A", '\\', &vars).is_err());
        assert!(expand("${}", '\\', &vars).is_err());
        assert!(expand("${:-x}", '\\', &vars).is_err());
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ex("'$A'"), "$A");
        assert_eq!(ex("\"$A b\""), "a b");
        assert_eq!(ex("\"\\\"q\\\" \\$A \\n\""), "\"q\" $A \\n");
        assert_eq!(ex("\\$A"), "$A");
        assert_eq!(ex("a\\ b"), "a b");
        assert_eq!(ex("trailing\\"), "trailing");
        assert_eq!(expand("`$A", '`', &vars), Ok("$A".into()));
        assert_eq!(expand("C:\\dir", '`', &vars), Ok("C:\\dir".into()));
        assert!(expand("'open", '\\', &vars).expect_err("unterminated").contains("single-quote"));
        assert!(expand("\"open", '\\', &vars).expect_err("unterminated").contains("double-quote"));
    }

    #[test]
    fn bounds() {
        let deep = format!("{}x{}", "${U:-".repeat(MAX_SUBSTITUTION_DEPTH + 1), "}".repeat(MAX_SUBSTITUTION_DEPTH + 1));
        assert!(expand(&deep, '\\', &vars).expect_err("too deep").contains("nested"));
        let ok = format!("{}x{}", "${U:-".repeat(MAX_SUBSTITUTION_DEPTH), "}".repeat(MAX_SUBSTITUTION_DEPTH));
        assert_eq!(expand(&ok, '\\', &vars), Ok("x".into()));
        let big = "y".repeat(MAX_WORD_BYTES / 2 + 1);
        let lookup = |_: &str| Some(big.clone());
        assert!(expand("$B$B", '\\', &lookup).expect_err("too long").contains("longer"));
    }

    #[test]
    fn splitting_keeps_quotes() {
        assert_eq!(split_words("a=1 b=\"x y\"  c='q r'", '\\'), ["a=1", "b=\"x y\"", "c='q r'"]);
        assert_eq!(split_words("a\\ b c", '\\'), ["a\\ b", "c"]);
        assert_eq!(split_words("e=\"\" f", '\\'), ["e=\"\"", "f"]);
        assert_eq!(split_words("g=\"a\\\" b\"", '\\'), ["g=\"a\\\" b\""]);
        assert_eq!(split_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(split_words("end\\", '\\'), ["end"]);
    }
}
