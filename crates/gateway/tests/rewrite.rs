//! The rewrite rules (`crate::rewrite`) on both paths of the gateway: every test runs for
//! each kind of client — plain HTTP/1.1, which the relay serves, and HTTP/1.1 with an
//! absolute-form target, HTTP/1.0 and h2c, which the relay hands to the hyper path — and
//! expects the same outcome from each (where an outcome differs, the test says why).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serval_gateway::RevisionPool;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

mod support;

use support::TestBody;
use support::raw::{Client, read_head};

/// How a client talks to the gateway, and so which path serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// HTTP/1.1, origin-form target: the relay.
    Relay,
    /// HTTP/1.1, absolute-form target (`GET http://host/path`): the hyper path.
    AbsoluteForm,
    /// HTTP/1.0: the hyper path.
    Http10,
    /// HTTP/2 with prior knowledge: the hyper path.
    H2c,
}

const KINDS: [Kind; 4] = [Kind::Relay, Kind::AbsoluteForm, Kind::Http10, Kind::H2c];

/// The host clients ask for in the tests that route by path: it names no service.
const FRONT: &str = "front.example";

/// A request, as each kind of client would send it.
struct Req<'a> {
    method: &'a str,
    /// Origin form; the absolute-form and h2c clients put `host` in front.
    target: &'a str,
    /// The `Host` field (HTTP/1), or the target's authority (absolute form, h2c). Only
    /// HTTP/1.0 may go without.
    host: Option<&'a str>,
    fields: &'a [(&'a str, &'a str)],
    body: &'a str,
}

impl Req<'_> {
    fn get(target: &str) -> Req<'_> {
        Req { method: "GET", target, host: Some(FRONT), fields: &[], body: "" }
    }
}

impl Kind {
    /// Sends `req` to the gateway on a new connection and reads the answer: status and body.
    async fn send(self, gateway: SocketAddr, req: &Req<'_>) -> (u16, String) {
        if self == Kind::H2c {
            return h2c(gateway, req).await;
        }
        let (target, version) = match self {
            Kind::Relay => (req.target.to_string(), "HTTP/1.1"),
            Kind::AbsoluteForm => (format!("http://{}{}", req.host.expect("a host"), req.target), "HTTP/1.1"),
            _ => (req.target.to_string(), "HTTP/1.0"),
        };
        let mut head = format!("{} {target} {version}\r\n", req.method);
        if let Some(host) = req.host {
            head += &format!("host: {host}\r\n");
        }
        for (name, value) in req.fields {
            head += &format!("{name}: {value}\r\n");
        }
        if !req.body.is_empty() {
            head += &format!("content-length: {}\r\n", req.body.len());
        }
        let mut c = Client::connect(gateway).await;
        c.send(format!("{head}\r\n{}", req.body).as_bytes()).await;
        let answer = c.answer(req.method).await;
        (answer.status, answer.text())
    }
}

/// The h2c client's way of [`Kind::send`].
async fn h2c(gateway: SocketAddr, req: &Req<'_>) -> (u16, String) {
    let mut sender = support::h2c_client(gateway).await;
    let uri = format!("http://{}{}", req.host.expect("an h2c request has an authority"), req.target);
    let mut request = Request::builder().method(req.method).uri(uri);
    for (name, value) in req.fields {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(req.body.to_string()))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Answers with what arrived: `<method> <target>`, then one `name: value` line per field
/// (as many lines as values), then `body <length>`.
async fn report(req: Request<Incoming>) -> Response<TestBody> {
    let mut report = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        report += &format!("{name}: {}\n", value.to_str().unwrap_or("?"));
    }
    let body = req.into_body().collect().await.expect("request body").to_bytes();
    report += &format!("body {}\n", body.len());
    Response::new(Full::new(Bytes::from(report)).boxed())
}

/// A gateway on one thread in front of a [`report`]ing instance; the instance's address.
async fn reporting() -> (SocketAddr, SocketAddr) {
    let (instance, _) = support::instance(report).await;
    (support::gateway(instance, 1).await, instance)
}

/// The values of field `name` in a report.
fn values<'r>(report: &'r str, name: &str) -> Vec<&'r str> {
    let prefix = format!("{name}: ");
    report.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

