use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::super::{ImageStore, sha256_digest};
use crate::RuntimeError;
use serval_testimages::{
    HostSource, ImageConfigSpec, LayerCompression, LayerEntry, binary_with_libs, build_image_layout,
    build_image_layout_with_layers, busybox_files, write_docker_archive, write_docker_archive_with_layers,
    write_oci_archive,
};

fn spec() -> ImageConfigSpec {
    ImageConfigSpec {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hello".into()],
        env: vec!["PATH=/bin:/usr/bin".into(), "GREETING=hi".into()],
        workdir: Some("/tmp".into()),
    }
}

fn blob_count(store: &ImageStore) -> usize {
    fs::read_dir(store.dir().join("blobs/sha256")).expect("blobs dir").count()
}

fn open_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ImageStore::open(dir.path().join("images")).expect("opens");
    (dir, store)
}

#[test]
fn open_creates_an_oci_layout() {
    let (_dir, store) = open_store();
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(store.dir().join("oci-layout")).expect("oci-layout")).expect("json");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.dir().join("index.json")).expect("index")).expect("json");
    assert_eq!(index["schemaVersion"], 2);
    assert!(store.list().expect("list").is_empty());
    // Opening again keeps everything.
    ImageStore::open(store.dir().to_path_buf()).expect("reopens");
}

