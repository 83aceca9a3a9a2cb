//! End-to-end tests of ApiServerSource with the real binary: changes of serval's own
//! resources (selected by kind and labels) and the instance lifecycle of real processes
//! arrive at a sink as Knative's `dev.knative.apiserver.*` and serval's
//! `dev.serval.instance.*` events; a restart after `kill -9` sends nothing again that was
//! delivered.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Received, Server, Subscriber, echo, eventually};

fn apply(server: &Server, file: &str, text: &str) {
    let path = server.dir.join(file);
    std::fs::write(&path, text).expect("write manifest");
    server.ok(&["apply", "-f", &path.display().to_string()]);
}

fn ping(name: &str, team: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata:\n  name: {name}\n  labels:\n    team: {team}\n\
         spec:\n  schedule: '0 0 1 1 *'\n  data: '{{}}'\n  sink:\n    uri: http://127.0.0.1:9/\n"
    )
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).map(String::as_str).unwrap_or_default()
}

/// (type, subject) of each received event.
fn seen(sink: &Subscriber) -> Vec<(String, String)> {
    sink.received().iter().map(|r| (header(r, "ce-type").to_string(), header(r, "ce-subject").to_string())).collect()
}

async fn wait_for(sink: &Subscriber, event_type: &str, subject_part: &str) -> Received {
    let what = format!("{event_type} about {subject_part}");
    eventually(&what, Duration::from_secs(30), async || {
        sink.received()
            .into_iter()
            .find(|r| header(r, "ce-type") == event_type && header(r, "ce-subject").contains(subject_part))
    })
    .await
}

#[tokio::test]
async fn resource_changes_of_selected_objects_become_reference_events() {
    let mut server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply(
        &server,
        "watch.yaml",
        &format!(
            "apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata:\n  name: audit\nspec:\n  \
             mode: Reference\n  resources:\n  - apiVersion: sources.knative.dev/v1\n    kind: PingSource\n    \
             selector:\n      matchLabels:\n        team: shop\n  sink:\n    uri: {}\n",
            sink.url
        ),
    );
    apply(&server, "a.yaml", &ping("cart", "shop"));
    apply(&server, "b.yaml", &ping("other", "ops"));
    let added = wait_for(&sink, "dev.knative.apiserver.ref.add", "/pingsources/cart").await;
    assert_eq!(header(&added, "ce-subject"), "/apis/sources.knative.dev/v1/namespaces/default/pingsources/cart");
    assert_eq!(header(&added, "ce-source"), server.api.trim_end_matches('/'));
    assert_eq!(header(&added, "ce-kind"), "PingSource");
    let data: Value = serde_json::from_slice(&added.body).expect("json data");
    assert_eq!(data["kind"], "PingSource");
    assert_eq!(data["name"], "cart");
    assert_eq!(data["namespace"], "default");

    // An update and a delete of the selected object; the other one is never sent.
    let updated = ping("cart", "shop").replace("'{}'", "'{\"v\": 2}'");
    apply(&server, "a.yaml", &updated);
    wait_for(&sink, "dev.knative.apiserver.ref.update", "/pingsources/cart").await;
    server.ok(&["delete", "pingsource", "cart"]);
    wait_for(&sink, "dev.knative.apiserver.ref.delete", "/pingsources/cart").await;
    assert!(!seen(&sink).iter().any(|(_, subject)| subject.contains("/other")), "{:?}", seen(&sink));
    let source = server.get_json(&["apiserversource", "audit"]);
    assert_eq!(source["status"]["conditions"][0]["status"], "True", "{source:#}");

    // After a kill -9 and a restart, what was delivered before is not sent again (the
    // restart lists the kinds and sends only objects newer than its stored version), and
    // new changes flow.
    let before = sink.received().len();
    server.kill9();
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    apply(&restarted, "c.yaml", &ping("checkout", "shop"));
    wait_for(&sink, "dev.knative.apiserver.ref.add", "/pingsources/checkout").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<(String, String)> = seen(&sink).into_iter().skip(before).collect();
    assert_eq!(
        after,
        [(
            "dev.knative.apiserver.ref.add".to_string(),
            "/apis/sources.knative.dev/v1/namespaces/default/pingsources/checkout".to_string()
        )],
        "only the new object after the restart"
    );

    // A source deleted and made again starts afresh: its position went with it.
    restarted.ok(&["delete", "apiserversource", "audit"]);
    let before = sink.received().len();
    apply(&restarted, "watch.yaml", &std::fs::read_to_string(restarted.dir.join("watch.yaml")).expect("read"));
    eventually("the existing object sent again", Duration::from_secs(20), async || {
        let again = seen(&sink).into_iter().skip(before).any(|(t, s)| t.ends_with(".add") && s.ends_with("/checkout"));
        again.then_some(())
    })
    .await;
}

