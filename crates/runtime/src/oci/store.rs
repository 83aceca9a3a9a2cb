//! The content-addressed image store: an OCI image layout on disk.
//!
//! ```text
//! DIR/oci-layout              {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json              one entry per name (annotation org.opencontainers.image.ref.name)
//!                             plus unnamed entries for images kept only by digest
//! DIR/blobs/sha256/<hex>      manifests, configs, layers; each stored once
//! DIR/rootfs/<hex>/           unpacked root filesystem per image manifest digest
//! DIR/tmp/                    blobs being written (`<pid>-…`), renamed into blobs/ when whole
//! DIR/lock                    flock(2) serializing index changes and garbage collection
//! ```
//!
//! Invariants: a file under `blobs/` always has the sha256 its name says (written to `tmp/`,
//! verified, fsynced, renamed); `index.json` is replaced atomically; a `rootfs/<hex>` directory
//! is complete (unpacked under `rootfs/.tmp-<pid>-…`, then renamed). Leftovers of a crashed
//! process (temp files named after a pid that no longer runs) are removed by `open`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};
use tempfile::{NamedTempFile, TempPath};

use super::{
    ANNOTATION_REF_NAME, ConfigFile, Descriptor, HashingReader, ImageSummary, Index, LayerRef, MT_OCI_INDEX, Manifest,
    ResolvedImage, digest_hex, hex, is_sha256_hex, normalize_reference, unpack_layer,
};
use crate::RuntimeError;

/// Largest JSON document (manifest, config, index) the store reads into memory.
pub(crate) const MAX_JSON: u64 = 32 * 1024 * 1024;

/// A local image store in OCI image-layout form. Cheap to clone (shared state).
///
/// All methods but [`ImageStore::pull`] do blocking file IO.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// One lock per manifest digest being unpacked, so that concurrent `rootfs` calls for the
    /// same image in this process unpack it once.
    unpacking: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("dir", &self.inner.dir).finish()
    }
}

fn io_ctx(what: impl std::fmt::Display, e: io::Error) -> RuntimeError {
    RuntimeError::Image(format!("{what}: {e}"))
}

impl ImageStore {
    /// Opens (creating when needed) the store in `dir` and removes what crashed writers left
    /// in `tmp/` and `rootfs/.tmp-*`. Several processes may open the same directory: index
    /// changes are serialized by a file lock.
    pub fn open(dir: PathBuf) -> Result<ImageStore, RuntimeError> {
        for sub in ["blobs/sha256", "tmp", "rootfs"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_ctx(format!("creating {}", p.display()), e))?;
        }
        let store = ImageStore { inner: Arc::new(Inner { dir, unpacking: Mutex::new(HashMap::new()) }) };
        let layout = store.dir().join("oci-layout");
        if !layout.exists() {
            write_atomic(&store.dir().join("tmp"), &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock()?;
            if !store.index_path().exists() {
                store.write_index(&Index {
                    schema_version: 2,
                    media_type: Some(MT_OCI_INDEX.to_owned()),
                    manifests: Vec::new(),
                })?;
            }
        }
        store.remove_leftovers();
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Every image entry: one per name, plus unnamed images kept by digest.
    pub fn list(&self) -> Result<Vec<ImageSummary>, RuntimeError> {
        let index = self.read_index()?;
        let mut out = Vec::with_capacity(index.manifests.len());
        for d in &index.manifests {
            out.push(self.summary(entry_name(d), &d.digest)?);
        }
        Ok(out)
    }

    /// Finds an image by name (normalized: `busybox` finds `docker.io/library/busybox:latest`),
    /// by full digest (`sha256:<hex>`, or `name@sha256:<hex>`), or by a unique prefix of at
    /// least 12 hex digits of its digest. Fails with [`RuntimeError::ImageNotFound`].
    pub fn resolve(&self, name_or_digest: &str) -> Result<ResolvedImage, RuntimeError> {
        let index = self.read_index()?;
        let (name, digest) = find(&index, name_or_digest)?;
        let manifest = self.read_manifest(&digest)?;
        let config = self.read_config(&manifest.config.digest)?;
        Ok(ResolvedImage {
            name,
            digest,
            config_digest: manifest.config.digest.clone(),
            config: config.image_config(),
            layers: manifest
                .layers
                .iter()
                .map(|l| LayerRef { digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size })
                .collect(),
        })
    }

    /// Removes a name, or by digest (or unique digest prefix) every entry of that image; then
    /// deletes the blobs and unpacked root filesystems no remaining image references.
    /// The caller must make sure no instance still runs from a removed root filesystem.
    pub fn remove(&self, name_or_digest: &str) -> Result<(), RuntimeError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let (name, digest) = find(&index, name_or_digest)?;
        match name {
            Some(name) => index.manifests.retain(|d| entry_name(d).as_deref() != Some(name.as_str())),
            None => index.manifests.retain(|d| d.digest != digest),
        }
        self.write_index(&index)?;
        self.collect_garbage(&index)
    }

