//! The back half of `serval build`: runs a [`serval_build`] plan into an OCI image in the
//! local image store, without a daemon.
//!
//! Owns: base images (found in the store, else pulled), the stages' state (layers, image
//! config, cache key, a root filesystem materialized only when a step needs one), `COPY`/`ADD`
//! layers written from the context or another stage, `RUN` executed by the OCI runtime
//! (`runc`) over the stage's root filesystem and turned into a layer by comparing the tree
//! before and after (`diff`), the layer cache (`cache`: step key → layer, in a directory of
//! small JSON records), and the final image written and named in the store only at the end,
//! so an interrupted build leaves no image behind.
//!
//! Must not depend on: the API, the control plane, the network beyond registry pulls of
//! base images, or the server: it runs in the CLI's process on the same data directory
//! the server reads images from.

mod cache;
mod diff;
mod run;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use serval_build::{
    Base, BaseConfig, BuildOptions, ConfigStep, Context, CopySource, CopyStep, EntryKind, Ignore, Network, Platform,
    Selection, Step, base_key_image, base_key_scratch, step_key,
};
use serval_runtime::oci::{
    ImageStore, ImageSummary, LayerRef, RegistryAuth, ResolvedImage, normalize_reference, unpack_layer,
};

/// Errors of a build; each names the step (its Containerfile line) where it can.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The Containerfile, the context or the plan is wrong.
    #[error(transparent)]
    Plan(#[from] serval_build::BuildError),
    /// A base image that is neither in the store nor pullable.
    #[error("unknown base image {reference}: {message}")]
    UnknownBase { reference: String, message: String },
    /// A `RUN` that exited non-zero.
    #[error("Containerfile:{line}: RUN exited with code {code}{}", tail_note(.tail))]
    RunFailed { line: usize, code: i32, tail: Vec<String> },
    /// A step that could not be carried out.
    #[error("Containerfile:{line}: {message}")]
    Step { line: usize, message: String },
    #[error(transparent)]
    Store(#[from] serval_runtime::RuntimeError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

fn tail_note(tail: &[String]) -> String {
    if tail.is_empty() { String::new() } else { format!("; last output:\n{}", tail.join("\n")) }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context (the project directory).
    pub context: PathBuf,
    /// The Containerfile (default: the context's `Containerfile`, else `Dockerfile`).
    pub containerfile: Option<PathBuf>,
    /// The Containerfile's text itself (a generated one), instead of a file.
    pub containerfile_text: Option<String>,
    /// Names for the image (normalized like Docker's; none: the image is kept by digest).
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `Host` shares the host's network with `RUN`; otherwise `RUN` has only a loopback.
    pub network: Network,
    /// Ignore the layer cache (it is still refreshed).
    pub no_cache: bool,
    /// Credentials for pulling base images the store lacks.
    pub registry_auth: RegistryAuth,
}

/// What a build reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Step `number` of `total` starts (`FROM` lines count as steps).
    Step { number: usize, total: usize, text: String },
    /// The step's layer came from the cache.
    Cached,
    /// A line a `RUN` printed.
    Output(String),
    /// Something the user should know (an unused build argument, an ignored instruction).
    Warning(String),
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: ImageSummary,
    /// Steps with a layer of their own, and how many of them the cache answered.
    pub layer_steps: usize,
    pub cached: usize,
}

/// Builds images into one image store.
pub struct Builder {
    store: ImageStore,
    cache: cache::LayerCache,
    /// Where stages' root filesystems and bundles are made (removed after the build).
    scratch: PathBuf,
    /// The OCI runtime CLI that runs `RUN` steps.
    runc: PathBuf,
}

/// A stage while it is built.
#[derive(Clone)]
struct StageState {
    /// The cache key of everything so far.
    key: String,
    layers: Vec<(LayerRef, String)>,
    /// The OCI image config document.
    config: Value,
    /// The root filesystem with every layer applied, when one was needed and is current.
    rootfs: Option<Arc<tempfile::TempDir>>,
    /// Whether `CMD` came from the base image (a new `ENTRYPOINT` then clears it, as Docker does).
    cmd_inherited: bool,
}

impl Builder {
    /// A builder on `store`, keeping its layer cache in `cache_dir` and its scratch space in
    /// `scratch_dir` (both created when needed), running `RUN` with `runc`.
    pub fn new(
        store: ImageStore,
        cache_dir: &Path,
        scratch_dir: &Path,
        runc: PathBuf,
    ) -> Result<Builder, BuilderError> {
        std::fs::create_dir_all(scratch_dir)?;
        Ok(Builder { store, cache: cache::LayerCache::open(cache_dir)?, scratch: scratch_dir.to_path_buf(), runc })
    }

    /// Runs the build; `progress` hears about each step as it starts.
    pub async fn build(
        &self,
        request: &BuildRequest,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Built, BuilderError> {
        let context = Context::open(&request.context)?;
        let text = match (&request.containerfile_text, &request.containerfile) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => serval_build::read_containerfile(path)?,
            (None, None) => serval_build::read_containerfile(&context.containerfile_path()?)?,
        };
        let file = serval_build::parse(&text).map_err(serval_build::BuildError::from)?;
        let mut options = BuildOptions {
            build_args: request.build_args.clone(),
            target: request.target.clone(),
            network: request.network,
            platform: Platform::host(),
            bases: BTreeMap::new(),
        };
        // Planned twice: base images' environment, workdir and user feed the second plan.
        let first = serval_build::plan(&file, &options)?;
        let mut bases = BTreeMap::new();
        for reference in first.images() {
            let image = self.base_image(reference, &request.registry_auth, progress).await?;
            options.bases.insert(reference.to_string(), base_config(&image.config));
            bases.insert(reference.to_string(), image);
        }
        let plan = serval_build::plan(&file, &options)?;
        for warning in &plan.warnings {
            progress(Progress::Warning(warning.clone()));
        }
        let total: usize = plan.stages.iter().map(|s| s.steps.len() + 1).sum();
        let mut number = 0;
        let (mut layer_steps, mut cached) = (0, 0);
        let mut done: BTreeMap<usize, StageState> = BTreeMap::new();
        for stage in &plan.stages {
            number += 1;
            let from = match &stage.base {
                Base::Scratch => "scratch".to_string(),
                Base::Image(reference) => reference.clone(),
                Base::Stage(i) => format!("stage {i}"),
            };
            progress(Progress::Step { number, total, text: format!("FROM {from}") });
            let mut state = match &stage.base {
                Base::Scratch => StageState {
                    key: base_key_scratch(),
                    layers: Vec::new(),
                    config: scratch_config(&options.platform),
                    rootfs: None,
                    cmd_inherited: false,
                },
                Base::Image(reference) => {
                    let image = &bases[reference];
                    let config = self.store.config_document(image)?;
                    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
                    let layers = image
                        .layers
                        .iter()
                        .zip(diff_ids.iter().map(|d| d.as_str().unwrap_or_default().to_string()))
                        .map(|(l, d)| (l.clone(), d))
                        .collect();
                    let cmd_inherited = config["config"]["Cmd"].is_array();
                    StageState { key: base_key_image(&image.digest), layers, config, rootfs: None, cmd_inherited }
                }
                // Its own tree: a RUN here must not change the stage it starts from.
                Base::Stage(i) => done.get(i).cloned().map(|s| StageState { rootfs: None, ..s }).ok_or_else(|| {
                    BuilderError::Step {
                        line: stage.line,
                        message: format!("stage {i} was not built before it is used"),
                    }
                })?,
            };
            for step in &stage.steps {
                number += 1;
                let line = step.line;
                let text = step.value.cache_text();
                progress(Progress::Step { number, total, text: describe(&step.value) });
                match &step.value {
                    Step::Config(config) => {
                        apply_config(&mut state, config);
                        state.key = step_key(&state.key, &text, "");
                        history(&mut state.config, &text, true);
                    }
                    Step::Copy(copy) => {
                        layer_steps += 1;
                        let (selection, input) = self.copy_selection(copy, &context, &mut done, line)?;
                        let key = step_key(&state.key, &text, &input);
                        if self.reuse(&mut state, &key, request.no_cache) {
                            cached += 1;
                            progress(Progress::Cached);
                        } else {
                            let owner = match copy.chown.as_deref() {
                                None => None,
                                Some(chown) => Some(match numeric_owner(chown) {
                                    Some(ids) => ids,
                                    // Names are looked up in the stage's own passwd and group.
                                    None => {
                                        let rootfs = self.rootfs(&mut state).await?;
                                        let (uid, gid) =
                                            serval_runtime::container::resolve_user(Some(chown), rootfs.path())
                                                .map_err(|m| BuilderError::Step {
                                                    line,
                                                    message: format!("--chown={chown}: {m}"),
                                                })?;
                                        (u64::from(uid), u64::from(gid))
                                    }
                                }),
                            };
                            let (dest, copy_step) = (copy.dest.clone(), copy.clone());
                            let store = self.store.clone();
                            let stored = tokio::task::spawn_blocking(move || {
                                store.write_layer(|out| write_copy_layer(out, &selection, &copy_step, &dest, owner))
                            })
                            .await
                            .map_err(|e| BuilderError::Step { line, message: e.to_string() })??;
                            self.cache.record(&key, &stored)?;
                            self.push_layer(&mut state, stored.layer, stored.diff_id, key);
                        }
                        history(&mut state.config, &text, false);
                    }
                    Step::Run(run) => {
                        layer_steps += 1;
                        let key = step_key(&state.key, &text, "");
                        if self.reuse(&mut state, &key, request.no_cache) {
                            cached += 1;
                            progress(Progress::Cached);
                        } else {
                            let rootfs = self.rootfs(&mut state).await?;
                            let before = diff::Snapshot::take(rootfs.path())?;
                            run::run(&self.runc, &self.scratch, rootfs.path(), run, line, progress).await?;
                            let root = rootfs.path().to_path_buf();
                            let store = self.store.clone();
                            let stored = tokio::task::spawn_blocking(move || {
                                store.write_layer(|out| diff::write_layer(out, &before, &root))
                            })
                            .await
                            .map_err(|e| BuilderError::Step { line, message: e.to_string() })??;
                            self.cache.record(&key, &stored)?;
                            let rootfs = state.rootfs.take();
                            self.push_layer(&mut state, stored.layer, stored.diff_id, key);
                            // The tree already has the change the new layer records.
                            state.rootfs = rootfs;
                        }
                        history(&mut state.config, &text, false);
                    }
                }
            }
            done.insert(stage.index, state);
        }
        let target = done
            .remove(&plan.target)
            .ok_or_else(|| BuilderError::Step { line: 0, message: "the target stage was not built".to_string() })?;
        let mut config = target.config;
        config["created"] = json!(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        config["rootfs"] =
            json!({ "type": "layers", "diff_ids": target.layers.iter().map(|(_, d)| d).collect::<Vec<_>>() });
        let names = request.tags.iter().map(|t| normalize_reference(t)).collect::<Result<Vec<_>, _>>()?;
        let layers: Vec<LayerRef> = target.layers.into_iter().map(|(l, _)| l).collect();
        let store = self.store.clone();
        let image = tokio::task::spawn_blocking(move || store.store_image(&config, &layers, &names))
            .await
            .map_err(|e| BuilderError::Step { line: 0, message: e.to_string() })??;
        Ok(Built { image, layer_steps, cached })
    }

    /// A base image from the store, pulled with `auth` when the store lacks it.
    async fn base_image(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ResolvedImage, BuilderError> {
        let store = self.store.clone();
        let name = reference.to_string();
        let found = tokio::task::spawn_blocking(move || store.resolve(&name)).await.ok();
        if let Some(Ok(resolved)) = found {
            return Ok(resolved);
        }
        progress(Progress::Output(format!("pulling {reference}")));
        let pulled = self.store.pull(reference, auth.clone(), |_| {}).await.map_err(|e| BuilderError::UnknownBase {
            reference: reference.to_string(),
            message: format!("not in the image store, and {e}"),
        })?;
        Ok(self.store.resolve(&pulled.digest)?)
    }

    /// The files a `COPY`/`ADD` copies and the digest of what they are.
    fn copy_selection(
        &self,
        copy: &CopyStep,
        context: &Context,
        done: &mut BTreeMap<usize, StageState>,
        line: usize,
    ) -> Result<(Selection, String), BuilderError> {
        match &copy.from {
            CopySource::Context => {
                let selection = context.select(&copy.sources)?;
                let digest = selection.digest()?;
                Ok((selection, digest))
            }
            CopySource::Stage(i) => {
                let stage = done.get_mut(i).ok_or_else(|| BuilderError::Step {
                    line,
                    message: format!("COPY --from: stage {i} was not built before this step"),
                })?;
                // Materialized here (synchronously: the stage's layers are in the store) and
                // kept for the stage's later users.
                let rootfs = match &stage.rootfs {
                    Some(rootfs) => rootfs.clone(),
                    None => {
                        let dir = Arc::new(materialize(&self.store, &self.scratch, &stage.layers)?);
                        stage.rootfs = Some(dir.clone());
                        dir
                    }
                };
                let selection = Context::with_ignore(rootfs.path(), Ignore::empty())?.select(&copy.sources)?;
                Ok((selection, stage.key.clone()))
            }
            CopySource::Image(reference) => {
                let image = self
                    .store
                    .resolve(reference)
                    .map_err(|e| BuilderError::UnknownBase { reference: reference.clone(), message: e.to_string() })?;
                let root = self.store.rootfs(&image)?;
                let selection = Context::with_ignore(&root, Ignore::empty())?.select(&copy.sources)?;
                Ok((selection, image.digest))
            }
        }
    }

    /// On a cache hit (and not `--no-cache`), takes the cached layer; the stage's tree is
    /// then stale.
    fn reuse(&self, state: &mut StageState, key: &str, no_cache: bool) -> bool {
        if no_cache {
            return false;
        }
        let Some(hit) = self.cache.lookup(key).filter(|hit| self.store.holds_blob(&hit.layer.digest)) else {
            return false;
        };
        self.push_layer(state, hit.layer, hit.diff_id, key.to_string());
        true
    }

    fn push_layer(&self, state: &mut StageState, layer: LayerRef, diff_id: String, key: String) {
        state.layers.push((layer, diff_id));
        state.key = key;
        state.rootfs = None;
    }

    /// The stage's root filesystem, materialized from its layers when it is not current.
    async fn rootfs(&self, state: &mut StageState) -> Result<Arc<tempfile::TempDir>, BuilderError> {
        if let Some(rootfs) = &state.rootfs {
            return Ok(rootfs.clone());
        }
        let (store, scratch, layers) = (self.store.clone(), self.scratch.clone(), state.layers.clone());
        let dir = tokio::task::spawn_blocking(move || materialize(&store, &scratch, &layers))
            .await
            .map_err(|e| BuilderError::Io(std::io::Error::other(e)))??;
        let dir = Arc::new(dir);
        state.rootfs = Some(dir.clone());
        Ok(dir)
    }
}

/// A root filesystem with `layers` applied in order, in a new directory under `scratch`.
fn materialize(
    store: &ImageStore,
    scratch: &Path,
    layers: &[(LayerRef, String)],
) -> Result<tempfile::TempDir, BuilderError> {
    let dir = tempfile::Builder::new().prefix("rootfs-").tempdir_in(scratch)?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    for (layer, _) in layers {
        let blob = std::io::BufReader::new(store.open_blob(&layer.digest)?);
        unpack_layer(blob, &layer.media_type, dir.path())?;
    }
    Ok(dir)
}

/// What the plan takes from a base image's config.
fn base_config(config: &serval_runtime::oci::ImageConfig) -> BaseConfig {
    BaseConfig {
        env: config.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect(),
        workdir: config.working_dir.clone(),
        user: config.user.clone(),
    }
}

/// The config document of a `FROM scratch` stage.
fn scratch_config(platform: &Platform) -> Value {
    json!({
        "architecture": platform.arch,
        "os": platform.os,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [] },
        "history": []
    })
}

/// Appends a history entry (`empty_layer` for steps without a layer).
fn history(config: &mut Value, created_by: &str, empty: bool) {
    let mut entry = json!({ "created_by": created_by });
    if empty {
        entry["empty_layer"] = json!(true);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = json!([entry]),
    }
}

/// A step as the progress line shows it.
fn describe(step: &Step) -> String {
    match step {
        Step::Run(run) => format!("RUN {}", run.argv.join(" ")),
        Step::Copy(copy) => {
            format!("{} {} {}", if copy.add { "ADD" } else { "COPY" }, copy.sources.join(" "), copy.dest)
        }
        Step::Config(_) => step.cache_text(),
    }
}

/// Applies a config-only step to the stage's image config.
fn apply_config(state: &mut StageState, step: &ConfigStep) {
    let config = &mut state.config["config"];
    if !config.is_object() {
        *config = json!({});
    }
    match step {
        ConfigStep::Env(pairs) => {
            let mut env: Vec<String> = config["Env"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            for (k, v) in pairs {
                env.retain(|kv| kv.split_once('=').is_none_or(|(key, _)| key != k));
                env.push(format!("{k}={v}"));
            }
            config["Env"] = json!(env);
        }
        ConfigStep::Workdir(dir) => config["WorkingDir"] = json!(dir),
        ConfigStep::User(user) => config["User"] = json!(user),
        ConfigStep::Expose(ports) => {
            for port in ports {
                let port = if port.contains('/') { port.clone() } else { format!("{port}/tcp") };
                config["ExposedPorts"][port] = json!({});
            }
        }
        ConfigStep::Label(pairs) => {
            for (k, v) in pairs {
                config["Labels"][k] = json!(v);
            }
        }
        ConfigStep::Entrypoint(argv) => {
            config["Entrypoint"] = json!(argv);
            if state.cmd_inherited {
                config["Cmd"] = Value::Null;
                state.cmd_inherited = false;
            }
        }
        ConfigStep::Cmd(argv) => {
            config["Cmd"] = json!(argv);
            state.cmd_inherited = false;
        }
        ConfigStep::StopSignal(signal) => config["StopSignal"] = json!(signal),
        ConfigStep::Volume(paths) => {
            for path in paths {
                config["Volumes"][path] = json!({});
            }
        }
        ConfigStep::Author(author) => state.config["author"] = json!(author),
    }
}

/// `uid[:gid]` of `--chown` when numeric (a lone uid is also the gid, as in Docker).
fn numeric_owner(text: &str) -> Option<(u64, u64)> {
    let (user, group) = text.split_once(':').unwrap_or((text, text));
    Some((user.parse().ok()?, group.parse().ok()?))
}

/// The tar of a `COPY`/`ADD`: each selected source under `dest` (a file source into a
/// directory destination keeps its name), with `--chown`/`--chmod` applied.
fn write_copy_layer(
    out: &mut dyn Write,
    selection: &Selection,
    copy: &CopyStep,
    dest: &str,
    owner: Option<(u64, u64)>,
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let dest = dest.trim_start_matches('/').trim_end_matches('/');
    for source in &selection.sources {
        for entry in &source.entries {
            // A directory's contents, or files into a directory, go under `dest`; one file
            // to a destination without a trailing `/` is written as `dest`.
            let path = if source.is_dir || copy.dest_is_dir || selection.sources.len() > 1 {
                join(dest, &entry.rel)
            } else {
                dest.to_string()
            };
            if path.is_empty() {
                continue; // the destination directory itself
            }
            let mut header = tar::Header::new_gnu();
            let mode = copy.chmod.unwrap_or(entry.mode);
            header.set_mode(mode);
            let (uid, gid) = owner.unwrap_or((0, 0));
            header.set_uid(uid);
            header.set_gid(gid);
            let meta = std::fs::symlink_metadata(&entry.host_path)?;
            header.set_mtime(std::os::unix::fs::MetadataExt::mtime(&meta).max(0) as u64);
            match &entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    tar.append_data(&mut header, &path, std::io::empty())?;
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, &path, target)?;
                }
                EntryKind::File { .. }
                    if copy.add && copy.from == CopySource::Context && is_archive(&entry.host_path) =>
                {
                    // ADD unpacks a local archive into the destination directory.
                    unpack_into(&mut tar, &entry.host_path, dest)?;
                }
                EntryKind::File { size } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(*size);
                    let file = std::fs::File::open(&entry.host_path)?;
                    tar.append_data(&mut header, &path, std::io::Read::take(file, *size))?;
                }
            }
        }
    }
    tar.finish()
}

/// Whether a file is a tar archive, plain or gzip-compressed (what `ADD` unpacks).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let read = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    (read >= 2 && head[..2] == [0x1f, 0x8b]) || (read >= 262 && &head[257..262] == b"ustar")
}

/// Copies the entries of the archive at `path` under `dest` into `tar`; entries that
/// would leave `dest` (absolute or `..`) and special files are skipped.
fn unpack_into<W: Write>(tar: &mut tar::Builder<W>, path: &Path, dest: &str) -> std::io::Result<()> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let gzip = std::io::BufRead::fill_buf(&mut file)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn std::io::Read> =
        if gzip { Box::new(flate2::bufread::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().trim_start_matches("./").trim_start_matches('/').to_string();
        if name.is_empty() || name.split('/').any(|c| c == "..") {
            continue;
        }
        let target = join(dest, name.trim_end_matches('/'));
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory => tar.append_data(&mut header, &target, &mut entry)?,
            tar::EntryType::Symlink => {
                let link = entry.link_name()?.unwrap_or_default().into_owned();
                tar.append_link(&mut header, &target, link)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `dir/rel`, `/`-separated, without a leading slash.
fn join(dir: &str, rel: &str) -> String {
    match (dir.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{rel}"),
    }
}
