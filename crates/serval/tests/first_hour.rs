//! What a newcomer meets in the first hour, end to end with the real binary: deploys that
//! fail say so, readiness that only believes the instance's own socket, Kubernetes'
//! `$(VAR)` and `workingDir` conventions, Secrets and ConfigMaps, status of references.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{FAST_SCALING, Server, echo, eventually};

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn condition<'a>(object: &'a Value, kind: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_first_deploy_that_exits_fails_with_its_reason_and_output() {
    let server = Server::start(&[]);
    let err = server.fails(&["deploy", "quick-exit", "--cmd", "sh -c 'echo bye; exit 3'"]);
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(err.contains("bye"), "the output's tail is in the error: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let service = server.get_json(&["quick-exit"]);
    assert_eq!(condition(&service, "Ready")["status"], "False", "{service}");
    let listed = server.ok(&["list"]);
    assert!(listed.contains("False"), "{listed}");
    // A request says why, at once.
    let (status, text) = get(&format!("{}/f/default/quick-exit/", server.gateway)).await;
    assert_eq!(status, 503, "{text}");
}

/// The pid of a process whose environment holds `K_SERVICE=<service>`, and its `PORT`.
fn find_instance(service: &str) -> Option<(u32, u16)> {
    let wanted = format!("K_SERVICE={service}");
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&wanted.as_bytes()) {
            continue;
        }
        let port = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"PORT="))
            .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())?;
        return Some((pid, port));
    }
    None
}

#[tokio::test]
async fn a_process_that_takes_the_instance_port_never_gets_its_requests() {
    let server = Server::start(&[]);
    // The instance binds late, so that the thief is there first.
    let cmd = format!("sh -c 'sleep 0.5; exec {}'", echo());
    server.ok(&["deploy", "victim", "--cmd", &cmd, "--no-wait"]);
    let (_, port) =
        eventually("the instance to start", Duration::from_secs(10), async || find_instance("victim")).await;
    let thief = TcpListener::bind(("127.0.0.1", port)).expect("the thief binds the instance's port first");
    let stolen = Arc::new(AtomicUsize::new(0));
    let counter = stolen.clone();
    std::thread::spawn(move || {
        for conn in thief.incoming() {
            let Ok(mut conn) = conn else { break };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 1024];
                if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let began = Instant::now();
    let service = eventually("the service to become ready", Duration::from_secs(30), async || {
        let s = server.get_json(&["victim"]);
        (condition(&s, "Ready")["status"] == "True").then_some(s)
    })
    .await;
    assert!(began.elapsed() < Duration::from_secs(20), "ready on another port, not after a timeout");
    for _ in 0..5 {
        let (status, text) = get(&format!("{}/f/default/victim/", server.gateway)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["service"], "victim");
    }
    assert_eq!(stolen.load(Ordering::SeqCst), 0, "no request reached the thief");
    let logs = server.ok(&["logs", "victim"]);
    assert!(logs.contains("was taken by another process"), "{logs}");
    drop(service);
}

#[tokio::test]
async fn port_references_and_working_dir_follow_kubernetes() {
    let server = Server::start(FAST_SCALING);
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("hello.txt"), "served from the working dir\n").expect("write");
    // A standard-library server that takes its port from argv, as gunicorn's `-b` does.
    let manifest = serde_json::json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": "web" },
        "spec": { "template": { "spec": { "containers": [{
            "command": ["python3", "-m", "http.server"],
            "args": ["--bind", "127.0.0.1", "$(PORT)"],
            "env": [{ "name": "LITERAL", "value": "$$(PORT)" }, { "name": "ADDR", "value": "127.0.0.1:$(PORT)" }],
            "workingDir": site.path().display().to_string(),
        }]}}}
    });
    let file = site.path().join("web.json");
    std::fs::write(&file, manifest.to_string()).expect("write manifest");
    server.ok(&["apply", "-f", &file.display().to_string()]);
    let (status, text) = get(&format!("{}/f/default/web/hello.txt", server.gateway)).await;
    assert_eq!((status, text.as_str()), (200, "served from the working dir\n"));

    // `deploy --cmd` with `$PORT` and `--workdir`; env values see `$(PORT)` expanded.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("x.txt"), "other dir\n").expect("write");
    server.ok(&[
        "deploy",
        "web2",
        "--cmd",
        "python3 -m http.server --bind 127.0.0.1 $PORT",
        "--workdir",
        &other.path().display().to_string(),
    ]);
    let (status, text) = get(&format!("{}/f/default/web2/x.txt", server.gateway)).await;
    assert_eq!((status, text.as_str()), (200, "other dir\n"));

    server.ok(&["deploy", "envs", "--cmd", &echo(), "--env", "ADDR=127.0.0.1:$(PORT)", "--env", "KEEP=$$(PORT)"]);
    let body: Value = serde_json::from_str(&server.ok(&["invoke", "envs"])).expect("json");
    let port = body["env"]["PORT"].as_str().expect("PORT").to_string();
    assert_eq!(body["env"]["ADDR"], format!("127.0.0.1:{port}"));
    assert_eq!(body["env"]["KEEP"], "$(PORT)");
}

