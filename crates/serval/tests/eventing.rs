//! End-to-end tests of broker ingress: CloudEvents in three HTTP modes, strict validation,
//! the Knative status codes, and durability across a kill -9 of the server.

mod support;

use serde_json::Value;
use support::Server;

fn events(server: &Server, broker: &str) -> Vec<Value> {
    server.ok(&["event", "tail", broker]).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

#[tokio::test]
async fn broker_ingress_accepts_durably_and_rejects_clearly() {
    let mut server = Server::start(&[]);
    let url = server.ok(&["broker", "create", "events"]).trim().to_string();
    assert_eq!(url, format!("{}/b/default/events", server.gateway));
    let client = reqwest::Client::new();

    // Binary mode through the CLI.
    server.ok(&[
        "event",
        "send",
        "--broker",
        "events",
        "--type",
        "com.example.one",
        "--source",
        "/cli",
        "--id",
        "e1",
        "--data",
        r#"{"n":1}"#,
    ]);
    // Structured and batched modes.
    let structured = r#"{"specversion":"1.0","id":"e2","type":"com.example.two","source":"/s","data":{"n":2}}"#;
    let resp = client
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(structured)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    let batch = r#"[{"specversion":"1.0","id":"e3","type":"t","source":"/s"},{"specversion":"1.0","id":"e4","type":"t","source":"/s","data_base64":"aGk="}]"#;
    let resp = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);

    // Invalid events: 400 with the reason; nothing stored.
    let resp = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(body["error"]["message"].as_str().expect("message").contains("'id'"), "{body}");
    let err =
        server.fails(&["event", "send", "--broker", "events", "--type", "t", "--source", "/s", "--ext", "Bad_Name=1"]);
    assert!(err.contains("(400)"), "{err}");

    // Unknown broker 404, other methods 405, OPTIONS 200.
    let resp = client
        .post(format!("{}/b/default/nope", server.gateway))
        .header("content-type", "application/cloudevents+json")
        .body(structured)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(client.get(&url).send().await.expect("get").status().as_u16(), 405);
    assert_eq!(client.request(reqwest::Method::OPTIONS, &url).send().await.expect("options").status().as_u16(), 200);

    let accepted = events(&server, "events");
    let ids: Vec<&str> = accepted.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
    assert!(accepted.iter().all(|e| e["knativearrivaltime"].is_string()), "{accepted:?}");
    assert_eq!(accepted[0]["data"]["n"], 1);

    // Every 202 survives a kill -9.
    server.kill9();
    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[]);
    let ids_after: Vec<String> =
        events(&restarted, "events").iter().filter_map(|e| e["id"].as_str().map(str::to_string)).collect();
    assert_eq!(ids_after, ["e1", "e2", "e3", "e4"]);
    restarted.ok(&["broker", "delete", "events"]);
    let err = restarted.fails(&["event", "tail", "events"]);
    assert!(err.contains("not found"), "{err}");
    drop(server);
}

#[tokio::test]
async fn apply_takes_knative_eventing_manifests() {
    let server = Server::start(&[]);
    let manifest = r#"apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
spec:
  broker: shop
  filters:
    - cesql: "type = 'com.example.order' AND source LIKE '/shop%'"
  subscriber:
    uri: http://127.0.0.1:9/
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.5S
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: shop
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: heartbeat
spec:
  schedule: "*/5 * * * *"
  timezone: Europe/Berlin
  data: '{"beat":true}'
  contentType: application/json
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: shop
"#;
    let file = server.dir.join("eventing.yaml");
    std::fs::write(&file, manifest).expect("write");
    server.ok(&["apply", "-f", file.to_str().expect("path")]);
    assert!(server.ok(&["broker", "list"]).contains("shop"));
    let trigger: serde_json::Value =
        serde_json::from_str(&server.ok(&["trigger", "get", "orders", "-o", "json"])).expect("json");
    assert_eq!(trigger["status"]["conditions"][0]["status"], "True", "{trigger}");
    let sources = server.ok(&["source", "ping", "list"]);
    assert!(sources.contains("heartbeat") && sources.contains("/b/default/shop"), "{sources}");
    // A bad delivery duration is refused with the field.
    let bad = manifest.replace("PT0.5S", "half a second");
    std::fs::write(&file, bad).expect("write");
    let err = server.fails(&["apply", "-f", file.to_str().expect("path")]);
    assert!(err.contains("spec.delivery") && err.contains("(422)"), "{err}");
}
