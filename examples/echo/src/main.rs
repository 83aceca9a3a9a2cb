//! `serval-echo`: the example function that serval's tests, demo and benchmarks
//! deploy.
//!
//! It behaves like any Knative-style workload: it listens for HTTP/1.1 (and h2c,
//! HTTP/2 with prior knowledge, on the same port) on
//! `$BIND_ADDR:$PORT` (defaults `127.0.0.1:8080`), prints
//! `serval-echo listening on ADDR` once bound, and shuts down gracefully on
//! SIGTERM (in-flight requests may finish, for at most 5 s, then it exits 0).
//! It starts in a few milliseconds and uses at most two worker threads, so the
//! platform can run many copies of it.
//!
//! Every request (any method, any path) is answered with a JSON document
//! describing the request and the process: `service`, `revision`,
//! `configuration` (from `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`, `null`
//! when unset), `port`, `pid`, `version` (`HTTP/1.1`, `HTTP/2.0`), `method`, `path`, `query` (the raw query string,
//! `""` when absent), `headers` (name → value, repeated headers joined with
//! `", "`), `body` (UTF-8, lossy), the counters `in_flight` (requests being
//! handled right now, this one included, read just before answering),
//! `max_in_flight` (the highest `in_flight` ever seen) and `requests` (total
//! number of requests, this one included), and `env` (the whole environment).
//!
//! Query parameters, which can be combined (a malformed value answers 400):
//! - `sleep_ms=N`: wait N ms before answering (the request counts as in flight
//!   meanwhile);
//! - `status=N`: answer with status code N;
//! - `bytes=N`: answer with N bytes of `x` (`text/plain`) instead of the JSON,
//!   streamed from a static buffer, for throughput benchmarks.
//!
//! Special paths:
//! - `/echo-body`: streams the request body back unchanged, without buffering
//!   it, with the request's `content-type`;
//! - `/stats`: only the counters `in_flight`, `max_in_flight`, `requests`;
//! - `/hello`: `Hello from <K_SERVICE>!` as `text/plain`;
//! - `/crash`: the process exits at once with code 3, without answering.
//!
//! Environment variables for failure and readiness tests:
//! - `STARTUP_DELAY_MS=N`: sleep N ms before binding the port;
//! - `EXIT_AT_START=N`: print a line to stderr and exit with code N before
//!   binding.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const DEFAULT_BIND_ADDR: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8080;
const MAX_WORKER_THREADS: usize = 2;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Exit code of the `/crash` path.
const CRASH_EXIT_CODE: i32 = 3;
/// Exit code for an unusable configuration (bad `PORT`, ...).
const CONFIG_EXIT_CODE: u8 = 2;

/// Source of the `bytes=N` responses: slices of it are sent without copying.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("serval-echo: {msg}");
            return ExitCode::from(CONFIG_EXIT_CODE);
        }
    };
    if let Some(code) = config.exit_at_start {
        eprintln!("serval-echo: EXIT_AT_START={code}, exiting before binding");
        std::process::exit(code);
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKER_THREADS);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("serval-echo: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("serval-echo: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Settings read from the environment at start-up.
struct Config {
    bind_addr: String,
    port: u16,
    startup_delay: Option<Duration>,
    exit_at_start: Option<i32>,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        Ok(Self {
            bind_addr: env_string("BIND_ADDR").unwrap_or_else(|| DEFAULT_BIND_ADDR.to_owned()),
            port: env_number("PORT")?.unwrap_or(DEFAULT_PORT),
            startup_delay: env_number("STARTUP_DELAY_MS")?.map(Duration::from_millis),
            exit_at_start: env_number("EXIT_AT_START")?,
        })
    }
}

/// A non-empty environment variable.
fn env_string(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// A numeric environment variable: `None` when unset or empty, an error when
/// set to something that does not parse.
fn env_number<T: FromStr>(name: &str) -> Result<Option<T>, String> {
    env_string(name)
        .map(|value| value.trim().parse().map_err(|_| format!("invalid {name}={value:?}: expected a number")))
        .transpose()
}

async fn run(config: Config) -> Result<(), String> {
    // Installed first so that a SIGTERM during the start-up delay is honoured too.
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|err| format!("cannot install the SIGTERM handler: {err}"))?;

    if let Some(delay) = config.startup_delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = sigterm.recv() => {
                eprintln!("serval-echo: SIGTERM, shutting down");
                return Ok(());
            }
        }
    }

    let listener = TcpListener::bind((config.bind_addr.as_str(), config.port))
        .await
        .map_err(|err| format!("cannot bind {}:{}: {err}", config.bind_addr, config.port))?;
    let local_addr = listener.local_addr().map_err(|err| format!("cannot read the bound address: {err}"))?;
    announce(local_addr);

    let state = Arc::new(State::new(local_addr.port()));
    let graceful = GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Best effort: only affects latency.
                    let _ = stream.set_nodelay(true);
                    let state = Arc::clone(&state);
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        // Errors (client resets, malformed requests) only concern
                        // this connection.
                        let _ = conn.await;
                    });
                }
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning.
                    eprintln!("serval-echo: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sigterm.recv() => break,
        }
    }

    eprintln!("serval-echo: SIGTERM, shutting down");
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        eprintln!("serval-echo: requests still in flight after {}s, exiting anyway", SHUTDOWN_GRACE.as_secs());
    }
    Ok(())
}

