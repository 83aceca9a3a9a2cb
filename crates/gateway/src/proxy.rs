//! The HTTP server of the data plane: its listeners and accept loops, routing, and the
//! hyper-served streaming reverse proxy for the requests the HTTP/1.1 relay
//! ([`crate::relay`]) hands over (HTTP/1.0, h2c, chunked uploads, broker ingress…).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listen::{ConnectionCap, ConnectionLimits, serve_connection};
use crate::relay::{self, HandOff, InstanceConns};
use crate::routes::{Forward, broker_from_path, service_from_host};
use crate::upstream::{H2cUpstreams, UpstreamBody, UpstreamConn, Upstreams};
use crate::{GatewayError, GatewayMetrics, Lease, RevisionLabels, RevisionPool, RoutingTable, Target};

/// What a request was routed to, for its metrics.
pub(crate) enum Chosen {
    Pool(Arc<RevisionPool>),
    /// A service with nothing to serve it.
    Service(RevisionLabels),
}

/// Errors of a response body the gateway sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type GatewayBody = BoxBody<Bytes, BoxError>;

/// One gateway thread's client connections to instances, for the requests hyper serves.
#[derive(Clone, Default)]
struct HyperUpstreams {
    http1: Upstreams,
    h2c: H2cUpstreams,
}

/// An instance's answer and, for HTTP/1.1, the connection its body comes over.
enum Answer {
    Http1(Response<Incoming>, Box<UpstreamConn>),
    H2c(Response<Incoming>),
}

/// Where a request goes (see [`Gateway::route`]).
pub(crate) enum Routed<'p> {
    /// A broker's ingress.
    Broker { ingress: Arc<dyn BrokerIngress>, namespace: &'p str, broker: &'p str },
    /// A revision's pool; `forward` is the path to send.
    Pool { pool: Arc<RevisionPool>, service: String, forward: Forward<'p> },
}

/// Why a request cannot be routed, and whose metrics count it (boxed: the rare path).
pub(crate) type Unrouted = Box<(GatewayError, Option<Chosen>)>;

/// The data plane: the routing table and request metrics, shared by all gateway threads.
pub struct Gateway {
    routes: Arc<RoutingTable>,
    metrics: Arc<GatewayMetrics>,
    brokers: Option<Arc<dyn BrokerIngress>>,
}

/// Serves the broker ingress `/b/<namespace>/<broker>` (eventing lives outside the gateway).
pub trait BrokerIngress: Send + Sync + 'static {
    fn handle(
        &self,
        namespace: String,
        broker: String,
        req: Request<Incoming>,
    ) -> futures_util::future::BoxFuture<'static, Response<Full<Bytes>>>;
}

/// Header fields that describe one connection and are never forwarded (RFC 9110 §7.6.1),
/// lowercase.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields that frame or address a message. A `Connection` field that lists one of them
/// removes nothing: dropping `content-length` after reading a body by it would hand the
/// body to the instance as a request of its own (request smuggling).
const NEVER_LISTED: [&str; 4] = ["content-length", "transfer-encoding", "host", "upgrade"];

/// Whether a `Connection` field listing `name` removes it (never a framing field, see
/// [`NEVER_LISTED`]).
fn listing_removes(name: &str) -> bool {
    !NEVER_LISTED.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Whether a field stays behind: a hop-by-hop one, or one a `Connection` field listed.
pub(crate) fn is_hop_by_hop<'a>(name: &str, listed: impl IntoIterator<Item = &'a str>) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || (listed.into_iter().any(|l| l.eq_ignore_ascii_case(name)) && listing_removes(name))
}

