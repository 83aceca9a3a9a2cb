//! Integration tests for `serval-echo`: each test starts the real binary on a
//! free port and talks to it with a tiny std-only HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_serval-echo");
const START_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `serval-echo`; killed (and reaped) when dropped.
struct Server {
    child: Child,
    port: u16,
    /// Stdout after the readiness line, once `wait_ready` read that line.
    stdout: Option<BufReader<ChildStdout>>,
    announced: String,
}

impl Server {
    /// Starts the binary and waits until it accepts connections. A free port is only free
    /// when it is drawn: a test running beside this one may draw the same port and bind it
    /// first, and then this server exits; it is started again on another port.
    fn start(envs: &[(&str, &str)]) -> Self {
        for _ in 0..5 {
            let mut server = Self::spawn(envs);
            if server.wait_ready() {
                return server;
            }
        }
        panic!("serval-echo could not bind a free port in 5 attempts");
    }

    /// Starts the binary without waiting for it.
    fn spawn(envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .env("PORT", port.to_string())
            .env("K_SERVICE", "echo-test")
            .env("K_REVISION", "echo-test-00001")
            .env("K_CONFIGURATION", "echo-test")
            .env_remove("BIND_ADDR")
            .env_remove("STARTUP_DELAY_MS")
            .env_remove("EXIT_AT_START")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serval-echo");
        Self { child, port, stdout: None, announced: String::new() }
    }

    /// Waits until this server accepts connections; `false` when it could not bind its
    /// port because something else holds it.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Someone accepts on the port: it is this server only if it announces it.
                let mut stdout = BufReader::new(self.child.stdout.take().expect("stdout piped"));
                stdout.read_line(&mut self.announced).expect("read stdout");
                self.stdout = Some(stdout);
                if self.announced.is_empty() {
                    let status = self.wait_exit();
                    let (_, stderr) = self.output();
                    assert!(stderr.contains("cannot bind"), "serval-echo exited ({status}): {stderr}");
                    return false;
                }
                return true;
            }
            if let Some(status) = self.child.try_wait().expect("poll serval-echo") {
                let (_, stderr) = self.output();
                if stderr.contains("cannot bind") {
                    return false;
                }
                panic!("serval-echo exited before accepting connections: {status}: {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "serval-echo did not accept connections on port {} within {START_TIMEOUT:?}",
                self.port
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get(&self, target: &str) -> HttpResponse {
        request(self.port, "GET", target, &[], b"")
    }

    fn get_json(&self, target: &str) -> Value {
        let response = self.get(target);
        assert_eq!(response.status, 200, "GET {target}: {}", response.text());
        response.json()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll serval-echo") {
                return status;
            }
            assert!(Instant::now() < deadline, "serval-echo did not exit within {EXIT_TIMEOUT:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stdout and stderr; only call once the process has exited.
    fn output(&mut self) -> (String, String) {
        let mut stdout = std::mem::take(&mut self.announced);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.stdout.take() {
            pipe.read_to_string(&mut stdout).expect("read stdout");
        }
        if let Some(mut pipe) = self.child.stdout.take() {
            pipe.read_to_string(&mut stdout).expect("read stdout");
        }
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("read stderr");
        }
        (stdout, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors mean it has already exited (and maybe been reaped).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port address").port()
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| panic!("invalid JSON ({err}): {}", self.text()))
    }
}

/// One request on a fresh connection with `Connection: close`.
fn request(port: u16, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    try_request(port, method, target, headers, body).unwrap_or_else(|err| panic!("{method} {target}: {err}"))
}

fn try_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|err| format!("connect: {err}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|err| err.to_string())?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|err| err.to_string())?;

    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    // Write from another thread: the server may stream its answer back while
    // the request body is still being sent (`/echo-body`).
    let raw = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut out = &stream;
            out.write_all(head.as_bytes())?;
            out.write_all(body)?;
            out.flush()
        });
        let mut raw = Vec::new();
        let read = (&stream).read_to_end(&mut raw);
        let written = writer.join().expect("writer thread panicked");
        read.map_err(|err| format!("read: {err}"))?;
        written.map_err(|err| format!("write: {err}"))?;
        Ok::<_, String>(raw)
    })?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        format!("no complete response head in {} bytes: {:?}", raw.len(), String::from_utf8_lossy(raw))
    })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = HttpResponse { status, headers, body: raw[end + 4..].to_vec() };
    if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        response.body = dechunk(&response.body)?;
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len}"))?;
        if response.body.len() != len {
            return Err(format!("content-length {len} but {} body bytes", response.body.len()));
        }
    }
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunk size")?;
        let size_line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn send_sigterm(pid: u32) {
    let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed: {status}");
}

#[test]
fn json_echo_describes_the_request_and_the_process() {
    let server = Server::start(&[]);
    let response = request(
        server.port,
        "POST",
        "/some/path?x=1&y=two",
        &[("X-Test", "yes"), ("Content-Type", "text/plain")],
        b"hello body",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));

    let doc = response.json();
    assert_eq!(doc["service"], "echo-test");
    assert_eq!(doc["revision"], "echo-test-00001");
    assert_eq!(doc["configuration"], "echo-test");
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/some/path");
    assert_eq!(doc["query"], "x=1&y=two");
    assert_eq!(doc["headers"]["x-test"], "yes");
    assert_eq!(doc["body"], "hello body");
    assert_eq!(doc["port"], u64::from(server.port));
    assert_eq!(doc["pid"], u64::from(server.pid()));
    assert_eq!(doc["env"]["K_SERVICE"], "echo-test");
    assert_eq!(doc["env"]["PORT"], server.port.to_string());
    assert_eq!(doc["in_flight"], 1);
    assert_eq!(doc["max_in_flight"], 1);
    assert_eq!(doc["requests"], 1);

    let doc = server.get_json("/");
    assert_eq!(doc["method"], "GET");
    assert_eq!(doc["path"], "/");
    assert_eq!(doc["query"], "");
    assert_eq!(doc["requests"], 2);
}

