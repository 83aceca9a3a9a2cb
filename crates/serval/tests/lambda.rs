//! End-to-end tests of Lambda functions run unmodified with the real binary
//! (`serval.dev/protocol: lambda`): a Python handler on the host's interpreter through
//! serval's own runtime client, and a `provided.al2023`-style `bootstrap` shell script
//! using curl against the Runtime API; both called by URL through the gateway with Function
//! URL events. A handler that raises answers with its error, one that runs past the
//! function's timeout is ended (`Task timed out after 2.00 seconds`) and its instance
//! replaced.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

const HANDLER: &str = r#"import json
import time

def handler(event, context):
    path = event["rawPath"]
    if path == "/boom":
        raise ValueError("no such order")
    if path == "/slow":
        time.sleep(30)
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-handled-by": context.function_name},
        "body": json.dumps({
            "path": path,
            "query": event["queryStringParameters"],
            "method": event["requestContext"]["http"]["method"],
            "body": event["body"],
            "requestId": context.aws_request_id,
            "remainingMs": context.get_remaining_time_in_millis(),
            "arn": context.invoked_function_arn,
        }),
    }
"#;

const BOOTSTRAP: &str = r#"#!/bin/sh
# A custom runtime (provided.al2023): the Runtime API over curl.
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  REQUEST_ID="$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | cut -d: -f2 | tr -d '[:space:]')"
  LENGTH="$(printf '%s' "$EVENT" | wc -c | tr -d ' ')"
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \
    -d "{\"statusCode\": 200, \"headers\": {\"content-type\": \"text/plain\"}, \"body\": \"bash handled $REQUEST_ID ($LENGTH bytes of event)\"}"
  AGAIN="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$API/invocation/$REQUEST_ID/response" -d '{}')"
  echo "a second response for $REQUEST_ID: $AGAIN" >&2
  rm -f "$HEADERS"
done
"#;

fn apply(server: &Server, file: &str, text: &str) {
    let path = server.dir.join(file);
    std::fs::write(&path, text).expect("write");
    server.ok(&["apply", "-f", &path.display().to_string()]);
}

fn function_manifest(name: &str, runtime: &str, handler: &str, command: &str, dir: &std::path::Path) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
  annotations:
    serval.dev/protocol: lambda
    serval.dev/lambda-runtime: {runtime}
    serval.dev/lambda-handler: {handler}
spec:
  template:
    spec:
      timeoutSeconds: 2
      containers:
        - command: ["{command}"]
          workingDir: {dir}
"#,
        dir = dir.display()
    )
}

