//! Warm overhead: throughput and latency of `GET /hello` on one warm `serval-echo` instance,
//! hit directly, through serval's gateway, and through nginx (`proxy_pass` with an upstream
//! keep-alive pool) — all three in the same run, against the very same instance process.
//!
//! `cargo run --release -p serval-bench --bin warm-overhead [-- [--duration S | S] [--rounds N]]`
//! (default 5 s per run, 3 rounds). Needs `wrk`; the nginx row is skipped when nginx is not installed.
//!
//! The service is deployed with `--min-scale 1 --max-scale 1` so that the single instance the
//! gateway uses is the one the direct and nginx rows hit (its port is read from one answer of
//! `GET /` through the gateway). Each scenario (`-t2 -c32`, `-t1 -c1`) runs the three targets
//! one after another, in rounds that each start with the next target, after a 1 s warm-up of
//! each; every figure is the median over the rounds (this VM's speed drifts by ±20 % from one
//! run to the next, so single runs compare the machine's moods as much as the proxies).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serval_bench::{KeepAliveClient, ServalServer, free_port, path_display, release_binary};

const SERVICE_HOST: &str = "warm.default.localhost";

/// What one `wrk --latency` run printed.
#[derive(Debug, Clone, Copy)]
struct WrkResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Non-2xx/3xx answers plus socket errors.
    errors: u64,
}

/// A target of the load: its URL and the `Host` header wrk sends.
struct Target {
    name: &'static str,
    url: String,
    host: Option<&'static str>,
}

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        let p = Path::new(c);
        if p.is_absolute() {
            p.exists().then(|| p.to_path_buf())
        } else {
            std::env::split_paths(&path).map(|d| d.join(c)).find(|f| f.exists())
        }
    })
}

/// `171.00us`, `1.23ms`, `2.00s`, `1.00m` → microseconds.
fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * factor)
}

fn parse_wrk(output: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    let mut in_distribution = false;
    for line in output.lines() {
        let line = line.trim();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        } else if in_distribution {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("50%"), Some(v)) => p50 = parse_duration_us(v),
                (Some("99%"), Some(v)) => p99 = parse_duration_us(v),
                (Some(w), _) if w.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
    }
    Some(WrkResult { rps: rps?, p50_us: p50?, p99_us: p99?, errors })
}

