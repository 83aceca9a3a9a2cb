//! End-to-end tests of async invocation with the real binary: calls queued with `Prefer:
//! respond-async` (and OpenFaaS's `/async-function/` path) answer 202 with a call id, run
//! on a service scaled from zero, and call back once each; a failing service is retried
//! twice and its on-failure destination gets Lambda's destination record; calls queued
//! before a `kill -9` all complete after the restart.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use support::{FAST_SCALING, Server, Subscriber, echo, eventually};

/// Queues a call: POST `body` to `url` asking to be answered later; its status and call id.
async fn queue_call(client: &reqwest::Client, url: &str, body: String, callback: &str) -> (u16, Option<String>) {
    let response = client
        .post(url)
        .header("prefer", "respond-async")
        .header("x-callback-url", callback)
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let id = response.headers().get("x-call-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    (response.status().as_u16(), id)
}

/// The call ids the callback received, with how many times each.
fn callbacks(subscriber: &Subscriber) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for received in subscriber.received() {
        if let Some(id) = received.headers.get("x-call-id") {
            *seen.entry(id.clone()).or_default() += 1;
        }
    }
    seen
}

/// Queues a call with a chunked body over a raw connection; its call id.
async fn chunked_call(gateway: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let id = answer.lines().find_map(|l| l.strip_prefix("x-call-id: ")).expect("an X-Call-Id");
    id.trim().to_string()
}