/// A function of one handler file (`file`: name and text) in its own directory, applied as
/// a Service with the Lambda protocol, run by `command`.
fn deploy_handler(server: &Server, name: &str, file: (&str, &str), runtime: &str, handler: &str, command: &str) {
    let code = server.dir.join(name);
    std::fs::create_dir_all(&code).expect("dir");
    std::fs::write(code.join(file.0), file.1).expect("handler");
    apply(server, &format!("{name}.yaml"), &function_manifest(name, runtime, handler, command, &code));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_runs_unmodified_behind_a_function_url() {
    let server = Server::start(&[]);
    deploy_handler(
        &server,
        "pyfn",
        ("lambda_function.py", HANDLER),
        "python3.12",
        "lambda_function.handler",
        "python3",
    );
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}/f/default/pyfn{path}", server.gateway);

    let answer = client.post(url("/orders?id=7&id=8")).body("hello").send().await.expect("answer");
    assert_eq!(answer.status(), 201, "the handler's statusCode");
    assert_eq!(answer.headers()["x-handled-by"], "pyfn");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["path"], "/orders");
    assert_eq!(body["query"]["id"], "7,8");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body"], "hello");
    assert_eq!(body["arn"], "arn:aws:lambda:us-east-1:000000000000:function:pyfn");
    let remaining = body["remainingMs"].as_u64().expect("a number");
    assert!(remaining > 0 && remaining <= 2_000, "the deadline is the function's timeout: {remaining}");
    let first_id = body["requestId"].as_str().expect("id").to_string();
    let again: Value = client.get(url("/")).send().await.expect("answer").json().await.expect("JSON");
    assert_ne!(again["requestId"], first_id.as_str(), "each invocation has its own id");

    let spoofed = client
        .post(url("/spoofed"))
        .header("x-serval-lambda-invoke", "$LATEST;00112233445566778899aabbccddeeff")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(spoofed.status(), 201, "a caller of the URL cannot pass for the Lambda API's Invoke");

    let boom = client.get(url("/boom")).send().await.expect("answer");
    assert_eq!(boom.status(), 502);
    assert_eq!(boom.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = boom.json().await.expect("JSON");
    assert_eq!(
        (error["errorType"].as_str(), error["errorMessage"].as_str()),
        (Some("ValueError"), Some("no such order"))
    );
    assert!(error["stackTrace"].as_array().is_some_and(|t| !t.is_empty()), "{error}");

    let slow = client.get(url("/slow")).send().await.expect("answer");
    assert_eq!(slow.status(), 504);
    let error: Value = slow.json().await.expect("JSON");
    assert_eq!(error["errorMessage"], "Task timed out after 2.00 seconds");
    // The stuck instance is replaced: the next call is served.
    let after = eventually("a call after the timeout", Duration::from_secs(20), async || {
        let answer = client.get(url("/after")).send().await.ok()?;
        (answer.status() == 201).then_some(answer)
    })
    .await;
    let body: Value = after.json().await.expect("JSON");
    assert_eq!(body["path"], "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_runtime_bootstrap_speaks_the_runtime_api_with_curl() {
    let server = Server::start(&[]);
    let code = server.dir.join("bashfn");
    std::fs::create_dir_all(&code).expect("dir");
    let bootstrap = code.join("bootstrap");
    std::fs::write(&bootstrap, BOOTSTRAP).expect("bootstrap");
    std::fs::set_permissions(&bootstrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let manifest =
        function_manifest("bashfn", "provided.al2023", "function.handler", &bootstrap.display().to_string(), &code);
    apply(&server, "bashfn.yaml", &manifest);
    let answer = reqwest::get(format!("{}/f/default/bashfn/hi", server.gateway)).await.expect("answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/plain");
    let text = answer.text().await.expect("text");
    assert!(text.starts_with("bash handled ") && text.contains("bytes of event"), "{text}");
    let request_id = text.split_whitespace().nth(2).expect("an id").to_string();
    let logs = eventually("the second response's status in the logs", Duration::from_secs(10), async || {
        let logs = server.ok(&["logs", "bashfn"]);
        logs.contains("a second response for").then_some(logs)
    })
    .await;
    assert!(logs.contains(&format!("a second response for {request_id}: 400")), "{logs}");
}

/// The curl bootstrap in an image of busybox and curl, run by runc: a Lambda function of
/// `PackageType: Image` runs its image's entrypoint, which reaches its Runtime API on the
/// host's loopback (instances share the host's network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_image_runs_its_entrypoint_in_a_container() {
    if !support::runc_available() {
        return;
    }
    let server = Server::start(&[]);
    let curl = serval_testimages::find_tool("curl").expect("curl on the host (the image's runtime client)");
    let mut files = serval_testimages::busybox_files().expect("busybox-static");
    files.extend(serval_testimages::binary_with_libs(&curl, "/usr/bin/curl").expect("curl and its libraries"));
    files.push((
        "/var/runtime/bootstrap".into(),
        serval_testimages::HostSource::Bytes { data: BOOTSTRAP.as_bytes().to_vec(), mode: 0o755 },
    ));
    let config = serval_testimages::ImageConfigSpec {
        entrypoint: vec!["/var/runtime/bootstrap".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        ..Default::default()
    };
    let archive = server.dir.join("lambda-image.tar");
    serval_testimages::write_docker_archive(&archive, "test/lambda-curl:1", &files, config).expect("archive");
    server.ok(&["image", "import", &archive.display().to_string()]);
    let manifest = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: imagefn
  annotations:
    serval.dev/protocol: lambda
    serval.dev/lambda-runtime: provided.al2023
spec:
  template:
    spec:
      timeoutSeconds: 5
      containers:
        - image: test/lambda-curl:1
"#;
    apply(&server, "imagefn.yaml", manifest);
    let answer = reqwest::get(format!("{}/f/default/imagefn/in-a-container", server.gateway)).await.expect("answer");
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.expect("text");
    assert!(text.starts_with("bash handled ") && text.contains("bytes of event"), "{text}");
}

/// The host's Python as an image's: the interpreter with its libraries and its standard
/// library (without its tests and tools), at the host's paths.
fn python_image_files() -> Vec<(String, serval_testimages::HostSource)> {
    use serval_testimages::HostSource;
    fn walk(dir: &std::path::Path, files: &mut Vec<(String, HostSource)>) {
        const LEFT_OUT: [&str; 10] = [
            "test",
            "site-packages",
            "dist-packages",
            "__pycache__",
            "idlelib",
            "tkinter",
            "lib2to3",
            "ensurepip",
            "pydoc_data",
            "turtledemo",
        ];
        files.push((dir.display().to_string(), HostSource::Dir { mode: 0o755 }));
        for entry in std::fs::read_dir(dir).expect("read the standard library").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !LEFT_OUT.contains(&name.as_str()) && !name.starts_with("config-") {
                    walk(&path, files);
                }
            } else if path.is_file() {
                files.push((path.display().to_string(), HostSource::File(path.clone())));
            }
        }
    }
    let interpreter = std::fs::canonicalize("/usr/bin/python3").expect("python3 on the host");
    let version = interpreter.file_name().expect("a name").to_string_lossy().to_string();
    let mut files = serval_testimages::busybox_files().expect("busybox-static");
    files.push(("/usr".into(), HostSource::Dir { mode: 0o755 }));
    files.push(("/usr/lib".into(), HostSource::Dir { mode: 0o755 }));
    files.extend(serval_testimages::binary_with_libs(&interpreter, "/usr/bin/python3").expect("python3"));
    walk(&std::path::Path::new("/usr/lib").join(version), &mut files);
    files
}

