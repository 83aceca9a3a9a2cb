//! End-to-end tests: the real `serval` binary as server and CLI, the real example function
//! as child processes, real HTTP through the gateway.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{FAST_SCALING, Server, echo, eventually, pid_alive};

async fn get(url: &str, host: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn deploy_invoke_by_host_and_path_and_update_creates_a_revision() {
    let server = Server::start(&[]);
    let url = server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "GREETING=one"]);
    let port = server.gateway_host().rsplit_once(':').expect("port").1.to_string();
    assert_eq!(url.trim(), format!("http://echo.default.localhost:{port}"));

    // Path routing through the CLI.
    let body = json(&server.ok(&["invoke", "echo", "--path", "/some/path?x=1"]));
    assert_eq!(body["revision"], "echo-00001");
    assert_eq!(body["service"], "echo");
    assert_eq!(body["configuration"], "echo");
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["env"]["GREETING"], "one");

    // Host routing: the Host header names the service; the path is forwarded unchanged.
    let (status, text) =
        get(&format!("{}/f/x/y", server.gateway), Some(&format!("echo.default.localhost:{port}"))).await;
    assert_eq!(status, 200);
    assert_eq!(json(&text)["path"], "/f/x/y");

    // POST bodies stream through.
    let body = json(&server.ok(&["invoke", "echo", "--data", "hello body"]));
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body"], "hello body");

    // A template change makes a new revision, and traffic moves to it.
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "GREETING=two"]);
    let body = json(&server.ok(&["invoke", "echo"]));
    assert_eq!(body["revision"], "echo-00002");
    assert_eq!(body["env"]["GREETING"], "two");
    let revisions = json(&server.ok(&["revisions", "echo", "-o", "json"]));
    let names: Vec<&str> = revisions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["echo-00001", "echo-00002"]);
    assert_eq!(revisions["items"][1]["status"]["traffic"], 100);
    assert_eq!(revisions["items"][0]["status"]["traffic"], 0);

    // Re-applying the same template changes nothing.
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "GREETING=two"]);
    let service = server.get_json(&["echo"]);
    assert_eq!(service["status"]["latestReadyRevisionName"], "echo-00002");
    assert_eq!(service["metadata"]["generation"], 2);
    assert_eq!(service["status"]["observedGeneration"], 2);

    // Tables and YAML render.
    let table = server.ok(&["list"]);
    assert!(table.contains("echo") && table.contains("echo-00002") && table.contains("True"), "{table}");
    let yaml = server.ok(&["get", "revision", "echo-00001", "-o", "yaml"]);
    assert!(yaml.contains("name: echo-00001"), "{yaml}");

    server.ok(&["delete", "echo"]);
    let (status, text) = get(&format!("{}/f/default/echo", server.gateway), None).await;
    assert_eq!(status, 404, "{text}");
    assert!(server.ok(&["list", "-o", "json"]).contains("\"items\": []"));
}

#[tokio::test]
async fn a_port_named_h2c_gets_http2_from_the_gateway() {
    let server = Server::start(&[]);
    let manifest = |name: &str, port_name: &str| {
        format!(
            r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    spec:
      containers:
        - command: ["{echo}"]
          ports:
            - name: {port_name}
              containerPort: 8080
"#,
            echo = echo()
        )
    };
    let file = server.dir.join("grpc.yaml");
    std::fs::write(&file, manifest("grpc", "h2c") + "---\n" + &manifest("web", "http1")).expect("write manifest");
    server.ok(&["apply", "-f", file.to_str().expect("path")]);
    // The same HTTP/1.1 client; the instance of `grpc` is spoken to in HTTP/2.
    assert_eq!(json(&server.ok(&["invoke", "grpc"]))["version"], "HTTP/2.0");
    assert_eq!(json(&server.ok(&["invoke", "web"]))["version"], "HTTP/1.1");
    std::fs::write(&file, manifest("bad", "grpc")).expect("write manifest");
    let err = server.fails(&["apply", "-f", file.to_str().expect("path")]);
    assert!(err.contains("ports[0].name: must be http1 or h2c"), "{err}");
}

