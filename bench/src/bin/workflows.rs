//! Workflows (issue 18): how many runs of a 10-task workflow the engine completes per
//! second, and what a `call` task adds to the request it makes to a warm serval service.
//!
//! `cargo run --release -p serval-bench --bin workflows [-- --rounds R --runs N --concurrency C --calls K --call-runs M]`
//!
//! A release `serval server` (temporary data directory, SQLite store) gets its documents as
//! users give them: CNCF Serverless Workflow DSL 1.0 files through `serval apply -f`. The
//! load generator is this process, one single-threaded tokio runtime with hyper's
//! keep-alive client; server, load generator and the echo instance share the machine.
//! R rounds (default 3), each of the parts below in turn; the summary shows medians.
//!
//! 1. **Throughput**: workflow `sets-<round>` (a fresh one each round, so that its run list
//!    holds that round's runs only) of 10 `set` tasks, each `n: '${ (.n // 0) + 1 }'`. N
//!    runs (default 2 000) are started by `POST …/workflows/sets-<round>/runs` (body `{}`),
//!    C (default 64) in flight at a time (closed loop). Once every POST is answered, the
//!    newest run (`GET …/workflowruns/<id>`, a small read) is read every 20 ms until it
//!    has ended, then the run list (`GET …/workflows/sets-<round>/runs`: all N runs with
//!    state and times, ≈ 20 ms of server time at N = 2 000) every 20 ms until no run is
//!    `running`; nothing is read while POSTs are sent (no list can be complete before
//!    then). The reads cost the server about 1 % of the round, a round reads the list a
//!    handful of times at most, and the end is seen within ~20 ms. Every run must be
//!    `completed` with output `{"n": 10}`. Runs/s = N / (first POST → the read that saw
//!    them all ended); beside it the rate to the last run's `endedAt` (ms, set just before
//!    its final store write), the rate of the POSTs alone and the p50 of one run's duration
//!    (`endedAt` − `startedAt`) under that load. Baseline, same round, same client and
//!    concurrency: N `GET /healthz` on the API listener (with the same `Authorization`
//!    field). Diagnostic: the same for `consts-<round>`, 10 `set` tasks of constants
//!    (`n: 1` … `n: 10`, same output, no jq expression), which separates the cost of
//!    expressions from that of the engine and its journal.
//! 2. **Per-call overhead**: service `wfecho` (`serval deploy wfecho --cmd serval-echo
//!    --min-scale 1`, warm) and workflow `calls` of K (default 20) sequential tasks
//!    `call: http` with `GET http://wfecho.default.svc.cluster.local/stats` (the engine
//!    sends that to the gateway's path route `/f/default/wfecho/stats`). M runs per round
//!    (default 30), one at a time, each polled every 10 ms (`GET …/workflowruns/<id>`) until
//!    it ends. Per run, from its journal (`at`, unix ms): per call = (last `Completed` −
//!    first `Started`) / K, K calls in one span so the millisecond clock costs at most 1/K
//!    ms; p50 over runs. The journal also splits a call task into `Started` → `Completed`
//!    (the durable write of the start + the HTTP exchange) and `Completed` → next `Started`
//!    (the durable write of the completion + the engine): p50 over runs of each run's mean.
//!    Baseline, same round: K × M sequential `GET /f/default/wfecho/stats` through the
//!    gateway from this process on one keep-alive connection (p50). Added overhead =
//!    per-call p50 − direct p50.
//!
//! Context, same rounds: sequential runs of `sets-<round>` and `consts-<round>` alone
//! (`endedAt` − `startedAt`, p50 of M each), and this machine's SQLite commit latency (one
//! insert + fsync, WAL, `synchronous=FULL`, as the store commits; 100 commits), the floor of
//! each durable journal write. The server's CPU by thread (`/proc`) shows where the time of
//! the throughput runs goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use serde_json::Value;
use serval_bench::cpu::{Cpu, serval_pid};
use serval_bench::events::{HttpClient, http_client};
use serval_bench::{ServalServer, Summary, median_of, release_binary};

