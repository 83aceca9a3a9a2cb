//! The controller and reconcilers in process: the real platform (API, controller, runners,
//! autoscaler, gateway) on the in-memory store with the fake runtime. No binary, no child
//! process, no sleeps: every wait is on a watch or on the runtime's counts.

use std::time::Duration;

use serde_json::{Value, json};
use serval_testkit::{EXITS_BEFORE_READY, FakeRuntime, InProcess, MISSING_PROGRAM};

fn service(name: &str, program: &str, env: &str) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "template": { "spec": { "containers": [{
            "command": [program], "env": [{ "name": "VERSION", "value": env }]
        }] } } }
    })
}

fn ready(object: &Value) -> Option<&str> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["status"].as_str()
}

fn reason(object: &Value) -> &str {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
}

/// Ready for its latest generation, serving `revision`.
fn serving(revision: &'static str) -> impl Fn(&Value) -> bool {
    move |s| ready(s) == Some("True") && s["status"]["latestReadyRevisionName"] == revision
}

#[tokio::test]
async fn a_service_is_created_updated_rolled_out_and_deleted() {
    let platform = InProcess::start().await;
    let (status, _) = platform.put("services", &service("web", "app", "1")).await;
    assert_eq!(status, 201);
    platform.wait_for("services", "default", "web", serving("web-00001")).await;
    let (status, body) = platform.call("default", "web", "/").await;
    assert_eq!((status, body.split(' ').next()), (200, Some("web-00001")), "{body}");

    // A new template: a new revision, verified by one instance, then all traffic.
    let (status, _) = platform.put("services", &service("web", "app", "2")).await;
    assert_eq!(status, 200);
    let web = platform.wait_for("services", "default", "web", serving("web-00002")).await;
    assert_eq!(web["metadata"]["generation"], 2);
    assert_eq!(web["status"]["traffic"][0]["revisionName"], "web-00002", "{web:#}");
    assert!(platform.call("default", "web", "/").await.1.starts_with("web-00002 "));
    let (_, revisions) = platform.get("/api/v1/namespaces/default/revisions?service=web").await;
    assert_eq!(revisions["items"].as_array().map(Vec::len), Some(2));

    // The old revision is retired: its instances stop.
    let retired = platform.runtime.wait_for("web-00001", Duration::from_secs(20), |c| c.running == 0).await;
    assert!(retired.is_ok(), "web-00001 still runs: {retired:?}");

    let (status, _) = platform.delete("services", "default", "web").await;
    assert_eq!(status, 200);
    assert_eq!(platform.get("/api/v1/namespaces/default/services/web").await.0, 404);
    assert_eq!(platform.get("/api/v1/namespaces/default/revisions/web-00002").await.0, 404);
    let stopped = platform.runtime.wait_for("web-00002", Duration::from_secs(20), |c| c.running == 0).await;
    assert!(stopped.is_ok(), "web-00002 still runs after the delete: {stopped:?}");
    assert_eq!(platform.call("default", "web", "/").await.0, 404);
}

#[tokio::test]
async fn a_revision_that_fails_its_first_start_never_takes_traffic() {
    let platform = InProcess::start().await;
    platform.put("services", &service("gate", "app", "1")).await;
    platform.wait_for("services", "default", "gate", serving("gate-00001")).await;

    platform.put("services", &service("gate", EXITS_BEFORE_READY, "2")).await;
    let failed = platform.wait_for("revisions", "default", "gate-00002", |r| ready(r) == Some("False")).await;
    assert_eq!(reason(&failed), "ExitCode", "{failed:#}");
    let gate = platform.wait_for("services", "default", "gate", |s| ready(s) == Some("False")).await;
    assert_eq!(gate["status"]["latestReadyRevisionName"], "gate-00001", "{gate:#}");
    assert_eq!(gate["status"]["latestCreatedRevisionName"], "gate-00002");
    let (status, body) = platform.call("default", "gate", "/").await;
    assert_eq!((status, body.split(' ').next()), (200, Some("gate-00001")), "the old revision keeps serving");

    // A program the runtime cannot find fails before any start.
    platform.put("services", &service("gate", MISSING_PROGRAM, "3")).await;
    let missing = platform.wait_for("revisions", "default", "gate-00003", |r| ready(r) == Some("False")).await;
    assert_eq!(reason(&missing), "ExecutableNotFound", "{missing:#}");
    assert_eq!(platform.runtime.counts("gate-00003").started, 0);
}