/// Bytes of the database and its WAL.
fn database_bytes(server: &Server) -> Vec<u8> {
    let mut all = Vec::new();
    for file in ["serval.db", "serval.db-wal"] {
        all.extend(std::fs::read(server.dir.join(file)).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn secrets_and_config_maps_reach_instances_sealed_redacted_and_rolled_out() {
    let server = Server::start(FAST_SCALING);
    let value = "pw-4f1c9e-do-not-store-in-clear";
    server.ok(&[
        "secret",
        "create",
        "db",
        "--from-literal",
        &format!("password={value}"),
        "--from-literal",
        "user=app",
    ]);
    server.ok(&["configmap", "create", "settings", "--from-literal", "MODE=fast", "--from-literal", "LEVEL=3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = serde_json::json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": "reader" },
        "spec": { "template": { "spec": { "containers": [{
            "command": [echo()],
            "envFrom": [{ "configMapRef": { "name": "settings" } }, { "prefix": "DB_", "secretRef": { "name": "db" } }],
            "env": [{ "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } }],
        }]}}}
    });
    let file = dir.path().join("reader.json");
    std::fs::write(&file, manifest.to_string()).expect("write");
    server.ok(&["apply", "-f", &file.display().to_string()]);
    let body: Value = serde_json::from_str(&server.ok(&["invoke", "reader"])).expect("json");
    assert_eq!(body["env"]["PASSWORD"], value);
    assert_eq!(body["env"]["DB_user"], "app");
    assert_eq!(body["env"]["MODE"], "fast");
    assert_eq!(body["revision"], "reader-00001");

    // Redacted unless asked; never in clear in the database.
    let shown = server.ok(&["secret", "get", "db"]);
    assert!(shown.contains("<redacted>") && !shown.contains(value), "{shown}");
    let as_json = server.ok(&["secret", "get", "db", "-o", "json"]);
    assert!(!as_json.contains(value), "{as_json}");
    let revealed = server.ok(&["secret", "get", "db", "--show-secrets"]);
    assert!(revealed.contains(value), "{revealed}");
    assert!(server.ok(&["secret", "list"]).contains("password"));
    assert!(server.ok(&["configmap", "get", "settings"]).contains("fast"));
    let db = database_bytes(&server);
    assert!(!db.is_empty());
    assert!(!contains(&db, value.as_bytes()), "the secret value is in serval.db in clear");
    let b64 = base64_of(value);
    assert!(!contains(&db, b64.as_bytes()), "the secret value is in serval.db in base64");

    // A changed value rolls out a new revision that sees it.
    server.ok(&["secret", "create", "db", "--from-literal", "password=rotated", "--from-literal", "user=app"]);
    let body = eventually("the new revision to serve", Duration::from_secs(20), async || {
        let body: Value = serde_json::from_str(&server.ok(&["invoke", "reader"])).ok()?;
        (body["env"]["PASSWORD"] == "rotated").then_some(body)
    })
    .await;
    assert_eq!(body["revision"], "reader-00002");
    // Writing the same values again makes no revision.
    server.ok(&["secret", "create", "db", "--from-literal", "password=rotated", "--from-literal", "user=app"]);
    let revisions = server.ok(&["revisions", "reader"]);
    assert!(!revisions.contains("reader-00003"), "{revisions}");

    // A missing reference: not ready, naming it; ready by itself once it exists.
    let manifest = serde_json::json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": "waiter" },
        "spec": { "template": { "spec": { "containers": [{
            "command": [echo()],
            "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "api-token", "key": "token" } } }],
        }]}}}
    });
    std::fs::write(&file, manifest.to_string()).expect("write");
    let err = server.fails(&["apply", "-f", &file.display().to_string()]);
    assert!(
        err.contains(r#"secret \"api-token\" not found"#) || err.contains(r#"secret "api-token" not found"#),
        "{err}"
    );
    let service = server.get_json(&["waiter"]);
    assert_eq!(condition(&service, "Ready")["status"], "False");
    server.ok(&["secret", "create", "api-token", "--from-literal", "token=t0k"]);
    eventually("the waiting service to become ready", Duration::from_secs(20), async || {
        let s = server.get_json(&["waiter"]);
        (condition(&s, "Ready")["status"] == "True").then_some(())
    })
    .await;
    let body: Value = serde_json::from_str(&server.ok(&["invoke", "waiter"])).expect("json");
    assert_eq!(body["env"]["TOKEN"], "t0k");
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// One item of `serval <group> list -o json` by name.
fn listed(server: &Server, group: &[&str], name: &str) -> Value {
    let mut args = group.to_vec();
    args.extend(["list", "-o", "json"]);
    let all: Value = serde_json::from_str(&server.ok(&args)).expect("json");
    all["items"].as_array().into_iter().flatten().find(|t| t["metadata"]["name"] == name).cloned().unwrap_or_default()
}

#[tokio::test]
async fn references_to_missing_destinations_are_not_ready_until_they_exist() {
    let server = Server::start(FAST_SCALING);
    server.ok(&["broker", "create", "default"]);
    server.ok(&["trigger", "create", "t", "--broker", "default", "--service", "later"]);
    let trigger = listed(&server, &["trigger"], "t");
    assert_eq!(condition(&trigger, "Ready")["status"], "False", "{trigger}");
    assert_eq!(condition(&trigger, "Ready")["reason"], "SubscriberNotFound", "{trigger}");
    assert!(condition(&trigger, "Ready")["message"].as_str().unwrap_or_default().contains("later"), "{trigger}");

    server.ok(&["deploy", "later", "--cmd", &echo()]);
    let trigger = listed(&server, &["trigger"], "t");
    assert_eq!(condition(&trigger, "Ready")["status"], "True", "ready by itself once the service exists: {trigger}");
    server.ok(&["delete", "later"]);
    let trigger = listed(&server, &["trigger"], "t");
    assert_eq!(condition(&trigger, "Ready")["reason"], "SubscriberNotFound", "{trigger}");

    // A sink of a kind serval does not deliver to.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ping.yaml");
    std::fs::write(
        &file,
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata:\n  name: p\nspec:\n  schedule: '* * * * *'\n  sink:\n    ref:\n      apiVersion: flows.knative.dev/v1\n      kind: Sequence\n      name: seq\n",
    )
    .expect("write");
    server.ok(&["apply", "-f", &file.display().to_string()]);
    let source = listed(&server, &["source", "ping"], "p");
    assert_eq!(condition(&source, "Ready")["reason"], "SinkNotFound", "{source}");
    assert!(condition(&source, "Ready")["message"].as_str().unwrap_or_default().contains("Sequence"), "{source}");

    // Given up on without a dead-letter sink: dropped, not dead-lettered.
    server.ok(&["trigger", "create", "lost", "--broker", "default", "--sink", "http://127.0.0.1:1/", "--retry", "0"]);
    server.ok(&["event", "send", "--broker", "default", "--type", "t", "--source", "/s", "--data", "{}"]);
    let delivery = eventually("the event to be dropped", Duration::from_secs(10), async || {
        let d = listed(&server, &["trigger"], "lost")["status"]["delivery"].clone();
        (d["dropped"] == 1).then_some(d)
    })
    .await;
    assert_eq!(delivery["deadLettered"], 0, "{delivery}");
}

/// `GREETING` of the revision that answered, through the relay (GET) or hyper (a chunked
/// POST), with an optional `Knative-Serving-Tag`.
async fn greeting(server: &Server, tag: Option<&str>, chunked: bool) -> String {
    let url = format!("{}/f/default/tagged/", server.gateway);
    let client = reqwest::Client::new();
    let mut req = if chunked {
        let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("a"), Ok("b")];
        client.post(&url).body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
    } else {
        client.get(&url)
    };
    if let Some(tag) = tag {
        req = req.header("Knative-Serving-Tag", tag);
    }
    let text = req.send().await.expect("request").text().await.expect("body");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    body["env"]["GREETING"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_tag_header_routes_to_the_tagged_revision_and_new_splits_keep_tags() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "tagged", "--cmd", &echo(), "--env", "GREETING=one"]);
    server.ok(&["deploy", "tagged", "--cmd", &echo(), "--env", "GREETING=two"]);
    server.ok(&["traffic", "tagged", "--latest", "100", "--tag", "tagged-00001=old"]);
    for chunked in [false, true] {
        assert_eq!(greeting(&server, None, chunked).await, "two");
        assert_eq!(greeting(&server, Some("old"), chunked).await, "one", "chunked: {chunked}");
        assert_eq!(greeting(&server, Some("nope"), chunked).await, "two", "an unknown tag routes by weight");
    }
    // A new split keeps the tag.
    server.ok(&["traffic", "tagged", "--latest", "100"]);
    assert_eq!(greeting(&server, Some("old"), false).await, "one");
    server.ok(&["traffic", "tagged", "--untag", "old"]);
    assert_eq!(greeting(&server, Some("old"), false).await, "two");
}

#[tokio::test]
async fn a_deleted_service_takes_its_logs_and_services_show_a_path_url() {
    let server = Server::start(&[]);
    let first = format!("sh -c 'echo first-life; exec {}'", echo());
    server.ok(&["deploy", "gone", "--cmd", &first]);
    let service = server.get_json(&["gone"]);
    assert_eq!(service["status"]["address"]["url"], format!("{}/f/default/gone/", server.gateway), "{service}");
    let (status, _) = get(service["status"]["address"]["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    assert!(server.ok(&["logs", "gone"]).contains("first-life"));
    server.ok(&["delete", "gone"]);
    server.ok(&["deploy", "gone", "--cmd", &echo()]);
    let logs = server.ok(&["logs", "gone"]);
    assert!(!logs.contains("first-life"), "the old service's lines are gone: {logs}");
    assert!(logs.contains("listening"), "{logs}");
}

#[tokio::test]
async fn validation_messages_name_typos_types_and_annotations() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("svc.yaml");
    let apply = |yaml: &str| {
        std::fs::write(&file, yaml).expect("write");
        server.cli(&["apply", "-f", &file.display().to_string(), "--no-wait"])
    };
    let typo = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  template:\n    spec:\n      contianers:\n        - command: [\"x\"]\n";
    let out = apply(typo);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("unknown field `contianers`; did you mean `containers`?"), "{err}");

    let wrong_type = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: typed\nspec:\n  template:\n    spec:\n      containerConcurrency: lots\n      containers:\n        - command: [\"x\"]\n";
    let out = apply(wrong_type);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("spec.template.spec.containerConcurrency"), "{err}");
    assert!(err.contains("expected a whole number"), "{err}");
    assert!(!err.contains("line") && !err.contains("column"), "{err}");

    let annotation = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: annotated\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/minscale: \"1\"\n    spec:\n      containers:\n        - command: [\"{}\"]\n",
        echo()
    );
    let out = apply(&annotation);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("did you mean `autoscaling.knative.dev/min-scale`?"), "{err}");
}

#[tokio::test]
async fn a_write_with_a_stale_resource_version_is_a_conflict() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "versioned", "--cmd", &echo()]);
    let url = format!("{}/api/v1/namespaces/default/services/versioned", server.api);
    let client = server.api_client();
    let read: Value =
        client.get(&url).bearer_auth(&server.token).send().await.expect("get").json().await.expect("json");
    let version = read["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_string();
    assert!(version.parse::<u64>().is_ok(), "{version}");

    let mut doc = read.clone();
    doc.as_object_mut().expect("object").remove("status");
    doc["spec"]["template"]["spec"]["containerConcurrency"] = serde_json::json!(3);
    let put = |body: Value| client.put(&url).bearer_auth(&server.token).json(&body).send();
    let answer = put(doc.clone()).await.expect("put");
    assert_eq!(answer.status(), 200, "the version read is the stored one");
    let written: Value = answer.json().await.expect("json");
    let newer = written["metadata"]["resourceVersion"].as_str().expect("version").to_string();
    assert!(newer.parse::<u64>().expect("number") > version.parse::<u64>().expect("number"));

    doc["spec"]["template"]["spec"]["containerConcurrency"] = serde_json::json!(4);
    let answer = put(doc.clone()).await.expect("put");
    assert_eq!(answer.status(), 409, "a stale resourceVersion");
    let error: Value = answer.json().await.expect("json");
    assert_eq!(error["error"]["reason"], "Conflict", "{error}");

    doc["metadata"].as_object_mut().expect("metadata").remove("resourceVersion");
    assert_eq!(put(doc).await.expect("put").status(), 200, "no resourceVersion overwrites");
    // The CLI's read-modify-write commands keep working.
    server.ok(&["traffic", "versioned", "--latest", "100"]);
}

