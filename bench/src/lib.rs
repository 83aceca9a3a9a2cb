//! Shared helpers of serval's benchmarks: locating (and building) the release binaries,
//! running a real `serval server` (through the test kit's harness, as the end-to-end tests
//! do), minimal HTTP/1.1 clients over std sockets (one-shot and
//! keep-alive), statistics.
//!
//! Owns nothing of the product; drives the release binaries, and uses `serval-runtime` only
//! for its test-image builders and bundle generator (the same `config.json` for baselines).

pub mod cpu;
pub mod events;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use serval_testkit::ServerProcess;

/// The release binary `name`, next to this benchmark's own executable; built on demand.
pub fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name(name);
    // Always through cargo (a no-op when they are up to date): a release binary left from an
    // older build would be measured instead of the sources'.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "serval", "-p", "serval-echo"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the release binaries failed");
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Sends one GET on a new connection and reads the whole answer; returns the status code.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    request_on(&mut stream, host, path)
}

fn request_on(stream: &mut TcpStream, host: &str, path: &str) -> std::io::Result<u16> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    status.ok_or_else(|| std::io::Error::other(format!("bad answer: {text:?}")))
}

/// Connects every 100 µs until `addr` accepts, then sends one GET on that connection.
pub fn poll_then_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let began = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                return request_on(&mut stream, "localhost", path);
            }
            Err(e) if began.elapsed() > timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_micros(100)),
        }
    }
}

/// A release `serval server` on loopback port 0 with a temporary data directory (the test
/// kit's [`ServerProcess`]); stopped gracefully on drop.
pub struct ServalServer {
    process: ServerProcess,
    pub api: SocketAddr,
    pub gateway: SocketAddr,
    pub token: String,
    /// Removed after the server stopped (fields drop in order).
    pub dir: tempfile::TempDir,
}

impl ServalServer {
    pub fn start(extra: &[&str]) -> ServalServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let process = ServerProcess::start(&release_binary("serval"), dir.path(), extra, &[]);
        ServalServer {
            api: process.api_addr(),
            gateway: process.gateway_addr(),
            token: process.token.clone(),
            process,
            dir,
        }
    }

    /// The CLI against this server, to spawn.
    pub fn cli_command(&self) -> std::process::Command {
        self.process.cli_command()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.process.cli_command().args(args).output().expect("run serval");
        assert!(out.status.success(), "serval {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET on the API with the token; the JSON answer.
    pub fn api_get(&self, path: &str) -> serde_json::Value {
        self.try_api_get(path).expect("API answer")
    }

    /// [`ServalServer::api_get`] that reports failures instead of panicking, for pollers
    /// running next to a load test.
    pub fn try_api_get(&self, path: &str) -> std::io::Result<serde_json::Value> {
        let mut stream = TcpStream::connect(self.api)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).map_err(std::io::Error::other)
    }
}

impl ServalServer {
    /// PUT of a JSON document on the API with the token; the status code.
    pub fn api_put(&self, path: &str, body: &str) -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(self.api)?;
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        status.ok_or_else(|| std::io::Error::other(format!("bad answer: {answer:?}")))
    }

    /// CPU time (user + system) the server process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.child.id())).unwrap_or_default();
        // After the command's closing parenthesis: state (field 3), ppid, … utime and stime
        // (fields 14 and 15), in clock ticks of 10 ms. Counted by position: some fields
        // (tpgid) can be negative.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let ticks = field(14) + field(15);
        Duration::from_millis(ticks * 10)
    }
}

/// One HTTP/1.1 keep-alive connection to `addr`, opened on first use and again after an
/// error or a `Connection: close` answer. Reads bodies framed by `Content-Length`, chunked
/// encoding, or the end of the connection.
pub struct KeepAliveClient {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far (the first one included).
    pub connects: u64,
}

/// Status and body of one answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl KeepAliveClient {
    /// `timeout` bounds connecting and each read of an answer.
    pub fn new(addr: SocketAddr, host: &str, timeout: Duration) -> KeepAliveClient {
        KeepAliveClient { addr, host: host.into(), timeout, conn: None, connects: 0 }
    }

    /// Sends `GET path` and reads the whole answer. On an error the connection is dropped,
    /// so that the next call reconnects.
    pub fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let result = self.exchange(path);
        match &result {
            Ok((_, keep)) if *keep => {}
            _ => self.conn = None,
        }
        result.map(|(answer, _)| answer)
    }

    fn exchange(&mut self, path: &str) -> std::io::Result<(Answer, bool)> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(self.timeout))?;
                self.connects += 1;
                self.conn.insert(BufReader::new(stream))
            }
        };
        write!(conn.get_mut(), "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host)?;
        read_answer(conn)
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads a line; an empty read (connection closed) is an error.
fn read_line_crlf(conn: &mut impl BufRead, line: &mut String) -> std::io::Result<()> {
    line.clear();
    if conn.read_line(line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads one answer; the flag says whether the connection may be reused.
fn read_answer(conn: &mut BufReader<TcpStream>) -> std::io::Result<(Answer, bool)> {
    let mut line = String::new();
    read_line_crlf(conn, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = !line.starts_with("HTTP/1.0");
    loop {
        read_line_crlf(conn, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad(format!("bad header {header:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| bad(format!("bad length {value:?}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep = !value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            read_line_crlf(conn, &mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    read_line_crlf(conn, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..])?;
            read_line_crlf(conn, &mut line)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((Answer { status, body }, keep))
}

/// Server flags that take an idle service to zero within about 100 ms, for cold starts.
pub const FAST_ZERO: &[&str] =
    &["--stable-window", "100ms", "--scale-to-zero-grace", "0s", "--autoscaler-tick", "100ms", "--grace-period", "1s"];

impl ServalServer {
    /// Waits until `service` (namespace default) serves from its first revision and has no
    /// instance left.
    pub fn wait_for_zero(&self, service: &str) {
        let began = Instant::now();
        loop {
            let s = self.api_get(&format!("/api/v1/namespaces/default/services/{service}"));
            let i = &s["status"]["instances"];
            let first = format!("{service}-00001");
            if s["status"]["latestReadyRevisionName"] == first.as_str()
                && i["ready"] == 0
                && i["starting"] == 0
                && i["inFlight"] == 0
            {
                return;
            }
            assert!(began.elapsed() < Duration::from_secs(30), "service did not scale to zero: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One cold start: waits for zero, lets the stopped instance settle, then times one
    /// `GET /hello` through the gateway on a new connection.
    pub fn cold_request(&self, service: &str, settle: Duration) -> Duration {
        self.wait_for_zero(service);
        std::thread::sleep(settle);
        let began = Instant::now();
        let status =
            http_get(self.gateway, &format!("{service}.default.localhost"), "/hello").expect("serval response");
        let elapsed = began.elapsed();
        assert_eq!(status, 200);
        elapsed
    }
}

/// Sorted copy of `samples` in milliseconds and its percentiles.
pub struct Summary {
    sorted: Vec<f64>,
}

impl Summary {
    pub fn new(samples: &[Duration]) -> Summary {
        let mut sorted: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        sorted.sort_by(f64::total_cmp);
        Summary { sorted }
    }
    pub fn percentile(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.sorted.len() - 1) as f64).round() as usize;
        self.sorted[rank.min(self.sorted.len() - 1)]
    }
    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }
}

/// The median of per-round figures (of an even count, the upper middle one).
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The number after `name` on the command line (`--rounds 3`), or `default`; a value that
/// is not a number stops the benchmark.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}")))
        .unwrap_or(default)
}

pub fn path_display(p: &Path) -> String {
    p.display().to_string()
}
