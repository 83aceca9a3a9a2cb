//! The Serverless Workflow conformance kit (`../shared/conformance/serverless-workflow/ctk/`):
//! every scenario of its Gherkin features run through the engine by a small runner of the
//! steps its README defines. Scenarios that call public hosts (petstore.swagger.io,
//! httpbin.org) reach a local stub server instead: only the host part of their URLs is
//! rewritten. The examples of the kit parse and pass the engine's checks.
//! `SERVAL_REQUIRE_CONFORMANCE=1` makes a missing kit a failure.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_workflow::{Effects, HttpRequest, HttpResponse, Outcome, Phase, Workflow};

/// The kit, or `None` (after saying why) when it is absent and not required.
fn kit() -> Option<PathBuf> {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("../shared/conformance/serverless-workflow");
        if candidate.is_dir() {
            return Some(candidate);
        }
        if !dir.pop() {
            break;
        }
    }
    if std::env::var_os("SERVAL_REQUIRE_CONFORMANCE").is_some() {
        panic!("the Serverless Workflow conformance kit is missing (../shared/conformance/serverless-workflow)");
    }
    eprintln!("skipped: the Serverless Workflow conformance kit is not here");
    None
}

/// The stub standing in for the public hosts the kit calls.
struct Stub {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pet(id: u64) -> Value {
    json!({"id": id, "name": format!("pet-{id}"), "status": "available", "category": {"id": 1, "name": "dogs"}})
}

/// What the public hosts answer, by path (the Swagger 2 document names the operations the
/// OpenAPI scenarios call).
fn answer(path_and_query: &str, authorization: Option<&str>) -> (u16, Value) {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v2", "swagger.json"] => (
            200,
            json!({
                "swagger": "2.0", "host": "petstore.swagger.io", "basePath": "/v2", "schemes": ["https"],
                "paths": {
                    "/pet/findByStatus": {"get": {"operationId": "findPetsByStatus",
                        "parameters": [{"name": "status", "in": "query", "type": "string"}]}},
                    "/pet/{petId}": {"get": {"operationId": "getPetById",
                        "parameters": [{"name": "petId", "in": "path", "type": "integer"}]}}
                }
            }),
        ),
        ["v2", "pet", "findByStatus"] if query.contains("status=available") => (200, json!([pet(1), pet(2)])),
        ["v2", "pet", "getPetByName", _] => (404, json!({"code": 1, "type": "error", "message": "Pet not found"})),
        ["v2", "pet", id] => match id.parse() {
            Ok(id) => (200, pet(id)),
            Err(_) => (404, json!({"message": "Pet not found"})),
        },
        ["basic-auth", user, password] => {
            use base64::Engine as _;
            let expected =
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            if authorization == Some(expected.as_str()) {
                (200, json!({"authenticated": true, "user": user}))
            } else {
                (401, json!({"authenticated": false}))
            }
        }
        _ => (404, json!({"message": "not found"})),
    }
}

impl Stub {
    async fn start() -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let authorization =
                            req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                        let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
                        let (status, body) = answer(&path, authorization.as_deref());
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                            .expect("response");
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Stub { addr, task }
    }
}

/// The engine's effects in the test: HTTP to the stub (the host rewritten), events kept,
/// time simulated (a wait advances the clock at once).
struct TestEffects {
    stub: std::net::SocketAddr,
    client: reqwest::Client,
    emitted: Mutex<Vec<Value>>,
    slept: Mutex<Duration>,
    ids: AtomicU64,
}

impl TestEffects {
    fn new(stub: std::net::SocketAddr) -> TestEffects {
        TestEffects {
            stub,
            client: reqwest::Client::new(),
            emitted: Mutex::default(),
            slept: Mutex::default(),
            ids: AtomicU64::new(1),
        }
    }

    /// `https://host/path` → `http://<stub>/path`: only the host part changes.
    fn rewrite(&self, uri: &str) -> String {
        let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        format!("http://{}{path}", self.stub)
    }
}

