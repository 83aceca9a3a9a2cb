//! Eventing throughput: durable ingest (broker, group commit) → trigger delivery to a fast
//! subscriber (serval-echo started directly), beside the same machine's raw SQLite rate of
//! one insert + fsync per event (no group commit).
//!
//! `cargo run --release -p serval-bench --bin events [-- SECONDS]` (default 10; needs wrk).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serval_bench::{KeepAliveClient, ServalServer, free_port, path_display, poll_then_get, release_binary};

/// Single-row transactions with fsync (WAL, synchronous=FULL): what a store without group
/// commit could acknowledge.
fn raw_sqlite_rate(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    conn.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)")
        .expect("table");
    let body = r#"{"specversion":"1.0","id":"x","type":"t","source":"/s"}"#;
    let began = Instant::now();
    for _ in 0..n {
        conn.execute("INSERT INTO events (body) VALUES (?1)", [body]).expect("insert");
    }
    n as f64 / began.elapsed().as_secs_f64()
}

/// Requests the subscriber has answered (minus the `/stats` calls themselves).
fn delivered(sink: SocketAddr, polls: &mut u64) -> u64 {
    let mut client = KeepAliveClient::new(sink, "localhost", Duration::from_secs(5));
    *polls += 1;
    let answer = client.get("/stats").expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    stats["requests"].as_u64().unwrap_or(0).saturating_sub(*polls)
}

const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents+json"
local n = 0
request = function()
  n = n + 1
  local body = '{"specversion":"1.0","id":"' .. tostring(n) .. '-' .. tostring(math.random(1e9)) .. '","type":"bench","source":"/wrk","data":{"n":' .. n .. '}}'
  return wrk.format(nil, nil, nil, body)
end
"#;

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let raw = raw_sqlite_rate(2000);

    let server = ServalServer::start(&[]);
    server.cli(&["broker", "create", "bench"]);
    let port = free_port();
    let mut sink = Command::new(release_binary("serval-echo"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serval-echo");
    let sink_addr = SocketAddr::from(([127, 0, 0, 1], port));
    poll_then_get(sink_addr, "/stats", Duration::from_secs(5)).expect("sink up");
    let mut polls = 1;
    server.cli(&["trigger", "create", "all", "--broker", "bench", "--sink", &format!("http://{sink_addr}/")]);

    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("post.lua");
    std::fs::write(&script, WRK_SCRIPT).expect("script");
    let url = format!("http://{}/b/default/bench", server.gateway);
    let began = Instant::now();
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "-s", &path_display(&script), &url])
        .output()
        .expect("wrk (apt-get install wrk)");
    let ingest_done = began.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let total: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("wrk total");
    let non_2xx: u64 = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let accepted = total - non_2xx;
    loop {
        let got = delivered(sink_addr, &mut polls);
        if got >= accepted || began.elapsed() > ingest_done + Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_delivered = began.elapsed();
    let got = delivered(sink_addr, &mut polls);
    let _ = sink.kill();
    let _ = sink.wait();

    println!("eventing throughput ({seconds} s of wrk -c32 POSTs of structured events)");
    println!("raw SQLite, one insert + fsync per event:   {raw:>9.0} events/s");
    println!(
        "ingest acknowledged (202 after commit):      {:>9.0} events/s ({accepted} accepted, {non_2xx} refused)",
        accepted as f64 / ingest_done.as_secs_f64()
    );
    println!(
        "ingest -> delivery end to end:               {:>9.0} events/s ({got} delivered in {:.1} s)",
        got as f64 / all_delivered.as_secs_f64(),
        all_delivered.as_secs_f64()
    );
    let e2e = got as f64 / all_delivered.as_secs_f64();
    println!("target: >= 20000 events/s end to end -> {}", if e2e >= 20_000.0 { "PASS" } else { "FAIL" });
}
