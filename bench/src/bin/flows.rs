//! Flows: a 3-step Sequence (channel → subscription → step, three times, then the reply),
//! beside the same run's broker → trigger to the same kind of subscriber.
//!
//! `cargo run --release -p serval-bench --bin flows [-- --events N --rounds R --seconds S]`
//!
//! The subscribers run inside this process, each a hyper server on a thread of its own with
//! a single-threaded runtime (keep-alive): three echo steps (200 with the event itself in
//! binary mode: its `ce-*` headers, content type and body) and two sinks (202), the
//! Sequence's reply and the baseline trigger's subscriber. Each records, per `ce-id` (a
//! number), when the event arrived, in ns since one shared epoch, so sending and receiving
//! times share one clock.
//!
//! Baseline: Broker `base` with one trigger to its sink. Sequence `bench`: steps 1–3, reply
//! to the other sink. For each:
//! 1. throughput: N events (default 50 000) in `application/cloudevents-batch+json` POSTs of
//!    100 from 4 connections, until the last sink has them all; R rounds (default 3),
//!    broker and sequence alternating, judged by the median;
//! 2. latency at a fixed 1 000 events/s for S seconds (default 10): one binary-mode POST per
//!    event, sent on schedule (open loop); p50/p99 of end to end (POST sent → sink) and, for
//!    the Sequence, of each hop (POST → step 1, step 1 → step 2, step 2 → step 3, step 3 →
//!    reply).
//!
//! Each step adds one channel hop to what a broker → trigger does, so the added latency per
//! hop is (sequence end-to-end p50 − broker end-to-end p50) / 3.
//!
//! To show where the time goes, each run also reports the CPU time (user + system) of the
//! server, by thread, and of this process (senders and subscribers): on a small machine the
//! two compete for the same cores.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serval_bench::cpu::{Cpu, serval_pid};
use serval_bench::events::{HttpClient, batch_of, binary_event, http_client, post};
use serval_bench::{ServalServer, Summary, median_of};

const STEPS: usize = 3;

/// A subscriber: counts deliveries and records when each event id arrived.
struct Subscriber {
    epoch: Instant,
    received: AtomicU64,
    /// Arrival of event `id`, in ns since `epoch` (0 = not yet).
    arrivals: Vec<AtomicU64>,
}

