//! The `oci` runtime with real runc: starts from prepared bundles, the spares' lifecycle,
//! and the removal of what a killed server left behind.

use super::*;
use crate::Readiness;
use crate::oci::ImageStore;
use serval_testimages::{ImageConfigSpec, busybox_files, write_docker_archive};

/// Whether runc (and root) are here; missing ones fail the test when CI requires them.
fn runc_available() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && std::process::Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("SERVAL_REQUIRE_RUNC").as_deref() != Ok("1"), "root and runc are required");
        eprintln!("skipped: needs root and runc");
    }
    ok
}

/// An image store holding busybox as `test/busybox:1`.
fn busybox_images(dir: &Path) -> Arc<dyn ImageSource> {
    let archive = dir.join("busybox.tar");
    let files = busybox_files().expect("busybox-static is installed");
    write_docker_archive(&archive, "test/busybox:1", &files, ImageConfigSpec::default()).expect("archive");
    let store = Arc::new(ImageStore::open(dir.join("images")).expect("image store"));
    store.import(&archive).expect("import");
    Arc::new(StoreImages::new(store))
}

fn httpd_spec(instance_id: &str) -> InstanceSpec {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
    InstanceSpec {
        instance_id: instance_id.into(),
        namespace: "default".into(),
        service: "web".into(),
        revision: "web-00001".into(),
        configuration: "web".into(),
        env: Vec::new(),
        working_dir: None,
        startup_timeout: Duration::from_secs(20),
        readiness: Readiness::TcpConnect,
        workload: crate::Workload::Container(crate::ContainerSettings {
            image: "test/busybox:1".into(),
            command: words(&["/bin/httpd", "-f", "-p", "127.0.0.1:$(PORT)", "-h", "/"]),
            pids_limit: 64,
            ..Default::default()
        }),
    }
}

fn no_logs() -> LogSink {
    Arc::new(|_| {})
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let path = path.display().to_string();
    mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(path.as_str()))
}

#[tokio::test]
async fn a_stopped_instance_leaves_a_prepared_bundle_for_the_next_start() {
    if !runc_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let images = busybox_images(dir.path());
    let state = dir.path().join("containers");
    let runtime = OciRuntime::new("runc".into(), &state, images).await.expect("runtime");
    let bundles = state.join("bundles");

    // Nothing prepared yet: the first start mounts its own bundle.
    let first = runtime.start(httpd_spec("web-00001-1"), no_logs()).await.expect("first start");
    assert_eq!(entries(&bundles), ["web-00001-1"]);
    first.stop(Duration::from_secs(2)).await;
    assert_eq!(entries(&bundles), ["spare-1"], "the stopped instance's bundle is gone, a spare is ready");
    assert!(is_mounted(&bundles.join("spare-1/rootfs")));

    // The next start runs in the spare and answers like any other.
    let second = runtime.start(httpd_spec("web-00001-2"), no_logs()).await.expect("start from the spare");
    assert_eq!(entries(&bundles), ["spare-1"]);
    assert!(bundles.join("spare-1/config.json").is_file());
    assert!(std::net::TcpStream::connect(second.endpoint.socket().expect("a socket")).is_ok());
    second.stop(Duration::from_secs(2)).await;
    assert_eq!(entries(&bundles), ["spare-2"]);

    // A released revision keeps nothing.
    runtime.release("default", "web-00001");
    assert!(entries(&bundles).is_empty());
    assert!(!is_mounted(&bundles.join("spare-2/rootfs")));

    // Asked to prepare, it prepares; at shutdown, everything goes.
    runtime.prepare(&httpd_spec("unused")).await.expect("prepare");
    assert_eq!(entries(&bundles), ["spare-3"]);
    runtime.shutdown();
    assert!(entries(&bundles).is_empty());
    runtime.prepare(&httpd_spec("unused")).await.expect("prepare after shutdown");
    assert!(entries(&bundles).is_empty(), "nothing is prepared after shutdown");
}

#[tokio::test]
async fn spares_left_by_a_killed_server_are_removed_at_the_next_start() {
    if !runc_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let images = busybox_images(dir.path());
    let state = dir.path().join("containers");
    let crashed = OciRuntime::new("runc".into(), &state, images.clone()).await.expect("runtime");
    crashed.prepare(&httpd_spec("unused")).await.expect("prepare");
    let spare = state.join("bundles/spare-1/rootfs");
    assert!(is_mounted(&spare));
    // A killed server runs no destructor.
    std::mem::forget(crashed);

    let restarted = OciRuntime::new("runc".into(), &state, images).await.expect("restarted runtime");
    assert!(!is_mounted(&spare), "the leftover overlay is unmounted");
    assert!(entries(&state.join("bundles")).is_empty(), "and its directory removed");
    let instance = restarted.start(httpd_spec("web-00001-1"), no_logs()).await.expect("start after restart");
    instance.stop(Duration::from_secs(2)).await;
    restarted.shutdown();
}
