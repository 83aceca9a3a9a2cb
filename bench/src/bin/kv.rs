//! Key-value stores (issue 18): get, put and increment throughput and latency at the
//! address a function gets, against the same load on the API's `GET /healthz` (the same axum
//! server, no store work) and, for writes, the machine's raw SQLite rate of one insert +
//! fsync per row.
//!
//! `cargo run --release -p serval-bench --bin kv [-- --rounds R --duration S --concurrency N --threads T --keys K --value-bytes B --only healthz|get|put|increment]`
//!
//! A release `serval server` runs `examples/echo` (`serval deploy kvbench --cmd
//! serval-echo`); one `serval invoke` returns the function's environment, whose
//! `SERVAL_KV_URL` and `SERVAL_KV_TOKEN` the load uses (the store is `default`, which every
//! namespace has). K keys (default 10 000) of B bytes (default 100) are written first. Then
//! R rounds (default 3, each starting with the next scenario) of D seconds (default 5) per
//! scenario, N keep-alive HTTP/1.1 connections (default 32) sending back to back (closed
//! loop) from T threads of this process (default 1, a single-threaded tokio runtime each):
//!
//! 1. `GET /healthz` on the API listener (baseline);
//! 2. `GET /kv/<ns>/default/<key>` of a random existing key (200 with the value);
//! 3. `PUT` of B bytes to a new key each time, unconditional (201 after the group commit);
//! 4. `POST /kv/<ns>/default/hot:increment` of one key by every connection (compare-and-set
//!    in the store).
//!
//! Ops/s, p50 and p99 per round; the table shows medians over the rounds, the range of
//! ops/s, and CPU per operation of the server and of this load generator (`/proc`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serval_bench::{ServalServer, Summary, release_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Single-row transactions with fsync (WAL, synchronous=FULL): what a store without group
/// commit could acknowledge.
fn raw_sqlite_rate(n: usize, value_bytes: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    conn.execute_batch("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL)")
        .expect("table");
    let value = vec![b'v'; value_bytes];
    let began = Instant::now();
    for i in 0..n {
        conn.execute("INSERT INTO kv (key, value, version) VALUES (?1, ?2, 1)", (format!("k{i}"), &value))
            .expect("insert");
    }
    n as f64 / began.elapsed().as_secs_f64()
}

/// CPU time (user + system) of process `pid` so far (`/proc/<pid>/stat`, 10 ms ticks), as
/// [`ServalServer::cpu_time`] reads the server's.
fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(14) + field(15)) * 10)
}

// ---------------------------------------------------------------------------------------
// The load generator: raw HTTP/1.1 on keep-alive connections, answers framed by
// Content-Length (every answer of these endpoints has one).

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(8192) })
    }

    /// Sends `request` and reads one answer: its status and body.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let (status, length) = parse_head(&self.buf[..end])?;
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Status and `Content-Length` of an answer's head.
fn parse_head(head: &[u8]) -> std::io::Result<(u16, usize)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let text = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(format!("{name}: {value} answers are not read by this benchmark")));
        }
    }
    Ok((status, length.unwrap_or(0)))
}

/// What one connection sends as its `n`-th request (from 0), given a per-connection random
/// number; `None` ends the connection's run.
type Requests = dyn Fn(usize, u64, u64) -> Option<Vec<u8>> + Send + Sync;

struct Load {
    addr: SocketAddr,
    threads: usize,
    connections: usize,
    /// The expected status; anything else counts as an error.
    status: u16,
    /// The expected body length, if checked.
    body_len: Option<usize>,
    duration: Duration,
    requests: Arc<Requests>,
}

struct Run {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

static REPORTED: AtomicU64 = AtomicU64::new(0);

fn report(what: String) {
    if REPORTED.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("unexpected answer: {what}");
    }
}

