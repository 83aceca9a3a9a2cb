//! End-to-end tests of channels, subscriptions, sequences and parallels with the real
//! binary: the channel ingress contract, replies, retries and dead letters of
//! subscriptions, flows compiled into owned channels and subscriptions, a Sequence replying
//! into a Broker, and at-least-once delivery through a 3-step Sequence across `kill -9`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::{Server, Subscriber, eventually};

/// Applies YAML documents through `serval apply -f`.
fn apply(server: &Server, name: &str, yaml: &str) -> String {
    let file = server.dir.join(name);
    std::fs::write(&file, yaml).expect("write manifest");
    let out = server.cli(&["apply", "-f", &file.display().to_string(), "--no-wait"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "apply {name}: {err}");
    err
}

/// POSTs one binary-mode event; the status.
async fn post_event(client: &reqwest::Client, url: &str, id: &str, data: &str) -> u16 {
    client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "com.example.flow")
        .header("ce-source", "/flows-test")
        .header("content-type", "text/plain")
        .body(data.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn bodies(s: &Subscriber) -> Vec<String> {
    s.received().iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect()
}

fn ids(s: &Subscriber) -> Vec<String> {
    s.received().iter().filter_map(|r| r.headers.get("ce-id").cloned()).collect()
}

/// `serval list KIND -o json`'s items.
fn items(server: &Server, kind: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&server.ok(&["list", kind, "-o", "json"])).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> =
        items.iter().filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string)).collect();
    names.sort();
    names
}

#[tokio::test]
async fn channels_take_events_and_subscriptions_deliver_reply_retry_and_dead_letter() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let echo = Subscriber::start_echo(vec![], "!").await;
    let replies = Subscriber::start(vec![]).await;
    let failing = Subscriber::start((0..3).map(|_| (500, vec![], "kaput".to_string())).collect()).await;
    let dead = Subscriber::start(vec![]).await;
    let err = apply(
        &server,
        "channel.yaml",
        &format!(
            "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata:\n  name: orders\n---\n\
             apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata:\n  name: shout\nspec:\n  \
             channel:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n    name: orders\n  \
             subscriber:\n    uri: {}\n  reply:\n    uri: {}\n---\n\
             apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata:\n  name: doomed\nspec:\n  \
             channel:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n    name: orders\n  \
             subscriber:\n    uri: {}\n  delivery:\n    retry: 2\n    backoffDelay: PT0.05S\n    \
             deadLetterSink:\n      uri: {}\n",
            echo.url, replies.url, failing.url, dead.url
        ),
    );
    assert!(err.contains("subscription default/shout configured"), "{err}");
    let channel = server.get_json(&["inmemorychannel", "orders"]);
    let url = channel["status"]["address"]["url"].as_str().expect("address").to_string();
    assert_eq!(url, format!("{}/c/default/orders", server.gateway));
    let ready = &channel["status"]["conditions"][0];
    assert_eq!(ready["status"], "True", "{channel:#}");
    assert!(ready["message"].as_str().unwrap_or_default().contains("durable"), "{channel:#}");
    assert_eq!(channel["spec"]["subscribers"].as_array().map(Vec::len), Some(2), "{channel:#}");
    assert_eq!(channel["status"]["subscribers"][0]["ready"], "True", "{channel:#}");

    // The broker's contract: 202 after commit, 400, 404, 405.
    assert_eq!(post_event(&client, &url, "e1", "hello").await, 202);
    let bad = client.post(&url).header("ce-specversion", "1.0").send().await.expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap_or_default().contains("id"), "the reason names the missing attribute");
    let missing = format!("{}/c/default/nowhere", server.gateway);
    assert_eq!(post_event(&client, &missing, "e0", "x").await, 404);
    assert_eq!(client.get(&url).send().await.expect("get").status().as_u16(), 405);

    // The subscriber's reply goes to the reply; `Prefer: reply` asked for it.
    eventually("the reply", Duration::from_secs(10), async || (bodies(&replies) == ["hello!"]).then_some(())).await;
    assert_eq!(ids(&replies), ["e1"]);
    assert_eq!(echo.received()[0].headers.get("prefer").map(String::as_str), Some("reply"));

    // A failing subscriber is retried, then the event is dead-lettered with knativeerror*.
    let dead_letter =
        eventually("the dead letter", Duration::from_secs(10), async || dead.received().into_iter().next()).await;
    assert_eq!(failing.received().len(), 3, "1 attempt and 2 retries");
    assert_eq!(dead_letter.headers.get("ce-id").map(String::as_str), Some("e1"));
    assert_eq!(dead_letter.headers.get("ce-knativeerrorcode").map(String::as_str), Some("500"));
    assert_eq!(dead_letter.headers.get("ce-knativeerrordest"), Some(&failing.url));
    assert!(dead_letter.headers.contains_key("ce-knativeerrordata"), "{:?}", dead_letter.headers);

    let subscription = server.get_json(&["subscription", "doomed"]);
    let physical = &subscription["status"]["physicalSubscription"];
    assert_eq!(physical["subscriberUri"], failing.url.as_str(), "{subscription:#}");
    assert_eq!(physical["deadLetterSinkUri"], dead.url.as_str(), "{subscription:#}");
    let delivery = eventually("the counts", Duration::from_secs(5), async || {
        let s = server.get_json(&["subscription", "doomed"]);
        (s["status"]["delivery"]["deadLettered"] == 1).then_some(s["status"]["delivery"].clone())
    })
    .await;
    assert_eq!(delivery["pending"], 0, "{delivery}");

    // A subscription's channel is immutable.
    let err = server.fails(&["apply", "-f", &{
        let file = server.dir.join("moved.yaml");
        std::fs::write(
            &file,
            "apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata:\n  name: shout\nspec:\n  \
                 channel:\n    apiVersion: messaging.knative.dev/v1\n    kind: Channel\n    name: elsewhere\n  \
                 reply:\n    uri: http://127.0.0.1:9/\n",
        )
        .expect("write");
        file.display().to_string()
    }]);
    assert!(err.contains("spec.channel") && err.contains("immutable"), "{err}");
}

