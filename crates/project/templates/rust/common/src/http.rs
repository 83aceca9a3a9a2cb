//! A small HTTP/1.1 server on the standard library alone: the harness of serval's Rust
//! templates. Edit `src/handler.rs`; this file rarely needs a change.
//!
//! - `PORT`: the port to listen on (default 8080; serval sets it);
//!   `BIND_ADDR`: the address (default 0.0.0.0, every interface).
//! - One thread per connection, keep-alive, `Content-Length` and chunked request bodies,
//!   `Expect: 100-continue`; a handler that panics answers 500.
//! - SIGTERM ends the process at once (serval drains an instance before it stops it).

// Helpers here are for handlers, which need not use them all.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Largest request head, and body, this server reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long a kept-alive connection may stay idle.
const IDLE: Duration = Duration::from_secs(60);

/// An HTTP request as the handler gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Lower-case names; repeated fields joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request of `method` for `target` (a path with an optional `?query`).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            ..Request::default()
        }
    }

    /// A header's value, by any case of its name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find_map(|(k, v)| {
                (percent_decode(&k.replace('+', " ")) == name)
                    .then(|| percent_decode(&v.replace('+', " ")))
            })
    }
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// An `application/json` response of JSON text.
    pub fn json(status: u16, json: impl Into<String>) -> Response {
        Response::new(status)
            .header("content-type", "application/json")
            .body(json.into())
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The body as text (lossy), for tests.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `%XX` decoded; an invalid escape stays as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `handle` on `BIND_ADDR`:`PORT` until the process is stopped.
pub fn serve(name: &str, handle: fn(&Request) -> Response) -> io::Result<()> {
    exit_on_sigterm();
    let address = std::env::var("BIND_ADDR").unwrap_or_else(|_| "0.0.0.0".to_string());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("PORT={port}")))?,
        Err(_) => 8080,
    };
    let listener = TcpListener::bind((address.as_str(), port))?;
    println!("{name} listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = connection(stream, handle) {
                        if e.kind() != io::ErrorKind::WouldBlock
                            && e.kind() != io::ErrorKind::TimedOut
                        {
                            eprintln!("connection: {e}");
                        }
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, say: pause rather than spin.
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

fn connection(stream: TcpStream, handle: fn(&Request) -> Response) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let (request, keep_alive) = match read_request(&mut reader, &mut writer) {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let response = Response::text(400, format!("bad request: {e}\n"));
                return write_response(&mut writer, "GET", &response, false);
            }
            Err(e) => return Err(e),
        };
        let response = catch_unwind(AssertUnwindSafe(|| handle(&request)))
            .unwrap_or_else(|_| Response::text(500, "internal error\n"));
        println!(
            "\"{} {}\" {}",
            request.method, request.path, response.status
        );
        write_response(&mut writer, &request.method, &response, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// One line of the head, without its line end; `None` at the end of the stream.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if read > *budget || !line.ends_with(b"\n") {
        return Err(invalid("request head too large or cut short"));
    }
    *budget -= read;
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("request head is not UTF-8"))
}

/// The next request of a connection and whether the connection stays open after it.
fn read_request(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
) -> io::Result<Option<(Request, bool)>> {
    let mut budget = MAX_HEAD;
    let Some(line) = read_line(reader, &mut budget)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("request line {line:?}")));
    };
    let mut request = Request::new(method, target);
    loop {
        let line =
            read_line(reader, &mut budget)?.ok_or_else(|| invalid("request head cut short"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line {line:?}")))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        request
            .headers
            .entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    let connection = request
        .header("connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep_alive = match version {
        "HTTP/1.1" => !connection.contains("close"),
        "HTTP/1.0" => connection.contains("keep-alive"),
        other => return Err(invalid(format!("version {other:?}"))),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = match request.header("content-length") {
        Some(n) if !chunked => n
            .parse::<usize>()
            .map_err(|_| invalid(format!("content-length {n:?}")))?,
        _ => 0,
    };
    if length > MAX_BODY {
        return Err(invalid("request body too large"));
    }
    if (chunked || length > 0)
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if chunked {
        request.body = read_chunked(reader)?;
    } else {
        request.body = vec![0; length];
        reader.read_exact(&mut request.body)?;
    }
    Ok(Some((request, keep_alive)))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_HEAD;
        let line =
            read_line(reader, &mut budget)?.ok_or_else(|| invalid("chunked body cut short"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {size:?}")))?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while read_line(reader, &mut budget)?.is_some_and(|l| !l.is_empty()) {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    writer: &mut impl Write,
    method: &str,
    response: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection")
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n", response.body.len()));
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    writer.write_all(&out)?;
    writer.flush()
}

/// Exits at once on SIGTERM, also as a container's first process (which the kernel does
/// not stop for a signal it has no handler for). The standard library has no signal API:
/// these are the C library's `signal` and `_exit`.
#[cfg(unix)]
fn exit_on_sigterm() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn on_sigterm(_: i32) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }
    const SIGTERM: i32 = 15;
    // SAFETY: the handler only calls _exit.
    unsafe { signal(SIGTERM, on_sigterm) };
}

#[cfg(not(unix))]
fn exit_on_sigterm() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> io::Result<Option<(Request, bool)>> {
        read_request(&mut raw.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn reads_a_request_with_a_chunked_body() {
        let raw = "POST /a?x=1%202 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n";
        let (request, keep_alive) = read(raw).expect("valid").expect("a request");
        assert!(keep_alive);
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/a")
        );
        assert_eq!(request.query_param("x").as_deref(), Some("1 2"));
        assert_eq!(request.header("X-A"), Some("1, 2"));
        assert_eq!(request.body, b"abcde");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let err = read("nonsense\r\n\r\n").expect_err("bad request line");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (_, keep_alive) = read("GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("a request");
        assert!(!keep_alive);
        assert!(read("").expect("end of stream").is_none());
    }
}
