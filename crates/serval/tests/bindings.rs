//! End-to-end tests of SinkBinding and ContainerSource with the real binary and real
//! processes: Knative's SinkBinding sample binds the serval Services its selector picks
//! (`K_SINK`, `K_CE_OVERRIDES`, a new revision when the binding changes); a ContainerSource
//! runs a real program that posts events to its `K_SINK`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, Subscriber, echo, eventually, knative_docs};

fn apply(server: &Server, file: &str, text: &str) -> String {
    let path = server.dir.join(file);
    std::fs::write(&path, text).expect("write manifest");
    let out = server.cli(&["apply", "-f", &path.display().to_string()]);
    assert!(out.status.success(), "apply {file}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A Service running the echo example (which answers with its environment), labelled.
fn labelled_echo(name: &str, app: &str) -> String {
    let command: Vec<String> = shell_words::split(&echo()).expect("words");
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n    app: {app}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - command: {}\n",
        serde_json::to_string(&command).expect("json")
    )
}

/// The environment of `service`'s latest revision, as its instance sees it.
fn environment(server: &Server, service: &str) -> Value {
    let body: Value = serde_json::from_str(&server.ok(&["invoke", service])).expect("json");
    body["env"].clone()
}

fn latest(server: &Server, service: &str) -> String {
    let s = server.get_json(&["service", service]);
    s["status"]["latestCreatedRevisionName"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_sinkbinding_sample_binds_services_by_label_and_rolls_out_on_change() {
    let server = Server::start(&[]);
    apply(&server, "node-server.yaml", &labelled_echo("node-server", "node-server"));
    apply(&server, "other.yaml", &labelled_echo("other", "other"));
    assert_eq!(latest(&server, "node-server"), "node-server-00001");
    assert!(environment(&server, "node-server").get("K_SINK").is_none());
    server.ok(&["broker", "create", "bookstore-broker"]);

    // Knative's sample: a Deployment selected by `app: node-server`, sink a Broker.
    let sample = match knative_docs() {
        Some(docs) => std::fs::read_to_string(
            docs.join("code-samples/eventing/bookstore-sample-app/solution/node-server/config/300-sinkbinding.yaml"),
        )
        .expect("read the sample"),
        None => return,
    };
    let warnings = apply(&server, "sinkbinding.yaml", &sample);
    assert!(
        warnings.contains("spec.subject: apps/v1 Deployment is taken as the serval Services with those labels"),
        "{warnings}"
    );
    let broker = format!("{}/b/default/bookstore-broker", server.gateway);
    let env = eventually("K_SINK in node-server", Duration::from_secs(20), async || {
        let env = environment(&server, "node-server");
        (env["K_SINK"] == broker).then_some(env)
    })
    .await;
    assert!(env.get("K_CE_OVERRIDES").is_none(), "{env}");
    assert_eq!(latest(&server, "node-server"), "node-server-00002", "a new revision carries the binding");
    assert!(environment(&server, "other").get("K_SINK").is_none(), "not selected");
    let binding = server.get_json(&["sinkbinding", "node-sinkbinding"]);
    assert_eq!(binding["status"]["sinkUri"], broker, "{binding:#}");
    assert_eq!(binding["status"]["conditions"][0]["status"], "True", "{binding:#}");

    // A new sink and overrides: another revision with them.
    let changed = sample
        .replace("name: bookstore-broker", "name: other-broker")
        .replace("  sink: #", "  ceOverrides:\n    extensions:\n      team: books\n  sink: #");
    server.ok(&["broker", "create", "other-broker"]);
    apply(&server, "sinkbinding.yaml", &changed);
    let env = eventually("the new K_SINK", Duration::from_secs(20), async || {
        let env = environment(&server, "node-server");
        env["K_SINK"].as_str().is_some_and(|s| s.ends_with("/b/default/other-broker")).then_some(env)
    })
    .await;
    let overrides: Value = serde_json::from_str(env["K_CE_OVERRIDES"].as_str().expect("overrides")).expect("json");
    assert_eq!(overrides, serde_json::json!({"extensions": {"team": "books"}}));
    assert_eq!(latest(&server, "node-server"), "node-server-00003");

    // Re-applying the Service as written keeps its revision (the binding is stamped again).
    apply(&server, "node-server.yaml", &labelled_echo("node-server", "node-server"));
    assert_eq!(latest(&server, "node-server"), "node-server-00003");

    // Deleting the binding unbinds.
    server.ok(&["delete", "sinkbinding", "node-sinkbinding"]);
    eventually("K_SINK gone", Duration::from_secs(20), async || {
        environment(&server, "node-server").get("K_SINK").is_none().then_some(())
    })
    .await;
    assert_eq!(latest(&server, "node-server"), "node-server-00004");
}

/// A heartbeat: posts a CloudEvent to `$K_SINK` every 100 ms with `$K_CE_OVERRIDES`'
/// extensions (what Knative's heartbeats sample does).
const HEARTBEAT: &str = r#"
import json, os, time, urllib.request
sink = os.environ["K_SINK"]
overrides = json.loads(os.environ.get("K_CE_OVERRIDES", "{}")).get("extensions", {})
n = 0
while True:
    n += 1
    headers = {"ce-specversion": "1.0", "ce-id": str(n), "ce-source": "heartbeat",
               "ce-type": "dev.example.heartbeat", "content-type": "application/json"}
    headers.update({"ce-" + k: v for k, v in overrides.items()})
    try:
        urllib.request.urlopen(urllib.request.Request(sink, data=json.dumps({"n": n}).encode(), headers=headers), timeout=5)
    except Exception as e:
        print("post failed:", e, flush=True)
    time.sleep(0.1)
"#;

#[tokio::test]
async fn a_container_source_runs_its_program_with_k_sink_and_goes_with_its_source() {
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    let script = server.dir.join("heartbeat.py");
    std::fs::write(&script, HEARTBEAT).expect("write script");
    let manifest = format!(
        "apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata:\n  name: heartbeat\nspec:\n  template:\n    \
         spec:\n      containers:\n      - name: heartbeat\n        command: [python3, {}]\n  ceOverrides:\n    \
         extensions:\n      team: ops\n  sink:\n    uri: {}\n",
        script.display(),
        sink.url
    );
    apply(&server, "source.yaml", &manifest);
    let got = eventually("heartbeats", Duration::from_secs(30), async || {
        let received = sink.received();
        (received.len() >= 3).then_some(received)
    })
    .await;
    assert_eq!(got[0].headers.get("ce-type").map(String::as_str), Some("dev.example.heartbeat"));
    assert_eq!(got[0].headers.get("ce-team").map(String::as_str), Some("ops"), "K_CE_OVERRIDES reached the program");

    let source = eventually("the source ready", Duration::from_secs(20), async || {
        let s = server.get_json(&["containersource", "heartbeat"]);
        (s["status"]["conditions"][0]["status"] == "True").then_some(s)
    })
    .await;
    assert_eq!(source["status"]["sinkUri"], sink.url.as_str(), "{source:#}");
    let service = server.get_json(&["service", "heartbeat-deployment"]);
    assert_eq!(service["metadata"]["ownerReferences"][0]["kind"], "ContainerSource", "{service:#}");
    let binding = server.get_json(&["sinkbinding", "heartbeat-sinkbinding"]);
    assert_eq!(binding["spec"]["subject"]["name"], "heartbeat-deployment", "{binding:#}");

    // Another name's Service cannot be taken over.
    let taken = format!(
        "apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata:\n  name: other\nspec:\n  template:\n    \
         spec:\n      containers:\n      - command: [python3, {}]\n  sink:\n    uri: {}\n",
        script.display(),
        sink.url
    );
    server.ok(&["deploy", "other-deployment", "--cmd", &echo()]);
    let path = server.dir.join("taken.yaml");
    std::fs::write(&path, taken).expect("write");
    let err = server.fails(&["apply", "-f", &path.display().to_string()]);
    assert!(err.contains("service default/other-deployment exists and is not owned by containersource other"), "{err}");

    // Deleting the source stops its program and removes its parts.
    server.ok(&["delete", "containersource", "heartbeat"]);
    assert!(!server.cli(&["get", "service", "heartbeat-deployment"]).status.success());
    assert!(!server.cli(&["get", "sinkbinding", "heartbeat-sinkbinding"]).status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = sink.received().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.received().len(), settled, "no heartbeat after the source was deleted");
}
