//! AWS Lambda compatibility: functions written for Lambda run unmodified as serval
//! services whose instances speak the Lambda Runtime API instead of serving HTTP
//! (`serval.dev/protocol: lambda`).
//!
//! Owns: the Runtime API each instance pulls its invocations from ([`runtime_api`], one
//! loopback port per instance, `AWS_LAMBDA_RUNTIME_API`), [`LambdaRuntime`] — a
//! [`Runtime`] wrapped around the process or OCI runtime that gives each instance its
//! Runtime API and Lambda's environment, counts it ready at its first `invocation/next`, and
//! serves the gateway's requests in process by invoking it one at a time, ending a stuck
//! invocation at the function's timeout (`Task timed out after N.00 seconds`, the instance
//! replaced) —, Function URL events for HTTP requests ([`function_url`], payload format
//! 2.0), and the runtime clients of serval's own (standard library only) that run
//! `python3.x` and `nodejs*` handlers on the host's interpreters.
//! Must not depend on: the control plane, the gateway or the store; it is given the inner
//! runtime and the function's settings.

pub mod function_url;
pub mod runtime_api;
pub mod sigv4;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Response, StatusCode};
use runtime_api::{Invocation, Outcome, Phase, RuntimeApi};
use serval_runtime::{
    Endpoint, ExitInfo, InProcessHandler, Instance, InstanceControl, InstanceSpec, LogSink, Readiness, Runtime,
    RuntimeError, Workload,
};
use tokio::sync::{oneshot, watch};

/// A request carrying this field, as [`invoke_marker`] writes it, is an invocation with its
/// body as the payload (the Lambda Invoke API's), answered as Invoke answers (200;
/// `X-Amz-Function-Error` on an error); others are Function URL requests. It names the
/// version the invocation runs (`$LATEST` or a number), as `X-Amz-Executed-Version` and the
/// log's `START` line say, and carries a secret of the server's, so that a caller of a
/// function's URL cannot pass for the Lambda API.
pub const INVOKE_HEADER: &str = "x-serval-lambda-invoke";
/// With [`INVOKE_HEADER`]: the qualifier the caller named (a version or an alias), which
/// ends the invoked function ARN the runtime is given.
pub const QUALIFIER_HEADER: &str = "x-serval-lambda-qualifier";

static INVOKE_SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Derives the secret [`INVOKE_HEADER`] carries from `key` (the server's AWS secret key, so
/// that invocations queued before a restart are still recognised after it); before this is
/// called, or when it was called already, the secret stays as it is.
pub fn init_invoke_secret(key: &str) {
    let digest = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes()),
        b"serval invoke",
    );
    let _ = INVOKE_SECRET.set(sigv4::hex(&digest.as_ref()[..16]));
}

/// The secret [`INVOKE_HEADER`] carries: [`init_invoke_secret`]'s, else a random one.
fn invoke_secret() -> &'static str {
    INVOKE_SECRET.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // Without the system's randomness (never seen), the time is still not a caller's guess.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            bytes = nanos.to_le_bytes();
        }
        sigv4::hex(&bytes)
    })
}

/// The [`INVOKE_HEADER`] value of an invocation that runs `version`.
pub fn invoke_marker(version: &str) -> String {
    format!("{version};{}", invoke_secret())
}

/// The version an [`INVOKE_HEADER`] value names, when this process wrote it.
fn invoked_version(value: &str) -> Option<&str> {
    let (version, secret) = value.rsplit_once(';')?;
    let genuine = aws_lc_rs::constant_time::verify_slices_are_equal(secret.as_bytes(), invoke_secret().as_bytes());
    (genuine.is_ok() && is_qualifier(version)).then_some(version)
}