#[tokio::test]
async fn hop_by_hop_and_connection_listed_fields_stay_behind() {
    for kind in KINDS {
        let (gateway, _) = reporting().await;
        // HTTP/2 has no `Connection` field, nor the hop-by-hop fields that go with it (RFC
        // 9113 §8.2.2: a message with one is malformed): h2c clients send the hop-by-hop
        // fields it has.
        let fields: &[(&str, &str)] = if kind == Kind::H2c {
            &[("proxy-authorization", "Basic c2VjcmV0"), ("te", "trailers"), ("x-kept", "yes")]
        } else {
            &[
                ("Connection", "keep-alive, X-Secret, Content-Length, Host"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("TE", "trailers"),
                ("X-Kept", "yes"),
            ]
        };
        let req = Req { method: "POST", target: "/f/ns/svc/x", host: Some(FRONT), fields, body: "hello" };
        let (status, report) = kind.send(gateway, &req).await;
        assert_eq!(status, 200, "{kind:?}: {report}");
        for gone in ["connection", "x-secret", "keep-alive", "proxy-authorization", "te"] {
            assert!(values(&report, gone).is_empty(), "{kind:?}: {gone} reached the instance: {report}");
        }
        assert_eq!(values(&report, "x-kept"), ["yes"], "{kind:?}: {report}");
        assert_eq!(values(&report, "host"), [FRONT], "{kind:?}: a listing never removes Host: {report}");
        assert!(report.ends_with("body 5\n"), "{kind:?}: nor the body's framing: {report}");
    }
}

#[tokio::test]
async fn a_clients_forwarding_fields_are_replaced_by_the_gateways() {
    let forged = [
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-Host", "forged.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("Forwarded", "for=203.0.113.66;host=forged.example;proto=https"),
    ];
    for kind in KINDS {
        let (gateway, _) = reporting().await;
        let req = Req { fields: &forged, ..Req::get("/f/ns/svc/x") };
        let (status, report) = kind.send(gateway, &req).await;
        assert_eq!(status, 200, "{kind:?}: {report}");
        assert!(!report.contains("forged") && !report.contains("203.0.113.66"), "{kind:?}: {report}");
        assert_eq!(values(&report, "x-forwarded-for"), ["127.0.0.1"], "{kind:?}: {report}");
        assert_eq!(values(&report, "x-forwarded-host"), [FRONT], "{kind:?}: {report}");
        assert_eq!(values(&report, "x-forwarded-proto"), ["http"], "{kind:?}: {report}");
        assert!(values(&report, "x-forwarded-port").is_empty(), "{kind:?}: {report}");
        assert!(values(&report, "forwarded").is_empty(), "{kind:?}: {report}");
    }
}

#[tokio::test]
async fn path_routing_strips_its_prefix_and_host_routing_keeps_the_path() {
    for kind in KINDS {
        let (gateway, _) = reporting().await;
        for (target, seen) in [("/f/ns/svc/inner?q=1", "/inner?q=1"), ("/f/ns/svc", "/"), ("/f/ns/svc?q=1", "/?q=1")] {
            let (status, report) = kind.send(gateway, &Req::get(target)).await;
            assert_eq!(status, 200, "{kind:?} {target}: {report}");
            assert!(report.starts_with(&format!("GET {seen}\n")), "{kind:?} {target}: {report}");
        }
        let by_host = Req { host: Some("svc.ns.localhost"), ..Req::get("/f/other/x") };
        let (status, report) = kind.send(gateway, &by_host).await;
        assert_eq!(status, 200, "{kind:?}: {report}");
        assert!(report.starts_with("GET /f/other/x\n"), "{kind:?}: a host naming a service wins: {report}");
        assert_eq!(values(&report, "host"), ["svc.ns.localhost"], "{kind:?}: {report}");
    }
}

#[tokio::test]
async fn a_request_without_a_host_gets_the_instances_address_and_no_forwarded_host() {
    // Only HTTP/1.0 may name no host (HTTP/1.1 needs Host, h2c sends an authority).
    let (gateway, instance) = reporting().await;
    let req = Req { host: None, fields: &[("X-Forwarded-Host", "forged.example")], ..Req::get("/f/ns/svc/x") };
    let (status, report) = Kind::Http10.send(gateway, &req).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(values(&report, "host"), [instance.to_string().as_str()], "{report}");
    assert!(values(&report, "x-forwarded-host").is_empty(), "{report}");
    assert_eq!(values(&report, "x-forwarded-for"), ["127.0.0.1"], "{report}");
}

#[tokio::test]
async fn the_targets_authority_wins_over_the_host_field() {
    // RFC 9112 §3.2.2: a proxy ignores Host when the target is in absolute form.
    let (gateway, _) = reporting().await;
    let mut c = Client::connect(gateway).await;
    c.send(b"GET http://svc.ns.localhost/x HTTP/1.1\r\nhost: other.example\r\n\r\n").await;
    let report = c.answer("GET").await.text();
    assert!(report.starts_with("GET /x\n"), "routed by the target's authority: {report}");
    assert_eq!(values(&report, "host"), ["svc.ns.localhost"], "{report}");
    assert_eq!(values(&report, "x-forwarded-host"), ["svc.ns.localhost"], "{report}");
}

/// What a [`killing_instance`] does with the second and later requests on a connection.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the connection without a byte of an answer.
    Close,
    /// Sends the start of an answer, then closes.
    BreakOff,
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const HEAD_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";

/// A raw instance that answers the first request on each connection with `200 ok`
/// (kept alive) and treats the next as `then` says. Counts connections and kills.
async fn killing_instance(then: Then) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    let (connections, kills) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, killed) = (connections.clone(), kills.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let killed = killed.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else { return };
                let answer = if head.starts_with("HEAD ") { HEAD_ANSWER } else { ANSWER };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                if read_head(&mut stream).await.is_some() {
                    if let Then::BreakOff = then {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                    }
                    killed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, connections, kills)
}

