//! Eventing: durable ingest (broker ingress, group commit) → trigger delivery to a fast
//! subscriber, beside the same machine's raw SQLite rate of one insert + fsync per event.
//!
//! `cargo run --release -p serval-bench --bin events [-- --events N --rounds R --seconds S --concurrency N]`
//!
//! The subscriber runs inside this process (a hyper server that answers 202 and records,
//! per `ce-id`, when the event arrived), so sending and receiving times share one clock.
//! One broker with one trigger to that subscriber (delivery concurrency 100, the default,
//! unless `--concurrency` says otherwise), three runs one after another:
//! 1. throughput with batched ingest: N events (default 200 000) in `application/cloudevents-
//!    batch+json` POSTs of 100, from 4 connections; events/s acknowledged and delivered; R
//!    rounds (default 3) of it, judged by the median (this VM's speed drifts between runs);
//! 2. throughput with one event per POST (binary mode) from 32 connections (N / 4 events);
//! 3. latency at a fixed 1 000 events/s for S seconds (default 10): one binary-mode POST per
//!    event, sent on schedule (open loop); p50/p99 of ingress (202) and of end to end (POST
//!    sent → subscriber received).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serval_bench::events::{HttpClient, batch_of, binary_event, http_client, post};
use serval_bench::{ServalServer, Summary};

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

/// The subscriber: counts deliveries and records when each event id arrived.
struct Sink {
    epoch: Instant,
    received: AtomicU64,
    /// Arrival of event `id`, in ns since `epoch` (0 = not yet).
    arrivals: Vec<AtomicU64>,
}

impl Sink {
    fn record(&self, req: &Request<Incoming>) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        let id = req.headers().get("ce-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if let Some(slot) = id.and_then(|i| self.arrivals.get(i)) {
            let _ = slot.compare_exchange(0, nanos.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the subscriber on a thread of its own with a single-threaded runtime (the leanest
/// hyper server: the benchmark measures serval, not the subscriber).
fn serve_sink(sink: Arc<Sink>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = listener.local_addr().expect("sink addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sink runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("sink listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            sink.record(&req);
                            let _ = req.into_body().collect().await;
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
    addr
}

/// Waits until the sink has received `target` events in total (or 120 s passed).
async fn delivered_by(sink: &Sink, target: u64) -> Instant {
    let limit = Instant::now() + Duration::from_secs(120);
    while sink.received.load(Ordering::Relaxed) < target && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

struct Throughput {
    accepted: u64,
    ingest: Duration,
    end_to_end: Duration,
}

impl Throughput {
    fn print(&self, what: &str) {
        println!(
            "{what:<44} ingest {:>7.0} events/s   end to end {:>7.0} events/s   ({} events, all delivered in {:.2} s)",
            self.accepted as f64 / self.ingest.as_secs_f64(),
            self.accepted as f64 / self.end_to_end.as_secs_f64(),
            self.accepted,
            self.end_to_end.as_secs_f64()
        );
    }
}

/// `events` ids from `first`, as batches of `per_post` over `connections` concurrent posters.
async fn throughput(
    client: &HttpClient,
    url: &str,
    sink: &Sink,
    first: usize,
    events: usize,
    per_post: usize,
    connections: usize,
) -> Throughput {
    let before = sink.received.load(Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..connections {
        let (client, url, next, accepted) = (client.clone(), url.to_string(), next.clone(), accepted.clone());
        posters.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(per_post as u64, Ordering::Relaxed) as usize;
                if start >= events {
                    return;
                }
                let ids = first + start..first + (start + per_post).min(events);
                let n = ids.len() as u64;
                let req = if per_post == 1 { binary_event(&url, &ids.start.to_string()) } else { batch_of(&url, ids) };
                if post(&client, req).await {
                    accepted.fetch_add(n, Ordering::Relaxed);
                }
            }
        }));
    }
    for p in posters {
        p.await.expect("poster");
    }
    let ingest = began.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    let done = delivered_by(sink, before + accepted).await;
    Throughput { accepted, ingest, end_to_end: done.duration_since(began) }
}

#[tokio::main]
async fn main() {
    let mut events = 200_000usize;
    let mut seconds = 10u64;
    let mut rounds = 3usize;
    let mut concurrency = 100u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().and_then(|v| v.parse().ok()).expect("--events N"),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).filter(|&r| r > 0).expect("--rounds R"),
            "--concurrency" => concurrency = args.next().and_then(|v| v.parse().ok()).expect("--concurrency N"),
            other => panic!("unknown argument {other} (use --events N --rounds R --seconds S --concurrency N)"),
        }
    }
    let singles = events / 4;
    let paced = 1000 * seconds as usize;
    let raw = raw_sqlite_rate(2000);