/// The tokens of comma-separated field values (`Connection`, `Transfer-Encoding`), trimmed.
pub(crate) fn list_tokens<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> impl Iterator<Item = &'v str> {
    values
        .into_iter()
        .flat_map(|v| std::str::from_utf8(v).unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers and those the `Connection` field lists (one pass over the
/// few headers a message usually has; removal only when one is there).
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<HeaderName> = list_tokens(headers.get_all(header::CONNECTION).iter().map(|v| v.as_bytes()))
        .filter(|t| listing_removes(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    if headers.keys().any(|name| HOP_BY_HOP.contains(&name.as_str())) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// A response's fields for the client when hyper re-frames its body: the body is
/// forwarded without its chunked coding (hyper chunks it again), any other transfer coding
/// is kept (RFC 9112 §6.1), and a `content-length` beside a transfer coding is dropped
/// (§6.3: the transfer coding wins).
fn response_fields_for_client(headers: &mut http::HeaderMap) {
    let codings: Vec<String> = list_tokens(headers.get_all(header::TRANSFER_ENCODING).iter().map(|v| v.as_bytes()))
        .filter(|c| !c.eq_ignore_ascii_case("chunked"))
        .map(str::to_owned)
        .collect();
    let framed_by_coding = headers.contains_key(header::TRANSFER_ENCODING);
    strip_hop_by_hop(headers);
    if framed_by_coding {
        headers.remove(header::CONTENT_LENGTH);
        if let Ok(value) = HeaderValue::from_str(&codings.join(", "))
            && !codings.is_empty()
        {
            headers.insert(header::TRANSFER_ENCODING, value);
        }
    }
}

/// An HTTP/1.1 request must carry exactly one `Host` (RFC 9112 §3.2); HTTP/2 and HTTP/1.0
/// may go without.
fn check_host(req: &Request<Incoming>) -> Result<(), GatewayError> {
    match (req.version(), req.headers().get_all(header::HOST).iter().count()) {
        (http::Version::HTTP_11, 0) => Err(GatewayError::BadRequest("an HTTP/1.1 request needs a host field".into())),
        (_, 0 | 1) => Ok(()),
        _ => Err(GatewayError::BadRequest("more than one host field".into())),
    }
}

/// Knative's tag-header routing: a request carrying a tag of the service's traffic block
/// goes to that tag's revision.
pub(crate) const TAG_HEADER: &str = "knative-serving-tag";

impl Gateway {
    pub fn new(
        routes: Arc<RoutingTable>,
        metrics: Arc<GatewayMetrics>,
        brokers: Option<Arc<dyn BrokerIngress>>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway { routes, metrics, brokers })
    }

    /// Where a request for `host` and `path_and_query` goes: a broker's ingress (unless the
    /// host names a service, then the service gets it), else the service named by host or
    /// path.
    /// `tag` is the request's `Knative-Serving-Tag` field (Knative's tag-header routing).
    pub(crate) fn route<'p>(
        &self,
        host: Option<&str>,
        path_and_query: &'p str,
        tag: Option<&str>,
    ) -> Result<Routed<'p>, Unrouted> {
        if path_and_query.starts_with("/b/")
            && let Some(ingress) = &self.brokers
            && let Some((namespace, broker)) = broker_from_path(path_and_query)
            && host.is_none_or(|h| service_from_host(h, self.routes.domain()).is_none())
        {
            return Ok(Routed::Broker { ingress: ingress.clone(), namespace, broker });
        }
        let no_route = || {
            let path = path_and_query.to_string();
            Box::new((GatewayError::NoRoute { host: host.unwrap_or_default().to_string(), path }, None))
        };
        let (key, forward) = self.routes.resolve(host, path_and_query).ok_or_else(no_route)?;
        match self.routes.target(&key.namespace, &key.service, tag).ok_or_else(no_route)? {
            Target::Pool(pool) => Ok(Routed::Pool { pool, service: key.service, forward }),
            Target::Unavailable(reason) => {
                let labels = RevisionLabels::new(&key.namespace, &key.service, "");
                Err(Box::new((GatewayError::NotReady(key.service, reason), Some(Chosen::Service(labels)))))
            }
        }
    }

    /// Counts an answered request in the metrics of what it was routed to.
    pub(crate) fn observe(&self, chosen: Option<&Chosen>, code: u16, elapsed: std::time::Duration) {
        match chosen {
            Some(Chosen::Pool(pool)) => {
                if let Some(m) = pool.metrics() {
                    m.observe(code, elapsed);
                }
            }
            Some(Chosen::Service(labels)) => self.metrics.observe(labels, code, elapsed),
            None => {}
        }
    }

    /// Serves one request: route, wait for capacity, forward, stream the answer back.
    /// `forwarded_for` is the client's address as a header value (built once per connection).
    async fn handle(
        &self,
        upstreams: &HyperUpstreams,
        req: Request<Incoming>,
        forwarded_for: &HeaderValue,
    ) -> Response<GatewayBody> {
        let began = std::time::Instant::now();
        let mut chosen = None;
        let response = match self.forward(upstreams, req, forwarded_for, &mut chosen).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err),
        };
        self.observe(chosen.as_ref(), response.status().as_u16(), began.elapsed());
        response
    }

    async fn forward(
        &self,
        upstreams: &HyperUpstreams,
        mut req: Request<Incoming>,
        forwarded_for: &HeaderValue,
        chosen: &mut Option<Chosen>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        check_host(&req)?;
        let host = req.headers().get(header::HOST).cloned();
        // gRPC over h2c needs `te: trailers` passed on (TE is hop-by-hop otherwise).
        let trailers = req.headers().get(header::TE).is_some_and(|te| {
            te.to_str().is_ok_and(|te| te.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
        });
        let host_text = host.as_ref().and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let tag = req.headers().get(TAG_HEADER).and_then(|t| t.to_str().ok());
        let (pool, service, forward) = match self.route(host_text, path_and_query, tag) {
            Ok(Routed::Pool { pool, service, forward }) => (pool, service, forward),
            Ok(Routed::Broker { ingress, namespace, broker }) => {
                let (namespace, broker) = (namespace.to_string(), broker.to_string());
                let response = ingress.handle(namespace, broker, req).await;
                return Ok(response.map(|b| b.map_err(|never: Infallible| match never {}).boxed()));
            }
            Err(unrouted) => {
                let (err, unrouted) = *unrouted;
                *chosen = unrouted;
                return Err(err);
            }
        };
        *chosen = Some(Chosen::Pool(pool.clone()));
        let upstream_path = match forward {
            Forward::Unchanged => None,
            Forward::Stripped(rest) if rest.starts_with('/') => Some(PathAndQuery::try_from(rest)),
            Forward::Stripped(rest) => Some(PathAndQuery::try_from(format!("/{rest}"))),
        }
        .transpose()
        .map_err(|e| GatewayError::Upstream(e.to_string()))?;

        let timeouts = pool.timeouts();
        let deadline = tokio::time::Instant::now() + timeouts.total;
        let head_timeout = timeouts.idle.map_or(timeouts.response_start, |idle| idle.min(timeouts.response_start));
        // One timer covers the wait for capacity and the wait for response headers.
        let exchange = async move {
            let lease = pool.acquire().await?;
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            // Origin form on the wire, the client's Host kept (HTTP/2 clients send it as the
            // URI's authority; HTTP/1.0 ones may send none: then the instance's address).
            parts.scheme = None;
            let authority = parts.authority.take();
            if let Some(path) = upstream_path {
                parts.path_and_query = Some(path);
            }
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| GatewayError::Upstream(e.to_string()))?;
            *req.version_mut() = http::Version::HTTP_11;
            let headers = req.headers_mut();
            strip_hop_by_hop(headers);
            if !headers.contains_key(header::HOST) {
                let authority = authority.as_ref().unwrap_or(lease.authority());
                let value =
                    HeaderValue::from_str(authority.as_str()).map_err(|e| GatewayError::Upstream(e.to_string()))?;
                headers.insert(header::HOST, value);
            }
            headers.append(HeaderName::from_static("x-forwarded-for"), forwarded_for.clone());
            // The client's own `x-forwarded-host` never passes (as on the relay): the Host it
            // sent, or its HTTP/2 authority, replaces it; without either there is none.
            let forwarded_host =
                host.or_else(|| authority.as_ref().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
            match forwarded_host {
                Some(h) => headers.insert(HeaderName::from_static("x-forwarded-host"), h),
                None => headers.remove(HeaderName::from_static("x-forwarded-host")),
            };
            if !pool.h2c() {
                let (response, conn) = upstreams.http1.send(&lease.addr(), req).await?;
                return Ok::<_, GatewayError>((Answer::Http1(response, conn), lease));
            }
            // HTTP/2: the authority goes in the URI (`:authority`), not in a Host field.
            let authority = req.headers_mut().remove(header::HOST).and_then(|h| h.to_str().ok().map(str::to_owned));
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(match authority {
                Some(a) => a.parse().map_err(|e: http::uri::InvalidUri| GatewayError::Upstream(e.to_string()))?,
                None => lease.authority().clone(),
            });
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| GatewayError::Upstream(e.to_string()))?;
            *req.version_mut() = http::Version::HTTP_2;
            if trailers {
                req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
            }
            Ok((Answer::H2c(upstreams.h2c.send(lease.addr(), req).await?), lease))
        };
        let (answer, lease) = tokio::time::timeout(head_timeout, exchange)
            .await
            .map_err(|_| GatewayError::Timeout { service, seconds: head_timeout.as_secs() })??;
        // The slot stays taken until the response body has been fully sent.
        let (mut parts, body) = match answer {
            Answer::Http1(response, conn) => {
                let (parts, body) = response.into_parts();
                let body = UpstreamBody::new(body, upstreams.http1.clone(), lease.addr(), conn);
                (parts, LeasedBody::new(body, lease, deadline, timeouts.idle).boxed())
            }
            Answer::H2c(response) => {
                let (parts, body) = response.into_parts();
                (parts, LeasedBody::new(body, lease, deadline, timeouts.idle).boxed())
            }
        };
        response_fields_for_client(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// The JSON error answer of the data plane.
pub fn error_response(err: &GatewayError) -> Response<GatewayBody> {
    let mut builder = Response::builder().status(err.status()).header(header::CONTENT_TYPE, "application/json");
    if let Some(seconds) = err.retry_after() {
        builder = builder.header(header::RETRY_AFTER, seconds);
    }
    if err.closes_connection() {
        builder = builder.header(header::CONNECTION, "close");
    }
    let body = Full::new(Bytes::from(err.body())).map_err(|never: Infallible| match never {}).boxed();
    builder.body(body).unwrap_or_else(|_| Response::new(BoxBody::default()))
}

/// A response body that holds its lease until the last frame is sent (or the client
/// leaves), and fails when the request's deadline passes or no frame came for the idle
/// timeout (hyper then closes the client connection: the response is incomplete).
struct LeasedBody<B> {
    inner: B,
    _lease: Lease,
    deadline: Pin<Box<tokio::time::Sleep>>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> LeasedBody<B> {
    fn new(inner: B, lease: Lease, deadline: tokio::time::Instant, idle: Option<Duration>) -> Self {
        let idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
        LeasedBody { inner, _lease: lease, deadline: Box::pin(tokio::time::sleep_until(deadline)), idle }
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error> + Unpin> Body for LeasedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((idle, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *idle);
                }
                return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
            }
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request's timeout passed during the response".into())));
        }
        if let Some((_, sleep)) = &mut this.idle
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err("the response was idle past the revision's idle timeout".into())));
        }
        Poll::Pending
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds the gateway's listening socket with `SO_REUSEPORT`, so that [`serve`] can give each
/// gateway thread a listener of its own on the same port and the kernel spreads new
/// connections evenly over the threads. (Threads sharing one listener race for accepts:
/// the first to wake takes a whole burst of connections and leaves the others idle.)
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves the gateway on `threads` threads, each with its own single-threaded runtime, its
/// own accept loop and its own connections to instances: a proxied request is read,
/// forwarded and answered on one thread, with no cross-thread hand-offs (the layout nginx
/// uses). Each thread but the first listens on a socket of its own bound to the same
/// address when `listener` came from [`bind`]; otherwise the threads share `listener`.
/// Returns once `shutdown` resolved and open connections finished their requests (at most
/// 10 s).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    threads: usize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let addr = listener.local_addr();
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("gateway listener unusable: {e}");
            return;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One cap for the listener, whichever thread accepts.
    let cap = ConnectionCap::new(&limits);
    let mut workers = Vec::new();
    for n in 0..threads.max(1) {
        let (shared, gateway, stop, cap) = match listener.try_clone() {
            Ok(l) => (l, gateway.clone(), stop_rx.clone(), cap.clone()),
            Err(e) => {
                tracing::error!("gateway listener cannot be shared: {e}");
                break;
            }
        };
        let own_address = addr.as_ref().ok().copied().filter(|_| n > 0);
        let spawned = std::thread::Builder::new().name(format!("serval-gateway-{n}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return tracing::error!("gateway thread runtime: {e}"),
            };
            runtime.block_on(async move {
                let own = own_address.map(bind).transpose().unwrap_or_else(|e| {
                    tracing::debug!("gateway thread {n} shares the first listener: {e}");
                    None
                });
                let listener = match own {
                    Some(own) => {
                        drop(shared);
                        Ok(own)
                    }
                    None => TcpListener::from_std(shared),
                };
                match listener {
                    Ok(listener) => accept_loop(listener, gateway, cap, limits, stop).await,
                    Err(e) => tracing::error!("gateway listener: {e}"),
                }
            });
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => tracing::error!("gateway thread: {e}"),
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
}

/// One thread's accept loop until `stop` turns true, then lets open connections (of every
/// thread) finish their requests (at most 10 s). Each connection starts on the HTTP/1.1 relay and goes
/// over to hyper (HTTP/1 and h2c) when a request needs it.
async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    cap: ConnectionCap,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Instance connections of the two paths: hyper's, and the relay's own.
    let upstreams = HyperUpstreams::default();
    let relay_conns = InstanceConns::default();
    // Every request arms a timer for its deadline (its revision's timeout). Tokio wakes its
    // own driver (an eventfd write and one more epoll round) whenever a new timer is due
    // before the driver's next planned wake-up; a heartbeat due within the second keeps
    // that wake-up near, so request deadlines (≥ 1 s away) are armed without a syscall.
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    let hyper = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            (stream, peer, permit) = cap.accept(&listener, "gateway") => {
                let _ = stream.set_nodelay(true);
                let (gateway, upstreams, relay_conns) = (gateway.clone(), upstreams.clone(), relay_conns.clone());
                let (hyper, mut stop) = (hyper.clone(), connection_stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let forwarded_for = peer.ip().to_string();
                    let handed_off = relay::serve(&gateway, &relay_conns, stream, &forwarded_for, &limits, &mut stop).await;
                    if let Some(rest) = handed_off {
                        serve_with_hyper(rest, gateway, upstreams, &forwarded_for, &hyper, limits, stop).await;
                    }
                });
            }
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    // The permits count every connection of the listener, this thread's among them.
    cap.all_closed(std::time::Duration::from_secs(10)).await;
}

/// Serves the rest of a connection the relay handed over with hyper, until the client
/// leaves, a connection timeout closes it or, once `stop` turns true, its current request
/// is answered.
async fn serve_with_hyper(
    io: HandOff,
    gateway: Arc<Gateway>,
    upstreams: HyperUpstreams,
    forwarded_for: &str,
    builder: &auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) {
    let forwarded_for = HeaderValue::from_str(forwarded_for).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let handle = move |req| {
        let (gateway, upstreams, forwarded_for) = (gateway.clone(), upstreams.clone(), forwarded_for.clone());
        async move { gateway.handle(&upstreams, req, &forwarded_for).await }
    };
    serve_connection(io, handle, limits, builder, stop).await;
}