impl Effects for TestEffects {
    fn http(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
            let mut call = self.client.request(method, self.rewrite(&request.uri));
            for (name, value) in &request.headers {
                call = call.header(name.as_str(), value.as_str());
            }
            if let Some(body) = &request.body {
                call = call.json(body);
            }
            let response = call.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let body = response.bytes().await.map_err(|e| e.to_string())?.to_vec();
            Ok(HttpResponse { status, headers, body })
        })
    }

    fn emit(&self, event: Value) -> BoxFuture<'_, Result<(), String>> {
        self.emitted.lock().expect("lock").push(event);
        Box::pin(async { Ok(()) })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        *self.slept.lock().expect("lock") += duration;
        Box::pin(async {})
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + *self.slept.lock().expect("lock")
    }

    fn new_id(&self) -> String {
        format!("id-{}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("YAML in the kit: {e}\n{text}"))
}

/// The value at a dotted path (`error.instance`).
fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// The names in quotes of a step (`'a', 'b.c'`).
fn quoted(text: &str) -> Vec<String> {
    text.split('\'').skip(1).step_by(2).map(str::to_string).collect()
}

/// The position of a task's first completion in the run.
fn position(outcome: &Outcome, task: &str) -> usize {
    outcome
        .journal
        .iter()
        .filter(|r| r.phase == Phase::Completed)
        .position(|r| r.name == task)
        .unwrap_or_else(|| panic!("{task} did not run: {:?}", outcome.completed()))
}

/// Runs one scenario's steps; `Err` says which step failed and why.
async fn scenario(steps: &[gherkin::Step], stub: std::net::SocketAddr) -> Result<(), String> {
    let mut workflow: Option<Workflow> = None;
    let mut input = json!({});
    let mut outcome: Option<Outcome> = None;
    for step in steps {
        let text = step.value.trim();
        let doc = step.docstring.as_deref().map(|d| d.trim_start_matches("yaml").trim_start_matches('\n'));
        let ran = || outcome.as_ref().ok_or("no run yet".to_string());
        let output = || ran().and_then(|o| o.output.clone().map_err(|e| format!("the workflow faulted: {e}")));
        if text.starts_with("a workflow with definition") {
            workflow = Some(Workflow::parse(doc.unwrap_or_default()).map_err(|e| format!("definition: {e}"))?);
        } else if text.starts_with("given the workflow input is") || text.starts_with("the workflow input is") {
            input = yaml(doc.unwrap_or_default());
        } else if text == "the workflow is executed" {
            let effects = TestEffects::new(stub);
            let definition = workflow.as_ref().ok_or("no workflow defined")?;
            outcome = Some(serval_workflow::run(definition, input.clone(), &effects).await);
        } else if text.starts_with("the workflow should complete") {
            let output = output()?;
            if let Some(expected) = doc {
                let expected = yaml(expected);
                if output != expected {
                    return Err(format!("output {output} is not {expected}"));
                }
            }
        } else if text.starts_with("the workflow should fault") {
            let error = match &ran()?.output {
                Ok(output) => return Err(format!("the workflow completed with {output}")),
                Err(e) => e.to_value(),
            };
            if let Some(expected) = doc {
                for (field, wanted) in yaml(expected).as_object().into_iter().flatten() {
                    if error.get(field) != Some(wanted) {
                        return Err(format!("error {field} is {:?}, not {wanted}", error.get(field)));
                    }
                }
            }
        } else if text.starts_with("the workflow output should have properties") {
            let output = output()?;
            for path in quoted(text) {
                if at(&output, &path).is_none() {
                    return Err(format!("the output has no {path}: {output}"));
                }
            }
        } else if text.starts_with("the workflow output should have a") && text.contains("property with value") {
            let output = output()?;
            let path = quoted(text).into_iter().next().unwrap_or_default();
            let wanted = yaml(doc.unwrap_or_default());
            if at(&output, &path) != Some(&wanted) {
                return Err(format!("output {path} is {:?}, not {wanted}", at(&output, &path)));
            }
        } else if text.contains("property containing") {
            let output = output()?;
            let path = quoted(text).into_iter().next().unwrap_or_default();
            let count: usize = text.split_whitespace().rev().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            let found = at(&output, &path).and_then(Value::as_array).map(Vec::len);
            if found != Some(count) {
                return Err(format!("output {path} has {found:?} items, not {count}"));
            }
        } else if let Some(task) = text.strip_suffix(" should run first") {
            let o = ran()?;
            let first = o.journal.iter().find(|r| r.phase == Phase::Started).map(|r| r.name.as_str());
            if first != Some(task) {
                return Err(format!("{first:?} ran first, not {task}"));
            }
        } else if let Some(task) = text.strip_suffix(" should run last") {
            let o = ran()?;
            let last = o.completed().last().copied();
            if last != Some(task) {
                return Err(format!("{last:?} ran last, not {task}"));
            }
        } else if let Some((task, other)) = text.split_once(" should run after ") {
            let o = ran()?;
            if position(o, task) <= position(o, other) {
                return Err(format!("{task} did not run after {other}: {:?}", o.completed()));
            }
        } else if let Some((task, other)) = text.split_once(" should run before ") {
            let o = ran()?;
            if position(o, task) >= position(o, other) {
                return Err(format!("{task} did not run before {other}: {:?}", o.completed()));
            }
        } else {
            return Err(format!("no runner for the step {text:?}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_scenario_of_the_conformance_kit_passes() {
    let Some(kit) = kit() else { return };
    let stub = Stub::start().await;
    let mut features: Vec<PathBuf> = std::fs::read_dir(kit.join("ctk/features"))
        .expect("features")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    features.sort();
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for path in &features {
        let feature = gherkin::Feature::parse_path(path, gherkin::GherkinEnv::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for s in &feature.scenarios {
            let name = format!("{}: {}", feature.name, s.name);
            match scenario(&s.steps, stub.addr).await {
                Ok(()) => passed.push(name),
                Err(why) => failed.push(format!("{name}: {why}")),
            }
        }
    }
    println!("{} scenarios passed: {passed:#?}", passed.len());
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failed.len(),
        passed.len() + failed.len(),
        failed.join("\n")
    );
    assert_eq!(passed.len(), 21, "the kit has 21 scenarios");
}

#[test]
fn the_examples_of_the_kit_parse_and_pass_the_checks() {
    let Some(kit) = kit() else { return };
    let mut examples: Vec<PathBuf> =
        std::fs::read_dir(kit.join("examples")).expect("examples").filter_map(Result::ok).map(|e| e.path()).collect();
    examples.sort();
    assert_eq!(examples.len(), 20);
    for path in examples {
        let text = std::fs::read_to_string(&path).expect("read");
        let workflow = Workflow::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!workflow.tasks().is_empty(), "{}", path.display());
    }
}