#[tokio::test]
async fn traffic_is_split_pinned_and_switched_by_the_service_spec() {
    let platform = InProcess::start().await;
    platform.put("services", &service("split", "app", "1")).await;
    platform.wait_for("services", "default", "split", serving("split-00001")).await;
    platform.put("services", &service("split", "app", "2")).await;
    platform.wait_for("services", "default", "split", serving("split-00002")).await;

    // Pin all traffic to the first revision, and tag the latest.
    let mut pinned = service("split", "app", "2");
    pinned["spec"]["traffic"] = json!([
        { "revisionName": "split-00001", "percent": 100 },
        { "latestRevision": true, "percent": 0, "tag": "next" }
    ]);
    assert_eq!(platform.put("services", &pinned).await.0, 200);
    platform
        .wait_for("services", "default", "split", |s| s["status"]["traffic"][0]["revisionName"] == "split-00001")
        .await;
    for _ in 0..5 {
        assert!(platform.call("default", "split", "/").await.1.starts_with("split-00001 "));
    }

    // Switch back to the latest revision.
    assert_eq!(platform.put("services", &service("split", "app", "2")).await.0, 200);
    platform
        .wait_for("services", "default", "split", |s| {
            s["status"]["traffic"].as_array().is_some_and(|t| t.len() == 1 && t[0]["revisionName"] == "split-00002")
        })
        .await;
    assert!(platform.call("default", "split", "/").await.1.starts_with("split-00002 "));
}

#[tokio::test]
async fn eventing_and_configuration_kinds_are_created_updated_and_deleted() {
    let platform = InProcess::start().await;
    let broker = json!({ "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": { "name": "b", "namespace": "default" } });
    let trigger = json!({ "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": { "name": "t", "namespace": "default" },
        "spec": { "broker": "b", "subscriber": { "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sink" } } } });
    let source = json!({ "apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
        "metadata": { "name": "p", "namespace": "default" },
        "spec": { "schedule": "*/5 * * * *", "sink": { "ref": { "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b" } } } });
    let config_map = json!({ "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "c", "namespace": "default" }, "data": { "k": "v" } });

    // A trigger before its subscriber exists is not ready; the subscriber's creation fixes it.
    for (plural, document) in
        [("brokers", &broker), ("triggers", &trigger), ("pingsources", &source), ("configmaps", &config_map)]
    {
        let (status, body) = platform.put(plural, document).await;
        assert_eq!(status, 201, "{plural}: {body}");
    }
    let t = platform.wait_for("triggers", "default", "t", |t| ready(t) == Some("False")).await;
    assert_eq!(reason(&t), "SubscriberNotFound", "{t:#}");
    platform.put("services", &service("sink", "app", "1")).await;
    platform.wait_for("triggers", "default", "t", |t| ready(t) == Some("True")).await;
    let p = platform.wait_for("pingsources", "default", "p", |p| ready(p) == Some("True")).await;
    assert!(p["status"]["subscriberUri"].as_str().is_some_and(|u| u.ends_with("/b/default/b")), "{p:#}");
    let b = platform.wait_for("brokers", "default", "b", |b| ready(b) == Some("True")).await;
    assert!(b["status"]["address"]["url"].as_str().is_some_and(|u| u.ends_with("/b/default/b")), "{b:#}");

    // Updates keep identity and bump the generation when the spec changes; a stale
    // resourceVersion is a conflict.
    let mut changed = trigger.clone();
    changed["spec"]["filter"] = json!({ "attributes": { "type": "x" } });
    let (status, updated) = platform.put("triggers", &changed).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["metadata"]["generation"].as_u64(), updated["metadata"]["uid"] == t["metadata"]["uid"]),
        (Some(2), true)
    );
    changed["metadata"]["resourceVersion"] = t["metadata"]["resourceVersion"].clone();
    assert_eq!(platform.put("triggers", &changed).await.0, 409);

    // Deleting the broker makes the source's sink missing; deletes are 404 afterwards.
    assert_eq!(platform.delete("brokers", "default", "b").await.0, 200);
    let p = platform.wait_for("pingsources", "default", "p", |p| ready(p) == Some("False")).await;
    assert_eq!(reason(&p), "SinkNotFound", "{p:#}");
    for (plural, name) in [("triggers", "t"), ("pingsources", "p"), ("configmaps", "c")] {
        assert_eq!(platform.delete(plural, "default", name).await.0, 200, "{plural}");
        assert_eq!(platform.delete(plural, "default", name).await.0, 404, "{plural} again");
    }
    assert_eq!(platform.get("/api/v1/namespaces/default/revisions/x").await.0, 404);
}

