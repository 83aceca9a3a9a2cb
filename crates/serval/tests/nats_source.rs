//! End-to-end tests of NatsSource with the real binary and a real `nats-server` (Debian's
//! package; the tests are skipped without it unless `SERVAL_REQUIRE_NATS=1`): messages of a
//! JetStream stream become events with their subject, sequence, headers and data (a message
//! carrying a CloudEvent is that event); a `kill -9` of serval in the middle of 2 000
//! messages loses none; a NATS server that goes away makes the source Ready=False until it
//! is back, and then it delivers again by itself; a missing stream is Ready=False
//! (`StreamNotFound`) until it is created; a deleted source stops delivering at once.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use support::{Server, Subscriber, eventually, skip};

/// Where `nats-server` is, or `None` (after saying the test is skipped); a failure under
/// `SERVAL_REQUIRE_NATS=1`.
fn nats_server_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|bin| bin.is_file());
    if found.is_none() {
        let required = std::env::var("SERVAL_REQUIRE_NATS").is_ok_and(|v| v == "1");
        assert!(!required, "nats-server is required (SERVAL_REQUIRE_NATS=1): apt-get install -y nats-server");
        skip("nats-server not found (apt-get install -y nats-server)");
    }
    found
}

/// A `nats-server -js` on loopback with its own store; killed when dropped.
struct NatsServer {
    bin: PathBuf,
    port: u16,
    /// The store (`-sd`) and the server's log.
    dir: tempfile::TempDir,
    child: Option<Child>,
    url: String,
}

impl NatsServer {
    fn start(bin: PathBuf) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut nats = NatsServer {
            bin,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            url: format!("nats://127.0.0.1:{port}"),
        };
        nats.resume();
        nats
    }

    /// Starts the server (again) on the same port and store.
    fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats-server.log"))
            .expect("log");
        let store = self.dir.path().join("store");
        let child = Command::new(&self.bin)
            .args(["-js", "-sd", &store.display().to_string(), "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let began = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(began.elapsed() < Duration::from_secs(10), "nats-server did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, as an operator would), keeping its store.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let began = std::time::Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if began.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// A JetStream context on a fresh connection.
    async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(&self.url).await.expect("connect to nats-server");
        jetstream::new(client)
    }

    /// Creates a stream (retrying while JetStream starts up).
    async fn create_stream(&self, js: &jetstream::Context, name: &str, subjects: &[&str]) {
        let config = jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        eventually("the stream created", Duration::from_secs(10), async || {
            js.get_or_create_stream(config.clone()).await.ok().map(|_| ())
        })
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Applies a NatsSource through `serval apply -f`.
fn apply_source(server: &Server, name: &str, nats: &NatsServer, stream: &str, subject: Option<&str>, sink: &str) {
    apply_source_with(server, name, nats, stream, subject, sink, "");
}

/// [`apply_source`] with extra metadata lines (annotations).
fn apply_source_with(
    server: &Server,
    name: &str,
    nats: &NatsServer,
    stream: &str,
    subject: Option<&str>,
    sink: &str,
    metadata: &str,
) {
    let file = server.dir.join(format!("{name}.yaml"));
    let subject = subject.map(|s| format!("  subject: '{s}'\n")).unwrap_or_default();
    std::fs::write(
        &file,
        format!(
            "apiVersion: sources.serval.dev/v1alpha1\nkind: NatsSource\nmetadata:\n  name: {name}\n{metadata}spec:\n  \
             servers:\n  - {}\n  stream: {stream}\n{subject}  consumer: serval-{name}\n  sink:\n    uri: {sink}\n  \
             ceOverrides:\n    extensions:\n      origin: nats\n",
            nats.url
        ),
    )
    .expect("write manifest");
    server.ok(&["apply", "-f", &file.display().to_string()]);
}

async fn publish(js: &jetstream::Context, subject: &str, headers: &[(&str, &str)], payload: &str) -> u64 {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, *v);
    }
    js.publish_with_headers(subject.to_string(), map, payload.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("publish acknowledged")
        .sequence
}

