//! The `oci` runtime: each instance is an OCI container run by the runtime CLI (`runc` by
//! default) from a bundle serval generates: the image's root filesystem as the lower layer
//! of an overlay with a per-instance writable upper layer (discarded on stop), a tmpfs
//! `/tmp`, pid/mount/ipc/uts namespaces, the host network on a serval-assigned loopback
//! port, a reduced capability set, no-new-privileges, a seccomp profile, masked `/proc`
//! paths, and memory/cpu/pids limits through cgroups.
//!
//! `runc run` stays in the foreground as the container's parent: its exit status is the
//! container's, and its stdio is the container's stdout/stderr (captured into logs).
//! Containers live under serval's own runc `--root`, so whatever a crashed server left there
//! is found and removed at the next start.
//!
//! A start from zero is runc's own start plus little: the bundle directory with the overlay
//! mounted is prepared ahead per revision (`spares`), only the small `config.json` is written
//! per instance.

mod bundle;
mod images;
mod spares;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::process::Command;
use tokio::sync::watch;

pub use bundle::{BundleSpec, ImageDefaults, argv, config, resolve_user};
pub use images::StoreImages;

use crate::capture::{new_tail, pump_lines, tail_lines};
use crate::readiness::{Outcome, poll_until_ready};
use crate::{
    Endpoint, ExitInfo, Instance, InstanceControl, InstanceSpec, LogSink, LogStream, Runtime, RuntimeError, Workload,
};
use spares::{Spares, discard, mount_overlay, revision_key};

/// An image made ready to run: its unpacked root filesystem and its defaults.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub rootfs: PathBuf,
    pub defaults: ImageDefaults,
}

/// Where images come from (the image store: resolve, pull on demand, unpack).
pub trait ImageSource: Send + Sync + 'static {
    fn prepare(&self, reference: &str) -> BoxFuture<'_, Result<PreparedImage, RuntimeError>>;
}

/// Runs instances as OCI containers.
pub struct OciRuntime {
    runtime_binary: PathBuf,
    /// runc's `--root`: state of serval's containers only.
    state_root: PathBuf,
    bundles: PathBuf,
    images: Arc<dyn ImageSource>,
    spares: Arc<Spares>,
}

/// The default pids limit of a container (a fork bomb stops here).
pub const DEFAULT_PIDS_LIMIT: i64 = 256;

impl OciRuntime {
    /// Uses `runtime_binary` (`runc`, or another OCI runtime CLI with runc's commands) with
    /// state under `dir`. Containers and bundle directories (prepared or in use) a previous
    /// server left behind are removed now.
    pub async fn new(
        runtime_binary: PathBuf,
        dir: &Path,
        images: Arc<dyn ImageSource>,
    ) -> Result<OciRuntime, RuntimeError> {
        let state_root = dir.join("runc");
        let bundles = dir.join("bundles");
        std::fs::create_dir_all(&state_root)?;
        std::fs::create_dir_all(&bundles)?;
        let spares = Arc::new(Spares::new(bundles.clone()));
        let runtime = OciRuntime { runtime_binary, state_root, bundles, images, spares };
        runtime.remove_leftovers().await;
        Ok(runtime)
    }

    /// Is the OCI runtime CLI there at all?
    pub async fn available(runtime_binary: &Path) -> bool {
        Command::new(runtime_binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.runtime_binary);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    async fn remove_leftovers(&self) {
        let listed = self.runc().args(["list", "-q"]).stderr(Stdio::null()).output().await;
        if let Ok(out) = listed {
            for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                tracing::warn!("removing container {id} left over by a previous server");
                let _ = self.runc().args(["kill", id, "KILL"]).stderr(Stdio::null()).status().await;
                let _ = self.runc().args(["delete", "-f", id]).stderr(Stdio::null()).status().await;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.bundles) {
            for entry in entries.flatten() {
                discard(&entry.path());
            }
        }
    }
}

impl Runtime for OciRuntime {
    fn start(&self, spec: InstanceSpec, logs: LogSink) -> BoxFuture<'static, Result<Instance, RuntimeError>> {
        let images = self.images.clone();
        let state_root = self.state_root.clone();
        let runtime_binary = self.runtime_binary.clone();
        let bundles = self.bundles.clone();
        let spares = self.spares.clone();
        async move {
            let Workload::Container(settings) = spec.workload.clone() else {
                return Err(RuntimeError::NotAvailable("oci (given a host command, not an image)"));
            };
            let image = images.prepare(&settings.image).await?;
            let key = revision_key(&spec.namespace, &spec.revision);
            let prepared = spares.take(&key, &image.rootfs);
            let refill = Refill { spares, key, image_rootfs: image.rootfs.clone() };
            let ctx = Context {
                runtime_binary,
                state_root,
                bundle: prepared.clone().unwrap_or_else(|| bundles.join(&spec.instance_id)),
                refill,
            };
            ctx.start(spec, settings, image, prepared.is_some(), logs).await
        }
        .boxed()
    }

