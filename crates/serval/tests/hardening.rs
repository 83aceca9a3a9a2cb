//! The server under hostile or careless clients and a hostile machine, through a real
//! `serval server`: connection timeouts on the API, the open-files limit, and running out
//! of file descriptors.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Server, Subscriber};

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Whether the server closes `stream` within 10 s (reading whatever it sends first).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn the_api_closes_empty_half_sent_and_idle_connections() {
    let server = Server::start(&["--header-read-timeout", "300ms", "--idle-timeout", "500ms"]);
    let api = address(&server.api);
    let mut empty = TcpStream::connect(&api).expect("connect");
    assert!(closed_by_server(&mut empty), "an empty connection");
    let mut half = TcpStream::connect(&api).expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").expect("write");
    assert!(closed_by_server(&mut half), "a half-sent head");
    let mut idle = TcpStream::connect(&api).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").expect("write");
    assert!(closed_by_server(&mut idle), "a kept-alive connection after its answer");
}

fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line").to_string();
    let mut numbers = line.split_whitespace().skip(3);
    (numbers.next().expect("soft").to_string(), numbers.next().expect("hard").to_string())
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let log = tempfile::NamedTempFile::new().expect("log");
    let server = Server::start_under_shell("ulimit -Sn 256", &[], log.path());
    let (soft, hard) = open_files_limit(server.process.child.id());
    assert_ne!(soft, "256");
    assert_eq!(soft, hard);
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_floods_the_log() {
    let log = tempfile::NamedTempFile::new().expect("log");
    let server = Server::start_under_shell("ulimit -n 96", &[], log.path());
    let gateway = address(&server.gateway);
    // More connections than the server has descriptors left: accepting fails with EMFILE.
    let clients: Vec<TcpStream> = (0..150).filter_map(|_| TcpStream::connect(&gateway).ok()).collect();
    assert!(clients.len() > 100, "connected {}", clients.len());
    let pid = server.process.child.id();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<u64> =
            stat.rsplit_once(')').expect("stat").1.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        // utime and stime, in clock ticks (fields 14 and 15 of the line; 11 and 12 here).
        fields[10] + fields[11]
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu() - before;
    drop(clients);
    let lines =
        std::fs::read_to_string(log.path()).expect("log").lines().filter(|l| l.contains("accept failed")).count();
    assert!(lines <= 60, "{lines} lines of accept failures in 3 s");
    // 100 ticks a second: a spinning loop would use ~300 in 3 s.
    assert!(used < 100, "{used} ticks of CPU in 3 s at the descriptor limit");
    // Once the clients are gone, the server answers again.
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(mut c) = TcpStream::connect(address(&server.api)) {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = c.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                answered = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered, "the API answers once descriptors are free");
}

/// A subscriber that accepts connections and never answers; holds them while it lives.
fn silent_subscriber() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(10).flatten() {
            held.push(stream);
        }
    });
    (url, holder)
}

fn trigger_delivery(server: &Server, name: &str) -> serde_json::Value {
    let out = server.ok(&["trigger", "list", "-o", "json"]);
    let triggers: serde_json::Value = serde_json::from_str(&out).expect("json");
    let items = triggers.as_array().cloned().or_else(|| triggers["items"].as_array().cloned()).unwrap_or_default();
    items
        .into_iter()
        .find(|t| t["metadata"]["name"] == name)
        .map(|t| t["status"]["delivery"].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_subscriber_that_never_answers_times_out_shows_as_stuck_and_is_dead_lettered() {
    let server = Server::start(&["--delivery-timeout", "1s"]);
    server.ok(&["broker", "create", "default"]);
    let (silent, _held) = silent_subscriber();
    let dead = support::Subscriber::start(vec![]).await;
    server.ok(&[
        "trigger",
        "create",
        "stuck",
        "--broker",
        "default",
        "--sink",
        &silent,
        "--retry",
        "2",
        "--backoff-delay",
        "PT1S",
        "--dead-letter-sink",
        &dead.url,
    ]);
    server.ok(&["event", "send", "--broker", "default", "--type", "t", "--source", "/s", "--data", "{}"]);
    support::eventually("the stuck delivery in the trigger's status", Duration::from_secs(10), async || {
        trigger_delivery(&server, "stuck")["oldestInFlightSeconds"].as_u64()
    })
    .await;
    support::eventually("the event at the dead-letter sink", Duration::from_secs(20), async || {
        (dead.received().len() == 1).then_some(())
    })
    .await;
    // The delivery ends once the dead-letter sink's answer is read, just after the sink
    // received the event.
    let status = support::eventually("nothing in flight any more", Duration::from_secs(10), async || {
        let status = trigger_delivery(&server, "stuck");
        status["oldestInFlightSeconds"].is_null().then_some(status)
    })
    .await;
    assert_eq!(status["deadLettered"], 1, "{status}");
}

#[tokio::test]
async fn a_reply_larger_than_10_mb_fails_the_attempt() {
    let server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    let reply_headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), "big".to_string()),
        ("ce-type".to_string(), "com.example.big".to_string()),
        ("ce-source".to_string(), "/big".to_string()),
        ("content-type".to_string(), "application/octet-stream".to_string()),
    ];
    let huge = Subscriber::start(vec![(200, reply_headers, "x".repeat(11 * 1024 * 1024))]).await;
    let dead = Subscriber::start(vec![]).await;
    server.ok(&[
        "trigger",
        "create",
        "huge",
        "--broker",
        "default",
        "--sink",
        &huge.url,
        "--filter",
        "type=t",
        "--retry",
        "0",
        "--dead-letter-sink",
        &dead.url,
    ]);
    server.ok(&["event", "send", "--broker", "default", "--type", "t", "--source", "/s", "--data", "{}"]);
    support::eventually("the event at the dead-letter sink", Duration::from_secs(20), async || {
        (dead.received().len() == 1).then_some(())
    })
    .await;
    assert_eq!(trigger_delivery(&server, "huge")["delivered"], 0);
}

