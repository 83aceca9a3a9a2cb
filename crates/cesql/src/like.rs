//! `LIKE` patterns (§3.4.3): `%` matches any run of characters, `_` exactly one.
//!
//! Matching never backtracks: the pattern is split at its `%`s into segments; the first
//! must match at the start of the text, the last at its end, and each one between is taken
//! at its leftmost occurrence after the previous one. Leftmost is always right: a `%`
//! absorbs whatever lies between two segments, so an earlier match only leaves more room
//! for the segments after it. A segment of literal characters is found with the standard
//! library's substring search (linear in the text); one with `_` with the bit-parallel
//! Shift-And algorithm, which costs ⌈length / 64⌉ word operations per character of text.
//! A pattern is thus matched in time linear in the text (for a given pattern), where a
//! backtracking matcher takes pattern length × text length.

use std::collections::BTreeMap;

/// A compiled `LIKE` pattern.
///
/// `\%` and `\_` match a literal `%` and `_`. A backslash before any other character is
/// an ordinary character, so a pattern without wildcards matches exactly its own text
/// (the TCK requires `'ab\c' LIKE 'ab\c'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    /// The segment before the first `%` (the whole pattern when it has none), matched at
    /// the start of the text.
    head: Vec<Unit>,
    /// What follows the first `%`; `None` when the pattern has no `%`, so that `head`
    /// must match the whole text.
    tail: Option<Tail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tail {
    /// The non-empty segments between two `%`s, found in this order.
    middle: Vec<Needle>,
    /// The segment after the last `%`, matched at the end of the text.
    last: Vec<Unit>,
}

/// One position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Char(char),
    /// `_`: any one character.
    One,
}

impl Unit {
    fn accepts(self, c: char) -> bool {
        match self {
            Unit::Char(expected) => expected == c,
            Unit::One => true,
        }
    }
}

impl LikePattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let mut segments = vec![Vec::new()];
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let unit = match c {
                '\\' => match chars.next_if(|&c| c == '%' || c == '_') {
                    Some(escaped) => Unit::Char(escaped),
                    None => Unit::Char('\\'),
                },
                '%' => {
                    segments.push(Vec::new());
                    continue;
                }
                '_' => Unit::One,
                c => Unit::Char(c),
            };
            segments.last_mut().expect("segments starts with one segment").push(unit);
        }
        let mut segments = segments.into_iter();
        let head = segments.next().expect("segments starts with one segment");
        let tail = segments.next_back().map(|last| Tail {
            // Empty segments come from consecutive `%`, which mean the same as one.
            middle: segments.filter(|units| !units.is_empty()).map(|units| Needle::new(&units)).collect(),
            last,
        });
        Self { head, tail }
    }

    /// Whether `text` matches the whole pattern (case-sensitive, per character).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let Some(tail) = &self.tail else {
            return match_start(&self.head, text) == Some(text.len());
        };
        let Some(from) = match_start(&self.head, text) else { return false };
        // Matching the end before the middle bounds where the middle segments may be.
        let Some(to) = match_end(&tail.last, &text[from..]) else { return false };
        let mut rest = &text[from..from + to];
        for needle in &tail.middle {
            match needle.find(rest) {
                Some(end) => rest = &rest[end..],
                None => return false,
            }
        }
        true
    }
}

/// The byte length of the start of `text` that `units` match, if they do.
fn match_start(units: &[Unit], text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    for unit in units {
        step(1);
        let (_, c) = chars.next()?;
        if !unit.accepts(c) {
            return None;
        }
    }
    Some(chars.offset())
}

/// Where in `text` the end that `units` match begins, if they do.
fn match_end(units: &[Unit], text: &str) -> Option<usize> {
    let mut chars = text.char_indices().rev();
    let mut start = text.len();
    for unit in units.iter().rev() {
        step(1);
        let (at, c) = chars.next()?;
        if !unit.accepts(c) {
            return None;
        }
        start = at;
    }
    Some(start)
}

/// A segment between two `%`s, compiled for searching.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needle {
    /// Literal characters only.
    Literal(String),
    /// At least one `_`.
    Wildcards(ShiftAnd),
}

impl Needle {
    fn new(units: &[Unit]) -> Self {
        let literal: Option<String> = units
            .iter()
            .map(|unit| match unit {
                Unit::Char(c) => Some(*c),
                Unit::One => None,
            })
            .collect();
        match literal {
            Some(literal) => Needle::Literal(literal),
            None => Needle::Wildcards(ShiftAnd::new(units)),
        }
    }

    /// The byte offset in `text` just after the leftmost occurrence of the segment.
    fn find(&self, text: &str) -> Option<usize> {
        match self {
            Needle::Literal(literal) => {
                // Two-way search: linear in the text, with no worst case to provoke. A
                // match of valid UTF-8 in valid UTF-8 starts and ends on char boundaries.
                let end = text.find(literal.as_str()).map(|at| at + literal.len());
                step(end.unwrap_or(text.len()));
                end
            }
            Needle::Wildcards(shift_and) => shift_and.find(text),
        }
    }
}

