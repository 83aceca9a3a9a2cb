//! Property tests of layer unpacking on hostile archives: a layer comes from any registry
//! or any `docker save` file.
//!
//! Archives are built entry by entry — paths with `..`, absolute paths, empty and `.`
//! components, symbolic and hard links pointing anywhere (inside, out of the rootfs, at
//! each other), links put in place of directories entries went into, whiteouts and opaque
//! markers, duplicate names, device nodes and FIFOs, paths carried in PAX headers — one to
//! three layers on top of each other, some compressed, some with bytes changed afterwards
//! (header checksums fixed up, so that the change reaches the unpacker). After each layer:
//! a layer that unpacked was read to its end, the rootfs holds only directories, files and
//! symbolic links, and nothing appeared next to the temp directory or at `/` under the
//! names the archives use. After the last: nothing outside the rootfs changed (everything
//! around it in the temp directory is compared before and after: contents, link targets,
//! owners, link counts, and the modes and mtimes of files — of directories too in the
//! second property).
//!
//! Safe to run as root even against a broken unpacker, so that a regression fails the
//! test instead of damaging the machine (an opaque marker followed through a link to `/`
//! empties `/`): the scratch directory lies [`DEPTH`] directories deep in a temp
//! directory, no path or link target in an archive has more than four `..` components, so
//! no lookup climbs out of the temp directory, and absolute paths and link targets only
//! ever name places in it. The names in archives (`qa`, `qb`, …) exist nowhere on a normal
//! host either. Deterministic: a fixed seed and no failure files.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

use super::super::{MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD, unpack_layer};
use serval_testimages::{LayerCompression, compress};

fn config() -> Config {
    Config {
        cases: 128,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x0C1_0001),
        // Each case unpacks into a fresh directory: keep a failure's shrinking to a minute.
        max_shrink_iters: 1000,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// The names archives use; none exists at `/` or in a temp directory on a normal host.
const NAMES: [&str; 6] = ["qa", "qb", "qc", "qout", "qtop", "qr"];

/// How many directories deep the scratch directories lie in their temp directory: more
/// than the `..` components a lookup can meet — 4 in a path and 4 in each link it goes
/// through: up to 40 links in the unpacker's own walk, then 40 more in the kernel's (324).
const DEPTH: usize = 400;

/// A temp directory with a chain of [`DEPTH`] directories in it, made once per property:
/// each case's scratch directory goes at its bottom.
struct Deep {
    temp: tempfile::TempDir,
    bottom: PathBuf,
}

impl Deep {
    fn new() -> Deep {
        let temp = tempfile::tempdir().expect("temp dir");
        // Made through open directories: one lookup each, not one per level above.
        let mut dir = fs::File::open(temp.path()).expect("temp dir");
        for _ in 0..DEPTH {
            let next = by_fd(&dir).join("qd");
            fs::create_dir(&next).expect("deep dir");
            dir = fs::File::open(&next).expect("deep dir");
        }
        let bottom = (0..DEPTH).fold(temp.path().to_path_buf(), |p, _| p.join("qd"));
        Deep { temp, bottom }
    }
}

/// A case's scratch directory `base`: `qtop/qr` is the rootfs, everything else is outside
/// it (most names are directories there, for links out of the rootfs to lead somewhere).
///
/// ```text
/// base/qa/       qa/qb          base/qb/      qb/qa/
/// base/qout/     qout/qa/qc     qout/qb       qout/qout/
/// base/qtop/     qtop/qb/       qtop/qr/ (the rootfs)
/// base/qc
/// ```
struct Scratch {
    base: tempfile::TempDir,
}

impl Scratch {
    fn new(deep: &Deep) -> Scratch {
        let base = tempfile::tempdir_in(&deep.bottom).expect("scratch dir");
        for dir in ["qa", "qb", "qb/qa", "qout", "qout/qa", "qout/qout", "qtop", "qtop/qb", "qtop/qr"] {
            fs::create_dir(base.path().join(dir)).expect("scratch dir");
        }
        for file in ["qa/qb", "qc", "qout/qa/qc", "qout/qb"] {
            fs::write(base.path().join(file), format!("outside: {file}")).expect("scratch file");
        }
        Scratch { base }
    }

    fn base(&self) -> &Path {
        self.base.path()
    }

    fn root(&self) -> PathBuf {
        self.base().join("qtop/qr")
    }
}

impl Drop for Scratch {
    /// Makes every directory of the rootfs writable again (a layer may have set modes that
    /// stop a non-root user from removing it).
    fn drop(&mut self) {
        fn open_up(dir: &Path) {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            let Ok(children) = fs::read_dir(dir) else { return };
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&child.path());
                }
            }
        }
        open_up(&self.root());
    }
}

