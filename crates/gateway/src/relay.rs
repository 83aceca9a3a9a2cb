//! The HTTP/1.1 relay: the gateway's fast path for plain HTTP/1.1 requests.
//!
//! A request head is parsed in place (httparse), routed, rewritten for the instance by the
//! rules of [`crate::rewrite`] (hop-by-hop, `Connection`-listed and client forwarding fields
//! dropped, `x-forwarded-*` added, the `/f/<ns>/<service>` prefix stripped) and written
//! to a kept-alive instance connection together with the body bytes already read; the
//! response head is parsed the same way and written back with the first body bytes, and the
//! body is copied through unchanged in its own framing (`content-length`, chunked — its end
//! found by [`ChunkedEnd`] — or until the instance closes). No request or response object
//! is built, no header map, no body frames: a proxied request costs the same four socket
//! operations as in nginx and little more user time (hyper's server and client dispatchers
//! cost twice nginx's user time per request; see ARCHITECTURE.md).
//!
//! An upgrade (WebSocket and the like: `Upgrade` with no body) is forwarded with its
//! `Upgrade` field; when the instance switches protocols, the two connections are joined
//! into a tunnel until either side closes, the lease held all along (an open WebSocket
//! is a request in flight, as in Knative).
//!
//! Everything else — HTTP/1.0, h2c (from clients, or to instances), upgrades with a body, `Expect`, chunked or otherwise framed request
//! bodies, absolute-form targets, ingresses, heads that do not parse — is handed off at
//! a request boundary, with the bytes read so far, to hyper's server ([`HandOff`], served by
//! [`crate::proxy`]), which then owns the connection for the rest of its life.
//!
//! Invariant: a response is forwarded with the framing it came with, so the client
//! connection and the instance connection stay in step; when the end of a message cannot
//! be known (a body delimited by close, broken framing, a failure half-way) the connection
//! concerned is closed, never reused.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::chunked::ChunkedEnd;
use crate::listen::ConnectionLimits;
use crate::rewrite::{self, ConnectionOptions, Forwarding, Unanswered, list_tokens};
use crate::router::{Chosen, Gateway, Routed, TAG_HEADER, Unrouted, prefers_async};
use crate::routes::Forward;
use crate::upstream::{IdleLists, MAX_IDLE_PER_ADDRESS, Reusable};
use crate::{GatewayError, Lease, RevisionPool};

/// The largest request or response head relayed; a larger request goes to hyper (which
/// answers 431), a larger response is a 502.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a head may have here (hyper takes requests with more).
pub(crate) const MAX_HEADERS: usize = 100;
/// Free space kept in a read buffer before each read.
const READ_SPARE: usize = 8 * 1024;

/// A connection the relay leaves to hyper: the socket and the bytes already read from it.
pub(crate) struct HandOff {
    stream: TcpStream,
    read_ahead: Bytes,
}

