//! Helpers for end-to-end tests: a real `serval server` process on port 0 with a temporary
//! data directory, the CLI run as a real process, and the example function's path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
#[allow(unused_imports)]
pub use serval_testkit::{ServerProcess, stop_gracefully};

pub fn serval_bin() -> &'static str {
    env!("CARGO_BIN_EXE_serval")
}

/// The example function (`examples/echo`), built beside `serval`.
pub fn echo_bin() -> PathBuf {
    let path = Path::new(serval_bin()).with_file_name("serval-echo");
    if !path.exists() {
        // `cargo test --workspace` builds it; a lone `cargo test -p serval` may not have.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "serval-echo"]);
        if path.parent().is_some_and(|d| d.ends_with("release")) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building serval-echo failed");
    }
    path
}

/// The example function's path as a `--cmd` word.
pub fn echo() -> String {
    echo_bin().display().to_string()
}

/// Server flags that take an idle service to zero within about a second.
pub const FAST_SCALING: &[&str] =
    &["--stable-window", "1s", "--scale-to-zero-grace", "0s", "--autoscaler-tick", "200ms"];

/// A real `serval server` (the test build's binary) on port 0 in a data directory.
pub struct Server {
    pub process: ServerProcess,
    pub dir: PathBuf,
    pub api: String,
    pub gateway: String,
    pub token: String,
    /// Removed after the server stopped (fields drop in order).
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut s = Server::spawn(temp.path(), extra, &[]);
        s._temp = Some(temp);
        s
    }

    /// Starts a server with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut s = Server::spawn(temp.path(), extra, env);
        s._temp = Some(temp);
        s
    }

    /// Starts a server on an existing data directory (for restarts).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Server::spawn(dir, extra, &[])
    }

    /// Starts a server in a fresh temporary data directory through `sh -c "<shell>; exec
    /// serval …"` (to set limits with `ulimit`), its stderr written to `log`.
    pub fn start_under_shell(shell: &str, extra: &[&str], log: &Path) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("sh");
        command.args(["-c", &format!("{shell}; exec \"$0\" \"$@\""), serval_bin()]);
        command.stderr(std::fs::File::create(log).expect("log file"));
        let mut s = Server::spawn_command(command, temp.path(), extra, &[]);
        s._temp = Some(temp);
        s
    }

    fn spawn(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(serval_bin());
        command.stderr(Stdio::inherit());
        Server::spawn_command(command, dir, extra, env)
    }

    fn spawn_command(command: Command, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let process = ServerProcess::start_command(command, Path::new(serval_bin()), dir, extra, env);
        Server {
            dir: dir.to_path_buf(),
            api: process.api.clone(),
            gateway: process.gateway.clone(),
            token: process.token.clone(),
            process,
            _temp: None,
        }
    }

    /// Runs the CLI against this server (found through `--data-dir`, like a user would).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.process.cli_command().args(args).output().expect("run serval")
    }

    /// Runs the CLI and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "serval {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs the CLI and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "serval {args:?} should fail but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8")
    }

    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("json")
    }

    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub fn api_client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn gateway_host(&self) -> String {
        self.gateway.trim_start_matches("http://").to_string()
    }
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(began.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Says that the running test is skipped and why: `SKIPPED <test>: <reason>`, with how many
/// tests of this test binary were skipped so far. Written to the process's stderr itself, not
/// through `eprintln!`, which libtest captures and shows only for failures.
/// Whether runc can run here; a missing runc fails the test when CI requires it.
pub fn runc_available() -> bool {
    let ok = Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("SERVAL_REQUIRE_RUNC").as_deref() != Ok("1"), "runc is required (SERVAL_REQUIRE_RUNC=1)");
        skip("runc not found");
    }
    ok
}

/// A Python interpreter that can import `module` (`SERVAL_PYTHON`, else CI's venv), or
/// `None` after saying the test is skipped; a failure when the variable `required_by`
/// (`SERVAL_REQUIRE_BOTO3`, `SERVAL_REQUIRE_KAFKA`) is 1.
pub fn python_with(module: &str, required_by: &str) -> Option<String> {
    let candidates = [std::env::var("SERVAL_PYTHON").ok(), Some("/var/tmp/serval-ci-venv/bin/python".to_string())];
    let import = format!("import {module}");
    let found = candidates
        .into_iter()
        .flatten()
        .find(|python| Command::new(python).args(["-c", &import]).output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(
            std::env::var(required_by).as_deref() != Ok("1"),
            "{required_by}=1 but no Python with {module} (set SERVAL_PYTHON)"
        );
        skip(&format!("no Python with {module} (set SERVAL_PYTHON)"));
    }
    found
}

