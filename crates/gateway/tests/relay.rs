//! The gateway's HTTP/1.1 relay and its hand-off to hyper, through a real gateway on a
//! loopback port: raw HTTP/1.1 clients (pipelining, HTTP/1.0, chunked uploads, exact bytes on
//! the wire) against a hyper instance and against raw instances that answer in the framings
//! hyper would not produce on its own (close-delimited, interim 1xx, silent closes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serval_gateway::RevisionPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod support;

use support::TestBody;
use support::raw::{Client, read_head};

/// A hyper instance. `/chunks` streams three chunks (sent chunked); anything else answers
/// with a report of what arrived: method, path, body length and the header fields, one
/// `name: value` per line. Counts accepted connections.
async fn hyper_instance() -> (SocketAddr, Arc<AtomicUsize>) {
    support::instance(report).await
}

async fn report(req: Request<Incoming>) -> Response<TestBody> {
    if req.uri().path() == "/chunks" {
        let chunks = ["one ", "two ", "three"].map(|c| Ok(Frame::data(Bytes::from(c))));
        return Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))));
    }
    let mut report = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        report += &format!("{name}: {}\n", value.to_str().unwrap_or("?"));
    }
    let body = req.into_body().collect().await.expect("request body").to_bytes();
    report += &format!("body {} {}\n", body.len(), body.iter().map(|b| u64::from(*b)).sum::<u64>());
    Response::new(Full::new(Bytes::from(report)).boxed())
}

/// A raw instance: reads one request head per connection and writes `answer` verbatim;
/// then closes the connection, at once or (`close_on_next`) when the next request comes,
/// unanswered. Counts accepted connections.
async fn raw_instance(answer: &'static str, close_on_next: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_some()
                    && stream.write_all(answer.as_bytes()).await.is_ok()
                    && close_on_next
                {
                    read_head(&mut stream).await;
                }
            });
        }
    });
    (addr, connections)
}

/// A gateway on one thread in front of `instance`.
async fn gateway(instance: SocketAddr) -> SocketAddr {
    support::gateway(instance, 1).await
}

/// The revision pool of `svc`, without endpoints, no concurrency limit.
fn pool(request_timeout: Duration) -> Arc<RevisionPool> {
    support::pool(0, request_timeout)
}

async fn gateway_to(pool: Arc<RevisionPool>) -> SocketAddr {
    support::gateway_to(pool, 1).await
}

const GET: &str = "GET /report HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n";

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_instance_connection() {
    let (instance, connections) = hyper_instance().await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(
        b"GET /first HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n\
          POST /second HTTP/1.1\r\nhost: svc.ns.localhost\r\ncontent-length: 5\r\n\r\nhello\
          GET /chunks HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n",
    )
    .await;
    let first = c.answer("GET").await;
    assert_eq!(first.status, 200);
    assert!(first.text().starts_with("GET /first\n"), "{}", first.text());
    let second = c.answer("POST").await;
    assert!(second.text().starts_with("POST /second\n"), "{}", second.text());
    assert!(second.text().ends_with("body 5 532\n"), "the body arrived: {}", second.text());
    let third = c.answer("GET").await;
    assert_eq!(third.field("transfer-encoding"), Some("chunked"), "a chunked body stays chunked");
    assert_eq!(third.text(), "one two three");
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.status, 200, "the connection goes on after a chunked body");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one instance connection served all four");
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let (instance, _) = hyper_instance().await;
    let mut c = Client::connect(gateway(instance).await).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    let head = format!("PUT /big HTTP/1.1\r\nhost: svc.ns.localhost\r\ncontent-length: {}\r\n\r\n", body.len());
    let (mut reader, mut writer) = c.stream.into_split();
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.expect("head");
        for piece in body.chunks(65_536) {
            writer.write_all(piece).await.expect("body");
        }
        writer
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.ends_with(b"\n") || !String::from_utf8_lossy(&received).contains("body ") {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut chunk))
            .await
            .expect("answer")
            .expect("read");
        assert!(n > 0, "closed early");
        received.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.ends_with(&format!("body 3000000 {sum}\n")), "{text}");
    let writer = upload.await.expect("upload");
    c = Client { stream: reader.reunite(writer).expect("reunite"), buf: Vec::new() };
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.status, 200);
}

#[tokio::test]
async fn head_answers_carry_no_body_and_the_connection_goes_on() {
    let (instance, _) = hyper_instance().await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(b"HEAD /report HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n").await;
    let head = c.answer("HEAD").await;
    assert_eq!(head.status, 200);
    assert!(head.field("content-length").is_some_and(|l| l != "0"), "{head:?}");
    c.send(GET.as_bytes()).await;
    assert!(c.answer("GET").await.text().starts_with("GET /report\n"));
}

