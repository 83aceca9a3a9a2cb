//! End-to-end tests of the key-value stores with the real binary: a deployed Python
//! function counts visits with compare-and-set (50 concurrent visits end at exactly 50);
//! `If-None-Match: *` admits one creator of 20; TTLs expire; tokens are scoped to their
//! namespace and stores; limits answer 413 naming the field; acknowledged writes survive
//! `kill -9`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, crate_dir, echo, eventually};

/// `SERVAL_KV_URL` and `SERVAL_KV_TOKEN` as a function of `service` sees them.
fn kv_env(server: &Server, service: &str, namespace: &str) -> (String, String) {
    let body: Value =
        serde_json::from_str(&server.ok(&["invoke", service, "-n", namespace])).expect("the echo answers JSON");
    let env = &body["env"];
    (
        env["SERVAL_KV_URL"].as_str().expect("SERVAL_KV_URL").to_string(),
        env["SERVAL_KV_TOKEN"].as_str().expect("SERVAL_KV_TOKEN").to_string(),
    )
}

async fn put(url: &str, token: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().put(url).bearer_auth(token).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("put");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("get");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn fifty_concurrent_visits_counted_with_compare_and_set_end_at_fifty() {
    let server = Server::start(&[]);
    let app = crate_dir().join("../../examples/kv-counter-python/app.py");
    let command = format!("python3 {}", app.display());
    server.ok(&["deploy", "counter", "--cmd", &command, "--env", "KV_STORE=default"]);
    let url = format!("{}/", server.gateway);
    let port = server.gateway_host().rsplit_once(':').expect("port").1.to_string();
    let host = format!("counter.default.localhost:{port}");
    let client = reqwest::Client::new();
    let visits = (0..50)
        .map(|_| {
            let (client, url, host) = (client.clone(), url.clone(), host.clone());
            tokio::spawn(async move {
                let response = client.get(&url).header("host", host).send().await.expect("visit");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
            })
        })
        .collect::<Vec<_>>();
    for visit in visits {
        visit.await.expect("join");
    }
    assert_eq!(server.ok(&["kv", "get", "visits"]).trim(), "50");
    assert_eq!(server.ok(&["kv", "ls"]).trim(), "visits");
}

#[tokio::test]
async fn conditions_ttl_scopes_and_limits() {
    let server = Server::start(&[]);
    server.ok(&["deploy", "echo", "--cmd", &echo()]);
    let (url, token) = kv_env(&server, "echo", "default");
    assert_eq!(url, format!("{}/kv/default", server.api.trim_end_matches('/')));

    // One creator of twenty wins If-None-Match: *.
    let creators = (0..20)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                put(&format!("{url}/default/leader"), &token, &[("if-none-match", "*")], &format!("{i}")).await.0
            })
        })
        .collect::<Vec<_>>();
    let mut statuses = Vec::new();
    for c in creators {
        statuses.push(c.await.expect("join"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 19, "{statuses:?}");

    // If-Match with a stale ETag is refused; with the current one it writes.
    let response = reqwest::Client::new().get(format!("{url}/default/leader")).bearer_auth(&token).send().await;
    let etag = response.expect("get").headers()["etag"].to_str().expect("etag").to_string();
    let (status, written) = put(&format!("{url}/default/leader"), &token, &[("if-match", &etag)], "next").await;
    assert_eq!(status, 200, "{written}");
    let (status, refused) = put(&format!("{url}/default/leader"), &token, &[("if-match", &etag)], "late").await;
    assert_eq!(status, 412, "{refused}");
    assert_eq!(get(&format!("{url}/default/leader"), &token).await, (200, "next".to_string()));

    // A TTL expires.
    let (status, _) = put(&format!("{url}/default/brief"), &token, &[("x-serval-ttl", "1")], "soon gone").await;
    assert_eq!(status, 201);
    eventually("the entry expired", Duration::from_secs(5), async || {
        (get(&format!("{url}/default/brief"), &token).await.0 == 404).then_some(())
    })
    .await;

    // Increments.
    let client = reqwest::Client::new();
    let inc = client.post(format!("{url}/default/hits:increment")).bearer_auth(&token).body("5").send().await;
    assert_eq!(inc.expect("inc").text().await.expect("body"), "5");

    // Limits answer 413 with the field.
    let long_key = "k".repeat(257);
    let (status, error) = put(&format!("{url}/default/{long_key}"), &token, &[], "x").await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["details"][0]["field"], "key", "{error}");
    let big = "x".repeat((1 << 20) + 1);
    let (status, error) = put(&format!("{url}/default/big"), &token, &[], &big).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["details"][0]["field"], "value", "{error}");

    // A token of another namespace gets 403; none gets 401; an unknown store 404.
    server.ok(&["deploy", "echo", "-n", "other", "--cmd", &echo()]);
    let (_, other_token) = kv_env(&server, "echo", "other");
    assert_eq!(get(&format!("{url}/default/leader"), &other_token).await.0, 403);
    assert_eq!(reqwest::get(format!("{url}/default/leader")).await.expect("get").status().as_u16(), 401);
    assert_eq!(get(&format!("{url}/nope/leader"), &token).await.0, 404);
    server.ok(&["kv", "create", "carts"]);
    let (status, _) = put(&format!("{url}/carts/c1"), &token, &[], "apples").await;
    assert_eq!(status, 201);

    // serval.dev/kv-stores limits a service to the stores it names.
    let command: Vec<String> = shell_words::split(&echo()).expect("words");
    let manifest = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: limited\nspec:\n  template:\n    \
         metadata:\n      annotations:\n        serval.dev/kv-stores: carts\n    spec:\n      containers:\n      \
         - command: {}\n",
        serde_json::to_string(&command).expect("json")
    );
    let file = server.dir.join("limited.yaml");
    std::fs::write(&file, manifest).expect("write");
    server.ok(&["apply", "-f", &file.display().to_string()]);
    let (_, limited) = kv_env(&server, "limited", "default");
    assert_eq!(get(&format!("{url}/carts/c1"), &limited).await, (200, "apples".to_string()));
    assert_eq!(get(&format!("{url}/default/leader"), &limited).await.0, 403);

    // Deleting a store removes its entries.
    server.ok(&["delete", "keyvaluestore", "carts"]);
    server.ok(&["kv", "create", "carts"]);
    assert_eq!(get(&format!("{url}/carts/c1"), &token).await.0, 404);
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start(&[]);
    let url = format!("{}/kv/default/default", server.api.trim_end_matches('/'));
    let token = server.token.clone();
    let writes = (0..200)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move { put(&format!("{url}/key-{i}"), &token, &[], &format!("value {i}")).await.0 })
        })
        .collect::<Vec<_>>();
    let mut acknowledged = 0;
    for w in writes {
        if matches!(w.await.expect("join"), 200 | 201) {
            acknowledged += 1;
        }
    }
    server.kill9();
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    let url = format!("{}/kv/default/default", restarted.api.trim_end_matches('/'));
    let mut found = 0;
    for i in 0..200 {
        let (status, value) = get(&format!("{url}/key-{i}"), &restarted.token).await;
        if status == 200 {
            assert_eq!(value, format!("value {i}"));
            found += 1;
        }
    }
    println!("acknowledged {acknowledged}, found after kill -9 {found}");
    assert_eq!(acknowledged, 200);
    assert_eq!(found, acknowledged);
}