    fn prepare(&self, spec: &InstanceSpec) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let (images, spares) = (self.images.clone(), self.spares.clone());
        let key = revision_key(&spec.namespace, &spec.revision);
        self.spares.revive(&key);
        let image = match &spec.workload {
            Workload::Container(c) => Some(c.image.clone()),
            Workload::Process { .. } => None,
        };
        async move {
            let Some(image) = image else { return Ok(()) };
            let rootfs = images.prepare(&image).await?.rootfs;
            tokio::task::spawn_blocking(move || spares.replenish(&key, &rootfs))
                .await
                .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?
        }
        .boxed()
    }

    fn release(&self, namespace: &str, revision: &str) {
        self.spares.release(&revision_key(namespace, revision));
    }

    fn shutdown(&self) {
        self.spares.close();
    }
}

/// Where a new spare for the instance's revision comes from once the instance is gone.
#[derive(Clone)]
struct Refill {
    spares: Arc<Spares>,
    key: String,
    image_rootfs: PathBuf,
}

impl Refill {
    /// Makes the revision's next spare (off the async threads); a failure only costs the
    /// next start the mount.
    async fn now(&self) {
        let (spares, key, rootfs) = (self.spares.clone(), self.key.clone(), self.image_rootfs.clone());
        let made = tokio::task::spawn_blocking(move || spares.replenish(&key, &rootfs)).await;
        if let Ok(Err(e)) = made {
            tracing::warn!("preparing a bundle for {}: {e}", self.key);
        }
    }
}

/// One container's paths and how to call the runtime CLI for it.
#[derive(Clone)]
struct Context {
    runtime_binary: PathBuf,
    state_root: PathBuf,
    bundle: PathBuf,
    refill: Refill,
}