#[tokio::test]
async fn a_sequence_is_its_channels_and_subscriptions_and_its_reply_can_be_a_broker() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let steps = [
        Subscriber::start_echo(vec![], "1").await,
        Subscriber::start_echo(vec![], "2").await,
        Subscriber::start_echo(vec![], "3").await,
    ];
    let display = Subscriber::start(vec![]).await;
    server.ok(&["broker", "create", "default"]);
    apply(
        &server,
        "sequence.yaml",
        &format!(
            "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: seq\nspec:\n  channelTemplate:\n    \
             apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n  steps:\n  - uri: {}\n  - uri: {}\n  \
             - uri: {}\n  reply:\n    ref:\n      kind: Broker\n      apiVersion: eventing.knative.dev/v1\n      \
             name: default\n---\n\
             apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: display\nspec:\n  broker: default\n  \
             filter:\n    attributes:\n      source: /flows-test\n  subscriber:\n    uri: {}\n",
            steps[0].url, steps[1].url, steps[2].url, display.url
        ),
    );
    let sequence = server.get_json(&["sequence", "seq"]);
    let url = sequence["status"]["address"]["url"].as_str().expect("address").to_string();
    assert_eq!(url, format!("{}/c/default/seq-kn-sequence-0", server.gateway));
    assert_eq!(sequence["status"]["conditions"][0]["status"], "True", "{sequence:#}");
    assert_eq!(sequence["status"]["subscriptionStatuses"].as_array().map(Vec::len), Some(3), "{sequence:#}");
    let channels = items(&server, "inmemorychannels");
    assert_eq!(names(&channels), ["seq-kn-sequence-0", "seq-kn-sequence-1", "seq-kn-sequence-2"]);
    let subscriptions = items(&server, "subscriptions");
    assert_eq!(names(&subscriptions), ["seq-kn-sequence-0", "seq-kn-sequence-1", "seq-kn-sequence-2"]);
    assert!(
        subscriptions.iter().all(|s| s["metadata"]["ownerReferences"][0]["kind"] == "Sequence"),
        "{subscriptions:#?}"
    );

    // Each step's reply feeds the next; the last one's enters the broker, whose trigger
    // delivers it.
    assert_eq!(post_event(&client, &url, "s1", "x").await, 202);
    eventually("the event through 3 steps and the broker", Duration::from_secs(10), async || {
        (bodies(&display) == ["x123"]).then_some(())
    })
    .await;
    assert_eq!(bodies(&steps[1]), ["x1"]);

    // A Sequence whose step is missing says which one.
    apply(
        &server,
        "broken.yaml",
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: broken\nspec:\n  steps:\n  \
         - uri: http://127.0.0.1:9/\n  - ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      \
         name: absent\n",
    );
    let broken = server.get_json(&["sequence", "broken"]);
    let ready = &broken["status"]["conditions"][0];
    assert_eq!(ready["status"], "False", "{broken:#}");
    assert!(
        ready["message"].as_str().unwrap_or_default().starts_with("spec.steps[1]: Service default/absent"),
        "{broken:#}"
    );

    // A shorter Sequence drops its extra parts; deleting it removes the rest.
    apply(
        &server,
        "shorter.yaml",
        &format!(
            "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: seq\nspec:\n  steps:\n  - uri: {}\n",
            steps[0].url
        ),
    );
    let subscriptions = items(&server, "subscriptions");
    assert_eq!(names(&subscriptions), ["broken-kn-sequence-0", "broken-kn-sequence-1", "seq-kn-sequence-0"]);
    server.ok(&["delete", "sequence", "seq"]);
    server.ok(&["delete", "sequence", "broken"]);
    assert!(items(&server, "subscriptions").is_empty());
    assert!(items(&server, "inmemorychannels").is_empty());
}