#[tokio::test]
async fn requests_the_relay_does_not_take_are_served_by_hyper_on_the_same_connection() {
    let (instance, _) = hyper_instance().await;
    let gateway = gateway(instance).await;
    // A chunked upload, then a plain request: both on the connection hyper took over.
    let mut c = Client::connect(gateway).await;
    c.send(b"GET /plain HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n").await;
    assert_eq!(c.answer("GET").await.status, 200);
    c.send(
        b"POST /upload HTTP/1.1\r\nhost: svc.ns.localhost\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let upload = c.answer("POST").await;
    assert!(upload.text().ends_with("body 3 294\n"), "{}", upload.text());
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.status, 200);
    // HTTP/1.0.
    let mut c = Client::connect(gateway).await;
    c.send(b"GET /old HTTP/1.0\r\nhost: svc.ns.localhost\r\n\r\n").await;
    let old = c.answer("GET").await;
    assert!(old.text().starts_with("GET /old\n"), "{}", old.text());
    // A head that does not parse gets hyper's 400.
    let mut c = Client::connect(gateway).await;
    c.send(b"GET /bad HTTP/1.1\r\nho st: x\r\n\r\n").await;
    assert_eq!(c.answer("GET").await.status, 400);
}

#[tokio::test]
async fn errors_answer_with_json_and_keep_the_connection_when_the_body_is_in() {
    let (instance, _) = hyper_instance().await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(b"POST /x HTTP/1.1\r\nhost: nothing.ns.localhost\r\ncontent-length: 3\r\n\r\nabc").await;
    let missing = c.answer("POST").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.field("content-type"), Some("application/json"));
    assert!(missing.text().contains("\"reason\":\"NotFound\""), "{}", missing.text());
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.status, 200, "the body was skipped, the connection goes on");
    // A body that has not arrived yet cannot be skipped: the connection closes.
    c.send(b"POST /x HTTP/1.1\r\nhost: nothing.ns.localhost\r\ncontent-length: 100000\r\n\r\nabc").await;
    let missing = c.answer("POST").await;
    assert_eq!((missing.status, missing.field("connection")), (404, Some("close")));
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_body_delimited_by_close_reaches_the_client_which_is_then_closed() {
    let (instance, connections) =
        raw_instance("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", false).await;
    let gateway = gateway(instance).await;
    let mut c = Client::connect(gateway).await;
    c.send(GET.as_bytes()).await;
    let answer = c.answer("GET").await;
    assert_eq!((answer.status, answer.field("connection")), (200, Some("close")));
    assert_eq!(answer.text(), "until the end");
    assert!(c.closed().await);
    // The next client gets a new instance connection.
    let mut c = Client::connect(gateway).await;
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.text(), "until the end");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn interim_answers_are_passed_on_before_the_final_one() {
    let (instance, _) = raw_instance(
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone",
        false,
    )
    .await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(GET.as_bytes()).await;
    let hints = c.answer("GET").await;
    assert_eq!((hints.status, hints.field("link")), (103, Some("</style.css>; rel=preload")));
    let last = c.answer("GET").await;
    assert_eq!((last.status, last.text().as_str()), (200, "done"));
}

#[tokio::test]
async fn a_malformed_answer_is_a_bad_gateway() {
    let (instance, _) =
        raw_instance("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nok", false).await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(GET.as_bytes()).await;
    let answer = c.answer("GET").await;
    assert_eq!(answer.status, 502);
    assert!(answer.text().contains("content-length"), "{}", answer.text());
}