/// Prints the readiness line on stdout and flushes it (stdout may be a pipe).
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // Nothing useful to do if stdout is closed: the port is what matters.
    let _ = writeln!(out, "serval-echo listening on {addr}");
    let _ = out.flush();
}

/// Per-process counters, shared by all connections.
struct State {
    port: u16,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicU64,
}

impl State {
    fn new(port: u16) -> Self {
        Self { port, in_flight: AtomicUsize::new(0), max_in_flight: AtomicUsize::new(0), requests: AtomicU64::new(0) }
    }

    /// Counts a new request; it stays in flight until the guard is dropped.
    fn begin(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    fn counters(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("in_flight".into(), self.in_flight.load(Ordering::SeqCst).into());
        map.insert("max_in_flight".into(), self.max_in_flight.load(Ordering::SeqCst).into());
        map.insert("requests".into(), self.requests.load(Ordering::SeqCst).into());
        map
    }
}

/// Decrements `in_flight` when the response has been produced.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Query parameters understood by every path.
#[derive(Default)]
struct Params {
    sleep: Option<Duration>,
    status: Option<StatusCode>,
    bytes: Option<u64>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut params = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sleep_ms" => {
                    params.sleep = Some(Duration::from_millis(parse_param(key, value)?));
                }
                "status" => {
                    let code = parse_param(key, value)?;
                    params.status = Some(
                        StatusCode::from_u16(code).map_err(|_| format!("invalid status={value}: not a status code"))?,
                    );
                }
                "bytes" => params.bytes = Some(parse_param(key, value)?),
                // Anything else is only echoed back.
                _ => {}
            }
        }
        Ok(params)
    }
}

fn parse_param<T: FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("invalid {key}={value}: expected a non-negative integer"))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if req.uri().path() == "/crash" {
        eprintln!("serval-echo: /crash requested, exiting with code {CRASH_EXIT_CODE}");
        std::process::exit(CRASH_EXIT_CODE);
    }

    let in_flight = state.begin();
    let params = match Params::parse(req.uri().query()) {
        Ok(params) => params,
        Err(msg) => return Ok(text(StatusCode::BAD_REQUEST, format!("{msg}\n"))),
    };

    let mut response = if req.uri().path() == "/echo-body" {
        if let Some(delay) = params.sleep {
            tokio::time::sleep(delay).await;
        }
        echo_body(req)
    } else {
        // Read the whole body first (also keeps the connection reusable).
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                return Ok(text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {err}\n")));
            }
        };
        if let Some(delay) = params.sleep {
            tokio::time::sleep(delay).await;
        }
        match parts.uri.path() {
            "/stats" => json_response(&Value::Object(state.counters())),
            "/hello" => {
                let service = env_string("K_SERVICE").unwrap_or_else(|| "serval-echo".into());
                text(StatusCode::OK, format!("Hello from {service}!\n"))
            }
            _ => match params.bytes {
                Some(len) => filler(len),
                None => json_response(&echo_document(&state, &parts, &body)),
            },
        }
    };

    if let Some(status) = params.status {
        *response.status_mut() = status;
    }
    drop(in_flight);
    Ok(response)
}

/// The JSON answer describing the request and the process.
fn echo_document(state: &State, parts: &hyper::http::request::Parts, body: &Bytes) -> Value {
    let env: Map<String, Value> = std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), Value::String(value.to_string_lossy().into_owned())))
        .collect();

    let mut doc = json!({
        "service": env_string("K_SERVICE"),
        "revision": env_string("K_REVISION"),
        "configuration": env_string("K_CONFIGURATION"),
        "port": state.port,
        "pid": std::process::id(),
        "version": format!("{:?}", parts.version),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or_default(),
        "headers": headers_json(&parts.headers),
        "body": String::from_utf8_lossy(body),
        "env": env,
    });
    if let Value::Object(map) = &mut doc {
        map.extend(state.counters());
    }
    doc
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<_> =
            headers.get_all(name).iter().map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()).collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(map)
}

fn echo_body(req: Request<Incoming>) -> Response<EchoBody> {
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let mut response = Response::new(EchoBody::Stream(req.into_body()));
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

fn json_response(value: &Value) -> Response<EchoBody> {
    let mut body = serde_json::to_vec(value).expect("a serde_json::Value always serializes");
    body.push(b'\n');
    with_content_type(StatusCode::OK, "application/json", EchoBody::Full(Full::new(body.into())))
}

fn text(status: StatusCode, body: String) -> Response<EchoBody> {
    with_content_type(status, "text/plain; charset=utf-8", EchoBody::Full(Full::new(body.into())))
}

fn filler(len: u64) -> Response<EchoBody> {
    with_content_type(StatusCode::OK, "text/plain", EchoBody::Filler { remaining: len })
}

fn with_content_type(status: StatusCode, content_type: &'static str, body: EchoBody) -> Response<EchoBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Response bodies: buffered, the request body streamed back, or `x` filler.
enum EchoBody {
    Full(Full<Bytes>),
    Stream(Incoming),
    Filler { remaining: u64 },
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
            Self::Filler { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let len = usize::try_from(*remaining).map_or(FILLER.len(), |r| r.min(FILLER.len()));
                *remaining -= len as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..len])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(body) => body.is_end_stream(),
            Self::Stream(body) => body.is_end_stream(),
            Self::Filler { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(body) => body.size_hint(),
            Self::Stream(body) => body.size_hint(),
            Self::Filler { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}