#[test]
fn imports_a_docker_archive_and_resolves_it() {
    let (dir, store) = open_store();
    let archive = dir.path().join("busybox.tar");
    write_docker_archive(&archive, "busybox:latest", &busybox_files().expect("busybox"), spec()).expect("archive");
    let imported = store.import(&archive).expect("imports");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name.as_deref(), Some("docker.io/library/busybox:latest"));
    assert_eq!(imported[0].created.as_deref(), Some("2023-11-14T22:13:20Z"));

    let image = store.resolve("busybox").expect("resolves by short name");
    assert_eq!(image.name.as_deref(), Some("docker.io/library/busybox:latest"));
    assert_eq!(image.digest, imported[0].digest);
    assert_eq!(image.config.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(image.config.cmd, vec!["echo hello"]);
    assert_eq!(image.config.env, vec!["PATH=/bin:/usr/bin", "GREETING=hi"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(image.config.os, "linux");
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar");

    // Every blob is stored under its own digest.
    for entry in fs::read_dir(store.dir().join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let data = fs::read(entry.path()).expect("blob");
        assert_eq!(sha256_digest(&data), format!("sha256:{}", entry.file_name().to_string_lossy()));
    }
    // By digest, by digest prefix, by name@digest.
    assert_eq!(store.resolve(&image.digest).expect("by digest").digest, image.digest);
    assert_eq!(store.resolve(&image.digest["sha256:".len()..][..12]).expect("by prefix").digest, image.digest);
    let by_both = format!("busybox@{}", image.digest);
    assert_eq!(store.resolve(&by_both).expect("by name@digest").digest, image.digest);
    assert!(matches!(store.resolve("nope"), Err(RuntimeError::ImageNotFound(_))));
}

#[test]
fn imports_an_oci_layout_directory_and_tar() {
    let (dir, store) = open_store();
    let layout = dir.path().join("layout");
    build_image_layout(&layout, "localhost:5000/test/busybox:1", &busybox_files().expect("busybox"), spec())
        .expect("layout");
    let imported = store.import(&layout).expect("imports dir");
    assert_eq!(imported[0].name.as_deref(), Some("localhost:5000/test/busybox:1"));
    let image = store.resolve("localhost:5000/test/busybox:1").expect("resolves");
    assert_eq!(image.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    // The manifest keeps its digest: the layout's own bytes are stored.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str());

    let (dir2, store2) = open_store();
    let archive = dir2.path().join("layout.tar");
    write_oci_archive(&layout, &archive).expect("tar");
    let imported = store2.import(&archive).expect("imports tar");
    assert_eq!(imported[0].digest, image.digest);
    assert_eq!(store2.resolve("localhost:5000/test/busybox:1").expect("resolves"), image);
}

#[test]
fn import_picks_linux_amd64_from_an_index() {
    let (dir, store) = open_store();
    let layout = dir.path().join("multi");
    multi_arch_layout(&layout, "test/multi:1");
    store.import(&layout).expect("imports");
    let image = store.resolve("test/multi:1").expect("resolves");
    let rootfs = store.rootfs(&image).expect("rootfs");
    assert_eq!(fs::read(rootfs.join("arch")).expect("arch"), b"amd64");
}

/// A layout whose index.json points at an image index with an arm64 and an amd64 image
/// (each has `/arch` saying which it is; the amd64 layer is zstd-compressed).
pub(super) fn multi_arch_layout(layout: &Path, name: &str) {
    let arm = build_image_layout_with_layers(
        layout,
        "arm",
        &[vec![LayerEntry::file("arch", b"arm64")]],
        LayerCompression::Gzip,
        &ImageConfigSpec::default(),
    )
    .expect("arm image");
    let amd = build_image_layout_with_layers(
        layout,
        "amd",
        &[vec![LayerEntry::file("arch", b"amd64")]],
        LayerCompression::Zstd,
        &ImageConfigSpec::default(),
    )
    .expect("amd image");
    let size =
        |digest: &str| fs::metadata(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).expect("blob").len();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": size(&arm),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": size(&amd),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let bytes = serde_json::to_vec(&nested).expect("json");
    let digest = sha256_digest(&bytes);
    fs::write(layout.join("blobs/sha256").join(&digest["sha256:".len()..]), &bytes).expect("index blob");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                        "size": bytes.len(), "annotations": {"org.opencontainers.image.ref.name": name}}],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index");
}

#[test]
fn shared_layers_are_stored_once_and_removed_with_the_last_image() {
    let (dir, store) = open_store();
    let files = busybox_files().expect("busybox");
    let a = dir.path().join("a.tar");
    let b = dir.path().join("b.tar");
    write_docker_archive(&a, "test/a:1", &files, spec()).expect("a");
    write_docker_archive(&b, "test/b:1", &files, ImageConfigSpec { cmd: vec!["other".into()], ..spec() }).expect("b");
    store.import(&a).expect("a");
    store.import(&b).expect("b");
    let (ia, ib) = (store.resolve("test/a:1").expect("a"), store.resolve("test/b:1").expect("b"));
    assert_eq!(ia.layers, ib.layers, "same layer");
    assert_ne!(ia.digest, ib.digest);
    // 1 shared layer + 2 configs + 2 manifests.
    assert_eq!(blob_count(&store), 5);
    let rootfs_a = store.rootfs(&ia).expect("rootfs a");
    let rootfs_b = store.rootfs(&ib).expect("rootfs b");

    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 2);
    let size = listed.iter().find(|s| s.digest == ia.digest).expect("a listed").size;
    assert!(size > ia.layers[0].size, "size counts layer, config and manifest");

    store.remove("test/a:1").expect("removes a");
    assert!(matches!(store.resolve("test/a:1"), Err(RuntimeError::ImageNotFound(_))));
    assert!(store.has_blob(&ia.layers[0].digest), "the shared layer stays");
    assert!(!store.has_blob(&ia.digest) && !store.has_blob(&ia.config_digest));
    assert_eq!(blob_count(&store), 3);
    assert!(!rootfs_a.exists(), "the unused rootfs is removed");
    assert!(rootfs_b.exists());

    store.remove(&ib.digest).expect("removes b by digest");
    assert_eq!(blob_count(&store), 0);
    assert!(store.list().expect("list").is_empty());
    assert!(!rootfs_b.exists());
    assert!(matches!(store.remove("test/b:1"), Err(RuntimeError::ImageNotFound(_))));
}

