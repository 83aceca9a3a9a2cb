//! The Knative documentation's eventing-flow samples, applied unchanged with `serval apply
//! -f … --image-map IMAGE=CMD`, end to end: the images (which cannot be pulled here) are
//! mapped to `examples/knative-samples/stand-in.js`, this project's stand-in for them, run
//! by Node.js as host processes.
//!
//! The samples are read from `../shared/conformance/knative-docs/`; under
//! `SERVAL_REQUIRE_CONFORMANCE=1` a missing copy (or a missing `node`) is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, eventually, knative_docs};

const APPENDER: &str = "gcr.io/knative-releases/knative.dev/eventing/cmd/appender";
const EVENT_DISPLAY: &str = "gcr.io/knative-releases/knative.dev/eventing/cmd/event_display";
const FILTER: &str = "villardl/filter-nodejs:0.1";
const TRANSFORMER: &str = "villardl/transformer-nodejs:0.1";
const SWITCHER: &str = "villardl/switcher-nodejs:0.1";

fn stand_in() -> PathBuf {
    support::crate_dir().join("../../examples/knative-samples/stand-in.js")
}

/// The samples' directory and whether `node` runs, or `None` (a skip) when either is missing.
fn samples() -> Option<PathBuf> {
    let docs = knative_docs()?;
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node {
        let required = std::env::var("SERVAL_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1");
        assert!(!required, "SERVAL_REQUIRE_CONFORMANCE=1 but node (which runs the sample stand-ins) is missing");
        support::skip("node is not installed");
        return None;
    }
    Some(docs)
}

/// `--image-map IMAGE=node stand-in.js MODE` for each (image, mode).
fn image_maps(maps: &[(&str, &str)]) -> Vec<String> {
    let script = stand_in().display().to_string();
    maps.iter().flat_map(|(image, mode)| ["--image-map".to_string(), format!("{image}=node {script} {mode}")]).collect()
}

/// Applies sample files in order with the image maps; stderr (the warnings).
fn apply(server: &Server, dir: &Path, files: &[&str], maps: &[(&str, &str)]) -> String {
    let mut stderr = String::new();
    for file in files {
        let path = dir.join(file).display().to_string();
        let mut args = vec!["apply".to_string(), "-f".to_string(), path];
        args.extend(image_maps(maps));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = server.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "apply {file}: {err}");
        stderr.push_str(&err);
    }
    stderr
}

/// POSTs one binary-mode JSON event.
async fn send(url: &str, id: &str, event_type: &str, time: &str, data: &str) {
    let status = reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", event_type)
        .header("ce-source", "/knative-samples-test")
        .header("ce-time", time)
        .header("content-type", "application/json")
        .body(data.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 202, "{url}");
}

/// The blocks event-display printed (one per event) of service `name`.
fn displayed(server: &Server, namespace: &str, name: &str) -> Vec<String> {
    let out = server.cli(&["logs", name, "-n", namespace]);
    String::from_utf8_lossy(&out.stdout).split("cloudevents.Event").skip(1).map(str::to_string).collect()
}

/// Waits for the event `id` in service `name`'s display; its block.
async fn displayed_event(server: &Server, namespace: &str, name: &str, id: &str) -> String {
    let marker = format!("id: {id}\n");
    eventually(&format!("event {id} at {name}"), Duration::from_secs(30), async || {
        displayed(server, namespace, name).into_iter().find(|b| b.contains(&marker))
    })
    .await
}

fn address(server: &Server, kind: &str, name: &str) -> String {
    let object = server.get_json(&[kind, name]);
    object["status"]["address"]["url"].as_str().expect("an address").to_string()
}