#[tokio::test]
async fn instance_lifecycle_and_objects_in_resource_mode() {
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply(
        &server,
        "watch.yaml",
        &format!(
            "apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata:\n  name: platform\nspec:\n  \
             mode: Resource\n  resources:\n  - apiVersion: v1\n    kind: Event\n  - apiVersion: serving.knative.dev/v1\n    \
             kind: Service\n  sink:\n    uri: {}\n  ceOverrides:\n    extensions:\n      team: platform\n",
            sink.url
        ),
    );
    server.ok(&["deploy", "hello", "--cmd", &echo()]);
    let started = wait_for(&sink, "dev.serval.instance.started", "hello-00001").await;
    let data: Value = serde_json::from_slice(&started.body).expect("json");
    assert_eq!(data["service"], "hello");
    assert_eq!(data["revision"], "hello-00001");
    assert_eq!(header(&started, "ce-team"), "platform", "ceOverrides apply");
    let ready = wait_for(&sink, "dev.serval.instance.ready", "hello-00001").await;
    let data: Value = serde_json::from_slice(&ready.body).expect("json");
    assert!(data["startupMs"].as_f64().is_some_and(|ms| ms > 0.0), "{data}");
    // Resource mode carries the object.
    let added = wait_for(&sink, "dev.knative.apiserver.resource.add", "/services/hello").await;
    let object: Value = serde_json::from_slice(&added.body).expect("json");
    assert_eq!(object["kind"], "Service");
    assert_eq!(object["metadata"]["name"], "hello");

    // An instance that dies on its own is a crash with its exit code.
    let crashing = "python3 -c \"import os,socket,time; s=socket.socket(); \
                    s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(1); os._exit(3)\"";
    server.ok(&["deploy", "crashy", "--cmd", crashing, "--min-scale", "1"]);
    let crashed = wait_for(&sink, "dev.serval.instance.crashed", "crashy-00001").await;
    let data: Value = serde_json::from_slice(&crashed.body).expect("json");
    assert_eq!(data["exitCode"], 3, "{data}");

    // Deleting a service stops its instances.
    server.ok(&["delete", "service", "hello"]);
    let stopped = wait_for(&sink, "dev.serval.instance.stopped", "hello-00001").await;
    let data: Value = serde_json::from_slice(&stopped.body).expect("json");
    assert!(data["exit"].as_str().is_some(), "{data}");
    wait_for(&sink, "dev.knative.apiserver.resource.delete", "/services/hello").await;
}

#[tokio::test]
async fn unknown_kinds_and_modes_are_refused_naming_the_field() {
    let server = Server::start(&[]);
    let path = server.dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata:\n  name: bad\nspec:\n  mode: Everything\n  \
         resources:\n  - apiVersion: v1\n    kind: Secret\n  sink:\n    uri: http://127.0.0.1:9/\n",
    )
    .expect("write");
    let err = server.fails(&["apply", "-f", &path.display().to_string()]);
    assert!(err.contains("spec.mode"), "{err}");
    assert!(err.contains("spec.resources[0].kind"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
