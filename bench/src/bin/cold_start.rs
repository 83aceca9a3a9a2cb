//! Cold start: zero-to-first-response of the example function through serval versus
//! starting the same binary directly and polling it until its first response.
//!
//! `cargo run --release -p serval-bench --bin cold-start [-- RUNS]` (default 30 runs each,
//! interleaved so that both see the same machine state).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serval_bench::{FAST_ZERO, ServalServer, Summary, free_port, path_display, poll_then_get, release_binary};

fn direct_run(echo: &str) -> Duration {
    let port = free_port();
    let began = Instant::now();
    let mut child = Command::new(echo)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serval-echo");
    let status = poll_then_get(SocketAddr::from(([127, 0, 0, 1], port)), "/hello", Duration::from_secs(10));
    let elapsed = began.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status.expect("direct response"), 200);
    elapsed
}

fn serval_run(server: &ServalServer) -> Duration {
    // Let the stopped instance's port and process table settle like between baseline runs.
    server.cold_request("cold", Duration::from_millis(20))
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let echo = path_display(&release_binary("serval-echo"));
    let server = ServalServer::start(FAST_ZERO);
    server.cli(&["deploy", "cold", "--cmd", &echo]);

    // One warm-up of each path (page cache, first-use allocations).
    direct_run(&echo);
    serval_run(&server);

    let mut direct = Vec::with_capacity(runs);
    let mut through_serval = Vec::with_capacity(runs);
    for _ in 0..runs {
        direct.push(direct_run(&echo));
        through_serval.push(serval_run(&server));
    }
    let d = Summary::new(&direct);
    let s = Summary::new(&through_serval);
    println!("cold start, zero to first response of serval-echo ({runs} runs each, interleaved)");
    println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p90", "min");
    println!(
        "{:<34} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "direct (spawn + poll + GET)",
        d.median(),
        d.percentile(90.0),
        d.percentile(0.0)
    );
    println!(
        "{:<34} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "through serval (GET at zero)",
        s.median(),
        s.percentile(90.0),
        s.percentile(0.0)
    );
    let added = s.median() - d.median();
    println!(
        "serval adds {added:.2} ms to the median (target: <= 5 ms) -> {}",
        if added <= 5.0 { "PASS" } else { "FAIL" }
    );
}
