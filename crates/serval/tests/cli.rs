//! End-to-end tests of the command line's first hour: version, a server log without colour
//! codes, `apply` of Knative documentation samples that mix in
//! Kubernetes kinds, and the URLs `deploy`, `get` and `list` print.
//!
//! The samples are read from `../shared/conformance/knative-docs/` (relative to the
//! workspace root, found by walking up from this crate) or `SERVAL_CONFORMANCE_DIR`;
//! without them those tests are skipped, unless `SERVAL_REQUIRE_CONFORMANCE=1`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{Server, echo_bin, knative_docs, serval_bin, stop_gracefully};

/// Runs the CLI with no server to find: commands that must not need one.
fn serval_alone(args: &[&str]) -> Output {
    let nowhere = tempfile::tempdir().expect("tempdir");
    Command::new(serval_bin())
        .arg("--data-dir")
        .arg(nowhere.path())
        .args(args)
        .env_remove("SERVAL_API")
        .env_remove("SERVAL_TOKEN")
        .output()
        .expect("run serval")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = serval_alone(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let commit = line
        .trim()
        .strip_prefix(&format!("serval {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line {line:?}"));
    assert!(commit == "unknown" || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{line:?}");
    assert_eq!(stdout(&serval_alone(&["--version"])), line, "--version says the same");
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = serval_alone(&["completion", shell]);
        assert!(out.status.success(), "{}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("deploy") && script.contains("secret"), "{shell}: {script}");
    }
    assert!(!serval_alone(&["completion", "cmd.exe"]).status.success());
}

#[test]
fn a_server_logging_to_a_file_writes_no_colour_codes() {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut server = Server::start_under_shell("export RUST_LOG=info", &[], log.path());
    let echo = echo_bin().display().to_string();
    server.ok(&["deploy", "echo", "--cmd", &echo]);
    server.ok(&["invoke", "echo"]);
    stop_gracefully(&mut server.process.child, Duration::from_secs(20));
    let written = std::fs::read(log.path()).expect("read log");
    let text = String::from_utf8_lossy(&written);
    assert!(text.contains("INFO"), "the server logged at info: {text}");
    assert!(!text.contains("\x1b["), "no ANSI escape codes in a log that is not a terminal: {text:?}");
}

#[test]
fn apply_runs_the_knative_kinds_of_a_sample_and_skips_its_kubernetes_kinds() {
    let Some(docs) = knative_docs() else { return };
    let sample = docs.join("code-samples/eventing/helloworld/helloworld-python/sample-app.yaml");
    let server = Server::start(&[]);
    let out = server.cli(&["apply", "-f", path(&sample)]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [
            r#"warning: document 1: namespace "knative-samples" is created implicitly"#,
            r#"warning: document 3: skipped apps/v1 Deployment "helloworld-python" (serval does not run Kubernetes workloads; deploy a Knative Service instead)"#,
            r#"warning: document 4: skipped v1 Service "helloworld-python" (serval does not run Kubernetes workloads; deploy a Knative Service instead)"#,
            r#"warning: spec.subscriber.ref: Kubernetes v1 Service "helloworld-python" is taken as the serval Service of that name"#,
        ],
        "{err}"
    );
    assert!(err.contains("broker knative-samples/default configured"), "{err}");
    assert!(err.contains("trigger knative-samples/helloworld-python configured"), "{err}");
    let brokers = server.ok(&["broker", "list", "-n", "knative-samples", "-o", "json"]);
    assert!(brokers.contains(r#""name": "default""#), "{brokers}");
}

#[test]
fn apply_refuses_every_unsupported_knative_kind_at_once_and_applies_nothing() {
    let Some(docs) = knative_docs() else { return };
    // A Knative sample (an ApiServerSource, which is skipped, channels and Kubernetes kinds)
    // with Knative kinds serval does not take appended.
    let example = docs.join("docs/versioned/eventing/troubleshooting/example.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("example.yaml");
    let sample = std::fs::read_to_string(&example).expect("read the sample");
    std::fs::write(
        &file,
        format!(
            "{sample}\n---\napiVersion: messaging.knative.dev/v1\nkind: KafkaChannel\nmetadata:\n  name: kafka\n\
             ---\napiVersion: serving.knative.dev/v1\nkind: Configuration\nmetadata:\n  name: conf\n"
        ),
    )
    .expect("write");
    let out = serval_alone(&["apply", "-f", path(&file)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for refused in [
        r#"messaging.knative.dev/v1 KafkaChannel "kafka" is not supported by serval yet"#,
        r#"serving.knative.dev/v1 Configuration "conf""#,
    ] {
        assert!(err.contains(refused), "{refused:?} missing from {err}");
    }
    assert!(!err.contains("ApiServerSource"), "an ApiServerSource is skipped, not refused: {err}");
    assert!(!err.contains("Deployment"), "Kubernetes kinds are not errors: {err}");

    // With a server: a file that mixes a supported kind with unsupported ones writes nothing.
    let server = Server::start(&[]);
    let file = server.dir.join("mixed.yaml");
    std::fs::write(
        &file,
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: kept-out\n---\n\
         apiVersion: messaging.knative.dev/v1\nkind: KafkaChannel\nmetadata:\n  name: kafka\n---\n\
         apiVersion: serving.knative.dev/v1\nkind: Configuration\nmetadata:\n  name: conf\n",
    )
    .expect("write");
    let err = server.fails(&["apply", "-f", path(&file)]);
    assert!(err.contains(r#"document 2: messaging.knative.dev/v1 KafkaChannel "kafka""#), "{err}");
    assert!(err.contains(r#"document 3: serving.knative.dev/v1 Configuration "conf""#), "{err}");
    assert!(server.ok(&["broker", "list", "-o", "json"]).contains(r#""items": []"#), "nothing applied");
}

#[test]
fn apply_explains_routes_and_documents_that_are_not_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("odd.yaml");
    std::fs::write(
        &file,
        "apiVersion: serving.knative.dev/v1\nkind: Route\nmetadata:\n  name: web\n\
         spec:\n  traffic:\n    - configurationName: web\n      percent: 100\n---\n\
         metadata:\n  name: anonymous\n---\n\
         kind: Service\nmetadata:\n  name: versionless\n---\n\
         - just\n- a list\n",
    )
    .expect("write");
    let out = serval_alone(&["apply", "-f", path(&file)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for expected in [
        "document 1: kind Route is not applied: serval derives routes from the Service; put this traffic block under the Service `web`'s spec.traffic",
        "document 2: has no apiVersion and no kind",
        "document 3: kind Service has no apiVersion",
        "document 4: is not a resource",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from {err}");
    }
}

#[tokio::test]
async fn deploy_get_and_list_show_the_host_url_and_the_path_url() {
    let server = Server::start(&[]);
    let echo = echo_bin().display().to_string();
    let out = server.cli(&["deploy", "hello", "--cmd", &echo]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port = server.gateway_host().rsplit_once(':').expect("port").1.to_string();
    let host_url = format!("http://hello.default.localhost:{port}");
    let path_url = format!("http://127.0.0.1:{port}/f/default/hello/");
    assert_eq!(stdout(&out).trim(), host_url, "scripts read the host URL from stdout");
    assert!(stderr(&out).contains(&format!("also: {path_url}")), "{}", stderr(&out));
    for table in [server.ok(&["get", "hello"]), server.ok(&["list"])] {
        assert!(table.contains("PATH URL") && table.contains(&host_url) && table.contains(&path_url), "{table}");
    }
    // The path URL answers without any name resolution.
    let answer: serde_json::Value =
        reqwest::get(&path_url).await.expect("request").json().await.expect("JSON from the echo function");
    assert_eq!(answer["service"], "hello", "{answer}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