/// Waits (up to 5 s) until `pool` has no request in flight: the last answer's instance
/// connection is back in the gateway's idle list then (both paths put it back before they
/// free the slot).
async fn until_idle(pool: &RevisionPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().in_flight != 0 {
        assert!(tokio::time::Instant::now() < deadline, "a request stays in flight");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A gateway in front of a [`killing_instance`]: the gateway, the pool, the counters.
async fn killing(then: Then) -> (SocketAddr, Arc<RevisionPool>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (instance, connections, kills) = killing_instance(then).await;
    let pool = support::pool(0, Duration::from_secs(5));
    pool.add_endpoint(1, instance);
    (support::gateway_to(pool.clone(), 1).await, pool, connections, kills)
}

#[tokio::test]
async fn idempotent_requests_without_a_body_go_again_when_a_kept_alive_connection_closes() {
    for kind in KINDS {
        let (gateway, pool, connections, kills) = killing(Then::Close).await;
        for (n, method) in ["GET", "GET", "DELETE", "HEAD", "GET"].into_iter().enumerate() {
            let (status, body) = kind.send(gateway, &Req { method, ..Req::get("/f/ns/svc/x") }).await;
            let expected = if method == "HEAD" { "" } else { "ok" };
            assert_eq!((status, body.as_str()), (200, expected), "{kind:?}: request {n} ({method})");
            until_idle(&pool).await;
        }
        // Every request after the first met a closed connection and went again on a new one.
        assert_eq!(kills.load(Ordering::SeqCst), 4, "{kind:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 5, "{kind:?}");
    }
}

#[tokio::test]
async fn a_post_that_went_out_is_not_sent_again() {
    for kind in KINDS {
        let (gateway, pool, connections, kills) = killing(Then::Close).await;
        assert_eq!(kind.send(gateway, &Req::get("/f/ns/svc/x")).await.0, 200, "{kind:?}");
        until_idle(&pool).await;
        let post = Req { method: "POST", body: "event", ..Req::get("/f/ns/svc/x") };
        assert_eq!(kind.send(gateway, &post).await.0, 502, "{kind:?}: the instance may have acted on it");
        assert_eq!((kills.load(Ordering::SeqCst), connections.load(Ordering::SeqCst)), (1, 1), "{kind:?}");
    }
}

#[tokio::test]
async fn a_put_goes_again_only_when_its_body_was_in_hand() {
    for kind in KINDS {
        let (gateway, pool, connections, _) = killing(Then::Close).await;
        assert_eq!(kind.send(gateway, &Req::get("/f/ns/svc/x")).await.0, 200, "{kind:?}");
        until_idle(&pool).await;
        let put = Req { method: "PUT", body: "state", ..Req::get("/f/ns/svc/x") };
        let (status, _) = kind.send(gateway, &put).await;
        // The relay reads a body that came with the head before it sends the request, and
        // can send it again; the hyper path streams bodies through and cannot.
        let (expected, opened) = if kind == Kind::Relay { (200, 2) } else { (502, 1) };
        assert_eq!((status, connections.load(Ordering::SeqCst)), (expected, opened), "{kind:?}");
    }
}

#[tokio::test]
async fn an_answer_that_broke_off_is_not_sent_again() {
    for kind in KINDS {
        let (gateway, pool, connections, kills) = killing(Then::BreakOff).await;
        assert_eq!(kind.send(gateway, &Req::get("/f/ns/svc/x")).await.0, 200, "{kind:?}");
        until_idle(&pool).await;
        // A byte of an answer came: the instance got the request, the failure is its own.
        assert_eq!(kind.send(gateway, &Req::get("/f/ns/svc/x")).await.0, 502, "{kind:?}");
        assert_eq!((kills.load(Ordering::SeqCst), connections.load(Ordering::SeqCst)), (1, 1), "{kind:?}");
    }
}