/// One connection sending back to back until `deadline` or until its requests end.
async fn connection(load: Arc<Load>, id: usize, deadline: Instant) -> (u64, u64, Vec<Duration>) {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) * 0xD1B5_4A32_D192_ED03);
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let Some(request) = (load.requests)(id, n, rng) else { break };
        n += 1;
        let began = Instant::now();
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::open(load.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    report(format!("connect: {e}"));
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match c.exchange(&request).await {
            Ok((status, body)) if status == load.status && load.body_len.is_none_or(|l| l == body.len()) => {
                latencies.push(began.elapsed());
            }
            Ok((status, body)) => {
                report(format!("{status}: {}", String::from_utf8_lossy(&body)));
                errors += 1;
            }
            Err(e) => {
                report(format!("{e}"));
                errors += 1;
                conn = None;
            }
        }
    }
    (latencies.len() as u64, errors, latencies)
}

/// Runs `load`: its connections spread over its threads, each thread a single-threaded
/// runtime.
fn run(load: Load) -> Run {
    let load = Arc::new(load);
    let began = Instant::now();
    let deadline = began + load.duration;
    let threads: Vec<_> = (0..load.threads)
        .map(|t| {
            let load = load.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("load runtime");
                runtime.block_on(async move {
                    let tasks: Vec<_> = (t..load.connections)
                        .step_by(load.threads)
                        .map(|id| tokio::spawn(connection(load.clone(), id, deadline)))
                        .collect();
                    let mut results = Vec::new();
                    for task in tasks {
                        results.push(task.await.expect("connection task"));
                    }
                    results
                })
            })
        })
        .collect();
    let mut total = Run { ops: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for thread in threads {
        for (ops, errors, latencies) in thread.join().expect("load thread") {
            total.ops += ops;
            total.errors += errors;
            total.latencies.extend(latencies);
        }
    }
    total.elapsed = began.elapsed();
    total
}

// ---------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Healthz,
    Get,
    Put,
    Increment,
}

const SCENARIOS: [Scenario; 4] = [Scenario::Healthz, Scenario::Get, Scenario::Put, Scenario::Increment];

impl Scenario {
    /// As `--only` names it.
    fn key(self) -> &'static str {
        match self {
            Scenario::Healthz => "healthz",
            Scenario::Get => "get",
            Scenario::Put => "put",
            Scenario::Increment => "increment",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Healthz => "`GET /healthz` (baseline)",
            Scenario::Get => "KV get, random existing key",
            Scenario::Put => "KV put, new key each (durable)",
            Scenario::Increment => "KV increment, one hot key",
        }
    }
}

/// Where the load goes and with what.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// `/kv/<ns>/default`.
    store_path: String,
    token: String,
    keys: usize,
    value: Arc<Vec<u8>>,
}

