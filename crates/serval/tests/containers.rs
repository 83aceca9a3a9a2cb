//! End-to-end tests of the `oci` runtime with real runc: images built here from Debian's
//! busybox-static and the example function, imported, deployed, called through the gateway,
//! isolated and limited.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use serval_testimages::{
    HostSource, ImageConfigSpec, LayerCompression, LayerEntry, TestRegistry, binary_with_libs, build_image_layout,
    build_image_layout_with_layers, busybox_files, layer_entries, registry_tools, write_docker_archive,
};
use support::{Server, echo_bin, eventually, runc_available, skip};

const FAST_SCALING: &[&str] =
    &["--stable-window", "1s", "--scale-to-zero-grace", "0s", "--autoscaler-tick", "200ms", "--grace-period", "2s"];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A CGI script for busybox httpd: headers, then the output of `body`.
fn cgi(body: &str) -> HostSource {
    let script = format!("#!/bin/sh\necho 'Content-Type: text/plain'\necho\n{body}\n");
    HostSource::Bytes { data: script.into_bytes(), mode: 0o755 }
}

/// busybox + the echo function + CGI probes, as a `docker save` archive.
fn build_test_image(dir: &Path) -> std::path::PathBuf {
    let mut files = busybox_files().expect("busybox-static");
    files.extend(binary_with_libs(&echo_bin(), "/app/serval-echo").expect("echo binary"));
    files.push(("/www".into(), HostSource::Dir { mode: 0o755 }));
    files.push(("/www/cgi-bin".into(), HostSource::Dir { mode: 0o755 }));
    files.push((
        "/www/cgi-bin/check".into(),
        cgi("echo \"pid1=$(cat /proc/1/comm)\"\n\
             if cat \"$SECRET\" >/dev/null 2>&1; then echo host-file=visible; else echo host-file=hidden; fi\n\
             if touch /written 2>/dev/null; then echo root=writable; else echo root=readonly; fi\n\
             if touch /tmp/written 2>/dev/null; then echo tmp=writable; else echo tmp=readonly; fi\n\
             echo \"uid=$(id -u)\""),
    ));
    files.push(("/www/cgi-bin/pids".into(), cgi("ls /proc | grep -c '^[0-9]'")));
    let archive = dir.join("echo-image.tar");
    let config = ImageConfigSpec {
        entrypoint: vec!["/app/serval-echo".into()],
        env: vec!["FROM_IMAGE=yes".into()],
        ..Default::default()
    };
    write_docker_archive(&archive, "test/echo:1", &files, config).expect("write archive");
    archive
}

#[tokio::test]
async fn images_run_isolated_limited_and_scale_from_zero() {
    if !runc_available() {
        return;
    }
    let server = Server::start(FAST_SCALING);
    let archive = build_test_image(&server.dir);
    let out = server.ok(&["image", "import", archive.to_str().expect("path")]);
    assert!(out.contains("docker.io/test/echo:1"), "{out}");
    let ls = server.ok(&["image", "ls"]);
    assert!(ls.contains("docker.io/test/echo:1"), "{ls}");

    // Deploy by reference; the first instance proves the image runs, then it scales away.
    server.ok(&["deploy", "web", "--image", "test/echo:1", "--env", "GREETING=container"]);
    eventually("scale to zero", Duration::from_secs(20), async || {
        let s = server.get_json(&["web"]);
        (s["status"]["instances"]["ready"] == 0 && s["status"]["instances"]["starting"] == 0).then_some(())
    })
    .await;
    let body = json(&server.ok(&["invoke", "web"]));
    assert_eq!(body["service"], "web");
    assert_eq!(body["env"]["GREETING"], "container");
    assert_eq!(body["env"]["FROM_IMAGE"], "yes", "the image's environment is kept");
    assert_eq!(body["pid"], 1, "the function is PID 1 of its own namespace");
    let logs = server.ok(&["logs", "web"]);
    assert!(logs.contains("stdout: serval-echo listening on"), "container output is captured: {logs}");

    // Isolation, through busybox httpd CGI in the same image, with a read-only root.
    let secret = std::env::temp_dir().join(format!("serval-host-secret-{}", std::process::id()));
    std::fs::write(&secret, "host only").expect("secret");
    let manifest = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: probe
spec:
  template:
    spec:
      containers:
        - image: test/echo:1
          command: ["/bin/sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"]
          env:
            - name: SECRET
              value: "{secret}"
          securityContext:
            readOnlyRootFilesystem: true
"#,
        secret = secret.display()
    );
    let file = server.dir.join("probe.yaml");
    std::fs::write(&file, manifest).expect("manifest");
    server.ok(&["apply", "-f", file.to_str().expect("path")]);
    let check = server.ok(&["invoke", "probe", "--path", "/cgi-bin/check"]);
    assert!(check.contains("pid1=httpd"), "own PID namespace: {check}");
    assert!(check.contains("host-file=hidden"), "host files are out of reach: {check}");
    assert!(check.contains("root=readonly"), "{check}");
    assert!(check.contains("tmp=writable"), "{check}");
    let _ = std::fs::remove_file(&secret);
}