const SETS: usize = 10;
/// The wait between two reads of the newest run or of the run list.
const POLL: Duration = Duration::from_millis(20);
/// How often one sequential run is read until it ends.
const RUN_POLL: Duration = Duration::from_millis(10);
/// The longest a round may wait for its runs.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Documents

fn sets_document(name: &str) -> String {
    let mut doc = format!("document: {{dsl: '1.0.3', namespace: default, name: {name}, version: '1.0.0'}}\ndo:\n");
    for i in 1..=SETS {
        doc += &format!("  - step{i}:\n      set:\n        n: '${{ (.n // 0) + 1 }}'\n");
    }
    doc
}

/// The same 10 tasks and output with constants: no jq expression to evaluate.
fn consts_document(name: &str) -> String {
    let mut doc = format!("document: {{dsl: '1.0.3', namespace: default, name: {name}, version: '1.0.0'}}\ndo:\n");
    for i in 1..=SETS {
        doc += &format!("  - step{i}:\n      set:\n        n: {i}\n");
    }
    doc
}

fn calls_document(name: &str, calls: usize, service: &str) -> String {
    let mut doc = format!("document: {{dsl: '1.0.3', namespace: default, name: {name}, version: '1.0.0'}}\ndo:\n");
    for i in 1..=calls {
        doc += &format!(
            "  - call{i}:\n      call: http\n      with:\n        method: get\n        \
             endpoint: http://{service}.default.svc.cluster.local/stats\n"
        );
    }
    doc
}

fn apply(server: &ServalServer, name: &str, document: &str) {
    let path = server.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, document).expect("write the workflow document");
    server.cli(&["apply", "-f", &path.display().to_string()]);
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The API (with the token) and the gateway, through one keep-alive client.
struct Http {
    client: HttpClient,
    api: String,
    gateway: String,
    token: String,
}

static REPORTED: AtomicU64 = AtomicU64::new(0);

/// Prints the first few unexpected answers, exactly as they came.
fn report(what: String) {
    if REPORTED.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("unexpected answer: {what}");
    }
}

impl Http {
    /// Sends a request to the API; its status and body.
    async fn api(&self, method: Method, path: &str, body: Option<&'static str>) -> Result<(u16, Bytes), String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api))
            .header(AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from_static(body.unwrap_or("").as_bytes()))).expect("request");
        self.send(request).await
    }

    /// `GET` of a gateway path.
    async fn gateway_get(&self, path: &str) -> Result<(u16, Bytes), String> {
        let request = Request::get(format!("{}{path}", self.gateway)).body(Full::new(Bytes::new())).expect("request");
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        let response = self.client.request(request).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("{e:?}"))?.to_bytes();
        Ok((status, body))
    }

    /// A JSON answer of the API to a GET (200 expected).
    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.api(Method::GET, path, None).await.expect("API answer");
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("JSON answer")
    }
}

/// N requests, C in flight at a time.
struct Burst {
    began: Instant,
    /// When the first request was sent, on the wall clock (as the server's times are).
    began_wall: SystemTime,
    elapsed: Duration,
    ok: usize,
    errors: usize,
    /// The bodies of the accepted answers.
    bodies: Vec<Bytes>,
}

