//! The Lambda Runtime API (`/2018-06-01/runtime/…`) one instance of a function talks to, on
//! a loopback port of its own (`AWS_LAMBDA_RUNTIME_API`): the runtime pulls invocations
//! with `GET invocation/next` (a long poll), answers each on `invocation/{id}/response` or
//! `…/error`, and reports a failed start on `init/error`. One invocation at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::LambdaError;

/// The largest payload in either direction (the runtime interface emulator's limit).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;
const PREFIX: &str = "/2018-06-01/runtime/";

/// One invocation handed to the runtime.
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// The caller's content type (`application/json` when it gave none).
    pub content_type: Option<String>,
    /// When the function's time is up.
    pub deadline: SystemTime,
    pub trace_id: String,
    /// The ARN the caller invoked (with its version or alias, if it named one).
    pub invoked_arn: String,
    /// The caller's client context (JSON), passed on as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    pub answer: oneshot::Sender<Outcome>,
}

/// How the runtime answered an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `invocation/{id}/response`: the function's result.
    Response { body: Bytes, content_type: Option<String> },
    /// `invocation/{id}/error`: an error of the function (its type normalised as the
    /// emulator does) and the error document the runtime sent.
    Error { error_type: String, body: Bytes },
}

/// Where the runtime is in its start.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Starting,
    /// It asked for its first invocation: ready.
    Ready,
    /// It reported a failed start (`init/error`), with what it sent.
    InitFailed(String),
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// The invocation being run: its id and where its outcome goes.
    current: Mutex<Option<(String, oneshot::Sender<Outcome>)>>,
    phase: watch::Sender<Phase>,
}

/// A running Runtime API server for one instance; stops when dropped.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    invocations: mpsc::Sender<Invocation>,
    phase: watch::Receiver<Phase>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves the Runtime API on a free loopback port.
    pub async fn start() -> Result<RuntimeApi, LambdaError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (invocations, queue) = mpsc::channel(1);
        let (phase_tx, phase) = watch::channel(Phase::Starting);
        let shared =
            Arc::new(Shared { queue: tokio::sync::Mutex::new(queue), current: Mutex::new(None), phase: phase_tx });
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi { addr, invocations, phase, server })
    }

    /// The runtime's start phase, as it changes.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.clone()
    }

    /// Hands an invocation to the runtime (waits while one runs); `Err` when the API stopped.
    pub async fn invoke(&self, invocation: Invocation) -> Result<(), LambdaError> {
        self.invocations.send(invocation).await.map_err(|_| LambdaError::Stopped)
    }
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({ "errorMessage": message, "errorType": error_type }).to_string();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn accepted() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(br#"{"status":"OK"}"#)))
        .unwrap_or_default()
}

async fn serve(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error_response(StatusCode::NOT_FOUND, "NotFound", &format!("no such path: {path}"));
    };
    match (req.method().clone(), rest.split('/').collect::<Vec<_>>().as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(shared).await,
        (Method::POST, ["invocation", id, "response"]) => {
            let id = id.to_string();
            let content_type = header(&req, http::header::CONTENT_TYPE.as_str());
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(refused) => return refused,
            };
            answer(shared, &id, Outcome::Response { body, content_type })
        }
        (Method::POST, ["invocation", id, "error"]) => {
            let id = id.to_string();
            let error_type = normalised_error_type(header(&req, "lambda-runtime-function-error-type").as_deref());
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(refused) => return refused,
            };
            answer(shared, &id, Outcome::Error { error_type, body })
        }
        (Method::POST, ["init", "error"]) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(refused) => return refused,
            };
            if *shared.phase.borrow() != Phase::Starting {
                return error_response(StatusCode::FORBIDDEN, "InvalidStateTransition", "init/error after the start");
            }
            shared.phase.send_replace(Phase::InitFailed(String::from_utf8_lossy(&body).into_owned()));
            accepted()
        }
        _ => error_response(StatusCode::NOT_FOUND, "NotFound", &format!("no such path: {path}")),
    }
}

fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_PAYLOAD).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."),
        )),
    }
}

/// `GET invocation/next`: the next invocation, when one comes.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    if matches!(*shared.phase.borrow(), Phase::InitFailed(_)) {
        return error_response(StatusCode::FORBIDDEN, "InvalidStateTransition", "the runtime reported init/error");
    }
    shared.phase.send_if_modified(|phase| {
        let starting = *phase == Phase::Starting;
        if starting {
            *phase = Phase::Ready;
        }
        starting
    });
    // An invocation the runtime asks past without answering gets no answer (its caller
    // sees the runtime gone).
    shared.current.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(invocation) = shared.queue.lock().await.recv().await else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "the instance is stopping");
    };
    let deadline_ms = invocation.deadline.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("lambda-runtime-aws-request-id", &invocation.request_id)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", &invocation.invoked_arn)
        .header("lambda-runtime-trace-id", &invocation.trace_id)
        .header(http::header::CONTENT_TYPE, invocation.content_type.as_deref().unwrap_or("application/json"));
    if let Some(context) = &invocation.client_context {
        response = response.header("lambda-runtime-client-context", context);
    }
    *shared.current.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((invocation.request_id.clone(), invocation.answer));
    response.body(Full::new(invocation.payload)).unwrap_or_default()
}

/// The runtime's answer to the invocation `id`: 202, or 400 when `id` is not the one
/// running (already answered, or never given).
fn answer(shared: &Shared, id: &str, outcome: Outcome) -> Response<Full<Bytes>> {
    let mut current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
    match current.take() {
        Some((running, to)) if running == id => {
            let _ = to.send(outcome);
            accepted()
        }
        other => {
            *current = other;
            error_response(StatusCode::BAD_REQUEST, "InvalidRequestID", &format!("Invalid request ID: {id:?}"))
        }
    }
}

/// The emulator's rule for error types: `Runtime.X` and `Function.X` (X capitalised) are
/// kept, any other `Function.…` is `Function.Unknown`, anything else `Runtime.Unknown`.
pub fn normalised_error_type(given: Option<&str>) -> String {
    let Some(given) = given else { return "Runtime.Unknown".into() };
    let well_formed = |rest: &str| {
        rest.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && rest.len() > 1
            && rest.chars().all(|c| c.is_ascii_alphabetic())
    };
    match given.split_once('.') {
        Some(("Runtime" | "Function", rest)) if well_formed(rest) => given.to_string(),
        Some(("Function", _)) => "Function.Unknown".into(),
        _ => "Runtime.Unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_normalised_as_the_emulator_does() {
        assert_eq!(normalised_error_type(Some("Runtime.ExitError")), "Runtime.ExitError");
        assert_eq!(normalised_error_type(Some("Function.ResponseSizeTooLarge")), "Function.ResponseSizeTooLarge");
        assert_eq!(normalised_error_type(Some("Function.lower")), "Function.Unknown");
        assert_eq!(normalised_error_type(Some("Unhandled")), "Runtime.Unknown");
        assert_eq!(normalised_error_type(None), "Runtime.Unknown");
    }
}