/// Reads JSON lines from a watch until `until` holds for the events so far.
async fn watch_until(mut response: reqwest::Response, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    let mut pending = Vec::new();
    while !until(&events) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("a watch event in time")
            .expect("read")
            .expect("the watch goes on");
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).expect("a JSON line"));
        }
    }
    events
}

#[tokio::test]
async fn watch_streams_changes_in_order_and_resumes_from_a_version() {
    let server = Server::start(FAST_SCALING);
    let client = server.api_client();
    let watch = |query: String| {
        client
            .get(format!("{}/api/v1/namespaces/default/services?watch=true{query}", server.api))
            .bearer_auth(&server.token)
            .send()
    };
    let live = watch(String::new()).await.expect("watch");
    assert_eq!(live.status(), 200);
    server.ok(&["deploy", "watched", "--cmd", &echo()]);
    server.ok(&["delete", "watched"]);
    let of_watched = |events: &[Value]| -> Vec<Value> {
        events.iter().filter(|e| e["object"]["metadata"]["name"] == "watched").cloned().collect()
    };
    let events = watch_until(live, |events| of_watched(events).last().is_some_and(|e| e["type"] == "DELETED")).await;
    let events = of_watched(&events);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types.first(), Some(&"ADDED"), "{types:?}");
    assert!(types[1..types.len() - 1].iter().all(|t| *t == "MODIFIED") && types.len() >= 3, "{types:?}");
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["object"]["metadata"]["resourceVersion"].as_str().expect("version").parse().expect("number"))
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "in order: {versions:?}");

    // Resumed from the ADDED event's version: the rest again, in the same order.
    let resumed = watch(format!("&resourceVersion={}", versions[0])).await.expect("watch");
    let again = watch_until(resumed, |events| of_watched(events).last().is_some_and(|e| e["type"] == "DELETED")).await;
    let again = of_watched(&again);
    let again_types: Vec<&str> = again.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(again_types, types[1..].to_vec());

    // Secrets are not offered; a version that is not a number is refused.
    let secrets = client
        .get(format!("{}/api/v1/namespaces/default/secrets?watch=true", server.api))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("watch");
    assert_eq!(secrets.status(), 400);
    assert_eq!(watch("&resourceVersion=x".into()).await.expect("watch").status(), 400);
}

