//! Secure layer unpacking: applies one OCI layer (a tar, maybe compressed) onto a directory.
//!
//! Every entry's path is checked by hand: absolute paths and `..` components are rejected;
//! parent directories are walked one component at a time with `symlink_metadata`, following
//! a symbolic link only when its target is relative and stays inside the root; an entry that
//! would be written through a link pointing elsewhere (absolute, or climbing above the root)
//! is rejected. The entry itself is never written through a link: whatever is in its place
//! is removed first and files are created with `O_EXCL`. Hard-link targets go through the
//! same checks. Device nodes and FIFOs are skipped. Whiteouts (`.wh.<name>`) delete what
//! lower layers put there, `.wh..wh..opq` empties a directory of lower-layer content.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tar::EntryType;

use super::{Compression, layer_compression, sniff_compression};
use crate::RuntimeError;

/// How many symbolic links one path may traverse (Linux's own limit).
const MAX_LINK_HOPS: u32 = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Applies the layer read from `reader` (compressed as `media_type` says) onto `dest`, an
/// existing directory holding the layers below it.
///
/// Contract: on success the directory holds the union with whiteouts applied; modes
/// (including setuid/setgid/sticky), ownership (when running as root) and mtimes are taken
/// from the archive. On error ([`RuntimeError::UnpackRejected`] for unsafe entries, `Image`
/// for a corrupt archive) `dest` may hold part of the layer and must be discarded, but
/// nothing has been written, created or deleted outside `dest`. The reader is read to its
/// end so that a caller hashing it sees every byte.
pub fn unpack_layer(reader: impl Read, media_type: &str, dest: &Path) -> Result<(), RuntimeError> {
    let compression = layer_compression(media_type)
        .ok_or_else(|| RuntimeError::Image(format!("unsupported layer media type {media_type:?}")))?;
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    // Plain-tar media types are sometimes used for compressed blobs; the magic decides.
    let compression = match compression {
        Compression::None => sniff_compression(reader.fill_buf().map_err(corrupt)?),
        declared => declared,
    };
    match compression {
        Compression::None => apply(&mut reader, dest)?,
        Compression::Gzip => apply(flate2::read::MultiGzDecoder::new(&mut reader), dest)?,
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(&mut reader).map_err(corrupt)?;
            apply(decoder, dest)?
        }
    }
    io::copy(&mut reader, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

fn corrupt(e: io::Error) -> RuntimeError {
    RuntimeError::Image(format!("corrupt layer: {e}"))
}

fn apply(reader: impl Read, dest: &Path) -> Result<(), RuntimeError> {
    let mut unpacker = Unpacker {
        dest: dest.to_path_buf(),
        written: HashSet::new(),
        deferred_dirs: Vec::new(),
        chown: nix::unistd::geteuid().is_root(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        unpacker.entry(entry)?;
    }
    unpacker.finish_dirs()
}

/// What the unpacker of one layer remembers.
struct Unpacker {
    dest: PathBuf,
    /// Real paths (relative to `dest`) this layer wrote, with all their ancestors: an opaque
    /// marker or a whiteout must not remove them.
    written: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set after the layer (children change mtimes, and a
    /// read-only mode would stop a non-root unpacker).
    deferred_dirs: Vec<(PathBuf, u32, SystemTime)>,
    chown: bool,
}

/// The metadata of an entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

fn reject(entry: &str, why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::UnpackRejected(format!("entry {entry:?} {why}"))
}

/// The components of an archive path: `.` and empty ones dropped; absolute paths and `..`
/// rejected.
fn archive_components(raw: &[u8], shown: &str, what: &str) -> Result<Vec<OsString>, RuntimeError> {
    if raw.first() == Some(&b'/') {
        return Err(reject(shown, format!("has an absolute {what}")));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(reject(shown, format!("has a `..` component in its {what}"))),
            _ => out.push(OsString::from_vec(part.to_vec())),
        }
    }
    Ok(out)
}

fn join(base: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in comps {
        p.push(c);
    }
    p
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), RuntimeError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = archive_components(&raw_path, &shown, "path")?;
        let Some((name, parent)) = comps.split_last() else {
            return Ok(()); // the root itself: its metadata is the rootfs's, not the layer's
        };

        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if name == OPAQUE_MARKER {
                if let Some(dir) = self.resolve(parent, false, &shown)? {
                    self.make_opaque(&dir)?;
                }
            } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(reject(&shown, "is a malformed whiteout"));
            } else if let Some(dir) = self.resolve(parent, false, &shown)? {
                let target = dir.join(OsStr::from_bytes(hidden));
                if !self.written.contains(&target) {
                    remove_any(&self.dest.join(&target)).map_err(|e| self.io_err(&shown, e))?;
                }
            }
            return Ok(());
        }

        let meta = self.meta(&mut entry)?;
        let Some(parent_real) = self.resolve(parent, true, &shown)? else {
            return Err(reject(&shown, "has a parent that cannot be created"));
        };
        let rel = parent_real.join(name);
        let abs = self.dest.join(&rel);

        match kind {
            EntryType::Directory => {
                if !clear_for(&abs, true).map_err(|e| self.io_err(&shown, e))? {
                    fs::create_dir(&abs).map_err(|e| self.io_err(&shown, e))?;
                }
                self.chown(&abs, &meta, &shown)?;
                self.deferred_dirs.push((abs, meta.mode, meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                clear_for(&abs, false).map_err(|e| self.io_err(&shown, e))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true) // O_EXCL: never opens through a link
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&abs)
                    .map_err(|e| self.io_err(&shown, e))?;
                io::copy(&mut entry, &mut file).map_err(corrupt)?;
                if self.chown {
                    std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                        .map_err(|e| self.io_err(&shown, e))?;
                }
                // After chown, which clears setuid/setgid bits.
                file.set_permissions(Permissions::from_mode(meta.mode & 0o7777)).map_err(|e| self.io_err(&shown, e))?;
                file.set_times(FileTimes::new().set_modified(meta.mtime).set_accessed(meta.mtime))
                    .map_err(|e| self.io_err(&shown, e))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| reject(&shown, "is a symbolic link without a target"))?
                    .into_owned();
                // A link may point anywhere: it is only ever followed inside the root (see
                // `resolve`) or by the container, inside its own mount namespace.
                clear_for(&abs, false).map_err(|e| self.io_err(&shown, e))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &abs).map_err(|e| self.io_err(&shown, e))?;
                self.chown(&abs, &meta, &shown)?;
                set_mtime_nofollow(&abs, meta.mtime);
            }
            EntryType::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| reject(&shown, "is a hard link without a target"))?
                    .into_owned();
                let target_comps = archive_components(&raw_target, &shown, "hard link target")?;
                let Some((target_name, target_parent)) = target_comps.split_last() else {
                    return Err(reject(&shown, "is a hard link to the root directory"));
                };
                let target_shown = String::from_utf8_lossy(&raw_target).into_owned();
                let target = self
                    .resolve(target_parent, false, &shown)?
                    .map(|p| self.dest.join(p).join(target_name))
                    .ok_or_else(|| {
                    reject(&shown, format!("is a hard link to {target_shown:?}, which does not exist"))
                })?;
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {
                        return Err(reject(&shown, format!("is a hard link to the directory {target_shown:?}")));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(reject(
                            &shown,
                            format!("is a hard link to {target_shown:?}, which does not exist"),
                        ));
                    }
                }
                if target != abs {
                    clear_for(&abs, false).map_err(|e| self.io_err(&shown, e))?;
                    // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                    fs::hard_link(&target, &abs).map_err(|e| self.io_err(&shown, e))?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                tracing::debug!(entry = %shown, "skipping device node or fifo in image layer");
                return Ok(());
            }
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.mark_written(&rel);
        Ok(())
    }

    fn io_err(&self, entry: &str, e: io::Error) -> RuntimeError {
        RuntimeError::Image(format!("unpacking layer entry {entry:?} into {}: {e}", self.dest.display()))
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, RuntimeError> {
        let h = entry.header();
        let bad = |e: io::Error| corrupt(e);
        let mut meta = Meta {
            mode: h.mode().map_err(bad)?,
            uid: u32::try_from(h.uid().map_err(bad)?).unwrap_or(u32::MAX),
            gid: u32::try_from(h.gid().map_err(bad)?).unwrap_or(u32::MAX),
            mtime: UNIX_EPOCH + Duration::from_secs(h.mtime().map_err(bad)?),
        };
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                let value = ext.value().unwrap_or_default();
                match ext.key().unwrap_or_default() {
                    "uid" => meta.uid = value.parse().unwrap_or(meta.uid),
                    "gid" => meta.gid = value.parse().unwrap_or(meta.gid),
                    "mtime" => {
                        if let Ok(secs) = value.parse::<f64>()
                            && secs >= 0.0
                        {
                            meta.mtime = UNIX_EPOCH + Duration::from_secs_f64(secs);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(meta)
    }

    fn chown(&self, path: &Path, meta: &Meta, shown: &str) -> Result<(), RuntimeError> {
        if self.chown {
            std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(|e| self.io_err(shown, e))?;
        }
        Ok(())
    }

    fn mark_written(&mut self, rel: &Path) {
        let mut p = rel.to_path_buf();
        loop {
            if !self.written.insert(p.clone()) {
                break; // ancestors are in already
            }
            if !p.pop() || p.as_os_str().is_empty() {
                break;
            }
        }
    }

    /// Walks `comps` from the root and returns the real path (relative to the root, without
    /// links) of the directory they name. Missing components are created as directories when
    /// `create` (and a non-directory in the way is replaced), otherwise `Ok(None)`.
    /// Symbolic links are followed only when relative and staying inside the root; any other
    /// link is an escape and rejects `entry`.
    fn resolve(&self, comps: &[OsString], create: bool, entry: &str) -> Result<Option<PathBuf>, RuntimeError> {
        let mut real: Vec<OsString> = Vec::new();
        let mut pending: std::collections::VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(comp) = pending.pop_front() {
            if comp.is_empty() || comp == "." {
                continue;
            }
            if comp == ".." {
                // Only link targets produce `..`: archive paths with it were rejected.
                if real.pop().is_none() {
                    return Err(reject(
                        entry,
                        "would be written through a symbolic link that climbs above the image root",
                    ));
                }
                continue;
            }
            let path = join(&self.dest, &real).join(&comp);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => real.push(comp),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(reject(entry, "has too many levels of symbolic links in its path"));
                    }
                    let target = fs::read_link(&path).map_err(|e| self.io_err(entry, e))?;
                    let link = join(Path::new("/"), &real).join(&comp);
                    if target.is_absolute() {
                        return Err(reject(
                            entry,
                            format!(
                                "would be written through the symbolic link {} -> {}, which points outside the image root",
                                link.display(),
                                target.display()
                            ),
                        ));
                    }
                    let mut next: std::collections::VecDeque<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    next.extend(pending);
                    pending = next;
                }
                Ok(_) if create => {
                    // A file where this layer needs a directory: the layer's view wins.
                    fs::remove_file(&path).map_err(|e| self.io_err(entry, e))?;
                    fs::create_dir(&path).map_err(|e| self.io_err(entry, e))?;
                    real.push(comp);
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path).map_err(|e| self.io_err(entry, e))?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(|e| self.io_err(entry, e))?;
                    real.push(comp);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io_err(entry, e)),
            }
        }
        Ok(Some(real.iter().collect()))
    }

    /// Removes everything under the directory `rel` that this layer did not write.
    fn make_opaque(&self, rel: &Path) -> Result<(), RuntimeError> {
        let abs = self.dest.join(rel);
        let shown = rel.display().to_string();
        let children = match fs::read_dir(&abs) {
            Ok(children) => children,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err(&shown, e)),
        };
        for child in children {
            let child = child.map_err(|e| self.io_err(&shown, e))?;
            let child_rel = rel.join(child.file_name());
            if self.written.contains(&child_rel) {
                let is_dir = child.file_type().map_err(|e| self.io_err(&shown, e))?.is_dir();
                if is_dir {
                    self.make_opaque(&child_rel)?;
                }
            } else {
                remove_any(&child.path()).map_err(|e| self.io_err(&shown, e))?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), RuntimeError> {
        for (abs, mode, mtime) in self.deferred_dirs.drain(..).rev() {
            // A later entry of the layer may have replaced the directory, or one of its
            // parents — with a link, through which the mode would land outside the rootfs.
            if !real_dir_below(&self.dest, &abs) {
                continue;
            }
            fs::set_permissions(&abs, Permissions::from_mode(mode & 0o7777))
                .map_err(|e| RuntimeError::Image(format!("setting the mode of {}: {e}", abs.display())))?;
            set_mtime_nofollow(&abs, mtime);
        }
        Ok(())
    }
}

/// Whether `path` (below `root`) is a directory reached through real directories only:
/// no component from `root` down is a link.
fn real_dir_below(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else { return false };
    let mut at = root.to_path_buf();
    relative.components().all(|component| {
        at.push(component);
        fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir())
    })
}

/// Makes room for an entry at `path` (never following a link there). Returns `true` when a
/// real directory is there and `want_dir` (it is kept, its content merged).
fn clear_for(path: &Path, want_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && want_dir => Ok(true),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map(|()| false),
        Ok(_) => fs::remove_file(path).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a file, link or directory tree at `path` if present (links are not followed).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Best effort: an mtime that cannot be set is not worth failing an unpack for.
fn set_mtime_nofollow(path: &Path, mtime: SystemTime) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = TimeSpec::from_duration(since);
    if let Err(e) = utimensat(nix::fcntl::AT_FDCWD, path, &ts, &ts, UtimensatFlags::NoFollowSymlink) {
        tracing::debug!(path = %path.display(), error = %e, "cannot set mtime");
    }
}
