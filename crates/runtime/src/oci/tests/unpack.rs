use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::super::{MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD, unpack_layer};
use super::{Scratch, apply, skip};
use crate::RuntimeError;
use serval_testimages::{LayerCompression, LayerEntry, compress, layer_tar};

fn assert_rejected(result: Result<(), RuntimeError>, needle: &str) {
    match result {
        Err(RuntimeError::UnpackRejected(message)) => {
            assert!(message.contains(needle), "message {message:?} should mention {needle:?}");
        }
        other => panic!("expected UnpackRejected mentioning {needle:?}, got {other:?}"),
    }
}

fn exists_nofollow(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn unpacks_files_dirs_links_modes_and_mtimes() {
    let s = Scratch::new();
    let root = s.root();
    apply(
        &root,
        &[vec![
            LayerEntry::dir("usr"),
            LayerEntry::dir("usr/bin"),
            LayerEntry::File { path: "usr/bin/tool".into(), data: b"#!/bin/sh\n".to_vec(), mode: 0o4755 },
            LayerEntry::symlink("bin", "usr/bin"),
            LayerEntry::hardlink("usr/bin/tool2", "usr/bin/tool"),
            LayerEntry::symlink("dangling", "/nowhere/at/all"),
            LayerEntry::Dir { path: "ro".into(), mode: 0o555 },
            LayerEntry::file("implicit/parent/file", b"x"),
        ]],
    )
    .expect("unpacks");
    let tool = fs::metadata(root.join("usr/bin/tool")).expect("tool");
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(tool.uid(), 0);
    assert_eq!(fs::read_link(root.join("bin")).expect("link"), Path::new("usr/bin"));
    assert_eq!(fs::metadata(root.join("usr/bin/tool2")).expect("hard link").ino(), tool.ino());
    assert_eq!(fs::read_link(root.join("dangling")).expect("link"), Path::new("/nowhere/at/all"));
    let ro = fs::metadata(root.join("ro")).expect("ro");
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_700_000_000);
    assert_eq!(fs::read(root.join("implicit/parent/file")).expect("file"), b"x");
}

#[test]
fn preserves_ownership_from_the_archive() {
    if !nix::unistd::geteuid().is_root() {
        skip("ownership needs root");
        return;
    }
    let s = Scratch::new();
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(2);
    builder.append_data(&mut h, "owned", &b"hi"[..]).expect("append");
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_mode(0o750);
    d.set_uid(33);
    d.set_gid(33);
    d.set_size(0);
    builder.append_data(&mut d, "www", &b""[..]).expect("append");
    let tar = builder.into_inner().expect("tar");
    unpack_layer(&tar[..], MT_LAYER_TAR, &s.root()).expect("unpacks");
    let m = fs::metadata(s.root().join("owned")).expect("owned");
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o7777), (1234, 5678, 0o640));
    let m = fs::metadata(s.root().join("www")).expect("www");
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o7777), (33, 33, 0o750));
}

