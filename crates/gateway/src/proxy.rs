//! The hyper path: the streaming reverse proxy for the requests the HTTP/1.1 relay
//! ([`crate::relay`]) hands over (HTTP/1.0, h2c, chunked uploads, ingresses…), served by
//! hyper for the rest of their connection. It rewrites requests by the rules of
//! [`crate::rewrite`], as the relay does, applied to header maps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::listen::{ConnectionLimits, serve_connection};
use crate::rewrite::{self, ConnectionOptions, Forwarding, list_tokens};
use crate::router::{Chosen, Gateway, Routed, TAG_HEADER, prefers_async};

/// RFC 7240's request field, where `respond-async` asks for a call to be queued.
const PREFER: HeaderName = HeaderName::from_static("prefer");
use crate::routes::Forward;
use crate::upstream::{H2cUpstreams, ProxyBody, UpstreamBody, UpstreamConn, Upstreams};
use crate::{GatewayError, InstanceAddr, Lease};

/// Errors of a response body the gateway sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type GatewayBody = BoxBody<Bytes, BoxError>;

/// One gateway thread's client connections to instances, for the requests hyper serves.
#[derive(Clone, Default)]
pub(crate) struct HyperUpstreams {
    http1: Upstreams,
    h2c: H2cUpstreams,
}

/// An instance's answer and, for HTTP/1.1, the connection its body comes over.
enum Answer {
    Http1(Response<Incoming>, Box<UpstreamConn>, SocketAddr),
    H2c(Response<Incoming>),
    InProcess(Response<GatewayBody>),
}

/// Serves the rest of a connection the relay handed over with hyper, until the client
/// leaves, a connection timeout closes it or, once `stop` turns true, its current request
/// is answered. `client` is the client's address (for `x-forwarded-for`).
pub(crate) async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    gateway: Arc<Gateway>,
    upstreams: HyperUpstreams,
    client: &str,
    builder: &auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) {
    let client: Arc<str> = Arc::from(client);
    let handle = move |req: Request<Incoming>| {
        let (gateway, upstreams, client) = (gateway.clone(), upstreams.clone(), client.clone());
        async move { handle(&gateway, &upstreams, req.map(ProxyBody::from), &client).await }
    };
    serve_connection(io, handle, limits, builder, stop).await;
}

/// Requests from inside the server (event delivery to services, brokers and channels)
/// through the data plane without a socket to the gateway: routed, queued for capacity,
/// rewritten and forwarded exactly as a client's request on the hyper path, and counted in
/// the same metrics; only the client's TCP hop is gone.
#[derive(Clone)]
pub struct LocalClient {
    /// Weak: the gateway's ingresses may hold this client (the gateway outlives neither).
    gateway: Weak<Gateway>,
    upstreams: HyperUpstreams,
}

/// Who a [`LocalClient`]'s requests come from, for `x-forwarded-for` (as if over loopback).
const LOCAL_CLIENT: &str = "127.0.0.1";

impl LocalClient {
    pub fn new(gateway: &Arc<Gateway>) -> LocalClient {
        LocalClient { gateway: Arc::downgrade(gateway), upstreams: HyperUpstreams::default() }
    }

    /// Sends `req` (origin-form target, with a Host field as a client would send) and
    /// returns the answer, or the data plane's error answer; `None` once the gateway is gone.
    ///
    ///
    /// Boxed and `'static`: the hyper path's future borrows, and is `Send` for each borrow,
    /// which callers in spawned tasks cannot see through an opaque type.
    pub fn send(&self, req: Request<Bytes>) -> BoxFuture<'static, Option<Response<GatewayBody>>> {
        let (gateway, upstreams) = (self.gateway.clone(), self.upstreams.clone());
        Box::pin(async move {
            let gateway = gateway.upgrade()?;
            Some(handle(&gateway, &upstreams, req.map(ProxyBody::from), LOCAL_CLIENT).await)
        })
    }
}

