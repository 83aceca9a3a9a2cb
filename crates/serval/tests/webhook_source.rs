//! End-to-end tests of WebhookSource with the real binary: signed POSTs become events at
//! the sink; unsigned, wrongly signed, non-POST and unknown requests are refused clearly;
//! every 202 survives a `kill -9`.

mod support;

use std::time::Duration;

use support::{Server, Subscriber, eventually};

/// `sha256=<hex>` of `body` under `secret` (computed with openssl, an independent HMAC).
fn sign(secret: &str, body: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret, "-hex"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    format!("sha256={}", text.rsplit(' ').next().unwrap_or_default().trim())
}

fn apply_webhook(server: &Server, sink: &str) {
    let file = server.dir.join("webhook.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook-secret\nstringData:\n  token: s3cret\n---\n\
             apiVersion: sources.serval.dev/v1alpha1\nkind: WebhookSource\nmetadata:\n  name: github\nspec:\n  \
             type: 'com.github.{{header:X-GitHub-Event}}'\n  headers: [X-GitHub-Event]\n  secret:\n    \
             secretKeyRef:\n      name: hook-secret\n      key: token\n  sink:\n    uri: {sink}\n"
        ),
    )
    .expect("write manifest");
    server.ok(&["apply", "-f", &file.display().to_string()]);
}

async fn post(url: &str, body: &str, signature: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn signed_webhooks_become_events_and_others_are_refused() {
    let server = Server::start(&[]);
    let sink = Subscriber::start(vec![]).await;
    apply_webhook(&server, &sink.url);
    let source = server.get_json(&["webhooksource", "github"]);
    let url = source["status"]["address"]["url"].as_str().expect("an address").to_string();
    assert_eq!(url, format!("{}/s/default/github", server.gateway));

    let body = r#"{"ref":"refs/heads/main"}"#;
    assert_eq!(post(&url, body, Some(&sign("s3cret", body))).await, 202);
    assert_eq!(post(&url, body, None).await, 401, "unsigned");
    assert_eq!(post(&url, body, Some(&sign("wrong", body))).await, 401, "signed with another secret");
    assert_eq!(post(&format!("{}/s/default/nothing", server.gateway), body, None).await, 404);
    let get = reqwest::get(&url).await.expect("get").status().as_u16();
    assert_eq!(get, 405);

    let got = eventually("the event", Duration::from_secs(10), async || sink.received().into_iter().next()).await;
    assert_eq!(got.headers.get("ce-type").map(String::as_str), Some("com.github.push"));
    assert_eq!(got.headers.get("ce-xgithubevent").map(String::as_str), Some("push"));
    assert_eq!(String::from_utf8_lossy(&got.body), body);
    assert_eq!(sink.received().len(), 1, "refused requests made no event");
    let source = server.get_json(&["webhooksource", "github"]);
    assert_eq!(source["status"]["conditions"][0]["status"], "True", "{source:#}");
    assert_eq!(source["status"]["counters"]["delivered"], 1, "{source:#}");
}

#[tokio::test]
async fn every_accepted_webhook_survives_kill_9() {
    let mut server = Server::start(&[]);
    // The sink refuses everything for now: accepted webhooks wait in the source's inbox.
    let refusing = Subscriber::start((0..1000).map(|_| (503, vec![], String::new())).collect()).await;
    apply_webhook(&server, &refusing.url);
    let url = format!("{}/s/default/github", server.gateway);
    let mut accepted = 0;
    for n in 0..50 {
        let body = format!(r#"{{"n":{n}}}"#);
        if post(&url, &body, Some(&sign("s3cret", &body))).await == 202 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 50);
    server.kill9();
    // Restarted with a sink that takes them.
    let sink = Subscriber::start(vec![]).await;
    let restarted = Server::start_in(&server.dir.clone(), &[]);
    apply_webhook(&restarted, &sink.url);
    let got = eventually("every accepted webhook", Duration::from_secs(20), async || {
        let mut ns: Vec<String> =
            sink.received().iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect();
        ns.sort();
        ns.dedup();
        (ns.len() == 50).then_some(ns)
    })
    .await;
    println!("accepted {accepted}, delivered {}, duplicates {}", got.len(), sink.received().len() - got.len());
}