impl AsyncRead for HandOff {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.read_ahead.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read_ahead.len().min(buf.remaining());
        buf.put_slice(&self.read_ahead[..n]);
        self.read_ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HandOff {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A kept-alive connection to an instance (or, for [`crate::exchange`], a subscriber), with
/// the bytes read from it but not yet used.
pub(crate) struct InstanceConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    idle_since: Instant,
}

impl InstanceConn {
    /// A new connection on `stream`, just connected.
    pub(crate) fn new(stream: TcpStream) -> InstanceConn {
        let _ = stream.set_nodelay(true);
        InstanceConn { stream, buf: BytesMut::with_capacity(READ_SPARE), idle_since: Instant::now() }
    }
}

impl Reusable for InstanceConn {
    fn idle_since(&self) -> Instant {
        self.idle_since
    }
    fn set_idle_since(&mut self, at: Instant) {
        self.idle_since = at;
    }
    /// An idle connection the instance closed (or wrote to) is readable: unusable. Asks the
    /// reactor's last word, without a system call.
    fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
}

/// Idle raw connections by address — one gateway thread's to instances, or event
/// delivery's to subscribers ([`crate::exchange`], keyed by `host:port`). Clones share the
/// lists.
#[derive(Clone)]
pub(crate) struct InstanceConns<A = SocketAddr> {
    idle: Arc<Mutex<IdleLists<A, InstanceConn>>>,
    /// The longest wait for a new connection (`None`: the kernel's).
    connect_timeout: Option<Duration>,
}

impl Default for InstanceConns {
    fn default() -> Self {
        InstanceConns::new(MAX_IDLE_PER_ADDRESS, None)
    }
}

impl<A: std::hash::Hash + Eq> InstanceConns<A> {
    /// Keeps up to `max_idle` idle connections to each address.
    pub(crate) fn new(max_idle: usize, connect_timeout: Option<Duration>) -> Self {
        InstanceConns { idle: Arc::new(Mutex::new(IdleLists::new(max_idle))), connect_timeout }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleLists<A, InstanceConn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `addr` (`true`: reused) or a new one.
    pub(crate) async fn get<Q>(&self, addr: &Q) -> Result<(InstanceConn, bool), GatewayError>
    where
        A: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + std::fmt::Display + ?Sized,
        for<'q> &'q Q: tokio::net::ToSocketAddrs,
    {
        if let Some(conn) = self.lock().take(addr) {
            return Ok((conn, true));
        }
        let connecting = TcpStream::connect(addr);
        let stream = match self.connect_timeout {
            None => connecting.await,
            Some(t) => tokio::time::timeout(t, connecting)
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
        }
        .map_err(|e| GatewayError::Upstream(format!("connect to {addr}: {e}")))?;
        Ok((InstanceConn::new(stream), false))
    }

    pub(crate) fn put(&self, addr: A, conn: InstanceConn) {
        self.lock().put(addr, conn);
    }
}

/// Reads more bytes into `buf`; `Ok(0)` at end of stream.
pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPARE / 2 {
        buf.reserve(READ_SPARE);
    }
    stream.read_buf(buf).await
}

/// What the `Connection` fields of a head say.
pub(crate) fn connection_options<'h>(headers: &[httparse::Header<'h>]) -> ConnectionOptions<'h> {
    ConnectionOptions::parse(headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value))
}

/// A `content-length` value: digits only (RFC 9110 §8.6).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the relay needs to know about a request once its head has been rewritten.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts {
    pub(crate) body_len: u64,
    /// The client asked to close after this exchange.
    pub(crate) close: bool,
    /// A `HEAD` request: the response has no body, whatever its fields say.
    pub(crate) head_only: bool,
    /// Its method is idempotent (see [`rewrite::may_retry`]).
    pub(crate) idempotent: bool,
    /// Asks to switch protocols (`Upgrade`).
    pub(crate) upgrade: bool,
}

/// A request the relay forwards, its head already rewritten for the instance.
pub(crate) struct RelayedRequest {
    /// Bytes of the head in the client's buffer.
    pub(crate) head_len: usize,
    pub(crate) facts: RequestFacts,
    /// The revision's pool and the service's name, or why there is none.
    pub(crate) route: Result<(Arc<RevisionPool>, String), Unrouted>,
}

/// What the bytes at the start of a client's buffer are.
pub(crate) enum Parsed {
    Incomplete,
    /// Not for the relay: hyper takes over.
    HandOff,
    Request(RelayedRequest),
}

/// A request the relay refuses with 400 (and closes the connection after): its body, if any,
/// is never read, so nothing of it can be taken for a request.
fn bad_request(head_len: usize, why: &str) -> Parsed {
    let facts = RequestFacts { body_len: 0, close: true, head_only: false, idempotent: false, upgrade: false };
    let route = Err(Box::new((GatewayError::BadRequest(why.into()), None)));
    Parsed::Request(RelayedRequest { head_len, facts, route })
}

