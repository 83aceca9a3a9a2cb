//! The HTTP server of the data plane and its streaming reverse proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::routes::Forward;
use crate::{GatewayError, GatewayMetrics, Lease, RevisionLabels, RoutingTable, Target};

pub type GatewayBody = BoxBody<Bytes, hyper::Error>;

/// The data plane: the routing table plus a pooled client to instances.
pub struct Gateway {
    routes: Arc<RoutingTable>,
    client: Client<HttpConnector, Incoming>,
    metrics: Arc<GatewayMetrics>,
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
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

impl Gateway {
    pub fn new(routes: Arc<RoutingTable>, metrics: Arc<GatewayMetrics>) -> Arc<Gateway> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Arc::new(Gateway { routes, client, metrics })
    }

    pub fn routes(&self) -> &Arc<RoutingTable> {
        &self.routes
    }

    /// Serves one request: route, wait for capacity, forward, stream the answer back.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<GatewayBody> {
        let began = std::time::Instant::now();
        let mut labels = None;
        let response = match self.forward(req, peer, &mut labels).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err),
        };
        if let Some(labels) = labels {
            self.metrics.observe(&labels, response.status().as_u16(), began.elapsed());
        }
        response
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        labels: &mut Option<RevisionLabels>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(str::to_owned);
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let (key, forward) = self.routes.resolve(host.as_deref(), &path_and_query).ok_or_else(|| {
            GatewayError::NoRoute { host: host.clone().unwrap_or_default(), path: path_and_query.clone() }
        })?;
        let target = self.routes.target(&key.namespace, &key.service).ok_or_else(|| GatewayError::NoRoute {
            host: host.clone().unwrap_or_default(),
            path: path_and_query.clone(),
        })?;
        *labels = Some(RevisionLabels::new(&key.namespace, &key.service, ""));
        let pool = match target {
            Target::Pool(pool) => pool,
            Target::Unavailable(reason) => return Err(GatewayError::NotReady(key.service, reason)),
        };
        *labels = Some(pool.labels().clone());
        let upstream_path = match forward {
            Forward::Unchanged => path_and_query.clone(),
            Forward::Stripped(rest) if rest.starts_with('/') => rest.to_owned(),
            Forward::Stripped(rest) => format!("/{rest}"),
        };

        let timeout = pool.request_timeout();
        let timed_out = || GatewayError::Timeout { service: key.service.clone(), seconds: timeout.as_secs() };
        let deadline = tokio::time::Instant::now() + timeout;
        let lease = tokio::time::timeout_at(deadline, pool.acquire()).await.map_err(|_| timed_out())??;

        let uri = Uri::builder()
            .scheme("http")
            .authority(lease.addr().to_string())
            .path_and_query(upstream_path)
            .build()
            .map_err(|e| GatewayError::Upstream(e.to_string()))?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let headers = req.headers_mut();
        for h in HOP_BY_HOP {
            headers.remove(*h);
        }
        if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.append(HeaderName::from_static("x-forwarded-for"), v);
        }
        if let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), h);
        }

        let response = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| GatewayError::Upstream(describe_client_error(&e)))?;
        let (mut parts, body) = response.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(*h);
        }
        // The slot stays taken until the response body has been fully sent.
        Ok(Response::from_parts(parts, LeasedBody { inner: body, _lease: lease }.boxed()))
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The JSON error answer of the data plane.
pub fn error_response(err: &GatewayError) -> Response<GatewayBody> {
    let mut builder = Response::builder().status(err.status()).header(header::CONTENT_TYPE, "application/json");
    if let Some(seconds) = err.retry_after() {
        builder = builder.header(header::RETRY_AFTER, seconds);
    }
    let body = Full::new(Bytes::from(err.body())).map_err(|never: Infallible| match never {}).boxed();
    builder.body(body).unwrap_or_else(|_| Response::new(BoxBody::default()))
}

/// A response body that holds its lease until the last frame is sent (or the client leaves).
struct LeasedBody {
    inner: Incoming,
    _lease: Lease,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts connections (HTTP/1.1 and h2c) until `shutdown` resolves, then lets open
/// connections finish their requests.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("gateway accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let service = service_fn(move |req| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
}
