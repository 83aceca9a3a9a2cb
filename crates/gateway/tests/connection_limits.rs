//! The gateway's connection limits through a real gateway on a loopback port: an empty or
//! half-sent connection is closed after the header-read timeout, an idle kept-alive one
//! after the idle timeout (on the relay and after a hand-off to hyper), and connections
//! beyond the cap wait until one closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serval_gateway::ConnectionLimits;

mod support;

use support::TestBody;
use support::raw::Client;

const GET: &str = "GET /x HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n";
const CHUNKED: &str =
    "POST /x HTTP/1.1\r\nhost: svc.ns.localhost\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";

async fn ok(_: Request<Incoming>) -> Response<TestBody> {
    Response::new(Full::new(Bytes::from_static(b"ok")).map_err(|never: Infallible| match never {}).boxed())
}

/// A gateway with short timeouts in front of a hyper instance.
async fn gateway(limits: ConnectionLimits) -> SocketAddr {
    let (instance, _) = support::instance(ok).await;
    let pool = support::pool(0, Duration::from_secs(5));
    pool.add_endpoint(1, instance);
    support::gateway_with_limits(pool, 1, limits).await
}

fn short(header: u64, idle: u64) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(header),
        idle_timeout: Duration::from_millis(idle),
        ..ConnectionLimits::default()
    }
}

#[tokio::test]
async fn an_empty_connection_is_closed_after_the_header_read_timeout() {
    let gateway = gateway(short(200, 60_000)).await;
    let mut c = Client::connect(gateway).await;
    assert!(c.closed().await, "closed without a request");
}

#[tokio::test]
async fn a_head_sent_too_slowly_is_closed_on_both_paths() {
    let gateway = gateway(short(300, 60_000)).await;
    // Relay: a byte every 50 ms never completes a head within 300 ms.
    for prefix in ["", CHUNKED] {
        let mut c = Client::connect(gateway).await;
        if !prefix.is_empty() {
            c.send(prefix.as_bytes()).await;
            assert_eq!(c.answer("POST").await.status, 200);
        }
        let mut closed = false;
        for byte in GET.as_bytes().iter().take(GET.len() - 1) {
            if c.stream.try_write(&[*byte]).is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed || c.closed().await, "a slow head closes the connection (after {prefix:?})");
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_on_both_paths() {
    let gateway = gateway(short(60_000, 300)).await;
    for first in [GET, CHUNKED] {
        let mut c = Client::connect(gateway).await;
        c.send(first.as_bytes()).await;
        assert_eq!(c.answer(if first == GET { "GET" } else { "POST" }).await.status, 200);
        assert!(c.closed().await, "closed when idle after {first:?}");
    }
}

#[tokio::test]
async fn a_connection_in_use_is_kept_within_the_idle_timeout() {
    let gateway = gateway(short(60_000, 1_500)).await;
    let mut c = Client::connect(gateway).await;
    // Requests every 200 ms for two seconds: longer than the idle timeout, never idle for it.
    for _ in 0..10 {
        c.send(GET.as_bytes()).await;
        assert_eq!(c.answer("GET").await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let limits = ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() };
    let gateway = gateway(limits).await;
    let mut first = Client::connect(gateway).await;
    let mut second = Client::connect(gateway).await;
    for c in [&mut first, &mut second] {
        c.send(GET.as_bytes()).await;
        assert_eq!(c.answer("GET").await.status, 200);
    }
    let mut third = Client::connect(gateway).await;
    third.send(GET.as_bytes()).await;
    let early = tokio::time::timeout(Duration::from_millis(300), third.answer("GET")).await;
    assert!(early.is_err(), "a third connection is not served while two are open");
    drop(first);
    assert_eq!(third.answer("GET").await.status, 200, "served once one closed");
}

/// A raw instance that answers every request with a head promising `hi there` and sends
/// `hi` of it, then stalls; for `/silent`, sends nothing at all.
async fn stalling_instance() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let Some(head) = support::raw::read_head(&mut stream).await else { return };
                if !head.starts_with("GET /silent") {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nhi").await;
                }
                // Holds the connection open, sending nothing more.
                let _ = support::raw::read_head(&mut stream).await;
            });
        }
    });
    addr
}

/// A gateway in front of a stalling instance, with the given request timeouts.
async fn stalled_gateway(
    timeouts: serval_gateway::RequestTimeouts,
) -> (SocketAddr, std::sync::Arc<serval_gateway::RevisionPool>) {
    let pool = serval_gateway::RevisionPool::new(
        serval_gateway::RevisionLabels::new("ns", "svc", "svc-00001"),
        serval_gateway::PoolConfig {
            container_concurrency: 0,
            nominal_capacity: 100,
            timeouts,
            h2c: false,
            in_process: false,
        },
    );
    pool.add_endpoint(1, stalling_instance().await);
    (support::gateway_with_limits(pool.clone(), 1, ConnectionLimits::default()).await, pool)
}

/// Sends `request` (after a chunked one that hands the connection to hyper, for
/// `hyper`), reads the head and what body came, and expects the gateway to close the
/// connection and free the instance's slot.
async fn cut_short(gateway: SocketAddr, pool: &serval_gateway::RevisionPool, hyper: bool) {
    let mut c = Client::connect(gateway).await;
    if hyper {
        c.send(b"GET /silent HTTP/1.1\r\nhost: svc.ns.localhost\r\nexpect: 100-continue\r\n\r\n").await;
        let _ = c.answer("GET").await;
    }
    c.send(GET.as_bytes()).await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(10), c.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("hyper={hyper}: still open after 10 s: {}", String::from_utf8_lossy(&seen)),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("200 OK") && seen.ends_with("hi"), "hyper={hyper}: the head and the start went out: {seen}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().in_flight > 0 {
        assert!(tokio::time::Instant::now() < deadline, "hyper={hyper}: the slot is freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_response_stalled_after_its_head_is_cut_at_the_request_timeout_on_both_paths() {
    let (gateway, pool) = stalled_gateway(serval_gateway::RequestTimeouts::total(Duration::from_millis(500))).await;
    cut_short(gateway, &pool, false).await;
    cut_short(gateway, &pool, true).await;
}

#[tokio::test]
async fn a_response_idle_past_the_idle_timeout_is_cut_on_both_paths() {
    let timeouts = serval_gateway::RequestTimeouts {
        total: Duration::from_secs(60),
        response_start: Duration::from_secs(60),
        idle: Some(Duration::from_millis(300)),
    };
    let (gateway, pool) = stalled_gateway(timeouts).await;
    cut_short(gateway, &pool, false).await;
    cut_short(gateway, &pool, true).await;
}

#[tokio::test]
async fn no_response_head_within_the_response_start_timeout_is_a_504_on_both_paths() {
    let timeouts = serval_gateway::RequestTimeouts {
        total: Duration::from_secs(60),
        response_start: Duration::from_millis(300),
        idle: None,
    };
    let (gateway, _) = stalled_gateway(timeouts).await;
    for (path, request) in [
        ("relay", "GET /silent HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n"),
        ("hyper", "GET /silent HTTP/1.0\r\nhost: svc.ns.localhost\r\n\r\n"),
    ] {
        let mut c = Client::connect(gateway).await;
        c.send(request.as_bytes()).await;
        assert_eq!(c.answer("GET").await.status, 504, "{path}");
    }
}