/// Parses the request head at the start of `buf` and, when the relay can forward it, writes
/// the instance's request line and fields into `upstream_head` (all but the final empty
/// line).
pub(crate) fn parse_request(gateway: &Gateway, buf: &[u8], forwarded_for: &str, upstream_head: &mut Vec<u8>) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::HandOff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOff;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Parsed::HandOff;
    }
    let headers = req.headers;
    let mut host = None;
    let mut body_len = None;
    let mut upgrade = None;
    let mut tag = None;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return bad_request(head_len, "more than one host field");
            }
            host = Some(std::str::from_utf8(h.value).ok());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match (parse_length(h.value), body_len) {
                (Some(n), None) => body_len = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::HandOff,
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        } else if h.name.eq_ignore_ascii_case(TAG_HEADER) {
            tag = std::str::from_utf8(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("expect")
            || (h.name.eq_ignore_ascii_case("prefer") && prefers_async(h.value))
        {
            // An async call is queued, not relayed.
            return Parsed::HandOff;
        }
    }
    if upgrade.is_some() && body_len.unwrap_or(0) > 0 {
        return Parsed::HandOff;
    }
    let host = match host {
        Some(Some(h)) => h,
        Some(None) => return Parsed::HandOff,
        None => return bad_request(head_len, "an HTTP/1.1 request needs a host field"),
    };
    let connection = connection_options(headers);
    let route = match gateway.route(Some(host), path, tag, false) {
        Ok(Routed::Ingress { .. } | Routed::Async { .. }) => return Parsed::HandOff,
        Ok(Routed::Pool { pool, .. }) if pool.h2c() || pool.in_process() => return Parsed::HandOff,
        Ok(Routed::Pool { pool, service, forward }) => {
            // The instance's head (see `crate::rewrite`): the fields the rules leave behind
            // dropped, an upgrade's own fields put back, the gateway's `x-forwarded-*` added.
            upstream_head.clear();
            upstream_head.extend_from_slice(method.as_bytes());
            upstream_head.push(b' ');
            match forward {
                Forward::Unchanged => upstream_head.extend_from_slice(path.as_bytes()),
                Forward::Stripped(rest) => {
                    let (lead, rest) = rewrite::stripped_target(rest);
                    upstream_head.extend_from_slice(lead.as_bytes());
                    upstream_head.extend_from_slice(rest.as_bytes());
                }
            }
            upstream_head.extend_from_slice(b" HTTP/1.1\r\n");
            for h in headers.iter() {
                if !rewrite::drops_request_field(h.name, &connection) {
                    push_field(upstream_head, h.name, h.value);
                }
            }
            if let Some(protocols) = upgrade {
                push_field(upstream_head, "upgrade", protocols);
                upstream_head.extend_from_slice(b"connection: upgrade\r\n");
            }
            // An HTTP/1.1 request here always has its Host (kept above): the host asked for.
            for (name, value) in
                (Forwarding { client: forwarded_for, host: rewrite::original_host(Some(host), None) }).fields()
            {
                push_field(upstream_head, name, value.as_bytes());
            }
            Ok((pool, service))
        }
        Err(unrouted) => Err(unrouted),
    };
    let facts = RequestFacts {
        body_len: body_len.unwrap_or(0),
        close: connection.close,
        head_only: method == "HEAD",
        idempotent: rewrite::is_idempotent(method),
        upgrade: upgrade.is_some(),
    };
    Parsed::Request(RelayedRequest { head_len, facts, route })
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the instance closes the connection.
    UntilClose,
}

/// A response head from an instance, rewritten for the client.
pub(crate) struct ResponseHead {
    pub(crate) code: u16,
    pub(crate) framing: Framing,
    /// The instance connection may carry another request after this response.
    pub(crate) reusable: bool,
}

/// How the body of a response with status `code` and `headers` is delimited (RFC 9112
/// §6.3; `head_only`: the answer to a `HEAD`), and what its `transfer-encoding` said:
/// `Some(true)` chunked last, `Some(false)` another coding last, `None` no such field.
pub(crate) fn response_framing(
    code: u16,
    head_only: bool,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, Option<bool>), GatewayError> {
    let mut length = None;
    let mut chunked = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            match (parse_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(GatewayError::Upstream("invalid content-length in response".into())),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked when chunked is the last coding of the last field (RFC 9112 §6.3).
            chunked = Some(list_tokens([h.value]).last().is_some_and(|c| c.eq_ignore_ascii_case("chunked")));
        }
    }
    let framing = if head_only || code == 204 || code == 304 || (100..200).contains(&code) {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    Ok((framing, chunked))
}

/// A response head parsed in place: its length, status line and fields.
pub(crate) struct ResponseLine<'h, 'b> {
    pub(crate) head_len: usize,
    /// The minor HTTP version (1.x).
    pub(crate) version: u8,
    pub(crate) code: u16,
    pub(crate) reason: Option<&'b str>,
    pub(crate) headers: &'h [httparse::Header<'b>],
}