const IN_IMAGE_HANDLER: &str = r#"import os
def handler(event, context):
    try:
        open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "written"), "w")
        task = "writable"
    except OSError:
        task = "read-only"
    pid1 = open("/proc/1/cmdline").read().split("\0")[0]
    return {"statusCode": 200, "body": f"{os.getcwd()} {task} pid1={pid1} {os.environ['FROM_IMAGE']}"}
"#;

/// `serval server --lambda-image python3=IMAGE`: a python3.12 zip runs in that image (its
/// interpreter, serval's runtime client), the zip's directory bound in read-only at
/// /var/task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_zip_runs_in_the_image_configured_for_its_runtime() {
    if !support::runc_available() {
        return;
    }
    let server = Server::start(&["--lambda-image", "python3=test/python:3"]);
    let config = serval_testimages::ImageConfigSpec {
        env: vec!["PATH=/usr/bin:/bin".into(), "FROM_IMAGE=python-image".into()],
        ..Default::default()
    };
    let archive = server.dir.join("python-image.tar");
    serval_testimages::write_docker_archive(&archive, "test/python:3", &python_image_files(), config).expect("image");
    server.ok(&["image", "import", &archive.display().to_string()]);
    let dir = server.dir.join("in-image");
    std::fs::create_dir_all(&dir).expect("dir");
    let zip = zip_of(&dir, "fn.zip", &[("lambda_function.py", IN_IMAGE_HANDLER)]);
    server.ok(&[
        "deploy",
        "inimage",
        "--lambda-zip",
        &zip,
        "--handler",
        "lambda_function.handler",
        "--runtime",
        "python3.12",
    ]);
    let service = server.get_json(&["inimage"]);
    assert_eq!(service["spec"]["template"]["spec"]["containers"][0]["image"], "test/python:3");
    let answer = reqwest::get(format!("{}/f/default/inimage/", server.gateway)).await.expect("answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("text"), "/var/task read-only pid1=python3 python-image");
}

