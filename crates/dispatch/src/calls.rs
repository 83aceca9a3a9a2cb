//! Async calls: requests to a service that ask to be answered later (`Prefer:
//! respond-async`, or OpenFaaS's `/async-function/<service>[.<namespace>]/…`), stored in the
//! service's durable queue (a log, `calls/<ns>/<service>`) before the `202` with their
//! `X-Call-Id`, then replayed through the data plane by the service's drainer — so they scale
//! the service from zero and wait for its capacity like any request — with the service's
//! retries (`serval.dev/async-retries`, backing off 1 s, 2 s, 4 s…) within its maximum age
//! (`serval.dev/async-max-age`). When a call ends, its `X-Callback-Url` gets the response (as
//! OpenFaaS sends it), the service's on-success or on-failure destination a CloudEvent with
//! Lambda's destination record, and the service's results log (`callresults/…`, the newest
//! [`KEPT_RESULTS`]) its outcome, for `serval calls`.
//!
//! At-least-once: the queue's cursor is the drainer's watermark (see [`LogReader`]); a
//! crash replays the calls after it, so a call can run (and call back) twice, never zero
//! times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serval_eventing::{BackoffPolicy, CloudEvent, Decision, Outcome, RetryAfter, RetryPolicy};
use serval_gateway::{AsyncQueue, ProxyBody, prefers_async};
use serval_model::{AsyncSettings, Resource, Service};
use serval_store::{ResourceStoreExt, WriteOp};
use tokio::sync::{Notify, watch};

use crate::DispatchError;
use crate::delivery::{Answer, DeliveryUrl, Dispatchers, LogReader, exchange_local};
use crate::ingress::answer_with;
use crate::plan::resolve;

/// The largest request body a call may carry (Lambda's payload limit for invocations).
pub const MAX_CALL_BODY: usize = 6 * 1024 * 1024;
/// Calls of one service in flight at once (each also waits in the service's pool for
/// capacity, as any request does).
const CALL_CONCURRENCY: usize = 100;
/// Re-read a queue this often without a notification (a safety net: every append notifies).
const CALL_POLL: Duration = Duration::from_secs(10);
/// The wait before a call's first retry; it doubles for each next one.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Outcomes kept per service for `serval calls`.
pub const KEPT_RESULTS: u32 = 1000;
/// The most of a response body kept in a call's stored outcome (the callback and the
/// destinations get all of it).
const KEPT_BODY: usize = 4096;
/// Attempts to hand an outcome to the callback URL or a destination.
const NOTIFY_ATTEMPTS: u32 = 3;
/// The answer field of a Lambda function's error (its status stays 200, as Invoke's).
const FUNCTION_ERROR: &str = "x-amz-function-error";
/// The request field naming where the outcome is POSTed (OpenFaaS's).
const CALLBACK_FIELD: &str = "x-callback-url";
/// Fields of the request's own framing, not stored: the replay sends the whole body
/// (its length from it), and nothing waits for a `100 Continue`.
const REFRAMED: [&str; 3] = ["content-length", "transfer-encoding", "expect"];
/// The methods an async call may use (the `Allow` of the queue's answers).
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The id of a service's queue of calls in the store (a log, and its cursor).
pub fn calls_log(namespace: &str, service: &str) -> String {
    format!("calls/{namespace}/{service}")
}

/// The id of a service's log of call outcomes in the store.
pub fn call_results_log(namespace: &str, service: &str) -> String {
    format!("callresults/{namespace}/{service}")
}

/// A call as queued: the request to replay and where its outcome goes.
#[derive(Debug, Serialize, Deserialize)]
struct QueuedCall {
    id: String,
    /// When it was accepted, in Unix milliseconds.
    accepted: u64,
    method: String,
    /// Origin-form target, as the service's route takes it.
    target: String,
    headers: Vec<(String, String)>,
    /// The body, base64.
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback: Option<String>,
    /// `body` decoded, once, when the call is run (`None`: not base64, which no attempt can
    /// send).
    #[serde(skip)]
    decoded: Option<Bytes>,
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
}

/// A call as `serval calls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub id: String,
    pub state: CallState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was accepted (RFC 3339).
    pub accepted: String,
    /// The last attempt's status (none: no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it ended: Lambda's `Success`, `RetriesExhausted` or `EventAgeExceeded`, or
    /// `ServiceDeleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The last attempt's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The start of the final response's body (text; up to 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// One service's queue while the server runs: its drainer's wake-up, and the calls being