/// A path in an archive: relative, or absolute into the scratch directory (never
/// anywhere else: see the module's documentation).
#[derive(Debug, Clone)]
enum Anchor {
    Relative,
    Scratch,
}

#[derive(Debug, Clone)]
struct ArchivePath {
    anchor: Anchor,
    components: Vec<&'static str>,
    trailing_slash: bool,
}

impl ArchivePath {
    fn render(&self, base: &Path) -> Vec<u8> {
        let mut out = match self.anchor {
            Anchor::Relative => Vec::new(),
            Anchor::Scratch => {
                let mut b = base.as_os_str().as_bytes().to_vec();
                b.push(b'/');
                b
            }
        };
        out.extend_from_slice(self.components.join("/").as_bytes());
        if self.trailing_slash {
            out.push(b'/');
        }
        out
    }
}

/// A path component: mostly names; in hostile layers also `..` and malformed whiteouts.
fn component(hostile: bool) -> impl Strategy<Value = &'static str> {
    let odd: Vec<&'static str> = if hostile { vec![".", "..", ""] } else { vec![".", ""] };
    let mut whiteouts = vec![".wh.qa", ".wh.qb", ".wh.qout", ".wh..wh..opq"];
    if hostile {
        whiteouts.extend([".wh.", ".wh..", ".wh..."]);
    }
    prop_oneof![
        12 => prop::sample::select(NAMES.to_vec()),
        1 + 2 * u32::from(hostile) => prop::sample::select(odd),
        2 => prop::sample::select(whiteouts),
    ]
}

/// Paths anchored as `anchors` weighs them (relative, absolute).
fn archive_path(anchors: [usize; 2], hostile: bool) -> impl Strategy<Value = ArchivePath> {
    let anchor = prop::sample::select(
        [Anchor::Relative, Anchor::Scratch]
            .into_iter()
            .zip(anchors)
            .flat_map(|(anchor, weight)| std::iter::repeat_n(anchor, weight))
            .collect::<Vec<_>>(),
    );
    let components = prop_oneof![
        1 => prop::collection::vec(component(hostile), 0..2),
        4 => prop::collection::vec(component(hostile), 2..4),
    ];
    (anchor, components, prop::bool::weighted(0.1)).prop_map(|(anchor, components, trailing_slash)| ArchivePath {
        anchor,
        components,
        trailing_slash,
    })
}

/// What an entry is (`Unknown`: a type flag the unpacker does not know).
#[derive(Debug, Clone)]
enum Kind {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink(ArchivePath),
    HardLink(ArchivePath),
    Fifo,
    CharDevice,
    BlockDevice,
    Unknown(u8),
}

#[derive(Debug, Clone)]
struct Entry {
    path: ArchivePath,
    kind: Kind,
    /// The path (and link target) in a PAX header rather than the tar header.
    pax: bool,
    uid: u64,
    mtime: u64,
}

fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0o755, 0o644, 0o700, 0o555, 0o000, 0o4755, 0o1777, 0o7777])
}

/// Entry kinds: links may point anywhere in any layer (only following them is unsafe);
/// hostile layers have more hard links (to paths that may not be there) and unknown types.
fn kind(hostile: bool) -> BoxedStrategy<Kind> {
    let file = (prop::collection::vec(any::<u8>(), 0..64), mode()).prop_map(|(data, mode)| Kind::File { data, mode });
    let dir = mode().prop_map(|mode| Kind::Dir { mode });
    let symlink = archive_path([2, 1], hostile).prop_map(Kind::Symlink);
    let special = prop_oneof![Just(Kind::Fifo), Just(Kind::CharDevice), Just(Kind::BlockDevice)];
    if hostile {
        prop_oneof![
            4 => file,
            3 => dir,
            4 => symlink,
            2 => archive_path([3, 1], true).prop_map(Kind::HardLink),
            1 => special,
            1 => prop::sample::select(b"78ADIMNSVxgKLZ\0".to_vec()).prop_map(Kind::Unknown),
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => file,
            3 => dir,
            4 => symlink,
            1 => archive_path([1, 0], false).prop_map(Kind::HardLink),
            1 => special,
        ]
        .boxed()
    }
}