#[test]
fn a_moved_name_leaves_the_old_image_unnamed() {
    let (dir, store) = open_store();
    let v1 = dir.path().join("v1.tar");
    let v2 = dir.path().join("v2.tar");
    write_docker_archive_with_layers(&v1, "app", &[vec![LayerEntry::file("v", b"1")]], &spec()).expect("v1");
    write_docker_archive_with_layers(&v2, "app", &[vec![LayerEntry::file("v", b"2")]], &spec()).expect("v2");
    let first = store.import(&v1).expect("v1").remove(0);
    let second = store.import(&v2).expect("v2").remove(0);
    assert_eq!(store.resolve("app").expect("app").digest, second.digest);
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 2);
    let old = listed.iter().find(|s| s.digest == first.digest).expect("old image kept");
    assert_eq!(old.name, None);
    assert!(store.resolve(&first.digest).expect("by digest").name.is_none());
    // Importing the same archive again changes nothing.
    store.import(&v2).expect("again");
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn rootfs_holds_busybox_and_its_links() {
    let (dir, store) = open_store();
    let layout = dir.path().join("layout");
    build_image_layout(&layout, "test/busybox:1", &busybox_files().expect("busybox"), spec()).expect("layout");
    store.import(&layout).expect("imports");
    let image = store.resolve("test/busybox:1").expect("resolves");

    // Concurrent callers get the same, complete directory.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (store, image) = (store.clone(), image.clone());
            std::thread::spawn(move || store.rootfs(&image))
        })
        .collect();
    let paths: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread").expect("rootfs")).collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    let rootfs = &paths[0];
    assert_eq!(rootfs, &store.dir().join("rootfs").join(&image.digest["sha256:".len()..]));
    assert_eq!(fs::read(rootfs.join("bin/busybox")).expect("busybox"), fs::read("/bin/busybox").expect("host"));
    for applet in ["sh", "ls", "cat", "echo", "sleep", "id", "ps", "mkdir", "touch", "httpd", "nc", "wget"] {
        assert_eq!(fs::read_link(rootfs.join("bin").join(applet)).expect(applet), Path::new("busybox"));
    }
    assert_eq!(fs::metadata(rootfs.join("tmp")).expect("tmp").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(fs::metadata(rootfs).expect("root").permissions().mode() & 0o777, 0o755);
    let leftovers: Vec<_> = fs::read_dir(store.dir().join("rootfs"))
        .expect("rootfs dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary directories left");

    if nix::unistd::geteuid().is_root() {
        let out = Command::new("chroot").arg(rootfs).args(["/bin/sh", "-c", "echo hello from $(id -u)"]).output();
        if let Ok(out) = out {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from 0", "{out:?}");
        }
    }
}

#[test]
fn a_dynamically_linked_binary_runs_with_its_libraries() {
    let mut files = busybox_files().expect("busybox");
    files.extend(binary_with_libs(Path::new("/usr/bin/true"), "/usr/local/bin/app").expect("ldd"));
    assert!(files.iter().any(|(p, _)| p.contains("libc.so")), "libc included: {files:?}");
    assert!(files.iter().any(|(p, _)| p.contains("ld-linux")), "the loader included");
    let (dir, store) = open_store();
    let layout = dir.path().join("layout");
    build_image_layout(&layout, "test/app:1", &files, ImageConfigSpec::default()).expect("layout");
    store.import(&layout).expect("imports");
    let rootfs = store.rootfs(&store.resolve("test/app:1").expect("resolves")).expect("rootfs");
    if nix::unistd::geteuid().is_root() {
        let status = Command::new("chroot").arg(&rootfs).arg("/usr/local/bin/app").status().expect("chroot");
        assert!(status.success(), "the binary runs inside the rootfs: {status:?}");
    }
}