/// Parses the response head at the start of `buf` into `fields`. `None`: incomplete (and
/// not yet too large).
pub(crate) fn parse_response_line<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [httparse::Header<'b>],
) -> Result<Option<ResponseLine<'h, 'b>>, GatewayError> {
    let mut resp = httparse::Response::new(fields);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(GatewayError::Upstream("response head too large".into())),
        Err(e) => return Err(GatewayError::Upstream(format!("malformed response: {e}"))),
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return Err(GatewayError::Upstream("malformed response".into()));
    };
    Ok(Some(ResponseLine { head_len, version, code, reason: resp.reason, headers: resp.headers }))
}

/// Parses the response head at the start of `buf`; on success it is consumed and its
/// rewritten form (without the final empty line) written to `out`. `None`: incomplete.
/// A 101 keeps its `Upgrade` field (only ever an answer to an upgrade request).
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_only: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, GatewayError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Some(ResponseLine { head_len, version, code, reason, headers }) = parse_response_line(buf, &mut fields)? else {
        return Ok(None);
    };
    let connection = connection_options(headers);
    let (framing, chunked) = response_framing(code, head_only, headers)?;
    out.extend_from_slice(b"HTTP/1.1 ");
    match http::StatusCode::from_u16(code) {
        Ok(status) => out.extend_from_slice(status.as_str().as_bytes()),
        Err(_) => return Err(GatewayError::Upstream(format!("invalid status {code}"))),
    }
    out.push(b' ');
    out.extend_from_slice(reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    // The body goes on in the framing it came with: `transfer-encoding` as it is, and a
    // `content-length` beside it dropped (the coding wins, §6.3).
    for h in headers.iter() {
        let framing_field = if h.name.eq_ignore_ascii_case("transfer-encoding") {
            Some(true)
        } else if h.name.eq_ignore_ascii_case("content-length") {
            Some(chunked.is_none())
        } else {
            None
        };
        let forward = framing_field.unwrap_or_else(|| {
            !rewrite::drops_response_field(h.name, &connection)
                || (code == 101 && h.name.eq_ignore_ascii_case("upgrade"))
        });
        if forward {
            push_field(out, h.name, h.value);
        }
    }
    if code == 101 {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    let reusable = version == 1 && !connection.close && framing != Framing::UntilClose;
    buf.advance(head_len);
    Ok(Some(ResponseHead { code, framing, reusable }))
}

/// The JSON error answer of the data plane, as bytes on the wire.
fn error_bytes(err: &GatewayError, close: bool, out: &mut Vec<u8>) {
    let body = err.body();
    let status = err.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
    push_field(out, "content-length", body.len().to_string().as_bytes());
    if let Some(seconds) = err.retry_after() {
        push_field(out, "retry-after", seconds.to_string().as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// How an exchange with an instance failed.
enum Failure {
    /// Answer the client with this error (nothing of the response was sent yet).
    Answer(GatewayError),
    /// The client connection is unusable (it went away, or a response broke off half-way).
    Close,
}

/// One client connection on the relay.
struct ClientConn<'g> {
    gateway: &'g Gateway,
    instances: &'g InstanceConns,
    stream: TcpStream,
    /// Bytes read from the client and not yet used.
    buf: BytesMut,
    /// Bytes of the current request's body not yet taken from `buf` or the socket.
    body_unread: u64,
    /// The request for the instance: its head and the body bytes that go out with it.
    request: Vec<u8>,
    /// The response head for the client, and the body bytes that go out with it.
    response: Vec<u8>,
    /// This client's address, for `x-forwarded-for`.
    forwarded_for: String,
}

/// Serves `stream` until the client leaves, `stop` turns true between requests, or a
/// request needs hyper: then returns the connection for it.
pub(crate) async fn serve(
    gateway: &Gateway,
    instances: &InstanceConns,
    stream: TcpStream,
    forwarded_for: &str,
    limits: &ConnectionLimits,
    stop: &mut watch::Receiver<bool>,
) -> Option<HandOff> {
    let mut conn = ClientConn {
        gateway,
        instances,
        stream,
        buf: BytesMut::with_capacity(READ_SPARE),
        body_unread: 0,
        request: Vec::with_capacity(1024),
        response: Vec::with_capacity(1024),
        forwarded_for: forwarded_for.to_owned(),
    };
    // The connection closes when the next head is not complete by `deadline`: the
    // header-read timeout from its first byte (or from the connection's start), or the idle
    // timeout after an answer while no byte of a next request came.
    let mut deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    let mut head_begun = true;
    loop {
        if *stop.borrow() {
            return None;
        }
        let parsed = parse_request(conn.gateway, &conn.buf, &conn.forwarded_for, &mut conn.request);
        let request = match parsed {
            Parsed::Request(r) => r,
            Parsed::HandOff => return Some(conn.hand_off()),
            Parsed::Incomplete if conn.buf.len() >= MAX_HEAD => return Some(conn.hand_off()),
            Parsed::Incomplete => {
                let between_requests = conn.buf.is_empty();
                let read = tokio::time::timeout_at(deadline, read_more(&mut conn.stream, &mut conn.buf));
                let read = if between_requests {
                    tokio::select! {
                        read = read => read,
                        _ = stop.wait_for(|stopped| *stopped) => return None,
                    }
                } else {
                    read.await
                };
                match read {
                    Ok(Ok(0) | Err(_)) | Err(_) => return None,
                    Ok(Ok(_)) => {
                        if !head_begun {
                            head_begun = true;
                            deadline = tokio::time::Instant::now() + limits.header_read_timeout;
                        }
                        continue;
                    }
                }
            }
        };
        let began = Instant::now();
        let RelayedRequest { head_len, facts, route } = request;
        conn.buf.advance(head_len);
        conn.body_unread = facts.body_len;
        let keep = match route {
            Ok((pool, service)) => {
                let outcome = conn.relay(&pool, service, facts).await;
                let chosen = Chosen::Pool(pool);
                match outcome {
                    Ok((code, keep)) => {
                        gateway.observe(Some(&chosen), code, began.elapsed());
                        keep && !facts.close
                    }
                    Err(Failure::Answer(err)) => {
                        let keep = conn.answer_error(&err, facts.close).await;
                        gateway.observe(Some(&chosen), err.status().as_u16(), began.elapsed());
                        keep
                    }
                    Err(Failure::Close) => return None,
                }
            }
            Err(unrouted) => {
                let (err, chosen) = *unrouted;
                let keep = conn.answer_error(&err, facts.close).await;
                gateway.observe(chosen.as_ref(), err.status().as_u16(), began.elapsed());
                keep
            }
        };
        if !keep {
            let _ = conn.stream.shutdown().await;
            return None;
        }
        head_begun = !conn.buf.is_empty();
        let wait = if head_begun { limits.header_read_timeout } else { limits.idle_timeout };
        deadline = tokio::time::Instant::now() + wait;
    }
}

impl ClientConn<'_> {
    /// Consumes `n` bytes of the request body from `buf`.
    fn take_body(&mut self, n: usize) {
        self.buf.advance(n);
        self.body_unread -= n as u64;
    }

    fn hand_off(self) -> HandOff {
        HandOff { stream: self.stream, read_ahead: self.buf.freeze() }
    }

    /// Answers with `err` before any of the response went out. The rest of the request's
    /// body is skipped when it is all here; otherwise the connection closes after the
    /// answer. Returns whether the connection can serve another request.
    async fn answer_error(&mut self, err: &GatewayError, close: bool) -> bool {
        let unread_body = self.body_unread > self.buf.len() as u64;
        if !unread_body {
            self.take_body(self.body_unread as usize);
        }
        let close = close || unread_body;
        error_bytes(err, close, &mut self.response);
        self.stream.write_all(&self.response).await.is_ok() && !close
    }

    /// Forwards the request whose instance head is in `request` (its body follows in `buf`)
    /// and relays the response. Returns the response's status and whether the client
    /// connection can go on.
    async fn relay(
        &mut self,
        pool: &Arc<RevisionPool>,
        service: String,
        facts: RequestFacts,
    ) -> Result<(u16, bool), Failure> {
        let timeouts = pool.timeouts();
        let deadline = tokio::time::Instant::now() + timeouts.total;
        // One timer covers the wait for capacity, the request and the wait for the response head.
        let exchange = tokio::time::timeout(timeouts.response_start, self.send(pool, facts, timeouts.idle));
        let (lease, mut instance, head) = exchange.await.map_err(|_| {
            Failure::Answer(GatewayError::Timeout { service, seconds: timeouts.response_start.as_secs() })
        })??;
        if head.code == 101 {
            self.tunnel(instance).await;
            drop(lease);
            return Ok((head.code, false));
        }
        if facts.close || head.framing == Framing::UntilClose {
            self.response.extend_from_slice(b"connection: close\r\n");
        }
        self.response.extend_from_slice(b"\r\n");
        // After the head, a timeout can only cut the response short: the client connection
        // closes (it cannot tell a complete response from a partial one otherwise).
        let body = tokio::time::timeout_at(deadline, self.copy_body(&mut instance, head.framing, timeouts.idle));
        let complete = body.await.map_err(|_| Failure::Close)??;
        // The slot is free once the whole response has been passed on, and the connection
        // back in the idle list (as on the hyper path: a request that sees the slot free
        // finds the connection there).
        if let Some(addr) = lease.socket().filter(|_| complete && head.reusable && instance.buf.is_empty()) {
            self.instances.put(addr, instance);
        }
        drop(lease);
        Ok((head.code, head.framing != Framing::UntilClose))
    }

    /// Waits for capacity, sends the request and reads the response head into `response`.
    /// When a kept-alive connection fails before any byte of an answer, the request goes
    /// out again on another as [`rewrite::may_retry`] says.
    async fn send(
        &mut self,
        pool: &Arc<RevisionPool>,
        facts: RequestFacts,
        idle: Option<Duration>,
    ) -> Result<(Lease, InstanceConn, ResponseHead), Failure> {
        // A client that leaves gives up its place in the queue (the autoscaler counts it).
        let lease = tokio::select! {
            biased;
            lease = pool.acquire() => lease.map_err(Failure::Answer)?,
            () = client_gone(&self.stream) => return Err(Failure::Close),
        };
        self.request.extend_from_slice(b"\r\n");
        // The body bytes already read go out with the head.
        let in_hand = self.body_unread.min(self.buf.len() as u64) as usize;
        self.request.extend_from_slice(&self.buf[..in_hand]);
        self.take_body(in_hand);
        let body_in_hand = self.body_unread == 0;
        // In-process pools are handed over to the hyper path when the request is parsed.
        let addr = lease.socket().ok_or_else(|| {
            Failure::Answer(GatewayError::Upstream("an in-process instance cannot be relayed".into()))
        })?;
        loop {
            let (mut instance, reused) = self.instances.get(&addr).await.map_err(Failure::Answer)?;
            let upstream_failed = |e: io::Error| Failure::Answer(GatewayError::Upstream(e.to_string()));
            if let Err((e, failure)) = write_noting(&mut instance.stream, &self.request).await {
                if rewrite::may_retry(reused, failure, facts.idempotent, body_in_hand) {
                    continue;
                }
                return Err(upstream_failed(e));
            }
            while self.body_unread > 0 {
                if self.buf.is_empty() {
                    match within(idle, read_more(&mut self.stream, &mut self.buf)).await? {
                        Ok(0) | Err(_) => return Err(Failure::Close),
                        Ok(_) => {}
                    }
                }
                let take = self.body_unread.min(self.buf.len() as u64) as usize;
                within(idle, instance.stream.write_all(&self.buf[..take])).await?.map_err(upstream_failed)?;
                self.take_body(take);
            }
            let head = tokio::select! {
                biased;
                head = within(idle, read_response_head(&mut instance, facts, &mut self.response)) => head.map_err(|_| {
                    let seconds = idle.unwrap_or_default().as_secs();
                    Failure::Answer(GatewayError::Timeout { service: pool.name().to_string(), seconds })
                })?,
                () = client_gone(&self.stream) => return Err(Failure::Close),
            };
            match head {
                Ok(head) => return Ok((lease, instance, head)),
                Err(None) if rewrite::may_retry(reused, Unanswered::Sent, facts.idempotent, body_in_hand) => {}
                Err(None) => {
                    return Err(Failure::Answer(GatewayError::Upstream("connection closed without an answer".into())));
                }
                Err(Some(e)) => return Err(Failure::Answer(e)),
            }
        }
    }

    /// Joins the client and the instance after a 101 (whose head is in `response`) until
    /// either side closes: what each side sent ahead goes first.
    async fn tunnel(&mut self, mut instance: InstanceConn) {
        self.response.extend_from_slice(b"\r\n");
        self.response.extend_from_slice(&instance.buf);
        if self.stream.write_all(&self.response).await.is_err() || instance.stream.write_all(&self.buf).await.is_err() {
            return;
        }
        self.buf.clear();
        let _ = tokio::io::copy_bidirectional(&mut self.stream, &mut instance.stream).await;
    }

    /// Passes the response body on after the head in `response`, in its framing. `Ok(false)`:
    /// the instance closed a close-delimited body (the message is complete, the connection
    /// is not).
    async fn copy_body(
        &mut self,
        instance: &mut InstanceConn,
        framing: Framing,
        idle: Option<Duration>,
    ) -> Result<bool, Failure> {
        let mut left = match framing {
            Framing::Empty => 0,
            Framing::Length(n) => n,
            Framing::Chunked | Framing::UntilClose => u64::MAX,
        };
        let mut chunked = (framing == Framing::Chunked).then(ChunkedEnd::new);
        let mut first = true;
        loop {
            let available = instance.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let take = match &mut chunked {
                Some(scanner) => match scanner.feed(&instance.buf[..available]) {
                    Ok(Some(end)) => {
                        left = 0;
                        end
                    }
                    Ok(None) => available,
                    Err(_) => return Err(Failure::Close),
                },
                None => available,
            };
            if framing != Framing::UntilClose && chunked.is_none() {
                left -= take as u64;
            }
            let written = if first {
                first = false;
                self.response.extend_from_slice(&instance.buf[..take]);
                within(idle, self.stream.write_all(&self.response)).await?
            } else {
                within(idle, self.stream.write_all(&instance.buf[..take])).await?
            };
            instance.buf.advance(take);
            written.map_err(|_| Failure::Close)?;
            if left == 0 {
                return Ok(true);
            }
            match within(idle, read_more(&mut instance.stream, &mut instance.buf)).await? {
                Ok(0) if framing == Framing::UntilClose => return Ok(false),
                Ok(0) | Err(_) => return Err(Failure::Close),
                Ok(_) => {}
            }
        }
    }
}

/// Writes all of `bytes` (as `write_all`); on failure, says whether any of them went out.
pub(crate) async fn write_noting(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), (io::Error, Unanswered)> {
    let mut written = 0;
    while written < bytes.len() {
        let failure = if written == 0 { Unanswered::NotSent } else { Unanswered::Sent };
        match stream.write(&bytes[written..]).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), failure)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, failure)),
        }
    }
    Ok(())
}