impl Burst {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `n` requests `method path body` from `concurrency` tasks back to back; `expect` is
/// the status that counts as accepted.
async fn burst(
    http: &Arc<Http>,
    n: usize,
    concurrency: usize,
    method: Method,
    path: String,
    body: Option<&'static str>,
    expect: u16,
) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let path = Arc::new(path);
    let began_wall = SystemTime::now();
    let began = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, path, method) = (http.clone(), next.clone(), path.clone(), method.clone());
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                let mut errors = 0;
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    match http.api(method.clone(), &path, body).await {
                        Ok((status, answer)) if status == expect => bodies.push(answer),
                        Ok((status, answer)) => {
                            report(format!("{method} {path}: {status} {}", String::from_utf8_lossy(&answer)));
                            errors += 1;
                        }
                        Err(e) => {
                            report(format!("{method} {path}: {e}"));
                            errors += 1;
                        }
                    }
                }
                (bodies, errors)
            })
        })
        .collect();
    let mut out = Burst { began, began_wall, elapsed: Duration::ZERO, ok: 0, errors: 0, bodies: Vec::with_capacity(n) };
    for worker in workers {
        let (bodies, errors) = worker.await.expect("worker");
        out.ok += bodies.len();
        out.errors += errors;
        out.bodies.extend(bodies);
    }
    out.elapsed = began.elapsed();
    out
}

// ---------------------------------------------------------------------------------------
// Times and CPU

/// Unix ms of `YYYY-MM-DDTHH:MM:SS.mmmZ` (the server's `startedAt` and `endedAt`).
fn unix_ms_of(text: &str) -> Option<u64> {
    let num = |from: usize, to: usize| text.get(from..to).and_then(|s| s.parse::<i64>().ok());
    if text.len() != 24 || !text.ends_with('Z') {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 + ss).ok().map(|s| s * 1000 + ms as u64)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Commit latency of single-row transactions with fsync (WAL, synchronous=FULL), as the
/// store commits: the floor of one durable journal write.
fn raw_commit_latency(n: usize) -> Summary {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    conn.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY, log TEXT NOT NULL, body TEXT NOT NULL)")
        .expect("table");
    let body = r#"{"name":"step1","reference":"/do/0/step1","occurrence":0,"phase":"Completed","output":{"n":1}}"#;
    let samples: Vec<Duration> = (0..n)
        .map(|_| {
            let began = Instant::now();
            conn.execute("INSERT INTO events (log, body) VALUES ('workflowruns/default/x', ?1)", [body])
                .expect("insert");
            began.elapsed()
        })
        .collect();
    Summary::new(&samples)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

// ---------------------------------------------------------------------------------------
// 1. Throughput

/// N runs of one workflow, C POSTs in flight.
struct Runs {
    posts: f64,
    /// N / (first POST → the poll that saw every run ended).
    observed: f64,
    /// N / (first POST → the last `endedAt`).
    by_end: f64,
    run_p50: f64,
    /// Reads of the newest run, then of the whole list.
    polls: usize,
    reads: usize,
    errors: usize,
    cpu: Cpu,
    wall: Duration,
}

/// Applies `document` as workflow `name`, starts `runs` runs of it, `c` POSTs in flight,
/// and waits until the run list shows them all ended.
async fn run_many(
    http: &Arc<Http>,
    server: &ServalServer,
    pid: u32,
    name: &str,
    document: &str,
    runs: usize,
    c: usize,
) -> Runs {
    apply(server, name, document);
    let list_path = format!("/api/v1/namespaces/default/workflows/{name}/runs");
    let cpu_before = Cpu::of(pid);
    let posts = burst(http, runs, c, Method::POST, list_path.clone(), Some("{}"), 201).await;
    // The newest run (ids are the start time and a counter, in hex) first, one small read
    // at a time; then the whole list, until it shows every run ended.
    let newest = posts
        .bodies
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok()?["id"].as_str().map(str::to_string))
        .max()
        .expect("a run id");
    let mut polls = 0;
    loop {
        let run = http.get_json(&format!("/api/v1/namespaces/default/workflowruns/{newest}")).await;
        polls += 1;
        if run["state"] != "running" {
            break;
        }
        assert!(posts.began.elapsed() < ROUND_LIMIT, "{name}: run {newest} still running after {ROUND_LIMIT:?}");
        tokio::time::sleep(POLL).await;
    }
    let mut reads = 0;
    let list = loop {
        let list = http.get_json(&list_path).await;
        reads += 1;
        let items = list["items"].as_array().expect("items");
        let running = items.iter().filter(|r| r["state"] == "running").count();
        if items.len() >= posts.ok && running == 0 {
            break list;
        }
        assert!(
            posts.began.elapsed() < ROUND_LIMIT,
            "{name}: {running} of {} runs still running after {ROUND_LIMIT:?}",
            items.len()
        );
        tokio::time::sleep(POLL).await;
    };
    let observed = posts.began.elapsed();
    let cpu = Cpu::of(pid).since(&cpu_before);

    let items = list["items"].as_array().expect("items");
    let mut errors = posts.errors;
    let mut last_end = 0u64;
    let mut durations = Vec::with_capacity(items.len());
    for run in items {
        if run["state"] != "completed" || run["output"] != serde_json::json!({"n": SETS}) {
            errors += 1;
            report(format!("run {}: {} {} {}", run["id"], run["state"], run["output"], run["error"]));
        }
        let started = run["startedAt"].as_str().and_then(unix_ms_of);
        let ended = run["endedAt"].as_str().and_then(unix_ms_of);
        if let (Some(started), Some(ended)) = (started, ended) {
            last_end = last_end.max(ended);
            durations.push(Duration::from_millis(ended.saturating_sub(started)));
        }
    }
    let to_last_end = last_end.saturating_sub(unix_ms(posts.began_wall)).max(1);
    Runs {
        posts: posts.rate(),
        observed: posts.ok as f64 / observed.as_secs_f64(),
        by_end: posts.ok as f64 * 1000.0 / to_last_end as f64,
        run_p50: Summary::new(&durations).median(),
        polls,
        reads,
        errors,
        cpu,
        wall: observed,
    }
}