/// tried now.
#[derive(Default)]
struct Queue {
    waker: Arc<Notify>,
    live: Mutex<HashMap<String, CallRecord>>,
    /// Tells the drainer to stop.
    stop: Option<watch::Sender<bool>>,
}

impl Queue {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallRecord>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The async call queues of all services, and their drainers.
pub struct AsyncCalls {
    /// Itself, for the drainers it spawns from `&self` (the gateway holds it as a trait object).
    this: Weak<AsyncCalls>,
    dispatchers: Arc<Dispatchers>,
    /// The gateway's URL, `http://host:port`, for resolving destinations.
    gateway: String,
    queues: Mutex<HashMap<(String, String), Arc<Queue>>>,
    ids: AtomicU64,
}

impl AsyncCalls {
    pub fn new(dispatchers: Arc<Dispatchers>, gateway: String) -> Arc<AsyncCalls> {
        Arc::new_cyclic(|this| AsyncCalls {
            this: this.clone(),
            dispatchers,
            gateway,
            queues: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
        })
    }

    /// Starts the drainers of the services with queued calls (after a restart).
    pub fn resume(&self) -> Result<(), DispatchError> {
        let store = self.dispatchers.store();
        for service in store.list::<Service>(Service::KIND, None)? {
            let (namespace, name) = (&service.metadata.namespace, &service.metadata.name);
            let log = calls_log(namespace, name);
            if store.count_events_after(&log, store.cursor(&log)?)? > 0 {
                self.queue(namespace, name);
            }
        }
        Ok(())
    }

    /// Stops every drainer.
    pub fn stop_all(&self) {
        for queue in self.queues.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if let Some(stop) = &queue.stop {
                let _ = stop.send(true);
            }
        }
    }