/// A zip of `files` (name, text), made with Python's standard `zipfile` module.
fn zip_of(dir: &std::path::Path, zip: &str, files: &[(&str, &str)]) -> String {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let zip_path = dir.join(zip);
    let _ = std::fs::remove_file(&zip_path);
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c", &zip_path.display().to_string()])
        .args(files.iter().map(|(name, _)| *name))
        .current_dir(dir)
        .status()
        .expect("python3 -m zipfile");
    assert!(status.success(), "zip made");
    zip_path.display().to_string()
}

const VERSIONED_HANDLER: &str = r#"import os
def handler(event, context):
    return {"statusCode": 200, "body": os.environ["GREETING"] + " from code NUMBER, " + os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] + " MB"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serval_deploy_lambda_zip_creates_then_updates_a_function() {
    let server = Server::start(&[]);
    let dir = server.dir.join("zipfn");
    std::fs::create_dir_all(&dir).expect("dir");
    let deploy = |zip: &str, env: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "zipfn", "--lambda-zip", zip, "--handler", "lambda_function.handler"];
        args.extend(["--runtime", "python3.12", "--env", env]);
        args.extend(extra);
        server.ok(&args)
    };
    let first = zip_of(&dir, "one.zip", &[("lambda_function.py", &VERSIONED_HANDLER.replace("NUMBER", "1"))]);
    let url = deploy(&first, "GREETING=hello", &[]);
    assert!(url.contains("zipfn"), "deploy prints the function's URL: {url}");
    let call = async || {
        let answer = reqwest::get(format!("{}/f/default/zipfn/", server.gateway)).await.expect("answer");
        assert_eq!(answer.status(), 200);
        answer.text().await.expect("text")
    };
    assert_eq!(call().await, "hello from code 1, 128 MB");

    let second = zip_of(&dir, "two.zip", &[("lambda_function.py", &VERSIONED_HANDLER.replace("NUMBER", "2"))]);
    deploy(&second, "GREETING=hi", &["--memory", "256", "--timeout", "5"]);
    assert_eq!(call().await, "hi from code 2, 256 MB", "the deploy waited for the updated function");
    let service = server.get_json(&["zipfn"]);
    assert_eq!(service["metadata"]["annotations"]["serval.dev/protocol"], "lambda");
    assert_eq!(service["spec"]["template"]["spec"]["timeoutSeconds"], 5);

    let refused =
        server.fails(&["deploy", "rubyfn", "--lambda-zip", &second, "--handler", "h.h", "--runtime", "ruby3.3"]);
    assert!(refused.contains("InvalidParameterValueException") && refused.contains("ruby3.3"), "{refused}");
    let refused = server.fails(&["deploy", "zipfn", "--cmd", "true", "--runtime", "python3.12"]);
    assert!(refused.contains("goes with --source or --lambda-zip"), "{refused}");
    let refused = server.fails(&["deploy", "zipfn", "--lambda-zip", &second, "--runtime", "python3.12"]);
    assert!(refused.contains("--handler"), "{refused}");

    // What the Lambda API started (the function's runner and instance) stops with the server.
    let mut server = server;
    let child = &mut server.process.child;
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let stopped = eventually("the server stops on SIGTERM", Duration::from_secs(15), async || {
        child.try_wait().ok().flatten().map(|_| ())
    });
    stopped.await;
}

