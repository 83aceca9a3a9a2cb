//! End-to-end tests of Knative Serving compatibility: traffic splits, tags, rollbacks under
//! load, rollouts that fail readiness, and Knative sample manifests applied unchanged.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Server, echo, echo_bin, eventually};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends `n` requests with `parallel` clients; counts answers by revision.
async fn revisions_seen(url: &str, host: Option<&str>, n: usize, parallel: usize) -> HashMap<String, usize> {
    let client = reqwest::Client::new();
    let counts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let left = Arc::new(AtomicU64::new(n as u64));
    let workers = (0..parallel).map(|_| {
        let (client, counts, left) = (client.clone(), counts.clone(), left.clone());
        let (url, host) = (url.to_string(), host.map(str::to_string));
        tokio::spawn(async move {
            while left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok() {
                let mut req = client.get(&url);
                if let Some(h) = &host {
                    req = req.header("host", h);
                }
                let resp = req.send().await.expect("send");
                assert_eq!(resp.status().as_u16(), 200);
                let body: Value = resp.json().await.expect("json");
                let rev = body["revision"].as_str().expect("revision").to_string();
                *counts.lock().expect("lock").entry(rev).or_insert(0) += 1;
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.expect("worker");
    }
    Arc::try_unwrap(counts).expect("sole owner").into_inner().expect("lock")
}

#[tokio::test]
async fn ninety_ten_split_tags_and_the_revisions_view() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=1"]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=2"]);
    let table = server.ok(&["traffic", "echo", "echo-00001=90", "echo-00002=10", "--tag", "echo-00002=canary"]);
    assert!(table.contains("echo-00001") && table.contains("90%") && table.contains("canary"), "{table}");

    let counts = revisions_seen(&format!("{}/f/default/echo/", server.gateway), None, 2000, 16).await;
    let canary = counts.get("echo-00002").copied().unwrap_or(0);
    println!("split over 2000 requests: {counts:?}");
    assert!((140..=260).contains(&canary), "10 % ± 3 points of 2000, got {canary}");
    assert_eq!(counts.values().sum::<usize>(), 2000);

    // The tag's own route, by path and by host, reaches only its revision.
    let tagged = revisions_seen(&format!("{}/f/default/canary-echo/", server.gateway), None, 100, 4).await;
    assert_eq!(tagged.get("echo-00002"), Some(&100), "{tagged:?}");
    let port = server.gateway_host().rsplit_once(':').expect("port").1.to_string();
    let by_host =
        revisions_seen(&format!("{}/", server.gateway), Some(&format!("canary-echo.default.localhost:{port}")), 50, 2)
            .await;
    assert_eq!(by_host.get("echo-00002"), Some(&50), "{by_host:?}");

    let service = server.get_json(&["echo"]);
    let traffic = service["status"]["traffic"].as_array().expect("traffic");
    assert_eq!(traffic.len(), 2);
    assert_eq!(traffic[1]["url"], format!("http://canary-echo.default.localhost:{port}"));
    let revisions = server.ok(&["revisions", "echo"]);
    assert!(revisions.contains("90%") && revisions.contains("10%") && revisions.contains("canary"), "{revisions}");

    // Knative's read-only views.
    let token = &server.token;
    let client = reqwest::Client::new();
    let route: Value = client
        .get(format!("{}/api/v1/namespaces/default/routes/echo", server.api))
        .bearer_auth(token)
        .send()
        .await
        .expect("route")
        .json()
        .await
        .expect("json");
    assert_eq!(route["kind"], "Route");
    assert_eq!(route["status"]["traffic"][0]["percent"], 90);
    let config: Value = client
        .get(format!("{}/api/v1/namespaces/default/configurations/echo", server.api))
        .bearer_auth(token)
        .send()
        .await
        .expect("configuration")
        .json()
        .await
        .expect("json");
    assert_eq!(config["status"]["latestCreatedRevisionName"], "echo-00002");
    let resp = client
        .delete(format!("{}/api/v1/namespaces/default/revisions/echo-00001", server.api))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete revision");
    assert_eq!(resp.status().as_u16(), 405, "revisions are read-only");

    // Bad splits are refused with the field named.
    let err = server.fails(&["traffic", "echo", "echo-00001=50", "echo-00002=10"]);
    assert!(err.contains("spec.traffic") && err.contains("sum to 100"), "{err}");
    let err = server.fails(&["traffic", "echo", "echo-00009=100"]);
    assert!(err.contains("spec.traffic[0].revisionName"), "{err}");
}

#[tokio::test]
async fn rollback_under_load_fails_no_request() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=1"]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=2"]);
    let url = format!("{}/f/default/echo/?sleep_ms=5", server.gateway);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = reqwest::Client::new();
    let load: Vec<_> = (0..20)
        .map(|_| {
            let (client, url, stop, failures, served) =
                (client.clone(), url.clone(), stop.clone(), failures.clone(), served.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match client.get(&url).send().await {
                        Ok(resp) if resp.status().is_success() => {
                            let body: Value = resp.json().await.expect("json");
                            served.lock().expect("lock").push(body["revision"].as_str().unwrap_or("").to_string());
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.ok(&["traffic", "echo", "echo-00001=100"]);
    let switched_at = served.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.ok(&["traffic", "echo", "--latest", "100"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.ok(&["traffic", "echo", "echo-00001=100"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.expect("load");
    }
    let served = served.lock().expect("lock").clone();
    println!("served {} requests during three traffic changes", served.len());
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed");
    assert!(served[..switched_at].iter().any(|r| r == "echo-00002"));
    assert!(served.len() > 200, "the load really ran: {}", served.len());
    let tail = &served[served.len() - 20..];
    assert!(tail.iter().all(|r| r == "echo-00001"), "rolled back: {tail:?}");
}

#[tokio::test]
async fn a_rollout_that_fails_readiness_keeps_traffic_on_the_old_revision() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=1"]);
    let manifest = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: echo
spec:
  template:
    metadata:
      annotations:
        serving.knative.dev/progress-deadline: 2s
    spec:
      containers:
        - command: ["{echo}"]
          env:
            - name: V
              value: "2"
          readinessProbe:
            httpGet:
              path: /ready?status=503
"#,
        echo = echo()
    );
    let file = server.dir.join("bad.yaml");
    std::fs::write(&file, manifest).expect("write");
    let err = server.fails(&["apply", "-f", file.to_str().expect("path")]);
    assert!(err.contains("RevisionFailed") && err.contains("answered 503"), "{err}");

    let service = server.get_json(&["echo"]);
    assert_eq!(service["status"]["latestCreatedRevisionName"], "echo-00002");
    assert_eq!(service["status"]["latestReadyRevisionName"], "echo-00001");
    let revision = server.get_json(&["revision", "echo-00002"]);
    let ready = &revision["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ProgressDeadlineExceeded");
    let body = json(&server.ok(&["invoke", "echo"]));
    assert_eq!(body["revision"], "echo-00001", "traffic stayed on the ready revision");

    // Fixing the template rolls forward.
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=3"]);
    let body = json(&server.ok(&["invoke", "echo"]));
    assert_eq!(body["revision"], "echo-00003");
}

#[tokio::test]
async fn knative_sample_manifests_apply_unchanged() {
    let bin_dir = echo_bin().parent().expect("dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let server = Server::start_with_env(&[], &[("PATH", &path)]);
    // The manifest directory at run time (the binary may come from another checkout's build).
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let samples = manifest_dir.join("../../examples/knative");
    let out = server.cli(&["apply", "-f", samples.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ports[0].containerPort"), "ignored fields are listed: {stderr}");
    assert!(stderr.contains("resources.limits: the process runtime does not isolate"), "{stderr}");

    // hello: env and readiness probe.
    let hello = json(&server.ok(&["invoke", "hello"]));
    assert_eq!(hello["env"]["TARGET"], "World");

    // secret-env: a Secret and a ConfigMap through valueFrom and envFrom, `$(PORT)`.
    let reader = json(&server.ok(&["invoke", "secret-env"]));
    assert_eq!(reader["env"]["DB_PASSWORD"], "s3cret");
    assert_eq!(reader["env"]["LOG_LEVEL"], "info");
    let port = reader["env"]["PORT"].as_str().expect("PORT");
    assert_eq!(reader["env"]["LISTEN"], format!("127.0.0.1:{port}"));

    // autoscale: annotations and limits honoured.
    let autoscale = server.get_json(&["autoscale", "-n", "samples"]);
    assert_eq!(autoscale["spec"]["template"]["spec"]["containerConcurrency"], 10);
    eventually("min-scale 1 instance", Duration::from_secs(10), async || {
        let s = server.get_json(&["autoscale", "-n", "samples"]);
        (s["status"]["instances"]["ready"] == 1).then_some(())
    })
    .await;

    // blue-green: pinned revision name, traffic block and tags.
    let bg = server.get_json(&["blue-green"]);
    assert_eq!(bg["status"]["latestReadyRevisionName"], "blue-green-v1");
    let traffic = bg["status"]["traffic"].as_array().expect("traffic");
    assert_eq!(traffic[0]["tag"], "current");
    assert_eq!(traffic[0]["percent"], 100);
    let current = json(&server.ok(&["invoke", "current-blue-green"]));
    assert_eq!(current["env"]["T_VERSION"], "blue");
    assert_eq!(current["revision"], "blue-green-v1");
}

#[tokio::test]
async fn old_unrouted_revisions_are_garbage_collected() {
    let server = Server::start(&["--revision-history", "1"]);
    for v in 1..=4 {
        server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", &format!("V={v}")]);
    }
    let revisions = json(&server.ok(&["revisions", "echo", "-o", "json"]));
    let names: Vec<&str> =
        revisions["items"].as_array().expect("items").iter().filter_map(|r| r["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["echo-00003", "echo-00004"], "one unrouted revision kept besides the serving one");
    let logs = server.ok(&["logs", "echo"]);
    assert!(logs.contains("echo-00001 serval: revision garbage-collected"), "{logs}");
    // A pinned revision is never collected.
    server.ok(&["traffic", "echo", "echo-00003=100"]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=5"]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "V=6"]);
    let revisions = json(&server.ok(&["revisions", "echo", "-o", "json"]));
    let names: Vec<&str> =
        revisions["items"].as_array().expect("items").iter().filter_map(|r| r["metadata"]["name"].as_str()).collect();
    assert!(names.contains(&"echo-00003"), "{names:?}");
}