fn entry(hostile: bool) -> impl Strategy<Value = Entry> {
    (
        archive_path(if hostile { [5, 1] } else { [1, 0] }, hostile),
        kind(hostile),
        prop::bool::weighted(0.15),
        prop::sample::select(vec![0u64, 0, 1000, 65534]),
        prop::sample::select(vec![1_700_000_000u64, 1_700_000_000, 0, 0o77_777_777_777]),
    )
        .prop_map(|(path, kind, pax, uid, mtime)| Entry { path, kind, pax, uid, mtime })
}

/// A name or link target for a raw tar header field: at most `field.len() - 1` bytes.
fn set_raw(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len() - 1);
    field[..n].copy_from_slice(&value[..n]);
}

/// The layer's tar, written raw (the `tar` crate rightly refuses to write `..` and
/// absolute paths).
fn tar_of(entries: &[Entry], base: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let path = entry.path.render(base);
        let target = match &entry.kind {
            Kind::Symlink(target) | Kind::HardLink(target) => Some(target.render(base)),
            _ => None,
        };
        let mut header = tar::Header::new_gnu();
        header.set_uid(entry.uid);
        header.set_gid(entry.uid);
        header.set_mtime(entry.mtime);
        header.set_size(0);
        header.set_mode(0o644);
        let mut data: &[u8] = &[];
        match &entry.kind {
            Kind::File { data: bytes, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                data = bytes;
            }
            Kind::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
            }
            Kind::Symlink(_) => header.set_entry_type(tar::EntryType::Symlink),
            Kind::HardLink(_) => header.set_entry_type(tar::EntryType::Link),
            Kind::Fifo => header.set_entry_type(tar::EntryType::Fifo),
            Kind::CharDevice | Kind::BlockDevice => {
                let kind =
                    if matches!(entry.kind, Kind::CharDevice) { tar::EntryType::Char } else { tar::EntryType::Block };
                header.set_entry_type(kind);
                header.set_mode(0o666);
                header.set_device_major(1).expect("device major");
                header.set_device_minor(3).expect("device minor");
            }
            Kind::Unknown(flag) => header.set_entry_type(tar::EntryType::new(*flag)),
        }
        let name_fits = path.len() < 100 && target.as_ref().is_none_or(|t| t.len() < 100);
        if entry.pax || !name_fits {
            let mut extensions: Vec<(&str, &[u8])> = vec![("path", &path)];
            if let Some(target) = &target {
                extensions.push(("linkpath", target));
            }
            builder.append_pax_extensions(extensions).expect("pax header");
        }
        set_raw(&mut header.as_old_mut().name, &path);
        if let Some(target) = &target {
            set_raw(&mut header.as_old_mut().linkname, target);
        }
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("tar")
}

/// A change to an archive's bytes.
#[derive(Debug, Clone)]
enum Damage {
    Replace { at: Index, byte: u8 },
    Truncate { at: Index },
    DuplicateBlock { at: Index },
    DropBlock { at: Index },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Replace { at, byte }),
        1 => any::<Index>().prop_map(|at| Damage::Truncate { at }),
        1 => any::<Index>().prop_map(|at| Damage::DuplicateBlock { at }),
        1 => any::<Index>().prop_map(|at| Damage::DropBlock { at }),
    ]
}

fn apply_damage(bytes: &mut Vec<u8>, damage: &[Damage]) {
    for d in damage {
        if bytes.is_empty() {
            return;
        }
        let blocks = bytes.len().div_ceil(512);
        match d {
            Damage::Replace { at, byte } => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            Damage::Truncate { at } => bytes.truncate(at.index(bytes.len())),
            Damage::DuplicateBlock { at } => {
                let start = at.index(blocks) * 512;
                let block = bytes[start..(start + 512).min(bytes.len())].to_vec();
                bytes.splice(start..start, block);
            }
            Damage::DropBlock { at } => {
                let start = at.index(blocks) * 512;
                bytes.drain(start..(start + 512).min(bytes.len()));
            }
        }
    }
}

