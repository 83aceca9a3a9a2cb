//! End-to-end tests of `serval init`: the real binary lists its templates, writes projects
//! without ever overwriting a file, and the projects it writes pass their own unit tests
//! and serve HTTP on `$PORT` (Python and Node harnesses, the http and cloudevents
//! templates), then stop promptly on SIGTERM.
//!
//! A project's tests need `python3` or `node`; without them those tests are skipped,
//! unless `SERVAL_REQUIRE_TEMPLATES=1`. The Rust and Go templates are not built here (no
//! toolchain is promised offline); `serval-project`'s own tests check their files.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{serval_bin, skip};

/// How long a harness may take to start listening, and to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

fn serval(dir: &Path, args: &[&str]) -> Output {
    Command::new(serval_bin()).current_dir(dir).args(args).output().expect("run serval")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `program` runs; when not, says the test is skipped (or fails under
/// `SERVAL_REQUIRE_TEMPLATES=1`).
fn have(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("SERVAL_REQUIRE_TEMPLATES").is_ok_and(|v| v == "1");
        assert!(!required, "SERVAL_REQUIRE_TEMPLATES=1 but {program} is not installed");
        skip(&format!("{program} is not installed"));
    }
    found
}

/// `serval init DIR --lang LANG --template TEMPLATE` in a new temporary directory.
fn init(lang: &str, template: &str) -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("tempdir");
    let out = serval(temp.path(), &["init", "hello", "--lang", lang, "--template", template]);
    assert!(out.status.success(), "serval init failed: {}", text(&out.stderr));
    temp
}

