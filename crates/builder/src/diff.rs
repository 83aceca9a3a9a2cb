//! What a `RUN` changed: the tree before and after, compared entry by entry, written as a
//! layer — new and changed entries whole, removed ones as whiteouts (`.wh.<name>`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Mount points the runtime fills while `RUN` runs; nothing under them is part of a layer.
const MOUNTED: &[&str] = &["proc", "sys", "dev"];

/// What identifies an entry's content and metadata without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The entries of a tree, by `/`-separated path relative to its root.
pub(crate) struct Snapshot {
    entries: BTreeMap<String, Stamp>,
}

impl Snapshot {
    pub(crate) fn take(root: &Path) -> std::io::Result<Snapshot> {
        let mut entries = BTreeMap::new();
        walk(root, "", &mut |rel, meta| {
            entries.insert(rel.to_string(), stamp(meta));
        })?;
        Ok(Snapshot { entries })
    }
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        ino: meta.ino(),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

/// Calls `visit` for every entry under `dir` (parents before children, sorted), skipping the
/// runtime's mount points.
fn walk(root: &Path, rel: &str, visit: &mut dyn FnMut(&str, &std::fs::Metadata)) -> std::io::Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let mut names: Vec<String> =
        std::fs::read_dir(&dir)?.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if rel.is_empty() && MOUNTED.contains(&name.as_str()) {
            continue;
        }
        let meta = std::fs::symlink_metadata(root.join(&path))?;
        visit(&path, &meta);
        if meta.is_dir() {
            walk(root, &path, visit)?;
        }
    }
    Ok(())
}

/// Writes the layer of what changed under `root` since `before`.
pub(crate) fn write_layer(out: &mut dyn Write, before: &Snapshot, root: &Path) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut after: Vec<(String, std::fs::Metadata)> = Vec::new();
    walk(root, "", &mut |rel, meta| after.push((rel.to_string(), meta.clone())))?;
    let present: std::collections::BTreeSet<&str> = after.iter().map(|(p, _)| p.as_str()).collect();
    // Removed entries: one whiteout for the top-most removed path.
    for path in before.entries.keys() {
        if present.contains(path.as_str()) {
            continue;
        }
        let parent_removed = parent(path).is_some_and(|p| !present.contains(p) && before.entries.contains_key(p));
        if parent_removed {
            continue;
        }
        let whiteout = match parent(path) {
            Some(p) => format!("{p}/.wh.{}", name(path)),
            None => format!(".wh.{path}"),
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        tar.append_data(&mut header, whiteout, std::io::empty())?;
    }
    for (path, meta) in &after {
        if before.entries.get(path) == Some(&stamp(meta)) {
            continue;
        }
        let full: PathBuf = root.join(path);
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_size(0);
            tar.append_data(&mut header, path, std::io::empty())?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&full)?;
            header.set_size(0);
            tar.append_link(&mut header, path, target)?;
        } else if kind.is_file() {
            let file = std::fs::File::open(&full)?;
            tar.append_data(&mut header, path, std::io::Read::take(file, meta.size()))?;
        }
        // Devices, sockets and fifos made by a RUN are not carried into the image.
    }
    tar.finish()
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(layer: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(layer);
        archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn added_changed_and_removed_entries_make_the_layer() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::create_dir_all(r.join("old/deep")).expect("mkdir");
        std::fs::create_dir_all(r.join("proc")).expect("mkdir");
        std::fs::write(r.join("etc/kept"), "same").expect("write");
        std::fs::write(r.join("etc/changed"), "one").expect("write");
        std::fs::write(r.join("old/deep/file"), "x").expect("write");
        let before = Snapshot::take(r).expect("snapshot");

        std::fs::write(r.join("etc/changed"), "two, longer").expect("write");
        std::fs::write(r.join("etc/new"), "new").expect("write");
        std::fs::remove_dir_all(r.join("old")).expect("rm");
        std::fs::write(r.join("proc/ignored"), "mounted").expect("write");
        let mut layer = Vec::new();
        write_layer(&mut layer, &before, r).expect("layer");
        let names = names(&layer);
        assert!(names.contains(&".wh.old".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("deep")), "only the top-most removal: {names:?}");
        assert!(names.contains(&"etc/changed".to_string()) && names.contains(&"etc/new".to_string()), "{names:?}");
        assert!(!names.contains(&"etc/kept".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("proc")), "{names:?}");
    }
}
