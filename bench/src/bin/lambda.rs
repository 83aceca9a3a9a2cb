//! Lambda invocations (issue 19): the latency a warm `Invoke` through the Lambda API adds
//! over a plain request to the same function's URL through the gateway, and both against a
//! direct request to an equivalent HTTP server, in one run.
//!
//! `cargo run --release -p serval-bench --bin lambda [-- --requests N --rounds R]`
//!
//! A release `serval server` runs a Python handler (`python3.12`, serval's runtime client,
//! min-scale 1, warm) that answers `{"ok": true}`. The equivalent HTTP server is Python's
//! `http.server` answering the same JSON, started by the benchmark on loopback. Per round
//! (default 3), N requests (default 2 000) one after another on one keep-alive connection
//! to each target: **direct** (the Python server), **URL** (`POST /f/default/bench/`, a
//! Function URL event), **Invoke** (`POST /2015-03-31/functions/bench/invocations`,
//! SigV4-signed as boto3 signs). Medians over the rounds of each round's p50 and p99.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serval_bench::events::{HttpClient, http_client};
use serval_bench::{ServalServer, Summary, arg, median_of};
use serval_lambda::sigv4::{ClientRequest, Credentials, sign};

const HANDLER: &str = "def handler(event, context):\n    return {\"ok\": True}\n";

const DIRECT: &str = r#"
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.serve_forever()
"#;

#[tokio::main]
async fn main() {
    let (requests, rounds) = (arg("--requests", 2_000), arg("--rounds", 3));
    let server = ServalServer::start(&[]);
    let code = server.dir.path().join("bench-fn");
    std::fs::create_dir_all(&code).expect("dir");
    std::fs::write(code.join("lambda_function.py"), HANDLER).expect("handler");
    let manifest = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: bench
  annotations:
    serval.dev/protocol: lambda
    serval.dev/lambda-runtime: python3.12
    serval.dev/lambda-handler: lambda_function.handler
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - command: ["python3"]
          workingDir: {}
"#,
        code.display()
    );
    let manifest_path = server.dir.path().join("bench.yaml");
    std::fs::write(&manifest_path, manifest).expect("manifest");
    server.cli(&["apply", "-f", &manifest_path.display().to_string()]);
    let credentials = std::fs::read_to_string(server.dir.path().join("aws-credentials")).expect("credentials");
    let (id, secret) = credentials.trim().split_once('\n').expect("two lines");
    let credentials = Credentials { access_key_id: id.to_string(), secret_access_key: secret.to_string() };

    let port = serval_bench::free_port();
    let direct = std::process::Command::new("python3")
        .args(["-c", DIRECT, &port.to_string()])
        .spawn()
        .expect("start the direct server");
    // Stopped however the benchmark ends, a failed assertion included.
    let _direct = StopOnDrop(direct);
    let client = http_client();
    let gateway = server.gateway;
    let invoke_path = "/2015-03-31/functions/bench/invocations";
    // A request to the Lambda API, signed as boto3 signs.
    let signed = |method: &str, path: &str, query: &str, body: Bytes| -> Request<Full<Bytes>> {
        let host = gateway.to_string();
        let request = ClientRequest { host: &host, method, path, query, body: &body };
        let (date, auth) = sign(&request, &credentials, "us-east-1", SystemTime::now()).expect("sign");
        let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        Request::builder()
            .method(method)
            .uri(format!("http://{gateway}{target}"))
            .header("x-amz-date", date)
            .header("authorization", auth)
            .body(Full::new(body))
            .expect("request")
    };
    let make = |target: usize| -> Request<Full<Bytes>> {
        let body = Bytes::from_static(br#"{"n": 1}"#);
        match target {
            0 => Request::post(format!("http://127.0.0.1:{port}/")).body(Full::new(body)).expect("request"),
            1 => Request::post(format!("http://{gateway}/f/default/bench/")).body(Full::new(body)).expect("request"),
            2 => signed("POST", invoke_path, "", body),
            _ => signed("POST", invoke_path, "Qualifier=live", body),
        }
    };
    // Version 1 and the alias `live` naming it, for Invoke by alias (once the function is ready).
    let publish = || signed("POST", "/2015-03-31/functions/bench/versions", "", Bytes::new());
    until_status(&client, publish, 201, "PublishVersion").await;
    let alias = Bytes::from_static(br#"{"Name": "live", "FunctionVersion": "1"}"#);
    let resp = client.request(signed("POST", "/2015-03-31/functions/bench/aliases", "", alias)).await.expect("alias");
    assert_eq!(resp.status(), 201, "CreateAlias");
    let _ = resp.into_body().collect().await;
    // Warm up every path (and wait for the direct server and the function).
    for target in 0..4 {
        until_status(&client, || make(target), 200, &format!("target {target}")).await;
    }
    let names = ["direct Python http.server", "function URL via gateway", "Lambda Invoke API", "Invoke of an alias"];
    let mut p50s = vec![Vec::new(); 4];
    let mut p99s = vec![Vec::new(); 4];
    println!("lambda: {requests} sequential requests per target and round, {rounds} rounds");
    for round in 1..=rounds {
        for target in 0..4 {
            let mut samples = Vec::with_capacity(requests);
            for _ in 0..requests {
                let req = make(target);
                let began = Instant::now();
                let resp = client.request(req).await.expect("answer");
                assert_eq!(resp.status(), 200, "{}", names[target]);
                let _ = resp.into_body().collect().await;
                samples.push(began.elapsed());
            }
            // Summary's figures are in ms; the table shows µs.
            let summary = Summary::new(&samples);
            let (p50, p99) = (summary.median() * 1e3, summary.percentile(99.0) * 1e3);
            println!("round {round} {:<28} p50 {p50:>7.0} us  p99 {p99:>7.0} us", names[target]);
            p50s[target].push(p50);
            p99s[target].push(p99);
        }
    }
    let p50: Vec<f64> = p50s.into_iter().map(median_of).collect();
    let p99: Vec<f64> = p99s.into_iter().map(median_of).collect();
    println!();
    for target in 0..4 {
        println!("{:<28} p50 {:>7.0} us  p99 {:>7.0} us", names[target], p50[target], p99[target]);
    }
    let added = p50[2] - p50[1];
    println!(
        "Invoke adds {added:.0} us p50 over the function's URL (the URL adds {:.0} us over direct)",
        p50[1] - p50[0]
    );
    println!(
        "Invoke of an alias adds {:.0} us p50 over unqualified Invoke (its version is read from the store)",
        p50[3] - p50[2]
    );
    let verdict = if added <= 100.0 { "PASS" } else { "FAIL" };
    println!("target: Invoke adds <= 100 us p50 over the plain gateway path -> {verdict}");
}

/// Sends the request `make` gives until it answers `status`, for a minute at most.
async fn until_status(client: &HttpClient, make: impl Fn() -> Request<Full<Bytes>>, status: u16, what: &str) {
    let began = Instant::now();
    loop {
        if let Ok(resp) = client.request(make()).await {
            let answered = resp.status();
            let _ = resp.into_body().collect().await;
            if answered == status {
                return;
            }
        }
        assert!(began.elapsed() < Duration::from_secs(60), "{what} never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed when dropped.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