#[tokio::test]
async fn memory_hogs_are_oom_killed_and_fork_bombs_stop_at_the_pids_limit() {
    if !runc_available() {
        return;
    }
    let server = Server::start(FAST_SCALING);
    let archive = build_test_image(&server.dir);
    server.ok(&["image", "import", archive.to_str().expect("path")]);
    server.ok(&["deploy", "steady", "--image", "test/echo:1", "--min-scale", "1"]);

    let manifest = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hog
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - image: test/echo:1
          command: ["/bin/sh", "-c", "httpd -p 127.0.0.1:$PORT -h /www; sleep 1; head -c 400000000 /dev/zero | tail -c 300000000 >/dev/null"]
          resources:
            limits:
              memory: 64Mi
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: bomb
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - image: test/echo:1
          command: ["/bin/sh", "-c", "httpd -f -p 127.0.0.1:$PORT -h /www & sleep 1; (i=0; while [ $i -lt 2000 ]; do sleep 300 & i=$((i+1)); done) || echo BOMB_REFUSED_A_FORK; wait"]
"#;
    let file = server.dir.join("limits.yaml");
    std::fs::write(&file, manifest).expect("manifest");
    server.cli(&["apply", "-f", file.to_str().expect("path"), "--no-wait"]);

    let revision = eventually("the OOM kill to be reported", Duration::from_secs(30), async || {
        let r = server.get_json(&["revision", "hog-00001"]);
        let conditions = r["status"]["conditions"].as_array()?.clone();
        conditions.iter().any(|c| c["reason"] == "OOMKilled").then_some(r)
    })
    .await;
    println!("{}", revision["status"]["conditions"]);

    // The fork bomb is held at the pids limit. It forks in a subshell, which exits when a fork
    // fails (busybox sh gives up on "can't fork"); the container's shell then reports it and
    // keeps the bomb's processes alive, so the cgroup can be read at leisure. (A bomb that
    // exits at its first refused fork is restarted, and sits at its limit only for moments
    // that a loaded machine's polling can miss.)
    let pids_file = |id: &str, file: &str| {
        [format!("/sys/fs/cgroup/pids/serval/{id}/{file}"), format!("/sys/fs/cgroup/serval/{id}/{file}")]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|v| v.trim().to_string())
    };
    eventually("the bomb to report a refused fork", Duration::from_secs(120), async || {
        server.ok(&["logs", "bomb"]).contains("BOMB_REFUSED_A_FORK").then_some(())
    })
    .await;
    let bomb = runc_containers(&server.dir).into_iter().find(|id| id.starts_with("bomb-"));
    let bomb = bomb.expect("the bomb's container still runs");
    let max = pids_file(&bomb, "pids.max");
    let current: Option<u32> = pids_file(&bomb, "pids.current").and_then(|c| c.parse().ok());
    // `max N`: forks the limit refused (the host has pids to spare, so no other cause).
    let refused: Option<u64> = pids_file(&bomb, "pids.events")
        .and_then(|events| events.lines().find_map(|l| l.strip_prefix("max ")?.trim().parse().ok()));
    assert_eq!(max.as_deref(), Some("256"), "the container's cgroup carries the limit");
    assert!(refused.is_some_and(|n| n > 0), "the limit refused the fork: pids.events max {refused:?}");
    assert!(current.is_some_and(|c| c <= 256), "pids are capped by the limit: {current:?}");

    // Others keep serving.
    let body = json(&server.ok(&["invoke", "steady"]));
    assert_eq!(body["service"], "steady");
}

