//! Async invocation (issue 19): how fast calls are acknowledged (`Prefer: respond-async`,
//! 202 after the call is stored) and drained (run on the service, then called back), beside
//! the same run's baselines: one-event POSTs to a broker (the same durable append, one
//! commit per request) for the acknowledgements, and the same requests sent synchronously to
//! the same service for the drain.
//!
//! `cargo run --release -p serval-bench --bin async-calls [-- --calls N --rounds R --concurrency C]`
//!
//! A release `serval server` runs `examples/echo` as service `echo` (min-scale 1, warm).
//! Each round (default 3), N requests (default 20 000) from C concurrent senders (default 32)
//! on keep-alive connections, three ways:
//! 1. **broker**: one binary-mode CloudEvent per POST to `/b/default/base` (202 each);
//! 2. **async**: `POST /f/default/echo/echo-body` with `Prefer: respond-async` and an
//!    `X-Callback-Url` naming a hyper server in this process: *enqueue rate* = calls / time
//!    to the last 202, *drain rate* = calls / time from the first POST to the last callback;
//! 3. **sync**: the same POST without `Prefer` (200 with the answer): the rate at which the
//!    service itself can be called through the gateway.
//!
//! Figures are medians over the rounds; the server's CPU per call is from `/proc`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serval_bench::cpu::{Cpu, serval_pid};
use serval_bench::events::{HttpClient, binary_event, http_client};
use serval_bench::{ServalServer, arg, median_of};

/// Counts callbacks; remembers when the last one came.
struct Callbacks {
    epoch: Instant,
    received: AtomicU64,
    /// ns since `epoch` of the last callback.
    last: AtomicU64,
}

/// Serves callbacks on a thread of its own (a single-threaded runtime); its address.
fn serve_callbacks(callbacks: Arc<Callbacks>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let callbacks = callbacks.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let callbacks = callbacks.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            callbacks.last.store(callbacks.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            callbacks.received.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
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

/// Sends `n` requests made by `make` from `concurrency` tasks; how many got `expected`, and
/// how long until the last answer.
async fn send_all(
    client: &HttpClient,
    n: usize,
    concurrency: usize,
    expected: u16,
    make: Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync>,
) -> (u64, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, ok, make) = (client.clone(), next.clone(), ok.clone(), make.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return;
                    }
                    if let Ok(resp) = client.request(make(i)).await {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        if status == expected {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
    (ok.load(Ordering::Relaxed), began.elapsed())
}

#[tokio::main]
async fn main() {
    let (calls, rounds, concurrency) = (arg("--calls", 20_000), arg("--rounds", 3), arg("--concurrency", 32));
    let server = ServalServer::start(&[]);
    let echo = serval_bench::release_binary("serval-echo");
    server.cli(&["deploy", "echo", "--cmd", &echo.display().to_string(), "--min-scale", "1"]);
    server.cli(&["broker", "create", "base"]);
    let pid = serval_pid();
    let callbacks = Arc::new(Callbacks { epoch: Instant::now(), received: AtomicU64::new(0), last: AtomicU64::new(0) });
    let callback_url = format!("http://{}/", serve_callbacks(callbacks.clone()));
    let client = http_client();
    let gateway = format!("http://{}", server.gateway);
    println!("async calls: {calls} requests per round from {concurrency} senders, {rounds} rounds");

    let (mut broker_rates, mut enqueue_rates, mut drain_rates, mut sync_rates) = (vec![], vec![], vec![], vec![]);
    let mut cpu_per_call = vec![];
    for round in 1..=rounds {
        let url = format!("{gateway}/b/default/base");
        let make: Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync> =
            Arc::new(move |i| binary_event(&url, &format!("r{round}-{i}")));
        let (ok, took) = send_all(&client, calls, concurrency, 202, make).await;
        let broker = ok as f64 / took.as_secs_f64();
        broker_rates.push(broker);

        let before = callbacks.received.load(Ordering::Relaxed);
        let cpu_before = Cpu::of(pid).total;
        let (url, callback) = (format!("{gateway}/f/default/echo/echo-body"), callback_url.clone());
        let make: Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync> = Arc::new(move |i| {
            Request::post(&url)
                .header("prefer", "respond-async")
                .header("x-callback-url", &callback)
                .body(Full::new(Bytes::from(format!("call {i}"))))
                .expect("request")
        });
        let start_ns = callbacks.epoch.elapsed().as_nanos() as u64;
        let (ok, took) = send_all(&client, calls, concurrency, 202, make).await;
        let enqueue = ok as f64 / took.as_secs_f64();
        let limit = Instant::now() + Duration::from_secs(300);
        while callbacks.received.load(Ordering::Relaxed) < before + ok && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = callbacks.received.load(Ordering::Relaxed) - before;
        let drain_time = Duration::from_nanos(callbacks.last.load(Ordering::Relaxed).saturating_sub(start_ns));
        let drain = drained as f64 / drain_time.as_secs_f64();
        let cpu = Cpu::of(pid).total.saturating_sub(cpu_before);
        cpu_per_call.push(cpu.as_secs_f64() * 1e6 / ok.max(1) as f64);
        enqueue_rates.push(enqueue);
        drain_rates.push(drain);

        let url = format!("{gateway}/f/default/echo/echo-body");
        let make: Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync> =
            Arc::new(move |i| Request::post(&url).body(Full::new(Bytes::from(format!("call {i}")))).expect("request"));
        let (ok_sync, took) = send_all(&client, calls, concurrency, 200, make).await;
        let sync = ok_sync as f64 / took.as_secs_f64();
        sync_rates.push(sync);
        println!(
            "round {round}: broker {broker:.0}/s; async: {ok}/{calls} acknowledged at {enqueue:.0}/s, {drained} called back, drained at {drain:.0}/s ({:.0} us serval CPU per call); sync {sync:.0}/s",
            cpu_per_call[cpu_per_call.len() - 1]
        );
    }
    let (broker, enqueue, drain, sync) =
        (median_of(broker_rates), median_of(enqueue_rates), median_of(drain_rates), median_of(sync_rates));
    println!();
    println!("medians over {rounds} rounds:");
    println!(
        "  acknowledged: async calls {enqueue:.0}/s, broker one-event POSTs {broker:.0}/s ({:.2}x)",
        enqueue / broker
    );
    println!(
        "  completed:    async calls drained {drain:.0}/s, the same requests sync {sync:.0}/s ({:.2}x)",
        drain / sync
    );
    println!("  serval CPU per async call (enqueue + run + callback): {:.0} us", median_of(cpu_per_call));
    let verdict = if enqueue >= 10_000.0 { "PASS" } else { "FAIL" };
    println!("target: >= 10 000 async calls/s acknowledged -> {verdict}");
}