/// One of a round's two workflows.
type Variant = fn(&Round) -> &Runs;

struct Round {
    healthz: f64,
    /// `sets-<round>`: 10 set tasks with a jq expression each.
    sets: Runs,
    /// `consts-<round>`: 10 set tasks of constants (no expression).
    consts: Runs,
}

async fn throughput_round(
    http: &Arc<Http>,
    server: &ServalServer,
    pid: u32,
    round: usize,
    runs: usize,
    c: usize,
) -> Round {
    let healthz = burst(http, runs, c, Method::GET, "/healthz".into(), None, 200).await;
    if healthz.errors > 0 {
        eprintln!("round {round}: {} of {runs} GET /healthz failed", healthz.errors);
    }
    let name = format!("sets-{round}");
    let sets = run_many(http, server, pid, &name, &sets_document(&name), runs, c).await;
    let name = format!("consts-{round}");
    let consts = run_many(http, server, pid, &name, &consts_document(&name), runs, c).await;
    Round { healthz: healthz.rate(), sets, consts }
}

// ---------------------------------------------------------------------------------------
// 2. Calls and sequential runs

/// Starts a run of `workflow` and waits for it to end; the run with its journal.
async fn run_alone(http: &Http, workflow: &str) -> Value {
    let (status, body) = http
        .api(Method::POST, &format!("/api/v1/namespaces/default/workflows/{workflow}/runs"), Some("{}"))
        .await
        .expect("start a run");
    assert_eq!(status, 201, "starting a run of {workflow}: {}", String::from_utf8_lossy(&body));
    let started: Value = serde_json::from_slice(&body).expect("JSON run");
    let id = started["id"].as_str().expect("run id").to_string();
    let began = Instant::now();
    loop {
        tokio::time::sleep(RUN_POLL).await;
        let run = http.get_json(&format!("/api/v1/namespaces/default/workflowruns/{id}")).await;
        if run["state"] != "running" {
            assert_eq!(run["state"], "completed", "run {id} of {workflow}: {run:#}");
            return run;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "run {id} of {workflow} still running: {run:#}");
    }
}