/// A qualifier as Lambda allows one (`$LATEST`, a version number or an alias name), so
/// that it can go into an ARN.
pub fn is_qualifier(text: &str) -> bool {
    text == "$LATEST"
        || (!text.is_empty()
            && text.len() <= 128
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// serval's runtime client for `python3.x` handlers, run as `python3 -c`.
pub const PYTHON_BOOTSTRAP: &str = include_str!("bootstrap.py");
/// serval's runtime client for `nodejs*` handlers, run as `node -e`.
pub const NODE_BOOTSTRAP: &str = include_str!("bootstrap.js");

/// How a runtime whose handlers serval's own client runs is started: the interpreter (a
/// function's command), the flag that takes a script, and the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeClient {
    pub interpreter: &'static str,
    pub flag: &'static str,
    pub script: &'static str,
}

/// serval's runtime client for `runtime` (`python…` and `nodejs…`); `None` for runtimes
/// that bring their own (`provided.*`, images).
pub fn runtime_client(runtime: &str) -> Option<RuntimeClient> {
    if runtime.starts_with("python") {
        Some(RuntimeClient { interpreter: "python3", flag: "-c", script: PYTHON_BOOTSTRAP })
    } else if runtime.starts_with("nodejs") {
        Some(RuntimeClient { interpreter: "node", flag: "-e", script: NODE_BOOTSTRAP })
    } else {
        None
    }
}

/// Errors of the Lambda layer.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The instance's Runtime API stopped.
    #[error("the function's runtime stopped")]
    Stopped,
}

/// What a function is, for its instances' environment.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSettings {
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: String,
    /// `AWS_LAMBDA_FUNCTION_VERSION` (`$LATEST` or a number).
    pub version: String,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB.
    pub memory_mb: u64,
    /// `AWS_REGION`.
    pub region: String,
    /// `_HANDLER`, e.g. `lambda_function.handler`.
    pub handler: Option<String>,
    /// The Lambda runtime (`python3.12`, `provided.al2023`…): a `python3.x` function's
    /// command is the interpreter, which runs serval's runtime client.
    pub runtime: Option<String>,
    /// How long one invocation may run.
    pub timeout: Duration,
}

impl FunctionSettings {
    /// The function's ARN as its runtime sees it.
    pub fn arn(&self) -> String {
        format!("arn:aws:lambda:{}:000000000000:function:{}", self.region, self.name)
    }
}

/// A runtime whose instances speak the Lambda Runtime API (see the crate's docs).
pub struct LambdaRuntime {
    inner: Arc<dyn Runtime>,
    settings: FunctionSettings,
}

impl LambdaRuntime {
    pub fn new(inner: Arc<dyn Runtime>, settings: FunctionSettings) -> LambdaRuntime {
        LambdaRuntime { inner, settings }
    }