#[tokio::test]
async fn a_parallel_sends_events_down_the_branches_whose_filter_passes_them() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    // Branch 0's filter passes everything, branch 1's nothing.
    let pass = Subscriber::start_echo(vec![], "").await;
    let block = Subscriber::start(vec![]).await;
    let (left, right) = (Subscriber::start_echo(vec![], "-left").await, Subscriber::start_echo(vec![], "-right").await);
    let reply = Subscriber::start(vec![]).await;
    let right_reply = Subscriber::start(vec![]).await;
    apply(
        &server,
        "parallel.yaml",
        &format!(
            "apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata:\n  name: par\nspec:\n  branches:\n  \
             - filter:\n      uri: {}\n    subscriber:\n      uri: {}\n  - filter:\n      uri: {}\n    subscriber:\n      \
             uri: {}\n    reply:\n      uri: {}\n  - subscriber:\n      uri: {}\n  reply:\n    uri: {}\n",
            pass.url, left.url, block.url, right.url, right_reply.url, left.url, reply.url
        ),
    );
    let parallel = server.get_json(&["parallel", "par"]);
    let url = parallel["status"]["address"]["url"].as_str().expect("address").to_string();
    assert_eq!(url, format!("{}/c/default/par-kn-parallel", server.gateway));
    assert_eq!(
        names(&items(&server, "subscriptions")),
        [
            "par-kn-parallel-0",
            "par-kn-parallel-1",
            "par-kn-parallel-2",
            "par-kn-parallel-filter-0",
            "par-kn-parallel-filter-1",
            "par-kn-parallel-filter-2"
        ]
    );
    assert_eq!(post_event(&client, &url, "p1", "e").await, 202);
    // Branch 0 (filter passes) and branch 2 (no filter) reply to spec.reply; branch 1 is
    // filtered out.
    eventually("both replies", Duration::from_secs(10), async || {
        let mut got = bodies(&reply);
        got.sort();
        (got == ["e-left", "e-left"]).then_some(())
    })
    .await;
    assert_eq!(block.received().len(), 1, "the filter saw the event");
    assert!(right.received().is_empty() && right_reply.received().is_empty(), "branch 1 never got it");
}

#[tokio::test]
async fn a_sequence_loses_no_accepted_event_across_kill_9() {
    let mut server = Server::start(&[]);
    let steps = [
        Subscriber::start_echo(vec![], "a").await,
        Subscriber::start_echo(vec![], "b").await,
        Subscriber::start_echo(vec![], "c").await,
    ];
    let reply = Subscriber::start(vec![]).await;
    apply(
        &server,
        "sequence.yaml",
        &format!(
            "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: durable\nspec:\n  steps:\n  \
             - uri: {}\n  - uri: {}\n  - uri: {}\n  reply:\n    uri: {}\n",
            steps[0].url, steps[1].url, steps[2].url, reply.url
        ),
    );
    let url = format!("{}/c/default/durable-kn-sequence-0", server.gateway);
    let client = reqwest::Client::new();
    // Stream events; kill the server while they flow.
    let sender = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0..400 {
                let id = format!("k{n}");
                match post_event(&client, &url, &id, "x").await {
                    202 => accepted.push(id),
                    0 => break,
                    other => panic!("event {id}: HTTP {other}"),
                }
            }
            accepted
        })
    };
    eventually("some events through the sequence", Duration::from_secs(10), async || {
        (reply.received().len() >= 50).then_some(())
    })
    .await;
    server.kill9();
    let accepted = sender.await.expect("sender");
    assert!(accepted.len() >= 50, "{} accepted", accepted.len());
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    let arrived = eventually("every accepted event at the reply", Duration::from_secs(30), async || {
        let seen = ids(&reply);
        accepted.iter().all(|id| seen.contains(id)).then_some(seen)
    })
    .await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &arrived {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!("accepted {}, delivered {}, duplicates {duplicates}", accepted.len(), counts.len());
    assert!(bodies(&reply).iter().all(|b| b == "xabc"), "every event went through the 3 steps in order");
    drop(restarted);
}
