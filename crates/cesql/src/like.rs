//! `LIKE` patterns (§3.4.3): `%` matches any run of characters, `_` exactly one.

/// A compiled `LIKE` pattern.
///
/// `\%` and `\_` match a literal `%` and `_`. A backslash before any other character is
/// an ordinary character, so a pattern without wildcards matches exactly its own text
/// (the TCK requires `'ab\c' LIKE 'ab\c'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Char(char),
    /// `_`
    One,
    /// `%`
    Any,
}

impl LikePattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let part = match c {
                '\\' => match chars.next_if(|&c| c == '%' || c == '_') {
                    Some(escaped) => Part::Char(escaped),
                    None => Part::Char('\\'),
                },
                '%' => Part::Any,
                '_' => Part::One,
                c => Part::Char(c),
            };
            // Consecutive `%` are equivalent to one; merging keeps matching linear-ish.
            if !(part == Part::Any && parts.last() == Some(&Part::Any)) {
                parts.push(part);
            }
        }
        Self { parts }
    }

    /// Whether `text` matches the whole pattern (case-sensitive, per character).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0, 0);
        // Where to resume after the most recent `%`: (pattern index after it, text index it
        // currently absorbs up to). Backtracking only to the last `%` is enough because a
        // later `%` can absorb anything an earlier one could.
        let mut resume: Option<(usize, usize)> = None;
        while let Some(&c) = text.get(t) {
            match self.parts.get(p) {
                Some(Part::Any) => {
                    p += 1;
                    resume = Some((p, t));
                    continue;
                }
                Some(Part::One) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                Some(Part::Char(expected)) if *expected == c => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((after_any, absorbed)) => {
                    p = after_any;
                    t = absorbed + 1;
                    resume = Some((after_any, absorbed + 1));
                }
                None => return false,
            }
        }
        self.parts.get(p..).unwrap_or(&[]).iter().all(|part| *part == Part::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::new(pattern).matches(text)
    }

    #[test]
    fn literal_patterns() {
        assert!(like("abc", "abc"));
        assert!(!like("abcd", "abc"));
        assert!(!like("ab", "abc"));
        assert!(like("", ""));
        assert!(!like("a", ""));
        assert!(!like("aBc", "abc"));
    }

    #[test]
    fn wildcards() {
        assert!(like("", "%"));
        assert!(like("anything", "%"));
        assert!(like("azzzbzzzc", "a%b%c"));
        assert!(like("ab", "_b%"));
        assert!(like("abcd1", "_b%"));
        assert!(!like("b", "_b%"));
        assert!(!like("acd", "_b%"));
        assert!(like("aXbXbXc", "a%b_c"));
        assert!(!like("abc", "a%b_c"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("ééé", "_é_"));
        assert!(like("abc", "%%%c"));
    }

    #[test]
    fn escapes() {
        assert!(like("abc%", r"abc\%"));
        assert!(!like("abcd", r"abc\%"));
        assert!(like("a_b", r"a\_b"));
        assert!(!like("axb", r"a\_b"));
        assert!(like(r"ab\c", r"ab\c"));
        assert!(like(r"a\", r"a\"));
        assert!(like(r"a\\b", r"a\\b"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let text = "a".repeat(5_000);
        let pattern = format!("{}b", "%a".repeat(200));
        assert!(!like(&text, &pattern));
    }
}
