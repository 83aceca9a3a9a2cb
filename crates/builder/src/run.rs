//! A `RUN` step: the stage's root filesystem, writable, in a container of the OCI runtime,
//! with only a loopback network unless the build asked for the host's; its output is
//! streamed as progress and its last lines kept for the error.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use serval_build::{Network, RunStep};
use serval_runtime::container::{BundleSpec, ImageDefaults, config, resolve_user};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{BuilderError, Progress};

/// Lines of output kept for the error of a failing `RUN`.
const TAIL: usize = 20;
/// Processes a `RUN` may have at once.
const PIDS_LIMIT: i64 = 4096;

static NEXT: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn run(
    runc: &Path,
    scratch: &Path,
    rootfs: &Path,
    step: &RunStep,
    line: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), BuilderError> {
    let failed = |message: String| BuilderError::Step { line, message };
    let (uid, gid) = resolve_user(step.user.as_deref(), rootfs).map_err(failed)?;
    let workdir = if step.workdir.is_empty() { "/" } else { step.workdir.as_str() };
    // Docker makes the working directory when it is missing.
    std::fs::create_dir_all(rootfs.join(workdir.trim_start_matches('/')))?;
    let id = format!("serval-build-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let bundle = tempfile::Builder::new().prefix("bundle-").tempdir_in(scratch)?;
    let rootfs_text = rootfs.display().to_string();
    let cgroups_path = format!("/serval-build/{id}");
    let defaults = ImageDefaults::default();
    let mut spec = config(&BundleSpec {
        image: &defaults,
        command: &step.argv,
        args: &[],
        env: &step.env,
        working_dir: Some(workdir),
        uid,
        gid,
        rootfs: &rootfs_text,
        read_only_root: false,
        hostname: "serval-build",
        cgroups_path: &cgroups_path,
        memory_limit: None,
        cpu_millis: None,
        pids_limit: PIDS_LIMIT,
        read_only_mounts: &[],
    });
    // What a RUN writes to /tmp is part of the layer, as in Docker: no tmpfs there.
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/tmp");
    }
    if step.network != Network::Host
        && let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut()
    {
        namespaces.push(json!({ "type": "network" }));
    }
    std::fs::write(bundle.path().join("config.json"), spec.to_string())?;
    let state_root = scratch.join("runc");
    let mut child = tokio::process::Command::new(runc)
        .arg("--root")
        .arg(&state_root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", runc.display())))?;
    // An interrupted build (the future dropped) removes its container with it.
    let mut guard = Container { runc, state_root: &state_root, id: &id, running: true };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut out = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut err = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut keep = |text: String, progress: &mut dyn FnMut(Progress)| {
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        progress(Progress::Output(text));
    };
    while out.is_some() || err.is_some() {
        tokio::select! {
            line = async { out.as_mut().expect("guarded").next_line().await }, if out.is_some() => match line {
                Ok(Some(text)) => keep(text, progress),
                _ => out = None,
            },
            line = async { err.as_mut().expect("guarded").next_line().await }, if err.is_some() => match line {
                Ok(Some(text)) => keep(text, progress),
                _ => err = None,
            },
        }
    }
    let status = child.wait().await?;
    // `runc run` without `--keep` removed the container as it exited.
    guard.running = false;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(BuilderError::RunFailed { line, code: code.unwrap_or(-1), tail: tail.into() }),
    }
}

/// A `RUN`'s container while it may still run: dropped early, it is killed and deleted.
struct Container<'a> {
    runc: &'a Path,
    state_root: &'a Path,
    id: &'a str,
    running: bool,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.running {
            let _ = std::process::Command::new(self.runc)
                .arg("--root")
                .arg(self.state_root)
                .args(["delete", "--force", self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