#[test]
fn import_rejects_digest_mismatches_and_records_nothing() {
    let (dir, store) = open_store();
    // A corrupted blob in an OCI layout.
    let layout = dir.path().join("layout");
    build_image_layout(
        &layout,
        "test/x:1",
        &[("/f".to_owned(), HostSource::Bytes { data: b"content".to_vec(), mode: 0o644 })],
        spec(),
    )
    .expect("layout");
    let image_layer = {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
        let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest").to_owned();
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(layout.join("blobs/sha256").join(&manifest_digest["sha256:".len()..])).expect("manifest"),
        )
        .expect("json");
        manifest["layers"][0]["digest"].as_str().expect("layer").to_owned()
    };
    let layer_path = layout.join("blobs/sha256").join(&image_layer["sha256:".len()..]);
    let mut data = fs::read(&layer_path).expect("layer");
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&layer_path, &data).expect("corrupt");
    let err = store.import(&layout).expect_err("rejected");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(store.list().expect("list").is_empty());
    assert_eq!(blob_count(&store), 0, "nothing stored");
    assert_eq!(fs::read_dir(store.dir().join("tmp")).expect("tmp").count(), 0, "temporaries removed");

    // A docker archive whose layer does not match the config's diff_ids.
    let archive = dir.path().join("bad.tar");
    write_docker_archive(
        &archive,
        "test/y:1",
        &[("/f".to_owned(), HostSource::Bytes { data: b"c".to_vec(), mode: 0o644 })],
        spec(),
    )
    .expect("archive");
    let tampered = tamper_docker_layer(&archive);
    fs::write(&archive, tampered).expect("write");
    let err = store.import(&archive).expect_err("rejected");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(store.list().expect("list").is_empty());
}

/// Rewrites a docker archive with one byte of its layer.tar content changed.
fn tamper_docker_layer(archive: &Path) -> Vec<u8> {
    let data = fs::read(archive).expect("archive");
    let mut out = tar::Builder::new(Vec::new());
    let mut input = tar::Archive::new(&data[..]);
    for entry in input.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).expect("read");
        if path.ends_with("layer.tar") {
            // Flip a byte of the file content (after the 512-byte header of the first entry).
            content[512] ^= 0x01;
        }
        let mut header = entry.header().clone();
        out.append_data(&mut header, &path, &content[..]).expect("append");
    }
    out.into_inner().expect("tar")
}

#[test]
fn import_rejects_what_is_not_an_image() {
    let (dir, store) = open_store();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).expect("dir");
    let err = store.import(&empty).expect_err("rejected");
    assert!(err.to_string().contains("not a docker archive"), "{err}");
    let missing = store.import(&dir.path().join("missing.tar")).expect_err("rejected");
    assert!(missing.to_string().contains("missing.tar"), "{missing}");
}

#[test]
fn rootfs_rejects_a_malicious_image_and_leaves_nothing_behind() {
    let (dir, store) = open_store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).expect("outside");
    let layout = dir.path().join("layout");
    build_image_layout_with_layers(
        &layout,
        "test/evil:1",
        &[
            vec![LayerEntry::file("ok", b"fine"), LayerEntry::symlink("escape", outside.to_str().expect("utf-8"))],
            vec![LayerEntry::file("escape/pwned", b"pwned")],
        ],
        LayerCompression::Zstd,
        &ImageConfigSpec::default(),
    )
    .expect("layout");
    store.import(&layout).expect("imports (the layers are only checked when unpacked)");
    let image = store.resolve("test/evil:1").expect("resolves");
    let err = store.rootfs(&image).expect_err("rejected");
    assert!(matches!(err, RuntimeError::UnpackRejected(_)), "{err:?}");
    assert!(err.to_string().contains("escape/pwned"), "{err}");
    assert!(!outside.join("pwned").exists());
    assert_eq!(fs::read_dir(store.dir().join("rootfs")).expect("rootfs").count(), 0, "no partial rootfs");
}

#[test]
fn open_removes_leftovers_of_dead_processes() {
    let (_dir, store) = open_store();
    // pid_max is at most 4194304: this pid cannot run.
    let dead_tmp = store.dir().join("tmp/4194305-abc");
    let dead_rootfs = store.dir().join("rootfs/.tmp-4194305-xyz");
    let mine = store.dir().join(format!("tmp/{}-keep", std::process::id()));
    fs::write(&dead_tmp, b"half a blob").expect("tmp");
    fs::create_dir_all(dead_rootfs.join("bin")).expect("rootfs");
    fs::write(&mine, b"in progress").expect("mine");
    ImageStore::open(store.dir().to_path_buf()).expect("reopens");
    assert!(!dead_tmp.exists());
    assert!(!dead_rootfs.exists());
    assert!(mine.exists(), "a live process's temporaries stay");
}
