//! Where a chunked message body ends (RFC 9112 §7.1), found on the bytes as they arrive so
//! that the relay can forward a chunked body unchanged and still know when the message is
//! over (and the connection free for the next one). Sans-IO: fed slices, never reads.

/// The position of a [`ChunkedEnd`] in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line's hex digits (`digits` counts them).
    Size,
    /// After the size: whitespace or a chunk extension, up to CR.
    Extension,
    /// CR of a chunk-size line seen; LF due.
    SizeLf,
    /// Inside chunk data (`remaining` bytes left).
    Data,
    /// Chunk data over; CR due.
    DataCr,
    /// CR after chunk data seen; LF due.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    TrailerLine,
    /// CR of a trailer line seen; LF due.
    TrailerLf,
    /// CR of the final empty line seen; LF due.
    EndLf,
    Done,
}

/// The chunked framing is broken: the message cannot be relayed further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedChunked;

/// Tracks one chunked body.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedEnd {
    state: State,
    size: u64,
    digits: u8,
}

impl ChunkedEnd {
    pub(crate) fn new() -> ChunkedEnd {
        ChunkedEnd { state: State::Size, size: 0, digits: 0 }
    }

    /// Consumes the next bytes of the body. `Some(n)`: the body ends after the first `n`
    /// bytes of `bytes` (the rest belongs to whatever follows the message).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, MalformedChunked> {
        self.decode(bytes, |_| {})
    }

    /// As [`Self::feed`], handing each piece of chunk data (the message's content, without
    /// the framing) to `data` as it passes.
    pub(crate) fn decode(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, MalformedChunked> {
        if self.state == State::Done {
            return Ok(Some(0));
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                data(&bytes[i..i + take]);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = bytes[i];
            i += 1;
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    // Sixteen hex digits overflow nothing; more are no sane chunk size.
                    if self.digits == 16 {
                        return Err(MalformedChunked);
                    }
                    self.digits += 1;
                    self.size = self.size << 4 | u64::from((b as char).to_digit(16).unwrap_or(0));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(MalformedChunked),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => return Err(MalformedChunked),
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err(MalformedChunked),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::fuzz::{config, cuts, mutate, mutation};

    /// Feeds `body` in pieces of `step` bytes; returns where the message ended, counted
    /// from the start of `body`.
    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, MalformedChunked> {
        let mut scanner = ChunkedEnd::new();
        let mut offset = 0;
        for piece in body.chunks(step) {
            if let Some(n) = scanner.feed(piece)? {
                return Ok(Some(offset + n));
            }
            offset += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        for step in 1..=body.len() {
            assert_eq!(end_of(body, step), Ok(Some(end)), "pieces of {step}");
        }
    }

    #[test]
    fn decoding_gives_the_content_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX: y\r\n\r\nnext";
        for step in 1..=body.len() {
            let (mut scanner, mut content, mut end) = (ChunkedEnd::new(), Vec::new(), None);
            for (i, piece) in body.chunks(step).enumerate() {
                if let Some(n) = scanner.decode(piece, |data| content.extend_from_slice(data)).expect("valid") {
                    end = Some(i * step + n);
                    break;
                }
            }
            assert_eq!(end, Some(body.len() - 4), "pieces of {step}");
            assert_eq!(content, b"helloabcdefghijklmnopqrstuvwxyz", "pieces of {step}");
        }
    }

    #[test]
    fn trailers_belong_to_the_body() {
        let body = b"3\r\nabc\r\n0\r\nChecksum: 1\r\nOther: x\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(end_of(body, step), Ok(Some(body.len())), "pieces of {step}");
        }
    }

    #[test]
    fn an_unfinished_body_has_no_end() {
        assert_eq!(end_of(b"5\r\nhel", 2), Ok(None));
        assert_eq!(end_of(b"5\r\nhello\r\n0\r\n", 3), Ok(None));
        assert_eq!(end_of(b"A\r\n0123456789\r\n", 4), Ok(None));
    }

    #[test]
    fn broken_framing_is_refused() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b"0\r\nBad\nTrailer\r\n\r\n",
        ] {
            assert_eq!(end_of(body, 1), Err(MalformedChunked), "{:?}", String::from_utf8_lossy(body));
        }
    }

    /// Feeds `body` cut at `cuts`, checking that no end is reported beyond a piece; returns
    /// where the message ended, counted from the start of `body`.
    fn end_in_pieces(body: &[u8], cuts: &[usize]) -> Result<Result<Option<usize>, MalformedChunked>, TestCaseError> {
        let mut scanner = ChunkedEnd::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([body.len()]) {
            let piece = &body[start..end];
            match scanner.feed(piece) {
                Ok(Some(n)) => {
                    prop_assert!(n <= piece.len(), "an end {} bytes into a piece of {}", n, piece.len());
                    // Once over, it stays over, and takes nothing more.
                    prop_assert_eq!(scanner.feed(&body[start + n..]), Ok(Some(0)));
                    return Ok(Ok(Some(start + n)));
                }
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
            start = end;
        }
        Ok(Ok(None))
    }

    /// A chunk-size line: the size in hex (zero-padded up to 16 digits, either case) and an
    /// extension (or whitespace) after it.
    fn size_line(size: usize, padding: usize, upper: bool, extension: &str) -> Vec<u8> {
        let digits = if upper { format!("{size:X}") } else { format!("{size:x}") };
        let width = (digits.len() + padding).min(16);
        format!("{digits:0>width$}{extension}\r\n").into_bytes()
    }

    fn extension() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "",
            "",
            ";a",
            ";name=value",
            ";q=\"quoted; value\"",
            " ;x",
            "\t;x=1;y",
            "; x = 1 ",
            " ",
            ";\u{7f}\u{1}",
        ])
    }

    /// A valid chunked body: data chunks (any bytes), the last chunk, trailer fields.
    fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
        let data = prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 1..64),
            1 => prop::collection::vec(any::<u8>(), 1000..5000),
            1 => Just(b"0\r\n\r\n".to_vec()),
        ];
        let chunk = (data, 0usize..4, any::<bool>(), extension());
        let trailer = "[A-Za-z-]{1,8}: [ -~]{0,12}";
        (
            prop::collection::vec(chunk, 0..6),
            (0usize..17, any::<bool>(), extension()),
            prop::collection::vec(trailer, 0..3),
        )
            .prop_map(|(chunks, (padding, upper, last_extension), trailers)| {
                let mut body = Vec::new();
                for (data, padding, upper, extension) in chunks {
                    body.extend_from_slice(&size_line(data.len(), padding, upper, extension));
                    body.extend_from_slice(&data);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(&size_line(0, padding, upper, last_extension));
                for trailer in trailers {
                    body.extend_from_slice(trailer.as_bytes());
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"\r\n");
                body
            })
    }

    /// Bytes from the chunked grammar's alphabet, with sizes that overflow nothing.
    fn chunk_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            &b"0"[..],
            b"1",
            b"a",
            b"F",
            b"ffffffffffffffff",
            b"10000000000000000",
            b"x",
            b";",
            b"=",
            b" ",
            b"\t",
            b"\r",
            b"\n",
            b"\r\n",
            b"\r\n\r\n",
            b"hello",
            b"\0",
            b"\xff",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    /// Where a chunked body ends by the grammar (RFC 9112 §7.1, with the scanner's limit of
    /// 16 hex digits), read over the whole input at once: `Ok(None)` when the input stops
    /// before the end, `Err` when a byte cannot be where it is.
    fn reference_end(body: &[u8]) -> Result<Option<usize>, MalformedChunked> {
        /// A CRLF at `at`: the position after it.
        fn crlf(body: &[u8], at: usize) -> Result<Option<usize>, MalformedChunked> {
            match (body.get(at), body.get(at + 1)) {
                (None, _) | (Some(b'\r'), None) => Ok(None),
                (Some(b'\r'), Some(b'\n')) => Ok(Some(at + 2)),
                _ => Err(MalformedChunked),
            }
        }
        /// The line from `at` to its CR (no LF before it): the position of the CR.
        fn to_cr(body: &[u8], at: usize) -> Result<Option<usize>, MalformedChunked> {
            match body[at..].iter().position(|b| *b == b'\r' || *b == b'\n') {
                None => Ok(None),
                Some(n) if body[at + n] == b'\n' => Err(MalformedChunked),
                Some(n) => Ok(Some(at + n)),
            }
        }
        let mut at = 0;
        loop {
            let digits = body[at..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if digits > 16 {
                return Err(MalformedChunked);
            }
            if at + digits == body.len() {
                return Ok(None);
            }
            if digits == 0 {
                return Err(MalformedChunked);
            }
            let hex = std::str::from_utf8(&body[at..at + digits]).map_err(|_| MalformedChunked)?;
            let size = u64::from_str_radix(hex, 16).map_err(|_| MalformedChunked)?;
            at += digits;
            if matches!(body[at], b';' | b' ' | b'\t') {
                let Some(cr) = to_cr(body, at)? else { return Ok(None) };
                at = cr;
            }
            let Some(next) = crlf(body, at)? else { return Ok(None) };
            at = next;
            if size == 0 {
                break;
            }
            if ((body.len() - at) as u64) < size {
                return Ok(None);
            }
            at += size as usize;
            let Some(next) = crlf(body, at)? else { return Ok(None) };
            at = next;
        }
        loop {
            match body.get(at) {
                None => return Ok(None),
                Some(b'\r') => return crlf(body, at),
                Some(_) => {
                    let Some(cr) = to_cr(body, at)? else { return Ok(None) };
                    let Some(next) = crlf(body, cr)? else { return Ok(None) };
                    at = next;
                }
            }
        }
    }

    /// Checks a scanner run on anything: the outcome the grammar gives, whole and in pieces,
    /// and any end after a last chunk line and an empty line.
    fn check_any(body: &[u8], at: &[Index]) -> Result<(), TestCaseError> {
        let whole = end_in_pieces(body, &[])?;
        prop_assert_eq!(whole, reference_end(body), "the scanner and the grammar disagree");
        let pieces = end_in_pieces(body, &cuts(body.len(), at))?;
        prop_assert_eq!(whole, pieces, "whole and in pieces");
        if let Ok(Some(end)) = whole {
            prop_assert!(end >= 5 && end <= body.len());
            prop_assert!(body[..end].ends_with(b"\r\n\r\n"), "ended at {} without an empty line", end);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(0xC4_0001, 256))]

        /// A valid body ends where it was encoded to end, however it is cut, whatever
        /// follows it.
        #[test]
        fn valid_bodies_end_where_encoded(
            body in chunked_body(),
            next in prop::collection::vec(any::<u8>(), 0..32),
            at in prop::collection::vec(any::<Index>(), 0..12),
        ) {
            let mut bytes = body.clone();
            bytes.extend_from_slice(&next);
            let whole = end_in_pieces(&bytes, &[])?;
            prop_assert_eq!(whole, Ok(Some(body.len())));
            prop_assert_eq!(reference_end(&bytes), Ok(Some(body.len())));
            let pieces = end_in_pieces(&bytes, &cuts(bytes.len(), &at))?;
            prop_assert_eq!(pieces, Ok(Some(body.len())));
            // Byte by byte, too.
            let every: Vec<usize> = (1..bytes.len()).collect();
            prop_assert_eq!(end_in_pieces(&bytes, &every)?, Ok(Some(body.len())));
            // Cut short, it has no end yet.
            let short = &body[..body.len() - 1];
            prop_assert_eq!(end_in_pieces(short, &cuts(short.len(), &at))?, Ok(None));
        }

        #[test]
        fn mutated_bodies(
            body in chunked_body(),
            mutations in prop::collection::vec(mutation(), 1..6),
            at in prop::collection::vec(any::<Index>(), 0..12),
        ) {
            check_any(&mutate(&body, &mutations), &at)?;
        }

        #[test]
        fn grammar_soup(body in chunk_soup(), at in prop::collection::vec(any::<Index>(), 0..12)) {
            check_any(&body, &at)?;
        }

        #[test]
        fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256), at in prop::collection::vec(any::<Index>(), 0..12)) {
            check_any(&body, &at)?;
        }
    }
}