/// Sets the checksum of every block that looks like a tar header, so that damage to its
/// fields reaches the unpacker.
fn fix_checksums(bytes: &mut [u8]) {
    for block in bytes.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
    }
}

#[derive(Debug, Clone)]
struct Layer {
    entries: Vec<Entry>,
    damage: Vec<Damage>,
    fix_checksums: bool,
    compression: LayerCompression,
    damage_compressed: Vec<Damage>,
}

impl Layer {
    /// The blob and its media type.
    fn blob(&self, base: &Path) -> (Vec<u8>, &'static str) {
        let mut tar = tar_of(&self.entries, base);
        apply_damage(&mut tar, &self.damage);
        if self.fix_checksums {
            fix_checksums(&mut tar);
        }
        let mut blob = compress(&tar, self.compression).expect("compress");
        apply_damage(&mut blob, &self.damage_compressed);
        let media_type = match self.compression {
            LayerCompression::None => MT_LAYER_TAR,
            LayerCompression::Gzip => MT_LAYER_GZIP,
            LayerCompression::Zstd => MT_LAYER_ZSTD,
        };
        (blob, media_type)
    }
}

/// Targets for links that replace a directory an entry went into: the scratch directory
/// and the directories in it, by absolute and relative paths, or anything.
fn escape_target() -> impl Strategy<Value = ArchivePath> {
    let path = |anchor, components: &[&'static str]| ArchivePath {
        anchor,
        components: components.to_vec(),
        trailing_slash: false,
    };
    prop_oneof![
        4 => prop::sample::select(vec![
            path(Anchor::Scratch, &[]),
            path(Anchor::Scratch, &["qout"]),
            path(Anchor::Scratch, &["qb"]),
            path(Anchor::Relative, &[".."]),
            path(Anchor::Relative, &["..", ".."]),
            path(Anchor::Relative, &["..", "..", ".."]),
            path(Anchor::Relative, &["..", "..", "..", ".."]),
            path(Anchor::Relative, &["..", "..", "qout"]),
            path(Anchor::Relative, &["..", "..", "..", "qout"]),
            path(Anchor::Relative, &["qa", "..", "..", ".."]),
        ]),
        1 => archive_path([2, 1], true),
    ]
}

/// A layer's entries: generated ones, then symbolic links put where a directory on the way
/// to one of them was (the link replaces it; the entry's own directory may have been made
/// or changed by the layer), each followed by entries under the link (files, directories,
/// whiteouts, opaque markers) that must not go through it.
fn entries(hostile: bool) -> impl Strategy<Value = Vec<Entry>> {
    let child =
        prop::sample::select(vec!["qa", "qb", "qc", "qout", ".wh.qa", ".wh.qb", ".wh.qc", ".wh.qout", ".wh..wh..opq"]);
    let under = prop::collection::vec((child, any::<bool>()), 0..3);
    let relink = (any::<Index>(), any::<bool>(), any::<Index>(), escape_target(), under);
    (prop::collection::vec(entry(hostile), 1..10), prop::collection::vec(relink, 0..4)).prop_map(
        |(mut entries, relinks)| {
            for (which, dirs_only, depth, target, under) in relinks {
                // Among the entries two levels deep or more (and directories only, half the
                // time: their modes and mtimes are set at the end of the layer).
                let deep: Vec<&Entry> = entries
                    .iter()
                    .filter(|e| e.path.components.len() >= 2 && (!dirs_only || matches!(e.kind, Kind::Dir { .. })))
                    .collect();
                if deep.is_empty() {
                    continue;
                }
                let over = deep[which.index(deep.len())].path.clone();
                let components = over.components[..1 + depth.index(over.components.len() - 1)].to_vec();
                let path = ArchivePath { anchor: over.anchor, components, trailing_slash: false };
                let entry = |path, kind| Entry { path, kind, pax: false, uid: 0, mtime: 1_700_000_000 };
                entries.push(entry(path.clone(), Kind::Symlink(target)));
                for (name, dir) in under {
                    let mut below = path.clone();
                    below.components.push(name);
                    let kind =
                        if dir { Kind::Dir { mode: 0o700 } } else { Kind::File { data: b"in".to_vec(), mode: 0o600 } };
                    entries.push(entry(below, kind));
                }
            }
            entries
        },
    )
}

