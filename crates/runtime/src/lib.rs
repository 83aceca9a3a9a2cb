//! Runtimes run a revision's instances: each `start` yields an [`Instance`] that listens on
//! a loopback address and is ready (accepts TCP connections) when `start` returns.
//!
//! Owns: the `Runtime` trait, the `process` runtime (host commands in their own process
//! group, dying with the server), log capture and graceful stop (SIGTERM, grace, SIGKILL),
//! and the OCI image side (`oci`: the content-addressed image store, import, registry pull,
//! secure layer unpacking).
//! Must not depend on: the store, the gateway or any HTTP server (its one HTTP client is
//! `oci-client`'s, for registries). The only `unsafe` of the
//! project lives here (the pre-exec hook of a child process).

mod capture;
pub mod container;
pub mod oci;
mod process;
mod readiness;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use process::ProcessRuntime;

/// What an instance runs and the identity it is given (Knative's runtime contract).
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique among all instances of this server (used in logs and for cleanup).
    pub instance_id: String,
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub configuration: String,
    /// What runs: a host command or an image.
    pub workload: Workload,
    /// The user's environment; `PORT` and `K_*` are added by the runtime.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// How long an instance may take to become ready before it counts as failed.
    pub startup_timeout: Duration,
    /// What "ready" means.
    pub readiness: Readiness,
}

/// What an instance runs; each runtime takes one kind (wasm and the Lambda runtime
/// protocol come next).
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// A host command: the program and its arguments (`$(VAR)` references expanded).
    Process { argv: Vec<String> },
    /// An OCI image, run with Kubernetes container semantics.
    Container(ContainerSettings),
}

impl InstanceSpec {
    /// The program of a [`Workload::Process`].
    pub fn program(&self) -> Option<&str> {
        match &self.workload {
            Workload::Process { argv } => argv.first().map(String::as_str),
            Workload::Container(_) => None,
        }
    }
}

/// How to run an instance from an image (Kubernetes container semantics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSettings {
    pub image: String,
    /// Replaces the image's Entrypoint (and its Cmd) when not empty.
    pub command: Vec<String>,
    /// Replaces the image's Cmd when not empty.
    pub args: Vec<String>,
    pub read_only_root: bool,
    /// Bytes.
    pub memory_limit: Option<i64>,
    /// Millicores.
    pub cpu_millis: Option<u64>,
    pub pids_limit: i64,
    /// Host directories bound into the container, read-only.
    pub read_only_mounts: Vec<ReadOnlyMount>,
}

/// A host directory seen read-only at `destination` inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyMount {
    pub source: std::path::PathBuf,
    pub destination: String,
}

/// The readiness check run against the serving port until it passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Readiness {
    /// The port accepts a TCP connection (Knative's default).
    #[default]
    TcpConnect,
    /// `GET path` answers 200–399.
    HttpGet { path: String, headers: Vec<(String, String)>, timeout: Duration },
    /// Ready once started: a worker that serves no requests (a ContainerSource).
    Started,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A line written by serval itself about the instance (started, exited…).
    Platform,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Platform => "serval",
        }
    }
}

/// One captured line of an instance's output, timestamped when it was read.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: SystemTime,
    pub instance: String,
    pub stream: LogStream,
    pub text: String,
}

/// Where captured lines go.
pub type LogSink = Arc<dyn Fn(LogLine) + Send + Sync>;

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oom_killed {
            return f.write_str("was OOM-killed (out of its memory limit)");
        }
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("exited"),
        }
    }
}

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("instance {exit} before it was ready{}{}", port_note(*.port_taken), format_tail(.last_lines))]
    ExitedBeforeReady {
        exit: ExitInfo,
        last_lines: Vec<String>,
        /// The port picked for it, when another process was listening there.
        port_taken: Option<u16>,
    },
    #[error("instance was not ready within {after:?} (last check: {last_check}){}", format_tail(.last_lines))]
    StartTimeout { after: Duration, last_check: String, last_lines: Vec<String> },
    #[error("no free port: {0}")]
    Port(std::io::Error),
    #[error("the {0} runtime is not available in this build")]
    NotAvailable(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An image could not be read, stored or parsed (the message names the file or blob).
    #[error("{0}")]
    Image(String),
    /// No image with this name or digest is in the local image store.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// Pulling from a registry failed; `message` carries the registry's own words when it
    /// gave any.
    #[error("pulling {reference} failed: {message}")]
    PullFailed { reference: String, message: String },
    /// Pushing to a registry failed; `message` carries the registry's own words when it
    /// gave any.
    #[error("pushing {reference} failed: {message}")]
    PushFailed { reference: String, message: String },
    /// A layer tried to write outside the root filesystem (or was otherwise unsafe); nothing
    /// was written outside it.
    #[error("image layer rejected: {0}")]
    UnpackRejected(String),
}

/// The environment an instance gets (Knative's runtime contract: `PORT` and `K_*` first,
/// then the user's variables, each `$(VAR)` expanded from those before it), and its
/// command line with `$(VAR)` references expanded from that environment.
pub(crate) fn instance_environment(spec: &InstanceSpec, port: u16) -> Vec<(String, String)> {
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        ("K_SERVICE".to_string(), spec.service.clone()),
        ("K_REVISION".to_string(), spec.revision.clone()),
        ("K_CONFIGURATION".to_string(), spec.configuration.clone()),
    ];
    env.extend(spec.env.iter().cloned());
    serval_model::expand_environment(&env)
}

