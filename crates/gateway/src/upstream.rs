//! Keep-alive HTTP/1.1 connections from one gateway thread to instances.
//!
//! A connection has no task of its own: the request that borrows it drives it (polls the
//! hyper connection next to its own future) while it sends the request, waits for the
//! response head and streams the response body back, all on the client connection's task.
//! That leaves one task and no cross-task wake-ups per proxied request, which is what
//! brings the gateway's per-request cost down to a proxy's (a pooled client with a task per
//! connection costs two hand-offs per request). A connection returns to the idle list
//! only after its response body ended; one whose body was abandoned is closed.
//!
//! Invariant: idle connections are only ever used on the thread (runtime) that opened
//! them, because their sockets are registered with that runtime's reactor — each gateway
//! thread owns one [`Upstreams`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An idle connection unused for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 256;
/// How often the idle lists of all instances are swept for expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One HTTP/1.1 connection to an instance.
pub(crate) struct UpstreamConn {
    sender: http1::SendRequest<Incoming>,
    conn: http1::Connection<TokioIo<TcpStream>, Incoming>,
    /// The connection finished (closed or failed); it must not be polled or reused.
    done: bool,
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

/// What went wrong talking to an instance.
pub(crate) enum UpstreamError {
    Connect(std::io::Error),
    Http(hyper::Error),
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

struct IdleLists {
    #[expect(clippy::vec_box, reason = "boxed so a connection moves as a pointer through requests and bodies")]
    by_instance: HashMap<SocketAddr, Vec<Box<UpstreamConn>>>,
    last_sweep: Instant,
}

/// The idle connections of one gateway thread, by instance address.
#[derive(Clone)]
pub(crate) struct Upstreams {
    idle: Arc<Mutex<IdleLists>>,
}

impl Upstreams {
    pub(crate) fn new() -> Upstreams {
        Upstreams { idle: Arc::new(Mutex::new(IdleLists { by_instance: HashMap::new(), last_sweep: Instant::now() })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleLists> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `addr` that is still fresh.
    fn take_idle(&self, addr: SocketAddr) -> Option<Box<UpstreamConn>> {
        let mut idle = self.lock();
        let list = idle.by_instance.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            if conn.idle_since.elapsed() < IDLE_TIMEOUT && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, addr: SocketAddr, mut conn: Box<UpstreamConn>) {
        if conn.done || conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.lock();
        if now.duration_since(idle.last_sweep) >= SWEEP_EVERY {
            idle.last_sweep = now;
            idle.by_instance.retain(|_, list| {
                list.retain(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = idle.by_instance.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(conn);
        }
    }

    /// A new connection, boxed: it is large (hyper's buffers and state) and moves with the
    /// request through the pool and the response body.
    async fn connect(addr: SocketAddr) -> Result<Box<UpstreamConn>, UpstreamError> {
        let stream = TcpStream::connect(addr).await.map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Http)?;
        Ok(Box::new(UpstreamConn { sender, conn, done: false, idle_since: Instant::now() }))
    }

    /// Sends `req` to the instance at `addr` on an idle connection (a stale one is retried
    /// on a new connection when the request was not written yet) or a new one, and returns
    /// the response head with the connection, which the body must keep driving.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Box<UpstreamConn>), UpstreamError> {
        loop {
            let (mut upstream, reused) = match self.take_idle(addr) {
                Some(c) => (c, true),
                // Boxed: the rare path keeps the per-request future small.
                None => (Box::pin(Self::connect(addr)).await?, false),
            };
            if !upstream.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Connect(std::io::Error::other("connection closed before the request")));
            }
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
            match outcome {
                Some(Ok(resp)) => return Ok((resp, upstream)),
                Some(Err(mut failed)) => match failed.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Http(failed.into_error())),
                },
                None => {
                    return Err(match connection_error {
                        Some(e) => UpstreamError::Http(e),
                        None => UpstreamError::Connect(std::io::Error::other("connection closed without an answer")),
                    });
                }
            }
        }
    }
}

/// A response body from an instance. Drives its connection while streaming and gives the
/// connection back to the idle list after the last frame.
pub(crate) struct UpstreamBody {
    body: Incoming,
    upstream: Option<(Upstreams, SocketAddr, Box<UpstreamConn>)>,
}

impl UpstreamBody {
    pub(crate) fn new(body: Incoming, upstreams: Upstreams, addr: SocketAddr, conn: Box<UpstreamConn>) -> UpstreamBody {
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