#[test]
fn whiteouts_delete_lower_layer_entries() {
    let s = Scratch::new();
    let root = s.root();
    apply(
        &root,
        &[
            vec![
                LayerEntry::file("a/x", b"x"),
                LayerEntry::file("a/y", b"y"),
                LayerEntry::file("b/z", b"z"),
                LayerEntry::symlink("l", "/etc"),
            ],
            vec![
                LayerEntry::file("a/.wh.x", b""),
                LayerEntry::file(".wh.b", b""),
                LayerEntry::file(".wh.l", b""),
                LayerEntry::file(".wh.never-existed", b""),
            ],
        ],
    )
    .expect("unpacks");
    assert!(!exists_nofollow(&root.join("a/x")));
    assert!(!exists_nofollow(&root.join("a/.wh.x")), "whiteout markers are not written");
    assert_eq!(fs::read(root.join("a/y")).expect("y"), b"y");
    assert!(!exists_nofollow(&root.join("b")));
    assert!(!exists_nofollow(&root.join("l")), "a link is removed, not its target");
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn opaque_directories_hide_lower_content_but_keep_their_own_layer() {
    let s = Scratch::new();
    let root = s.root();
    apply(
        &root,
        &[
            vec![
                LayerEntry::file("o/old1", b"1"),
                LayerEntry::file("o/sub/old2", b"2"),
                LayerEntry::file("o/sub/keep-not", b"3"),
                LayerEntry::file("other/stays", b"4"),
            ],
            vec![
                LayerEntry::dir("o"),
                // Written before the marker: the marker must not remove it.
                LayerEntry::file("o/new", b"n"),
                LayerEntry::file("o/.wh..wh..opq", b""),
                LayerEntry::file("o/sub/new2", b"m"),
            ],
        ],
    )
    .expect("unpacks");
    assert_eq!(fs::read(root.join("o/new")).expect("new"), b"n");
    assert_eq!(fs::read(root.join("o/sub/new2")).expect("new2"), b"m");
    assert!(!exists_nofollow(&root.join("o/old1")));
    assert!(!exists_nofollow(&root.join("o/sub/old2")));
    assert!(!exists_nofollow(&root.join("o/sub/keep-not")));
    assert!(!exists_nofollow(&root.join("o/.wh..wh..opq")));
    assert_eq!(fs::read(root.join("other/stays")).expect("stays"), b"4");
}

#[test]
fn a_file_replaces_a_directory_and_vice_versa() {
    let s = Scratch::new();
    let root = s.root();
    apply(
        &root,
        &[
            vec![LayerEntry::file("p/child", b"c"), LayerEntry::file("q", b"file"), LayerEntry::symlink("r", "p")],
            vec![LayerEntry::file("p", b"now a file"), LayerEntry::file("q/inner", b"i"), LayerEntry::dir("r")],
        ],
    )
    .expect("unpacks");
    assert_eq!(fs::read(root.join("p")).expect("p"), b"now a file");
    assert!(fs::symlink_metadata(root.join("q")).expect("q").is_dir());
    assert_eq!(fs::read(root.join("q/inner")).expect("inner"), b"i");
    assert!(fs::symlink_metadata(root.join("r")).expect("r").is_dir(), "a link replaced by a real dir");
}

#[test]
fn writes_through_links_that_stay_inside_the_root() {
    let s = Scratch::new();
    let root = s.root();
    apply(
        &root,
        &[
            vec![
                LayerEntry::dir("usr/bin"),
                LayerEntry::symlink("bin", "usr/bin"),
                LayerEntry::symlink("usr/sbin", "../usr/./bin"),
            ],
            vec![LayerEntry::file("bin/tool", b"t"), LayerEntry::file("usr/sbin/tool2", b"u")],
        ],
    )
    .expect("unpacks");
    assert_eq!(fs::read(root.join("usr/bin/tool")).expect("tool"), b"t");
    assert_eq!(fs::read(root.join("usr/bin/tool2")).expect("tool2"), b"u");
    assert!(fs::symlink_metadata(root.join("bin")).expect("bin").file_type().is_symlink());
}

#[test]
fn rejects_parent_dir_components() {
    let s = Scratch::new();
    let result = apply(&s.root(), &[vec![LayerEntry::file("../evil", b"pwned")]]);
    assert_rejected(result, "`..`");
    assert!(!exists_nofollow(&s.outside("evil")));
    let result = apply(&s.root(), &[vec![LayerEntry::file("a/../../evil2", b"pwned")]]);
    assert_rejected(result, "`..`");
    assert!(!exists_nofollow(&s.outside("evil2")));
}

#[test]
fn rejects_absolute_paths() {
    let s = Scratch::new();
    let target = s.outside("abs-target");
    let path = target.to_str().expect("utf-8 temp path").to_owned();
    let result = apply(&s.root(), &[vec![LayerEntry::file(&path, b"pwned")]]);
    assert_rejected(result, "absolute");
    assert!(!exists_nofollow(&target));
}

#[test]
fn rejects_hard_links_that_escape() {
    let s = Scratch::new();
    fs::write(s.outside("outside"), b"secret").expect("outside file");
    let result = apply(&s.root(), &[vec![LayerEntry::hardlink("link", "../../outside")]]);
    assert_rejected(result, "`..`");
    assert!(!exists_nofollow(&s.root().join("link")));

    let result = apply(&s.root(), &[vec![LayerEntry::hardlink("link", "/etc/passwd")]]);
    assert_rejected(result, "absolute");
    assert!(!exists_nofollow(&s.root().join("link")));

    // Through a link pointing out of the root.
    let out = s.outside("dir");
    fs::create_dir(&out).expect("dir");
    fs::write(out.join("f"), b"secret").expect("file");
    let result = apply(
        &s.root(),
        &[vec![LayerEntry::symlink("esc", out.to_str().expect("utf-8")), LayerEntry::hardlink("link", "esc/f")]],
    );
    assert_rejected(result, "outside the image root");
    assert!(!exists_nofollow(&s.root().join("link")));
    assert_eq!(fs::metadata(out.join("f")).expect("f").nlink(), 1, "no new link to the outside file");
}

#[test]
fn rejects_writes_through_a_symlink_pointing_outside() {
    let s = Scratch::new();
    let escape_dir = s.outside("escape-target");
    fs::create_dir(&escape_dir).expect("dir");
    let target = escape_dir.to_str().expect("utf-8").to_owned();

    // Link and write in two layers...
    let result = apply(
        &s.root(),
        &[vec![LayerEntry::symlink("escape", &target)], vec![LayerEntry::file("escape/pwned", b"pwned")]],
    );
    assert_rejected(result, "outside the image root");
    assert!(!exists_nofollow(&escape_dir.join("pwned")));

    // ... in one layer, and as a directory entry.
    let s2 = Scratch::new();
    let result = apply(
        &s2.root(),
        &[vec![
            LayerEntry::symlink("escape", &target),
            LayerEntry::dir("escape/sub"),
            LayerEntry::file("escape/sub/x", b"x"),
        ]],
    );
    assert_rejected(result, "outside the image root");
    assert!(!exists_nofollow(&escape_dir.join("sub")));

    // A relative link climbing out.
    let s3 = Scratch::new();
    fs::create_dir(s3.outside("up-target")).expect("dir");
    let result = apply(
        &s3.root(),
        &[vec![
            LayerEntry::dir("a"),
            LayerEntry::symlink("a/up", "../../up-target"),
            LayerEntry::file("a/up/pwned", b"x"),
        ]],
    );
    assert_rejected(result, "climbs above the image root");
    assert!(!exists_nofollow(&s3.outside("up-target/pwned")));
}

#[test]
fn never_writes_the_hosts_etc() {
    let before = fs::read("/etc/passwd").expect("host passwd");
    let s = Scratch::new();
    let result = apply(
        &s.root(),
        &[vec![LayerEntry::symlink("etc", "/etc")], vec![LayerEntry::file("etc/passwd", b"root::0:0::/:/bin/sh\n")]],
    );
    assert_rejected(result, "etc/passwd");
    assert_eq!(fs::read("/etc/passwd").expect("host passwd"), before);
}

#[test]
fn replaces_a_final_symlink_instead_of_writing_through_it() {
    let s = Scratch::new();
    let victim = s.outside("victim");
    fs::write(&victim, b"original").expect("victim");
    apply(
        &s.root(),
        &[
            vec![
                LayerEntry::symlink("f", victim.to_str().expect("utf-8")),
                LayerEntry::symlink("d", s.base.path().to_str().expect("utf-8")),
            ],
            vec![LayerEntry::file("f", b"layer content"), LayerEntry::dir("d")],
        ],
    )
    .expect("unpacks");
    assert_eq!(fs::read(&victim).expect("victim"), b"original");
    let f = fs::symlink_metadata(s.root().join("f")).expect("f");
    assert!(f.is_file());
    assert_eq!(fs::read(s.root().join("f")).expect("f"), b"layer content");
    assert!(fs::symlink_metadata(s.root().join("d")).expect("d").is_dir());
    assert!(s.outside("root").is_dir(), "the outside was not touched");
}

#[test]
fn whiteouts_never_delete_outside() {
    let s = Scratch::new();
    let dir = s.outside("wh-target");
    fs::create_dir(&dir).expect("dir");
    fs::write(dir.join("victim"), b"v").expect("victim");
    let target = dir.to_str().expect("utf-8").to_owned();
    let result =
        apply(&s.root(), &[vec![LayerEntry::symlink("esc", &target)], vec![LayerEntry::file("esc/.wh.victim", b"")]]);
    assert_rejected(result, "outside the image root");
    let result = apply(&s.root(), &[vec![LayerEntry::file("esc/.wh..wh..opq", b"")]]);
    assert_rejected(result, "outside the image root");
    assert!(dir.join("victim").exists());
}

#[test]
fn skips_devices_and_fifos() {
    let s = Scratch::new();
    apply(
        &s.root(),
        &[vec![
            LayerEntry::Fifo { path: "fifo".into() },
            LayerEntry::CharDevice { path: "dev/null".into(), major: 1, minor: 3 },
            LayerEntry::file("ok", b"ok"),
        ]],
    )
    .expect("unpacks");
    assert!(!exists_nofollow(&s.root().join("fifo")));
    assert!(!exists_nofollow(&s.root().join("dev/null")));
    assert!(s.root().join("ok").is_file());
}

#[test]
fn gzip_and_zstd_layers_unpack() {
    let tar = layer_tar(&[LayerEntry::file("hello", b"world")]).expect("tar");
    for (compression, media_type) in [
        (LayerCompression::Gzip, MT_LAYER_GZIP),
        (LayerCompression::Zstd, MT_LAYER_ZSTD),
        (LayerCompression::None, MT_LAYER_TAR),
        // A compressed blob under the plain media type: the magic decides.
        (LayerCompression::Gzip, MT_LAYER_TAR),
        (LayerCompression::None, "application/vnd.docker.image.rootfs.diff.tar"),
        (LayerCompression::Gzip, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ] {
        let s = Scratch::new();
        let blob = compress(&tar, compression).expect("compress");
        unpack_layer(&blob[..], media_type, &s.root()).expect("unpacks");
        assert_eq!(fs::read(s.root().join("hello")).expect("hello"), b"world", "{media_type} {compression:?}");
    }
}

#[test]
fn rejects_unknown_media_types_and_corrupt_data() {
    let s = Scratch::new();
    let result = unpack_layer(&b"{}"[..], "application/vnd.oci.image.config.v1+json", &s.root());
    assert!(matches!(result, Err(RuntimeError::Image(m)) if m.contains("unsupported layer media type")));
    let result = unpack_layer(&b"\x1f\x8bnot really gzip"[..], MT_LAYER_GZIP, &s.root());
    assert!(matches!(result, Err(RuntimeError::Image(m)) if m.contains("corrupt layer")));
}