/// Removes the fields [`rewrite::drops_request_field`] (a request) or
/// [`rewrite::drops_response_field`] leaves behind (one pass over the few fields a message
/// usually has; removal only when one is there).
fn strip_fields(headers: &mut http::HeaderMap, drops: fn(&str, &ConnectionOptions<'_>) -> bool) {
    let dropped: Vec<HeaderName> = {
        let connection = ConnectionOptions::parse(headers.get_all(header::CONNECTION).iter().map(|v| v.as_bytes()));
        headers.keys().filter(|name| drops(name.as_str(), &connection)).cloned().collect()
    };
    for name in dropped {
        headers.remove(name);
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
    strip_fields(headers, rewrite::drops_response_field);
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
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    match (req.version(), req.headers().get_all(header::HOST).iter().count()) {
        (http::Version::HTTP_11, 0) => Err(GatewayError::BadRequest("an HTTP/1.1 request needs a host field".into())),
        (_, 0 | 1) => Ok(()),
        _ => Err(GatewayError::BadRequest("more than one host field".into())),
    }
}

fn header_value(value: &str) -> Result<HeaderValue, GatewayError> {
    HeaderValue::from_str(value).map_err(|e| GatewayError::Upstream(e.to_string()))
}

/// Serves one request: route, wait for capacity, forward, stream the answer back.
async fn handle(
    gateway: &Gateway,
    upstreams: &HyperUpstreams,
    req: Request<ProxyBody>,
    client: &str,
) -> Response<GatewayBody> {
    let began = std::time::Instant::now();
    let mut chosen = None;
    let response = match forward(gateway, upstreams, req, client, &mut chosen).await {
        Ok(resp) => resp,
        Err(err) => error_response(&err),
    };
    gateway.observe(chosen.as_ref(), response.status().as_u16(), began.elapsed());
    response
}

async fn forward(
    gateway: &Gateway,
    upstreams: &HyperUpstreams,
    req: Request<ProxyBody>,
    client: &str,
    chosen: &mut Option<Chosen>,
) -> Result<Response<GatewayBody>, GatewayError> {
    check_host(&req)?;
    let host_field = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = rewrite::original_host(host_field, authority);
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let tag = req.headers().get(TAG_HEADER).and_then(|t| t.to_str().ok());
    let respond_async = req.headers().get_all(PREFER).iter().any(|v| prefers_async(v.as_bytes()));
    let (pool, service, forward) = match gateway.route(host, path_and_query, tag, respond_async) {
        Ok(Routed::Pool { pool, service, forward }) => (pool, service, forward),
        Ok(Routed::Async { queue, namespace, service, target }) => {
            let mut req = req;
            if let Some(target) = target {
                *req.uri_mut() =
                    target.parse().map_err(|e: http::uri::InvalidUri| GatewayError::BadRequest(e.to_string()))?;
            }
            let response = queue.enqueue(namespace, service, req).await;
            return Ok(response.map(|b| b.map_err(|never: Infallible| match never {}).boxed()));
        }
        Ok(Routed::Ingress { ingress, rest }) => {
            let rest = rest.to_owned();
            let response = ingress.handle(rest, req).await;
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
        Forward::Stripped(rest) => match rewrite::stripped_target(rest) {
            ("", rest) => Some(PathAndQuery::try_from(rest)),
            (lead, rest) => Some(PathAndQuery::try_from(format!("{lead}{rest}"))),
        },
    }
    .transpose()
    .map_err(|e| GatewayError::Upstream(e.to_string()))?;
    // The forwarding fields, and the host the client asked for, as values before the
    // request is taken apart (`None`: it named none).
    let host = host.map(header_value).transpose()?;
    let forwarding: Vec<(&'static str, HeaderValue)> =
        Forwarding { client, host: host.as_ref().and_then(|h| h.to_str().ok()) }
            .fields()
            .map(|(name, value)| header_value(value).map(|v| (name, v)))
            .collect::<Result<_, _>>()?;
    // gRPC over h2c needs `te: trailers` passed on (TE is hop-by-hop otherwise).
    let trailers = list_tokens(req.headers().get_all(header::TE).iter().map(|v| v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case("trailers"));

    let timeouts = pool.timeouts();
    let deadline = tokio::time::Instant::now() + timeouts.total;
    let head_timeout = timeouts.idle.map_or(timeouts.response_start, |idle| idle.min(timeouts.response_start));
    // One timer covers the wait for capacity and the wait for response headers.
    let exchange = async move {
        let lease = pool.acquire().await?;
        let (mut parts, body) = req.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = None;
        uri.authority = None;
        if let Some(path) = upstream_path {
            uri.path_and_query = Some(path);
        }
        let headers = &mut parts.headers;
        strip_fields(headers, rewrite::drops_request_field);
        // HTTP/1.1 to instances carries the host in a Host field, HTTP/2 in the
        // `:authority` (see `rewrite::upstream_host`).
        let upstream_host = match host {
            Some(host) => host,
            None => header_value(rewrite::upstream_host(None, lease.authority().as_str()))?,
        };
        for (name, value) in forwarding {
            headers.append(HeaderName::from_static(name), value);
        }
        if pool.h2c() {
            headers.remove(header::HOST);
            uri.scheme = Some(http::uri::Scheme::HTTP);
            let authority = upstream_host.to_str().map_err(|e| GatewayError::Upstream(e.to_string()))?;
            uri.authority =
                Some(authority.parse().map_err(|e: http::uri::InvalidUri| GatewayError::Upstream(e.to_string()))?);
            if trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            parts.version = http::Version::HTTP_2;
        } else {
            headers.insert(header::HOST, upstream_host);
            parts.version = http::Version::HTTP_11;
        }
        parts.uri = Uri::from_parts(uri).map_err(|e| GatewayError::Upstream(e.to_string()))?;
        let req = Request::from_parts(parts, body);
        let addr = match lease.addr() {
            InstanceAddr::Socket(addr) => *addr,
            InstanceAddr::InProcess(handler) => {
                let answer = handler.call(req).await?;
                return Ok((Answer::InProcess(answer), lease));
            }
        };
        if pool.h2c() {
            return Ok((Answer::H2c(upstreams.h2c.send(addr, req).await?), lease));
        }
        let (response, conn) = upstreams.http1.send(&addr, req).await?;
        Ok::<_, GatewayError>((Answer::Http1(response, conn, addr), lease))
    };
    let (answer, lease) = tokio::time::timeout(head_timeout, exchange)
        .await
        .map_err(|_| GatewayError::Timeout { service, seconds: head_timeout.as_secs() })??;
    // The slot stays taken until the response body has been fully sent.
    let (mut parts, body) = match answer {
        Answer::Http1(response, conn, addr) => {
            let (parts, body) = response.into_parts();
            let body = UpstreamBody::new(body, upstreams.http1.clone(), addr, conn);
            (parts, LeasedBody::new(body, lease, deadline, timeouts.idle).boxed())
        }
        Answer::H2c(response) => {
            let (parts, body) = response.into_parts();
            (parts, LeasedBody::new(body, lease, deadline, timeouts.idle).boxed())
        }
        Answer::InProcess(response) => {
            let (parts, body) = response.into_parts();
            (parts, LeasedBody::new(body, lease, deadline, timeouts.idle).boxed())
        }
    };
    response_fields_for_client(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
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

impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin> Body for LeasedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((idle, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *idle);
                }
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
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