#[tokio::test]
async fn sequence_sample_appends_in_every_step_and_replies_to_a_service() {
    let Some(docs) = samples() else { return };
    let dir = docs.join("docs/versioned/eventing/flows/sequence/sequence-reply-to-event-display");
    let server = Server::start(&[]);
    let maps = [(APPENDER, "appender"), (EVENT_DISPLAY, "event-display")];
    apply(&server, &dir, &["steps.yaml", "event-display.yaml", "sequence.yaml", "ping-source.yaml"], &maps);
    let url = address(&server, "sequence", "sequence");
    assert_eq!(url, format!("{}/c/default/sequence-kn-sequence-0", server.gateway));
    let sequence = server.get_json(&["sequence", "sequence"]);
    assert_eq!(sequence["status"]["conditions"][0]["status"], "True", "{sequence:#}");
    let source = server.get_json(&["pingsource", "ping-source"]);
    assert_eq!(source["status"]["subscriberUri"], url.as_str(), "the PingSource's sink is the Sequence");

    send(&url, "seq-1", "samples.http.ping", "2026-12-01T00:00:00Z", r#"{"message": "Hello world!"}"#).await;
    let block = displayed_event(&server, "default", "event-display", "seq-1").await;
    assert!(block.contains("type: samples.http.mod3"), "{block}");
    assert!(block.contains(r#""message": "Hello world! - Handled by 0 - Handled by 1 - Handled by 2""#), "{block}");
}

#[tokio::test]
async fn sequence_sample_replies_into_a_broker_whose_trigger_displays_it() {
    let Some(docs) = samples() else { return };
    let dir = docs.join("docs/versioned/eventing/flows/sequence/sequence-with-broker-trigger");
    let server = Server::start(&[]);
    // Knative's samples expect the namespace's `default` broker.
    server.ok(&["broker", "create", "default"]);
    let maps = [(APPENDER, "appender"), (EVENT_DISPLAY, "event-display")];
    let files = ["steps.yaml", "sequence.yaml", "trigger.yaml", "display-trigger.yaml", "ping-source.yaml"];
    apply(&server, &dir, &files, &maps);
    let trigger = server.get_json(&["trigger", "sequence-trigger"]);
    assert_eq!(trigger["status"]["conditions"][0]["status"], "True", "{trigger:#}");
    let broker = address(&server, "broker", "default");

    // What the PingSource sends, sent now: broker → trigger → Sequence → broker → trigger.
    send(&broker, "loop-1", "dev.knative.sources.ping", "2026-12-01T00:00:00Z", r#"{"message": "Hello world!"}"#).await;
    let block = displayed_event(&server, "default", "sequence-display", "loop-1").await;
    assert!(block.contains("type: samples.http.mod3"), "{block}");
    assert!(block.contains("Hello world! - Handled by 0 - Handled by 1 - Handled by 2"), "{block}");
    assert!(block.contains("knativebrokerttl"), "the reply re-entered the broker: {block}");
}

/// Sends an event at an even and at an odd minute to a Parallel's address; the blocks each
/// reached `display` as.
async fn even_and_odd(server: &Server, parallel: &str, display: &str) -> (String, String) {
    let url = address(server, "parallel", parallel);
    let data = r#"{"message": "Even or odd?"}"#;
    send(&url, "even-1", "dev.knative.sources.ping", "2026-12-01T10:00:00Z", data).await;
    send(&url, "odd-1", "dev.knative.sources.ping", "2026-12-01T10:01:00Z", data).await;
    let even = displayed_event(server, "default", display, "even-1").await;
    let odd = displayed_event(server, "default", display, "odd-1").await;
    (even, odd)
}

#[tokio::test]
async fn parallel_sample_filters_by_ref_and_both_branches_reply() {
    let Some(docs) = samples() else { return };
    let dir = docs.join("code-samples/eventing/parallel/multiple-branches");
    let server = Server::start(&[]);
    let maps = [(FILTER, "filter"), (TRANSFORMER, "transformer"), (EVENT_DISPLAY, "event-display")];
    let files = ["filters.yaml", "transformers.yaml", "event-display.yaml", "parallel.yaml", "ping-source.yaml"];
    apply(&server, &dir, &files, &maps);
    let (even, odd) = even_and_odd(&server, "odd-even-parallel", "event-display").await;
    assert!(even.contains("we are even!"), "{even}");
    assert!(odd.contains("this is odd!"), "{odd}");
    // Each event went down its matching branch only.
    let blocks = displayed(&server, "default", "event-display");
    assert_eq!(blocks.iter().filter(|b| b.contains("id: even-1\n")).count(), 1, "{blocks:#?}");
    assert_eq!(blocks.iter().filter(|b| b.contains("id: odd-1\n")).count(), 1, "{blocks:#?}");
}

#[tokio::test]
async fn parallel_sample_filters_by_cluster_local_uri() {
    let Some(docs) = samples() else { return };
    let dir = docs.join("code-samples/eventing/parallel/mutual-exclusivity");
    let server = Server::start(&[]);
    let maps = [(SWITCHER, "switcher"), (TRANSFORMER, "transformer"), (EVENT_DISPLAY, "event-display")];
    let files = ["switcher.yaml", "transformers.yaml", "event-display.yaml", "parallel.yaml", "ping-source.yaml"];
    let warnings = apply(&server, &dir, &files, &maps);
    assert!(
        warnings.contains(
            "http://me-even-odd-switcher.default.svc.cluster.local/0 is taken as the serval Service default/me-even-odd-switcher"
        ),
        "{warnings}"
    );
    let (even, odd) = even_and_odd(&server, "me-odd-even-parallel", "me-event-display").await;
    assert!(even.contains("we are even!"), "{even}");
    assert!(odd.contains("this is odd!"), "{odd}");
    let blocks = displayed(&server, "default", "me-event-display");
    assert_eq!(blocks.iter().filter(|b| b.contains("id: even-1\n")).count(), 1, "{blocks:#?}");
    assert_eq!(blocks.iter().filter(|b| b.contains("id: odd-1\n")).count(), 1, "{blocks:#?}");
}

#[tokio::test]
async fn channel_and_subscription_sample_applies_and_delivers_to_the_service_standing_in() {
    let Some(docs) = samples() else { return };
    let example = docs.join("docs/versioned/eventing/troubleshooting/example.yaml");
    let server = Server::start(&[]);
    let warnings = apply(&server, example.parent().expect("dir"), &["example.yaml"], &[]);
    for skipped in [
        "spec.serviceAccountName is accepted and ignored",
        r#"skipped v1 Service "svc""#,
        r#"skipped apps/v1 Deployment "fn""#,
        r#"skipped v1 ServiceAccount "service-account""#,
        r#"skipped rbac.authorization.k8s.io/v1 Role "event-watcher""#,
        r#"skipped rbac.authorization.k8s.io/v1 RoleBinding "k8s-ra-event-watcher""#,
        r#"spec.subscriber.ref: Kubernetes v1 Service "svc" is taken as the serval Service of that name"#,
    ] {
        assert!(warnings.contains(skipped), "{skipped:?} missing from {warnings}");
    }
    let subscription = server.get_json(&["subscription", "sub", "-n", "knative-debug"]);
    assert_eq!(subscription["status"]["conditions"][0]["reason"], "SubscriberNotFound", "{subscription:#}");

    // The Deployment behind the Kubernetes Service, as a serval Service of that name.
    let command = format!("node {} event-display", stand_in().display());
    server.ok(&["deploy", "svc", "-n", "knative-debug", "--cmd", &command]);
    let subscription = server.get_json(&["subscription", "sub", "-n", "knative-debug"]);
    assert_eq!(subscription["status"]["conditions"][0]["status"], "True", "{subscription:#}");
    let channel = server.get_json(&["inmemorychannel", "chan", "-n", "knative-debug"]);
    assert_eq!(channel["status"]["subscribers"][0]["ready"], "True", "{channel:#}");
    let url = channel["status"]["address"]["url"].as_str().expect("an address").to_string();
    assert_eq!(url, format!("{}/c/knative-debug/chan", server.gateway));
    send(&url, "chan-1", "dev.example.event", "2026-12-01T00:00:00Z", r#"{"reason": "Started"}"#).await;
    let block = displayed_event(&server, "knative-debug", "svc", "chan-1").await;
    assert!(block.contains(r#""reason": "Started""#), "{block}");

    // The ApiServerSource watches `v1 Event`: serval's instance lifecycle events, here
    // the start of `svc`'s own instance, go through the channel to it. Those of the first
    // deploy may come before svc has a route (a 503, and the sample's subscription does not
    // retry), so a second revision starts an instance while the first one serves.
    server.ok(&["deploy", "svc", "-n", "knative-debug", "--cmd", &command, "--env", "REVISION=2"]);
    let ready = eventually("an instance lifecycle event at svc", Duration::from_secs(30), async || {
        displayed(&server, "knative-debug", "svc").into_iter().find(|b| b.contains("type: dev.serval.instance.ready"))
    })
    .await;
    assert!(ready.contains(r#""service": "svc""#), "{ready}");
    assert!(ready.contains("startupMs"), "{ready}");
    let source = server.get_json(&["apiserversource", "src", "-n", "knative-debug"]);
    assert_eq!(source["status"]["conditions"][0]["status"], "True", "{source:#}");
}