#[test]
fn hello_stats_and_bytes() {
    let server = Server::start(&[]);

    let hello = server.get("/hello");
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello from echo-test!\n");
    assert!(hello.header("content-type").is_some_and(|ct| ct.starts_with("text/plain")));

    let filler = server.get("/?bytes=200000");
    assert_eq!(filler.status, 200);
    assert_eq!(filler.body.len(), 200_000);
    assert!(filler.body.iter().all(|&b| b == b'x'));
    assert_eq!(server.get("/?bytes=0").body.len(), 0);

    let stats = server.get_json("/stats");
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["in_flight"], 1);
    assert!(stats.get("env").is_none(), "/stats has only counters: {stats}");
}

#[test]
fn sleep_ms_delays_the_answer() {
    let server = Server::start(&[]);
    let started = Instant::now();
    let doc = server.get_json("/?sleep_ms=300");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "answered after {elapsed:?}");
    assert_eq!(doc["query"], "sleep_ms=300");
}

#[test]
fn status_query_sets_the_status_code() {
    let server = Server::start(&[]);
    let response = server.get("/?status=418");
    assert_eq!(response.status, 418);
    assert_eq!(response.json()["path"], "/");

    let started = Instant::now();
    let response = server.get("/hello?status=503&sleep_ms=100");
    assert_eq!(response.status, 503);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(response.text(), "Hello from echo-test!\n");

    assert_eq!(server.get("/?status=abc").status, 400);
    assert_eq!(server.get("/?status=42").status, 400);
}

#[test]
fn echo_body_returns_the_posted_body() {
    let server = Server::start(&[]);

    let response = request(server.port, "POST", "/echo-body", &[("Content-Type", "text/csv")], b"a,b\n1,2\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/csv"));
    assert_eq!(response.body, b"a,b\n1,2\n");

    // Large enough that it cannot be answered without streaming both ways.
    let big: Vec<u8> = (0..4 * 1024 * 1024_u32).map(|i| u8::try_from(i % 251).expect("below 256")).collect();
    let response = request(server.port, "PUT", "/echo-body", &[("Content-Type", "application/octet-stream")], &big);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/octet-stream"));
    assert!(response.body == big, "echoed body differs");
}

#[test]
fn concurrent_requests_raise_max_in_flight() {
    const CONCURRENCY: usize = 5;
    let server = Server::start(&[]);
    let port = server.port;
    let barrier = Arc::new(Barrier::new(CONCURRENCY));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                request(port, "GET", "/?sleep_ms=200", &[], b"").json()
            })
        })
        .collect();
    let docs: Vec<Value> = workers.into_iter().map(|worker| worker.join().expect("request thread panicked")).collect();

    let max_seen = docs.iter().filter_map(|doc| doc["max_in_flight"].as_u64()).max();
    assert_eq!(max_seen, Some(5), "responses: {docs:?}");

    let stats = server.get_json("/stats");
    assert_eq!(stats["max_in_flight"], 5);
    assert_eq!(stats["in_flight"], 1);
    assert_eq!(stats["requests"], 6);
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let mut server = Server::start(&[]);
    let port = server.port;
    let slow = thread::spawn(move || request(port, "GET", "/?sleep_ms=700", &[], b""));

    // Wait until the slow request is being handled (`/stats` counts itself).
    let deadline = Instant::now() + START_TIMEOUT;
    while server.get_json("/stats")["in_flight"] != 2 {
        assert!(Instant::now() < deadline, "slow request never started");
        thread::sleep(Duration::from_millis(10));
    }

    send_sigterm(server.pid());
    let status = server.wait_exit();
    let slow = slow.join().expect("slow request thread panicked");
    assert_eq!(slow.status, 200, "in-flight request was cut: {}", slow.text());
    assert_eq!(status.code(), Some(0), "exit status {status}");

    let (stdout, stderr) = server.output();
    assert_eq!(stdout, format!("serval-echo listening on 127.0.0.1:{port}\n"));
    assert!(stderr.contains("serval-echo: SIGTERM, shutting down"), "stderr: {stderr}");
}

#[test]
fn crash_path_exits_with_code_3() {
    let mut server = Server::start(&[]);
    let result = try_request(server.port, "GET", "/crash", &[], b"");
    assert!(result.is_err(), "/crash answered");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(3), "exit status {status}");
}

#[test]
fn exit_at_start_exits_with_the_given_code() {
    let mut server = Server::spawn(&[("EXIT_AT_START", "7")]);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(7), "exit status {status}");
    let (stdout, stderr) = server.output();
    assert_eq!(stdout, "", "must exit before binding");
    assert!(!stderr.is_empty(), "must explain itself on stderr");
}

#[test]
fn startup_delay_postpones_binding() {
    let started = Instant::now();
    let server = Server::start(&[("STARTUP_DELAY_MS", "400")]);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "accepted after {elapsed:?}");
    assert_eq!(server.get_json("/")["service"], "echo-test");
}
