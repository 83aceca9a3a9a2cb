//! Burst from zero, like Knative's load test: a service at zero instances gets a ramp from
//! 0 to 300 concurrent clients over 2 s, each client a thread with its own keep-alive
//! HTTP/1.1 connection sending `GET /f/default/burst/?sleep_ms=100` back to back for 10 s.
//! Meanwhile the API is polled every 100 ms for the instance counts. The baseline, in the same
//! run, is the same load against one `serval-echo` started directly and already warm, so the
//! handler's own cost (the 100 ms sleep, the machine's limits) is visible.
//!
//! `cargo run --release -p serval-bench --bin burst [-- --duration S --clients N --ramp S
//! --sleep-ms N]` (defaults 10 s, 300 clients, 2 s ramp, 100 ms).
//!
//! Reported: requests, errors (non-200 answers and IO errors, a failed connection is reopened
//! by the next request), time from the start to the first answer, p50/p95/p99 latency of the
//! 200 answers to requests started after the first second, peak ready and desired instances.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serval_bench::{KeepAliveClient, ServalServer, Summary, free_port, path_display, poll_then_get, release_binary};

const STATUS_PATH: &str = "/api/v1/namespaces/default/services/burst";

#[derive(Debug, Clone, Copy)]
struct Config {
    duration: Duration,
    clients: usize,
    ramp: Duration,
    sleep_ms: u64,
}

/// One request: when it started (from the test start), how long it took, its status
/// (`None` for an IO error).
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Duration,
    latency: Duration,
    status: Option<u16>,
}

/// The instance counts read at `at` (from the test start).
#[derive(Debug, Clone, Copy)]
struct Counts {
    at: Duration,
    ready: u64,
    desired: u64,
}

struct Load {
    samples: Vec<Sample>,
    connects: u64,
}

/// The ramp-up load: client `i` starts at `ramp * i / clients` and sends requests back to
/// back until `duration` from `t0`.
fn run_load(t0: Instant, addr: SocketAddr, host: &str, path: &str, cfg: Config) -> Load {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.clients)
            .map(|i| {
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let begin = t0 + cfg.ramp.mul_f64(i as f64 / cfg.clients as f64);
                        std::thread::sleep(begin.saturating_duration_since(Instant::now()));
                        let mut client = KeepAliveClient::new(addr, host, Duration::from_secs(30));
                        let mut samples = Vec::new();
                        loop {
                            let started = Instant::now();
                            let start = started - t0;
                            if start >= cfg.duration {
                                break;
                            }
                            let status = client.get(path).ok().map(|a| a.status);
                            samples.push(Sample { start, latency: started.elapsed(), status });
                        }
                        (samples, client.connects)
                    })
                    .expect("spawn client thread")
            })
            .collect();
        let mut load = Load { samples: Vec::new(), connects: 0 };
        for h in handles {
            let (samples, connects) = h.join().expect("client thread");
            load.samples.extend(samples);
            load.connects += connects;
        }
        load
    })
}

fn instance_counts(status: &serde_json::Value) -> (u64, u64) {
    // `status.instances` is absent until the revision has had a runner: zero.
    let i = &status["status"]["instances"];
    (i["ready"].as_u64().unwrap_or(0), i["desired"].as_u64().unwrap_or(0))
}

/// What a load against one target came to.
struct Report {
    name: &'static str,
    requests: usize,
    errors: Vec<(String, usize)>,
    error_count: usize,
    first_answer: Option<Duration>,
    first_ok: Option<Duration>,
    steady: Summary,
    steady_count: usize,
    connects: u64,
}

