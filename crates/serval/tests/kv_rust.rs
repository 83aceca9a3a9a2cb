//! End-to-end test of the Rust key-value example (`examples/kv-counter-rust`) with the real
//! binary: 50 concurrent visits through the gateway, counted with compare-and-set, end at
//! exactly 50 and each visit is answered a different count (without the conditions, the
//! visits overwrite each other and this fails).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Server, serval_bin};

/// The Rust counter (`examples/kv-counter-rust`), built beside `serval`. It is no dependency
/// of this crate, so a lone `cargo test -p serval` does not build it: build it here, as
/// `support::echo_bin` does for `serval-echo`, but every time (cargo only checks that it is
/// fresh when it is) so that a stale binary is never tested.
fn counter_bin() -> PathBuf {
    let path = Path::new(serval_bin()).with_file_name("serval-kv-counter");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-p", "serval-kv-counter"]);
    if path.parent().is_some_and(|d| d.ends_with("release")) {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building serval-kv-counter failed");
    assert!(path.exists(), "{} is missing after cargo build", path.display());
    path
}

#[tokio::test]
async fn rust_counter_fifty_concurrent_visits_end_at_fifty() {
    let counter = counter_bin().display().to_string();
    let server = Server::start(&[]);
    server.ok(&["deploy", "counter", "--cmd", &counter]);
    let url = format!("{}/", server.gateway);
    let port = server.gateway_host().rsplit_once(':').expect("port").1.to_string();
    let host = format!("counter.default.localhost:{port}");
    let client = reqwest::Client::new();
    // Collected, so that all 50 are sent before the first is awaited.
    let visits: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, host) = (client.clone(), url.clone(), host.clone());
            tokio::spawn(async move {
                let response = client.get(&url).header("host", host).send().await.expect("visit");
                let status = response.status();
                let body = response.text().await.expect("body");
                assert_eq!(status, 200, "{body}");
                body.trim().parse::<u32>().expect("the counter answers a count")
            })
        })
        .collect();
    let mut counts = Vec::new();
    for visit in visits {
        counts.push(visit.await.expect("join"));
    }
    // Compare-and-set lets exactly one visit write each count.
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u32>>());
    assert_eq!(server.ok(&["kv", "get", "visits"]).trim(), "50");
    assert_eq!(server.ok(&["kv", "ls"]).trim(), "visits");
}