impl Target {
    fn head(&self, method: &str, path: &str, length: Option<usize>) -> Vec<u8> {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n", self.addr, self.token);
        if let Some(length) = length {
            head.push_str(&format!("Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn put(&self, key: &str) -> Vec<u8> {
        let mut request = self.head("PUT", &format!("{}/{key}", self.store_path), Some(self.value.len()));
        request.extend_from_slice(&self.value);
        request
    }

    fn load(&self, scenario: Scenario, round: usize, threads: usize, connections: usize, duration: Duration) -> Load {
        let target = self.clone();
        let (status, body_len, requests): (u16, Option<usize>, Arc<Requests>) = match scenario {
            Scenario::Healthz => {
                let request = target.head("GET", "/healthz", None);
                (200, None, Arc::new(move |_, _, _| Some(request.clone())))
            }
            Scenario::Get => {
                let keys = target.keys as u64;
                let value_len = target.value.len();
                (
                    200,
                    Some(value_len),
                    Arc::new(move |_, _, random| {
                        Some(target.head("GET", &format!("{}/k{}", target.store_path, random % keys), None))
                    }),
                )
            }
            Scenario::Put => (201, None, Arc::new(move |id, n, _| Some(target.put(&format!("w{round}-{id}-{n}"))))),
            Scenario::Increment => {
                let mut request = target.head("POST", &format!("{}/hot:increment", target.store_path), Some(1));
                request.push(b'1');
                (200, None, Arc::new(move |_, _, _| Some(request.clone())))
            }
        };
        Load { addr: self.addr, threads, connections, status, body_len, duration, requests }
    }

    /// Writes keys `k0`..`k{keys-1}` from `connections` connections.
    fn fill(&self, connections: usize) -> Run {
        let next = Arc::new(AtomicU64::new(0));
        let target = self.clone();
        let keys = self.keys as u64;
        let requests: Arc<Requests> = Arc::new(move |_, _, _| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            (i < keys).then(|| target.put(&format!("k{i}")))
        });
        run(Load {
            addr: self.addr,
            threads: 1,
            connections,
            status: 201,
            body_len: None,
            duration: Duration::from_secs(600),
            requests,
        })
    }
}

/// One round of one scenario.
struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    server_cpu_us: f64,
    load_cpu_us: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Parses `http://<addr>/kv/<ns>` into the address and the path.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("SERVAL_KV_URL is http://");
    let (authority, path) = rest.split_once('/').expect("SERVAL_KV_URL has a path");
    let addr = authority.parse().expect("SERVAL_KV_URL names an IP address and port");
    (addr, format!("/{path}"))
}

fn number<T: std::str::FromStr>(value: Option<String>, what: &str) -> T {
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what}"))
}