fn report(name: &'static str, load: &Load) -> Report {
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for s in &load.samples {
        match s.status {
            Some(200) => {}
            Some(code) => *errors.entry(code.to_string()).or_default() += 1,
            None => *errors.entry("io".into()).or_default() += 1,
        }
    }
    let end = |s: &Sample| s.start + s.latency;
    let steady: Vec<Duration> = load
        .samples
        .iter()
        .filter(|s| s.status == Some(200) && s.start >= Duration::from_secs(1))
        .map(|s| s.latency)
        .collect();
    Report {
        name,
        requests: load.samples.len(),
        error_count: errors.values().sum(),
        errors: errors.into_iter().collect(),
        first_answer: load.samples.iter().filter(|s| s.status.is_some()).map(end).min(),
        first_ok: load.samples.iter().filter(|s| s.status == Some(200)).map(end).min(),
        steady_count: steady.len(),
        steady: Summary::new(&steady),
        connects: load.connects,
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

/// Per-second view of the serval run: requests started, their errors and p50, instances.
fn print_timeline(load: &Load, counts: &[Counts], duration: Duration) {
    println!("serval timeline (by second of request start):");
    println!("{:>4} {:>8} {:>7} {:>9} {:>9} {:>6} {:>8}", "s", "started", "errors", "p50", "p99", "ready", "desired");
    for sec in 0..duration.as_secs().max(1) {
        let from = Duration::from_secs(sec);
        let to = from + Duration::from_secs(1);
        let in_sec: Vec<&Sample> = load.samples.iter().filter(|s| s.start >= from && s.start < to).collect();
        let errors = in_sec.iter().filter(|s| s.status != Some(200)).count();
        let ok: Vec<Duration> = in_sec.iter().filter(|s| s.status == Some(200)).map(|s| s.latency).collect();
        let sum = Summary::new(&ok);
        let c: Vec<&Counts> = counts.iter().filter(|c| c.at >= from && c.at < to).collect();
        let ready = c.iter().map(|c| c.ready).max().unwrap_or(0);
        let desired = c.iter().map(|c| c.desired).max().unwrap_or(0);
        println!(
            "{:>4} {:>8} {:>7} {:>6.1} ms {:>6.1} ms {:>6} {:>8}",
            sec,
            in_sec.len(),
            errors,
            sum.median(),
            sum.percentile(99.0),
            ready,
            desired
        );
    }
}

fn parse_args() -> Config {
    let mut cfg =
        Config { duration: Duration::from_secs(10), clients: 300, ramp: Duration::from_secs(2), sleep_ms: 100 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: burst [--duration S] [--clients N] [--ramp S] [--sleep-ms N]";
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{usage}"));
        let secs = || value.trim_end_matches('s').parse::<f64>().ok().filter(|s| *s >= 0.0);
        match flag.as_str() {
            "--duration" => cfg.duration = Duration::from_secs_f64(secs().unwrap_or_else(|| panic!("{usage}"))),
            "--ramp" => cfg.ramp = Duration::from_secs_f64(secs().unwrap_or_else(|| panic!("{usage}"))),
            "--clients" => cfg.clients = value.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("{usage}")),
            "--sleep-ms" => cfg.sleep_ms = value.parse().unwrap_or_else(|_| panic!("{usage}")),
            _ => panic!("{usage}"),
        }
    }
    cfg
}

fn main() {
    let cfg = parse_args();
    let echo = path_display(&release_binary("serval-echo"));
    let server = ServalServer::start(&[]);
    server.cli(&["deploy", "burst", "--cmd", &echo]);

    // The deploy's instance (started to prove the revision) scales to zero; wait until it has.
    let began = Instant::now();
    while instance_counts(&server.api_get(STATUS_PATH)).0 != 0 {
        assert!(began.elapsed() < Duration::from_secs(120), "service did not reach zero instances");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Through serval, from zero, with the instance counts polled meanwhile.
    let path = format!("/f/default/burst/?sleep_ms={}", cfg.sleep_ms);
    let host = server.gateway.to_string();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (serval_load, counts) = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut counts = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = t0.elapsed();
                if let Ok(status) = server.try_api_get(STATUS_PATH) {
                    let (ready, desired) = instance_counts(&status);
                    counts.push(Counts { at, ready, desired });
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed() - at));
            }
            counts
        });
        let load = run_load(t0, server.gateway, &host, &path, cfg);
        stop.store(true, Ordering::Relaxed);
        (load, poller.join().expect("poller thread"))
    });
    let peak_ready = counts.iter().map(|c| c.ready).max().unwrap_or(0);
    let peak_desired = counts.iter().map(|c| c.desired).max().unwrap_or(0);
    drop(server);

    // Baseline: the same load against one warm serval-echo started directly.
    let port = free_port();
    let mut child = Command::new(&echo)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serval-echo");
    let direct = SocketAddr::from(([127, 0, 0, 1], port));
    let warm = poll_then_get(direct, "/hello", Duration::from_secs(10));
    assert_eq!(warm.expect("direct warm-up"), 200);
    let direct_load = run_load(Instant::now(), direct, "localhost", &format!("/?sleep_ms={}", cfg.sleep_ms), cfg);
    let _ = child.kill();
    let _ = child.wait();

    let reports = [report("serval (from zero)", &serval_load), report("direct (warm)", &direct_load)];
    println!(
        "burst: 0 -> {} clients over {:.1} s, keep-alive GET ?sleep_ms={}, {:.1} s",
        cfg.clients,
        cfg.ramp.as_secs_f64(),
        cfg.sleep_ms,
        cfg.duration.as_secs_f64()
    );
    println!(
        "{:<19} {:>8} {:>7} {:>8} {:>11} {:>9} {:>9} {:>9}",
        "target", "requests", "errors", "conns", "first 200", "p50", "p95", "p99"
    );
    for r in &reports {
        println!(
            "{:<19} {:>8} {:>7} {:>8} {:>11} {:>6.1} ms {:>6.1} ms {:>6.1} ms",
            r.name,
            r.requests,
            r.error_count,
            r.connects,
            ms(r.first_ok),
            r.steady.median(),
            r.steady.percentile(95.0),
            r.steady.percentile(99.0)
        );
    }
    println!("(percentiles: the 200 answers to requests started after the first second; conns: connections opened)");
    for r in &reports {
        if !r.errors.is_empty() {
            let kinds: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            println!("{} errors by kind: {}", r.name, kinds.join(", "));
        }
        if r.first_answer != r.first_ok {
            println!("{} first answer of any status after {}", r.name, ms(r.first_answer));
        }
    }
    println!("serval peak instances: {peak_ready} ready, {peak_desired} desired ({} polls)", counts.len());
    print_timeline(&serval_load, &counts, cfg.duration);

    let s = &reports[0];
    let budget = cfg.sleep_ms as f64 + 15.0;
    let p95 = s.steady.percentile(95.0);
    let pass = s.error_count == 0 && s.steady_count > 0 && p95 <= budget;
    println!(
        "serval: {} errors, p95 {p95:.1} ms after the first second (target: 0 errors, p95 <= {budget:.0} ms) -> {}",
        s.error_count,
        if pass { "PASS" } else { "FAIL" }
    );
}
