//! End-to-end tests of trigger delivery: filters (attributes and CESQL), retries with
//! backoff, dead-letter sinks with the knativeerror* attributes, and replies.

mod support;

use std::time::Duration;

use support::{Server, Subscriber, eventually};

fn send(server: &Server, event_type: &str, source: &str) {
    server.ok(&[
        "event",
        "send",
        "--broker",
        "default",
        "--type",
        event_type,
        "--source",
        source,
        "--data",
        r#"{"x":1}"#,
    ]);
}

fn types(s: &Subscriber) -> Vec<String> {
    s.received().iter().filter_map(|r| r.headers.get("ce-type").cloned()).collect()
}

#[tokio::test]
async fn triggers_filter_retry_dead_letter_and_reply() {
    let server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    let a = Subscriber::start(vec![]).await;
    let b = Subscriber::start(vec![]).await;
    let flaky = Subscriber::start(vec![(503, vec![], String::new()), (503, vec![], String::new())]).await;
    let failing = Subscriber::start((0..10).map(|_| (500, vec![], "kaput".to_string())).collect()).await;
    let dead = Subscriber::start(vec![]).await;
    let reply_headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), "r1".to_string()),
        ("ce-type".to_string(), "com.example.reply".to_string()),
        ("ce-source".to_string(), "/replier".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let replier = Subscriber::start(vec![(200, reply_headers, r#"{"answer":42}"#.to_string())]).await;
    let third = Subscriber::start(vec![]).await;

    server.ok(&["trigger", "create", "t-a", "--sink", &a.url, "--filter", "type=com.example.a"]);
    server.ok(&[
        "trigger",
        "create",
        "t-b",
        "--sink",
        &b.url,
        "--cesql",
        "type LIKE 'com.example.b%' AND source = '/x'",
    ]);
    server.ok(&[
        "trigger",
        "create",
        "t-flaky",
        "--sink",
        &flaky.url,
        "--filter",
        "type=com.example.retry",
        "--retry",
        "3",
        "--backoff-policy",
        "exponential",
        "--backoff-delay",
        "PT0.2S",
    ]);
    server.ok(&[
        "trigger",
        "create",
        "t-dead",
        "--sink",
        &failing.url,
        "--filter",
        "type=com.example.dead",
        "--retry",
        "1",
        "--backoff-delay",
        "PT0.05S",
        "--dead-letter-sink",
        &dead.url,
    ]);
    server.ok(&["trigger", "create", "t-ask", "--sink", &replier.url, "--filter", "type=com.example.ask"]);
    server.ok(&["trigger", "create", "t-reply", "--sink", &third.url, "--filter", "type=com.example.reply"]);
    let err = server.fails(&["trigger", "create", "bad", "--sink", &a.url, "--cesql", "type = "]);
    assert!(err.contains("422") && err.contains("cesql"), "{err}");

    for (t, s) in [
        ("com.example.a", "/x"),
        ("com.example.b.1", "/x"),
        ("com.example.c", "/x"),
        ("com.example.b.2", "/y"),
        ("com.example.retry", "/x"),
        ("com.example.dead", "/x"),
        ("com.example.ask", "/x"),
    ] {
        send(&server, t, s);
    }

    eventually("filtered deliveries", Duration::from_secs(10), async || {
        (types(&a) == ["com.example.a"] && types(&b) == ["com.example.b.1"]).then_some(())
    })
    .await;

    // 503 twice, then 200: three attempts, spaced by the exponential backoff (0.2 s, 0.4 s).
    let attempts = eventually("three attempts", Duration::from_secs(10), async || {
        let r = flaky.received();
        (r.len() == 3).then_some(r)
    })
    .await;
    assert!(attempts[1].at - attempts[0].at >= Duration::from_millis(180), "{:?}", attempts[1].at - attempts[0].at);
    assert!(attempts[2].at - attempts[1].at >= Duration::from_millis(380), "{:?}", attempts[2].at - attempts[1].at);

    // Always 500: dead-lettered with the error attributes.
    let dead_letters = eventually("a dead letter", Duration::from_secs(10), async || {
        let r = dead.received();
        (!r.is_empty()).then_some(r)
    })
    .await;
    let h = &dead_letters[0].headers;
    assert_eq!(h.get("ce-type").map(String::as_str), Some("com.example.dead"));
    assert_eq!(h.get("ce-knativeerrorcode").map(String::as_str), Some("500"));
    assert_eq!(h.get("ce-knativeerrordest").map(String::as_str), Some(failing.url.as_str()));
    assert!(h.contains_key("ce-knativeerrordata"), "{h:?}");
    assert_eq!(failing.received().len(), 2, "one attempt and one retry");

    // The reply goes back into the broker and reaches the third trigger.
    let replies = eventually("the reply delivered", Duration::from_secs(10), async || {
        let r = third.received();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(replies[0].headers.get("ce-knativebrokerttl").map(String::as_str), Some("254"));
    assert_eq!(String::from_utf8_lossy(&replies[0].body), r#"{"answer":42}"#);

    // Nothing else arrived where it should not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(types(&a), ["com.example.a"]);
    assert_eq!(types(&b), ["com.example.b.1"]);
    let listed = server.ok(&["trigger", "list"]);
    assert!(listed.contains("t-flaky") && listed.contains("True"), "{listed}");
    let dead_status: serde_json::Value =
        serde_json::from_str(&server.ok(&["trigger", "get", "t-dead", "-o", "json"])).expect("json");
    assert_eq!(dead_status["status"]["delivery"]["deadLettered"], 1, "{dead_status}");
    assert_eq!(dead_status["status"]["delivery"]["pending"], 0, "{dead_status}");
    let flaky_status: serde_json::Value =
        serde_json::from_str(&server.ok(&["trigger", "get", "t-flaky", "-o", "json"])).expect("json");
    assert_eq!(flaky_status["status"]["delivery"]["delivered"], 1, "{flaky_status}");
}

#[tokio::test]
async fn accepted_events_survive_kill_9_and_are_all_delivered() {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TOTAL: usize = 5000;
    let mut server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    let sink = Subscriber::start(vec![]).await;
    server.ok(&["trigger", "create", "all", "--sink", &sink.url]);

    let client = reqwest::Client::new();
    let accepted = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let send_batch = |url: String, until: usize| {
        let (client, accepted, next) = (client.clone(), accepted.clone(), next.clone());
        async move {
            let workers = (0..16).map(|_| {
                let (client, accepted, next, url) = (client.clone(), accepted.clone(), next.clone(), url.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= until {
                            return;
                        }
                        let id = format!("ev-{i}");
                        let body = format!(r#"{{"specversion":"1.0","id":"{id}","type":"t","source":"/load"}}"#);
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/cloudevents+json")
                            .body(body)
                            .send()
                            .await;
                        if sent.is_ok_and(|r| r.status().as_u16() == 202) {
                            accepted.lock().expect("lock").insert(id);
                        }
                    }
                })
            });
            futures_util::future::join_all(workers).await;
        }
    };

    // First half, with the server killed while events are in flight.
    let url = format!("{}/b/default/default", server.gateway);
    let first = tokio::spawn(send_batch(url, TOTAL / 2));
    eventually("a good part accepted", Duration::from_secs(30), async || {
        (accepted.lock().expect("lock").len() >= TOTAL / 4).then_some(())
    })
    .await;
    server.kill9();
    first.await.expect("first half");
    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[]);
    // Second half against the restarted server.
    send_batch(format!("{}/b/default/default", restarted.gateway), TOTAL).await;

    let accepted = accepted.lock().expect("lock").clone();
    let delivered = eventually("every accepted event delivered", Duration::from_secs(60), async || {
        let got: Vec<String> = sink.received().iter().filter_map(|r| r.headers.get("ce-id").cloned()).collect();
        let unique: HashSet<&String> = got.iter().collect();
        accepted.iter().all(|id| unique.contains(id)).then_some(got)
    })
    .await;
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &delivered {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    println!(
        "sent {TOTAL}, accepted {}, delivered {} ({} unique), duplicates {duplicates}",
        accepted.len(),
        delivered.len(),
        counts.len()
    );
    // Sends during the outage fail (never acknowledged); everything acknowledged arrived.
    assert!(accepted.len() >= TOTAL / 2, "the restarted server accepted the second half: {}", accepted.len());
    drop(server);
}

#[tokio::test]
async fn ping_sources_deliver_on_schedule_to_sinks_and_brokers() {
    let server = Server::start(&[]);
    let direct = Subscriber::start(vec![]).await;
    server.ok(&[
        "source",
        "ping",
        "create",
        "tick",
        "--schedule",
        "* * * * * *",
        "--data",
        r#"{"hello":"ping"}"#,
        "--content-type",
        "application/json",
        "--sink",
        &direct.url,
    ]);
    // Through a broker and a trigger, too.
    server.ok(&["broker", "create", "default"]);
    let via_broker = Subscriber::start(vec![]).await;
    server.ok(&["trigger", "create", "pings", "--sink", &via_broker.url, "--filter", "type=dev.knative.sources.ping"]);
    server.ok(&[
        "source",
        "ping",
        "create",
        "tock",
        "--schedule",
        "* * * * * *",
        "--data",
        "plain",
        "--broker",
        "default",
    ]);

    let pings = eventually("two pings", Duration::from_secs(10), async || {
        let r = direct.received();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let h = &pings[0].headers;
    assert_eq!(h.get("ce-type").map(String::as_str), Some("dev.knative.sources.ping"));
    assert_eq!(h.get("ce-source").map(String::as_str), Some("/apis/v1/namespaces/default/pingsources/tick"));
    assert_eq!(String::from_utf8_lossy(&pings[0].body), r#"{"hello":"ping"}"#);
    let tick = |i: usize| pings[i].headers.get("ce-time").cloned().unwrap_or_default();
    assert_ne!(tick(0), tick(1), "each ping carries its own scheduled second");
    assert!(tick(0).ends_with(".000Z") && tick(1).ends_with(".000Z"), "ticks on whole seconds: {}", tick(0));
    let routed = eventually("a ping through the broker", Duration::from_secs(10), async || {
        let r = via_broker.received();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&routed[0].body), "plain");
    let err = server.fails(&["source", "ping", "create", "bad", "--schedule", "never", "--sink", &direct.url]);
    assert!(err.contains("spec.schedule") && err.contains("(422)"), "{err}");
    server.ok(&["source", "ping", "delete", "tick"]);
    let listed = server.ok(&["source", "ping", "list"]);
    assert!(listed.contains("tock") && !listed.contains("tick"), "{listed}");
}

#[tokio::test]
async fn https_subscribers_get_their_events_over_tls() {
    let (secure, certificate) = Subscriber::start_tls(vec![]).await;
    // The server trusts the subscriber's self-signed certificate the usual way: through the
    // CA file that SSL_CERT_FILE names.
    let trust = tempfile::tempdir().expect("tempdir");
    let ca = trust.path().join("subscriber.pem");
    std::fs::write(&ca, certificate).expect("write CA file");
    let server = Server::start_with_env(&[], &[("SSL_CERT_FILE", ca.to_str().expect("path"))]);
    server.ok(&["broker", "create", "default"]);
    server.ok(&["trigger", "create", "secure", "--sink", &secure.url]);
    send(&server, "com.example.tls", "/x");
    eventually("a delivery over TLS", Duration::from_secs(10), async || {
        (types(&secure) == ["com.example.tls"]).then_some(())
    })
    .await;
    assert_eq!(secure.received()[0].body, br#"{"x":1}"#, "the data, in binary mode");
}

#[tokio::test]
async fn structured_delivery_and_service_subscribers_scaled_from_zero() {
    let server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    let structured = Subscriber::start(vec![]).await;
    let manifest = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: as-json
spec:
  broker: default
  filter:
    attributes:
      type: com.example.json
  subscriber:
    uri: {url}
  delivery:
    format: json
"#,
        url = structured.url
    );
    let file = server.dir.join("json.yaml");
    std::fs::write(&file, manifest).expect("write");
    server.ok(&["apply", "-f", file.to_str().expect("path")]);

    // A serval Service as the subscriber: it starts from zero on the first event.
    let echo = support::echo_bin().display().to_string();
    server.ok(&["deploy", "consumer", "--cmd", &echo]);
    server.ok(&["trigger", "create", "to-service", "--service", "consumer", "--filter", "type=com.example.svc"]);
    send(&server, "com.example.json", "/x");
    send(&server, "com.example.svc", "/x");

    let got = eventually("a structured delivery", Duration::from_secs(10), async || {
        let r = structured.received();
        (!r.is_empty()).then_some(r)
    })
    .await;
    let content_type = got[0].headers.get("content-type").cloned().unwrap_or_default();
    assert!(content_type.starts_with("application/cloudevents+json"), "{content_type}");
    let event: serde_json::Value = serde_json::from_slice(&got[0].body).expect("structured JSON");
    assert_eq!(event["type"], "com.example.json");
    assert_eq!(event["data"]["x"], 1);

    eventually("the service got the event", Duration::from_secs(10), async || {
        let t: serde_json::Value =
            serde_json::from_str(&server.ok(&["trigger", "get", "to-service", "-o", "json"])).ok()?;
        (t["status"]["delivery"]["delivered"] == 1).then_some(())
    })
    .await;
    let service = server.get_json(&["consumer"]);
    assert_eq!(service["status"]["instances"]["coldStarts"], 1, "{service}");
}

#[tokio::test]
async fn a_trigger_delivers_at_most_its_concurrency_at_once() {
    let server = Server::start(&[]);
    server.ok(&["broker", "create", "default"]);
    let slow = Subscriber::start_slow(vec![], Duration::from_millis(300)).await;
    let refused = server.fails(&["trigger", "create", "t", "--sink", &slow.url, "--concurrency", "0"]);
    assert!(refused.contains("serval.dev/delivery-concurrency"), "names the annotation: {refused}");
    server.ok(&["trigger", "create", "t", "--sink", &slow.url, "--concurrency", "3"]);
    for n in 0..9 {
        send(&server, "com.example.slow", &format!("/n{n}"));
    }
    eventually("all 9 events delivered", Duration::from_secs(20), async || (slow.received().len() >= 9).then_some(()))
        .await;
    assert_eq!(slow.max_in_flight(), 3, "9 events queued, 3 at a time");
}

/// JSON data reaches a subscriber as it was sent, whatever the content mode it came in:
/// member order, spacing, the spelling of numbers and integers beyond 64 bits untouched
/// (the broker stores and delivers the text, it does not rebuild it).
#[tokio::test]
async fn json_data_reaches_the_subscriber_byte_for_byte() {
    let server = Server::start(&[]);
    let url = server.ok(&["broker", "create", "default"]).trim().to_string();
    let sink = Subscriber::start(vec![]).await;
    server.ok(&["trigger", "create", "all", "--sink", &sink.url]);
    let data = r#"{"zebra": 1, "apple": [1.10, 2e3, -0.0], "big": 123456789012345678901234567890, "s": "\u00e9\n"}"#;
    let client = reqwest::Client::new();
    let post = |content_type: &'static str, body: String, headers: &[(&'static str, &'static str)]| {
        let mut request = client.post(&url).header("content-type", content_type).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let binary = [("ce-specversion", "1.0"), ("ce-id", "b1"), ("ce-type", "t"), ("ce-source", "/binary")];
    let event = |id: &str| format!(r#"{{"specversion":"1.0","id":"{id}","type":"t","source":"/s","data": {data} }}"#);
    let answers = [
        post("application/json", data.to_string(), &binary).await,
        post("application/cloudevents+json", event("s1"), &[]).await,
        post("application/cloudevents-batch+json", format!("[{}, {}]", event("a1"), event("a2")), &[]).await,
    ];
    for answer in answers {
        assert_eq!(answer.expect("post").status().as_u16(), 202);
    }
    let got = eventually("4 events", Duration::from_secs(10), async || {
        let got = sink.received();
        (got.len() >= 4).then_some(got)
    })
    .await;
    for r in got {
        assert_eq!(String::from_utf8_lossy(&r.body), data, "event {:?}", r.headers.get("ce-id"));
    }
}
