//! `.dockerignore` rules with Docker's semantics (moby's `patternmatcher`), and the wildcard
//! patterns of `COPY` sources (Go's `filepath.Match`). Pure: the context reads the file.
//!
//! A `.dockerignore` line starting with `#` is a comment; other lines are trimmed, a leading
//! `!` makes an exception, the pattern is cleaned like Go's `filepath.Clean` and a leading `/`
//! dropped, so patterns are always relative to the context root. In a pattern `*` matches any
//! run of characters but `/`, `?` one character but `/`, `[…]` (`[^…]` negated, ranges `a-z`)
//! one character of the class, `\` makes the next character literal, and `**` any number of
//! directories (`**/x`: `x` at any depth; a trailing `**`: everything below). Patterns apply in
//! order and the last one that matches a path decides; a pattern that matches a parent
//! directory of a path matches the path (so `dir` ignores everything under `dir`, and `!dir/keep`
//! after it brings `dir/keep` back).
//!
//! Matching runs the pattern as a small automaton over the path (linear in pattern × path):
//! no regular expression engine, no backtracking blow-up.

use crate::BuildError;
use crate::limits::{MAX_IGNORE_BYTES, MAX_IGNORE_PATTERNS, MAX_PATTERN_BYTES};

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    pattern: Pattern,
}

impl Ignore {
    /// No rules: nothing is ignored.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses `.dockerignore` text. Errors name the line of a malformed pattern (an unclosed
    /// `[`, a trailing `\`, a lone `!`); the text, the number of patterns and each pattern's
    /// length are bounded.
    pub fn parse(text: &str) -> Result<Self, BuildError> {
        if text.len() > MAX_IGNORE_BYTES {
            return Err(BuildError::Limit { what: ".dockerignore bytes".into(), limit: MAX_IGNORE_BYTES });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            // Docker drops comments before trimming: " #x" is a pattern.
            if raw.starts_with('#') {
                continue;
            }
            let mut pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(BuildError::Ignore { line, message: "illegal exclusion pattern: \"!\"".into() });
                }
            }
            if pattern.len() > MAX_PATTERN_BYTES {
                return Err(BuildError::Ignore {
                    line,
                    message: format!("pattern longer than {MAX_PATTERN_BYTES} bytes"),
                });
            }
            if rules.len() == MAX_IGNORE_PATTERNS {
                return Err(BuildError::Limit { what: ".dockerignore patterns".into(), limit: MAX_IGNORE_PATTERNS });
            }
            let cleaned = go_clean(pattern);
            let cleaned = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => cleaned,
            };
            let pattern = Pattern::compile(&cleaned, true).map_err(|message| BuildError::Ignore { line, message })?;
            rules.push(Rule { exception, pattern });
        }
        Ok(Self { rules })
    }

    /// Whether `path` (relative to the context root, `/`-separated, clean) is excluded from the
    /// context.
    pub fn is_ignored(&self, path: &str) -> bool {
        let mut matched = false;
        for rule in &self.rules {
            // An exception only matters for a path ignored so far, an ignore rule for one that
            // is not.
            if rule.exception != matched {
                continue;
            }
            let hit =
                rule.pattern.matches(path) || path.match_indices('/').any(|(i, _)| rule.pattern.matches(&path[..i]));
            if hit {
                matched = !rule.exception;
            }
        }
        matched
    }

    /// Whether any rule is an exception (`!…`): then an ignored directory may still hold files
    /// that are not, and must be walked.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Go's `filepath.Clean` on a `/`-separated path.
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Star,
    /// `**/` (or an inner `**`): nothing, or anything ending with `/` — regex `(.*/)?`.
    AnyDirs,
    /// A trailing (or leading, then literal-only) `**`: anything — regex `.*`.
    AnyTail,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    /// Compiles a pattern; with `double_star`, `**` spans directories (dockerignore), without
    /// it is two `*` (`filepath.Match`, for `COPY` sources).
    pub(crate) fn compile(pattern: &str, double_star: bool) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let first = tokens.is_empty();
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if double_star && chars.get(i) == Some(&'*') => {
                    i += 1;
                    let slash = chars.get(i) == Some(&'/');
                    if slash {
                        i += 1;
                    }
                    let rest_is_literal = !chars[i..].iter().any(|c| matches!(c, '*' | '?' | '[' | '\\'));
                    if i == chars.len() || (first && !slash && rest_is_literal) {
                        // moby: "**" at the end matches everything below; a leading "**x" with
                        // a literal rest is a suffix match.
                        tokens.push(Token::AnyTail);
                    } else {
                        tokens.push(Token::AnyDirs);
                    }
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => match chars.get(i) {
                    Some(&next) => {
                        tokens.push(Token::Literal(next));
                        i += 1;
                    }
                    None => return Err(format!("syntax error in pattern {pattern:?}: trailing \\")),
                },
                '[' => {
                    let (token, next) =
                        class(&chars, i).ok_or_else(|| format!("syntax error in pattern {pattern:?}"))?;
                    tokens.push(token);
                    i = next;
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(Self { tokens })
    }

    /// Whether the pattern matches all of `path`.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let n = self.tokens.len();
        // at[k]: before token k; inside[k]: within an AnyDirs token k, not just after a '/'.
        let mut at = vec![false; n + 1];
        let mut inside = vec![false; n + 1];
        at[0] = true;
        self.close(&mut at);
        for c in path.chars() {
            let mut next_at = vec![false; n + 1];
            let mut next_inside = vec![false; n + 1];
            for k in 0..n {
                if !at[k] && !inside[k] {
                    continue;
                }
                match &self.tokens[k] {
                    Token::AnyDirs => {
                        next_inside[k] = true;
                        if c == '/' {
                            next_at[k + 1] = true;
                        }
                    }
                    _ if !at[k] => {}
                    Token::Literal(x) => next_at[k + 1] |= c == *x,
                    Token::One => next_at[k + 1] |= c != '/',
                    Token::Star => next_at[k] |= c != '/',
                    Token::AnyTail => next_at[k] = true,
                    Token::Class { negated, ranges } => {
                        let hit = ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
                        next_at[k + 1] |= c != '/' && hit != *negated;
                    }
                }
            }
            at = next_at;
            inside = next_inside;
            self.close(&mut at);
            if !at.iter().chain(inside.iter()).any(|s| *s) {
                return false;
            }
        }
        at[n]
    }

    /// Follows the tokens that may match nothing.
    fn close(&self, at: &mut [bool]) {
        for k in 0..self.tokens.len() {
            if at[k] && matches!(self.tokens[k], Token::Star | Token::AnyDirs | Token::AnyTail) {
                at[k + 1] = true;
            }
        }
    }

    /// Whether the pattern has wildcards (else it names one path).
    pub(crate) fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }
}

