//! The `process` runtime: a host command in its own process group that listens on `$PORT`.
//!
//! No isolation (local development). Children die with the server: each gets
//! `PR_SET_PDEATHSIG(SIGKILL)`, runs in its own process group (so stop reaches its
//! children too), and is recorded in `state_dir` so that a server restarted after a crash
//! kills what the previous one left behind.

mod leftovers;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::capture::{new_tail, pump_lines, tail_lines};
use crate::readiness::{Outcome, poll_until_ready};
use crate::{
    Endpoint, ExitInfo, Instance, InstanceControl, InstanceSpec, LogSink, LogStream, Runtime, RuntimeError, Workload,
};

/// Host variables passed through to functions; everything else comes from the spec.
const PASSTHROUGH_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Runs instances as host processes.
pub struct ProcessRuntime {
    state_dir: PathBuf,
}

impl ProcessRuntime {
    /// `state_dir` records running instances; whatever a previous server left there is
    /// killed now.
    pub fn new(state_dir: PathBuf) -> Result<ProcessRuntime, RuntimeError> {
        std::fs::create_dir_all(&state_dir)?;
        for leftover in leftovers::kill_all(&state_dir) {
            tracing::warn!("killed process group {leftover} left over by a previous server");
        }
        Ok(ProcessRuntime { state_dir })
    }
}

impl Runtime for ProcessRuntime {
    fn start(&self, spec: InstanceSpec, logs: LogSink) -> BoxFuture<'static, Result<Instance, RuntimeError>> {
        let state_dir = self.state_dir.clone();
        async move { start(spec, logs, state_dir).await }.boxed()
    }

    /// The program must be an executable file: a path (relative to the working directory)
    /// or a name on `PATH`.
    fn check(&self, spec: &InstanceSpec) -> Result<(), String> {
        match &spec.workload {
            Workload::Process { argv } => {
                find_program(argv.first().map(String::as_str).unwrap_or_default(), spec.working_dir.as_deref())
            }
            Workload::Container(_) => Err("the process runtime runs host commands, not images".into()),
        }
    }
}

/// Checks that `program` can be executed: a path (relative to `dir`) or a name on `PATH`.
fn find_program(program: &str, dir: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = match dir {
            Some(d) if !program.starts_with('/') => Path::new(d).join(program),
            _ => Path::new(program).to_path_buf(),
        };
        return if executable(&path) { Ok(()) } else { Err(format!("{} is not an executable file", path.display())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!("{program:?} was not found on PATH"))
    }
}

/// A loopback port that is free now.
pub(crate) fn free_port() -> Result<u16, RuntimeError> {
    // The port is free again when the listener drops; the child binds it right after.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(RuntimeError::Port)?;
    Ok(listener.local_addr().map_err(RuntimeError::Port)?.port())
}

fn build_command(spec: &InstanceSpec, port: u16) -> Result<Command, RuntimeError> {
    let env = crate::instance_environment(spec, port);
    let Workload::Process { argv } = &spec.workload else {
        return Err(RuntimeError::NotAvailable("process (given an image)"));
    };
    let argv = crate::expand_words(argv, &env);
    let program = argv.first().ok_or_else(|| RuntimeError::Spawn {
        program: String::new(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(PASSTHROUGH_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    die_with_server(&mut cmd);
    Ok(cmd)
}

/// Makes the child get SIGKILL when the server dies, even by `kill -9`.
pub(crate) fn die_with_server(cmd: &mut Command) {
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The server may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("serval exited while starting the instance"));
            }
            Ok(())
        });
    }
}

/// How many ports a start tries when another process takes the one picked for it.
const PORT_ATTEMPTS: u32 = 3;