    /// What the inner runtime starts: Lambda's environment added, ready once started (the
    /// Runtime API says when it really is), a `python3.x` command running serval's client.
    fn inner_spec(&self, mut spec: InstanceSpec, api: Option<&RuntimeApi>) -> InstanceSpec {
        let s = &self.settings;
        let mut env = vec![
            ("AWS_LAMBDA_FUNCTION_NAME".to_string(), s.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION".to_string(), s.version.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(), s.memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_TIMEOUT".to_string(), s.timeout.as_secs().to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME".to_string(), format!("/aws/lambda/{}", s.name)),
            ("AWS_LAMBDA_LOG_STREAM_NAME".to_string(), spec.instance_id.clone()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE".to_string(), "on-demand".to_string()),
            ("AWS_REGION".to_string(), s.region.clone()),
            ("AWS_DEFAULT_REGION".to_string(), s.region.clone()),
        ];
        if let Some(handler) = &s.handler {
            env.push(("_HANDLER".to_string(), handler.clone()));
        }
        if let Some(runtime) = &s.runtime {
            env.push(("AWS_EXECUTION_ENV".to_string(), format!("AWS_Lambda_{runtime}")));
        }
        if let Some(root) = &spec.working_dir {
            env.push(("LAMBDA_TASK_ROOT".to_string(), root.clone()));
        }
        if let Some(api) = api {
            env.push(("AWS_LAMBDA_RUNTIME_API".to_string(), api.addr.to_string()));
        }
        // The platform's variables win over the function's own (as on Lambda).
        spec.env.extend(env);
        spec.readiness = Readiness::Started;
        match (s.runtime.as_deref().and_then(runtime_client), &mut spec.workload) {
            (Some(client), Workload::Process { argv }) => {
                argv.truncate(1);
                argv.extend([client.flag.to_string(), client.script.to_string()]);
            }
            // A zip run in an image: the image's interpreter runs the client.
            (Some(client), Workload::Container(settings)) if !settings.command.is_empty() => {
                settings.command.truncate(1);
                settings.args = vec![client.flag.to_string(), client.script.to_string()];
            }
            _ => {}
        }
        spec
    }
}

impl Runtime for LambdaRuntime {
    fn start(&self, spec: InstanceSpec, logs: LogSink) -> BoxFuture<'static, Result<Instance, RuntimeError>> {
        let (inner, settings) = (self.inner.clone(), self.settings.clone());
        let startup_timeout = spec.startup_timeout;
        let id = spec.instance_id.clone();
        let this = LambdaRuntime { inner: inner.clone(), settings: settings.clone() };
        async move {
            let began = Instant::now();
            let api = RuntimeApi::start().await.map_err(|e| match e {
                LambdaError::Io(e) => RuntimeError::Io(e),
                other => RuntimeError::Io(std::io::Error::other(other.to_string())),
            })?;
            let tail = Arc::new(LogTail::default());
            let tee: LogSink = {
                let tail = tail.clone();
                Arc::new(move |line: serval_runtime::LogLine| {
                    tail.push(&line.text);
                    logs(line);
                })
            };
            let instance = Arc::new(inner.start(this.inner_spec(spec, Some(&api)), tee).await?);
            let mut phase = api.phase();
            let ready = tokio::select! {
                phase = phase.wait_for(|p| *p != Phase::Starting) => match phase.map(|p| p.clone()) {
                    Ok(Phase::InitFailed(why)) => Err(format!("the function's init failed: {why}")),
                    _ => Ok(()),
                },
                exit = instance.exited() => {
                    return Err(RuntimeError::ExitedBeforeReady { exit, last_lines: Vec::new(), port_taken: None });
                }
                () = tokio::time::sleep(startup_timeout) => Err(format!(
                    "its runtime did not ask for an invocation within {startup_timeout:?}"
                )),
            };
            if let Err(why) = ready {
                let exit = instance.stop(Duration::ZERO).await;
                return Err(RuntimeError::StartTimeout {
                    after: began.elapsed(),
                    last_check: format!("{why} ({exit})"),
                    last_lines: Vec::new(),
                });
            }
            let (exit_tx, exit) = watch::channel(None);
            let watched = instance.clone();
            tokio::spawn(async move {
                let _ = exit_tx.send(Some(watched.exited().await));
            });
            let api = Arc::new(api);
            let invoker = Invoker {
                api: api.clone(),
                instance: instance.clone(),
                settings,
                ids: AtomicU64::new(0),
                id: id.clone(),
                tail,
            };
            let bridge = Bridge(Arc::new(invoker));
            let control = Box::new(Control { instance, _api: api });
            Ok(Instance::new(id, Endpoint::InProcess(Arc::new(bridge)), began.elapsed(), exit, control))
        }
        .boxed()
    }

    fn check(&self, spec: &InstanceSpec) -> Result<(), String> {
        self.inner.check(&self.inner_spec(spec.clone(), None))
    }

    fn prepare(&self, spec: &InstanceSpec) -> BoxFuture<'static, Result<(), RuntimeError>> {
        self.inner.prepare(&self.inner_spec(spec.clone(), None))
    }

    fn release(&self, namespace: &str, revision: &str) {
        self.inner.release(namespace, revision);
    }

    fn serves_in_process(&self) -> bool {
        true
    }
}

/// The newest lines an instance wrote (for `X-Amz-Log-Type: Tail`), numbered.
#[derive(Default)]
struct LogTail {
    lines: std::sync::Mutex<std::collections::VecDeque<(u64, String)>>,
    next: AtomicU64,
}