fn apply(server: &Server, file: &str, text: &str) {
    let path = server.dir.join(file);
    std::fs::write(&path, text).expect("write");
    server.ok(&["apply", "-f", &path.display().to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_to_a_service_at_zero_all_complete_and_call_back_once() {
    let server = Server::start(FAST_SCALING);
    server.ok(&["deploy", "echo", "--cmd", &echo()]);
    eventually("the deploy's instance to stop", Duration::from_secs(10), async || {
        let s = server.get_json(&["echo"]);
        (s["status"]["instances"]["ready"] == 0).then_some(())
    })
    .await;
    let callback = Subscriber::start(vec![]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/f/default/echo/echo-body", server.gateway);
    let mut sent = Vec::new();
    for first in (0..1000).step_by(50) {
        let calls: Vec<_> = (first..first + 50)
            .map(|n| {
                let (client, url, callback) = (client.clone(), url.clone(), callback.url.clone());
                tokio::spawn(async move { queue_call(&client, &url, format!("call {n}"), &callback).await })
            })
            .collect();
        for call in calls {
            let (status, id) = call.await.expect("task");
            assert_eq!(status, 202, "a queued call is accepted");
            sent.push(id.expect("an X-Call-Id"));
        }
    }
    let ids: HashSet<String> = sent.iter().cloned().collect();
    assert_eq!(ids.len(), 1000, "every call has its own id");
    let seen = eventually("1000 callbacks", Duration::from_secs(60), async || {
        let seen = callbacks(&callback);
        (seen.len() >= 1000).then_some(seen)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = callbacks(&callback).into_iter().chain(seen).collect::<HashMap<_, _>>();
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), ids, "a callback per call, for no other call");
    assert!(seen.values().all(|n| *n == 1), "each call called back once");
    let bodies: HashSet<String> = callback
        .received()
        .iter()
        .filter(|r| r.headers.get("x-function-status").map(String::as_str) == Some("200"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 1000, "each callback carries its call's answer");
    assert!(bodies.contains("call 0") && bodies.contains("call 999"));

    let listed: Value =
        serde_json::from_str(&server.ok(&["calls", "echo", "--limit", "5", "-o", "json"])).expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|c| c["state"] == "succeeded" && c["status"] == 200), "{listed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_is_retried_twice_then_reaches_the_on_failure_destination() {
    let server = Server::start(&[]);
    let failures = Subscriber::start(vec![]).await;
    let successes = Subscriber::start(vec![]).await;
    let manifest = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: flaky
  annotations:
    serval.dev/async-on-failure: {}
    serval.dev/async-on-success: {}
spec:
  template:
    spec:
      containers:
        - command: ["{}"]
"#,
        failures.url,
        successes.url,
        echo()
    );
    apply(&server, "flaky.yaml", &manifest);
    let client = reqwest::Client::new();
    // OpenFaaS's path: the service, its namespace, the path on it.
    let failing = client
        .post(format!("{}/async-function/flaky.default/boom?status=500", server.gateway))
        .body(r#"{"order": 7}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(failing.status(), 202);
    let failing_id = failing.headers()["x-call-id"].to_str().expect("text").to_string();
    // A chunked upload: stored whole, replayed with its length.
    let fine_id = chunked_call(&server.gateway, "/async-function/flaky/ok", "fine").await;

    let record = eventually("the failure's destination record", Duration::from_secs(30), async || {
        failures.received().into_iter().next()
    })
    .await;
    assert_eq!(record.headers.get("ce-type").map(String::as_str), Some("dev.serval.call.failed"));
    assert_eq!(record.headers.get("ce-id"), Some(&failing_id));
    let data: Value = serde_json::from_slice(&record.body).expect("a JSON record");
    assert_eq!(data["requestContext"]["requestId"], failing_id.as_str());
    assert_eq!(data["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(data["requestContext"]["approximateInvokeCount"], 3, "the first attempt and two retries: {data:#}");
    assert_eq!(data["requestPayload"]["order"], 7, "{data:#}");
    assert_eq!(data["responseContext"]["statusCode"], 500);
    assert_eq!(data["responseContext"]["functionError"], "Unhandled");
    assert_eq!(data["responsePayload"]["path"], "/boom", "the service's own answer: {data:#}");

    let record = eventually("the success's destination record", Duration::from_secs(10), async || {
        successes.received().into_iter().next()
    })
    .await;
    assert_eq!(record.headers.get("ce-type").map(String::as_str), Some("dev.serval.call.succeeded"));
    let data: Value = serde_json::from_slice(&record.body).expect("a JSON record");
    assert_eq!(data["requestContext"]["requestId"], fine_id.as_str());
    assert_eq!(data["requestContext"]["condition"], "Success");
    assert_eq!(data["requestPayload"], "fine");
    assert_eq!(failures.received().len(), 1, "one record per failed call");

    let calls: Value = serde_json::from_str(&server.ok(&["calls", "flaky", "-o", "json"])).expect("json");
    let failed = calls["items"].as_array().expect("items").iter().find(|c| c["id"] == failing_id.as_str()).cloned();
    let failed = failed.expect("the failed call is listed");
    assert_eq!((failed["state"].as_str(), failed["attempts"].as_u64()), (Some("failed"), Some(3)), "{calls:#}");

    // What cannot be queued is refused at once.
    let unknown = client.post(format!("{}/async-function/nobody", server.gateway)).send().await.expect("answer");
    assert_eq!(unknown.status(), 404, "no such service: 404 at once, not 202");
    let too_big = client
        .post(format!("{}/f/default/flaky/", server.gateway))
        .header("prefer", "respond-async")
        .body(vec![b'x'; 6 * 1024 * 1024 + 1])
        .send()
        .await
        .expect("answer");
    assert_eq!(too_big.status(), 413);
    let bad_callback = client
        .post(format!("{}/f/default/flaky/", server.gateway))
        .header("prefer", "respond-async")
        .header("x-callback-url", "ftp://example.com/")
        .send()
        .await
        .expect("answer");
    assert_eq!(bad_callback.status(), 400);
    let reason: Value = bad_callback.json().await.expect("JSON");
    assert!(reason["error"]["message"].as_str().is_some_and(|m| m.contains("x-callback-url")), "{reason}");
    server.fails(&["calls", "nobody"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_before_kill_9_all_complete_after_the_restart() {
    let mut server = Server::start(&[]);
    // One slow instance: calls wait in the queue.
    server.ok(&["deploy", "slow", "--cmd", &echo(), "--concurrency", "1", "--max-scale", "1"]);
    let callback = Subscriber::start(vec![]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/f/default/slow/echo-body?sleep_ms=100", server.gateway);
    let mut accepted = HashSet::new();
    for n in 0..60 {
        let (status, id) = queue_call(&client, &url, format!("call {n}"), &callback.url).await;
        assert_eq!(status, 202);
        accepted.insert(id.expect("an id"));
    }
    server.kill9();
    let before = callbacks(&callback).len();
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    let seen = eventually("every accepted call to call back", Duration::from_secs(60), async || {
        let seen = callbacks(&callback);
        accepted.iter().all(|id| seen.contains_key(id)).then_some(seen)
    })
    .await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "accepted {}, completed before kill -9 {before}, completed in all {}, duplicates {duplicates}",
        accepted.len(),
        seen.len()
    );
    assert!(before < accepted.len(), "some calls were still queued at the kill ({before} done)");
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), accepted, "no call lost, none invented");
    drop(restarted);
}