/// Runs `io` within the idle timeout, if there is one: the request fails when no byte went
/// either way for that long (Knative's `idleTimeoutSeconds`); the connections close.
async fn within<T>(idle: Option<Duration>, io: impl Future<Output = T>) -> Result<T, Failure> {
    match idle {
        None => Ok(io.await),
        Some(idle) => tokio::time::timeout(idle, io).await.map_err(|_| Failure::Close),
    }
}

/// Resolves when the client closed its connection (or it failed); never when it only sent
/// more (a pipelined request, read later). Costs no system call until the socket turns
/// readable: reads that drained it left it marked not ready.
async fn client_gone(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Reads the instance's response head into `response`, after any interim 1xx answers
/// (passed on with it: nothing was sent to the client yet). `Err(None)`: the connection
/// closed before a single byte came.
async fn read_response_head(
    instance: &mut InstanceConn,
    facts: RequestFacts,
    response: &mut Vec<u8>,
) -> Result<ResponseHead, Option<GatewayError>> {
    let RequestFacts { head_only, upgrade, .. } = facts;
    response.clear();
    let mut received = false;
    loop {
        if !instance.buf.is_empty() {
            received = true;
            match parse_response(&mut instance.buf, head_only, response).map_err(Some)? {
                Some(head) if head.code == 101 && !upgrade => {
                    return Err(Some(GatewayError::Upstream("switching protocols without an upgrade".into())));
                }
                Some(head) if head.code == 101 => return Ok(head),
                Some(head) if (100..200).contains(&head.code) => {
                    response.extend_from_slice(b"\r\n");
                    continue;
                }
                Some(head) => return Ok(head),
                None => {}
            }
        }
        match read_more(&mut instance.stream, &mut instance.buf).await {
            Ok(0) | Err(_) if !received => return Err(None),
            Ok(0) => return Err(Some(GatewayError::Upstream("connection closed in the response head".into()))),
            Err(e) => return Err(Some(GatewayError::Upstream(e.to_string()))),
            Ok(_) => {}
        }
    }
}
