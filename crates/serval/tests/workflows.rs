//! End-to-end tests of workflows with the real binary: a DSL document applied as it is
//! calls two serval services, branches on the first's answer, loops, and emits a CloudEvent
//! a trigger delivers; a run killed with `kill -9` during a `wait` completes after the
//! restart with the same output; `try`/`retry` recovers from a service failing twice.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, Subscriber, echo, eventually};

fn apply(server: &Server, file: &str, text: &str) -> String {
    let path = server.dir.join(file);
    std::fs::write(&path, text).expect("write");
    server.ok(&["apply", "-f", &path.display().to_string()])
}

/// A run with its journal, as `serval workflow get-run ID -o json` shows it.
fn get_run(server: &Server, id: &str) -> Value {
    serde_json::from_str(&server.ok(&["workflow", "get-run", id, "-o", "json"])).expect("json")
}

/// Waits for a run to end; the run.
async fn ended(server: &Server, id: &str) -> Value {
    eventually(&format!("run {id} ends"), Duration::from_secs(30), async || {
        let run = get_run(server, id);
        (run["state"] != "running").then_some(run)
    })
    .await
}

const ORDERS: &str = r#"
document:
  dsl: '1.0.3'
  namespace: default
  name: orders
  version: '1.0.0'
do:
  - check:
      call: http
      with:
        method: get
        endpoint: http://alpha.default.svc.cluster.local/check?order=7
      output:
        as: '${ { service: .service, items: [1, 2, 3] } }'
  - route:
      switch:
        - fromAlpha:
            when: .service == "alpha"
            then: sum
        - otherwise:
            then: end
  - sum:
      for:
        each: item
        in: .items
      do:
        - add:
            set:
              service: ${ .service }
              items: ${ .items }
              total: ${ (.total // 0) + $item }
  - confirm:
      call: beta
      with:
        method: post
        path: /confirm
        body: '${ { total: .total } }'
      output:
        as: '${ { total: (.body | fromjson | .total), confirmedBy: .service } }'
  - announce:
      emit:
        event:
          with:
            source: /workflows/orders
            type: dev.example.order.confirmed
            data: ${ . }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_calls_services_branches_loops_and_emits() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "alpha", "--cmd", &echo()]);
    server.ok(&["deploy", "beta", "--cmd", &echo()]);
    let sink = Subscriber::start(vec![]).await;
    server.ok(&["broker", "create", "default"]);
    server.ok(&[
        "trigger",
        "create",
        "confirmed",
        "--broker",
        "default",
        "--filter",
        "type=dev.example.order.confirmed",
        "--sink",
        &sink.url,
    ]);
    apply(&server, "orders.yaml", ORDERS);
    let workflow = server.get_json(&["workflow", "orders"]);
    assert_eq!(workflow["status"]["conditions"][0]["status"], "True", "{workflow:#}");

    let output = server.ok(&["workflow", "run", "orders", "--wait"]);
    let output: Value = serde_json::from_str(&output).expect("the output is JSON");
    assert_eq!(output["data"], json!({"total": 6, "confirmedBy": "beta"}), "{output:#}");
    assert_eq!(output["type"], "dev.example.order.confirmed");

    let event =
        eventually("the emitted event", Duration::from_secs(20), async || sink.received().into_iter().next()).await;
    let data: Value = serde_json::from_slice(&event.body).expect("json");
    assert_eq!(data, json!({"total": 6, "confirmedBy": "beta"}));

    let runs: Value = serde_json::from_str(&server.ok(&["workflow", "runs", "orders", "-o", "json"])).expect("json");
    let id = runs["items"][0]["id"].as_str().expect("a run").to_string();
    let run = get_run(&server, &id);
    assert_eq!(run["state"], "completed");
    let tasks: Vec<&str> = run["journal"]
        .as_array()
        .expect("journal")
        .iter()
        .filter(|r| r["phase"] == "Completed")
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(tasks, ["check", "route", "add", "add", "add", "sum", "confirm", "announce"], "{run:#}");
}