    let sink = Arc::new(Sink {
        epoch: Instant::now(),
        received: AtomicU64::new(0),
        arrivals: (0..events * rounds + singles + paced).map(|_| AtomicU64::new(0)).collect(),
    });
    let sink_addr = serve_sink(sink.clone());
    // Started on the main thread: the server exits with the thread that spawned it.
    let server = ServalServer::start(&[]);
    server.cli(&["broker", "create", "bench"]);
    server.cli(&[
        "trigger",
        "create",
        "all",
        "--broker",
        "bench",
        "--sink",
        &format!("http://{sink_addr}/"),
        "--concurrency",
        &concurrency.to_string(),
    ]);
    let url = format!("http://{}/b/default/bench", server.gateway);
    let client = http_client();

    println!("eventing: broker ingress -> SQLite (group commit) -> trigger -> subscriber (in this process)");
    println!("raw SQLite, one insert + fsync per event:    {raw:>7.0} events/s (baseline)");
    let mut batched = Vec::new();
    for round in 0..rounds {
        let run = throughput(&client, &url, &sink, round * events, events, 100, 4).await;
        run.print(&format!("batched ingest (100 per POST, 4 conns) #{}", round + 1));
        batched.push(run.accepted as f64 / run.end_to_end.as_secs_f64());
    }
    batched.sort_by(f64::total_cmp);
    let median = batched[batched.len() / 2];
    println!(
        "batched end to end, median of {rounds}: {median:.0} events/s (range {:.0}-{:.0})",
        batched[0],
        batched[batched.len() - 1]
    );
    let single = throughput(&client, &url, &sink, events * rounds, singles, 1, 32).await;
    single.print("one event per POST (binary, 32 conns)");

    // Fixed rate: event i is sent at start + i ms, whatever happened to the previous ones.
    let first = events * rounds + singles;
    let before = sink.received.load(Ordering::Relaxed);
    let start = Instant::now() + Duration::from_millis(10);
    let mut sends = Vec::with_capacity(paced);
    for i in 0..paced {
        let at = start + Duration::from_micros(1000 * i as u64);
        let (client, url, epoch) = (client.clone(), url.clone(), sink.epoch);
        sends.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let sent = epoch.elapsed();
            let ok = post(&client, binary_event(&url, &(first + i).to_string())).await;
            (sent, epoch.elapsed() - sent, ok)
        }));
    }
    let mut ingress = Vec::new();
    let mut end_to_end = Vec::new();
    let mut accepted = 0u64;
    let mut sent_at = Vec::with_capacity(paced);
    for s in sends {
        let (sent, took, ok) = s.await.expect("send");
        sent_at.push(sent);
        if ok {
            accepted += 1;
            ingress.push(took);
        }
    }
    delivered_by(&sink, before + accepted).await;
    let mut missing = 0;
    for (i, sent) in sent_at.iter().enumerate() {
        match sink.arrivals[first + i].load(Ordering::Relaxed) {
            0 => missing += 1,
            nanos => end_to_end.push(Duration::from_nanos(nanos).saturating_sub(*sent)),
        }
    }
    let (ingress, e2e) = (Summary::new(&ingress), Summary::new(&end_to_end));
    println!(
        "fixed 1000 events/s for {seconds} s: {accepted} accepted, {missing} not delivered; ingress 202 p50 {:.2} ms p99 {:.2} ms; end to end p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        ingress.median(),
        ingress.percentile(99.0),
        e2e.median(),
        e2e.percentile(99.0),
        e2e.percentile(100.0)
    );
    println!("target: >= 20000 events/s end to end (median) -> {}", if median >= 20_000.0 { "PASS" } else { "FAIL" });
    println!(
        "target: p99 <= 10 ms end to end at 1000 events/s -> {}",
        if e2e.percentile(99.0) <= 10.0 && missing == 0 { "PASS" } else { "FAIL" }
    );
    tokio::task::spawn_blocking(move || drop(server)).await.expect("stop server");
}
