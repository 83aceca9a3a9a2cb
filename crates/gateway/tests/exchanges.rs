//! Whole-message exchanges (the client of event delivery) against a real loopback server
//! whose answers are written byte for byte, so that each framing and each way of closing a
//! connection is the one the test names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serval_gateway::{Exchanges, WholeResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request off `stream` (after `buf`'s bytes): its target and body. `None`: the
/// client closed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).expect("text head");
            let target = head.split(' ').nth(1).expect("request line").to_string();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(": "))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse::<usize>().expect("length"));
            while buf.len() < end + 4 + length {
                let mut more = [0u8; 4096];
                let n = stream.read(&mut more).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&more[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some((target, body));
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// A server answering by path with fixed bytes; counts the connections it accepts.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((target, body)) = read_request(&mut stream, &mut buf).await {
                    let (answer, then_close): (Vec<u8>, bool) = match target.as_str() {
                        "/length" => (b"HTTP/1.1 200 OK\r\nce-id: 7\r\ncontent-length: 5\r\n\r\nhello".to_vec(), false),
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/until-close" => (b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec(), true),
                        "/continue" => {
                            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
                        }
                        "/close" => (b"HTTP/1.1 202 Accepted\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(), true),
                        "/big" => {
                            let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
                            big.extend_from_slice(&[b'x'; 100]);
                            (big, false)
                        }
                        "/echo" => {
                            let mut echo = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                            echo.extend_from_slice(&body);
                            (echo, false)
                        }
                        "/idle-close" => {
                            // Answers, then closes the kept-alive connection while it is idle.
                            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                        _ => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(), false),
                    };
                    if stream.write_all(&answer).await.is_err() || then_close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn post(exchanges: &Exchanges, addr: SocketAddr, target: &str, body: &[u8]) -> WholeResponse {
    try_post(exchanges, addr, target, body, 1024).await.expect("an answer")
}

async fn try_post(
    exchanges: &Exchanges,
    addr: SocketAddr,
    target: &str,
    body: &[u8],
    max_body: usize,
) -> Result<WholeResponse, serval_gateway::GatewayError> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_str(&addr.to_string()).expect("host"));
    headers.insert("ce-id", HeaderValue::from_static("1"));
    exchanges.send(&addr.to_string(), &Method::POST, target, &headers, body, max_body).await
}

#[tokio::test]
async fn answers_are_read_whole_in_each_framing() {
    let (addr, accepted) = server().await;
    let exchanges = Exchanges::new(16, Duration::from_secs(5));
    let length = post(&exchanges, addr, "/length", b"{}").await;
    assert_eq!((length.status, &length.body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(length.headers.get("ce-id").and_then(|v| v.to_str().ok()), Some("7"));
    let chunked = post(&exchanges, addr, "/chunked", b"{}").await;
    assert_eq!((chunked.status, &chunked.body[..]), (StatusCode::OK, &b"hello"[..]), "decoded, trailers dropped");
    let interim = post(&exchanges, addr, "/continue", b"{}").await;
    assert_eq!((interim.status, &interim.body[..]), (StatusCode::CREATED, &b"ok"[..]), "after a 100");
    let echo = post(&exchanges, addr, "/echo", b"the body").await;
    assert_eq!(&echo.body[..], b"the body");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "kept alive: one connection for all four");
    let until_close = post(&exchanges, addr, "/until-close", b"{}").await;
    assert_eq!(&until_close.body[..], b"hello", "a body delimited by the close");
    post(&exchanges, addr, "/length", b"{}").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the closed connection was not reused");
}

#[tokio::test]
async fn connections_the_subscriber_closes_are_not_reused() {
    let (addr, accepted) = server().await;
    let exchanges = Exchanges::new(16, Duration::from_secs(5));
    for _ in 0..3 {
        assert_eq!(post(&exchanges, addr, "/close", b"{}").await.status, StatusCode::ACCEPTED);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "connection: close each time");
    assert_eq!(post(&exchanges, addr, "/idle-close", b"{}").await.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(&exchanges, addr, "/length", b"{}").await.status, StatusCode::OK, "not on the closed one");
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_answer_over_the_bound_fails_and_nothing_else_does() {
    let (addr, accepted) = server().await;
    let exchanges = Exchanges::new(16, Duration::from_secs(5));
    assert!(try_post(&exchanges, addr, "/big", b"{}", 10).await.is_err());
    assert_eq!(try_post(&exchanges, addr, "/big", b"{}", 100).await.expect("at the bound").body.len(), 100);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the failed exchange's connection was closed");
    let nobody = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = nobody.local_addr().expect("addr");
    drop(nobody);
    assert!(try_post(&exchanges, gone, "/length", b"{}", 10).await.is_err(), "nothing listens");
}