/// The source's Ready condition.
fn ready(source: &Value) -> Value {
    source["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn header<'a>(r: &'a support::Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(String::as_str)
}

/// How often each stream sequence arrived (one event per request, or batches).
fn sequences(sink: &Subscriber) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for r in sink.received() {
        if header(&r, "content-type").is_some_and(|t| t.starts_with("application/cloudevents-batch+json")) {
            let batch: Vec<Value> = serde_json::from_slice(&r.body).expect("a batch is a JSON array");
            for event in batch {
                let seq = &event["natsstreamsequence"];
                let seq = seq.as_u64().or_else(|| seq.as_str()?.parse().ok()).expect("a sequence in each event");
                *counts.entry(seq).or_default() += 1;
            }
        } else if let Some(seq) = header(&r, "ce-natsstreamsequence").and_then(|s| s.parse().ok()) {
            *counts.entry(seq).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn messages_of_a_stream_become_events() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = NatsServer::start(bin);
    let js = nats.jetstream().await;
    nats.create_stream(&js, "ORDERS", &["orders.>", "audit.>"]).await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    // Published before the source exists: a new consumer starts from the first message.
    let first = publish(&js, "orders.new", &[("Tenant", "acme")], r#"{"order":1}"#).await;
    apply_source(&server, "orders", &nats, "ORDERS", Some("orders.>"), &sink.url);
    publish(&js, "audit.login", &[], "not for this source").await;
    publish(&js, "orders.paid", &[], "plain bytes").await;
    publish(
        &js,
        "orders.shipped",
        &[
            ("Ce-Specversion", "1.0"),
            ("Ce-Id", "order-3-shipped"),
            ("Ce-Source", "/shop"),
            ("Ce-Type", "com.example.order.shipped"),
            ("Content-Type", "application/json"),
        ],
        r#"{"order":3}"#,
    )
    .await;
    let got = eventually("three events", Duration::from_secs(10), async || {
        let got = sink.received();
        (got.len() >= 3).then_some(got)
    })
    .await;
    assert_eq!(first, 1);
    let order = &got[0];
    assert_eq!(header(order, "ce-id"), Some("ORDERS-1"));
    assert_eq!(header(order, "ce-type"), Some("dev.serval.nats.message"));
    assert_eq!(header(order, "ce-source"), Some(format!("{}/ORDERS", nats.url).as_str()));
    assert_eq!(header(order, "ce-subject"), Some("orders.new"));
    assert_eq!(header(order, "ce-natsstreamsequence"), Some("1"));
    assert_eq!(header(order, "ce-natstenant"), Some("acme"), "a header becomes an extension");
    assert_eq!(header(order, "ce-origin"), Some("nats"), "ceOverrides");
    assert!(header(order, "ce-time").is_some_and(|t| t.ends_with('Z')), "{:?}", order.headers);
    assert_eq!(header(order, "content-type"), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&order.body).expect("JSON"), serde_json::json!({"order": 1}));

    let paid = &got[1];
    assert_eq!(header(paid, "ce-id"), Some("ORDERS-3"), "audit.login (2) is not in the filter");
    assert_eq!(header(paid, "content-type"), Some("application/octet-stream"));
    assert_eq!(paid.body, b"plain bytes");

    let shipped = &got[2];
    assert_eq!(header(shipped, "ce-id"), Some("order-3-shipped"), "a carried CloudEvent is that event");
    assert_eq!(header(shipped, "ce-type"), Some("com.example.order.shipped"));
    assert_eq!(header(shipped, "ce-source"), Some("/shop"));
    assert_eq!(header(shipped, "ce-origin"), Some("nats"));
    assert_eq!(shipped.body, br#"{"order":3}"#);

    let source = eventually("Ready, counters and lag", Duration::from_secs(15), async || {
        let s = server.get_json(&["natssource", "orders"]);
        let counters = &s["status"]["counters"];
        (ready(&s)["status"] == "True" && counters["delivered"] == 3 && counters["lag"] == 0).then_some(s)
    })
    .await;
    assert_eq!(source["status"]["sinkUri"], sink.url.as_str(), "{source:#}");
    assert_eq!(source["status"]["counters"]["received"], 3, "{source:#}");
    // Acknowledged on the server: nothing is pending or waits for an ack.
    let stream = js.get_stream("ORDERS").await.expect("stream");
    let consumer = stream.consumer_info("serval-orders").await.expect("consumer");
    assert_eq!((consumer.num_pending, consumer.num_ack_pending), (0, 0), "{consumer:?}");
    assert_eq!(consumer.config.ack_policy, jetstream::consumer::AckPolicy::Explicit);
    assert_eq!(sink.received().len(), 3, "nothing twice");
}

#[tokio::test]
async fn no_message_is_lost_across_kill_9() {
    no_message_lost_across_kill_9("").await;
}

#[tokio::test]
async fn no_message_is_lost_across_kill_9_when_delivered_unordered() {
    no_message_lost_across_kill_9("  annotations:\n    serval.dev/delivery-order: unordered\n").await;
}

#[tokio::test]
async fn no_message_is_lost_across_kill_9_when_delivered_in_batches() {
    no_message_lost_across_kill_9("  annotations:\n    serval.dev/delivery-batch-size: \"50\"\n").await;
}

/// 2 000 messages, the server killed after some were delivered: all arrive after the restart.
async fn no_message_lost_across_kill_9(metadata: &str) {
    let Some(bin) = nats_server_bin() else { return };
    let nats = NatsServer::start(bin);
    let js = nats.jetstream().await;
    nats.create_stream(&js, "EVENTS", &["events.>"]).await;
    let mut server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    let produced = 2000u64;
    let mut acks = Vec::new();
    for n in 0..produced {
        acks.push(js.publish(format!("events.{}", n % 7), format!("{{\"n\":{n}}}").into()).await.expect("publish"));
    }
    for ack in acks {
        ack.await.expect("publish acknowledged");
    }
    apply_source_with(&server, "durable", &nats, "EVENTS", None, &sink.url, metadata);
    eventually("some messages delivered", Duration::from_secs(20), async || {
        (sequences(&sink).len() >= 300).then_some(())
    })
    .await;
    server.kill9();
    let at_kill = sequences(&sink).len();
    assert!(at_kill < produced as usize, "all {at_kill} were delivered before the kill");
    let _restarted = Server::start_in(&server.dir.clone(), &[]);
    let counts = eventually("every message after the restart", Duration::from_secs(30), async || {
        let counts = sequences(&sink);
        (counts.len() == produced as usize).then_some(counts)
    })
    .await;
    assert!((1..=produced).all(|seq| counts.contains_key(&seq)), "sequences 1..={produced}");
    if metadata.contains("unordered") {
        assert!(sink.max_in_flight() > 1, "unordered delivery posts several events at once");
    }
    if metadata.contains("batch-size") {
        let requests = sink.received();
        let batched = |r: &support::Received| {
            header(r, "content-type").is_some_and(|t| t.starts_with("application/cloudevents-batch+json"))
        };
        assert!(requests.iter().all(batched), "every request is a batch");
        let largest = requests.iter().map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).expect("a batch").len());
        assert_eq!(largest.max(), Some(50), "batches of up to 50 events");
    }
    let delivered: usize = counts.values().sum();
    println!(
        "produced {produced}, delivered {} ({at_kill} before the kill), duplicates {}",
        counts.len(),
        delivered - counts.len()
    );
}

#[tokio::test]
async fn a_deleted_source_stops_delivering_at_once() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = NatsServer::start(bin);
    let js = nats.jetstream().await;
    nats.create_stream(&js, "BACKLOG", &["backlog.>"]).await;
    for n in 0..200 {
        publish(&js, "backlog.item", &[], &format!("{{\"n\":{n}}}")).await;
    }
    let server = Server::start(&[]);
    // One fetch holds all 200; one at a time, 50 ms each, they would take 10 s.
    let sink = Subscriber::start_slow(vec![], Duration::from_millis(50)).await;
    apply_source(&server, "backlog", &nats, "BACKLOG", None, &sink.url);
    eventually("some messages delivered", Duration::from_secs(20), async || (sink.received().len() >= 5).then_some(()))
        .await;
    server.ok(&["delete", "natssource", "backlog"]);
    let after = sink.received_during(Duration::from_secs(1)).await;
    assert!(after <= 1, "{after} messages delivered in the second after the delete");
}