const PATIENT: &str = r#"
document: {dsl: '1.0.3', namespace: default, name: patient, version: '1.0.0'}
do:
  - admit:
      set:
        patient: ${ .name }
        admittedAt: ${ $task.startedAt }
  - rest:
      wait: PT4S
  - discharge:
      set:
        patient: ${ .patient }
        admittedAt: ${ .admittedAt }
        discharged: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_during_a_wait_completes_after_the_restart() {
    let mut server = Server::start(&[]);
    apply(&server, "patient.yaml", PATIENT);
    let began = Instant::now();
    let id = server.ok(&["workflow", "run", "patient", "--input", r#"{"name": "Ana"}"#]).trim().to_string();
    eventually("the wait started", Duration::from_secs(10), async || {
        let run = get_run(&server, &id);
        let journal = run["journal"].as_array().cloned().unwrap_or_default();
        journal.iter().any(|r| r["name"] == "rest" && r["phase"] == "Started").then_some(())
    })
    .await;
    let before = get_run(&server, &id);
    let admitted = before["journal"][0]["output"].clone();
    server.kill9();
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    let run = ended(&restarted, &id).await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["output"]["patient"], "Ana");
    assert_eq!(run["output"]["discharged"], true);
    assert_eq!(run["output"]["admittedAt"], admitted["admittedAt"], "the task before the crash is not run again");
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(4), "the wait was kept: {took:?}");
    println!("run {id}: completed {took:?} after it started, across kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_retry_recovers_from_a_service_failing_twice() {
    let server = Server::start(&[]);
    let flaky = Subscriber::start(vec![
        (503, vec![], "busy".into()),
        (503, vec![], "busy".into()),
        (200, vec![("content-type".into(), "application/json".into())], r#"{"ok": true}"#.into()),
    ])
    .await;
    let document = format!(
        "document: {{dsl: '1.0.3', namespace: default, name: flaky, version: '1.0.0'}}\ndo:\n  - attempt:\n      try:\n        \
         - call:\n            call: http\n            with: {{method: post, endpoint: '{}', body: {{n: 1}}}}\n      catch:\n        \
         errors:\n          with: {{status: 503}}\n        retry:\n          delay: PT0.1S\n          backoff: {{exponential: {{}}}}\n          \
         limit: {{attempt: {{count: 5}}}}\n",
        flaky.url
    );
    apply(&server, "flaky.yaml", &document);
    let output = server.ok(&["workflow", "run", "flaky", "--wait"]);
    let output: Value = serde_json::from_str(&output).expect("json");
    assert_eq!(output, json!({"ok": true}));
    assert_eq!(flaky.received().len(), 3, "two failures, then the answer");

    // A run that cannot succeed faults with the DSL's error.
    let broken = document.replace("name: flaky", "name: broken").replace(&flaky.url, "http://127.0.0.1:9/");
    apply(&server, "broken.yaml", &broken);
    let out = server.cli(&["workflow", "run", "broken", "--wait"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("communication"), "{err}");
}

const APPROVAL: &str = r#"
document: {dsl: '1.0.3', namespace: default, name: approval, version: '1.0.0'}
do:
  - request:
      set:
        order: ${ .order }
  - awaitApproval:
      listen:
        to:
          one:
            with:
              type: dev.example.approval
              data: ${ .order == 7 }
  - decide:
      set:
        approvedBy: ${ .[0].by }
"#;

/// Sends a CloudEvent (binary mode) to a gateway address; its status.
async fn send_event(url: &str, id: &str, kind: &str, data: Value) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", kind)
        .header("content-type", "application/json")
        .body(data.to_string())
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// Waits until a run's task has started.
async fn started(server: &Server, id: &str, task: &str) {
    eventually(&format!("{task} started"), Duration::from_secs(20), async || {
        let run = get_run(server, id);
        let journal = run["journal"].as_array().cloned().unwrap_or_default();
        journal.iter().any(|r| r["name"] == task && r["phase"] == "Started").then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_broker_event_through_its_trigger_across_kill_9() {
    let mut server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    apply(&server, "approval.yaml", APPROVAL);
    let trigger = server.get_json(&["trigger", "approval-workflow"]);
    assert_eq!(trigger["metadata"]["ownerReferences"][0]["kind"], "Workflow", "{trigger:#}");
    let broker = format!("{}/b/default/default", server.gateway);

    // A run listening gets the matching event; others pass it by.
    let id = server.ok(&["workflow", "run", "approval", "--input", r#"{"order": 7}"#]).trim().to_string();
    started(&server, &id, "awaitApproval").await;
    assert_eq!(send_event(&broker, "e1", "dev.example.approval", json!({"order": 8, "by": "Bob"})).await, 202);
    assert_eq!(send_event(&broker, "e2", "dev.example.other", json!({"order": 7, "by": "Eve"})).await, 202);
    assert_eq!(send_event(&broker, "e3", "dev.example.approval", json!({"order": 7, "by": "Ana"})).await, 202);
    let run = ended(&server, &id).await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["output"], json!({"approvedBy": "Ana"}));

    // An event accepted just before kill -9 reaches the run after the restart.
    let id = server.ok(&["workflow", "run", "approval", "--input", r#"{"order": 7}"#]).trim().to_string();
    started(&server, &id, "awaitApproval").await;
    assert_eq!(send_event(&broker, "e4", "dev.example.approval", json!({"order": 7, "by": "Kim"})).await, 202);
    server.kill9();
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    let run = ended(&restarted, &id).await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["output"], json!({"approvedBy": "Kim"}));

    // Deleting the workflow takes its trigger.
    restarted.ok(&["delete", "workflow", "approval"]);
    restarted.fails(&["get", "trigger", "approval-workflow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_start_runs_on_events_and_on_a_timer() {
    let server = Server::start(&[]);
    let on = r#"
document: {dsl: '1.0.3', namespace: default, name: onboarding, version: '1.0.0'}
schedule:
  on:
    all:
      - with: {type: dev.example.signed-up}
      - with: {type: dev.example.verified}
do:
  - greet:
      set:
        user: ${ .[0].data.user }
        steps: ${ map(.type) }
"#;
    apply(&server, "onboarding.yaml", on);
    let workflow = server.get_json(&["workflow", "onboarding"]);
    let address = workflow["status"]["address"]["url"].as_str().expect("an address").to_string();
    assert!(address.ends_with("/w/default/onboarding"), "{address}");
    assert_eq!(send_event(&address, "s1", "dev.example.signed-up", json!({"user": "ana"})).await, 202);
    let runs: Value =
        serde_json::from_str(&server.ok(&["workflow", "runs", "onboarding", "-o", "json"])).expect("json");
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(0), "one of the two events is not enough");
    assert_eq!(send_event(&address, "v1", "dev.example.verified", json!({"user": "ana"})).await, 202);
    let id = eventually("a run started by the events", Duration::from_secs(20), async || {
        let runs: Value =
            serde_json::from_str(&server.ok(&["workflow", "runs", "onboarding", "-o", "json"])).expect("json");
        runs["items"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    let run = ended(&server, &id).await;
    assert_eq!(run["output"], json!({"user": "ana", "steps": ["dev.example.signed-up", "dev.example.verified"]}));
    assert_eq!(send_event(&format!("{}/w/default/nowhere", server.gateway), "x", "t", json!({})).await, 404);

    let every = "document: {dsl: '1.0.3', namespace: default, name: ticker, version: '1.0.0'}\n\
                 schedule: {every: PT1S}\ndo:\n  - tick: {set: {ticked: true}}\n";
    apply(&server, "ticker.yaml", every);
    let runs = eventually("three scheduled runs", Duration::from_secs(20), async || {
        let runs: Value =
            serde_json::from_str(&server.ok(&["workflow", "runs", "ticker", "-o", "json"])).expect("json");
        let items = runs["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= 3).then_some(items)
    })
    .await;
    assert!(runs.iter().skip(1).all(|r| r["state"] == "completed"), "{runs:#?}");
}
