//! FileSource: one CloudEvent per file that appears in a directory, once it is completely
//! written (inotify's close-write, or moved in), with its path, size, modification time and
//! SHA-256 — and its content, inline, up to [`INLINE_LIMIT`]. A scan at start (and when the
//! kernel's event queue overflowed) finds files that arrived while nobody watched. Files
//! waiting together go to the sink together when it takes batches
//! (`serval.dev/delivery-batch-size`).
//!
//! A file is reported once per modification time: with `after: keep` the time of the last
//! one delivered is kept as the file's position; with `delete` or `move:<dir>` the file
//! leaves the directory once its event was accepted (a crash in between reports it again:
//! at least once).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use notify::{EventKind, RecursiveMode, Watcher};
use serval_eventing::CloudEvent;
use serval_model::FileSource;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::{Backoff, SourceContext, SourceTask};
use crate::DispatchError;

/// Files up to this size travel inside their event (`contentBase64`).
pub const INLINE_LIMIT: u64 = 64 * 1024;
/// Files handled at once.
const CONCURRENCY: usize = 64;
/// The event type of a file that appeared (or was replaced).
pub const FILE_EVENT_TYPE: &str = "dev.serval.file.added";

#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    Keep,
    Delete,
    Move(PathBuf),
}

/// A FileSource made ready to run.
pub struct FileTask {
    dir: PathBuf,
    pattern: Option<globset::GlobMatcher>,
    recursive: bool,
    after: After,
}

/// Checks a FileSource's spec (its pattern compiles) and makes its task.
pub fn task(source: &FileSource) -> Result<Arc<dyn SourceTask>, DispatchError> {
    let spec = &source.spec;
    let invalid = |field: &str, message: String| DispatchError::invalid_field("FileSource", field, message);
    let pattern = spec
        .pattern
        .as_deref()
        .map(|p| globset::Glob::new(p).map(|g| g.compile_matcher()))
        .transpose()
        .map_err(|e| invalid("spec.pattern", e.to_string()))?;
    let after = match spec.after.as_deref() {
        None | Some("keep") => After::Keep,
        Some("delete") => After::Delete,
        Some(other) => match other.strip_prefix("move:") {
            Some(dir) if dir.starts_with('/') => After::Move(PathBuf::from(dir)),
            _ => return Err(invalid("spec.after", format!("{other:?} must be keep, delete or move:<absolute dir>"))),
        },
    };
    Ok(Arc::new(FileTask { dir: PathBuf::from(&spec.path), pattern, recursive: spec.recursive, after }))
}