async fn start(spec: InstanceSpec, logs: LogSink, state_dir: PathBuf) -> Result<Instance, RuntimeError> {
    let mut attempt = 1;
    loop {
        match start_on_free_port(spec.clone(), logs.clone(), &state_dir).await {
            Err(RuntimeError::ExitedBeforeReady { port_taken: Some(port), .. }) if attempt < PORT_ATTEMPTS => {
                logs(crate::LogLine {
                    at: std::time::SystemTime::now(),
                    instance: spec.instance_id.clone(),
                    stream: LogStream::Platform,
                    text: format!("port {port} was taken by another process; starting again on another port"),
                });
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn start_on_free_port(
    spec: InstanceSpec,
    logs: LogSink,
    state_dir: &std::path::Path,
) -> Result<Instance, RuntimeError> {
    let began = Instant::now();
    let port = free_port()?;
    let mut child = build_command(&spec, port)?
        .spawn()
        .map_err(|source| RuntimeError::Spawn { program: spec.program().unwrap_or_default().to_string(), source })?;
    let pid = child.id().ok_or_else(|| RuntimeError::Io(std::io::Error::other("child exited at once")))?;
    let record = leftovers::Record::create(state_dir, pid);

    let tail = new_tail();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump_lines(out, LogStream::Stdout, spec.instance_id.clone(), logs.clone(), tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump_lines(err, LogStream::Stderr, spec.instance_id.clone(), logs.clone(), tail.clone()));
    }

    let (exit_tx, exit_rx) = watch::channel(None);
    let exited = Arc::new(AtomicBool::new(false));
    tokio::spawn(wait_for_exit(child, pid, exit_tx, exited.clone(), record));

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = spec.startup_timeout;
    let probe_exited = exited.clone();
    let check = spec.readiness.clone();
    let ready = tokio::task::spawn_blocking(move || poll_until_ready(addr, &check, timeout, &probe_exited, pid))
        .await
        .unwrap_or(Outcome::Exited { port_taken: false });
    let last_lines = || tail_lines(&tail);
    let control = Box::new(ProcessControl { pid, exit: exit_rx.clone() });
    match ready {
        Outcome::Ready => Ok(Instance {
            id: spec.instance_id,
            endpoint: Endpoint::Socket(addr),
            startup: began.elapsed(),
            exit: exit_rx,
            control,
        }),
        Outcome::Exited { port_taken } => {
            let exit = Instance {
                id: String::new(),
                endpoint: Endpoint::Socket(addr),
                startup: Duration::ZERO,
                exit: exit_rx,
                control,
            }
            .exited()
            .await;
            // Let the log pumps drain what the process printed before dying.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let port_taken = port_taken.then_some(port);
            Err(RuntimeError::ExitedBeforeReady { exit, last_lines: last_lines(), port_taken })
        }
        Outcome::TimedOut(last_check) => {
            control.stop(Duration::ZERO).await;
            Err(RuntimeError::StartTimeout { after: timeout, last_check, last_lines: last_lines() })
        }
    }
}

async fn wait_for_exit(
    mut child: Child,
    pid: u32,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    exited: Arc<AtomicBool>,
    record: Option<leftovers::Record>,
) {
    use std::os::unix::process::ExitStatusExt;
    let info = match child.wait().await {
        Ok(status) => ExitInfo { code: status.code(), signal: status.signal(), oom_killed: false },
        Err(_) => ExitInfo { code: None, signal: None, oom_killed: false },
    };
    // Whatever the leader left in its group goes with it.
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    drop(record);
    exited.store(true, Ordering::Release);
    let _ = exit_tx.send(Some(info));
}

struct ProcessControl {
    pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl InstanceControl for ProcessControl {
    fn stop(&self, grace: Duration) -> BoxFuture<'static, ExitInfo> {
        let group = Pid::from_raw(self.pid as i32);
        let mut exit = self.exit.clone();
        async move {
            if exit.borrow().is_none() {
                let _ = killpg(group, Signal::SIGTERM);
                let waited = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await;
                if !matches!(waited, Ok(Ok(_))) {
                    let _ = killpg(group, Signal::SIGKILL);
                }
            }
            let result = exit.wait_for(Option::is_some).await.map(|v| *v);
            result.ok().flatten().unwrap_or(ExitInfo { code: None, signal: None, oom_killed: false })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