const NODE_HANDLER: &str = r#"exports.handler = async (event, context) => {
  if (event.rawPath === "/boom") {
    throw new TypeError("no such basket");
  }
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ path: event.rawPath, body: event.body, fn: context.functionName, node: process.version }),
  };
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_handler_runs_unmodified_behind_a_function_url() {
    let node_found = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node_found {
        assert!(
            std::env::var("SERVAL_REQUIRE_NODE").as_deref() != Ok("1"),
            "SERVAL_REQUIRE_NODE=1 but no node on PATH"
        );
        return support::skip("no node on PATH");
    }
    let server = Server::start(&[]);
    deploy_handler(&server, "nodefn", ("index.js", NODE_HANDLER), "nodejs20.x", "index.handler", "node");
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}/f/default/nodefn{path}", server.gateway);
    let answer = client.post(url("/baskets")).body("three apples").send().await.expect("answer");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!((body["path"].as_str(), body["body"].as_str()), (Some("/baskets"), Some("three apples")), "{body}");
    assert_eq!(body["fn"], "nodefn");
    let boom = client.get(url("/boom")).send().await.expect("answer");
    assert_eq!(boom.status(), 502);
    let error: Value = boom.json().await.expect("JSON");
    assert_eq!(
        (error["errorType"].as_str(), error["errorMessage"].as_str()),
        (Some("TypeError"), Some("no such basket"))
    );
}

const RIC_HANDLER: &str = r#"import json, sys

def handler(event, context):
    if event["rawPath"] == "/boom":
        raise KeyError("basket")
    client = [m for m in ("awslambdaric.bootstrap",) if m in sys.modules]
    return {"statusCode": 200, "body": json.dumps({"path": event["rawPath"], "id": context.aws_request_id, "client": client})}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslambdaric_from_pypi_runs_a_function_as_its_runtime_client() {
    let Some(python) = support::python_with("awslambdaric", "SERVAL_REQUIRE_BOTO3") else { return };
    let server = Server::start(&[]);
    let code = server.dir.join("ricfn");
    std::fs::create_dir_all(&code).expect("dir");
    std::fs::write(code.join("lambda_function.py"), RIC_HANDLER).expect("handler");
    let bootstrap = code.join("bootstrap");
    std::fs::write(&bootstrap, format!("#!/bin/sh\nexec {python} -m awslambdaric \"$_HANDLER\"\n")).expect("bootstrap");
    std::fs::set_permissions(&bootstrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let manifest = function_manifest(
        "ricfn",
        "provided.al2023",
        "lambda_function.handler",
        &bootstrap.display().to_string(),
        &code,
    );
    apply(&server, "ricfn.yaml", &manifest);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}/f/default/ricfn{path}", server.gateway);
    let answer = client.get(url("/apples")).send().await.expect("answer");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["path"], "/apples");
    assert_eq!(body["client"], serde_json::json!(["awslambdaric.bootstrap"]), "run by awslambdaric: {body}");
    assert!(body["id"].as_str().is_some_and(|id| id.len() == 36), "{body}");
    let boom = client.get(url("/boom")).send().await.expect("answer");
    assert_eq!(boom.status(), 502);
    let error: Value = boom.json().await.expect("JSON");
    assert_eq!(error["errorType"], "KeyError", "{error}");
}

const BOTO3_SCRIPT: &str = r#"
import base64, io, json, os, sys, time, urllib.request, zipfile
import boto3, botocore

endpoint, key, secret, mark = sys.argv[1:5]
def client(secret=secret):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30))
aws = client()

def marked_event():
    """What the handler wrote to `mark` for an Event invocation (waiting up to 30 s for it)."""
    for _ in range(300):
        if os.path.exists(mark):
            break
        time.sleep(0.1)
    return json.load(open(mark))
code = io.BytesIO()
with zipfile.ZipFile(code, "w") as z:
    z.writestr("lambda_function.py", '''
import json, os, time
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("mark"):
        with open(event["mark"] + ".tmp", "w") as f:
            f.write(json.dumps(dict(event, arn=context.invoked_function_arn)))
        os.replace(event["mark"] + ".tmp", event["mark"])
    print("handling", event.get("name"))
    return {"greeting": os.environ["GREETING"] + ", " + event.get("name", "?"), "version": context.function_version}
''')
created = aws.create_function(FunctionName="hello", Runtime="python3.12", Role="arn:aws:iam::000000000000:role/x",
                              Handler="lambda_function.handler", Code={"ZipFile": code.getvalue()}, Timeout=2,
                              Environment={"Variables": {"GREETING": "hi"}})