#[tokio::test]
async fn apply_knative_yaml_with_several_documents() {
    let server = Server::start(&[]);
    let manifest = format!(
        r#"# Knative Services as documented, with a command instead of an image
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: first
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/max-scale: "2"
    spec:
      containerConcurrency: 4
      timeoutSeconds: 30
      containers:
        - command: ["{echo}"]
          env:
            - name: TARGET
              value: yaml
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: second
  namespace: team-a
spec:
  template:
    spec:
      containers:
        - command: ["{echo}"]
          resources:
            limits:
              memory: 64Mi
"#,
        echo = echo()
    );
    let file = server.dir.join("services.yaml");
    std::fs::write(&file, manifest).expect("write manifest");
    let out = server.cli(&["apply", "-f", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: spec.template.spec.containers[0].resources.limits: the process runtime does not isolate"
        ),
        "{stderr}"
    );

    let first = json(&server.ok(&["invoke", "first"]));
    assert_eq!(first["env"]["TARGET"], "yaml");
    let second = json(&server.ok(&["invoke", "second", "-n", "team-a"]));
    assert_eq!(second["revision"], "second-00001");
    let service = server.get_json(&["first"]);
    assert_eq!(service["spec"]["template"]["spec"]["containerConcurrency"], 4);
    let all = json(&server.ok(&["list", "-A", "-o", "json"]));
    assert_eq!(all["items"].as_array().expect("items").len(), 2);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();

    // 401 without or with a wrong token.
    let resp = client.get(format!("{}/api/v1/services", server.api)).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client.get(format!("{}/api/v1/services", server.api)).bearer_auth("nope").send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 401);

    // 422 naming the field, through the API…
    let bad = serde_json::json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"containerConcurrency": 5000, "containers": [{"command": ["x"]}]}}}
    });
    let resp = client
        .put(format!("{}/api/v1/namespaces/default/services/bad", server.api))
        .bearer_auth(&server.token)
        .json(&bad)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["details"][0]["field"], "spec.template.spec.containerConcurrency");
    // …including type errors, with their path.
    let resp = client
        .put(format!("{}/api/v1/namespaces/default/services/bad", server.api))
        .bearer_auth(&server.token)
        .body(r#"{"metadata":{"name":"bad"},"spec":{"template":{"spec":{"timeoutSeconds":"soon"}}}}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["details"][0]["field"], "spec.template.spec.timeoutSeconds");
    // Malformed JSON is a 400.
    let resp = client
        .put(format!("{}/api/v1/namespaces/default/services/bad", server.api))
        .bearer_auth(&server.token)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);

    // …and through the CLI: one line naming the field, non-zero exit.
    let err = server.fails(&["deploy", "Bad_Name", "--cmd", &echo()]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("metadata.name") && err.contains("(422)"), "{err}");
    let err = server.fails(&["deploy", "x", "--cmd", &echo(), "--min-scale", "3", "--max-scale", "2"]);
    assert!(err.contains("autoscaling.knative.dev/min-scale"), "{err}");
    let err = server.fails(&["deploy", "x", "--cmd", &echo(), "--env", "NOEQUALS"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    assert!(server.ok(&["list", "-A", "-o", "json"]).contains("\"items\": []"), "nothing was stored");

    // A command that does not exist: stored, but not ready, with the reason.
    let err = server.fails(&["deploy", "ghost", "--cmd", "/nonexistent/function"]);
    assert!(err.contains("ExecutableNotFound") || err.contains("not an executable"), "{err}");
    let (status, text) = get(&format!("{}/f/default/ghost", server.gateway), None).await;
    assert_eq!(status, 503, "{text}");

    // 404 with a JSON body for unknown services and routes.
    let (status, text) = get(&format!("{}/f/default/nothing", server.gateway), None).await;
    assert_eq!(status, 404);
    assert_eq!(json(&text)["error"]["reason"], "NotFound");
    let (status, _) = get(&format!("{}/", server.gateway), Some("nothing.default.localhost")).await;
    assert_eq!(status, 404);
    let err = server.fails(&["get", "nothing"]);
    assert!(err.contains("not found") && err.contains("404"), "{err}");

    // 502 when the instance dies mid-request; 504 past timeoutSeconds.
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--timeout", "1"]);
    let (status, text) = get(&format!("{}/f/default/echo/crash", server.gateway), None).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(json(&text)["error"]["reason"], "InstanceFailed");
    let (status, text) = get(&format!("{}/f/default/echo/?sleep_ms=3000", server.gateway), None).await;
    assert_eq!(status, 504, "{text}");
    let (status, _) = get(&format!("{}/f/default/echo/", server.gateway), None).await;
    assert_eq!(status, 200, "the platform still serves after failures");
}

#[tokio::test]
async fn scales_from_zero_on_demand_and_reaps_idle_instances() {
    let server = Server::start(FAST_SCALING);
    server.ok(&["deploy", "echo", "--cmd", &echo()]);
    // The deploy proved the revision by starting one instance; it scales to zero.
    let service = eventually("the deploy's instance to stop", Duration::from_secs(10), async || {
        let s = server.get_json(&["echo"]);
        (s["status"]["instances"]["ready"] == 0).then_some(s)
    })
    .await;
    let cold_starts = service["status"]["instances"]["coldStarts"].as_u64().expect("coldStarts");

    let (status, text) = get(&format!("{}/f/default/echo/", server.gateway), None).await;
    assert_eq!(status, 200);
    let pid = json(&text)["pid"].as_u64().expect("pid") as u32;
    assert!(pid_alive(pid));
    let service = server.get_json(&["echo"]);
    assert_eq!(service["status"]["instances"]["ready"], 1);
    assert_eq!(service["status"]["instances"]["coldStarts"], cold_starts + 1);

    eventually("the idle instance to stop", Duration::from_secs(10), async || {
        let s = server.get_json(&["echo"]);
        (s["status"]["instances"]["ready"] == 0 && !pid_alive(pid)).then_some(())
    })
    .await;
    let logs = server.ok(&["logs", "echo"]);
    assert!(logs.contains("stdout: serval-echo listening on"), "{logs}");
    assert!(logs.contains("stopped (scaled down)"), "{logs}");

    // And it comes back on the next request.
    let (status, text) = get(&format!("{}/f/default/echo/", server.gateway), None).await;
    assert_eq!(status, 200);
    assert_ne!(json(&text)["pid"].as_u64(), Some(u64::from(pid)));
}

#[tokio::test]
async fn min_scale_keeps_instances_and_a_crashed_one_is_replaced_and_reported() {
    let server = Server::start(FAST_SCALING);
    server.ok(&["deploy", "keep", "--cmd", &echo(), "--min-scale", "1"]);
    let ready = |s: &Value| s["status"]["instances"]["ready"].as_u64();
    eventually("min-scale instance", Duration::from_secs(10), async || {
        (ready(&server.get_json(&["keep"])) == Some(1)).then_some(())
    })
    .await;

    let (status, _) = get(&format!("{}/f/default/keep/crash", server.gateway), None).await;
    assert_eq!(status, 502);
    let revision = eventually("crash reported", Duration::from_secs(10), async || {
        let r = server.get_json(&["revision", "keep-00001"]);
        let conds = r["status"]["conditions"].as_array()?.clone();
        conds.iter().any(|c| c["type"] == "ContainerHealthy" && c["status"] == "False").then_some(r)
    })
    .await;
    let healthy = revision["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "ContainerHealthy")
        .cloned()
        .expect("condition");
    assert!(healthy["message"].as_str().expect("message").contains("exited with code 3"), "{healthy}");
    eventually("replacement instance", Duration::from_secs(10), async || {
        (ready(&server.get_json(&["keep"])) == Some(1)).then_some(())
    })
    .await;
    let logs = server.ok(&["logs", "keep"]);
    assert!(logs.contains("exited unexpectedly (exited with code 3)"), "{logs}");
    // Well past the stable window the min-scale instance is still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ready(&server.get_json(&["keep"])), Some(1));
}

#[tokio::test]
async fn kill_9_of_the_server_leaves_no_orphans_and_a_restart_still_serves() {
    let mut server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "GREETING=persisted"]);
    server.ok(&["deploy", "echo", "--cmd", &echo(), "--env", "GREETING=persisted2"]);
    let (status, text) = get(&format!("{}/f/default/echo/", server.gateway), None).await;
    assert_eq!(status, 200);
    let pid = json(&text)["pid"].as_u64().expect("pid") as u32;

    server.kill9();
    eventually("the instance to die with the server", Duration::from_secs(5), async || (!pid_alive(pid)).then_some(()))
        .await;

    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[]);
    let service = restarted.get_json(&["echo"]);
    assert_eq!(service["status"]["latestReadyRevisionName"], "echo-00002");
    let revisions = json(&restarted.ok(&["revisions", "echo", "-o", "json"]));
    assert_eq!(revisions["items"].as_array().expect("items").len(), 2);
    let (status, text) = get(&format!("{}/f/default/echo/", restarted.gateway), None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&text)["env"]["GREETING"], "persisted2");
    assert_eq!(json(&text)["revision"], "echo-00002");
    drop(server);
}