fn main() {
    let mut rounds = 3usize;
    let mut seconds = 5u64;
    let mut connections = 32usize;
    let mut threads = 1usize;
    let mut keys = 10_000usize;
    let mut value_bytes = 100usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = number(args.next(), "--rounds R"),
            "--duration" => seconds = number(args.next(), "--duration S"),
            "--concurrency" => connections = number(args.next(), "--concurrency N"),
            "--threads" => threads = number(args.next(), "--threads T"),
            "--keys" => keys = number(args.next(), "--keys K"),
            "--value-bytes" => value_bytes = number(args.next(), "--value-bytes B"),
            "--only" => only = args.next(),
            other => panic!(
                "unknown argument {other} (use --rounds R --duration S --concurrency N --threads T --keys K --value-bytes B --only healthz|get|put|increment)"
            ),
        }
    }
    assert!(
        only.as_deref().is_none_or(|o| SCENARIOS.iter().any(|s| s.key() == o)),
        "--only takes healthz, get, put or increment"
    );
    assert!(rounds > 0 && seconds > 0 && connections > 0 && threads > 0 && keys > 0, "arguments must be above 0");
    let duration = Duration::from_secs(seconds);
    let raw = raw_sqlite_rate(2000, value_bytes);

    // Started on the main thread: the server exits with the thread that spawned it.
    let server = ServalServer::start(&[]);
    let echo = release_binary("serval-echo");
    server.cli(&["deploy", "kvbench", "--cmd", &echo.display().to_string()]);
    let answer: serde_json::Value =
        serde_json::from_str(&server.cli(&["invoke", "kvbench"])).expect("the echo answers JSON");
    let env = &answer["env"];
    let url = env["SERVAL_KV_URL"].as_str().expect("SERVAL_KV_URL in the function's environment");
    let token = env["SERVAL_KV_TOKEN"].as_str().expect("SERVAL_KV_TOKEN in the function's environment");
    let (addr, namespace_path) = split_url(url);
    assert_eq!(addr, server.api, "SERVAL_KV_URL names the API listener");
    let target = Target {
        addr,
        store_path: format!("{namespace_path}/default"),
        token: token.to_string(),
        keys,
        value: Arc::new(vec![b'v'; value_bytes]),
    };

    println!(
        "key-value stores: {url}/default as function kvbench gets it; {connections} keep-alive connections from \
         {threads} load thread(s), {rounds} rounds of {seconds} s per scenario, values of {value_bytes} B"
    );
    let fill = target.fill(connections);
    assert_eq!(fill.ops as usize, keys, "writing the {keys} keys ({} errors)", fill.errors);
    println!("wrote {keys} keys in {:.2} s ({:.0} puts/s)", fill.elapsed.as_secs_f64(), fill.rate());

    // Warm-up: connections, caches, the allocator.
    for scenario in [Scenario::Healthz, Scenario::Get] {
        run(target.load(scenario, 0, threads, connections, Duration::from_secs(1)));
    }

    let mut results: Vec<Vec<Measured>> = SCENARIOS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..SCENARIOS.len() {
            let i = (round + k) % SCENARIOS.len();
            let scenario = SCENARIOS[i];
            if only.as_deref().is_some_and(|o| o != scenario.key()) {
                continue;
            }
            let (server_before, load_before) = (server.cpu_time(), cpu_of("self"));
            let measured = run(target.load(scenario, round, threads, connections, duration));
            let (server_cpu, load_cpu) = (server.cpu_time() - server_before, cpu_of("self") - load_before);
            let summary = Summary::new(&measured.latencies);
            let per_op = |cpu: Duration| cpu.as_secs_f64() * 1e6 / measured.ops.max(1) as f64;
            let m = Measured {
                rate: measured.rate(),
                p50: summary.median(),
                p99: summary.percentile(99.0),
                errors: measured.errors,
                server_cpu_us: per_op(server_cpu),
                load_cpu_us: per_op(load_cpu),
            };
            println!(
                "round {} {:<34} {:>8.0} ops/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {}  CPU/op: server {:.1} µs, load {:.1} µs",
                round + 1,
                scenario.name(),
                m.rate,
                m.p50,
                m.p99,
                m.errors,
                m.server_cpu_us,
                m.load_cpu_us
            );
            results[i].push(m);
        }
    }

    if only.is_some() {
        drop(server);
        return;
    }
    let stats: Vec<_> = results
        .iter()
        .map(|runs| {
            let pick = |f: fn(&Measured) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let low = runs.iter().map(|m| m.rate).fold(f64::INFINITY, f64::min);
            let high = runs.iter().map(|m| m.rate).fold(0.0, f64::max);
            let errors: u64 = runs.iter().map(|m| m.errors).sum();
            (
                pick(|m| m.rate),
                low,
                high,
                pick(|m| m.p50),
                pick(|m| m.p99),
                pick(|m| m.server_cpu_us),
                pick(|m| m.load_cpu_us),
                errors,
            )
        })
        .collect();
    let baseline = stats[0].0;
    println!();
    println!(
        "| operation | ops/s (median, range) | p50 | p99 | errors | server CPU/op | load CPU/op | vs baseline | target | met |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, &(rate, low, high, p50, p99, server_cpu, load_cpu, errors)) in SCENARIOS.iter().zip(&stats) {
        let (versus, target, met) = match scenario {
            Scenario::Healthz => ("1.00".to_string(), "-", "-"),
            Scenario::Get => (
                format!("{:.2} × healthz", rate / baseline),
                "≥ 20 000 ops/s",
                if rate >= 20_000.0 && errors == 0 { "PASS" } else { "FAIL" },
            ),
            Scenario::Put | Scenario::Increment => (format!("{:.1} × raw SQLite", rate / raw), "-", "-"),
        };
        println!(
            "| {} | {rate:.0} ({low:.0}–{high:.0}) | {p50:.2} ms | {p99:.2} ms | {errors} | {server_cpu:.1} µs | {load_cpu:.1} µs | {versus} | {target} | {met} |",
            scenario.name()
        );
    }
    println!(
        "| raw SQLite, one insert + fsync per row (baseline for writes) | {raw:.0} | - | - | - | - | - | - | - | - |"
    );
    drop(server);
}