/// Instances with no socket: a client's request over HTTP/1.1 (the relay hands it to the
/// hyper path) and a trigger's delivery (in process from the dispatcher, no socket at all)
/// both reach the instance's handler through the revision's pool.
#[tokio::test]
async fn instances_served_in_process_take_requests_and_events() {
    let platform = InProcess::start_on(FakeRuntime::in_process(), |_| {}, Default::default()).await;
    platform.put("services", &service("inproc", "app", "1")).await;
    platform.wait_for("services", "default", "inproc", serving("inproc-00001")).await;
    let (status, body) = platform.call("default", "inproc", "/hello?x=1").await;
    assert_eq!((status, body.split(' ').next()), (200, Some("inproc-00001")), "{body}");
    let seen = platform.runtime.seen("inproc-00001");
    let last = seen.last().expect("the instance saw the request");
    assert_eq!((last.method.as_str(), last.path.as_str()), ("GET", "/hello?x=1"));
    assert_eq!(last.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()), Some("127.0.0.1"));

    let broker = json!({ "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": { "name": "events", "namespace": "default" } });
    let trigger = json!({ "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": { "name": "to-inproc", "namespace": "default" },
        "spec": { "broker": "events", "subscriber": { "ref": {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "inproc" }, "uri": "/events" } } });
    platform.put("brokers", &broker).await;
    platform.put("triggers", &trigger).await;
    platform.wait_for("triggers", "default", "to-inproc", |t| ready(t) == Some("True")).await;
    let before = platform.runtime.seen("inproc-00001").len();
    let sent = reqwest::Client::new()
        .post(format!("{}/b/default/events", platform.gateway))
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-1")
        .header("ce-source", "/test")
        .header("ce-type", "demo.inproc")
        .header("content-type", "text/plain")
        .body("payload")
        .send()
        .await
        .expect("POST to the broker");
    assert_eq!(sent.status().as_u16(), 202);
    let seen = platform.runtime.wait_for_requests("inproc-00001", Duration::from_secs(20), before + 1).await;
    let seen = seen.unwrap_or_else(|seen| panic!("the event was not delivered; seen: {seen:?}"));
    let delivered = &seen[before];
    assert_eq!((delivered.method.as_str(), delivered.path.as_str()), ("POST", "/events"));
    assert_eq!(delivered.headers.get("ce-id").and_then(|v| v.to_str().ok()), Some("e-1"));
    assert_eq!(&delivered.body[..], b"payload");
}

fn sequence(steps: &[&str]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": s } }))
        .collect();
    json!({ "apiVersion": "flows.knative.dev/v1", "kind": "Sequence",
        "metadata": { "name": "seq", "namespace": "default" }, "spec": { "steps": steps } })
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_sequence_owns_its_parts_is_ready_with_its_steps_and_delivers_to_the_first() {
    // Instances in process record what they are sent.
    let platform = InProcess::start_on(FakeRuntime::in_process(), |_| {}, Default::default()).await;
    let (status, body) = platform.put("sequences", &sequence(&["first", "second"])).await;
    assert_eq!(status, 201, "{body}");
    let seq = platform.wait_for("sequences", "default", "seq", |s| ready(s) == Some("False")).await;
    assert_eq!(reason(&seq), "DestinationNotReady", "{seq:#}");
    let message = seq["status"]["conditions"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("spec.steps[0]: Service default/first does not exist"), "{seq:#}");
    let (_, subscriptions) = platform.get("/api/v1/namespaces/default/subscriptions").await;
    assert_eq!(names(&subscriptions), ["seq-kn-sequence-0", "seq-kn-sequence-1"]);

    // The steps appear: the Sequence and its subscriptions become ready by themselves.
    platform.put("services", &service("first", "app", "1")).await;
    platform.put("services", &service("second", "app", "1")).await;
    platform.wait_for("sequences", "default", "seq", |s| ready(s) == Some("True")).await;
    platform.wait_for("subscriptions", "default", "seq-kn-sequence-1", |s| ready(s) == Some("True")).await;

    // An event at its address reaches the first step through the data plane in process.
    let url = format!("{}/c/default/seq-kn-sequence-0", platform.gateway);
    let accepted = reqwest::Client::new()
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "in-process-1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(accepted.status().as_u16(), 202);
    let seen = platform.runtime.wait_for_requests("first-00001", Duration::from_secs(20), 1).await;
    let seen = seen.expect("the first step got the event");
    let delivery = seen.iter().find(|r| r.method == "POST").expect("the delivery");
    assert_eq!(delivery.headers.get("ce-id").and_then(|v| v.to_str().ok()), Some("in-process-1"));
    assert_eq!(delivery.headers.get("prefer").and_then(|v| v.to_str().ok()), Some("reply"));

    // One step fewer drops its parts; deleting the Sequence removes the rest.
    let (status, _) = platform.put("sequences", &sequence(&["first"])).await;
    assert_eq!(status, 200);
    let (_, channels) = platform.get("/api/v1/namespaces/default/inmemorychannels").await;
    assert_eq!(names(&channels), ["seq-kn-sequence-0"]);
    let (status, _) = platform.delete("sequences", "default", "seq").await;
    assert_eq!(status, 200);
    let (_, subscriptions) = platform.get("/api/v1/namespaces/default/subscriptions").await;
    assert!(names(&subscriptions).is_empty(), "{subscriptions:#}");
}