impl SourceTask for FileTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::default();
            loop {
                match self.watch(&context, &mut stopped).await {
                    Ok(()) => return,
                    Err(why) => {
                        context.health.not_ready("DirectoryNotReady", why.clone());
                        tracing::warn!("filesource {}/{}: {why}", context.namespace, context.name);
                        if !backoff.sleep(&mut stopped).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}

impl FileTask {
    /// Watches the directory and reports files until stopped (`Ok`) or the directory
    /// cannot be watched (`Err`, why).
    async fn watch(
        self: &Arc<Self>,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        if !self.dir.is_dir() {
            return Err(format!("{} is not a directory", self.dir.display()));
        }
        let (tx, mut changes) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        let mode = if self.recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        watcher.watch(&self.dir, mode).map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        context.health.ready();
        // Watching before scanning: a file written in between is seen twice, handled once.
        let mut waiting: Vec<PathBuf> = self.scan();
        let mut busy: HashSet<PathBuf> = HashSet::new();
        // Busy files that changed again: looked at once more when their delivery is done.
        let mut again: HashSet<PathBuf> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        // A delivery is as many files as the sink takes at once (one, unless batched or
        // unordered), but no more than a batch or CONCURRENCY, with about CONCURRENCY files
        // in the work at a time.
        let per_delivery = context.sink.at_once().min(CONCURRENCY.max(context.sink.batch()));
        let deliveries = (CONCURRENCY / per_delivery).max(1);
        loop {
            while in_flight.len() < deliveries && !waiting.is_empty() {
                let mut paths = Vec::new();
                while paths.len() < per_delivery
                    && let Some(path) = waiting.pop()
                {
                    if busy.insert(path.clone()) {
                        paths.push(path);
                    } else {
                        again.insert(path);
                    }
                }
                if paths.is_empty() {
                    break;
                }
                let (task, context) = (self.clone(), context.clone());
                let mut stopped = stopped.clone();
                in_flight.push(async move {
                    task.report(paths.clone(), &context, &mut stopped).await;
                    paths
                });
            }
            tokio::select! {
                Some(paths) = in_flight.next(), if !in_flight.is_empty() => {
                    for path in paths {
                        busy.remove(&path);
                        if again.remove(&path) {
                            waiting.push(path);
                        }
                    }
                }
                change = changes.recv() => match change {
                    Some(Ok(event)) => {
                        if event.need_rescan() {
                            waiting.extend(self.scan());
                        } else if written(&event.kind) {
                            waiting.extend(event.paths.into_iter().filter(|p| self.wanted(p)));
                        }
                    }
                    Some(Err(e)) => return Err(format!("watching {}: {e}", self.dir.display())),
                    None => return Err(format!("the watch of {} ended", self.dir.display())),
                },
                _ = stopped.wait_for(|s| *s) => return Ok(()),
            }
            if !self.dir.is_dir() {
                return Err(format!("{} is gone", self.dir.display()));
            }
        }
    }

    /// The files of the directory (and, when recursive, its subdirectories) that match.
    fn scan(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() && self.recursive && !self.is_move_target(&path) => dirs.push(path),
                    Ok(t) if t.is_file() && self.wanted(&path) => found.push(path),
                    _ => {}
                }
            }
        }
        found
    }

    /// Whether `path` is a file of this source: under the directory (directly, unless
    /// recursive), not in the `move:` directory, matching the pattern.
    fn wanted(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.dir) else { return false };
        if self.is_move_target(path) || (!self.recursive && relative.components().count() != 1) {
            return false;
        }
        self.pattern.as_ref().is_none_or(|p| p.is_match(relative))
    }

    fn is_move_target(&self, path: &Path) -> bool {
        matches!(&self.after, After::Move(dir) if path.starts_with(dir))
    }

    /// Reports files (those whose version was not reported already) in one delivery, then
    /// keeps, deletes or moves each.
    async fn report(
        self: &Arc<Self>,
        paths: Vec<PathBuf>,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
    ) {
        // Reading and hashing files blocks: a batch of them is read beside the runtime's
        // threads; one file where it is handled (a blocking thread per file costs more
        // than the read: 1 000 small files took twice as long).
        let (reported, events) = if paths.len() == 1 {
            self.read(paths, context)
        } else {
            let (task, reading) = (self.clone(), context.clone());
            match tokio::task::spawn_blocking(move || task.read(paths, &reading)).await {
                Ok(read) => read,
                Err(_) => return,
            }
        };
        if events.is_empty() || context.sink.deliver(events, stopped).await.is_err() {
            return;
        }
        let warn =
            |e: String| tracing::warn!("filesource {}/{}: after delivering: {e}", context.namespace, context.name);
        match &self.after {
            After::Keep => {
                let positions: Vec<(&str, i64)> = reported.iter().map(|(_, key, v)| (key.as_str(), *v)).collect();
                if let Err(e) = context.positions.set(&positions).await {
                    warn(e.to_string());
                }
            }
            After::Delete => {
                for (path, _, _) in &reported {
                    if let Err(e) = std::fs::remove_file(path) {
                        warn(format!("{}: {e}", path.display()));
                    }
                }
            }
            After::Move(dir) => {
                for (path, _, _) in &reported {
                    if let Err(e) = move_into(path, &self.dir, dir) {
                        warn(format!("{}: {e}", path.display()));
                    }
                }
            }
        }
    }

    /// The events of the files not reported yet, with each file's path, position key and
    /// version.
    fn read(&self, paths: Vec<PathBuf>, context: &SourceContext) -> (Vec<(PathBuf, String, i64)>, Vec<CloudEvent>) {
        let mut reported = Vec::with_capacity(paths.len());
        let mut events = Vec::with_capacity(paths.len());
        for path in paths {
            let key = path.display().to_string();
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let version = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i64;
            if self.after == After::Keep && context.positions.get(&key).is_ok_and(|seen| seen == version) {
                continue;
            }
            match self.event(&path, &meta, modified, version, context) {
                Ok(event) => {
                    events.push(event);
                    reported.push((path, key, version));
                }
                // Gone or unreadable (e.g. still being replaced): a later change reports it.
                Err(e) => tracing::debug!("filesource {}/{}: {}: {e}", context.namespace, context.name, path.display()),
            }
        }
        (reported, events)
    }

    fn event(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        modified: SystemTime,
        version: i64,
        context: &SourceContext,
    ) -> Result<CloudEvent, String> {
        let relative = path.strip_prefix(&self.dir).unwrap_or(path).display().to_string();
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut inline = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if meta.len() <= INLINE_LIMIT && inline.len() as u64 + n as u64 <= INLINE_LIMIT {
                inline.extend_from_slice(&buf[..n]);
            }
        }
        let sha256 = hex_of(&hasher.finalize());
        let mut data = serde_json::json!({
            "path": path.display().to_string(),
            "name": relative,
            "size": meta.len(),
            "modified": humantime::format_rfc3339_micros(modified).to_string(),
            "sha256": sha256,
        });
        if meta.len() <= INLINE_LIMIT {
            data["contentBase64"] = base64::engine::general_purpose::STANDARD.encode(&inline).into();
        }
        // The same file version always gets the same id: a redelivery is recognisable.
        let id = hex_of(&Sha256::digest(format!("{}|{version}", path.display())))[..32].to_string();
        let source =
            format!("/apis/sources.serval.dev/v1alpha1/namespaces/{}/filesources/{}", context.namespace, context.name);
        let event = CloudEvent::builder()
            .id(id)
            .source(source)
            .event_type(FILE_EVENT_TYPE)
            .subject(relative)
            .time(humantime::format_rfc3339_micros(SystemTime::now()).to_string())
            .datacontenttype("application/json")
            .data(data)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(event)
    }
}

/// Whether a watch event says a file is completely written: closed after writing, or
/// moved (renamed) in.
fn written(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Moves `path` (under `from`) into `to`, keeping its place relative to `from`.
fn move_into(path: &Path, from: &Path, to: &Path) -> Result<(), String> {
    let target = to.join(path.strip_prefix(from).unwrap_or(path));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::rename(path, &target).map_err(|e| format!("moving to {}: {e}", target.display()))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