/// A segment with `_`, searched with Shift-And: after each character of the text, bit `i`
/// of the state is set when the last `i + 1` characters match the first `i + 1` units.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShiftAnd {
    /// Number of units (at least 1).
    len: usize,
    /// The bits of the `_` units, which accept any character.
    any: Vec<u64>,
    /// Where each literal character of the segment is, sorted by character.
    chars: Vec<(char, Bits)>,
}

/// The units that accept one character. A character occurring more often than a mask
/// has words (fewer than 64 characters can) gets a mask, the others a list of positions:
/// memory stays linear in the segment and each character of text still costs a number
/// of steps bounded by the words of a mask.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bits {
    Mask(Vec<u64>),
    Positions(Vec<usize>),
}

impl ShiftAnd {
    fn new(units: &[Unit]) -> Self {
        let words = units.len().div_ceil(64);
        let mut any = vec![0; words];
        let mut positions: BTreeMap<char, Vec<usize>> = BTreeMap::new();
        for (i, unit) in units.iter().enumerate() {
            match unit {
                Unit::One => any[i / 64] |= 1 << (i % 64),
                Unit::Char(c) => positions.entry(*c).or_default().push(i),
            }
        }
        let chars = positions
            .into_iter()
            .map(|(c, positions)| {
                let bits = if positions.len() > words {
                    let mut mask = vec![0; words];
                    for i in positions {
                        mask[i / 64] |= 1 << (i % 64);
                    }
                    Bits::Mask(mask)
                } else {
                    Bits::Positions(positions)
                };
                (c, bits)
            })
            .collect();
        Self { len: units.len(), any, chars }
    }

    /// The byte offset in `text` just after the leftmost occurrence of the segment.
    fn find(&self, text: &str) -> Option<usize> {
        let words = self.any.len();
        let (last_word, last_bit) = ((self.len - 1) / 64, 1u64 << ((self.len - 1) % 64));
        let mut state = vec![0u64; words];
        let mut next = vec![0u64; words];
        for (at, c) in text.char_indices() {
            step(words);
            // Shift every partial match one unit on, and start a new one at `c`.
            let mut carry = 1;
            for word in &mut state {
                let out = *word >> 63;
                *word = (*word << 1) | carry;
                carry = out;
            }
            // Keep the partial matches whose next unit accepts `c`.
            for ((next, state), any) in next.iter_mut().zip(&state).zip(&self.any) {
                *next = state & any;
            }
            match self.chars.binary_search_by_key(&c, |(c, _)| *c).map(|found| &self.chars[found].1) {
                Ok(Bits::Mask(mask)) => {
                    for ((next, state), mask) in next.iter_mut().zip(&state).zip(mask) {
                        *next |= state & mask;
                    }
                }
                Ok(Bits::Positions(positions)) => {
                    for &i in positions {
                        next[i / 64] |= state[i / 64] & (1 << (i % 64));
                    }
                }
                Err(_) => {}
            }
            std::mem::swap(&mut state, &mut next);
            if state[last_word] & last_bit != 0 {
                return Some(at + c.len_utf8());
            }
        }
        None
    }
}

