//! The gateway's connections to instances, through a real gateway on a loopback port and a
//! real HTTP/1.1 instance that counts the connections it accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod support;

use support::TestBody;

/// An instance: `/close` answers with `Connection: close`, `/stream` sends one chunk and
/// then never ends, anything else answers with its path. Counts accepted connections.
async fn instance() -> (SocketAddr, Arc<AtomicUsize>) {
    support::instance(answer).await
}

async fn answer(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    match path.as_str() {
        "/close" => {
            let mut response = Response::new(Full::new(Bytes::from("closing")).boxed());
            response.headers_mut().insert("connection", http::HeaderValue::from_static("close"));
            response
        }
        "/stream" => {
            let first = futures_util::stream::once(async { Ok(Frame::data(Bytes::from("first"))) });
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::StreamExt::chain(
                first,
                futures_util::stream::pending(),
            ))))
        }
        _ => Response::new(Full::new(Bytes::from(format!("{path} for {host}"))).boxed()),
    }
}

/// A gateway on two threads (the second listens on a socket of its own on the same port).
async fn gateway(instance: SocketAddr) -> SocketAddr {
    support::gateway(instance, 2).await
}

#[tokio::test]
async fn the_gateway_listener_lets_each_thread_bind_the_same_port() {
    let first = serval_gateway::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = first.local_addr().expect("addr");
    let second = serval_gateway::bind(addr).expect("a second listener on the same port");
    assert_eq!(second.local_addr().expect("addr"), addr);
    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    assert!(serval_gateway::bind(plain.local_addr().expect("addr")).is_err(), "only listeners from bind share");
}

/// One keep-alive client connection to the gateway.
async fn client(gateway: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(gateway).await.expect("connect gateway");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
    sender.ready().await.expect("client connection ready");
    let req = Request::get(path).header("host", "svc.ns.localhost").body(Empty::new()).expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sequential_requests_reuse_one_instance_connection_and_keep_the_host() {
    let (instance, connections) = instance().await;
    let gateway = gateway(instance).await;
    let mut c = client(gateway).await;
    for n in 0..20 {
        let (status, body) = get(&mut c, &format!("/r{n}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("/r{n} for svc.ns.localhost"), "the client's Host reaches the instance");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one keep-alive connection served all 20 requests");
}

#[tokio::test]
async fn a_connection_the_instance_closed_is_replaced() {
    let (instance, connections) = instance().await;
    let gateway = gateway(instance).await;
    let mut c = client(gateway).await;
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/close").await, (StatusCode::OK, "closing".into()));
        assert_eq!(get(&mut c, "/after").await.0, StatusCode::OK);
    }
    // Each `/close` ends its connection; the request after it needs a new one.
    assert_eq!(connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_abandoned_response_body_does_not_poison_the_next_request() {
    let (instance, connections) = instance().await;
    let gateway = gateway(instance).await;
    {
        let mut c = client(gateway).await;
        c.ready().await.expect("ready");
        let req = Request::get("/stream").header("host", "svc.ns.localhost").body(Empty::new()).expect("request");
        let response = c.send_request(req).await.expect("response head");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("no error").into_data().expect("data");
        assert_eq!(first, Bytes::from("first"));
        // The client goes away in the middle of the body.
    }
    let mut c = client(gateway).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), get(&mut c, "/next")).await;
    assert_eq!(answered.expect("answered").0, StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "the half-read connection was not reused");
}