    /// Returns the directory holding the unpacked root filesystem of `image` (layers applied in
    /// order, whiteouts honoured). Unpacked once per manifest digest, into a temporary directory
    /// renamed into place, so concurrent callers (threads or processes) and crashes never see
    /// a partial tree. Every layer's digest is checked again while it is read. The directory
    /// is shared by all users of the image: mount it read-only (or as an overlay lower dir).
    pub fn rootfs(&self, image: &ResolvedImage) -> Result<PathBuf, RuntimeError> {
        let hex = digest_hex(&image.digest, "image")?;
        let root_dir = self.dir().join("rootfs");
        let dest = root_dir.join(hex);
        if dest.is_dir() {
            return Ok(dest);
        }
        let guard = {
            let mut map = self.inner.unpacking.lock().expect("unpacking map lock is never poisoned by a panic in it");
            map.entry(hex.to_owned()).or_default().clone()
        };
        let _unpacking = guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", std::process::id()))
            .tempdir_in(&root_dir)
            .map_err(|e| io_ctx(format!("creating a directory in {}", root_dir.display()), e))?;
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o755)).map_err(|e| io_ctx(tmp.path().display(), e))?;
        for layer in &image.layers {
            let path = self.blob_path(&layer.digest)?;
            let file = File::open(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    RuntimeError::Image(format!(
                        "layer {} of image {} is missing from the image store; import or pull the image again",
                        layer.digest, image.digest
                    ))
                } else {
                    io_ctx(path.display(), e)
                }
            })?;
            let mut reader = HashingReader::new(io::BufReader::with_capacity(256 * 1024, file));
            unpack_layer(&mut reader, &layer.media_type, tmp.path()).map_err(|e| match e {
                RuntimeError::UnpackRejected(m) => {
                    RuntimeError::UnpackRejected(format!("{m} (layer {} of image {})", layer.digest, image.digest))
                }
                other => other,
            })?;
            let (actual, _) = reader.finish().map_err(|e| io_ctx(path.display(), e))?;
            if actual != layer.digest {
                return Err(RuntimeError::Image(format!(
                    "layer {} is corrupt in the image store (its content hashes to {actual}); remove and re-import the image",
                    layer.digest
                )));
            }
        }
        let unpacked = tmp.keep();
        match fs::rename(&unpacked, &dest) {
            Ok(()) => {
                sync_dir(&root_dir);
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&unpacked);
                // Another process renamed its copy first: use that one.
                if dest.is_dir() { Ok(dest) } else { Err(io_ctx(format!("renaming into {}", dest.display()), e)) }
            }
        }
    }

    // ---- crate-internal: blobs ----------------------------------------------------------

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, RuntimeError> {
        Ok(self.dir().join("blobs/sha256").join(digest_hex(digest, "blob")?))
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// A temporary file in `tmp/` that hashes what is written to it.
    pub(crate) fn blob_writer(&self) -> Result<BlobWriter, RuntimeError> {
        let tmp_dir = self.dir().join("tmp");
        let file = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempfile_in(&tmp_dir)
            .map_err(|e| io_ctx(format!("creating a file in {}", tmp_dir.display()), e))?;
        Ok(BlobWriter { file, hasher: Sha256::new(), size: 0 })
    }

    /// Stages `data` as a blob.
    pub(crate) fn stage_bytes(&self, data: &[u8]) -> Result<StagedBlob, RuntimeError> {
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(|e| io_ctx("writing a blob", e))?;
        w.finish()
    }

    /// Reads a blob that must be a small JSON document.
    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let path = self.blob_path(digest)?;
        read_limited(&path, MAX_JSON).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                RuntimeError::Image(format!("blob {digest} is missing from the image store"))
            } else {
                io_ctx(format!("reading blob {digest}"), e)
            }
        })
    }

    fn read_manifest(&self, digest: &str) -> Result<Manifest, RuntimeError> {
        serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| RuntimeError::Image(format!("manifest {digest} in the image store is invalid: {e}")))
    }

    fn read_config(&self, digest: &str) -> Result<ConfigFile, RuntimeError> {
        serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| RuntimeError::Image(format!("image config {digest} in the image store is invalid: {e}")))
    }

    pub(crate) fn summary(&self, name: Option<String>, digest: &str) -> Result<ImageSummary, RuntimeError> {
        let manifest_bytes = self.read_blob(digest)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| RuntimeError::Image(format!("manifest {digest} in the image store is invalid: {e}")))?;
        let created = self.read_config(&manifest.config.digest)?.created;
        let size =
            manifest_bytes.len() as u64 + manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(ImageSummary { name, digest: digest.to_owned(), size, created })
    }

    /// Moves `staged` blobs into `blobs/`, checks that every blob of each image is present,
    /// and points the images' names (or unnamed entries) at their manifests — all under the
    /// store lock, so that a concurrent `remove` cannot collect blobs in between.
    pub(crate) fn commit(
        &self,
        staged: impl IntoIterator<Item = StagedBlob>,
        images: &[CommitImage],
    ) -> Result<(), RuntimeError> {
        let _lock = self.lock()?;
        for blob in staged {
            blob.persist(self)?;
        }
        sync_dir(&self.dir().join("blobs/sha256"));
        for image in images {
            for digest in &image.blobs {
                if !self.has_blob(digest) {
                    return Err(RuntimeError::Image(format!(
                        "blob {digest} was removed from the image store while image {} was being stored; try again",
                        image.manifest.digest
                    )));
                }
            }
        }
        let mut index = self.read_index()?;
        for image in images {
            if image.names.is_empty() {
                add_entry(&mut index, None, &image.manifest);
            }
            for name in &image.names {
                add_entry(&mut index, Some(name), &image.manifest);
            }
        }
        self.write_index(&index)
    }

    // ---- index ------------------------------------------------------------------------------

    fn index_path(&self) -> PathBuf {
        self.dir().join("index.json")
    }

    fn lock(&self) -> Result<Flock<File>, RuntimeError> {
        let path = self.dir().join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_ctx(format!("opening {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_ctx(format!("locking {}", path.display()), io::Error::from(errno)))
    }

    fn read_index(&self) -> Result<Index, RuntimeError> {
        let path = self.index_path();
        let data = read_limited(&path, MAX_JSON).map_err(|e| io_ctx(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Image(format!("{} is invalid: {e}", path.display())))
    }

    fn write_index(&self, index: &Index) -> Result<(), RuntimeError> {
        let data = serde_json::to_vec_pretty(index).expect("an index always serializes");
        write_atomic(&self.dir().join("tmp"), &self.index_path(), &data)
    }

    /// Deletes blobs and root filesystems that no image in `index` references. Called with
    /// the lock held. A manifest that cannot be read stops the collection (nothing deleted).
    fn collect_garbage(&self, index: &Index) -> Result<(), RuntimeError> {
        let mut keep: HashSet<String> = HashSet::new();
        let mut manifests: HashSet<String> = HashSet::new();
        for d in &index.manifests {
            let hex = digest_hex(&d.digest, "index.json entry")?.to_owned();
            let manifest = self.read_manifest(&d.digest)?;
            keep.insert(hex.clone());
            manifests.insert(hex);
            keep.insert(digest_hex(&manifest.config.digest, "manifest config")?.to_owned());
            for layer in &manifest.layers {
                keep.insert(digest_hex(&layer.digest, "manifest layer")?.to_owned());
            }
        }
        let blobs = self.dir().join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(|e| io_ctx(blobs.display(), e))? {
            let entry = entry.map_err(|e| io_ctx(blobs.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name)
                && let Err(e) = fs::remove_file(entry.path())
            {
                tracing::warn!(blob = %name, error = %e, "cannot delete unreferenced blob");
            }
        }
        let rootfs = self.dir().join("rootfs");
        for entry in fs::read_dir(&rootfs).map_err(|e| io_ctx(rootfs.display(), e))? {
            let entry = entry.map_err(|e| io_ctx(rootfs.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_sha256_hex(&name)
                && !manifests.contains(&name)
                && let Err(e) = fs::remove_dir_all(entry.path())
            {
                tracing::warn!(rootfs = %name, error = %e, "cannot delete unused root filesystem");
            }
        }
        Ok(())
    }

    /// Removes `tmp/<pid>-*` and `rootfs/.tmp-<pid>-*` left by processes that no longer run.
    fn remove_leftovers(&self) {
        let me = std::process::id();
        let scan = |dir: PathBuf, prefix: &str| {
            let Ok(entries) = fs::read_dir(&dir) else { return };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(prefix) else { continue };
                let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
                if pid != me && !process_alive(pid) {
                    let path = entry.path();
                    let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    if let Err(e) = result {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover");
                    }
                }
            }
        };
        scan(self.dir().join("tmp"), "");
        scan(self.dir().join("rootfs"), ".tmp-");
    }
}

/// An image to record in the index: its manifest descriptor, the names to point at it (none:
/// an unnamed entry) and every blob it needs.
pub(crate) struct CommitImage {
    pub names: Vec<String>,
    pub manifest: Descriptor,
    pub blobs: Vec<String>,
}

/// Writes a blob into `tmp/` while hashing it.
pub(crate) struct BlobWriter {
    file: NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    pub(crate) fn written(&self) -> u64 {
        self.size
    }

    /// Flushes and fsyncs the file and returns it as a staged blob with its digest.
    pub(crate) fn finish(mut self) -> Result<StagedBlob, RuntimeError> {
        let staged = (|| {
            self.file.flush()?;
            self.file.as_file().set_permissions(Permissions::from_mode(0o644))?;
            self.file.as_file().sync_all()?;
            io::Result::Ok(())
        })();
        staged.map_err(|e| io_ctx("writing a blob", e))?;
        Ok(StagedBlob {
            digest: format!("sha256:{}", hex(&self.hasher.finalize())),
            size: self.size,
            tmp: Some(self.file.into_temp_path()),
        })
    }
}

/// A verified, fsynced blob waiting in `tmp/` (deleted when dropped unless persisted).
#[derive(Debug)]
pub(crate) struct StagedBlob {
    pub digest: String,
    pub size: u64,
    tmp: Option<TempPath>,
}

impl StagedBlob {
    /// Where the content is now (the temporary file).
    pub(crate) fn path(&self) -> Option<&Path> {
        self.tmp.as_deref()
    }

    /// Checks the content against the digest (and size) it was announced with.
    pub(crate) fn expect(&self, digest: &str, size: Option<u64>, what: &str) -> Result<(), RuntimeError> {
        if self.digest != digest {
            return Err(RuntimeError::Image(format!(
                "digest mismatch for {what}: expected {digest}, but the content hashes to {}",
                self.digest
            )));
        }
        if let Some(size) = size
            && size != self.size
        {
            return Err(RuntimeError::Image(format!(
                "size mismatch for {what}: expected {size} bytes, found {}",
                self.size
            )));
        }
        Ok(())
    }

    /// Renames the file to `blobs/sha256/<hex>` (or drops it when the store has that blob).
    fn persist(mut self, store: &ImageStore) -> Result<(), RuntimeError> {
        let Some(tmp) = self.tmp.take() else { return Ok(()) };
        let dest = store.blob_path(&self.digest)?;
        if dest.is_file() {
            return Ok(()); // `tmp` is deleted on drop
        }
        tmp.persist(&dest).map_err(|e| io_ctx(format!("storing blob {}", self.digest), e.error))
    }
}

fn entry_name(d: &Descriptor) -> Option<String> {
    d.annotations.get(ANNOTATION_REF_NAME).cloned()
}

/// Points `name` (or an unnamed entry) at `manifest`. A name moving away from an image that
/// nothing else names leaves that image as an unnamed entry (it stays resolvable by digest,
/// as instances started from it may still need it).
fn add_entry(index: &mut Index, name: Option<&str>, manifest: &Descriptor) {
    let entry = |name: Option<&str>| Descriptor {
        media_type: manifest.media_type.clone(),
        digest: manifest.digest.clone(),
        size: manifest.size,
        annotations: name.map(|n| BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), n.to_owned())])).unwrap_or_default(),
        platform: None,
    };
    match name {
        None => {
            if !index.manifests.iter().any(|d| d.digest == manifest.digest) {
                index.manifests.push(entry(None));
            }
        }
        Some(name) => {
            match index.manifests.iter().position(|d| entry_name(d).as_deref() == Some(name)) {
                Some(pos) if index.manifests[pos].digest == manifest.digest => return,
                Some(pos) => {
                    let mut old = std::mem::replace(&mut index.manifests[pos], entry(Some(name)));
                    if !index.manifests.iter().any(|d| d.digest == old.digest) {
                        old.annotations.clear();
                        index.manifests.push(old);
                    }
                }
                None => index.manifests.push(entry(Some(name))),
            }
            index.manifests.retain(|d| d.digest != manifest.digest || entry_name(d).is_some());
        }
    }
}