pub fn skip(reason: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SKIPPED: AtomicUsize = AtomicUsize::new(0);
    let skipped = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason} ({skipped} test(s) skipped in this binary so far)");
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// One request a [`Subscriber`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// Lower-case header names.
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// One scripted answer: status, extra headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// An HTTP event subscriber on loopback that records what it gets and answers from a script
/// (then 200).
pub struct Subscriber {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// Requests being answered now, and the most there ever were at once.
    concurrency: std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(script: Vec<Answer>) -> Subscriber {
        Subscriber::start_slow(script, Duration::ZERO).await
    }

    /// A subscriber that takes `delay` to answer each request.
    pub async fn start_slow(script: Vec<Answer>, delay: Duration) -> Subscriber {
        Subscriber::serve(script, delay, None, None).await
    }

    /// A subscriber that answers each event (after its script) with the event itself in
    /// binary mode, `suffix` appended to its data: a step of a flow.
    pub async fn start_echo(script: Vec<Answer>, suffix: &str) -> Subscriber {
        Subscriber::serve(script, Duration::ZERO, None, Some(suffix.to_string())).await
    }

    /// A subscriber on `https://localhost:PORT/` with a self-signed certificate for
    /// `localhost`; returns it and the certificate (PEM), for a server to trust.
    pub async fn start_tls(script: Vec<Answer>) -> (Subscriber, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("key");
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        (Subscriber::serve(script, Duration::ZERO, Some(acceptor), None).await, certified.cert.pem())
    }

    async fn serve(
        script: Vec<Answer>,
        delay: Duration,
        tls: Option<tokio_rustls::TlsAcceptor>,
        echo: Option<String>,
    ) -> Subscriber {
        let concurrency =
            std::sync::Arc::new((std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0)));
        let counted = concurrency.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/"),
            None => format!("http://127.0.0.1:{port}/"),
        };
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(script)));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let answerer = Answerer {
                    log: log.clone(),
                    script: script.clone(),
                    counted: counted.clone(),
                    delay,
                    echo: echo.clone(),
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answerer.answer(stream).await;
                            }
                        }
                        None => answerer.answer(stream).await,
                    }
                });
            }
        });
        Subscriber { url, received, concurrency, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// How many requests arrive in the next `wait`.
    pub async fn received_during(&self, wait: Duration) -> usize {
        let before = self.received.lock().expect("lock").len();
        tokio::time::sleep(wait).await;
        self.received.lock().expect("lock").len() - before
    }

    /// The most requests this subscriber was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.concurrency.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What one subscriber connection needs to record a request and answer it.
struct Answerer {
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Answer>>>,
    counted: std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>,
    delay: Duration,
    /// Answer with the event, this appended to its data, once the script is done.
    echo: Option<String>,
}

impl Answerer {
    /// Reads one request, records it, waits the delay, answers from the script and closes.
    async fn answer(self, mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        let (head_end, length) = loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            data.extend_from_slice(&buf[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0usize);
                break (end + 4, length);
            }
        };
        while data.len() < head_end + length {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let headers: std::collections::HashMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())))
            .collect();
        let body = data[head_end..(head_end + length).min(data.len())].to_vec();
        let echoed = self.echo.as_ref().map(|suffix| {
            let mut fields: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| k.starts_with("ce-") || *k == "content-type")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            fields.sort();
            (200, fields, format!("{}{suffix}", String::from_utf8_lossy(&body)))
        });
        self.log.lock().expect("lock").push(Received { at: Instant::now(), headers, body });
        let now = self.counted.0.fetch_add(1, SeqCst) + 1;
        self.counted.1.fetch_max(now, SeqCst);
        tokio::time::sleep(self.delay).await;
        self.counted.0.fetch_sub(1, SeqCst);
        let (status, extra, reply) =
            self.script.lock().expect("lock").pop_front().or(echoed).unwrap_or((200, Vec::new(), String::new()));
        let mut response = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", reply.len());
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&reply);
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This crate's directory, read at run time: a test binary reused from a shared target
/// directory may have been built in another checkout.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The Knative documentation samples (`../shared/conformance/knative-docs/`, found by
/// walking up from this crate, or under `SERVAL_CONFORMANCE_DIR`), or `None` (after saying
/// so) when they are missing; under `SERVAL_REQUIRE_CONFORMANCE=1` that is a failure.
pub fn knative_docs() -> Option<PathBuf> {
    const KNATIVE_DOCS: &str = "knative-docs";
    let found = match std::env::var_os("SERVAL_CONFORMANCE_DIR") {
        Some(dir) => Some(PathBuf::from(dir).join(KNATIVE_DOCS)).filter(|d| d.is_dir()),
        None => crate_dir().ancestors().map(|d| d.join("shared/conformance").join(KNATIVE_DOCS)).find(|d| d.is_dir()),
    };
    if found.is_none() {
        let required = std::env::var("SERVAL_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1");
        assert!(!required, "SERVAL_REQUIRE_CONFORMANCE=1 but ../shared/conformance/{KNATIVE_DOCS} was not found");
        skip("the Knative documentation samples (shared/conformance/knative-docs) were not found");
    }
    found
}
