//! Turns expression text into tokens. Keywords, identifiers and function names are all
//! `Word`s here; the parser tells them apart (case-insensitively).

use crate::CesqlError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    /// `!=` or `<>`.
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    /// An unsigned run of decimal digits; the parser applies the sign and range check.
    Integer(String),
    /// A string literal with its delimiters removed and quote escapes resolved.
    Str(String),
    /// A run of ASCII letters, digits and underscores that is not all digits.
    Word(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// Byte offset of the token's first character.
    pub(crate) pos: usize,
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, CesqlError> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        let kind = match c {
            c if c.is_whitespace() => continue,
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            ',' => TokenKind::Comma,
            '+' => TokenKind::Plus,
            '-' => TokenKind::Minus,
            '*' => TokenKind::Star,
            '/' => TokenKind::Slash,
            '%' => TokenKind::Percent,
            '=' => TokenKind::Eq,
            '!' => match chars.next_if(|&(_, c)| c == '=') {
                Some(_) => TokenKind::NotEq,
                None => return Err(CesqlError::parse(pos, "expected '=' after '!'")),
            },
            '<' => match chars.next_if(|&(_, c)| c == '=' || c == '>') {
                Some((_, '=')) => TokenKind::LtEq,
                Some(_) => TokenKind::NotEq,
                None => TokenKind::Lt,
            },
            '>' => match chars.next_if(|&(_, c)| c == '=') {
                Some(_) => TokenKind::GtEq,
                None => TokenKind::Gt,
            },
            '\'' | '"' => TokenKind::Str(string_literal(pos, c, &mut chars)?),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some((_, c)) = chars.next_if(|&(_, c)| c.is_ascii_alphanumeric() || c == '_') {
                    word.push(c);
                }
                if word.bytes().all(|b| b.is_ascii_digit()) { TokenKind::Integer(word) } else { TokenKind::Word(word) }
            }
            other => {
                return Err(CesqlError::parse(pos, format!("unexpected character {other:?}")));
            }
        };
        tokens.push(Token { kind, pos });
    }
    Ok(tokens)
}

/// Reads a string literal whose opening `quote` was at `start`.
///
/// Inside the literal, `\` followed by the delimiting quote, or the quote doubled,
/// stands for the quote itself. Any other backslash sequence is kept verbatim so that
/// `LIKE` patterns still see their `\%` and `\_` escapes.
fn string_literal(
    start: usize,
    quote: char,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, CesqlError> {
    let unterminated = || CesqlError::parse(start, "unterminated string literal");
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err(unterminated()),
            Some((_, '\\')) => match chars.next() {
                None => return Err(unterminated()),
                Some((_, c)) if c == quote => value.push(quote),
                Some((_, c)) => {
                    value.push('\\');
                    value.push(c);
                }
            },
            Some((_, c)) if c == quote => {
                if chars.next_if(|&(_, c)| c == quote).is_some() {
                    value.push(quote);
                } else {
                    return Ok(value);
                }
            }
            Some((_, c)) => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).expect("valid input").into_iter().map(|t| t.kind).collect()
    }

    fn word(s: &str) -> TokenKind {
        TokenKind::Word(s.to_owned())
    }

    fn string(s: &str) -> TokenKind {
        TokenKind::Str(s.to_owned())
    }

    #[test]
    fn operators() {
        use TokenKind::*;
        assert_eq!(
            kinds("( ) , + - * / % = != <> < <= > >="),
            vec![LParen, RParen, Comma, Plus, Minus, Star, Slash, Percent, Eq, NotEq, NotEq, Lt, LtEq, Gt, GtEq]
        );
        assert_eq!(kinds("a<=-1"), vec![word("a"), LtEq, Minus, Integer("1".into())]);
    }

    #[test]
    fn words_and_integers() {
        assert_eq!(
            kinds("CONCAT_WS 123 abc1 1abc"),
            vec![word("CONCAT_WS"), TokenKind::Integer("123".into()), word("abc1"), word("1abc")]
        );
    }

    #[test]
    fn string_literals_and_escapes() {
        assert_eq!(kinds(r#"'a"b\'c'"#), vec![string(r#"a"b'c"#)]);
        assert_eq!(kinds(r#""a'b\"c""#), vec![string(r#"a'b"c"#)]);
        assert_eq!(kinds("'it''s'"), vec![string("it's")]);
        assert_eq!(kinds("''"), vec![string("")]);
        assert_eq!(kinds(r"'a\%b\c'"), vec![string(r"a\%b\c")]);
        assert_eq!(kinds("'x' 'y'"), vec![string("x"), string("y")]);
    }

    #[test]
    fn positions_are_byte_offsets() {
        let tokens = tokenize("é = 'é'").err();
        assert_eq!(tokens, Some(CesqlError::parse(0, "unexpected character 'é'")));
        let tokens = tokenize("a  =  'é'").expect("valid input");
        assert_eq!(tokens.iter().map(|t| t.pos).collect::<Vec<_>>(), vec![0, 3, 6]);
    }

    #[test]
    fn lexical_errors() {
        for bad in ["'abc", "\"abc", "'abc\\", "a ! b", "a @ b", "a;"] {
            let err = tokenize(bad).expect_err(bad);
            assert_eq!(err.kind(), crate::ErrorKind::Parse, "{bad}");
        }
    }
}
