//! Keep-alive HTTP/1.1 client connections of the hyper path: from a gateway thread (and the
//! data plane in process, [`crate::LocalClient`]) to instances. (The relay and event
//! delivery keep raw connections of their own: [`crate::relay`], [`crate::exchange`].)
//!
//! A connection has no task of its own: the request that borrows it drives it (polls the
//! hyper connection next to its own future) while it sends the request, waits for the
//! response head and streams the response body back, all on the client connection's task.
//! That leaves one task and no cross-task wake-ups per proxied request, which is what
//! brings the gateway's per-request cost down to a proxy's (a pooled client with a task per
//! connection costs two hand-offs per request). A connection returns to the idle list
//! only after its response body ended; one whose body was abandoned is closed.
//!
//! Invariant: idle connections are only ever used on the runtime that opened them, because
//! their sockets are registered with that runtime's reactor — each gateway thread owns one
//! [`Upstreams`], the data plane in process (on the main runtime) another.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::GatewayError;
use crate::rewrite::{self, Unanswered};

/// An idle connection unused for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per address.
pub(crate) const MAX_IDLE_PER_ADDRESS: usize = 256;
/// How often the idle lists of all instances are swept for expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A request body the gateway's hyper path forwards: the client's, a whole one from inside
/// the server ([`crate::LocalClient`]), or none (the request sent again after a kept-alive
/// connection closed under it, see `Upstreams::send`).
#[derive(Default)]
pub enum ProxyBody {
    Client(Incoming),
    /// A body already in memory; `None` once sent.
    Whole(Option<Bytes>),
    #[default]
    Empty,
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Client(body)
    }
}

