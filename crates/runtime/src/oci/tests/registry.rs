//! Pulls from a real registry: Debian's `docker-registry` on a loopback port, filled by
//! `skopeo`. Skipped (with a message) when the tools are missing, unless
//! `SERVAL_REQUIRE_RUNC=1`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::super::{ImageStore, PullProgress, RegistryAuth};
use super::store::multi_arch_layout;
use super::{skip, tools_required};
use crate::RuntimeError;
use serval_testimages::{
    ImageConfigSpec, TestRegistry as Registry, build_image_layout, busybox_files, find_tool, registry_tools,
};

fn tools() -> Option<PathBuf> {
    let tools = registry_tools();
    if tools.is_none() {
        assert!(!tools_required(), "docker-registry/skopeo not found but SERVAL_REQUIRE_RUNC=1");
        skip("docker-registry/skopeo not found");
    }
    tools
}

fn busybox_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    build_image_layout(
        &layout,
        "busybox:1",
        &busybox_files().expect("busybox"),
        ImageConfigSpec { cmd: vec!["/bin/sh".into()], ..Default::default() },
    )
    .expect("layout");
    layout
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn pulls_from_a_registry() {
    let Some(skopeo) = tools() else { return };
    let registry = Registry::start(None);
    let work = tempfile::tempdir().expect("temp dir");
    let layout = busybox_layout(work.path());
    registry.push(&skopeo, &format!("oci:{}:busybox:1", layout.display()), "test/busybox:1", None, false);
    let store = ImageStore::open(work.path().join("store")).expect("store");
    let reference = format!("{}/test/busybox:1", registry.addr);

    let events = Mutex::new(Vec::new());
    let rt = runtime();
    let summary = rt
        .block_on(store.pull(&reference, RegistryAuth::Anonymous, |p| {
            events.lock().expect("events").push(p);
        }))
        .expect("pulls");
    assert_eq!(summary.name.as_deref(), Some(reference.as_str()));
    let events = events.into_inner().expect("events");
    let Some(PullProgress::Resolved { digest, layers }) = events.first() else {
        panic!("first event is Resolved: {events:?}")
    };
    assert_eq!(digest, &summary.digest);
    assert_eq!(layers.len(), 1);
    let (layer, size) = &layers[0];
    assert!(events.iter().any(
        |e| matches!(e, PullProgress::Layer { digest, downloaded, total } if digest == layer && downloaded == size && total == size)
    ));
    assert!(events.contains(&PullProgress::LayerDone { digest: layer.clone(), size: *size, cached: false }));

    let image = store.resolve(&reference).expect("resolves");
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    let rootfs = store.rootfs(&image).expect("rootfs");
    assert_eq!(fs::read(rootfs.join("bin/busybox")).expect("busybox"), fs::read("/bin/busybox").expect("host"));
    assert_eq!(fs::read_link(rootfs.join("bin/sh")).expect("sh"), Path::new("busybox"));

    // The store is a standard OCI layout: other tools read it.
    let out = Command::new(&skopeo)
        .args(["--insecure-policy", "inspect", "--raw"])
        .arg(format!("oci:{}:{reference}", store.dir().display()))
        .output()
        .expect("runs skopeo");
    assert!(out.status.success(), "skopeo reads the store: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(super::super::sha256_digest(&out.stdout), summary.digest);

    // Again: nothing to download.
    let events = Mutex::new(Vec::new());
    let again = rt
        .block_on(store.pull(&reference, RegistryAuth::Anonymous, |p| events.lock().expect("events").push(p)))
        .expect("pulls again");
    assert_eq!(again.digest, summary.digest);
    assert!(events.into_inner().expect("events").contains(&PullProgress::LayerDone {
        digest: layer.clone(),
        size: *size,
        cached: true
    }));

    // A missing tag: the registry's message comes through.
    let missing = format!("{}/test/busybox:nope", registry.addr);
    let err = rt.block_on(store.pull(&missing, RegistryAuth::Anonymous, |_| {})).expect_err("missing tag");
    assert!(matches!(err, RuntimeError::PullFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");

    // A manifest list: the linux/amd64 image is chosen.
    let multi = work.path().join("multi");
    multi_arch_layout(&multi, "multi");
    registry.push(&skopeo, &format!("oci:{}:multi", multi.display()), "test/multi:1", None, true);
    let multi_ref = format!("{}/test/multi:1", registry.addr);
    rt.block_on(store.pull(&multi_ref, RegistryAuth::Anonymous, |_| {})).expect("pulls the list");
    let image = store.resolve(&multi_ref).expect("resolves");
    assert_eq!(fs::read(store.rootfs(&image).expect("rootfs").join("arch")).expect("arch"), b"amd64");

    // Nothing listens: a clear connection error.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let err =
        rt.block_on(store.pull(&format!("{closed}/x:1"), RegistryAuth::Anonymous, |_| {})).expect_err("no registry");
    assert!(err.to_string().contains("cannot reach the registry"), "{err}");
}

#[test]
fn pulls_with_basic_auth() {
    let Some(skopeo) = tools() else { return };
    let Some(htpasswd_tool) = find_tool("htpasswd") else {
        assert!(!tools_required(), "htpasswd (apache2-utils) not found but SERVAL_REQUIRE_RUNC=1");
        skip("htpasswd (apache2-utils) not found");
        return;
    };
    let out = Command::new(htpasswd_tool).args(["-Bbn", "serval", "s3cret"]).output().expect("htpasswd");
    assert!(out.status.success());
    let registry = Registry::start(Some(&String::from_utf8_lossy(&out.stdout)));
    let work = tempfile::tempdir().expect("temp dir");
    let layout = busybox_layout(work.path());
    registry.push(
        &skopeo,
        &format!("oci:{}:busybox:1", layout.display()),
        "private/busybox:1",
        Some("serval:s3cret"),
        false,
    );
    let store = ImageStore::open(work.path().join("store")).expect("store");
    let reference = format!("{}/private/busybox:1", registry.addr);
    let rt = runtime();

    let err = rt.block_on(store.pull(&reference, RegistryAuth::Anonymous, |_| {})).expect_err("needs credentials");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    let wrong = RegistryAuth::Basic { username: "serval".into(), password: "wrong".into() };
    let err = rt.block_on(store.pull(&reference, wrong, |_| {})).expect_err("wrong password");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    assert!(store.list().expect("list").is_empty());

    let auth = RegistryAuth::Basic { username: "serval".into(), password: "s3cret".into() };
    let summary = rt.block_on(store.pull(&reference, auth, |_| {})).expect("pulls with credentials");
    let image = store.resolve(&summary.digest).expect("resolves");
    assert!(store.rootfs(&image).expect("rootfs").join("bin/busybox").is_file());
}