impl Subscriber {
    fn new(epoch: Instant, ids: usize) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            epoch,
            received: AtomicU64::new(0),
            arrivals: (0..ids).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn record(&self, headers: &HeaderMap) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        let id = headers.get("ce-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if let Some(slot) = id.and_then(|i| self.arrivals.get(i)) {
            let _ = slot.compare_exchange(0, nanos.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// When event `id` arrived (ns since the epoch), if it did.
    fn arrival(&self, id: usize) -> Option<Duration> {
        match self.arrivals[id].load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

/// Answers one delivery: a sink says 202; an echo step says 200 with the event itself
/// (binary mode: the `ce-*` headers and the content type copied, the same body).
async fn answer(sub: &Subscriber, echo: bool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    sub.record(&parts.headers);
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if !echo {
        return Response::builder().status(202).body(Full::new(Bytes::new())).expect("202");
    }
    let mut response = Response::builder().status(200);
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("ce-") || name == CONTENT_TYPE {
            response = response.header(name, value);
        }
    }
    response.body(Full::new(body)).expect("200")
}

/// Runs a subscriber on a thread of its own with a single-threaded runtime (the leanest
/// hyper server: the benchmark measures serval, not the subscribers).
fn serve(sub: Arc<Subscriber>, echo: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind subscriber");
    let addr = listener.local_addr().expect("subscriber addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("subscriber runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("subscriber listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let sub = sub.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sub = sub.clone();
                        async move { Ok::<_, Infallible>(answer(&sub, echo, req).await) }
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

/// Waits until `sub` has received `target` events in total (or `limit` passed); whether it did.
async fn delivered_by(sub: &Subscriber, target: u64, limit: Duration) -> bool {
    let limit = Instant::now() + limit;
    while sub.received.load(Ordering::Relaxed) < target {
        if Instant::now() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// One event through `url` until `last` has it: the pipeline is up before anything is timed.
async fn warm_up(client: &HttpClient, url: &str, last: &Subscriber, what: &str) {
    let before = last.received.load(Ordering::Relaxed);
    assert!(post(client, binary_event(url, "warm-up")).await, "{what}: the warm-up event was not accepted");
    assert!(delivered_by(last, before + 1, Duration::from_secs(30)).await, "{what}: the warm-up event never arrived");
}

/// One target under test: where events go in, and the subscriber that sees them last.
struct Target {
    name: &'static str,
    url: String,
    last: Arc<Subscriber>,
}

struct Throughput {
    accepted: u64,
    delivered: u64,
    ingest: Duration,
    end_to_end: Duration,
    /// The server's CPU time during the run.
    cpu: Cpu,
    /// This process's (senders and subscribers).
    own_cpu: Duration,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.end_to_end.as_secs_f64()
    }
}

/// `events` ids from `first`, in batches of 100 over 4 concurrent posters, until the last
/// subscriber has them all (or 120 s passed).
async fn throughput(serval: u32, client: &HttpClient, target: &Target, first: usize, events: usize) -> Throughput {
    const PER_POST: usize = 100;
    const CONNECTIONS: usize = 4;
    let before = target.last.received.load(Ordering::Relaxed);
    let (cpu_before, own_before) = (Cpu::of(serval), Cpu::of(std::process::id()).total);
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, next, accepted) = (client.clone(), target.url.clone(), next.clone(), accepted.clone());
        posters.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(PER_POST as u64, Ordering::Relaxed) as usize;
                if start >= events {
                    return;
                }
                let ids = first + start..first + (start + PER_POST).min(events);
                let n = ids.len() as u64;
                if post(&client, batch_of(&url, ids)).await {
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
    delivered_by(&target.last, before + accepted, Duration::from_secs(120)).await;
    let end_to_end = began.elapsed();
    let delivered = (target.last.received.load(Ordering::Relaxed) - before).min(accepted);
    let cpu = Cpu::of(serval).since(&cpu_before);
    let own_cpu = Cpu::of(std::process::id()).total.saturating_sub(own_before);
    Throughput { accepted, delivered, ingest, end_to_end, cpu, own_cpu }
}

/// Event `first + i` sent at start + i ms for `count` events, whatever happened to the
/// previous ones (open loop), one binary-mode POST each; when each was sent (since the
/// epoch) and whether it was accepted. Waits for the last subscriber to have them all.
async fn paced(client: &HttpClient, target: &Target, first: usize, count: usize) -> Vec<(Duration, bool)> {
    let before = target.last.received.load(Ordering::Relaxed);
    let epoch = target.last.epoch;
    let start = Instant::now() + Duration::from_millis(10);
    let mut sends = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + Duration::from_micros(1000 * i as u64);
        let (client, url) = (client.clone(), target.url.clone());
        sends.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let sent = epoch.elapsed();
            let ok = post(&client, binary_event(&url, &(first + i).to_string())).await;
            (sent, ok)
        }));
    }
    let mut out = Vec::with_capacity(count);
    for s in sends {
        out.push(s.await.expect("send"));
    }
    let accepted = out.iter().filter(|(_, ok)| *ok).count() as u64;
    delivered_by(&target.last, before + accepted, Duration::from_secs(60)).await;
    out
}

/// Latency figures from a paced run: `(from, to)` per event id, `from` = None meaning the
/// time the POST was sent.
fn spans(sent: &[(Duration, bool)], first: usize, from: Option<&Subscriber>, to: &Subscriber) -> (Summary, usize) {
    let mut samples = Vec::new();
    let mut missing = 0;
    for (i, (sent, ok)) in sent.iter().enumerate() {
        if !ok {
            continue;
        }
        let id = first + i;
        let start = match from {
            None => Some(*sent),
            Some(sub) => sub.arrival(id),
        };
        match (start, to.arrival(id)) {
            (Some(a), Some(b)) => samples.push(b.saturating_sub(a)),
            _ => missing += 1,
        }
    }
    (Summary::new(&samples), missing)
}

fn ms(s: &Summary) -> String {
    format!("{:.2} / {:.2} ms", s.median(), s.percentile(99.0))
}

/// Waits until the Sequence says Ready; its address.
fn sequence_address(server: &ServalServer, name: &str) -> String {
    let began = Instant::now();
    loop {
        let s = server.api_get(&format!("/api/v1/namespaces/default/sequences/{name}"));
        let ready = s["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready && let Some(url) = s["status"]["address"]["url"].as_str() {
            return url.to_string();
        }
        assert!(began.elapsed() < Duration::from_secs(30), "sequence {name} not ready: {s:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::main]
async fn main() {
    let mut events = 50_000usize;
    let mut seconds = 10u64;
    let mut rounds = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--events N"),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).filter(|&r| r > 0).expect("--rounds R"),
            other => panic!("unknown argument {other} (use --events N --rounds R --seconds S)"),
        }
    }
    let paced_count = 1000 * seconds as usize;
    let ids = events * rounds + paced_count;
    let epoch = Instant::now();
    let sink = Subscriber::new(epoch, ids);
    let steps: Vec<Arc<Subscriber>> = (0..STEPS).map(|_| Subscriber::new(epoch, ids)).collect();
    let reply = Subscriber::new(epoch, ids);
    let sink_addr = serve(sink.clone(), false);
    let step_addrs: Vec<SocketAddr> = steps.iter().map(|s| serve(s.clone(), true)).collect();
    let reply_addr = serve(reply.clone(), false);

    // Started on the main thread: the server exits with the thread that spawned it.
    let server = ServalServer::start(&[]);
    server.cli(&["broker", "create", "base"]);
    server.cli(&["trigger", "create", "all", "--broker", "base", "--sink", &format!("http://{sink_addr}/")]);
    let sequence = serde_json::json!({
        "apiVersion": "flows.knative.dev/v1",
        "kind": "Sequence",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "steps": step_addrs.iter().map(|a| serde_json::json!({"uri": format!("http://{a}/")})).collect::<Vec<_>>(),
            "reply": {"uri": format!("http://{reply_addr}/")},
        },
    });
    let status =
        server.api_put("/api/v1/namespaces/default/sequences/bench", &sequence.to_string()).expect("PUT the sequence");
    assert!((200..300).contains(&status), "PUT sequence: {status}");
    let sequence_url = sequence_address(&server, "bench");
    assert_eq!(sequence_url, format!("http://{}/c/default/bench-kn-sequence-0", server.gateway));

    let client = http_client();
    let broker =
        Target { name: "broker -> trigger", url: format!("http://{}/b/default/base", server.gateway), last: sink };
    let seq = Target { name: "sequence, 3 steps", url: sequence_url, last: reply.clone() };
    warm_up(&client, &broker.url, &broker.last, broker.name).await;
    warm_up(&client, &seq.url, &seq.last, seq.name).await;

    println!("flows: 3-step Sequence (channel -> subscription -> echo step, x3, -> reply) against broker -> trigger");
    println!("subscribers in this process; {events} events per round in POSTs of 100 from 4 connections");
    let serval = serval_pid();
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [(Cpu, Duration); 2] = Default::default();
    for round in 0..rounds {
        for (k, target) in [&broker, &seq].into_iter().enumerate() {
            let run = throughput(serval, &client, target, round * events, events).await;
            let wall = run.end_to_end.as_secs_f64();
            println!(
                "round {} {:<18} ingest {:>6.0} /s, end to end {:>6.0} /s ({}/{} in {:.2} s); CPU: serval {:.2} cores, {:.0} us/event; bench {:.2} cores",
                round + 1,
                target.name,
                run.accepted as f64 / run.ingest.as_secs_f64(),
                run.rate(),
                run.delivered,
                run.accepted,
                wall,
                run.cpu.total.as_secs_f64() / wall,
                run.cpu.total.as_secs_f64() * 1e6 / run.delivered.max(1) as f64,
                run.own_cpu.as_secs_f64() / wall,
            );
            rates[k].push(run.rate());
            cpu[k].0.add(&run.cpu);
            cpu[k].1 += run.end_to_end;
        }
    }
    for (target, (cpu, wall)) in [&broker, &seq].into_iter().zip(&cpu) {
        println!("serval CPU by thread, {} rounds: {}", target.name, cpu.describe(*wall));
    }
    let [broker_rates, seq_rates] = rates;
    let (broker_rate, seq_rate) = (median_of(broker_rates), median_of(seq_rates));

    let first = events * rounds;
    let cpu_before = Cpu::of(serval).total;
    let base_sent = paced(&client, &broker, first, paced_count).await;
    let base_cpu = Cpu::of(serval).total.saturating_sub(cpu_before);
    let cpu_before = Cpu::of(serval).total;
    let seq_sent = paced(&client, &seq, first, paced_count).await;
    let seq_cpu = Cpu::of(serval).total.saturating_sub(cpu_before);
    let accepted = |s: &[(Duration, bool)]| s.iter().filter(|(_, ok)| *ok).count();
    let (base_e2e, base_missing) = spans(&base_sent, first, None, &broker.last);
    let (seq_e2e, seq_missing) = spans(&seq_sent, first, None, &reply);
    let mut hops = Vec::new();
    let mut from: Option<&Subscriber> = None;
    for to in steps.iter().map(Arc::as_ref).chain([reply.as_ref()]) {
        hops.push(spans(&seq_sent, first, from, to).0);
        from = Some(to);
    }
    let added = (seq_e2e.median() - base_e2e.median()) / STEPS as f64;

    println!();
    println!("{:<44} {:>22} {:>22}", "", "broker -> trigger", "sequence (3 steps)");
    println!(
        "{:<44} {:>15.0} events/s {:>15.0} events/s",
        format!("batched end to end, median of {rounds}"),
        broker_rate,
        seq_rate
    );
    println!(
        "{:<44} {:>22} {:>22}",
        format!("at 1000/s for {seconds} s: accepted, not delivered"),
        format!("{}, {}", accepted(&base_sent), base_missing),
        format!("{}, {}", accepted(&seq_sent), seq_missing)
    );
    println!(
        "{:<44} {:>22} {:>22}",
        "  serval CPU (cores)",
        format!("{:.2}", base_cpu.as_secs_f64() / seconds as f64),
        format!("{:.2}", seq_cpu.as_secs_f64() / seconds as f64)
    );
    println!("{:<44} {:>22} {:>22}", "  end to end p50 / p99", ms(&base_e2e), ms(&seq_e2e));
    let names = ["POST -> step 1", "step 1 -> step 2", "step 2 -> step 3", "step 3 -> reply"];
    for (i, (name, hop)) in names.iter().zip(&hops).enumerate() {
        println!("{:<44} {:>22} {:>22}", format!("  hop {}: {name} p50 / p99", i + 1), "", ms(hop));
    }
    println!(
        "added per hop: (sequence p50 {:.2} - broker p50 {:.2}) / 3 = {added:.2} ms",
        seq_e2e.median(),
        base_e2e.median()
    );
    println!(
        "target: >= 10 000 events/s through the 3 steps (median) -> {}",
        if seq_rate >= 10_000.0 { "PASS" } else { "FAIL" }
    );
    println!("target: added p50 per hop <= 1 ms -> {}", if added <= 1.0 && seq_missing == 0 { "PASS" } else { "FAIL" });
    tokio::task::spawn_blocking(move || drop(server)).await.expect("stop server");
}