#[tokio::test]
async fn get_list_and_delete_take_every_kind_by_name_or_plural() {
    let server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    server.ok(&["trigger", "create", "t", "--broker", "default", "--sink", "http://127.0.0.1:1/"]);
    server.ok(&["source", "ping", "create", "p", "--schedule", "* * * * *", "--broker", "default"]);
    server.ok(&["configmap", "create", "settings", "--from-literal", "A=1"]);

    let trigger: Value = serde_json::from_str(&server.ok(&["get", "trigger", "t", "-o", "json"])).expect("json");
    assert_eq!(trigger["spec"]["broker"], "default");
    assert!(server.ok(&["get", "triggers", "t"]).contains("http://127.0.0.1:1/"));
    assert!(server.ok(&["list", "brokers"]).contains("/b/default/default"));
    assert!(server.ok(&["list", "pingsources", "-o", "yaml"]).contains("name: p"));
    assert!(server.ok(&["get", "cm", "settings"]).contains("settings"));
    server.ok(&["broker", "create", "other", "-n", "elsewhere"]);
    let everywhere = server.ok(&["list", "brokers", "-A"]);
    assert!(everywhere.contains("elsewhere") && everywhere.contains("/b/default/default"), "{everywhere}");

    server.ok(&["delete", "pingsource", "p"]);
    assert!(!server.ok(&["list", "pingsources"]).contains(" p "));
    server.ok(&["delete", "trigger", "t"]);
    let err = server.fails(&["get", "trigger", "t"]);
    assert!(err.contains("not found"), "{err}");
    let err = server.fails(&["get", "gadget", "x"]);
    assert!(err.contains("unknown kind") && err.contains("pingsource"), "{err}");
    let err = server.fails(&["delete", "revision", "x-00001"]);
    assert!(err.contains("delete the service"), "{err}");
}