/// Runs a project's unit tests the way its README says.
fn unit_tests(dir: &Path, command: &[&str]) {
    let out = Command::new(command[0]).args(&command[1..]).current_dir(dir).output().expect("run the unit tests");
    assert!(out.status.success(), "{command:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
}

/// A project's server harness, started as serval starts an instance: `PORT` set, in its
/// directory. Killed when dropped.
struct Harness {
    child: Option<Child>,
    address: SocketAddr,
}

impl Harness {
    /// Starts `command` in `dir` on a free port and waits for its "listening" line.
    fn start(dir: &Path, command: &[&str]) -> Harness {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let mut child = Command::new(command[0])
            .args(&command[1..])
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the harness");
        let stdout = child.stdout.take().expect("stdout");
        let harness = Harness { child: Some(child), address: SocketAddr::from(([127, 0, 0, 1], port)) };
        let (lines, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The request log goes on; only the first lines matter here.
                let _ = lines.send(line);
            }
        });
        loop {
            match listening.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(&format!("listening on 127.0.0.1:{port}")) => return harness,
                Ok(_) => continue,
                Err(e) => panic!("{command:?} printed no listening line ({e})"),
            }
        }
    }

    /// Sends one request (`Connection: close`) and returns the status, the head's lines
    /// (lower-case names) and the body.
    fn request(&self, head: &str, body: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.address).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let request =
            format!("{head}\r\nHost: hello\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read the answer");
        let answer = text(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {answer:?}"));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head:?}"));
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    /// SIGTERM, then the exit status, which must come within `PATIENCE`.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(signalled.success());
        let (done, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait());
        });
        match exited.recv_timeout(PATIENCE) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("the harness did not exit within {PATIENCE:?} of SIGTERM");
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn init_lists_the_templates() {
    let temp = tempfile::tempdir().expect("tempdir");
    let out = serval(temp.path(), &["init", "--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().take(2).collect()).collect();
    assert_eq!(rows[0], ["LANGUAGE", "TEMPLATE"], "{table}");
    for lang in ["python", "node", "rust", "go"] {
        for template in ["http", "cloudevents"] {
            assert!(rows.contains(&vec![lang, template]), "{lang} {template} missing:\n{table}");
        }
    }
    assert!(rows.contains(&vec!["shell", "http"]), "{table}");
    assert!(!rows.contains(&vec!["shell", "cloudevents"]), "{table}");
    assert_eq!(std::fs::read_dir(temp.path()).expect("list").count(), 0, "--list writes nothing");
}

#[test]
fn init_never_overwrites_and_says_what_is_wrong_in_one_line() {
    let temp = tempfile::tempdir().expect("tempdir");
    let project = temp.path().join("hello");
    std::fs::create_dir(&project).expect("mkdir");
    std::fs::write(project.join("main.py"), "# mine\n").expect("write");

    let out = serval(temp.path(), &["init", "hello", "--lang", "python"]);
    assert!(!out.status.success());
    let error = text(&out.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.starts_with("error: hello already has main.py; nothing was written"), "{error}");
    assert_eq!(std::fs::read_to_string(project.join("main.py")).expect("kept"), "# mine\n");
    assert_eq!(std::fs::read_dir(&project).expect("list").count(), 1, "nothing else was written");

    // `--name` names the function; a directory's name that is no DNS label needs one.
    let out = serval(temp.path(), &["init", "Other_Dir", "--lang", "node"]);
    assert!(text(&out.stderr).contains("give a name with --name"), "{}", text(&out.stderr));
    let out = serval(temp.path(), &["init", "Other_Dir", "--lang", "node", "--name", "other"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = std::fs::read_to_string(temp.path().join("Other_Dir/serval.yaml")).expect("serval.yaml");
    assert!(manifest.contains("name: other\n") && manifest.contains("language: node\n"), "{manifest}");

    let out = serval(temp.path(), &["init", "sh", "--lang", "shell", "--template", "cloudevents"]);
    assert_eq!(text(&out.stderr), "error: there is no cloudevents template for shell (shell has: http)\n");
    assert!(!temp.path().join("sh").exists());
    let out = serval(temp.path(), &["init", "x"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--lang"), "{}", text(&out.stderr));
}

#[test]
fn python_http_project_passes_its_tests_and_serves() {
    if !have("python3") {
        return;
    }
    let temp = init("python", "http");
    let dir = temp.path().join("hello");
    unit_tests(&dir, &["python3", "-m", "unittest"]);
    let harness = Harness::start(&dir, &["python3", "-u", "main.py"]);
    let (status, head, body) = harness.request("GET /?name=serval HTTP/1.1", "");
    assert_eq!((status, body.as_str()), (200, "Hello, serval!\n"), "{head}");
    assert!(head.contains("content-type: text/plain"), "{head}");
    let (status, head, body) = harness.request("POST /anything HTTP/1.1", "hi");
    assert_eq!((status, body.as_str()), (200, r#"{"received": "hi"}"#));
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(harness.stop().success(), "exit 0 after SIGTERM");
}

#[test]
fn node_http_project_passes_its_tests_and_serves() {
    if !have("node") {
        return;
    }
    let temp = init("node", "http");
    let dir = temp.path().join("hello");
    unit_tests(&dir, &["node", "--test"]);
    let harness = Harness::start(&dir, &["node", "index.js"]);
    let (status, _, body) = harness.request("GET /?name=serval HTTP/1.1", "");
    assert_eq!((status, body.as_str()), (200, "Hello, serval!\n"));
    let (status, _, body) = harness.request("POST / HTTP/1.1", "hi");
    assert_eq!((status, body.as_str()), (200, r#"{"received":"hi"}"#));
    assert!(harness.stop().success(), "exit 0 after SIGTERM");
}

/// A binary-mode CloudEvent in, the reply event out in binary mode; a structured-mode reply
/// event is not answered; a request that is no event is a 400.
fn check_cloudevents(harness: &Harness) {
    let binary = "POST / HTTP/1.1\r\nce-specversion: 1.0\r\nce-id: 42\r\nce-source: /shop\r\n\
                  ce-type: com.example.order\r\nContent-Type: application/json";
    let (status, head, body) = harness.request(binary, r#"{"item":"book"}"#);
    assert_eq!(status, 200, "{head}\n{body}");
    for field in ["ce-type: com.example.order.reply", "ce-source: hello", "ce-subject: 42", "ce-specversion: 1.0"] {
        assert!(head.contains(field), "{field} missing in {head}");
    }
    assert!(head.contains("content-type: application/json"), "{head}");
    let data: serde_json::Value = serde_json::from_str(&body).expect("JSON data");
    assert_eq!(data, serde_json::json!({"item": "book"}));

    let structured = "POST / HTTP/1.1\r\nContent-Type: application/cloudevents+json";
    let event = r#"{"specversion":"1.0","id":"43","source":"/x","type":"com.example.order.reply"}"#;
    let (status, head, _) = harness.request(structured, event);
    assert_eq!(status, 204, "{head}");

    let (status, _, body) = harness.request("POST / HTTP/1.1", "not an event");
    assert_eq!(status, 400);
    assert!(body.contains("missing specversion, id, source, type"), "{body}");
}

#[test]
fn python_cloudevents_project_passes_its_tests_and_answers_events() {
    if !have("python3") {
        return;
    }
    let temp = init("python", "cloudevents");
    let dir = temp.path().join("hello");
    unit_tests(&dir, &["python3", "-m", "unittest"]);
    let harness = Harness::start(&dir, &["python3", "-u", "main.py"]);
    check_cloudevents(&harness);
    assert!(harness.stop().success(), "exit 0 after SIGTERM");
}

#[test]
fn node_cloudevents_project_passes_its_tests_and_answers_events() {
    if !have("node") {
        return;
    }
    let temp = init("node", "cloudevents");
    let dir = temp.path().join("hello");
    unit_tests(&dir, &["node", "--test"]);
    let harness = Harness::start(&dir, &["node", "index.js"]);
    check_cloudevents(&harness);
    assert!(harness.stop().success(), "exit 0 after SIGTERM");
}

/// `init` then `deploy --source DIR --runtime process`: the project's start command runs
/// as the service's instances, from the project's directory, and the URL answers from the
/// template; `serval.yaml`'s environment reaches the instance and a flag overrides it.
/// Without `--runtime process` it builds an image (see `build.rs`).
#[test]
fn a_project_deploys_from_source_as_a_process_and_answers() {
    if !have("python3") {
        return;
    }
    let temp = init("python", "http");
    let dir = temp.path().join("hello");
    let manifest = std::fs::read_to_string(dir.join("serval.yaml")).expect("serval.yaml");
    assert!(manifest.contains("env: {}"), "{manifest}");
    std::fs::write(dir.join("serval.yaml"), manifest.replace("env: {}", "env:\n  GREETING_SOURCE: yaml"))
        .expect("add env to serval.yaml");
    let source = dir.to_str().expect("utf-8 path");
    let server = support::Server::start(&[]);
    let url = server.ok(&["deploy", "hello", "--source", source, "--runtime", "process", "-e", "EXTRA=flag"]);
    assert!(url.contains("hello"), "{url}");
    let body = server.ok(&["invoke", "hello", "--path", "/?name=source"]);
    assert_eq!(body.trim_end(), "Hello, source!");
    let service = server.get_json(&["hello"]);
    let container = &service["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["workingDir"].as_str(), std::fs::canonicalize(&dir).ok().as_deref().and_then(Path::to_str));
    let env = container["env"].to_string();
    assert!(env.contains("GREETING_SOURCE") && env.contains("EXTRA"), "{env}");

    // Without --runtime process the image is built: a directory with neither a
    // Containerfile nor a language says so in one line.
    let bare = temp.path().to_str().expect("utf-8");
    let err = server.fails(&["deploy", "other", "--source", bare]);
    assert!(err.contains("no Containerfile or Dockerfile") && err.lines().count() == 1, "{err}");
    let err =
        server.fails(&["deploy", "other", "--source", temp.path().to_str().expect("utf-8"), "--runtime", "process"]);
    assert!(err.contains("cannot tell the language"), "{err}");
}

/// `serval dev`: the project runs as a process service; an edit of its handler is served
/// at the same URL after a reload that `dev` reports.
#[test]
fn dev_reloads_an_edited_handler() {
    if !have("python3") {
        return;
    }
    let temp = init("python", "http");
    let dir = temp.path().join("hello");
    let server = support::Server::start(&[]);
    let mut dev = server
        .process
        .cli_command()
        .args(["dev", dir.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serval dev");
    let stderr = dev.stderr.take().expect("stderr");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("serval dev never printed {what:?}"),
            }
        }
    };
    wait_for("watching");
    assert_eq!(server.ok(&["invoke", "hello", "--path", "/?name=dev"]).trim_end(), "Hello, dev!");

    let func = dir.join("func.py");
    let text = std::fs::read_to_string(&func).expect("func.py");
    std::fs::write(&func, text.replace("Hello, {name}!", "Howdy, {name}!")).expect("edit func.py");
    let reloaded = wait_for("reloaded");
    assert!(reloaded.contains("func.py"), "{reloaded}");
    assert_eq!(server.ok(&["invoke", "hello", "--path", "/?name=dev"]).trim_end(), "Howdy, dev!");
    let _ = dev.kill();
    let _ = dev.wait();
}

/// The Node template deploys from source as a process the same way.
#[test]
fn a_node_project_deploys_from_source_as_a_process_and_answers() {
    if !have("node") {
        return;
    }
    let temp = init("node", "http");
    let dir = temp.path().join("hello");
    let server = support::Server::start(&[]);
    server.ok(&["deploy", "hello", "--source", dir.to_str().expect("utf-8"), "--runtime", "process"]);
    assert_eq!(server.ok(&["invoke", "hello", "--path", "/?name=node"]).trim_end(), "Hello, node!");
}
