//! Raw HTTP/1.1 on a socket: a client that sends exact bytes and decodes answers in any
//! framing, and the head reader raw instances use.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads a request head (and nothing more) off `stream`; `None` if it closed first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One response read off a raw connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header fields, names lowercased.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with the bytes it read but did not use yet.
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    pub async fn connect(gateway: SocketAddr) -> Client {
        Client { stream: TcpStream::connect(gateway).await.expect("connect gateway"), buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads more bytes; `false` at end of stream.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response to a request with method `method`, decoding its framing.
    pub async fn answer(&mut self, method: &str) -> Answer {
        let (status, fields, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = response.parse(&self.buf).expect("a valid response head") {
                let fields = response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect::<Vec<_>>();
                break (response.code.expect("status"), fields, n);
            }
            assert!(self.fill().await, "connection closed in the response head");
        };
        self.buf.drain(..head_len);
        let mut answer = Answer { status, fields, body: Vec::new() };
        if method == "HEAD" || status == 204 || status == 304 || status < 200 {
            return answer;
        }
        let te = answer.field("transfer-encoding").map(str::to_owned);
        if te
            .as_deref()
            .is_some_and(|te| te.rsplit(',').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "closed in a chunk size");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed in a chunk");
                }
                answer.body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return answer;
                }
            }
        }
        if let Some(length) = answer.field("content-length").filter(|_| te.is_none()) {
            let length: usize = length.parse().expect("content-length");
            while self.buf.len() < length {
                assert!(self.fill().await, "closed in the body");
            }
            answer.body = self.buf.drain(..length).collect();
            return answer;
        }
        while self.fill().await {}
        answer.body = std::mem::take(&mut self.buf);
        answer
    }

    /// Whether the answer said the connection closes after it.
    pub fn closes(answer: &Answer) -> bool {
        answer.field("connection").is_some_and(|c| c.to_ascii_lowercase().contains("close"))
    }

    /// Whether the gateway closed the connection (nothing more to read).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}