assert created["FunctionName"] == "hello" and created["Runtime"] == "python3.12", created
aws.get_waiter("function_active_v2").wait(FunctionName="hello", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
assert aws.get_function(FunctionName="hello")["Configuration"]["State"] == "Active"

r = aws.invoke(FunctionName="hello", Payload=json.dumps({"name": "Ana"}))
assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "$LATEST", r
assert json.loads(r["Payload"].read()) == {"greeting": "hi, Ana", "version": "$LATEST"}

r = aws.invoke(FunctionName="hello", Payload=json.dumps({"name": "Tailed"}), LogType="Tail")
log = base64.b64decode(r["LogResult"]).decode()
assert "handling Tailed" in log and "REPORT RequestId:" in log and len(r["LogResult"]) <= 4096 * 4 // 3 + 4, log
assert json.loads(r["Payload"].read())["greeting"] == "hi, Tailed"

r = aws.invoke(FunctionName="hello", Payload=json.dumps({"fail": True}))
assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled", r
error = json.loads(r["Payload"].read())
assert error["errorType"] == "RuntimeError" and error["errorMessage"] == "asked to fail", error

assert aws.invoke(FunctionName="hello", InvocationType="DryRun")["StatusCode"] == 204

r = aws.invoke(FunctionName="hello", InvocationType="Event", Payload=json.dumps({"name": "later", "mark": mark}))
assert r["StatusCode"] == 202, r
marked = marked_event()
assert marked["name"] == "later" and marked["arn"].endswith(":function:hello"), "the Event invocation ran"

r = aws.invoke(FunctionName="hello", Payload=json.dumps({"sleep": 10}))
assert r.get("FunctionError") == "Unhandled", r
assert "Task timed out after 2.00 seconds" in r["Payload"].read().decode()

try:
    aws.invoke(FunctionName="nobody", Payload=b"{}")
    raise AssertionError("an unknown function was invoked")
except aws.exceptions.ResourceNotFoundException:
    pass
try:
    client(secret="wrong").list_functions()
    raise AssertionError("a bad signature was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403

# Versions and aliases: a version keeps running its code and settings after $LATEST moves on.
v1 = aws.publish_version(FunctionName="hello", Description="first")
assert v1["Version"] == "1" and v1["FunctionArn"].endswith(":function:hello:1") and v1["Description"] == "first", v1
assert aws.publish_version(FunctionName="hello")["Version"] == "1", "unchanged, $LATEST is version 1 already"
updated = aws.update_function_configuration(FunctionName="hello", Environment={"Variables": {"GREETING": "hello"}}, Timeout=3)
assert updated["Version"] == "$LATEST", updated
aws.get_waiter("function_updated_v2").wait(FunctionName="hello", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
configuration = aws.get_function_configuration(FunctionName="hello")
assert configuration["Environment"]["Variables"] == {"GREETING": "hello"} and configuration["Timeout"] == 3, configuration
assert aws.get_function_configuration(FunctionName="hello", Qualifier="1")["Timeout"] == 2
assert aws.publish_version(FunctionName="hello")["Version"] == "2"
assert [v["Version"] for v in aws.list_versions_by_function(FunctionName="hello")["Versions"]] == ["$LATEST", "1", "2"]

def greet(function, name, qualifier=None):
    extra = {"Qualifier": qualifier} if qualifier else {}
    r = aws.invoke(FunctionName=function, Payload=json.dumps({"name": name}), **extra)
    assert r["StatusCode"] == 200 and "FunctionError" not in r, r
    return r["ExecutedVersion"], json.loads(r["Payload"].read())["greeting"]

assert greet("hello", "Ana", "1") == ("1", "hi, Ana")
assert greet("hello:2", "Ana") == ("2", "hello, Ana")
assert greet("hello", "Ana") == ("$LATEST", "hello, Ana")
with urllib.request.urlopen(endpoint + "/f/default/v1-hello/") as answer:
    assert json.loads(answer.read())["greeting"] == "hi, ?", "version 1 has a URL of its own"

alias = aws.create_alias(FunctionName="hello", Name="live", FunctionVersion="1", Description="production")
assert alias["AliasArn"].endswith(":function:hello:live") and alias["FunctionVersion"] == "1", alias
assert greet("hello", "Bo", "live") == ("1", "hi, Bo")
os.remove(mark)
r = aws.invoke(FunctionName="hello", Qualifier="live", InvocationType="Event", Payload=json.dumps({"name": "queued", "mark": mark}))
assert r["StatusCode"] == 202, r
marked = marked_event()
assert marked["name"] == "queued" and marked["arn"].endswith(":function:hello:live"), marked
aws.update_alias(FunctionName="hello", Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
assert aws.get_alias(FunctionName="hello", Name="live")["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}
counts = {"1": 0, "2": 0}
for i in range(200):
    version, greeting = greet("hello", "Cy", "live")
    assert greeting == {"1": "hi, Cy", "2": "hello, Cy"}[version], (version, greeting)
    counts[version] += 1
assert 30 <= counts["2"] <= 90, f"30 % of 200 invocations should run version 2: {counts}"
print("weighted alias:", counts)

code = io.BytesIO()
with zipfile.ZipFile(code, "w") as z:
    z.writestr("lambda_function.py", "def handler(event, context):\n    return {'greeting': 'new code for ' + event['name']}\n")
v3 = aws.update_function_code(FunctionName="hello", ZipFile=code.getvalue(), Publish=True)
assert v3["Version"] == "3" and v3["CodeSha256"] != v1["CodeSha256"], v3
assert greet("hello", "Di") == ("$LATEST", "new code for Di")
assert greet("hello", "Di", "1") == ("1", "hi, Di"), "version 1 still runs its own code"
try:
    aws.delete_function(FunctionName="hello", Qualifier="2")
    raise AssertionError("a version an alias uses was deleted")
except aws.exceptions.ResourceConflictException:
    pass
aws.delete_alias(FunctionName="hello", Name="live")
aws.delete_function(FunctionName="hello", Qualifier="1")
assert [v["Version"] for v in aws.list_versions_by_function(FunctionName="hello")["Versions"]] == ["$LATEST", "2", "3"]
try:
    aws.invoke(FunctionName="hello", Qualifier="1", Payload=b"{}")
    raise AssertionError("a deleted version was invoked")
except aws.exceptions.ResourceNotFoundException:
    pass

assert [f["FunctionName"] for f in aws.list_functions()["Functions"]] == ["hello"]
aws.delete_function(FunctionName="hello")
try:
    aws.get_function(FunctionName="hello")
    raise AssertionError("a deleted function was found")
except aws.exceptions.ResourceNotFoundException:
    pass
print("boto3: all checks passed")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_creates_updates_versions_aliases_invokes_and_deletes_a_python_function() {
    let Some(python) = support::python_with("boto3", "SERVAL_REQUIRE_BOTO3") else { return };
    let server = Server::start(&[]);
    let exports = server.ok(&["credentials", "aws"]);
    let value = |name: &str| {
        exports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} in {exports}"))
            .to_string()
    };
    assert_eq!(value("AWS_ENDPOINT_URL_LAMBDA"), server.gateway);
    let script = server.dir.join("boto3_check.py");
    std::fs::write(&script, BOTO3_SCRIPT).expect("script");
    let mark = server.dir.join("event-ran.json");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&server.gateway, &value("AWS_ACCESS_KEY_ID"), &value("AWS_SECRET_ACCESS_KEY")])
        .arg(&mark)
        .output()
        .await
        .expect("run python");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "boto3 checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("boto3: all checks passed"), "{stdout}");
    print!("{stdout}");
}
