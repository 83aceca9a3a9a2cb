//! What every listener of the server shares, the gateway's and the control API's: a cap on
//! open connections, accepting that backs off when accepting fails (running out of file
//! descriptors must not turn the accept loop into a busy loop), and the connection
//! timeouts — a request head must arrive within the header-read timeout, and a connection
//! with no request in flight and no bytes either way for the idle timeout is closed.
//!
//! The relay keeps these timeouts itself ([`crate::relay`]); connections that hyper serves
//! (the API's, and the gateway's after a hand-off) are watched here.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The limits of one listener's connections (the server's `--header-read-timeout`,
/// `--idle-timeout` and `--max-connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after its first byte (a connection that
    /// sends nothing after connecting gets this long too).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and nothing sent either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the kernel's backlog until one closes.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The first wait after a failed accept; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts a listener's connections within its cap: each comes with a permit that counts it
/// until dropped (the permits are also how shutdown knows when every connection is done).
/// Clones share the cap.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: u32,
}

impl ConnectionCap {
    pub fn new(limits: &ConnectionLimits) -> ConnectionCap {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        ConnectionCap { permits: Arc::new(Semaphore::new(max)), max: u32::try_from(max).unwrap_or(u32::MAX) }
    }

    /// Resolves once every accepted connection has closed (all permits are back), or after
    /// `patience`.
    pub async fn all_closed(&self, patience: Duration) {
        let _ = tokio::time::timeout(patience, self.permits.acquire_many(self.max)).await;
    }

    /// The next connection, once fewer than the cap are open. A failed accept (out of file
    /// descriptors, out of memory) is retried after a pause that doubles up to a second, so
    /// that the loop neither spins nor floods the log (the log line says how many failed).
    pub async fn accept(&self, listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        // The semaphore is never closed.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        let mut backoff = MIN_ACCEPT_BACKOFF;
        let mut failed = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => return (stream, peer, permit),
                // Another thread took the connection.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    failed += 1;
                    // One line per doubling: at most a dozen lines however long it lasts.
                    if backoff < MAX_ACCEPT_BACKOFF || failed.is_power_of_two() {
                        tracing::warn!("{name} accept failed ({failed} in a row), retrying in {backoff:?}: {e}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// What the watchdog of a hyper-served connection knows of it.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `epoch` of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds since `epoch` of the first byte read while no request was in flight
    /// (the start of the next head), or `u64::MAX` when none came yet.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    /// Signalled when the last request in flight is done, and when a head begins.
    changed: tokio::sync::Notify,
}

struct Watched {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Watched {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A connection's IO that records its activity for the watchdog.
struct WatchedIo<I> {
    inner: I,
    watched: Arc<Watched>,
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.watched.now();
            let activity = &self.watched.activity;
            activity.last_io.store(now, Ordering::Relaxed);
            if activity.in_flight.load(Ordering::Relaxed) == 0
                && activity.head_started.compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                activity.changed.notify_one();
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = polled {
            self.watched.activity.last_io.store(self.watched.now(), Ordering::Relaxed);
        }
        polled
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = polled {
            self.watched.activity.last_io.store(self.watched.now(), Ordering::Relaxed);
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight from the moment hyper hands it over until its response body
/// is done (or dropped).
struct InFlight(Arc<Watched>);

impl InFlight {
    fn new(watched: Arc<Watched>) -> InFlight {
        watched.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        watched.activity.head_started.store(u64::MAX, Ordering::Relaxed);
        InFlight(watched)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0.activity;
        activity.last_io.store(self.0.now(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted in flight.
pub struct CountedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection with hyper (HTTP/1 or h2c) under `limits` until the client leaves,
/// a timeout closes it, or — once `stop` turns true — its requests in flight are answered.
pub async fn serve_connection<I, S, F, B>(
    io: I,
    handle: S,
    limits: ConnectionLimits,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let watched = Arc::new(Watched { activity: Arc::default(), epoch: Instant::now() });
    watched.activity.head_started.store(0, Ordering::Relaxed);
    let io = WatchedIo { inner: io, watched: watched.clone() };
    let counted = watched.clone();
    let service = hyper::service::service_fn(move |req| {
        let in_flight = InFlight::new(counted.clone());
        let response = handle(req);
        async move {
            let response = response.await;
            Ok::<_, std::convert::Infallible>(response.map(|inner| CountedBody { inner, _in_flight: in_flight }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => conn.as_mut().graceful_shutdown(),
        () = expired(&watched, limits) => return,
    }
    let _ = conn.await;
}

/// Resolves when the connection outlived a timeout: a head begun and not complete within
/// the header-read timeout, or nothing in flight and nothing sent for the idle timeout.
async fn expired(watched: &Watched, limits: ConnectionLimits) {
    let header = u64::try_from(limits.header_read_timeout.as_millis()).unwrap_or(u64::MAX);
    let idle = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let activity = &watched.activity;
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            // A request in flight is bounded by its own timeouts; look again once none is.
            activity.changed.notified().await;
            continue;
        }
        let now = watched.now();
        let head = activity.head_started.load(Ordering::Relaxed);
        let by_head = if head == u64::MAX { u64::MAX } else { head.saturating_add(header) };
        let due = by_head.min(activity.last_io.load(Ordering::Relaxed).saturating_add(idle));
        if due <= now {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(due - now)) => {}
            () = activity.changed.notified() => {}
        }
    }
}

/// Serves a listener with hyper (the control API): each connection within the cap, under
/// `limits`, until `stop` turns true; then waits for open connections to finish their
/// requests (at most 10 s).
pub async fn serve_listener<S, F, B>(
    listener: TcpListener,
    handle: S,
    limits: ConnectionLimits,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let cap = ConnectionCap::new(&limits);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            (stream, _, permit) = cap.accept(&listener, name) => {
                let _ = stream.set_nodelay(true);
                let (handle, builder, stop) = (handle.clone(), builder.clone(), connection_stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    serve_connection(stream, handle, limits, &builder, stop).await;
                });
            }
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    cap.all_closed(Duration::from_secs(10)).await;
}
