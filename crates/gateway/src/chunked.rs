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
        if self.state == State::Done {
            return Ok(Some(0));
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
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
    use super::*;

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
}