/// Waits (up to 5 s) until `pool` has `waiting` queued requests.
async fn until_waiting(pool: &RevisionPool, waiting: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().waiting != waiting {
        assert!(tokio::time::Instant::now() < deadline, "{} waiting, expected {waiting}", pool.stats().waiting);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_gives_up_its_place_in_the_queue() {
    // No instance: requests wait for one (as at zero), for up to a minute.
    let pool = pool(Duration::from_secs(60));
    let gateway = gateway_to(pool.clone()).await;
    let mut leaving = Client::connect(gateway).await;
    leaving.send(GET.as_bytes()).await;
    let mut staying = Client::connect(gateway).await;
    // A pipelined second request is no sign of leaving.
    staying.send(format!("{GET}{GET}").as_bytes()).await;
    until_waiting(&pool, 2).await;
    drop(leaving);
    until_waiting(&pool, 1).await;
    // The one that stayed is served once an instance is there.
    let (instance, _) = hyper_instance().await;
    pool.add_endpoint(1, instance);
    assert_eq!(staying.answer("GET").await.status, 200);
    assert_eq!(staying.answer("GET").await.status, 200);
}

/// An instance that switches to an upper-casing echo protocol when asked with
/// `Upgrade: shout` (and answers 426 otherwise).
async fn shouting_instance() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else { return };
                let head = head.to_ascii_lowercase();
                if !head.contains("\r\nupgrade: shout\r\n") || !head.contains("\r\nconnection: upgrade\r\n") {
                    let _ = stream.write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n").await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: shout\r\nconnection: upgrade\r\n\r\n")
                    .await;
                let mut chunk = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    if stream.write_all(&chunk[..n].to_ascii_uppercase()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upgraded_connection_becomes_a_tunnel_that_holds_its_slot() {
    let pool = pool(Duration::from_secs(5));
    pool.add_endpoint(1, shouting_instance().await);
    let gateway = gateway_to(pool.clone()).await;
    let mut c = Client::connect(gateway).await;
    // Bytes sent right behind the request head reach the instance after the switch.
    c.send(b"GET /ws HTTP/1.1\r\nhost: svc.ns.localhost\r\nconnection: Upgrade\r\nupgrade: shout\r\n\r\nfirst ").await;
    let switched = c.answer("GET").await;
    assert_eq!(switched.status, 101);
    assert_eq!((switched.field("upgrade"), switched.field("connection")), (Some("shout"), Some("upgrade")));
    c.send(b"and then some").await;
    while c.buf.len() < b"FIRST AND THEN SOME".len() {
        assert!(c.fill().await, "tunnel closed");
    }
    assert_eq!(c.buf, b"FIRST AND THEN SOME");
    assert_eq!(pool.stats().in_flight, 1, "an open tunnel is a request in flight");
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().in_flight != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slot is freed when the tunnel closes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Without an upgrade the instance answers normally.
    let mut c = Client::connect(gateway).await;
    c.send(GET.as_bytes()).await;
    assert_eq!(c.answer("GET").await.status, 426);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    // No instance yet, one request at a time per instance: requests queue, up to 100 (the
    // minimum queue).
    let pool = support::pool(1, Duration::from_secs(60));
    let gateway = gateway_to(pool.clone()).await;
    let mut waiting = Vec::new();
    for _ in 0..100 {
        let mut c = Client::connect(gateway).await;
        c.send(GET.as_bytes()).await;
        waiting.push(c);
    }
    until_waiting(&pool, 100).await;
    let mut refused = Client::connect(gateway).await;
    refused.send(GET.as_bytes()).await;
    let answer = refused.answer("GET").await;
    assert_eq!((answer.status, answer.field("retry-after")), (503, Some("1")));
    assert!(answer.text().contains("\"reason\":\"Overloaded\""), "{}", answer.text());
    // Nothing that was queued is lost.
    let (instance, _) = hyper_instance().await;
    pool.add_endpoint(1, instance);
    for c in &mut waiting {
        assert_eq!(c.answer("GET").await.status, 200);
    }
}

#[tokio::test]
async fn a_request_that_fails_after_its_body_went_out_leaves_the_next_one_intact() {
    // Drops POSTs unanswered, answers anything else.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let instance = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    if head.starts_with("POST") {
                        return;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(format!("POST /x HTTP/1.1\r\nhost: svc.ns.localhost\r\ncontent-length: 5\r\n\r\nhello{GET}").as_bytes())
        .await;
    assert_eq!(c.answer("POST").await.status, 502);
    let next = c.answer("GET").await;
    assert_eq!((next.status, next.text().as_str()), (200, "ok"));
}

/// An instance that speaks HTTP/2 only (h2c, prior knowledge), gRPC style: it answers with
/// what it saw (version, authority, `te`, path, body) and ends with a `grpc-status` trailer.
async fn h2c_instance() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let te = req.headers().get("te").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    let seen = format!(
                        "{:?} {} te={te} {} ",
                        req.version(),
                        req.uri().authority().map_or("-", |a| a.as_str()),
                        req.uri().path()
                    );
                    let body = req.into_body().collect().await.expect("request body").to_bytes();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let frames = [
                        Ok::<_, Infallible>(Frame::data(Bytes::from(seen + &String::from_utf8_lossy(&body)))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(frames))))
                });
                let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_instances_get_http2_with_trailers_from_h2c_and_http1_clients() {
    let pool = support::h2c_pool();
    pool.add_endpoint(1, h2c_instance().await);
    let gateway = gateway_to(pool).await;

    // A gRPC-like client: h2c with prior knowledge, `te: trailers`.
    let mut sender = support::h2c_client(gateway).await;
    for n in 0..3 {
        let req = Request::post("http://svc.ns.localhost/pkg.Service/Call")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(format!("call {n}"))))
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), 200);
        let collected = response.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers reach the client");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        assert_eq!(body, format!("HTTP/2.0 svc.ns.localhost te=trailers /pkg.Service/Call call {n}"));
    }

    // An HTTP/1.1 client: the instance still gets HTTP/2.
    let mut c = Client::connect(gateway).await;
    c.send(b"POST /f/ns/svc/plain HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\nhi").await;
    let answer = c.answer("POST").await;
    assert_eq!((answer.status, answer.text()), (200, "HTTP/2.0 127.0.0.1 te=- /plain hi".to_string()));
}

#[tokio::test]
async fn a_client_that_asks_to_close_is_answered_and_closed() {
    let (instance, connections) = hyper_instance().await;
    let mut c = Client::connect(gateway(instance).await).await;
    c.send(b"GET /last HTTP/1.1\r\nhost: svc.ns.localhost\r\nconnection: close\r\n\r\n").await;
    let answer = c.answer("GET").await;
    assert_eq!((answer.status, answer.field("connection")), (200, Some("close")));
    assert!(!answer.text().contains("connection:"), "the client's connection options stay behind");
    assert!(c.closed().await);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one instance connection");
}