#[tokio::test]
async fn logs_follow_streams_new_lines() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo()]);
    let mut follow = std::process::Command::new(support::serval_bin())
        .arg("--data-dir")
        .arg(&server.dir)
        .args(["logs", "echo", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if line.contains("listening on") {
                return line;
            }
        }
        String::new()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = get(&format!("{}/f/default/echo/", server.gateway), None).await;
    assert_eq!(status, 200);
    let line = tokio::task::spawn_blocking(move || reader.join().expect("join")).await.expect("join");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(line.contains("stdout: serval-echo listening on 127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn burst_from_zero_scales_out_respects_container_concurrency_and_returns_to_zero() {
    let server = Server::start(FAST_SCALING);
    server.ok(&["deploy", "one", "--cmd", &echo(), "--concurrency", "1"]);
    let url = format!("{}/f/default/one/?sleep_ms=200", server.gateway);
    let client = reqwest::Client::new();
    let requests = (0..20).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let resp = client.get(&url).send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        })
    });
    let mut pids = std::collections::HashSet::new();
    for r in futures_util::future::join_all(requests).await {
        let (status, body) = r.expect("join");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["max_in_flight"], 1, "an instance never saw more than one request: {body}");
        pids.insert(body["pid"].as_u64().expect("pid"));
    }
    assert!(pids.len() > 1, "scaled out to {} instances", pids.len());
    let top = server.ok(&["top", "--count", "1"]);
    assert!(top.contains("one") && top.contains("rps="), "{top}");

    // Prometheus metrics on the API port, behind the token (they name every service).
    let scrape = reqwest::Client::new().get(format!("{}/metrics", server.api));
    assert_eq!(scrape.try_clone().expect("clone").send().await.expect("scrape").status(), 401);
    let metrics = scrape.bearer_auth(&server.token).send().await.expect("scrape").text().await.expect("text");
    let labels = r#"namespace="default",service="one",revision="one-00001""#;
    for expected in [
        format!("serval_requests_total{{{labels},code=\"200\"}} 20"),
        format!("serval_request_duration_seconds_count{{{labels}}} 20"),
        format!("serval_cold_starts_total{{{labels}}}"),
        "serval_cold_start_duration_seconds_bucket{".to_string(),
        format!("serval_instances_ready{{{labels}}}"),
        format!("serval_instances_desired{{{labels}}}"),
        format!("serval_requests_in_flight{{{labels}}} 0"),
        format!("serval_queue_depth{{{labels}}} 0"),
        format!("serval_autoscaler_panic{{{labels}}}"),
    ] {
        assert!(metrics.contains(&expected), "missing {expected} in\n{metrics}");
    }
    eventually("scale back to zero", Duration::from_secs(15), async || {
        let s = server.get_json(&["one"]);
        (s["status"]["instances"]["ready"] == 0 && s["status"]["instances"]["starting"] == 0).then_some(())
    })
    .await;
    assert!(pids.iter().all(|p| !pid_alive(*p as u32)), "every instance is gone");
}
