//! `serval build` and `serval dev`: the first build and the no-change rebuild of the same
//! multi-stage project (a busybox base imported into the store, a RUN, 200 context files),
//! and the edit-to-live time of `serval dev` for a Python handler (edit written → the new
//! answer served at the same URL).
//!
//! `cargo run --release -p serval-bench --bin build-and-dev [-- ROUNDS]` (default 5); needs root,
//! runc, busybox-static and python3. When `buildah` is on PATH, `buildah bud` of the same
//! Containerfile (on its own busybox base) runs in the same rounds as the peer figure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serval_bench::{ServalServer, Summary};
use serval_testimages::{ImageConfigSpec, busybox_files, write_docker_archive};

const CONTAINERFILE: &str = "FROM test/busybox:1 AS build
WORKDIR /out
RUN for i in $(seq 1 2000); do echo line $i >> data.txt; done
COPY . /src
FROM scratch
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /out /www
CMD [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www\"]
";

fn timed(server: &ServalServer, args: &[&str]) -> Duration {
    let began = Instant::now();
    server.cli(args);
    began.elapsed()
}

/// The body of a GET through the gateway, or `None` when it fails.
fn get(server: &ServalServer, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(server.gateway).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let ok = answer.lines().next().is_some_and(|status| status.split(' ').nth(1) == Some("200"));
    ok.then(|| answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))?
}

/// Makes buildah's own `test/busybox:1` (busybox-static and its applets) when buildah is
/// installed; whether it is.
fn buildah_base() -> bool {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("buildah").args(args).output().expect("buildah");
        assert!(out.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if std::process::Command::new("buildah").arg("--version").output().is_err() {
        return false;
    }
    let container = run(&["from", "scratch"]);
    run(&["copy", &container, "/bin/busybox", "/bin/busybox"]);
    run(&["run", "--isolation", "chroot", &container, "--", "/bin/busybox", "--install", "-s", "/bin"]);
    run(&["commit", "-q", "--rm", &container, "test/busybox:1"]);
    true
}

/// `buildah bud` of the project with `extra` flags (layers cached unless `--no-cache`).
fn buildah_bud(dir: &str, extra: &[&str]) -> Duration {
    let began = Instant::now();
    let out = std::process::Command::new("buildah")
        .args(["bud", "--pull=false", "--network", "none", "--layers", "-q", "-t", "bench/site:1"])
        .args(extra)
        .arg(dir)
        .output()
        .expect("buildah bud");
    assert!(out.status.success(), "buildah bud: {}", String::from_utf8_lossy(&out.stderr));
    began.elapsed()
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let server = ServalServer::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");

    // Build: first build (no cache) and no-change rebuild, alternated.
    let archive = work.path().join("busybox.tar");
    write_docker_archive(
        &archive,
        "test/busybox:1",
        &busybox_files().expect("busybox-static"),
        ImageConfigSpec::default(),
    )
    .expect("busybox archive");
    server.cli(&["image", "import", archive.to_str().expect("utf-8")]);
    let context = work.path().join("project");
    std::fs::create_dir_all(context.join("src")).expect("mkdir");
    std::fs::write(context.join("Containerfile"), CONTAINERFILE).expect("Containerfile");
    for i in 0..200 {
        std::fs::write(context.join(format!("src/file{i}.txt")), format!("{i}\n").repeat(100)).expect("file");
    }
    let dir = context.to_str().expect("utf-8");
    let buildah = buildah_base();
    let (mut first, mut again, mut b_first, mut b_again) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        first.push(timed(&server, &["build", dir, "-t", "bench/site:1", "--no-cache"]));
        again.push(timed(&server, &["build", dir, "-t", "bench/site:1"]));
        if buildah {
            b_first.push(buildah_bud(dir, &["--no-cache"]));
            b_again.push(buildah_bud(dir, &[]));
        }
    }
    let (first, again) = (Summary::new(&first), Summary::new(&again));
    println!("serval build, multi-stage project (busybox base, RUN, 200 files), {rounds} rounds");
    println!("  first build (no cache)   median {:8.1} ms   p90 {:8.1} ms", first.median(), first.percentile(90.0));
    println!("  no-change rebuild        median {:8.1} ms   p90 {:8.1} ms", again.median(), again.percentile(90.0));
    if buildah {
        let (b_first, b_again) = (Summary::new(&b_first), Summary::new(&b_again));
        println!("buildah bud of the same Containerfile (same base, --layers), same rounds");
        println!(
            "  first build (no cache)   median {:8.1} ms   p90 {:8.1} ms",
            b_first.median(),
            b_first.percentile(90.0)
        );
        println!(
            "  no-change rebuild        median {:8.1} ms   p90 {:8.1} ms",
            b_again.median(),
            b_again.percentile(90.0)
        );
        println!(
            "  serval / buildah: first build {:.2}, rebuild {:.2}",
            first.median() / b_first.median(),
            again.median() / b_again.median()
        );
    } else {
        println!("  buildah: not installed here, so no same-run comparison");
    }
    let verdict = if again.median() < 1000.0 { "PASS" } else { "FAIL" };
    println!("  target: no-change rebuild < 1 s -> {verdict}");

    // serval dev: edit-to-live for a Python handler.
    let project = work.path().join("hello");
    server.cli(&["init", project.to_str().expect("utf-8"), "--lang", "python"]);
    let mut dev = server
        .cli_command()
        .args(["dev", project.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serval dev");
    let stderr = dev.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("watching") => break,
            Some(Ok(_)) => {}
            _ => panic!("serval dev stopped before it watched"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let func = project.join("func.py");
    let original = std::fs::read_to_string(&func).expect("func.py");
    let mut live = Vec::new();
    for round in 0..rounds * 2 {
        let marker = format!("Round{round}");
        let began = Instant::now();
        std::fs::write(&func, original.replace("Hello, {name}!", &format!("{marker}, {{name}}!"))).expect("edit");
        loop {
            if get(&server, "/f/default/hello/?name=x").is_some_and(|b| b.contains(&marker)) {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "the edit was never served: {:?}",
                get(&server, "/f/default/hello/?name=x")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        live.push(began.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = dev.kill();
    let _ = dev.wait();
    let live = Summary::new(&live);
    println!("serval dev, Python handler edited {} times", rounds * 2);
    println!("  edit to live             median {:8.1} ms   p90 {:8.1} ms", live.median(), live.percentile(90.0));
    let verdict = if live.median() <= 1000.0 { "PASS" } else { "FAIL" };
    println!("  target: <= 1 s -> {verdict}");
}