#[cfg(test)]
thread_local! {
    /// Steps taken by matching on this thread: characters compared, plus bytes passed to
    /// the substring search, plus words updated per character by Shift-And.
    static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts matching work, so tests can check that it stays linear without timing it.
#[inline]
fn step(n: usize) {
    #[cfg(test)]
    STEPS.with(|steps| steps.set(steps.get() + n));
    #[cfg(not(test))]
    let _ = n;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

    fn like(text: &str, pattern: &str) -> bool {
        let matched = LikePattern::new(pattern).matches(text);
        assert_eq!(matched, reference_like(text, pattern), "{text:?} LIKE {pattern:?}: the reference disagrees");
        matched
    }

    /// The matcher this one replaced: backtracking to the last `%`, pattern length × text
    /// length steps in the worst case, but short and evidently right.
    fn reference_like(text: &str, pattern: &str) -> bool {
        #[derive(Clone, Copy, PartialEq)]
        enum Part {
            Char(char),
            One,
            Any,
        }
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '\\' => Part::Char(chars.next_if(|&c| c == '%' || c == '_').unwrap_or('\\')),
                '%' => Part::Any,
                '_' => Part::One,
                c => Part::Char(c),
            });
        }
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0, 0);
        let mut resume: Option<(usize, usize)> = None;
        while let Some(&c) = text.get(t) {
            match parts.get(p) {
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
        parts[p..].iter().all(|part| *part == Part::Any)
    }

    /// Matches and returns the result with the steps it took.
    fn counted(text: &str, pattern: &str) -> (bool, usize) {
        let pattern = LikePattern::new(pattern);
        STEPS.with(|steps| steps.set(0));
        let matched = pattern.matches(text);
        (matched, STEPS.with(std::cell::Cell::get))
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
    fn head_and_last_segments_do_not_overlap() {
        assert!(!like("ab", "ab%b"));
        assert!(!like("aba", "ab%ba"));
        assert!(like("abba", "ab%ba"));
        assert!(like("ab", "a%b"));
        assert!(!like("a", "a%a"));
        assert!(like("aa", "a%a"));
        assert!(!like("abc", "a%bc%c"));
    }

    #[test]
    fn middle_segments_with_underscores() {
        assert!(like("xaybz", "%a_b%"));
        assert!(!like("xabz", "%a_b%"));
        assert!(like("aab", "%a_b"));
        assert!(like("ééaéb", "%é_é_%"));
        assert!(like("a€b", "%a_b%"), "_ is one character, not one byte");
        assert!(!like("a€€b", "%a_b%"));
        assert!(like("zzaXbYaZbzz", "%a_b%a_b%"));
        assert!(!like("zzaXbYa", "%a_b%a_b%"));
        assert!(like("___", "%\\__%"));
        // Longer than one 64-bit word of Shift-And state.
        let segment = format!("{}_{}", "a".repeat(70), "b".repeat(70));
        let pattern = format!("%{segment}%");
        assert!(like(&format!("xx{}c{}yy", "a".repeat(70), "b".repeat(70)), &pattern));
        assert!(!like(&format!("xx{}c{}yy", "a".repeat(70), "b".repeat(69)), &pattern));
        assert!(like(&format!("{}{}", "a".repeat(200), "b".repeat(71)), &pattern));
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
        assert!(like("50%", r"%\%"));
        assert!(!like("50", r"%\%"));
    }

    /// Adversarial patterns against a 1 MB text: the results are right and the steps
    /// stay a small multiple of the text (the replaced matcher took ~10⁹ steps here).
    #[test]
    fn adversarial_inputs_take_linear_steps() {
        let a = "a".repeat(1 << 20);
        let a_then_b = format!("{a}b");
        let many_a = format!("{}%b", "%a".repeat(499));
        assert_eq!(many_a.chars().count(), 1000);
        let literal_middle = format!("{many_a}%");
        let wildcard_middle = format!("%{}b%", "a_".repeat(499));
        let wildcards_only = format!("%{}%", "_".repeat(999));
        let cases = [
            (&a, &many_a, false),
            (&a_then_b, &many_a, true),
            (&a, &literal_middle, false),
            (&a_then_b, &literal_middle, true),
            (&a, &wildcard_middle, false),
            (&a_then_b, &wildcard_middle, true),
            (&a, &wildcards_only, true),
        ];
        for (text, pattern, expected) in cases {
            let (matched, steps) = counted(text, pattern);
            assert_eq!(matched, expected, "{pattern}");
            // Shift-And over 1000 units updates 16 words per character.
            let bound = 20 * (text.len() + pattern.len());
            assert!(steps <= bound, "{pattern}: {steps} steps for a {}-byte text", text.len());
        }
        // Multi-byte characters: `_` takes one whole character.
        let e = "é".repeat(1 << 18);
        let (matched, steps) = counted(&format!("{e}ü"), &format!("%{}ü%", "é_".repeat(400)));
        assert!(matched);
        assert!(steps <= 20 * e.len(), "{steps}");
    }

    #[test]
    fn many_distinct_characters_in_a_wildcard_segment() {
        // Every character of this segment is distinct: each keeps a list of positions.
        let segment: String = (0..2000u32).filter_map(|i| char::from_u32(0x4E00 + i)).chain(['_']).collect();
        let pattern = format!("%{segment}%");
        let text = format!("x{}yz", &segment[..segment.len() - 1]);
        assert!(like(&text, &pattern));
        assert!(!like(&text[..text.len() - 2], &pattern));
    }

    fn config() -> Config {
        Config {
            cases: 512,
            failure_persistence: None,
            rng_algorithm: RngAlgorithm::ChaCha,
            rng_seed: RngSeed::Fixed(0x5e7a1),
            ..Config::default()
        }
    }

    /// A text the pattern matches: each `%` replaced by some text, each `_` by a character.
    fn matching_text(pattern: &str, fill: &[String]) -> String {
        let mut text = String::new();
        let mut fill = fill.iter().cycle();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => text.push(chars.next_if(|&c| c == '%' || c == '_').unwrap_or('\\')),
                '%' => text.push_str(fill.next().map_or("", String::as_str)),
                '_' => text.push(fill.next().and_then(|s| s.chars().next()).unwrap_or('é')),
                c => text.push(c),
            }
        }
        text
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn agrees_with_the_reference(pattern in r"[ab%_\\é]{0,12}", text in r"[ab%_\\é]{0,16}") {
            prop_assert_eq!(LikePattern::new(&pattern).matches(&text), reference_like(&text, &pattern));
        }

        #[test]
        fn agrees_with_the_reference_on_near_matches(
            pattern in r"[ab%_\\é]{0,12}",
            fill in proptest::collection::vec(r"[abé]{0,4}", 1..4),
            cut in 0usize..3,
        ) {
            let text = matching_text(&pattern, &fill);
            prop_assert!(LikePattern::new(&pattern).matches(&text), "{:?} LIKE {:?}", text, pattern);
            // Without its last characters the text may or may not match: compare.
            let shorter: String = text.chars().take(text.chars().count().saturating_sub(cut)).collect();
            prop_assert_eq!(LikePattern::new(&pattern).matches(&shorter), reference_like(&shorter, &pattern));
        }
    }
}
