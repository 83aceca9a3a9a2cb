//! [`FakeRuntime`]: instances inside the test process — HTTP servers on loopback sockets, or
//! in-process handlers with no socket at all ([`FakeRuntime::in_process`]) — so that the
//! controller, runners, autoscaler and gateway run for real without a child process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serval_runtime::{
    Endpoint, ExitInfo, InProcessHandler, Instance, InstanceControl, InstanceSpec, LogSink, Runtime, RuntimeError,
};
use tokio::sync::{Notify, watch};

/// A program (first word of the command) that exits with code 3 before it is ready.
pub const EXITS_BEFORE_READY: &str = "exits-before-ready";
/// A program the runtime's check does not find.
pub const MISSING_PROGRAM: &str = "missing-program";

/// Instances of every revision, started and running, as the fake runtime counts them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevisionCounts {
    pub started: usize,
    pub running: usize,
}

/// A runtime whose instances answer every request with `200 <revision> <instance>` from a
/// server in this process. Programs named [`EXITS_BEFORE_READY`] and [`MISSING_PROGRAM`]
/// fail as a real process would.
#[derive(Default)]
pub struct FakeRuntime {
    counts: Arc<Mutex<BTreeMap<String, RevisionCounts>>>,
    changed: Arc<Notify>,
    /// Instances are handlers in process ([`Endpoint::InProcess`]), not sockets.
    in_process: bool,
    /// Requests in-process instances answered, by revision.
    seen: Arc<Mutex<BTreeMap<String, Vec<SeenRequest>>>>,
}

/// A request an in-process instance answered.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl FakeRuntime {
    /// A fake runtime whose instances serve in process, with no socket.
    pub fn in_process() -> FakeRuntime {
        FakeRuntime { in_process: true, ..FakeRuntime::default() }
    }

    /// The requests `revision`'s in-process instances answered, in order.
    pub fn seen(&self, revision: &str) -> Vec<SeenRequest> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(revision).cloned().unwrap_or_default()
    }

    /// Waits until `revision`'s in-process instances answered `count` requests (at most
    /// `within`); the requests seen, or those seen so far.
    pub async fn wait_for_requests(
        &self,
        revision: &str,
        within: Duration,
        count: usize,
    ) -> Result<Vec<SeenRequest>, Vec<SeenRequest>> {
        self.wait_until(within, || self.seen(revision), |seen| seen.len() >= count).await
    }

    /// Starts and running instances of `revision`.
    pub fn counts(&self, revision: &str) -> RevisionCounts {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(revision).cloned().unwrap_or_default()
    }

    /// Waits until `condition` holds for `revision`'s counts (at most `within`); the
    /// counts it last saw otherwise.
    pub async fn wait_for(
        &self,
        revision: &str,
        within: Duration,
        condition: impl Fn(&RevisionCounts) -> bool,
    ) -> Result<RevisionCounts, RevisionCounts> {
        self.wait_until(within, || self.counts(revision), condition).await
    }

    /// Reads `state` after every change until `holds` (at most `within`): the state that
    /// held, or the last one read.
    async fn wait_until<T>(&self, within: Duration, state: impl Fn() -> T, holds: impl Fn(&T) -> bool) -> Result<T, T> {
        let deadline = Instant::now() + within;
        loop {
            // Registered before the read: a change in between still wakes the wait.
            let changed = self.changed.notified();
            let now = state();
            if holds(&now) {
                return Ok(now);
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return Err(state());
            }
        }
    }

    fn count(&self, revision: &str, change: impl FnOnce(&mut RevisionCounts)) {
        change(self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(revision.to_string()).or_default());
        self.changed.notify_waiters();
    }
}

impl Runtime for FakeRuntime {
    fn serves_in_process(&self) -> bool {
        self.in_process
    }

    fn check(&self, spec: &InstanceSpec) -> Result<(), String> {
        match spec.program() {
            Some(MISSING_PROGRAM) => Err(format!("{MISSING_PROGRAM:?} was not found on PATH")),
            _ => Ok(()),
        }
    }

    fn start(&self, spec: InstanceSpec, _logs: LogSink) -> BoxFuture<'static, Result<Instance, RuntimeError>> {
        let began = Instant::now();
        if spec.program() == Some(EXITS_BEFORE_READY) {
            let exit = ExitInfo { code: Some(3), signal: None, oom_killed: false };
            return Box::pin(async move {
                Err(RuntimeError::ExitedBeforeReady { exit, last_lines: vec!["bye".into()], port_taken: None })
            });
        }
        self.count(&spec.revision, |c| {
            c.started += 1;
            c.running += 1;
        });
        let counts = self.counts.clone();
        let changed = self.changed.clone();
        let in_process = self.in_process.then(|| (self.seen.clone(), self.changed.clone()));
        Box::pin(async move {
            let answer = Bytes::from(format!("{} {}", spec.revision, spec.instance_id));
            let (endpoint, server) = match in_process {
                Some((seen, changed)) => {
                    let handler = Recorder { revision: spec.revision.clone(), answer, seen, changed };
                    (Endpoint::InProcess(Arc::new(handler)), None)
                }
                None => {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let addr = listener.local_addr()?;
                    (Endpoint::Socket(addr), Some(tokio::spawn(serve(listener, answer))))
                }
            };
            let (exit_tx, exit) = watch::channel(None);
            let control = FakeControl {
                server,
                exit: exit_tx,
                on_stop: Box::new(move || {
                    let mut all = counts.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = all.get_mut(&spec.revision) {
                        c.running -= 1;
                    }
                    drop(all);
                    changed.notify_waiters();
                }),
            };
            Ok(Instance::new(spec.instance_id, endpoint, began.elapsed(), exit, Box::new(control)))
        })
    }
}

/// Answers every request on every connection with `answer`.
async fn serve(listener: tokio::net::TcpListener, answer: Bytes) {
    while let Ok((stream, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let answer = answer.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(answer))) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// An in-process instance: records each request, answers `answer`.
struct Recorder {
    revision: String,
    answer: Bytes,
    seen: Arc<Mutex<BTreeMap<String, Vec<SeenRequest>>>>,
    changed: Arc<Notify>,
}

impl InProcessHandler for Recorder {
    fn call(&self, request: http::Request<Bytes>) -> BoxFuture<'static, http::Response<Bytes>> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let seen = SeenRequest { method: parts.method.to_string(), path, headers: parts.headers, body };
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).entry(self.revision.clone()).or_default().push(seen);
        self.changed.notify_waiters();
        let answer = self.answer.clone();
        Box::pin(async move { http::Response::new(answer) })
    }
}

struct FakeControl {
    /// The socket server of a socket instance.
    server: Option<tokio::task::JoinHandle<()>>,
    exit: watch::Sender<Option<ExitInfo>>,
    on_stop: Box<dyn Fn() + Send + Sync>,
}

impl InstanceControl for FakeControl {
    fn stop(&self, _grace: Duration) -> BoxFuture<'static, ExitInfo> {
        let exit = ExitInfo { code: Some(0), signal: None, oom_killed: false };
        if self.exit.borrow().is_none() {
            if let Some(server) = &self.server {
                server.abort();
            }
            (self.on_stop)();
            let _ = self.exit.send(Some(exit));
        }
        Box::pin(async move { exit })
    }
}