    /// A service's queue, its drainer started if it has none.
    fn queue(&self, namespace: &str, service: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), service.to_string());
        if let Some(queue) = queues.get(&key) {
            return queue.clone();
        }
        let (stop, stopped) = watch::channel(false);
        let queue = Arc::new(Queue { stop: Some(stop), ..Queue::default() });
        queues.insert(key, queue.clone());
        if let Some(this) = self.this.upgrade() {
            tokio::spawn(this.drain(namespace.to_string(), service.to_string(), queue.clone(), stopped));
        }
        queue
    }

    fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{:011x}{:05x}", unix_ms(SystemTime::now()), n & 0xfffff)
    }

    /// Stores a call and answers 202 with its id; 413 for a body over [`MAX_CALL_BODY`], 400
    /// for a header that is not text or a callback that is not an http(s) URL.
    async fn accept(&self, namespace: String, service: String, req: Request<ProxyBody>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_CALL_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let why = format!("the body could not be read ({e}); a call carries at most {MAX_CALL_BODY} bytes");
                return answer_with(StatusCode::PAYLOAD_TOO_LARGE, ALLOW, &why);
            }
        };
        let mut callback = None;
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let Ok(text) = value.to_str() else {
                return answer_with(
                    StatusCode::BAD_REQUEST,
                    ALLOW,
                    &format!("header {name}: a call's fields are text"),
                );
            };
            if name == CALLBACK_FIELD {
                match reqwest::Url::parse(text) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => callback = Some(text.to_string()),
                    _ => {
                        let why = format!("header {CALLBACK_FIELD}: {text:?} is not an http(s) URL");
                        return answer_with(StatusCode::BAD_REQUEST, ALLOW, &why);
                    }
                }
            } else {
                let asks_async = name == "prefer" && prefers_async(value.as_bytes());
                if !(asks_async || REFRAMED.contains(&name.as_str())) {
                    headers.push((name.to_string(), text.to_string()));
                }
            }
        }
        let id = self.new_id();
        let call = QueuedCall {
            id: id.clone(),
            accepted: unix_ms(SystemTime::now()),
            method: parts.method.to_string(),
            target: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            headers,
            body: base64::engine::general_purpose::STANDARD.encode(&body),
            callback,
            decoded: None,
        };
        let log = calls_log(&namespace, &service);
        let stored = match serde_json::to_string(&call) {
            Ok(json) => self.dispatchers.store().write(vec![WriteOp::append_event(&log, json)]).await,
            Err(e) => return answer_with(StatusCode::INTERNAL_SERVER_ERROR, ALLOW, &e.to_string()),
        };
        if let Err(e) = stored {
            return answer_with(StatusCode::INTERNAL_SERVER_ERROR, ALLOW, &format!("the call was not stored: {e}"));
        }
        self.queue(&namespace, &service).waker.notify_waiters();
        let mut accepted = answer_with(StatusCode::ACCEPTED, ALLOW, "");
        if let Ok(value) = HeaderValue::from_str(&id) {
            accepted.headers_mut().insert(HeaderName::from_static("x-call-id"), value);
        }
        accepted
    }

    /// Runs a service's queue until told to stop.
    async fn drain(
        self: Arc<Self>,
        namespace: String,
        service: String,
        queue: Arc<Queue>,
        stopped: watch::Receiver<bool>,
    ) {
        let (log, results) = (calls_log(&namespace, &service), call_results_log(&namespace, &service));
        let store = self.dispatchers.store();
        let reader = LogReader {
            store,
            log: &log,
            consumer: &log,
            concurrency: CALL_CONCURRENCY,
            waker: queue.waker.clone(),
            poll: CALL_POLL,
            what: format!("async calls of {namespace}/{service}"),
        };
        let (this, queue, namespace, service) = (&self, &queue, &namespace, &service);
        let start = |stored: serval_store::StoredEvent| match serde_json::from_str::<QueuedCall>(&stored.body) {
            Ok(call) => Some(this.run(namespace, service, call, queue)),
            Err(e) => {
                tracing::error!("async calls of {namespace}/{service}: stored call {} is skipped: {e}", stored.seq);
                None
            }
        };
        // Handled calls leave the queue with the cursor; outcomes beyond the newest kept go.
        let on_save = |cursor: i64| {
            let mut ops = vec![WriteOp::delete_events_up_to(&log, cursor, 10_000)];
            if let Ok(Some(oldest_kept)) = store.nth_newest_event_seq(&results, KEPT_RESULTS) {
                ops.push(WriteOp::delete_events_up_to(&results, oldest_kept - 1, 10_000));
            }
            ops
        };
        reader.consume(stopped, start, on_save).await;
    }

    /// A service's async settings now (one read of the stored Service per call); `None` once it is gone.
    fn settings(&self, namespace: &str, service: &str) -> Option<AsyncSettings> {
        let stored: Option<Service> = self.dispatchers.store().get(Service::KIND, namespace, service).ok().flatten();
        // Admission checked them; a value it would refuse now falls back to the defaults.
        stored.map(|s| serval_model::async_settings(&s).unwrap_or_else(|_| default_settings()))
    }

    /// Tries a call until it succeeds, fails for good or grows too old; then hands its
    /// outcome to the callback, the destination and the results log.
    async fn run(&self, namespace: &str, service: &str, mut call: QueuedCall, queue: &Queue) {
        let accepted = UNIX_EPOCH + Duration::from_millis(call.accepted);
        let mut record = CallRecord {
            id: call.id.clone(),
            state: CallState::Running,
            attempts: 0,
            accepted: humantime::format_rfc3339_millis(accepted).to_string(),
            status: None,
            condition: None,
            duration_seconds: None,
            result: None,
        };
        call.decoded = base64::engine::general_purpose::STANDARD.decode(&call.body).ok().map(Bytes::from);
        let Some(settings) = self.settings(namespace, service) else {
            record.state = CallState::Failed;
            record.condition = Some("ServiceDeleted".into());
            return self.finish(namespace, service, &call, record, None, None).await;
        };
        let policy = RetryPolicy {
            retry: settings.retries,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: RETRY_DELAY,
            ..RetryPolicy::default()
        };
        let deadline = accepted + settings.max_age;
        let answer = loop {
            if SystemTime::now() >= deadline {
                record.condition = Some("EventAgeExceeded".into());
                break None;
            }
            record.attempts += 1;
            record.state = CallState::Running;
            queue.live().insert(call.id.clone(), record.clone());
            let began = Instant::now();
            let answer = self.attempt(&call).await;
            record.duration_seconds = Some(began.elapsed().as_secs_f64());
            record.status = answer.as_ref().map(|a| a.status);
            let outcome = answer.as_ref().map_or(Outcome::NoResponse, |a| {
                let retry_after = a.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
                let retry_after = retry_after.and_then(|v| RetryAfter::parse(v, SystemTime::now()));
                // A Lambda function's error comes in a 200, as Invoke answers it; retried too.
                let status = if a.headers.contains_key(FUNCTION_ERROR) { 502 } else { a.status };
                Outcome::Status(status, retry_after)
            });
            match policy.decide(record.attempts, outcome, Instant::now()) {
                Decision::Done => {
                    record.condition = Some("Success".into());
                    break answer;
                }
                Decision::RetryAt(at)
                    if SystemTime::now() + at.saturating_duration_since(Instant::now()) < deadline =>
                {
                    record.state = CallState::Retrying;
                    queue.live().insert(call.id.clone(), record.clone());
                    tokio::time::sleep_until(at.into()).await;
                }
                Decision::RetryAt(_) => {
                    record.condition = Some("EventAgeExceeded".into());
                    break answer;
                }
                Decision::DeadLetter { .. } => {
                    record.condition = Some("RetriesExhausted".into());
                    break answer;
                }
            }
        };
        record.state =
            if record.condition.as_deref() == Some("Success") { CallState::Succeeded } else { CallState::Failed };
        self.finish(namespace, service, &call, record, answer, Some(settings)).await;
        queue.live().remove(&call.id);
    }

    /// One attempt: the stored request through the data plane, as a client's.
    async fn attempt(&self, call: &QueuedCall) -> Option<Answer> {
        let local = self.dispatchers.local()?;
        let body = call.decoded.clone()?;
        let mut req = Request::builder().method(call.method.as_str()).uri(call.target.as_str());
        for (name, value) in &call.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        exchange_local(local, req.body(body).ok()?).await
    }

    /// A call's outcome: to its callback, to the service's destination for it, into the
    /// results log.
    async fn finish(
        &self,
        namespace: &str,
        service: &str,
        call: &QueuedCall,
        mut record: CallRecord,
        answer: Option<Answer>,
        settings: Option<AsyncSettings>,
    ) {
        if let Some(callback) = &call.callback {
            self.call_back(callback, &record, answer.as_ref()).await;
        }
        let destination =
            settings.and_then(|s| if record.state == CallState::Succeeded { s.on_success } else { s.on_failure });
        if let Some(destination) = destination {
            let request = call.decoded.as_deref().unwrap_or_default();
            self.to_destination(namespace, service, &destination, request, &record, answer.as_ref()).await;
        }
        record.result =
            answer.as_ref().map(|a| String::from_utf8_lossy(&a.body[..a.body.len().min(KEPT_BODY)]).into_owned());
        let results = call_results_log(namespace, service);
        match serde_json::to_string(&record) {
            Ok(json) => {
                if let Err(e) = self.dispatchers.store().write(vec![WriteOp::append_event(&results, json)]).await {
                    tracing::warn!("async call {} of {namespace}/{service}: storing its outcome: {e}", call.id);
                }
            }
            Err(e) => tracing::warn!("async call {}: {e}", call.id),
        }
    }

    /// POSTs the response to the call's callback URL with OpenFaaS's fields.
    async fn call_back(&self, callback: &str, record: &CallRecord, answer: Option<&Answer>) {
        let Ok(to) = DeliveryUrl::parse(callback, &self.gateway) else { return };
        let mut headers = HeaderMap::new();
        if let Some(content_type) = answer.and_then(|a| a.headers.get(http::header::CONTENT_TYPE)) {
            headers.insert(http::header::CONTENT_TYPE, content_type.clone());
        }
        let fields = [
            ("x-call-id", record.id.clone()),
            ("x-function-status", record.status.map_or_else(|| "502".to_string(), |s| s.to_string())),
            ("x-duration-seconds", format!("{:.6}", record.duration_seconds.unwrap_or(0.0))),
        ];
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let body = answer.map(|a| a.body.clone()).unwrap_or_default();
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match self.dispatchers.post_raw(&to, headers.clone(), body.clone(), None).await {
                Some(a) if (200..300).contains(&a.status) => return,
                _ if attempt < NOTIFY_ATTEMPTS => tokio::time::sleep(RETRY_DELAY * attempt).await,
                _ => tracing::warn!("async call {}: the callback {callback} did not take the outcome", record.id),
            }
        }
    }

    /// Sends Lambda's destination record of a call as a CloudEvent to `destination`.
    async fn to_destination(
        &self,
        namespace: &str,
        service: &str,
        destination: &serval_model::Destination,
        request: &[u8],
        record: &CallRecord,
        answer: Option<&Answer>,
    ) {
        let resolved = match resolve(destination, namespace, &self.gateway) {
            Ok(resolved) => resolved,
            Err(why) => return tracing::warn!("async calls of {namespace}/{service}: the destination: {why}"),
        };
        let Some(event) = destination_record(namespace, service, record, request, answer) else { return };
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match self.dispatchers.send(&resolved, &event, false, None, false).await {
                (Outcome::Status(200..=299, _), _, _) => return,
                _ if attempt < NOTIFY_ATTEMPTS => tokio::time::sleep(RETRY_DELAY * attempt).await,
                _ => tracing::warn!("async call {}: {} did not take its destination record", record.id, resolved.url),
            }
        }
    }

    /// The service's calls, newest first, at most `limit`: those queued or being tried now,
    /// then the kept outcomes.
    pub fn calls(&self, namespace: &str, service: &str, limit: usize) -> Result<Vec<CallRecord>, DispatchError> {
        let store = self.dispatchers.store();
        let log = calls_log(namespace, service);
        let live: HashMap<String, CallRecord> = {
            let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let queue = queues.get(&(namespace.to_string(), service.to_string()));
            queue.map(|q| q.live().clone()).unwrap_or_default()
        };
        let results = call_results_log(namespace, service);
        let after = match store.nth_newest_event_seq(&results, u32::try_from(limit).unwrap_or(u32::MAX))? {
            Some(oldest) => oldest - 1,
            None => 0,
        };
        let mut ended: Vec<CallRecord> = store
            .events_after(&results, after, limit)?
            .iter()
            .filter_map(|e| serde_json::from_str(&e.body).ok())
            .collect();
        ended.reverse();
        let mut seen: std::collections::HashSet<String> = ended.iter().map(|c| c.id.clone()).collect();
        let mut calls = Vec::new();
        for stored in store.events_after(&log, store.cursor(&log)?, limit)? {
            let Ok(call) = serde_json::from_str::<QueuedCall>(&stored.body) else { continue };
            // Ended, its cursor not saved yet: listed with its outcome.
            if seen.contains(&call.id) {
                continue;
            }
            calls.push(live.get(&call.id).cloned().unwrap_or_else(|| CallRecord {
                id: call.id.clone(),
                state: CallState::Queued,
                attempts: 0,
                accepted:
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(call.accepted)).to_string(),
                status: None,
                condition: None,
                duration_seconds: None,
                result: None,
            }));
        }
        calls.reverse();
        // A call replayed after a crash may have ended twice: its newest outcome counts.
        seen.clear();
        calls.extend(ended.into_iter().filter(|c| seen.insert(c.id.clone())));
        calls.truncate(limit);
        Ok(calls)
    }
}