/// From a run's journal of `calls` call tasks, in ms: (last Completed − first Started) /
/// calls, and the means over its tasks of Started → Completed and of Completed → next
/// Started.
fn call_times(run: &Value, calls: usize) -> (f64, f64, f64) {
    let journal = run["journal"].as_array().expect("journal");
    let at = |phase: &str| -> Vec<u64> {
        journal.iter().filter(|r| r["phase"] == phase).filter_map(|r| r["at"].as_u64()).collect()
    };
    let (started, completed) = (at("Started"), at("Completed"));
    assert!(started.len() == calls && completed.len() == calls, "a journal of {calls} calls: {run:#}");
    let span = completed[calls - 1].saturating_sub(started[0]) as f64;
    let exchange: Vec<f64> = started.iter().zip(&completed).map(|(s, c)| c.saturating_sub(*s) as f64).collect();
    let between: Vec<f64> = completed.iter().zip(&started[1..]).map(|(c, s)| s.saturating_sub(*c) as f64).collect();
    (span / calls as f64, mean(&exchange), mean(&between))
}

fn ms(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_secs_f64(m / 1000.0)).collect()
}

struct CallRound {
    per_call_p50: f64,
    per_call_p90: f64,
    direct_p50: f64,
    direct_p99: f64,
    /// p50 over runs of the run's mean Started → Completed.
    exchange_p50: f64,
    /// p50 over runs of the run's mean Completed → next Started.
    between_p50: f64,
    sets_run_p50: f64,
    consts_run_p50: f64,
}

async fn call_round(http: &Http, calls: usize, runs: usize, round: usize) -> CallRound {
    let (mut per_call, mut exchange, mut between) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let run = run_alone(http, "calls").await;
        let (p, e, b) = call_times(&run, calls);
        per_call.push(p);
        exchange.push(e);
        between.push(b);
    }
    let mut direct = Vec::with_capacity(calls * runs);
    for _ in 0..calls * runs {
        let began = Instant::now();
        let (status, body) = http.gateway_get("/f/default/wfecho/stats").await.expect("direct request");
        assert_eq!(status, 200, "direct request: {}", String::from_utf8_lossy(&body));
        direct.push(began.elapsed());
    }
    let (mut sets, mut consts) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        for (workflow, durations) in [("sets", &mut sets), ("consts", &mut consts)] {
            let run = run_alone(http, &format!("{workflow}-{round}")).await;
            let started = run["startedAt"].as_str().and_then(unix_ms_of).expect("startedAt");
            let ended = run["endedAt"].as_str().and_then(unix_ms_of).expect("endedAt");
            durations.push(Duration::from_millis(ended.saturating_sub(started)));
        }
    }
    let (direct, per_call) = (Summary::new(&direct), Summary::new(&ms(&per_call)));
    CallRound {
        per_call_p50: per_call.median(),
        per_call_p90: per_call.percentile(90.0),
        direct_p50: direct.median(),
        direct_p99: direct.percentile(99.0),
        exchange_p50: Summary::new(&ms(&exchange)).median(),
        between_p50: Summary::new(&ms(&between)).median(),
        sets_run_p50: Summary::new(&sets).median(),
        consts_run_p50: Summary::new(&consts).median(),
    }
}