fn layer() -> impl Strategy<Value = Layer> {
    let compression = prop_oneof![
        6 => Just(LayerCompression::None),
        1 => Just(LayerCompression::Gzip),
        1 => Just(LayerCompression::Zstd),
    ];
    // Hostile layers also have bytes changed after they were written.
    let damage = |hostile: bool, weight: u32, n: usize| -> BoxedStrategy<Vec<Damage>> {
        if hostile {
            prop_oneof![weight => Just(Vec::new()), 1 => prop::collection::vec(damage(), 1..n)].boxed()
        } else {
            Just(Vec::new()).boxed()
        }
    };
    let hostile = prop::bool::weighted(0.5);
    let parts = hostile.prop_flat_map(move |hostile| {
        (entries(hostile), damage(hostile, 2, 4), prop::bool::weighted(0.8), compression.clone(), damage(hostile, 6, 3))
    });
    parts.prop_map(|(entries, damage, fix_checksums, compression, damage_compressed)| Layer {
        entries,
        damage,
        fix_checksums,
        compression,
        damage_compressed,
    })
}

/// Counts the bytes read through it.
struct Counting<'a> {
    inner: &'a [u8],
    read: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

/// One file system node as seen without following links.
#[derive(Debug, PartialEq)]
struct Node {
    path: PathBuf,
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: (i64, i64),
    /// A file's content or a link's target.
    content: Vec<u8>,
}