#[tokio::test]
async fn malicious_layers_are_rejected_and_write_nothing_outside() {
    if !runc_available() {
        return;
    }
    let server = Server::start(FAST_SCALING);
    let outside = std::env::temp_dir().join(format!("serval-evil-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).expect("dir");
    let layout = server.dir.join("evil-layout");
    let base = layer_entries(&busybox_files().expect("busybox")).expect("entries");
    let evil = vec![
        LayerEntry::File { path: "../../../../../../tmp/serval-evil-dotdot".into(), data: b"x".to_vec(), mode: 0o644 },
        LayerEntry::Symlink { path: "escape".into(), target: outside.display().to_string() },
        LayerEntry::File { path: "escape/pwned".into(), data: b"x".to_vec(), mode: 0o644 },
    ];
    build_image_layout_with_layers(
        &layout,
        "test/evil:1",
        &[base, evil],
        LayerCompression::Gzip,
        &ImageConfigSpec { entrypoint: vec!["/bin/sh".into()], ..Default::default() },
    )
    .expect("layout");
    server.ok(&["image", "import", layout.to_str().expect("path")]);
    let err = server.fails(&["deploy", "evil", "--image", "test/evil:1"]);
    assert!(err.contains("ImageUnpackRejected"), "{err}");
    assert!(!outside.join("pwned").exists(), "nothing written through the symlink");
    assert!(!Path::new("/tmp/serval-evil-dotdot").exists(), "nothing written above the root");
    let _ = std::fs::remove_dir_all(&outside);
}

#[tokio::test]
async fn pulls_from_a_registry_and_deploys_by_reference() {
    if !runc_available() {
        return;
    }
    let Some(skopeo) = registry_tools() else {
        assert!(std::env::var("SERVAL_REQUIRE_RUNC").as_deref() != Ok("1"), "docker-registry and skopeo are required");
        skip("docker-registry/skopeo not found");
        return;
    };
    let server = Server::start(FAST_SCALING);
    let layout = server.dir.join("echo-layout");
    let mut files = busybox_files().expect("busybox");
    files.extend(binary_with_libs(&echo_bin(), "/app/serval-echo").expect("echo"));
    let config = ImageConfigSpec { entrypoint: vec!["/app/serval-echo".into()], ..Default::default() };
    build_image_layout(&layout, "echo:1", &files, config).expect("layout");
    let registry = TestRegistry::start(None);
    let source = format!("oci:{}:echo:1", layout.display());
    registry.push(&skopeo, &source, "test/echo:1", None, false);
    registry.push(&skopeo, &source, "test/other:2", None, false);

    let reference = format!("{}/test/echo:1", registry.addr);
    let pulled = server.ok(&["image", "pull", &reference]);
    assert!(pulled.contains(&reference), "{pulled}");
    server.ok(&["deploy", "pulled", "--image", &reference]);
    assert_eq!(json(&server.ok(&["invoke", "pulled"]))["service"], "pulled");

    // Not pulled beforehand: the deploy pulls on demand.
    let other = format!("{}/test/other:2", registry.addr);
    server.ok(&["deploy", "ondemand", "--image", &other]);
    assert_eq!(json(&server.ok(&["invoke", "ondemand"]))["service"], "ondemand");
    assert!(server.ok(&["image", "ls"]).contains(&other));

    // An image in use cannot be removed; a missing one is a clear error.
    let err = server.fails(&["image", "rm", &reference]);
    assert!(err.contains("used by revision"), "{err}");
    let err = server.fails(&["deploy", "missing", "--image", &format!("{}/test/nope:1", registry.addr)]);
    assert!(err.contains("ImagePullFailed") && err.contains("manifest unknown"), "{err}");
}

/// Container ids in serval's runc root.
fn runc_containers(data_dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(data_dir.join("containers/runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[tokio::test]
async fn containers_left_by_a_killed_server_are_removed_at_restart() {
    if !runc_available() {
        return;
    }
    let mut server = Server::start(&[]);
    let archive = build_test_image(&server.dir);
    server.ok(&["image", "import", archive.to_str().expect("path")]);
    server.ok(&["deploy", "kept", "--image", "test/echo:1", "--min-scale", "1"]);
    let before = eventually("a running container", Duration::from_secs(20), async || {
        let ids = runc_containers(&server.dir);
        (!ids.is_empty()).then_some(ids)
    })
    .await;

    server.kill9();
    // runc died with the server; the container it ran is orphaned but still there.
    assert!(runc_containers(&server.dir).iter().any(|id| before.contains(id)), "container outlived the server");

    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[]);
    let after = runc_containers(&restarted.dir);
    assert!(after.iter().all(|id| !before.contains(id)), "leftovers removed: before {before:?}, after {after:?}");
    // And the service is served again by a fresh container.
    assert_eq!(json(&restarted.ok(&["invoke", "kept"]))["service"], "kept");
    drop(server);
}
