//! Whole-message HTTP/1.1 exchanges: the data plane's client for requests from inside the
//! server whose body is in memory and whose answer is read whole — event delivery to
//! subscribers and sinks, sources' posts, async calls' outcomes.
//!
//! Written and read as on the relay ([`crate::relay`]): the request head and body go out in
//! one write on a kept-alive connection the calling task drives; the response head is
//! parsed in place (httparse) and its body taken in its framing (`content-length`,
//! chunked — decoded by [`ChunkedEnd`] — or until the subscriber closes), up to a bound.
//! No hyper dispatcher, no channel between a request and its connection, no body frames:
//! the only thing built is the header map the caller reads. (hyper's client connection
//! was a fifth of the server's CPU per event through a Sequence; see bench/README.)
//!
//! A request on a kept-alive connection that fails before any byte of an answer goes out
//! again on another connection by the gateway's one rule ([`rewrite::may_retry`]).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::GatewayError;
use crate::chunked::ChunkedEnd;
use crate::relay::{
    Framing, InstanceConn, InstanceConns, MAX_HEADERS, ResponseLine, connection_options, parse_response_line,
    read_more, response_framing, write_noting,
};
use crate::rewrite::{self, Unanswered};

/// An answer read whole.
#[derive(Debug)]
pub struct WholeResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Kept-alive connections by `host:port` (resolved on connect) for whole-message
/// exchanges. Clones share the connections; like the hyper path's (`upstream.rs`), they are
/// only used on the runtime that opened them.
#[derive(Clone)]
pub struct Exchanges {
    conns: InstanceConns<String>,
}

/// Why an exchange failed: `None`, the connection closed before a single byte of an answer.
type ReadFailure = Option<GatewayError>;

impl Exchanges {
    /// Keeps up to `max_idle` idle connections to each address; gives up connecting after
    /// `connect_timeout`.
    pub fn new(max_idle: usize, connect_timeout: Duration) -> Exchanges {
        Exchanges { conns: InstanceConns::new(max_idle, Some(connect_timeout)) }
    }

    /// Sends `method target` (origin form) with `headers` — `host` among them — and
    /// `body` to `address`, and reads the answer whole; a body longer than `max_body` fails
    /// the exchange (and closes the connection).
    pub async fn send(
        &self,
        address: &str,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
        max_body: usize,
    ) -> Result<WholeResponse, GatewayError> {
        let request = encode_request(method, target, headers, body);
        let idempotent = rewrite::is_idempotent(method.as_str());
        let head_only = method == Method::HEAD;
        loop {
            let (mut conn, reused) = self.conns.get(address).await?;
            if let Err((e, failure)) = write_noting(&mut conn.stream, &request).await {
                if rewrite::may_retry(reused, failure, idempotent, true) {
                    continue;
                }
                return Err(GatewayError::Upstream(e.to_string()));
            }
            match read_response(&mut conn, head_only, max_body).await {
                Ok((response, reusable)) => {
                    if reusable && conn.buf.is_empty() {
                        self.conns.put(address.to_owned(), conn);
                    }
                    return Ok(response);
                }
                Err(None) if rewrite::may_retry(reused, Unanswered::Sent, idempotent, true) => {}
                Err(None) => return Err(GatewayError::Upstream("connection closed without an answer".into())),
                Err(Some(e)) => return Err(e),
            }
        }
    }
}

/// The request on the wire: request line, `headers` (but any framing field of theirs),
/// `content-length`, the empty line and `body`.
fn encode_request(method: &Method, target: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + headers.len() * 48 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A response head parsed off the front of a buffer.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this response.
    reusable: bool,
}

/// Parses the response head at the start of `buf`, consuming it. `None`: incomplete.
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, GatewayError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Some(ResponseLine { head_len, version, code, headers: fields, .. }) = parse_response_line(buf, &mut fields)?
    else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(code).map_err(|_| GatewayError::Upstream(format!("invalid status {code}")))?;
    let (framing, _) = response_framing(code, head_only, fields)?;
    let reusable = version == 1 && !connection_options(fields).close && framing != Framing::UntilClose;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for h in fields {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Err(GatewayError::Upstream(format!("malformed response field {:?}", h.name)));
        };
        headers.append(name, value);
    }
    buf.advance(head_len);
    Ok(Some(Head { status, headers, framing, reusable }))
}