#[tokio::test]
async fn a_nats_server_that_goes_away_is_not_ready_until_it_is_back() {
    let Some(bin) = nats_server_bin() else { return };
    let mut nats = NatsServer::start(bin);
    let js = nats.jetstream().await;
    nats.create_stream(&js, "JOBS", &["jobs.>"]).await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "jobs", &nats, "JOBS", None, &sink.url);
    publish(&js, "jobs.one", &[], r#"{"job":1}"#).await;
    eventually("the first job", Duration::from_secs(10), async || (sink.received().len() == 1).then_some(())).await;
    drop(js);

    nats.stop();
    let source = eventually("Ready=False", Duration::from_secs(10), async || {
        let s = server.get_json(&["natssource", "jobs"]);
        (ready(&s)["status"] == "False").then_some(s)
    })
    .await;
    let condition = ready(&source);
    assert_eq!(condition["reason"], "NatsUnreachable", "{source:#}");
    assert!(condition["message"].as_str().is_some_and(|m| m.contains(&nats.url)), "{source:#}");

    nats.resume();
    eventually("Ready again by itself", Duration::from_secs(15), async || {
        let s = server.get_json(&["natssource", "jobs"]);
        (ready(&s)["status"] == "True").then_some(())
    })
    .await;
    let js = nats.jetstream().await;
    let seq = publish(&js, "jobs.two", &[], r#"{"job":2}"#).await;
    eventually("the job published after", Duration::from_secs(10), async || {
        sequences(&sink).contains_key(&seq).then_some(())
    })
    .await;
    // At least once: the first job may come again when the server stopped before its ack
    // was confirmed, but it is never lost.
    assert!(sequences(&sink).get(&1).is_some_and(|n| *n >= 1), "the first job: {:?}", sequences(&sink));
}

#[tokio::test]
async fn a_missing_stream_is_not_ready_until_it_exists() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = NatsServer::start(bin);
    let js = nats.jetstream().await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "later", &nats, "LATER", Some("later.*"), &sink.url);
    let source = eventually("Ready=False", Duration::from_secs(10), async || {
        let s = server.get_json(&["natssource", "later"]);
        (ready(&s)["status"] == "False").then_some(s)
    })
    .await;
    assert_eq!(ready(&source)["reason"], "StreamNotFound", "{source:#}");
    assert!(ready(&source)["message"].as_str().is_some_and(|m| m.contains("LATER")), "{source:#}");
    assert!(js.get_stream("LATER").await.is_err(), "the source does not create the stream");

    nats.create_stream(&js, "LATER", &["later.*"]).await;
    eventually("Ready by itself", Duration::from_secs(15), async || {
        let s = server.get_json(&["natssource", "later"]);
        (ready(&s)["status"] == "True").then_some(())
    })
    .await;
    publish(&js, "later.one", &[], "1").await;
    eventually("the message", Duration::from_secs(10), async || (sink.received().len() == 1).then_some(())).await;
}
