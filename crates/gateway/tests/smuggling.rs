//! Request smuggling and response desync, through a real gateway on a loopback port, on both
//! of its paths (the HTTP/1.1 relay, and hyper after a hand-off): each hostile case is sent
//! on one client connection followed by an honest request on the same connection, while a
//! victim sends honest requests on another; every client must get exactly its own answers,
//! and no bytes of a body may reach the instance as a request of their own.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

mod support;

use support::raw::{Answer, Client, read_head};

/// A request hidden in a body: reaching the instance as a request is a smuggling hole.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nhost: svc.ns.localhost\r\nx-client: victim\r\n\r\n";

/// Every request path raw instances saw (shared by the tests of this file; only this file's
/// hostile cases carry `/smuggled`).
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn seen_smuggled() -> bool {
    SEEN.lock().expect("seen").iter().any(|p| p.contains("smuggled"))
}

/// A raw instance on kept-alive connections: reads each request (head and a
/// `content-length` body), and answers `/r…` paths with the hostile response framings of
/// [`hostile_response`], anything else with `<method> <path> <x-client>` in a
/// content-length body.
async fn raw_instance() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind instance");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    let mut fields = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut fields);
                    if req.parse(head.as_bytes()).is_err() {
                        return;
                    }
                    let (method, path) = (req.method.unwrap_or("?").to_string(), req.path.unwrap_or("?").to_string());
                    let field = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let client = field("x-client").unwrap_or_default();
                    let length: usize = field("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                    if field("transfer-encoding").is_some() {
                        // The gateway only sends chunked bodies in this file's cases whose body
                        // is a single chunk then the last one: skip them by their end.
                        let mut tail = Vec::new();
                        let mut byte = [0u8; 1];
                        while !tail.ends_with(b"0\r\n\r\n") {
                            if tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            tail.push(byte[0]);
                        }
                    } else {
                        let mut body = vec![0u8; length];
                        if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut body).await.is_err() {
                            return;
                        }
                    }
                    SEEN.lock().expect("seen").push(path.clone());
                    let (answer, close) = match hostile_response(&path) {
                        Some(hostile) => hostile,
                        None => {
                            let body = format!("{method} {path} {client}");
                            (format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()), false)
                        }
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The instance's answer to a hostile response case, and whether it closes afterwards.
fn hostile_response(path: &str) -> Option<(String, bool)> {
    let answer = match path {
        "/r-connection-lists-length" => {
            "HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nr1-ok"
        }
        "/r-length-and-chunked" => {
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nr2-ok\r\n0\r\n\r\n"
        }
        "/r-gzip-chunked" => "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nr3-ok\r\n0\r\n\r\n",
        "/r-connection-lists-chunked" => {
            "HTTP/1.1 200 OK\r\nconnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n5\r\nr4-ok\r\n0\r\n\r\n"
        }
        "/r-two-lengths" => "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nr6-ok!",
        "/r-gzip-until-close" => return Some(("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nr5-ok".into(), true)),
        _ => return None,
    };
    Some((answer.to_string(), false))
}

/// A gateway in front of a fresh raw instance.
async fn gateway() -> SocketAddr {
    support::gateway(raw_instance().await, 1).await
}

/// Which of the gateway's paths a client connection is served by.
#[derive(Debug, Clone, Copy)]
enum Path {
    Relay,
    /// A chunked upload first: hyper takes the connection over for good.
    Hyper,
}