/// Reads a response (after any interim 1xx answers) whole; with whether the connection can
/// carry another request.
async fn read_response(
    conn: &mut InstanceConn,
    head_only: bool,
    max_body: usize,
) -> Result<(WholeResponse, bool), ReadFailure> {
    let mut received = false;
    let head = loop {
        if !conn.buf.is_empty() {
            received = true;
            match parse_head(&mut conn.buf, head_only).map_err(Some)? {
                Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Some(GatewayError::Upstream("switching protocols without an upgrade".into())));
                }
                Some(head) if head.status.is_informational() => continue,
                Some(head) => break head,
                None => {}
            }
        }
        match read_more(&mut conn.stream, &mut conn.buf).await {
            Ok(0) | Err(_) if !received => return Err(None),
            Ok(0) => return Err(Some(GatewayError::Upstream("connection closed in the response head".into()))),
            Err(e) => return Err(Some(GatewayError::Upstream(e.to_string()))),
            Ok(_) => {}
        }
    };
    let too_long = || Some(GatewayError::Upstream(format!("response body longer than {max_body} bytes")));
    let cut_short = || Some(GatewayError::Upstream("connection closed in the response body".into()));
    let body = match head.framing {
        Framing::Empty => Bytes::new(),
        Framing::Length(n) => {
            let n = usize::try_from(n).ok().filter(|n| *n <= max_body).ok_or_else(too_long)?;
            while conn.buf.len() < n {
                match read_more(&mut conn.stream, &mut conn.buf).await {
                    Ok(0) | Err(_) => return Err(cut_short()),
                    Ok(_) => {}
                }
            }
            conn.buf.split_to(n).freeze()
        }
        Framing::Chunked => {
            let mut decoder = ChunkedEnd::new();
            let mut body = BytesMut::new();
            loop {
                let end = decoder
                    .decode(&conn.buf, |data| body.extend_from_slice(data))
                    .map_err(|_| Some(GatewayError::Upstream("malformed chunked response body".into())))?;
                if body.len() > max_body {
                    return Err(too_long());
                }
                match end {
                    Some(end) => {
                        conn.buf.advance(end);
                        break body.freeze();
                    }
                    None => conn.buf.clear(),
                }
                match read_more(&mut conn.stream, &mut conn.buf).await {
                    Ok(0) | Err(_) => return Err(cut_short()),
                    Ok(_) => {}
                }
            }
        }
        Framing::UntilClose => loop {
            if conn.buf.len() > max_body {
                return Err(too_long());
            }
            match read_more(&mut conn.stream, &mut conn.buf).await {
                Ok(0) => break conn.buf.split().freeze(),
                Err(_) => return Err(cut_short()),
                Ok(_) => {}
            }
        },
    };
    Ok((WholeResponse { status: head.status, headers: head.headers, body }, head.reusable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_fields_and_one_content_length() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("127.0.0.1:9"));
        headers.insert("ce-id", HeaderValue::from_static("1"));
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let wire = encode_request(&Method::POST, "/hook?x=1", &headers, b"{}");
        assert_eq!(
            String::from_utf8(wire).expect("text"),
            "POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nce-id: 1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn heads_give_status_fields_and_framing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nCe-Id: 7\r\ncontent-length: 3\r\n\r\nabcHTTP"[..]);
        let head = parse_head(&mut buf, false).expect("valid").expect("complete");
        assert_eq!((head.status, head.framing, head.reusable), (StatusCode::OK, Framing::Length(3), true));
        assert_eq!(head.headers.get("ce-id").and_then(|v| v.to_str().ok()), Some("7"));
        assert_eq!(&buf[..], b"abcHTTP", "the head is consumed, the body left");
        let mut closing =
            BytesMut::from(&b"HTTP/1.1 202 Accepted\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..]);
        let head = parse_head(&mut closing, false).expect("valid").expect("complete");
        assert!(!head.reusable);
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut partial, false).expect("valid so far").is_none());
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..]);
        assert!(parse_head(&mut bad, false).is_err(), "conflicting lengths");
    }
}
