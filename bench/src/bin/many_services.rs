//! Idle cost and deploy speed with many services: a server's CPU use while nothing happens,
//! with no service and then with N services at zero instances, and the rate of deploys
//! (PUT of a new Service) with few and with N services present.
//!
//! `cargo run --release -p serval-bench --bin many-services [-- --services N (1000) --idle S (60)]`

use std::time::{Duration, Instant};

use serval_bench::{ServalServer, release_binary};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The server's CPU use over `span`, in percent of one core.
fn idle_cpu(server: &ServalServer, span: Duration) -> f64 {
    let before = server.cpu_time();
    std::thread::sleep(span);
    (server.cpu_time() - before).as_secs_f64() / span.as_secs_f64() * 100.0
}

/// Deploys services `range` and returns the deploys per second.
fn deploy(server: &ServalServer, echo: &str, range: std::ops::Range<u64>) -> f64 {
    let began = Instant::now();
    let count = range.end - range.start;
    for n in range {
        let name = format!("svc-{n:05}");
        let body = serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": { "name": name },
            "spec": { "template": { "spec": { "containers": [{ "command": [echo] }] } } }
        })
        .to_string();
        let status = server.api_put(&format!("/api/v1/namespaces/default/services/{name}"), &body).expect("PUT");
        assert!(status == 200 || status == 201, "PUT {name}: {status}");
    }
    count as f64 / began.elapsed().as_secs_f64()
}

/// Waits until no service runs an instance (each deploy starts one to prove its revision).
fn wait_all_at_zero(server: &ServalServer) {
    let began = Instant::now();
    loop {
        let all = server.api_get("/api/v1/namespaces/default/services");
        let running: u64 = all["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let i = &s["status"]["instances"];
                i["ready"].as_u64().unwrap_or(0) + i["starting"].as_u64().unwrap_or(0)
            })
            .sum();
        if running == 0 {
            println!("every deploy's instance stopped {:.1} s after the last deploy", began.elapsed().as_secs_f64());
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(600), "{running} instances still run after 10 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() {
    let services = arg("--services", 1000);
    let idle = Duration::from_secs(arg("--idle", 60));
    let echo = release_binary("serval-echo").display().to_string();
    // Each deploy starts one instance to prove its revision; a short stable window takes
    // them back to zero before the idle measurement.
    let server = ServalServer::start(&["--stable-window", "2s", "--scale-to-zero-grace", "0s"]);
    // Let start-up work settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    println!("idle CPU with no service over {idle:?} ...");
    let empty = idle_cpu(&server, idle);
    let batch = 100.min(services);
    let first = deploy(&server, &echo, 0..batch);
    deploy(&server, &echo, batch..services.saturating_sub(batch).max(batch));
    let last = deploy(&server, &echo, services.saturating_sub(batch).max(batch)..services.max(2 * batch));
    let total = services.max(2 * batch);
    wait_all_at_zero(&server);
    std::thread::sleep(Duration::from_secs(2));
    println!("idle CPU with {total} services at zero over {idle:?} ...");
    let many = idle_cpu(&server, idle);
    println!();
    println!("| | no service (baseline) | {total} services |");
    println!("|---|---|---|");
    println!("| idle CPU (% of a core) | {empty:.2} % | {many:.2} % |");
    println!("| deploys/s (first {batch} vs last {batch}) | {first:.0} | {last:.0} |");
    println!();
    println!("idle CPU with {total} services: {many:.2} % of a core (target < 1 %)");
    println!("deploy rate with {total} services present: {:.2} x the rate with few", last / first);
}