/// A cheap name for the directory open as `dir`: a lookup through it costs one step, not
/// one per component of its (very long) path.
fn by_fd(dir: &fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Everything under `top` but `skip`, in a stable order, named relative to `top`; without
/// the modes and mtimes of directories unless `dir_times`.
fn snapshot(top: &Path, skip: &Path, dir_times: bool) -> Vec<Node> {
    /// Adds the node at `path`, reached as `at`, and what is below it.
    fn walk(at: &Path, path: &Path, skip: &Path, dir_times: bool, out: &mut Vec<Node>) {
        let Ok(meta) = fs::symlink_metadata(at) else { return };
        let t = meta.file_type();
        let (kind, content) = if t.is_dir() {
            ("dir", Vec::new())
        } else if t.is_file() {
            ("file", fs::read(at).unwrap_or_default())
        } else if t.is_symlink() {
            ("symlink", fs::read_link(at).map(|p| p.as_os_str().as_bytes().to_vec()).unwrap_or_default())
        } else {
            ("other", Vec::new())
        };
        let times = dir_times || !t.is_dir();
        out.push(Node {
            path: path.to_path_buf(),
            kind,
            mode: if times { meta.mode() } else { 0 },
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            mtime: if times { (meta.mtime(), meta.mtime_nsec()) } else { (0, 0) },
            content,
        });
        if !t.is_dir() {
            return;
        }
        let Ok(dir) = fs::File::open(at) else { return };
        let at = by_fd(&dir);
        let mut names: Vec<_> =
            fs::read_dir(&at).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        names.sort();
        for name in names {
            let child = path.join(&name);
            if child != skip {
                walk(&at.join(&name), &child, skip, dir_times, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(top, Path::new(""), skip.strip_prefix(top).unwrap_or(skip), dir_times, &mut out);
    out
}

/// The archive names present at `/` and next to the temp directory.
fn neighbours(temp: &Path) -> Vec<PathBuf> {
    let parent = temp.parent().unwrap_or(Path::new("/"));
    NAMES
        .iter()
        .flat_map(|name| [Path::new("/").join(name), parent.join(name)])
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Kinds of node in the rootfs other than directories, files and symbolic links.
fn odd_nodes(root: &Path) -> Vec<PathBuf> {
    snapshot(root, Path::new(""), false).into_iter().filter(|n| n.kind == "other").map(|n| n.path).collect()
}

/// Unpacks `layers` one after the other into a new scratch directory at the bottom of
/// `deep`, and checks that the outside of the rootfs (all of `deep`) is as it was, the
/// modes and mtimes of its directories too when `dir_times`.
fn check(deep: &Deep, layers: &[Layer], dir_times: bool) -> Result<(), TestCaseError> {
    let scratch = Scratch::new(deep);
    let temp = deep.temp.path();
    let root = scratch.root();
    let outside = snapshot(temp, &root, dir_times);
    let around = neighbours(temp);
    let mut results = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let (blob, media_type) = layer.blob(scratch.base());
        let mut reader = Counting { inner: &blob, read: 0 };
        // Later layers go on whatever an earlier failed one left: the unpacker must be
        // safe on any rootfs.
        let result = unpack_layer(&mut reader, media_type, &root);
        if result.is_ok() {
            prop_assert_eq!(reader.read, blob.len(), "layer {} unpacked without reading all of it", i);
        }
        results.push(result);
        prop_assert_eq!(neighbours(temp), around.clone(), "layer {} wrote next to the temp directory or at /", i);
        prop_assert_eq!(odd_nodes(&root), Vec::<PathBuf>::new(), "layer {} made device nodes or FIFOs", i);
    }
    let now = snapshot(temp, &root, dir_times);
    if now != outside {
        let changed: Vec<String> = now
            .iter()
            .filter(|n| !outside.contains(n))
            .chain(outside.iter().filter(|n| !now.contains(n)))
            .map(|n| format!("{n:?}").replace(&"qd/".repeat(DEPTH), "<deep>/"))
            .collect();
        return Err(TestCaseError::fail(format!(
            "the layers ({results:?}) changed the outside of the rootfs:\n{}",
            changed.join("\n")
        )));
    }
    Ok(())
}

/// Runs [`check`] on generated layers (one deep temp directory for all cases).
fn property(dir_times: bool) {
    let deep = Deep::new();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&prop::collection::vec(layer(), 1..4), |layers| check(&deep, &layers, dir_times));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Nothing outside the rootfs is created, removed, written, linked to or chowned.
#[test]
fn hostile_layers_stay_inside_the_rootfs() {
    property(false);
}

/// Nor are the modes and mtimes of directories outside it changed.
#[test]
fn hostile_layers_leave_outside_directory_modes_alone() {
    property(true);
}

/// The smallest case `hostile_layers_leave_outside_directory_modes_alone` found: a layer with `qa/`, `qa/qa/` (mode 0700),
/// then `qa` as a link to a directory outside the rootfs (by absolute path, or relative
/// and climbing out). `Unpacker::finish_dirs` sets the deferred mode and mtime of `qa/qa`
/// by its old path, whose parent is now the link: they land on `<outside>/qa`. As root,
/// with `x -> /` and `x/etc/` (mode 0777), that is a world-writable host `/etc`.
#[test]
fn deferred_directory_metadata_is_never_set_through_a_link() {
    let dir = |components: &[&'static str], mode| Entry {
        path: ArchivePath { anchor: Anchor::Relative, components: components.to_vec(), trailing_slash: false },
        kind: Kind::Dir { mode },
        pax: false,
        uid: 0,
        mtime: 1,
    };
    let targets = [
        ArchivePath { anchor: Anchor::Scratch, components: vec![], trailing_slash: false },
        ArchivePath { anchor: Anchor::Relative, components: vec!["..", ".."], trailing_slash: false },
    ];
    let deep = Deep::new();
    for target in targets {
        let scratch = Scratch::new(&deep);
        let outside = scratch.base().join("qa");
        let before = fs::metadata(&outside).expect("outside dir");
        let link = Entry { kind: Kind::Symlink(target.clone()), ..dir(&["qa"], 0o777) };
        let entries = [dir(&["qa"], 0o755), dir(&["qa", "qa"], 0o700), link];
        let tar = tar_of(&entries, scratch.base());
        let result = unpack_layer(&tar[..], MT_LAYER_TAR, &scratch.root());
        let after = fs::metadata(&outside).expect("outside dir");
        assert_eq!(
            (after.mode(), after.mtime()),
            (before.mode(), before.mtime()),
            "{target:?}: the layer ({result:?}) set the mode and mtime of <scratch>/qa"
        );
    }
}