#[tokio::test]
async fn the_server_wide_instance_limit_refuses_impossible_scales_and_caps_bursts() {
    let server = Server::start(&["--max-instances", "3", "--stable-window", "6s", "--autoscaler-tick", "200ms"]);
    let echo = support::echo_bin().display().to_string();
    let refused = server.fails(&["deploy", "huge", "--cmd", &echo, "--min-scale", "1000000"]);
    assert!(refused.contains("min-scale") && refused.lines().count() == 1, "{refused}");
    assert!(server.cli(&["get", "huge"]).status.code() != Some(0), "nothing was stored");

    server.ok(&["deploy", "capped", "--cmd", &echo, "--concurrency", "1"]);
    let url = format!("{}/f/default/capped/?sleep_ms=300", server.gateway);
    let client = reqwest::Client::new();
    let requests = (0..12).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let resp = client.get(&url).send().await.expect("send");
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap_or_default())
        })
    });
    let mut pids = std::collections::HashSet::new();
    for r in futures_util::future::join_all(requests).await {
        let (status, body) = r.expect("join");
        assert_eq!(status, 200, "{body}");
        pids.insert(body["pid"].as_u64().expect("pid"));
    }
    assert!(pids.len() <= 3, "{} instances served a burst on a server limited to 3", pids.len());
}

#[tokio::test]
async fn metrics_need_the_token_on_the_api_and_not_on_their_own_address() {
    let server = Server::start(&["--metrics-addr", "127.0.0.1:0"]);
    let client = reqwest::Client::new();
    let on_api = client.get(format!("{}/metrics", server.api)).send().await.expect("scrape");
    assert_eq!(on_api.status(), 401);
    let with_token = client.get(format!("{}/metrics", server.api)).bearer_auth(&server.token).send().await;
    assert_eq!(with_token.expect("scrape").status(), 200);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.dir.join("server.json")).expect("server.json"))
            .expect("json");
    let scraper = info["metrics"].as_str().expect("metrics address in server.json");
    let scraped = client.get(format!("{scraper}/metrics")).send().await.expect("scrape");
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.expect("text").contains("# EOF"));
    let other = client.get(format!("{scraper}/api/v1/services")).send().await.expect("get");
    assert_eq!(other.status(), 404, "the scrape address serves nothing else");
}

#[tokio::test]
async fn a_crash_loop_shows_on_the_service_and_in_list() {
    let server = Server::start(&[]);
    let echo = support::echo_bin().display().to_string();
    // Ready within a second, then gone: every instance dies young.
    let cmd = format!("sh -c '{echo} & sleep 1; kill $!; exit 3'");
    server.ok(&["deploy", "looping", "--cmd", &cmd, "--min-scale", "1"]);
    let condition = support::eventually("the crash loop on the service", Duration::from_secs(30), async || {
        let service = server.get_json(&["looping"]);
        let conditions = service["status"]["conditions"].as_array()?.clone();
        conditions.into_iter().find(|c| c["type"] == "ContainerHealthy" && c["status"] == "False")
    })
    .await;
    assert!(condition["message"].as_str().is_some_and(|m| m.contains("looping-00001")), "{condition}");
    let list = server.ok(&["list"]);
    assert!(list.contains("ContainerUnhealthy"), "{list}");
    let revisions = server.ok(&["revisions", "looping"]);
    assert!(revisions.contains("ContainerUnhealthy"), "{revisions}");
}