fn run_wrk(wrk: &Path, target: &Target, threads: u32, conns: u32, secs: u64) -> WrkResult {
    let mut cmd = Command::new(wrk);
    cmd.args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{secs}s"), "--latency".into()]);
    if let Some(host) = target.host {
        cmd.args(["-H", &format!("Host: {host}")]);
    }
    let out = cmd.arg(&target.url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed on {}: {text}{}", target.url, String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text).unwrap_or_else(|| panic!("cannot parse wrk output for {}:\n{text}", target.url))
}

/// nginx in the foreground (master + 2 workers) with a generated config in a temp dir;
/// stopped on drop.
struct Nginx {
    binary: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(binary: &Path, upstream: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream instance {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://instance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { binary: binary.to_path_buf(), child, dir, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let began = Instant::now();
        loop {
            let mut client = KeepAliveClient::new(addr, "localhost", Duration::from_secs(2));
            if let Ok(answer) = client.get("/hello") {
                assert_eq!(answer.status, 200, "nginx answered {}", answer.status);
                break;
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}: {}", nginx.error_log());
            }
            assert!(began.elapsed() < Duration::from_secs(10), "nginx did not start: {}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(10));
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` (SIGTERM to the master through the pid file) makes the master stop
        // its workers; killing the master would orphan them.
        let _ = Command::new(&self.binary)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds per run and rounds per scenario, from `--duration S` (or a bare `S`) and
/// `--rounds N`.
fn parse_args() -> (u64, usize) {
    let usage = || -> ! { panic!("usage: warm-overhead [--duration SECONDS | SECONDS] [--rounds N]") };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut secs, mut rounds) = (5, 3);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--rounds" => {
                i += 1;
                rounds = args.get(i).and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| usage());
            }
            flag => {
                let value = if flag == "--duration" {
                    i += 1;
                    args.get(i).map(String::as_str)
                } else {
                    Some(flag)
                };
                secs = value
                    .map(|v| v.trim_end_matches('s'))
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .unwrap_or_else(|| usage());
            }
        }
        i += 1;
    }
    (secs, rounds)
}

/// The median of each figure over a target's rounds (errors summed), and the range of
/// its throughput.
fn median(runs: &[WrkResult]) -> (WrkResult, f64, f64) {
    let middle = |f: fn(&WrkResult) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    let (low, high) = rps.iter().fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let result = WrkResult {
        rps: middle(|r| r.rps),
        p50_us: middle(|r| r.p50_us),
        p99_us: middle(|r| r.p99_us),
        errors: runs.iter().map(|r| r.errors).sum(),
    };
    (result, low, high)
}

fn main() {
    let (secs, rounds) = parse_args();
    let Some(wrk) = find_program(&["/usr/bin/wrk", "wrk"]) else {
        println!("warm-overhead skipped: wrk not found (apt-get install wrk)");
        return;
    };
    let nginx_binary = find_program(&["/usr/sbin/nginx", "nginx"]);

    let echo = path_display(&release_binary("serval-echo"));
    let server = ServalServer::start(&[]);
    server.cli(&["deploy", "warm", "--cmd", &echo, "--min-scale", "1", "--max-scale", "1"]);

    // The instance behind the gateway: its port from one answer through serval.
    let mut client = KeepAliveClient::new(server.gateway, "localhost", Duration::from_secs(10));
    let answer = client.get("/f/default/warm/").expect("GET through the gateway");
    assert_eq!(answer.status, 200, "gateway answered {}", answer.status);
    let info: serde_json::Value = serde_json::from_slice(&answer.body).expect("echo JSON");
    let port = info["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port in the echo answer");
    let instance = SocketAddr::from(([127, 0, 0, 1], port));

    let nginx = nginx_binary.as_deref().map(|b| Nginx::start(b, instance));
    if nginx.is_none() {
        println!("nginx row skipped: nginx not found (apt-get install nginx-light)");
    }

    let mut targets = vec![
        Target { name: "direct instance", url: format!("http://{instance}/hello"), host: None },
        Target { name: "serval gateway", url: format!("http://{}/hello", server.gateway), host: Some(SERVICE_HOST) },
    ];
    if let Some(n) = &nginx {
        targets.push(Target {
            name: "nginx proxy_pass",
            url: format!("http://127.0.0.1:{}/hello", n.port),
            host: None,
        });
    }

    for t in &targets {
        run_wrk(&wrk, t, 2, 32, 1);
    }

    let scenarios = [(2u32, 32u32), (1, 1)];
    let mut results = Vec::new();
    for &(threads, conns) in &scenarios {
        let mut runs = vec![Vec::new(); targets.len()];
        // Each round starts with the next target, so none always runs first or after
        // the same neighbour; this machine's speed drifts between runs, the medians don't.
        for round in 0..rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                runs[i].push(run_wrk(&wrk, &targets[i], threads, conns, secs));
            }
        }
        for (i, target_runs) in runs.iter().enumerate() {
            let (r, low, high) = median(target_runs);
            results.push((conns, i, r, low, high));
        }
    }
    let instances = &server.api_get("/api/v1/namespaces/default/services/warm")["status"]["instances"];

    println!(
        "warm overhead: GET /hello on one warm serval-echo (wrk --latency, {secs} s per run, medians of {rounds} rounds)"
    );
    println!(
        "{:<18} {:>5} {:>11} {:>17} {:>11} {:>11} {:>7}",
        "target", "conns", "req/s", "req/s range", "p50", "p99", "errors"
    );
    for &(conns, i, r, low, high) in &results {
        println!(
            "{:<18} {:>5} {:>11.0} {:>8.0}-{:<8.0} {:>8.0} µs {:>8.0} µs {:>7}",
            targets[i].name, conns, r.rps, low, high, r.p50_us, r.p99_us, r.errors
        );
    }
    if instances["ready"] != 1 {
        println!("note: the service had {} ready instances at the end (expected 1)", instances["ready"]);
    }

    let find = |conns: u32, name: &str| {
        results.iter().find(|(c, i, ..)| *c == conns && targets[*i].name == name).map(|&(_, _, r, ..)| r)
    };
    let serval32 = find(32, "serval gateway").expect("serval c=32");
    match find(32, "nginx proxy_pass") {
        Some(nginx32) => {
            let ratio = serval32.rps / nginx32.rps;
            println!(
                "serval vs nginx throughput ratio at c=32: {ratio:.2} (target: >= 1.00) -> {}",
                if ratio >= 1.0 { "PASS" } else { "FAIL" }
            );
        }
        None => println!("serval vs nginx throughput ratio at c=32: skipped: nginx not found"),
    }
    let direct1 = find(1, "direct instance").expect("direct c=1");
    let serval1 = find(1, "serval gateway").expect("serval c=1");
    let added = serval1.p50_us - direct1.p50_us;
    println!(
        "serval added p50 latency over direct at c=1: {added:.0} µs (target: <= 50 µs) -> {}",
        if added <= 50.0 { "PASS" } else { "FAIL" }
    );
    if let Some(nginx1) = find(1, "nginx proxy_pass") {
        println!("(nginx adds {:.0} µs to the p50 at c=1)", nginx1.p50_us - direct1.p50_us);
    }
    drop(nginx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/hello
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   640.21us  300.00us   5.00ms   90.00%
    Req/Sec    25.00k     1.00k   27.00k    70.00%
  Latency Distribution
     50%  571.00us
     75%  700.00us
     90%    1.00ms
     99%    1.52ms
  100000 requests in 2.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  49999.50
Transfer/sec:      6.00MB
";
        let r = parse_wrk(out).expect("parsed");
        assert_eq!(r.rps, 49999.5);
        assert_eq!(r.p50_us, 571.0);
        assert_eq!(r.p99_us, 1520.0);
        assert_eq!(r.errors, 7);
        assert_eq!(parse_duration_us("2.00s"), Some(2e6));
    }

    #[test]
    fn medians_and_ranges_over_rounds() {
        let run = |rps, p50_us, p99_us| WrkResult { rps, p50_us, p99_us, errors: 1 };
        let (m, low, high) = median(&[run(10.0, 5.0, 90.0), run(30.0, 1.0, 70.0), run(20.0, 3.0, 80.0)]);
        assert_eq!((m.rps, m.p50_us, m.p99_us, m.errors), (20.0, 3.0, 80.0, 3));
        assert_eq!((low, high), (10.0, 30.0));
    }
}