async fn connect(gateway: SocketAddr, path: Path, who: &str) -> Client {
    let mut c = Client::connect(gateway).await;
    if let Path::Hyper = path {
        c.send(
            format!(
                "POST /handoff HTTP/1.1\r\nhost: svc.ns.localhost\r\nx-client: {who}\r\n\
                 transfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let answer = c.answer("POST").await;
        assert_eq!(answer.text(), format!("POST /handoff {who}"), "hand-off request");
    }
    c
}

fn honest(path: &str, who: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: svc.ns.localhost\r\nx-client: {who}\r\n\r\n")
}

/// After a hostile exchange: the attacker's honest request on the same connection gets its
/// own answer (or the gateway closed the connection), and a victim on another connection
/// gets its own.
async fn check_followers(gateway: SocketAddr, path: Path, attacker: &mut Client, answer: &Answer, case: &str) {
    if Client::closes(answer) {
        assert!(attacker.closed().await, "{path:?} {case}: closed after an answer that said so");
    } else {
        attacker.send(honest("/honest", "attacker").as_bytes()).await;
        let answer = attacker.answer("GET").await;
        assert_eq!(answer.text(), "GET /honest attacker", "{path:?} {case}: the attacker's next request");
    }
    for n in 0..3 {
        let mut victim = connect(gateway, path, "victim").await;
        victim.send(honest(&format!("/victim-{n}"), "victim").as_bytes()).await;
        let answer = victim.answer("GET").await;
        assert_eq!(answer.text(), format!("GET /victim-{n} victim"), "{path:?} {case}: a victim's answer");
    }
}

/// Hostile requests: `(name, bytes)`. Each sends the body only as its framing says.
fn hostile_requests() -> Vec<(&'static str, String)> {
    let hidden = HIDDEN.len();
    let chunk = format!("{hidden:x}\r\n{HIDDEN}\r\n0\r\n\r\n");
    let base = "host: svc.ns.localhost\r\nx-client: attacker\r\n";
    vec![
        (
            "connection lists content-length",
            format!("POST /c HTTP/1.1\r\n{base}connection: content-length\r\ncontent-length: {hidden}\r\n\r\n{HIDDEN}"),
        ),
        (
            "connection lists Content-Length among others",
            format!(
                "POST /c HTTP/1.1\r\n{base}Connection: keep-alive, Content-Length\r\nContent-Length: {hidden}\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "connection lists transfer-encoding",
            format!(
                "POST /c HTTP/1.1\r\n{base}connection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n{chunk}"
            ),
        ),
        (
            "connection lists host",
            format!("POST /c HTTP/1.1\r\n{base}connection: host\r\ncontent-length: {hidden}\r\n\r\n{HIDDEN}"),
        ),
        (
            "two different content-lengths",
            format!("POST /c HTTP/1.1\r\n{base}content-length: {hidden}\r\ncontent-length: 0\r\n\r\n{HIDDEN}"),
        ),
        (
            "content-length and chunked",
            format!(
                "POST /c HTTP/1.1\r\n{base}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{chunk}",
                chunk.len()
            ),
        ),
        ("a second host", format!("GET /c HTTP/1.1\r\n{base}host: other.ns.localhost\r\n\r\n")),
    ]
}

#[tokio::test]
async fn hostile_requests_reach_the_instance_as_one_request_and_every_client_gets_its_own_answer() {
    let gateway = gateway().await;
    for path in [Path::Relay, Path::Hyper] {
        for (case, bytes) in hostile_requests() {
            let mut attacker = connect(gateway, path, "attacker").await;
            attacker.send(bytes.as_bytes()).await;
            let answer = attacker.answer("POST").await;
            assert!(
                answer.status >= 400
                    || answer.text() == format!("{} /c attacker", &bytes[..bytes.find(' ').unwrap_or(0)]),
                "{path:?} {case}: the attacker gets an answer to its own request: {} {}",
                answer.status,
                answer.text()
            );
            check_followers(gateway, path, &mut attacker, &answer, case).await;
            assert!(!seen_smuggled(), "{path:?} {case}: a body reached the instance as a request");
        }
    }
}

#[tokio::test]
async fn a_connection_field_never_takes_away_the_host() {
    let gateway = gateway().await;
    for path in [Path::Relay, Path::Hyper] {
        let mut c = connect(gateway, path, "a").await;
        c.send(b"GET /hosted HTTP/1.1\r\nhost: svc.ns.localhost\r\nconnection: host, x-client\r\nx-client: a\r\n\r\n")
            .await;
        let answer = c.answer("GET").await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "GET /hosted "), "{path:?}: x-client is dropped");
    }
}

#[tokio::test]
async fn requests_without_exactly_one_host_are_refused() {
    let gateway = gateway().await;
    for path in [Path::Relay, Path::Hyper] {
        for bytes in [
            "GET /f/ns/svc/none HTTP/1.1\r\nx-client: a\r\n\r\n",
            "GET /two HTTP/1.1\r\nhost: svc.ns.localhost\r\nhost: svc.ns.localhost\r\n\r\n",
        ] {
            let mut c = connect(gateway, path, "a").await;
            c.send(bytes.as_bytes()).await;
            let answer = c.answer("GET").await;
            assert_eq!(answer.status, 400, "{path:?} {bytes:?}: {}", answer.text());
            assert!(Client::closes(&answer) && c.closed().await, "{path:?} {bytes:?}: the connection is closed");
        }
    }
}

#[tokio::test]
async fn hostile_response_framings_are_forwarded_so_that_the_client_stays_in_step() {
    let gateway = gateway().await;
    // (path, expected status, expected body, the field the client must see)
    type Case = (&'static str, u16, &'static str, Option<(&'static str, &'static str)>);
    let cases: [Case; 6] = [
        ("/r-connection-lists-length", 200, "r1-ok", Some(("content-length", "5"))),
        ("/r-length-and-chunked", 200, "r2-ok", None),
        ("/r-gzip-chunked", 200, "r3-ok", Some(("transfer-encoding", "gzip, chunked"))),
        ("/r-connection-lists-chunked", 200, "r4-ok", Some(("transfer-encoding", "chunked"))),
        ("/r-two-lengths", 502, "", None),
        ("/r-gzip-until-close", 200, "r5-ok", None),
    ];
    for path in [Path::Relay, Path::Hyper] {
        for (target, status, body, field) in cases {
            let mut c = connect(gateway, path, "a").await;
            c.send(honest(target, "a").as_bytes()).await;
            let answer = c.answer("GET").await;
            assert_eq!(answer.status, status, "{path:?} {target}: {}", answer.text());
            if status == 200 {
                assert_eq!(answer.text(), body, "{path:?} {target}");
                assert!(
                    answer.field("content-length").is_none() || answer.field("transfer-encoding").is_none(),
                    "{path:?} {target}: never both framings: {:?}",
                    answer.fields
                );
            }
            if let Some((name, value)) = field {
                assert_eq!(answer.field(name), Some(value), "{path:?} {target}: {:?}", answer.fields);
            }
            check_followers(gateway, path, &mut c, &answer, target).await;
        }
    }
}

#[tokio::test]
async fn a_malformed_chunked_upload_is_the_clients_fault() {
    let gateway = gateway().await;
    let base = "POST /upload HTTP/1.1\r\nhost: svc.ns.localhost\r\ntransfer-encoding: chunked\r\n\r\n";
    for body in
        ["fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", "3;ext\nmore\r\nabc\r\n0\r\n\r\n", "3\r\nabcdef\r\n0\r\n\r\n"]
    {
        let mut c = Client::connect(gateway).await;
        c.send(format!("{base}{body}").as_bytes()).await;
        let answer = c.answer("POST").await;
        assert_eq!(answer.status, 400, "{body:?}: {}", answer.text());
        assert!(c.closed().await, "{body:?}: the connection is closed");
    }
}