fn number(value: Option<String>, what: &str) -> usize {
    value.and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| panic!("{what}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut rounds = 3;
    let mut runs = 2000;
    let mut concurrency = 64;
    let mut calls = 20;
    let mut call_runs = 30;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = number(args.next(), "--rounds R"),
            "--runs" => runs = number(args.next(), "--runs N"),
            "--concurrency" => concurrency = number(args.next(), "--concurrency C"),
            "--calls" => calls = number(args.next(), "--calls K"),
            "--call-runs" => call_runs = number(args.next(), "--call-runs M"),
            other => {
                panic!("unknown argument {other} (use --rounds R --runs N --concurrency C --calls K --call-runs M)")
            }
        }
    }
    assert!(calls >= 2, "--calls K takes at least 2");

    // Started on the main thread: the server exits with the thread that spawned it.
    let server = ServalServer::start(&[]);
    let pid = serval_pid();
    let echo = release_binary("serval-echo");
    server.cli(&["deploy", "wfecho", "--cmd", &echo.display().to_string(), "--min-scale", "1"]);
    apply(&server, "calls", &calls_document("calls", calls, "wfecho"));
    let http = Arc::new(Http {
        client: http_client(),
        api: format!("http://{}", server.api),
        gateway: format!("http://{}", server.gateway),
        token: server.token.clone(),
    });

    println!(
        "workflows: {runs} runs of {SETS} set tasks per round, {concurrency} POSTs in flight, against as many \
         GET /healthz; {call_runs} sequential runs of {calls} calls to a warm echo per round against \
         {} direct requests; {rounds} rounds",
        calls * call_runs
    );
    // Warm-up: connections, the echo instance, the engine.
    burst(&http, 500, concurrency, Method::GET, "/healthz".into(), None, 200).await;
    apply(&server, "sets-0", &sets_document("sets-0"));
    burst(
        &http,
        200,
        concurrency,
        Method::POST,
        "/api/v1/namespaces/default/workflows/sets-0/runs".into(),
        Some("{}"),
        201,
    )
    .await;
    for _ in 0..3 {
        run_alone(&http, "calls").await;
    }

    let mut tp: Vec<Round> = Vec::new();
    let mut cr: Vec<CallRound> = Vec::new();
    let mut raw: Vec<(f64, f64)> = Vec::new();
    let mut cpu = [(Cpu::default(), Duration::ZERO), (Cpu::default(), Duration::ZERO)];
    for round in 1..=rounds {
        let t = throughput_round(&http, &server, pid, round, runs, concurrency).await;
        for (k, (what, r)) in [("10 sets with jq", &t.sets), ("10 sets constant", &t.consts)].into_iter().enumerate() {
            println!(
                "round {round} {what:<16}: healthz {:>6.0}/s | POSTs {:>5.0}/s | runs completed {:>5.0}/s \
                 (by last endedAt {:>5.0}/s) | run p50 {:>5.0} ms under load | {} + {} reads | errors {} | serval {}",
                t.healthz,
                r.posts,
                r.observed,
                r.by_end,
                r.run_p50,
                r.polls,
                r.reads,
                r.errors,
                r.cpu.describe(r.wall)
            );
            cpu[k].0.add(&r.cpu);
            cpu[k].1 += r.wall;
        }
        tp.push(t);
        let c = call_round(&http, calls, call_runs, round).await;
        let commit = raw_commit_latency(100);
        println!(
            "round {round} calls: per call in a workflow p50 {:.2} ms, p90 {:.2} ms (per run, means: Started->Completed \
             {:.2} ms, Completed->next Started {:.2} ms) | direct p50 {:.2} ms, p99 {:.2} ms | added p50 {:.2} ms | \
             10-set run alone p50 {:.0} ms (constants {:.0} ms) | SQLite commit p50 {:.2} ms, p99 {:.2} ms",
            c.per_call_p50,
            c.per_call_p90,
            c.exchange_p50,
            c.between_p50,
            c.direct_p50,
            c.direct_p99,
            c.per_call_p50 - c.direct_p50,
            c.sets_run_p50,
            c.consts_run_p50,
            commit.median(),
            commit.percentile(99.0)
        );
        raw.push((commit.median(), commit.percentile(99.0)));
        cr.push(c);
    }
    // The cost of one poll of a full run list (the last round's N runs and M more).
    let began = Instant::now();
    http.get_json(&format!("/api/v1/namespaces/default/workflows/sets-{rounds}/runs")).await;
    let list_ms = began.elapsed().as_secs_f64() * 1e3;

    let pick = |f: &dyn Fn(&Round) -> f64| median_of(tp.iter().map(f).collect());
    let range = |f: &dyn Fn(&Round) -> f64| {
        let v: Vec<f64> = tp.iter().map(f).collect();
        (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max))
    };
    let pick_c = |f: fn(&CallRound) -> f64| median_of(cr.iter().map(f).collect());
    let errors: usize = tp.iter().map(|t| t.sets.errors + t.consts.errors).sum();
    let healthz = pick(&|t| t.healthz);
    let (per_call, direct) = (pick_c(|c| c.per_call_p50), pick_c(|c| c.direct_p50));
    let added = per_call - direct;

    println!();
    println!("serval CPU by thread, 10 sets with jq (POSTs and runs): {}", cpu[0].0.describe(cpu[0].1));
    println!("serval CPU by thread, 10 sets constant (POSTs and runs): {}", cpu[1].0.describe(cpu[1].1));
    println!("one GET of the run list of {} runs: {list_ms:.1} ms", runs + call_runs);
    println!();
    println!("| measure (median of {rounds} rounds, range) | value | baseline (same run) | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    let variants: [(&str, Variant); 2] = [
        ("10 `set` tasks with a jq expression each", |t| &t.sets),
        ("10 `set` tasks of constants (no jq)", |t| &t.consts),
    ];
    for (k, (what, of)) in variants.into_iter().enumerate() {
        let observed = pick(&|t| of(t).observed);
        let (low, high) = range(&|t| of(t).observed);
        let (target, met) = match k {
            0 => ("≥ 1 000 runs/s", if observed >= 1000.0 && errors == 0 { "**PASS**" } else { "**FAIL**" }),
            _ => ("(diagnostic)", "-"),
        };
        println!(
            "| {what}: runs completed/s, c={concurrency} | **{observed:.0}** ({low:.0}–{high:.0}); by last `endedAt` {:.0} | \
             `GET /healthz` {healthz:.0}/s | 1/{:.0} | {target} | {met} |",
            pick(&|t| of(t).by_end),
            healthz / observed,
        );
        let posts = pick(&|t| of(t).posts);
        println!(
            "| {what}: run starts (POSTs answered)/s | {posts:.0} ({:.0}–{:.0}) | `GET /healthz` {healthz:.0}/s | 1/{:.0} | - | - |",
            range(&|t| of(t).posts).0,
            range(&|t| of(t).posts).1,
            healthz / posts
        );
        println!(
            "| {what}: one run's duration under that load, p50 | {:.0} ms | - | - | - | - |",
            pick(&|t| of(t).run_p50)
        );
    }
    println!(
        "| `call` to a warm service, per call p50 ({calls} calls/run, {call_runs} runs/round) | {per_call:.2} ms (p90 {:.2}) | \
         direct `GET /f/default/wfecho/stats` through the gateway p50 {direct:.2} ms (p99 {:.2}) | - | - | - |",
        pick_c(|c| c.per_call_p90),
        pick_c(|c| c.direct_p99)
    );
    println!(
        "| added per call, p50 | **{added:.2} ms** | - | - | ≤ 2 ms | {} |",
        if added <= 2.0 { "**PASS**" } else { "**FAIL**" }
    );
    println!(
        "| a call task: Started → Completed (start write + HTTP) / Completed → next Started (completion write + engine), p50 of per-run means | {:.2} / {:.2} ms | - | - | - | - |",
        pick_c(|c| c.exchange_p50),
        pick_c(|c| c.between_p50)
    );
    println!(
        "| one 10-set run alone (sequential), p50: with jq / constants | {:.0} / {:.0} ms | SQLite commit (insert + fsync) p50 {:.2} ms, p99 {:.2} ms | - | - | - |",
        pick_c(|c| c.sets_run_p50),
        pick_c(|c| c.consts_run_p50),
        median_of(raw.iter().map(|r| r.0).collect()),
        median_of(raw.iter().map(|r| r.1).collect())
    );
    println!("errors (failed POSTs, runs not completed with n = {SETS}): {errors}");
    drop(server);
}