impl From<Bytes> for ProxyBody {
    fn from(body: Bytes) -> Self {
        ProxyBody::Whole(Some(body).filter(|b| !b.is_empty()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Client(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Empty => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Client(body) => body.is_end_stream(),
            ProxyBody::Whole(bytes) => bytes.is_none(),
            ProxyBody::Empty => true,
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Client(body) => body.size_hint(),
            ProxyBody::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A connection's socket, noting whether any byte came since the last request went out:
/// a request on a kept-alive connection that fails before one came may be sent again
/// ([`rewrite::may_retry`]); hyper's errors do not tell a silent close from a cut-off head.
struct Socket {
    stream: TcpStream,
    /// Set on every read that returns bytes; cleared when a request goes out.
    received: Arc<AtomicBool>,
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.received.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One HTTP/1.1 connection to an instance.
pub struct UpstreamConn {
    sender: http1::SendRequest<ProxyBody>,
    conn: http1::Connection<TokioIo<Socket>, ProxyBody>,
    /// See [`Socket::received`].
    received: Arc<AtomicBool>,
    /// The connection finished (closed or failed); it must not be polled or reused.
    done: bool,
    /// The last response said the peer closes the connection after it (`Connection:
    /// close`, or HTTP/1.0 without keep-alive): never reused, though hyper may not have
    /// seen the close yet when the body ends.
    closing: bool,
    idle_since: Instant,
}

impl UpstreamConn {
    /// Polls the connection itself (reads, writes, body hand-over); records when it ends.
    fn drive(&mut self, cx: &mut Context<'_>) -> Option<hyper::Error> {
        if self.done {
            return None;
        }
        match self.conn.poll_without_shutdown(cx) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => {
                self.done = true;
                None
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Some(e)
            }
        }
    }

    /// Waits, driving the connection, until it can take a request. `false`: it closed.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            // A failure ends the connection (`done`); its error matters to no one here.
            let _ = self.drive(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(Ok(())) if !self.done => Poll::Ready(true),
                Poll::Ready(_) => Poll::Ready(false),
                Poll::Pending if self.done => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// What went wrong talking to an instance (reported as
/// [`GatewayError::Upstream`]).
enum UpstreamError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl UpstreamError {
    /// A request body that failed to arrive (broken chunked framing from the client) is
    /// the client's fault: a 400, not a failed instance.
    fn into_gateway_error(self) -> GatewayError {
        let request_body_failed = match &self {
            UpstreamError::Http(e) => {
                e.is_user() && std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<hyper::Error>().is_some())
            }
            UpstreamError::Connect(_) => false,
        };
        if request_body_failed {
            GatewayError::BadRequest(format!("the request body: {self}"))
        } else {
            GatewayError::Upstream(self.to_string())
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Http(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

/// A connection that can wait in [`IdleLists`].
pub(crate) trait Reusable {
    fn idle_since(&self) -> Instant;
    fn set_idle_since(&mut self, at: Instant);
    /// Still usable, as far as can be told without a system call.
    fn is_open(&self) -> bool;
}

impl Reusable for Box<UpstreamConn> {
    fn idle_since(&self) -> Instant {
        self.idle_since
    }
    fn set_idle_since(&mut self, at: Instant) {
        self.idle_since = at;
    }
    fn is_open(&self) -> bool {
        !self.done && !self.closing && !self.sender.is_closed()
    }
}

/// Idle connections by address, most recently used last, swept of expired ones now and then.
pub(crate) struct IdleLists<A, C> {
    by_address: HashMap<A, Vec<C>>,
    last_sweep: Instant,
    max_per_address: usize,
}

impl<A: Hash + Eq, C: Reusable> IdleLists<A, C> {
    /// Keeps up to `max_per_address` idle connections to each address.
    pub(crate) fn new(max_per_address: usize) -> Self {
        IdleLists { by_address: HashMap::new(), last_sweep: Instant::now(), max_per_address }
    }

    /// The most recently used idle connection to `addr` that is still fresh.
    pub(crate) fn take<Q: Hash + Eq + ?Sized>(&mut self, addr: &Q) -> Option<C>
    where
        A: std::borrow::Borrow<Q>,
    {
        let list = self.by_address.get_mut(addr)?;
        while let Some(conn) = list.pop() {
            if conn.idle_since().elapsed() < IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    pub(crate) fn put(&mut self, addr: A, mut conn: C) {
        if !conn.is_open() {
            return;
        }
        let now = Instant::now();
        conn.set_idle_since(now);
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.by_address.retain(|_, list| {
                list.retain(|c| now.duration_since(c.idle_since()) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = self.by_address.entry(addr).or_default();
        if list.len() < self.max_per_address {
            list.push(conn);
        }
    }
}

/// Idle connections by instance address. Clones share the lists.
#[derive(Clone)]
pub(crate) struct Upstreams {
    idle: Arc<Mutex<IdleLists<SocketAddr, Box<UpstreamConn>>>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams { idle: Arc::new(Mutex::new(IdleLists::new(MAX_IDLE_PER_ADDRESS))) }
    }
}

impl Upstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleLists<SocketAddr, Box<UpstreamConn>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_idle(&self, addr: &SocketAddr) -> Option<Box<UpstreamConn>> {
        self.lock().take(addr)
    }

    fn put_idle(&self, addr: SocketAddr, conn: Box<UpstreamConn>) {
        self.lock().put(addr, conn);
    }

    /// A new connection, boxed: it is large (hyper's buffers and state) and moves with the
    /// request through the pool and the response body.
    async fn connect(addr: SocketAddr) -> Result<Box<UpstreamConn>, UpstreamError> {
        let stream = TcpStream::connect(addr).await.map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let received = Arc::new(AtomicBool::new(false));
        let socket = Socket { stream, received: received.clone() };
        let (sender, conn) = http1::handshake(TokioIo::new(socket)).await.map_err(UpstreamError::Http)?;
        Ok(Box::new(UpstreamConn { sender, conn, received, done: false, closing: false, idle_since: Instant::now() }))
    }

    /// Sends `req` (origin-form URI, Host set) to `addr` on an idle connection or a new
    /// one, and returns the response head with the connection, which the body must keep
    /// driving (see [`UpstreamBody`]). When a kept-alive connection fails before any byte
    /// of an answer, the request goes out again on another connection by the gateway's one
    /// retry rule (`rewrite::may_retry`): when nothing of it was written, or when its method
    /// is idempotent and it has no body (sent again with an empty body).
    pub(crate) async fn send(
        &self,
        addr: &SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Box<UpstreamConn>), GatewayError> {
        self.try_send(addr, req).await.map_err(UpstreamError::into_gateway_error)
    }

    async fn try_send(
        &self,
        addr: &SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Box<UpstreamConn>), UpstreamError> {
        loop {
            let (mut upstream, reused) = match self.take_idle(addr) {
                Some(c) => (c, true),
                // Boxed: the rare path keeps the per-request future small.
                None => (Box::pin(Self::connect(*addr)).await?, false),
            };
            let idempotent = rewrite::is_idempotent(req.method().as_str());
            if !upstream.ready().await {
                if rewrite::may_retry(reused, Unanswered::NotSent, idempotent, false) {
                    continue;
                }
                return Err(UpstreamError::Connect(std::io::Error::other("connection closed before the request")));
            }
            // What sending it again would take, should it go out and meet the connection's
            // close: its head (the body, if any, is the default, empty one).
            let body_in_hand = req.body().is_end_stream();
            let mut again =
                rewrite::may_retry(reused, Unanswered::Sent, idempotent, body_in_hand).then(|| request_head(&req));
            upstream.received.store(false, Ordering::Relaxed);
            let mut response = std::pin::pin!(upstream.sender.try_send_request(req));
            let mut connection_error = None;
            let outcome = std::future::poll_fn(|cx| {
                if let Some(e) = upstream.drive(cx) {
                    connection_error = Some(e);
                }
                match response.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending if upstream.done => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            // A failure before any byte of an answer may be the kept-alive connection's close.
            let unanswered = !upstream.received.load(Ordering::Relaxed);
            let mut same_again = || again.take().filter(|_| unanswered).map(|head| head.map(|()| ProxyBody::Empty));
            match outcome {
                Some(Ok(resp)) => {
                    upstream.closing = peer_closes(&resp);
                    return Ok((resp, upstream));
                }
                Some(Err(mut failed)) => match failed.take_message() {
                    Some(unsent) if rewrite::may_retry(reused, Unanswered::NotSent, idempotent, false) => {
                        req = unsent;
                    }
                    _ => match same_again() {
                        Some(same) => req = same,
                        None => return Err(UpstreamError::Http(failed.into_error())),
                    },
                },
                None => match same_again() {
                    Some(same) => req = same,
                    None => {
                        return Err(match connection_error {
                            Some(e) => UpstreamError::Http(e),
                            None => {
                                UpstreamError::Connect(std::io::Error::other("connection closed without an answer"))
                            }
                        });
                    }
                },
            }
        }
    }
}

/// Whether a response says its sender closes the connection after it.
fn peer_closes<T>(resp: &hyper::Response<T>) -> bool {
    let tokens: Vec<&str> =
        rewrite::list_tokens(resp.headers().get_all(hyper::header::CONNECTION).iter().map(|v| v.as_bytes())).collect();
    tokens.iter().any(|t| t.eq_ignore_ascii_case("close"))
        || (resp.version() == hyper::Version::HTTP_10 && !tokens.iter().any(|t| t.eq_ignore_ascii_case("keep-alive")))
}

/// A copy of a request's method, target, version and fields (not its extensions).
fn request_head<B>(req: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head
}

/// A response body from an instance. Drives its connection while streaming and gives the
/// connection back to the idle list after the last frame.
pub(crate) struct UpstreamBody {
    body: Incoming,
    upstream: Option<Borrowed>,
}

/// A connection on loan to a response body: where it goes back, and to which address.
type Borrowed = (Upstreams, SocketAddr, Box<UpstreamConn>);

impl UpstreamBody {
    /// The body of a response [`Upstreams::send`] returned, with that call's connection.
    pub(crate) fn new(body: Incoming, upstreams: Upstreams, addr: SocketAddr, conn: Box<UpstreamConn>) -> Self {
        UpstreamBody { body, upstream: Some((upstreams, addr, conn)) }
    }

    fn finish(&mut self) {
        if let Some((upstreams, addr, conn)) = self.upstream.take() {
            upstreams.put_idle(addr, conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some((_, _, conn)) = &mut this.upstream {
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.upstream = None,
            _ => {}
        }
        frame
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// A body read to its end (hyper stops polling once `is_end_stream` says so) gives its
    /// connection back; an abandoned one closes it (HTTP/1 cannot skip the rest).
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

/// One gateway thread's HTTP/2 connections to h2c instances, one per instance address,
/// shared by all the requests to it (streams multiplex; each connection has its task on
/// the thread's runtime). Clones share the connections.
#[derive(Clone, Default)]
pub(crate) struct H2cUpstreams {
    senders: Arc<Mutex<HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<ProxyBody>>>>,
}

impl H2cUpstreams {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<ProxyBody>>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` (absolute URI: it gives the `:authority`) on the instance's connection,
    /// opening one when there is none or it closed. A request the open connection did not
    /// take goes out on a new one ([`rewrite::may_retry`]).
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        self.try_send(addr, req).await.map_err(|e| GatewayError::Upstream(e.to_string()))
    }

    async fn try_send(
        &self,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut fresh = false;
        loop {
            let open = if fresh { None } else { self.lock().get(&addr).filter(|s| !s.is_closed()).cloned() };
            let reused = open.is_some();
            let mut sender = match open {
                Some(sender) => sender,
                None => {
                    let stream = TcpStream::connect(addr).await.map_err(UpstreamError::Connect)?;
                    let _ = stream.set_nodelay(true);
                    let (sender, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        TokioIo::new(stream),
                    )
                    .await
                    .map_err(UpstreamError::Http)?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let mut senders = self.lock();
                    senders.retain(|_, s| !s.is_closed());
                    senders.insert(addr, sender.clone());
                    sender
                }
            };
            let not_sent_again =
                rewrite::may_retry(reused, Unanswered::NotSent, rewrite::is_idempotent(req.method().as_str()), false);
            if let Err(e) = sender.ready().await {
                if not_sent_again {
                    fresh = true;
                    continue;
                }
                return Err(UpstreamError::Http(e));
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if not_sent_again => {
                        req = unsent;
                        fresh = true;
                    }
                    _ => return Err(UpstreamError::Http(failed.into_error())),
                },
            }
        }
    }
}