/// Parses a class after its `[`; returns the token and the index after its `]`.
fn class(chars: &[char], mut i: usize) -> Option<(Token, usize)> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut lo = *chars.get(i)?;
        i += 1;
        if lo == ']' && !first {
            return if ranges.is_empty() { None } else { Some((Token::Class { negated, ranges }, i)) };
        }
        first = false;
        if lo == '\\' {
            lo = *chars.get(i)?;
            i += 1;
        }
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i)?;
                i += 1;
            }
            if hi < lo {
                return None;
            }
        }
        ranges.push((lo, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Ignore {
        Ignore::parse(text).expect("valid .dockerignore")
    }

    fn pattern(p: &str) -> Pattern {
        Pattern::compile(p, true).expect("valid pattern")
    }

    #[test]
    fn wildcards() {
        assert!(pattern("*/temp*").matches("somedir/temporary.txt"));
        assert!(pattern("*/temp*").matches("somedir/temp"));
        assert!(!pattern("*/temp*").matches("temp"));
        assert!(!pattern("*/temp*").matches("a/b/temp"));
        assert!(pattern("*/*/temp*").matches("a/b/temp.txt"));
        assert!(pattern("temp?").matches("tempa"));
        assert!(!pattern("temp?").matches("tempab"));
        assert!(!pattern("temp?").matches("temp/"));
        assert!(pattern("[a-c]at").matches("bat"));
        assert!(!pattern("[a-c]at").matches("dat"));
        assert!(pattern("[^a]at").matches("bat"));
        assert!(!pattern("[^a]at").matches("aat"));
        assert!(!pattern("a[^x]b").matches("a/b"));
        assert!(pattern("[]]").matches("]"));
        assert!(pattern("\\*x").matches("*x"));
        assert!(!pattern("\\*x").matches("ax"));
        assert!(pattern("a.b").matches("a.b"));
        assert!(!pattern("a.b").matches("axb"));
        assert!(pattern("*").matches(".hidden"));
    }

    #[test]
    fn double_star() {
        let p = pattern("**/*.pyc");
        assert!(p.matches("a.pyc"));
        assert!(p.matches("x/y/z.pyc"));
        assert!(!p.matches("a.py"));
        assert!(!p.matches("a.pyc/b"));
        assert!(pattern("**").matches("anything/at/all"));
        assert!(pattern("a/**").matches("a/x/y"));
        assert!(!pattern("a/**").matches("a"));
        assert!(pattern("a/**/b").matches("a/b"));
        assert!(pattern("a/**/b").matches("a/x/y/b"));
        assert!(!pattern("a/**/b").matches("a/xb"));
        // moby: "**foo" with a literal rest is a suffix match.
        assert!(pattern("**foo").matches("x/barfoo"));
        // Without double_star (filepath.Match), "**" is two stars.
        assert!(!Pattern::compile("**", false).expect("valid").matches("a/b"));
    }

    #[test]
    fn exceptions_apply_in_order() {
        let r = rules("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(r.is_ignored("CHANGES.md"));
        assert!(!r.is_ignored("README.md"));
        assert!(!r.is_ignored("README-public.md"));
        assert!(r.is_ignored("README-secret.md"));
        // `*` stays in its directory.
        assert!(!r.is_ignored("docs/guide.md"));
        assert!(r.has_exceptions());
    }

    #[test]
    fn directories_cover_their_contents() {
        let r = rules("node_modules\n/build/\ndir\n!dir/keep\n");
        assert!(r.is_ignored("node_modules"));
        assert!(r.is_ignored("node_modules/a/b.js"));
        assert!(!r.is_ignored("src/node_modules"));
        assert!(r.is_ignored("build/out.o"));
        assert!(r.is_ignored("dir/other"));
        assert!(!r.is_ignored("dir/keep"));
        assert!(!r.is_ignored("dir/keep/inner"));
        assert!(!r.is_ignored("dirt"));
    }

    #[test]
    fn file_syntax() {
        let r = rules("# comment\n\n   \n #notacomment\n  ./a/../b/  \n**/*.pyc\n");
        assert!(r.is_ignored("#notacomment"));
        assert!(r.is_ignored("b"));
        assert!(r.is_ignored("b/c"));
        assert!(!r.is_ignored("a"));
        assert!(r.is_ignored("deep/x.pyc"));
        assert!(!r.is_ignored("comment"));
        assert!(Ignore::empty().is_empty() && !Ignore::empty().is_ignored("x"));
    }

    #[test]
    fn malformed_patterns_name_the_line() {
        for (text, line) in [("ok\n[abc\n", 2), ("!\n", 1), ("a\nb\nx\\\n", 3), ("[z-a]\n", 1), ("[]\n", 1)] {
            match Ignore::parse(text) {
                Err(BuildError::Ignore { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: expected an error, got {other:?}"),
            }
        }
        let many = "x\n".repeat(MAX_IGNORE_PATTERNS + 1);
        assert!(matches!(Ignore::parse(&many), Err(BuildError::Limit { .. })));
    }

    #[test]
    fn go_clean_cases() {
        for (input, want) in
            [("a//b/./c/", "a/b/c"), ("/../x", "/x"), ("../x", "../x"), ("a/../..", ".."), ("/", "/"), ("./", ".")]
        {
            assert_eq!(go_clean(input), want, "{input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn matching_never_panics(p in "[a-c*?/\\[\\]^!\\\\-]{0,12}", path in "[a-c/.]{0,16}") {
            if let Ok(compiled) = Pattern::compile(&p, true) {
                let _ = compiled.matches(&path);
            }
            let _ = Ignore::parse(&p).map(|r| r.is_ignored(&path));
        }
    }
}