/// The request field asking for the invocation's log (`Tail`), as Invoke takes it.
const LOG_TYPE: &str = "x-amz-log-type";
/// How long a `Tail` invocation waits for the runtime's last output lines to arrive.
const TAIL_SETTLE: Duration = Duration::from_millis(20);
/// Lines kept per instance.
const TAIL_LINES: usize = 200;
/// The most of an invocation's log `X-Amz-Log-Result` carries (Lambda's 4 KB).
const TAIL_BYTES: usize = 4096;

impl LogTail {
    fn push(&self, text: &str) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back((n, text.to_string()));
    }

    /// The number the next line will get.
    fn position(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The lines numbered `from` on.
    fn since(&self, from: u64) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().filter(|(n, _)| *n >= from).map(|(_, text)| text.clone()).collect()
    }
}

/// An invocation's log as Lambda shows it: `START`, the lines, `END` and `REPORT`; its last
/// [`TAIL_BYTES`] bytes.
fn invocation_log(request_id: &str, version: &str, lines: &[String], took: Duration, memory_mb: u64) -> String {
    let ms = took.as_secs_f64() * 1000.0;
    let mut log = format!("START RequestId: {request_id} Version: {version}\n");
    for line in lines {
        log.push_str(line);
        log.push('\n');
    }
    log.push_str(&format!(
        "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {memory_mb} MB\t\n",
        ms.ceil() as u64
    ));
    let mut start = log.len().saturating_sub(TAIL_BYTES);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_string()
}

/// Stops the instance; its Runtime API goes with the last reference.
struct Control {
    instance: Arc<Instance>,
    _api: Arc<RuntimeApi>,
}

impl InstanceControl for Control {
    fn stop(&self, grace: Duration) -> BoxFuture<'static, ExitInfo> {
        self.instance.stop(grace)
    }
}

/// The gateway's requests to one instance, as invocations of its runtime.
struct Bridge(Arc<Invoker>);

/// What the bridge's calls share: the instance, its Runtime API and the function.
struct Invoker {
    api: Arc<RuntimeApi>,
    instance: Arc<Instance>,
    settings: FunctionSettings,
    ids: AtomicU64,
    /// The instance's id, in request ids.
    id: String,
    /// Its newest log lines.
    tail: Arc<LogTail>,
}

impl Invoker {
    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let hash = self.id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            hash,
            (nanos >> 48) as u16,
            (n >> 12) & 0xfff,
            n & 0xfff,
            (nanos & 0xffff_ffff_ffff) as u64
        )
    }

    /// Runs one invocation: its outcome, or `None` when the function's time ran out (the
    /// instance is then killed, so that the next invocation gets a fresh one).
    async fn invoke(
        &self,
        request_id: String,
        payload: Bytes,
        content_type: Option<String>,
        invoked_arn: String,
    ) -> Option<Result<Outcome, LambdaError>> {
        let (answer, outcome) = oneshot::channel();
        let invocation = Invocation {
            request_id: request_id.clone(),
            payload,
            content_type,
            deadline: SystemTime::now() + self.settings.timeout,
            trace_id: format!("Root=1-{}-{};Sampled=0", &request_id[..8], request_id.replace('-', "")),
            invoked_arn,
            client_context: None,
            answer,
        };
        let run = async {
            self.api.invoke(invocation).await?;
            outcome.await.map_err(|_| LambdaError::Stopped)
        };
        match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(outcome) => Some(outcome),
            Err(_) => {
                let instance = self.instance.clone();
                tokio::spawn(async move { instance.stop(Duration::ZERO).await });
                None
            }
        }
    }

    /// The message of a timed-out invocation (the emulator's words).
    fn timed_out(&self) -> String {
        format!("Task timed out after {}.00 seconds", self.settings.timeout.as_secs())
    }
}