impl Context {
    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.runtime_binary);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    /// The overlay root: the image's rootfs below, a fresh upper layer per instance. A
    /// prepared bundle has it mounted already; else it is mounted now.
    async fn root_filesystem(&self, prepared: bool, image_rootfs: &Path) -> Result<PathBuf, RuntimeError> {
        if prepared {
            return Ok(self.bundle.join("rootfs"));
        }
        let _ = tokio::fs::remove_dir_all(&self.bundle).await;
        mount_overlay(&self.bundle, image_rootfs)
    }

    /// Removes the container, its overlay and its bundle (the writable layer goes with it).
    async fn cleanup(&self, id: &str) {
        let _ = self.runc().args(["delete", "-f", id]).stderr(Stdio::null()).status().await;
        let bundle = self.bundle.clone();
        let _ = tokio::task::spawn_blocking(move || discard(&bundle)).await;
    }

    async fn start(
        self,
        spec: InstanceSpec,
        settings: crate::ContainerSettings,
        image: PreparedImage,
        prepared: bool,
        logs: LogSink,
    ) -> Result<Instance, RuntimeError> {
        let began = Instant::now();
        let id = spec.instance_id.clone();
        let port = crate::process::free_port()?;
        let (uid, gid) = resolve_user(image.defaults.user.as_deref(), &image.rootfs).map_err(RuntimeError::Image)?;
        let rootfs = match self.root_filesystem(prepared, &image.rootfs).await {
            Ok(r) => r,
            Err(e) => {
                self.cleanup(&id).await;
                return Err(e);
            }
        };
        let env = crate::instance_environment(&spec, port);
        let command = crate::expand_words(&settings.command, &env);
        let args = crate::expand_words(&settings.args, &env);
        let rootfs_text = rootfs.display().to_string();
        let cgroups_path = format!("/serval/{id}");
        let hostname: String = id.chars().take(63).collect();
        let config = config(&BundleSpec {
            image: &image.defaults,
            command: &command,
            args: &args,
            env: &env,
            working_dir: spec.working_dir.as_deref(),
            uid,
            gid,
            rootfs: &rootfs_text,
            read_only_root: settings.read_only_root,
            hostname: &hostname,
            cgroups_path: &cgroups_path,
            memory_limit: settings.memory_limit,
            cpu_millis: settings.cpu_millis,
            pids_limit: settings.pids_limit,
            read_only_mounts: &settings.read_only_mounts,
        });
        if config["process"]["args"].as_array().is_none_or(Vec::is_empty) {
            self.cleanup(&id).await;
            return Err(RuntimeError::Image(
                "the image has no Entrypoint or Cmd and the revision gives no command".into(),
            ));
        }
        let written = serde_json::to_vec(&config).map_err(|e| RuntimeError::Io(std::io::Error::other(e)));
        if let Err(e) =
            written.and_then(|bytes| std::fs::write(self.bundle.join("config.json"), bytes).map_err(RuntimeError::Io))
        {
            self.cleanup(&id).await;
            return Err(e);
        }

        let mut cmd = self.runc();
        cmd.args(["run", "--keep", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        crate::process::die_with_server(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                self.cleanup(&id).await;
                return Err(RuntimeError::Spawn { program: self.runtime_binary.display().to_string(), source });
            }
        };
        // 0 (no pid: it exited already) owns nothing.
        let child_pid = child.id().unwrap_or_default();
        let tail = new_tail();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump_lines(out, LogStream::Stdout, id.clone(), logs.clone(), tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump_lines(err, LogStream::Stderr, id.clone(), logs.clone(), tail.clone()));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let exited = Arc::new(AtomicBool::new(false));
        let waiter = self.clone();
        let exited_flag = exited.clone();
        let waited_id = id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let mut info = match status.ok().and_then(|s| s.code()) {
                Some(code) if code > 128 => ExitInfo { code: None, signal: Some(code - 128), oom_killed: false },
                code => ExitInfo { code, signal: None, oom_killed: false },
            };
            info.oom_killed = oom_killed(&waited_id);
            waiter.cleanup(&waited_id).await;
            // The next start of the revision (from zero, most likely) finds its bundle ready.
            waiter.refill.now().await;
            exited_flag.store(true, Ordering::Release);
            let _ = exit_tx.send(Some(info));
        });

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (timeout, check, probe_exited) = (spec.startup_timeout, spec.readiness.clone(), exited.clone());
        let ready =
            tokio::task::spawn_blocking(move || poll_until_ready(addr, &check, timeout, &probe_exited, child_pid))
                .await
                .unwrap_or(Outcome::Exited { port_taken: false });
        let control = Box::new(ContainerControl { ctx: self.clone(), id: id.clone(), exit: exit_rx.clone() });
        let instance = Instance {
            id: spec.instance_id,
            endpoint: Endpoint::Socket(addr),
            startup: began.elapsed(),
            exit: exit_rx,
            control,
        };
        match ready {
            Outcome::Ready => Ok(instance),
            Outcome::Exited { port_taken } => {
                let exit = instance.exited().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let port_taken = port_taken.then_some(port);
                Err(RuntimeError::ExitedBeforeReady { exit, last_lines: tail_lines(&tail), port_taken })
            }
            Outcome::TimedOut(last_check) => {
                instance.stop(Duration::ZERO).await;
                Err(RuntimeError::StartTimeout { after: timeout, last_check, last_lines: tail_lines(&tail) })
            }
        }
    }
}

/// Whether the container's memory cgroup saw an OOM kill (cgroup v1 `memory.oom_control`,
/// or v2 `memory.events`); read before the container is deleted.
fn oom_killed(id: &str) -> bool {
    let count = |path: String, key: &str| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok())))
            .unwrap_or(0)
    };
    count(format!("/sys/fs/cgroup/memory/serval/{id}/memory.oom_control"), "oom_kill ") > 0
        || count(format!("/sys/fs/cgroup/serval/{id}/memory.events"), "oom_kill ") > 0
}

struct ContainerControl {
    ctx: Context,
    id: String,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl InstanceControl for ContainerControl {
    fn stop(&self, grace: Duration) -> BoxFuture<'static, ExitInfo> {
        let (ctx, id, mut exit) = (self.ctx.clone(), self.id.clone(), self.exit.clone());
        async move {
            let running = exit.borrow().is_none();
            if running {
                let _ = ctx.runc().args(["kill", &id, "TERM"]).stderr(Stdio::null()).status().await;
                let exited = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok());
                if !exited {
                    let _ = ctx.runc().args(["kill", "--all", &id, "KILL"]).stderr(Stdio::null()).status().await;
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