/// `command`/`args` words with `$(VAR)` references expanded from `env` (Kubernetes' rules).
pub(crate) fn expand_words(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    words.iter().map(|w| serval_model::expand_references(w, lookup)).collect()
}

fn port_note(port_taken: Option<u16>) -> String {
    port_taken.map(|p| format!(" (port {p} was held by another process)")).unwrap_or_default()
}

fn format_tail(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!("; last output: {}", lines.join(" | ")) }
}

/// Stops an instance; implemented by each runtime.
pub trait InstanceControl: Send + Sync {
    /// Asks the instance to stop (SIGTERM), and kills it after `grace`.
    fn stop(&self, grace: Duration) -> BoxFuture<'static, ExitInfo>;
}

/// Serves an instance's requests inside the server process (an in-process runtime: wasm
/// components later, the test kit's fake instances now): whole request in, whole response
/// out, no socket.
pub trait InProcessHandler: Send + Sync + 'static {
    fn call(&self, request: http::Request<bytes::Bytes>) -> BoxFuture<'static, http::Response<bytes::Bytes>>;
}

/// Where a ready instance takes requests.
#[derive(Clone)]
pub enum Endpoint {
    /// A listening socket (processes, containers).
    Socket(SocketAddr),
    /// A handler in this process.
    InProcess(Arc<dyn InProcessHandler>),
}

impl Endpoint {
    /// The socket address, for an instance that listens on one.
    pub fn socket(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Socket(addr) => Some(*addr),
            Endpoint::InProcess(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Socket(addr) => write!(f, "{addr}"),
            Endpoint::InProcess(_) => f.write_str("in process"),
        }
    }
}

/// A running, ready instance.
pub struct Instance {
    pub id: String,
    pub endpoint: Endpoint,
    /// Time from `start` to the first accepted connection.
    pub startup: Duration,
    exit: watch::Receiver<Option<ExitInfo>>,
    control: Box<dyn InstanceControl>,
}

impl Instance {
    /// An instance of a runtime outside this crate: `exit` turns `Some` when it has ended,
    /// `control` stops it.
    pub fn new(
        id: String,
        endpoint: Endpoint,
        startup: Duration,
        exit: watch::Receiver<Option<ExitInfo>>,
        control: Box<dyn InstanceControl>,
    ) -> Instance {
        Instance { id, endpoint, startup, exit, control }
    }

    /// Resolves when the instance has exited, whatever the cause.
    pub async fn exited(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        loop {
            if let Some(info) = *rx.borrow_and_update() {
                return info;
            }
            if rx.changed().await.is_err() {
                return (*rx.borrow()).unwrap_or(ExitInfo { code: None, signal: None, oom_killed: false });
            }
        }
    }

    pub fn stop(&self, grace: Duration) -> BoxFuture<'static, ExitInfo> {
        self.control.stop(grace)
    }
}

/// Something that can start instances.
pub trait Runtime: Send + Sync + 'static {
    fn start(&self, spec: InstanceSpec, logs: LogSink) -> BoxFuture<'static, Result<Instance, RuntimeError>>;

    /// Whether `spec` can run at all, checked before any start (a program that is not
    /// there, an image that cannot be run): `Err` says why, for the revision's status.
    fn check(&self, spec: &InstanceSpec) -> Result<(), String> {
        let _ = spec;
        Ok(())
    }

    /// Prepares ahead what the next start of `spec`'s revision needs, so that a start from
    /// zero does less (the `oci` runtime: a bundle directory with the image's overlay root
    /// mounted). Worth calling when a revision may next start from zero without having
    /// run in this server (stored, or found at server start). Runtimes also prepare by
    /// themselves after an instance of a revision stops. Default: nothing to prepare.
    fn prepare(&self, spec: &InstanceSpec) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let _ = spec;
        async { Ok(()) }.boxed()
    }

    /// The revision will not start again (deleted or retired): drops what was prepared
    /// for it, until a start or `prepare` of it. Quick (an unmount, a small directory).
    fn release(&self, namespace: &str, revision: &str) {
        let _ = (namespace, revision);
    }

    /// The server stops: drops everything prepared and prepares nothing more. Call after
    /// the last instance stopped.
    fn shutdown(&self) {}

    /// Whether instances serve in process ([`Endpoint::InProcess`]) rather than on a
    /// socket; their requests then take the gateway's hyper path. Default: sockets.
    fn serves_in_process(&self) -> bool {
        false
    }
}

/// Makes the calling process receive SIGKILL when its parent dies (used by `serval server`
/// when its supervisor asks for it, e.g. test harnesses).
pub fn die_with_parent() -> Result<(), RuntimeError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| RuntimeError::Io(std::io::Error::from(e)))
}

/// Raises the soft limit on open files to the hard limit (a server with many connections
/// and instances needs more than the usual 1 024) and returns the limit now in force.
pub fn raise_open_files_limit() -> Result<u64, RuntimeError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let to_io = |e: nix::errno::Errno| RuntimeError::Io(std::io::Error::from(e));
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(to_io)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(to_io)?;
    }
    Ok(hard.max(soft))
}