impl InProcessHandler for Bridge {
    /// A request through the gateway: a Function URL event in and the result as the
    /// response, or (with [`INVOKE_HEADER`]) the body as the payload, answered as Invoke.
    fn call(&self, request: http::Request<Bytes>) -> BoxFuture<'static, http::Response<Bytes>> {
        let this = self.0.clone();
        let (parts, body) = request.into_parts();
        let field = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let invoked = field(INVOKE_HEADER).and_then(invoked_version);
        let raw = invoked.is_some();
        let version = invoked.unwrap_or(&this.settings.version).to_string();
        let invoked_arn = match field(QUALIFIER_HEADER).filter(|q| is_qualifier(q)) {
            Some(qualifier) if raw => format!("{}:{qualifier}", this.settings.arn()),
            _ => this.settings.arn(),
        };
        let request_id = this.request_id();
        let payload = if raw {
            body
        } else {
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let event = function_url::event(
                &request_id,
                &this.settings.name,
                parts.method.as_str(),
                &target,
                &parts.headers,
                &body,
                SystemTime::now(),
            );
            Bytes::from(event.to_string())
        };
        let wants_tail = raw && parts.headers.get(LOG_TYPE).is_some_and(|v| v.as_bytes() == b"Tail");
        let (from, began) = (this.tail.position(), Instant::now());
        async move {
            let outcome = this.invoke(request_id.clone(), payload, Some("application/json".into()), invoked_arn).await;
            let took = began.elapsed();
            let log_result = if wants_tail {
                // The runtime's output comes over a pipe: give its last lines a moment.
                tokio::time::sleep(TAIL_SETTLE).await;
                let lines = this.tail.since(from);
                let log = invocation_log(&request_id, &version, &lines, took, this.settings.memory_mb);
                http::HeaderValue::from_str(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, log))
                    .ok()
            } else {
                None
            };
            let mut response = this.answer(raw.then_some(version.as_str()), outcome);
            if let Some(value) = log_result {
                response.headers_mut().insert("x-amz-log-result", value);
            }
            response
        }
        .boxed()
    }
}

impl Invoker {
    /// The answer to an invocation: Invoke's (200; `X-Amz-Function-Error` on an error) when
    /// it ran as Invoke, the `version` it ran given, else a Function URL's.
    fn answer(&self, invoked: Option<&str>, outcome: Option<Result<Outcome, LambdaError>>) -> Response<Bytes> {
        let raw = invoked.is_some();
        let version = invoked.unwrap_or(&self.settings.version);
        // Invoke answers 200 whatever the function did; a Function URL answers 5xx.
        let failed = |status: StatusCode, body: Bytes| {
            Response::builder()
                .status(if raw { StatusCode::OK } else { status })
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-amz-function-error", "Unhandled")
                .header("x-amz-executed-version", version)
                .body(body)
                .unwrap_or_default()
        };
        match outcome {
            Some(Ok(Outcome::Response { body, content_type })) if raw => Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, content_type.as_deref().unwrap_or("application/json"))
                .header("x-amz-executed-version", version)
                .body(body)
                .unwrap_or_default(),
            Some(Ok(Outcome::Response { body, .. })) => function_url::response(&body),
            Some(Ok(Outcome::Error { body, .. })) => failed(StatusCode::BAD_GATEWAY, body),
            Some(Err(e)) => failed(
                StatusCode::BAD_GATEWAY,
                Bytes::from(
                    serde_json::json!({"errorMessage": e.to_string(), "errorType": "Runtime.ExitError"}).to_string(),
                ),
            ),
            None => failed(
                StatusCode::GATEWAY_TIMEOUT,
                Bytes::from(
                    serde_json::json!({"errorMessage": self.timed_out(), "errorType": "Sandbox.Timeout"}).to_string(),
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_marks_an_invocation() {
        assert_eq!(invoked_version(&invoke_marker("3")), Some("3"));
        assert_eq!(invoked_version(&invoke_marker("$LATEST")), Some("$LATEST"));
        assert_eq!(invoked_version("3;0123456789abcdef0123456789abcdef"), None, "a guessed secret");
        assert_eq!(invoked_version("1"), None, "no secret");
        assert_eq!(invoked_version(&invoke_marker("a b")), None, "not a qualifier");
    }
}
