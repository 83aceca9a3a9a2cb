//! What the gateway's integration tests share: a real gateway on a loopback port in front of
//! one revision pool.

#[allow(dead_code, reason = "not every test file speaks raw HTTP")]
pub mod raw;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serval_gateway::{
    ConnectionLimits, Gateway, GatewayMetrics, PoolConfig, RequestTimeouts, RevisionLabels, RevisionPool, Route,
    RouteKey, RoutingTable, Target,
};

#[allow(dead_code, reason = "not every test file has hyper instances")]
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[allow(dead_code, reason = "not every test file has hyper instances")]
/// An HTTP/1.1 instance (hyper) answering with `handle`, on a loopback port. Counts the
/// connections it accepts.
pub async fn instance<F, A>(handle: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> A + Copy + Send + Sync + 'static,
    A: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |req| async move { Ok::<_, Infallible>(handle(req).await) });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, connections)
}

/// An HTTP/2 client with prior knowledge (h2c) connected to `addr`.
#[allow(dead_code, reason = "not every test file has h2c clients")]
pub async fn h2c_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    sender
}

/// The pool of revision `svc-00001` of service `ns/svc`, without endpoints.
pub fn pool(container_concurrency: u32, request_timeout: Duration) -> Arc<RevisionPool> {
    RevisionPool::new(
        RevisionLabels::new("ns", "svc", "svc-00001"),
        PoolConfig {
            container_concurrency,
            nominal_capacity: 100,
            timeouts: RequestTimeouts::total(request_timeout),
            h2c: false,
            in_process: false,
        },
    )
}

/// The same for instances that speak h2c.
#[allow(dead_code, reason = "not every test file has h2c instances")]
pub fn h2c_pool() -> Arc<RevisionPool> {
    RevisionPool::new(
        RevisionLabels::new("ns", "svc", "svc-00001"),
        PoolConfig {
            container_concurrency: 0,
            nominal_capacity: 100,
            timeouts: RequestTimeouts::total(Duration::from_secs(5)),
            h2c: true,
            in_process: false,
        },
    )
}

/// A gateway on `threads` threads on a loopback port, routing `svc.ns.localhost` (and
/// `/f/ns/svc/…`) to `pool`.
#[allow(dead_code, reason = "not every test file uses the default limits")]
pub async fn gateway_to(pool: Arc<RevisionPool>, threads: usize) -> SocketAddr {
    gateway_with_limits(pool, threads, ConnectionLimits::default()).await
}

/// The same with connection limits of the test's choosing.
#[allow(dead_code, reason = "not every test file sets limits")]
pub async fn gateway_with_limits(pool: Arc<RevisionPool>, threads: usize, limits: ConnectionLimits) -> SocketAddr {
    let routes = Arc::new(RoutingTable::new("localhost"));
    routes.set(RouteKey { namespace: "ns".into(), service: "svc".into() }, Some(Route::single(Target::Pool(pool))));
    let gateway = Arc::new(Gateway::new(routes, Arc::new(GatewayMetrics::default())));
    let listener = serval_gateway::bind("127.0.0.1:0".parse().expect("address")).expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serval_gateway::serve(listener, gateway, threads, limits, std::future::pending()));
    addr
}

/// A gateway routing `svc` to the one instance at `instance`, no concurrency limit.
#[allow(dead_code, reason = "not every test file uses the default limits")]
pub async fn gateway(instance: SocketAddr, threads: usize) -> SocketAddr {
    let pool = pool(0, Duration::from_secs(5));
    pool.add_endpoint(1, instance);
    gateway_to(pool, threads).await
}