/// `(name it was found by, manifest digest)`.
fn find(index: &Index, query: &str) -> Result<(Option<String>, String), RuntimeError> {
    let query = query.trim();
    if let Ok(name) = normalize_reference(query)
        && let Some(d) = index.manifests.iter().find(|d| entry_name(d).as_deref() == Some(name.as_str()))
    {
        return Ok((Some(name), d.digest.clone()));
    }
    let hex_part = query.rsplit_once('@').map_or(query, |(_, d)| d);
    let hex_part = hex_part.strip_prefix("sha256:").unwrap_or(hex_part);
    if hex_part.len() >= 12 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        let wanted = format!("sha256:{}", hex_part.to_ascii_lowercase());
        let mut digests: Vec<&str> =
            index.manifests.iter().map(|d| d.digest.as_str()).filter(|d| d.starts_with(&wanted)).collect();
        digests.sort_unstable();
        digests.dedup();
        match digests.as_slice() {
            [one] => return Ok((None, (*one).to_owned())),
            [] => {}
            _ => return Err(RuntimeError::Image(format!("{query:?} matches several images; give more digits"))),
        }
    }
    Err(RuntimeError::ImageNotFound(query.to_owned()))
}

fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(data)
}

/// Writes `dest` atomically: temp file in `tmp_dir` (same file system), fsync, rename, fsync
/// of the directory.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    let result = (|| {
        let mut tmp = tempfile::Builder::new().prefix(&format!("{}-", std::process::id())).tempfile_in(tmp_dir)?;
        tmp.write_all(data)?;
        tmp.as_file().set_permissions(Permissions::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(dest).map_err(|e| e.error)?;
        io::Result::Ok(())
    })();
    result.map_err(|e| io_ctx(format!("writing {}", dest.display()), e))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Makes renames in `dir` durable (best effort: a failure only weakens durability).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot fsync directory");
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}
