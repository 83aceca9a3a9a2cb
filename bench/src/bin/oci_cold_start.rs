//! Container cold start: zero-to-first-response of the example function packaged as an
//! image, through serval, versus a bare `runc run` of an equivalent bundle (same rootfs,
//! same `config.json` generator) polled until its first response.
//!
//! `cargo run --release -p serval-bench --bin oci-cold-start [-- RUNS]` (default 20, as root,
//! needs runc and busybox-static).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serval_bench::{FAST_ZERO, ServalServer, Summary, free_port, path_display, poll_then_get, release_binary};
use serval_runtime::container::{BundleSpec, ImageDefaults, config};
use serval_testimages::{ImageConfigSpec, binary_with_libs, busybox_files, write_docker_archive};

fn build_image(dir: &Path) -> PathBuf {
    let mut files = busybox_files().expect("busybox-static is installed");
    files.extend(binary_with_libs(&release_binary("serval-echo"), "/app/serval-echo").expect("echo binary"));
    let archive = dir.join("echo.tar");
    let cfg = ImageConfigSpec { entrypoint: vec!["/app/serval-echo".into()], ..Default::default() };
    write_docker_archive(&archive, "bench/echo:1", &files, cfg).expect("archive");
    archive
}

/// The unpacked rootfs serval made for the image (the only one in its store).
fn image_rootfs(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("images/rootfs");
    std::fs::read_dir(&dir)
        .expect("rootfs dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .expect("an unpacked rootfs")
}

/// One bare `runc run` of a bundle on `rootfs` until the first `GET /hello` answer.
fn bare_runc_run(work: &Path, rootfs: &Path, n: usize) -> Duration {
    let port = free_port();
    let bundle = work.join(format!("bundle-{n}"));
    std::fs::create_dir_all(&bundle).expect("bundle");
    let image = ImageDefaults { entrypoint: vec!["/app/serval-echo".into()], ..Default::default() };
    let env = vec![("PORT".to_string(), port.to_string())];
    let rootfs_text = path_display(rootfs);
    let id = format!("bench-bare-{}-{n}", std::process::id());
    let cgroups = format!("/serval-bench/{id}");
    let spec = BundleSpec {
        image: &image,
        command: &[],
        args: &[],
        env: &env,
        working_dir: None,
        uid: 0,
        gid: 0,
        rootfs: &rootfs_text,
        read_only_root: true,
        hostname: "bench",
        cgroups_path: &cgroups,
        memory_limit: None,
        cpu_millis: None,
        pids_limit: 256,
        read_only_mounts: &[],
    };
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config(&spec)).expect("json")).expect("config");
    let root = work.join("runc-root");
    let began = Instant::now();
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn runc");
    let status = poll_then_get(SocketAddr::from(([127, 0, 0, 1], port)), "/hello", Duration::from_secs(10));
    let elapsed = began.elapsed();
    let _ = Command::new("runc").arg("--root").arg(&root).args(["kill", &id, "KILL"]).status();
    let _ = child.wait();
    let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "-f", &id]).status();
    assert_eq!(status.expect("bare runc response"), 200);
    elapsed
}

fn serval_run(server: &ServalServer) -> Duration {
    // Let the stopped instance's port and process table settle like between baseline runs.
    server.cold_request("cold", Duration::from_millis(50))
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let server = ServalServer::start(FAST_ZERO);
    let work = tempfile::tempdir().expect("work dir");
    let archive = build_image(work.path());
    server.cli(&["image", "import", &path_display(&archive)]);
    server.cli(&["deploy", "cold", "--image", "bench/echo:1"]);
    let rootfs = image_rootfs(server.dir.path());

    // Warm-up of each path (page cache, runc's first start).
    bare_runc_run(work.path(), &rootfs, 0);
    serval_run(&server);

    let mut bare = Vec::with_capacity(runs);
    let mut through_serval = Vec::with_capacity(runs);
    for n in 1..=runs {
        bare.push(bare_runc_run(work.path(), &rootfs, n));
        through_serval.push(serval_run(&server));
    }
    let b = Summary::new(&bare);
    let s = Summary::new(&through_serval);
    println!("container cold start, zero to first response of serval-echo ({runs} runs each, interleaved)");
    println!("{:<38} {:>10} {:>10} {:>10}", "", "median", "p90", "min");
    println!(
        "{:<38} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "bare runc run (spawn + poll + GET)",
        b.median(),
        b.percentile(90.0),
        b.percentile(0.0)
    );
    println!(
        "{:<38} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "through serval (GET at zero)",
        s.median(),
        s.percentile(90.0),
        s.percentile(0.0)
    );
    let ratio = s.median() / b.median();
    println!("serval / bare runc = {ratio:.2} (target: <= 1.20) -> {}", if ratio <= 1.2 { "PASS" } else { "FAIL" });
}
