//! [`FakeRuntime`]: instances that are HTTP servers inside the test process, so that the
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
use serval_runtime::{ExitInfo, Instance, InstanceControl, InstanceSpec, LogSink, Runtime, RuntimeError};
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
}

impl FakeRuntime {
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
        let deadline = Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            let counts = self.counts(revision);
            if condition(&counts) {
                return Ok(counts);
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return Err(self.counts(revision));
            }
        }
    }

    fn count(&self, revision: &str, change: impl FnOnce(&mut RevisionCounts)) {
        change(self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(revision.to_string()).or_default());
        self.changed.notify_waiters();
    }
}

impl Runtime for FakeRuntime {
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
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let answer = Bytes::from(format!("{} {}", spec.revision, spec.instance_id));
            let server = tokio::spawn(serve(listener, answer));
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
            Ok(Instance::new(spec.instance_id, addr, began.elapsed(), exit, Box::new(control)))
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

struct FakeControl {
    server: tokio::task::JoinHandle<()>,
    exit: watch::Sender<Option<ExitInfo>>,
    on_stop: Box<dyn Fn() + Send + Sync>,
}

impl InstanceControl for FakeControl {
    fn stop(&self, _grace: Duration) -> BoxFuture<'static, ExitInfo> {
        let exit = ExitInfo { code: Some(0), signal: None, oom_killed: false };
        if self.exit.borrow().is_none() {
            self.server.abort();
            (self.on_stop)();
            let _ = self.exit.send(Some(exit));
        }
        Box::pin(async move { exit })
    }
}