impl AsyncQueue for AsyncCalls {
    fn enqueue(
        &self,
        namespace: String,
        service: String,
        req: Request<ProxyBody>,
    ) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let Some(this) = self.this.upgrade() else {
            return std::future::ready(answer_with(StatusCode::SERVICE_UNAVAILABLE, ALLOW, "shutting down")).boxed();
        };
        async move { this.accept(namespace, service, req).await }.boxed()
    }
}

fn default_settings() -> AsyncSettings {
    AsyncSettings {
        retries: serval_model::DEFAULT_ASYNC_RETRIES,
        max_age: serval_model::DEFAULT_ASYNC_MAX_AGE,
        on_success: None,
        on_failure: None,
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A body as a destination record shows it: its JSON when it is JSON, else its text.
fn payload(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Lambda's destination record for an ended call, as a CloudEvent
/// (`dev.serval.call.succeeded` or `dev.serval.call.failed`, its id the call's).
fn destination_record(
    namespace: &str,
    service: &str,
    record: &CallRecord,
    request: &[u8],
    answer: Option<&Answer>,
) -> Option<CloudEvent> {
    let succeeded = record.state == CallState::Succeeded;
    let mut response_context = json!({
        "statusCode": record.status,
        "executedVersion": "$LATEST",
    });
    if !succeeded {
        response_context["functionError"] = "Unhandled".into();
    }
    let data = json!({
        "version": "1.0",
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "requestContext": {
            "requestId": record.id,
            "functionArn": format!("{namespace}/{service}"),
            "condition": record.condition,
            "approximateInvokeCount": record.attempts,
        },
        "requestPayload": payload(request),
        "responseContext": response_context,
        "responsePayload": answer.map(|a| payload(&a.body)),
    });
    let event_type = if succeeded { "dev.serval.call.succeeded" } else { "dev.serval.call.failed" };
    let built = CloudEvent::builder()
        .id(record.id.clone())
        .source(format!("/apis/serving.knative.dev/v1/namespaces/{namespace}/services/{service}"))
        .event_type(event_type)
        .subject(record.id.clone())
        .time(humantime::format_rfc3339_micros(SystemTime::now()).to_string())
        .datacontenttype("application/json")
        .data(data)
        .build();
    built.map_err(|e| tracing::error!("async call {}: building its destination record: {e}", record.id)).ok()
}
