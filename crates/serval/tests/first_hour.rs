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
use support::{Server, echo_bin, eventually};

const FAST_SCALING: &[&str] = &["--stable-window", "1s", "--scale-to-zero-grace", "0s", "--autoscaler-tick", "200ms"];

fn echo() -> String {
    echo_bin().display().to_string()
}

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
