//! Workflow runs: each run of a Workflow is a stored record (`WorkflowRun`, owned by its
//! workflow: state, input, output, error, times) and a journal log
//! (`workflowruns/<ns>/<id>`) of its task transitions, appended durably by the engine
//! before it goes on. A run in progress when the server died is resumed at the next start
//! from its journal: completed tasks are replayed, not run again; a task that had started
//! (an HTTP call, an emit) runs again — at least once —; a wait waits only what is left.
//!
//! The engine's effects here: HTTP with reqwest (a URL of a serval Service, such as
//! `http://NAME.NAMESPACE.svc.cluster.local/…`, goes to the gateway's path route), events
//! appended to the workflow's Broker (`serval.dev/broker`, else `default`), tokio's timers,
//! and each run's inbox (`workflowinbox/<ns>/<id>`): every event delivered to a workflow
//! (its gateway address `/w/<ns>/<name>`, which a trigger the workflow owns feeds from its
//! broker) is appended durably to the inbox of each of its runs in progress before it is
//! acknowledged; a `listen` reads its run's inbox after the last event the run's previous
//! listen read (journaled with its start and end), so a resumed run reads the same events.
//!
//! Schedules start runs: `every` and `cron` on a timer, `after` a delay after the previous
//! run ended, `on` when the events delivered to the workflow satisfy its strategy — those
//! events are kept in the workflow's own log (`workflowschedule/<ns>/<name>`) until a run
//! they start is stored (in the same write as the log's cursor), so a `kill -9` loses none.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serval_dispatch::delivery::{Dispatchers, Ttl};
use serval_dispatch::plan::LogRef;
use serval_store::{Storage, WriteOp};
use serval_workflow::engine::{Effects, HttpRequest, HttpResponse, TaskRecord, unix_ms};
use serval_workflow::listen::{Listening, Read};

use crate::ControlError;

/// The kind under which runs are stored (not an API kind: runs are read through the
/// workflow's `runs` and `workflowruns/<id>`).
pub const RUN_KIND: &str = "WorkflowRun";
/// How long one HTTP call of a workflow may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer a call takes.
const MAX_ANSWER: usize = 10 << 20;
/// Journal entries read at a time when a run resumes.
const JOURNAL_PAGE: usize = 1000;
/// The kind whose fields errors name.
const WORKFLOW: &str = <serval_model::Workflow as serval_model::Resource>::KIND;
/// How long a `listen` waits for a wake-up before it reads its inbox again anyway.
const INBOX_RECHECK: Duration = Duration::from_secs(5);
/// The most events a `schedule.on` looks back over to start runs.
const SCHEDULE_WINDOW: usize = 10_000;

/// A run as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: String,
    pub namespace: String,
    pub workflow: String,
    /// `running`, `completed`, `faulted` or `cancelled`.
    pub state: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub started_at: String,
    /// Unix ms of the start (a resumed run's clock).
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

pub const RUNNING: &str = "running";

fn journal_log(namespace: &str, id: &str) -> String {
    format!("workflowruns/{namespace}/{id}")
}

fn inbox_log(namespace: &str, id: &str) -> String {
    format!("workflowinbox/{namespace}/{id}")
}

/// The log of events delivered to a workflow with `schedule.on`, not yet used to start a run;
/// also the name of its cursor.
fn schedule_log(namespace: &str, workflow: &str) -> String {
    format!("workflowschedule/{namespace}/{workflow}")
}

/// A run in progress here.
struct Running {
    task: tokio::task::AbortHandle,
    namespace: String,
    workflow: String,
    /// Woken when an event is appended to its inbox.
    inbox: Arc<tokio::sync::Notify>,
}

/// What starts runs of one workflow: the engine's definition and where it emits.
#[derive(Clone)]
pub struct Starter {
    pub definition: Arc<serval_workflow::Workflow>,
    pub namespace: String,
    pub name: String,
    pub broker: String,
}

/// The runs in progress, and what they use.
pub struct WorkflowRuns {
    store: Arc<dyn Storage>,
    dispatchers: Arc<Dispatchers>,
    http: reqwest::Client,
    /// `http://host:port` of the gateway.
    gateway: String,
    running: Mutex<HashMap<String, Running>>,
    /// The timers of `schedule.every|cron|after`, by (namespace, workflow).
    timers: Mutex<HashMap<(String, String), tokio::task::AbortHandle>>,
    /// One `schedule.on` pass at a time (two would start a run for the same events).
    on_events: tokio::sync::Mutex<()>,
    ids: AtomicU64,
}

impl WorkflowRuns {
    pub fn new(store: Arc<dyn Storage>, dispatchers: Arc<Dispatchers>, gateway: String) -> WorkflowRuns {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        WorkflowRuns {
            store,
            dispatchers,
            http,
            gateway,
            running: Mutex::default(),
            timers: Mutex::default(),
            on_events: tokio::sync::Mutex::default(),
            ids: AtomicU64::new(0),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn timers(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), tokio::task::AbortHandle>> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new run id: the start time and a counter, in hex.
    fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{:011x}{:04x}", unix_ms(SystemTime::now()), n & 0xffff)
    }

    /// Stores a new run of a workflow and starts it.
    pub async fn start(self: &Arc<Self>, starter: &Starter, input: Value) -> Result<Run, ControlError> {
        self.start_with(starter, input, Vec::new()).await
    }

    /// [`WorkflowRuns::start`], committing `also` in the same write as the run.
    async fn start_with(
        self: &Arc<Self>,
        starter: &Starter,
        input: Value,
        also: Vec<WriteOp>,
    ) -> Result<Run, ControlError> {
        let now = SystemTime::now();
        let (namespace, name) = (starter.namespace.as_str(), starter.name.as_str());
        let run = Run {
            id: self.new_id(),
            namespace: namespace.into(),
            workflow: name.into(),
            state: RUNNING.into(),
            input,
            output: None,
            error: None,
            started_at: humantime::format_rfc3339_millis(now).to_string(),
            started_ms: unix_ms(now),
            ended_at: None,
        };
        let mut writes = vec![WriteOp::put_owned(RUN_KIND, namespace, &run.id, name, &run)?];
        writes.extend(also);
        self.store.write(writes).await?;
        self.spawn(run.clone(), starter.clone(), Vec::new());
        Ok(run)
    }

    /// Resumes a stored run that was in progress (after a restart).
    pub fn resume(self: &Arc<Self>, run: Run, starter: Starter) {
        match self.journal(&run.namespace, &run.id) {
            Ok(journal) => self.spawn(run, starter, journal),
            Err(e) => tracing::error!("workflow run {}/{}: reading its journal: {e}", run.namespace, run.id),
        }
    }

    fn spawn(self: &Arc<Self>, run: Run, starter: Starter, journal: Vec<TaskRecord>) {
        let runs = self.clone();
        let id = run.id.clone();
        let inbox = Arc::new(tokio::sync::Notify::new());
        let (namespace, workflow_name) = (run.namespace.clone(), run.workflow.clone());
        // Registered before it runs, so that no event delivered from now on misses its inbox.
        let mut running = self.running();
        let woken = inbox.clone();
        let task = tokio::spawn(async move {
            let workflow = starter.definition.clone();
            let effects = RunEffects {
                runs: runs.clone(),
                log: journal_log(&run.namespace, &run.id),
                inbox: inbox_log(&run.namespace, &run.id),
                woken,
                broker: starter.broker.clone(),
                namespace: run.namespace.clone(),
            };
            let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_ms);
            let outcome =
                serval_workflow::engine::resume(&workflow, run.input.clone(), &effects, journal, started).await;
            let mut done = run;
            match outcome.output {
                Ok(output) => {
                    done.state = "completed".into();
                    done.output = Some(output);
                }
                Err(error) => {
                    done.state = "faulted".into();
                    done.error = Some(error.to_value());
                }
            }
            runs.finish(done).await;
        });
        running.insert(id, Running { task: task.abort_handle(), namespace, workflow: workflow_name, inbox });
    }

    /// Stores how a run ended.
    async fn finish(&self, mut run: Run) {
        run.ended_at = Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        self.running().remove(&run.id);
        let write = WriteOp::put_owned(RUN_KIND, &run.namespace, &run.id, &run.workflow, &run);
        match write {
            Ok(op) => {
                if let Err(e) = self.store.write(vec![op]).await {
                    tracing::error!("workflow run {}/{}: storing its end: {e}", run.namespace, run.id);
                }
            }
            Err(e) => tracing::error!("workflow run {}/{}: {e}", run.namespace, run.id),
        }
    }

    /// A run's journal, oldest first.
    pub fn journal(&self, namespace: &str, id: &str) -> Result<Vec<TaskRecord>, ControlError> {
        let log = journal_log(namespace, id);
        let mut records = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.events_after(&log, after, JOURNAL_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            records.extend(page.iter().filter_map(|e| serde_json::from_str(&e.body).ok()));
        }
        Ok(records)
    }

    /// Stops a run in progress and stores it as cancelled; `false` when it is not running
    /// here.
    pub async fn cancel(&self, mut run: Run) -> Result<Run, ControlError> {
        if let Some(running) = self.running().remove(&run.id) {
            running.task.abort();
        }
        run.state = "cancelled".into();
        run.ended_at = Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        self.store.write(vec![WriteOp::put_owned(RUN_KIND, &run.namespace, &run.id, &run.workflow, &run)?]).await?;
        Ok(run)
    }

    /// Stops every run and schedule (the server stops; runs resume at the next start).
    pub fn stop_all(&self) {
        for (_, running) in self.running().drain() {
            running.task.abort();
        }
        for (_, timer) in self.timers().drain() {
            timer.abort();
        }
    }

    /// The writes that remove a run, its journal and its inbox.
    pub fn forget(namespace: &str, id: &str) -> Vec<WriteOp> {
        vec![
            WriteOp::delete(RUN_KIND, namespace, id),
            WriteOp::delete_events(&journal_log(namespace, id)),
            WriteOp::delete_events(&inbox_log(namespace, id)),
        ]
    }

    /// The writes that remove what a workflow's schedule kept (events waiting for `on`).
    pub fn forget_schedule(namespace: &str, workflow: &str) -> Vec<WriteOp> {
        let log = schedule_log(namespace, workflow);
        vec![WriteOp::delete_events(&log), WriteOp::set_cursor(&log, None)]
    }

    /// Delivers events to a workflow: appended to the inbox of each of its runs in progress
    /// and, when it has `schedule.on`, to its schedule log — durably, before this returns;
    /// then the listening runs are woken and the schedule may start runs.
    pub async fn deliver(self: &Arc<Self>, starter: &Starter, events: &[Value]) -> Result<(), ControlError> {
        let (namespace, name) = (starter.namespace.as_str(), starter.name.as_str());
        let inboxes: Vec<(String, Arc<tokio::sync::Notify>)> = self
            .running()
            .iter()
            .filter(|(_, r)| r.namespace == namespace && r.workflow == name)
            .map(|(id, r)| (inbox_log(namespace, id), r.inbox.clone()))
            .collect();
        let on = starter.definition.definition["schedule"].get("on").is_some();
        let mut writes = Vec::new();
        for event in events {
            let body = event.to_string();
            for (log, _) in &inboxes {
                writes.push(WriteOp::append_event(log, body.clone()));
            }
            if on {
                writes.push(WriteOp::append_event(&schedule_log(namespace, name), body));
            }
        }
        if !writes.is_empty() {
            self.store.write(writes).await?;
        }
        for (_, woken) in inboxes {
            woken.notify_one();
        }
        if on {
            self.start_on_events(starter).await?;
        }
        Ok(())
    }

    /// Starts a run for each time the events kept for `schedule.on` satisfy its strategy
    /// (input: those events, whole); each run is stored with the log's cursor moved past
    /// its events, in one write.
    pub async fn start_on_events(self: &Arc<Self>, starter: &Starter) -> Result<(), ControlError> {
        let Some(on) = starter.definition.definition["schedule"].get("on") else { return Ok(()) };
        let _one_pass = self.on_events.lock().await;
        let log = schedule_log(&starter.namespace, &starter.name);
        let mut cursor = self.store.cursor(&log)?;
        let scope = serval_workflow::expr::Scope::default();
        loop {
            let events = self.store.events_after(&log, cursor, SCHEDULE_WINDOW)?;
            let mut listening = Listening::new(on, Read::Envelope)
                .map_err(|e| ControlError::invalid_field(WORKFLOW, "spec.schedule.on", e.to_string()))?;
            let mut satisfied = None;
            for stored in &events {
                let Ok(event) = serde_json::from_str::<Value>(&stored.body) else { continue };
                match listening.offer(&event, &scope) {
                    Ok(true) => {
                        satisfied = Some(stored.seq);
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("workflow {}/{}: schedule.on: {e}", starter.namespace, starter.name),
                }
            }
            let Some(seq) = satisfied else { return Ok(()) };
            let input = Value::Array(listening.consumed().to_vec());
            let also = vec![WriteOp::set_cursor(&log, Some(seq)), WriteOp::delete_events_up_to(&log, seq, 10_000)];
            self.start_with(starter, input, also).await?;
            cursor = seq;
        }
    }

    /// Starts (again) the timer of a workflow's `schedule.every|cron|after`; none without.
    pub fn schedule(self: &Arc<Self>, starter: Starter) -> Result<(), ControlError> {
        let key = (starter.namespace.clone(), starter.name.clone());
        if let Some(old) = self.timers().remove(&key) {
            old.abort();
        }
        let schedule = &starter.definition.definition["schedule"];
        let every = match (schedule.get("every"), schedule.get("after")) {
            (Some(every), _) => Some(Timer::Every(duration(every)?)),
            (None, Some(after)) => Some(Timer::After(duration(after)?)),
            (None, None) => None,
        };
        let timer = match (every, schedule["cron"].as_str()) {
            (Some(timer), _) => timer,
            (None, Some(cron)) => {
                let cron = serval_eventing::ping::PingSchedule::new(cron, None)
                    .map_err(|e| ControlError::invalid_field(WORKFLOW, "spec.schedule.cron", e.to_string()))?;
                Timer::Cron(Box::new(cron))
            }
            (None, None) => return Ok(()),
        };
        let runs = self.clone();
        let task = tokio::spawn(async move { runs.run_timer(starter, timer).await });
        self.timers().insert(key, task.abort_handle());
        Ok(())
    }

    /// Stops a workflow's timer (it was deleted).
    pub fn unschedule(&self, namespace: &str, name: &str) {
        if let Some(timer) = self.timers().remove(&(namespace.to_string(), name.to_string())) {
            timer.abort();
        }
    }

    async fn run_timer(self: Arc<Self>, starter: Starter, timer: Timer) {
        let (namespace, name) = (&starter.namespace, &starter.name);
        loop {
            match &timer {
                Timer::Every(every) => tokio::time::sleep(*every).await,
                Timer::Cron(cron) => {
                    let now = SystemTime::now();
                    let Some(next) = cron.next_after(now) else { return };
                    tokio::time::sleep(next.duration_since(now).unwrap_or_default()).await;
                }
                Timer::After(_) => {}
            }
            let run = match self.start(&starter, Value::Object(Default::default())).await {
                Ok(run) => run,
                Err(e) => {
                    tracing::error!("workflow {namespace}/{name}: a scheduled run did not start: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Timer::After(after) = &timer {
                while self.running().contains_key(&run.id) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(*after).await;
            }
        }
    }

    /// Where a call goes: a serval Service's URL (or `service:NAME/path`, a service of the
    /// run's namespace) to the gateway's path route for it.
    fn target(&self, uri: &str, namespace: &str) -> String {
        if let Some(rest) = uri.strip_prefix(serval_workflow::engine::SERVICE_SCHEME) {
            let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
            return format!("{}/f/{namespace}/{name}/{path}", self.gateway);
        }
        match serval_model::classify_uri(uri) {
            Ok(serval_model::Addressee::Service { namespace, name, path }) => {
                let query = uri.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default().trim_start_matches('/');
                format!("{}/f/{namespace}/{name}/{path}{query}", self.gateway)
            }
            _ => uri.to_string(),
        }
    }
}

/// What starts scheduled runs.
enum Timer {
    Every(Duration),
    Cron(Box<serval_eventing::ping::PingSchedule>),
    /// The delay after the previous run ended.
    After(Duration),
}

fn duration(value: &Value) -> Result<Duration, ControlError> {
    serval_workflow::engine::duration(value)
        .map_err(|e| ControlError::invalid_field(WORKFLOW, "spec.schedule", e.to_string()))
}

/// The engine's effects for one run.
struct RunEffects {
    runs: Arc<WorkflowRuns>,
    /// Its journal's log.
    log: String,
    /// Its inbox's log.
    inbox: String,
    woken: Arc<tokio::sync::Notify>,
    broker: String,
    namespace: String,
}

impl Effects for RunEffects {
    fn http(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
            let mut call = self.runs.http.request(method, self.runs.target(&request.uri, &self.namespace));
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
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if body.len() > MAX_ANSWER {
                return Err(format!("the answer is {} bytes, more than {MAX_ANSWER}", body.len()));
            }
            Ok(HttpResponse { status, headers, body: body.to_vec() })
        })
    }

    fn emit(&self, event: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let event = serval_eventing::from_json_str(&event.to_string()).map_err(|e| e.to_string())?;
            let broker = LogRef::Broker { namespace: self.namespace.clone(), name: self.broker.clone() };
            self.runs.dispatchers.append_to(&broker, vec![event], Ttl::KeepOrDefault).await.map_err(|e| e.to_string())
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn new_id(&self) -> String {
        self.runs.new_id()
    }

    fn journal(&self, record: &TaskRecord) -> BoxFuture<'_, Result<(), String>> {
        let body = serde_json::to_string(record).unwrap_or_default();
        Box::pin(async move {
            self.runs.store.write(vec![WriteOp::append_event(&self.log, body)]).await.map_err(|e| e.to_string())
        })
    }

    fn receive(&self, after: u64) -> BoxFuture<'_, Result<(u64, Value), String>> {
        Box::pin(async move {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            loop {
                let woken = self.woken.notified();
                let next = self.runs.store.events_after(&self.inbox, after, 1).map_err(|e| e.to_string())?;
                if let Some(stored) = next.into_iter().next() {
                    let event =
                        serde_json::from_str(&stored.body).map_err(|e| format!("an event of the inbox: {e}"))?;
                    return Ok((u64::try_from(stored.seq).unwrap_or(0), event));
                }
                let _ = tokio::time::timeout(INBOX_RECHECK, woken).await;
            }
        })
    }
}

/// Where the gateway hands a workflow's events: `/w/<namespace>/<workflow>`.
pub const INGRESS_PREFIX: &str = "/w/";

/// The gateway's `/w/<namespace>/<workflow>`: CloudEvents (binary, structured or batched)
/// for a workflow's `listen` tasks and `schedule.on`, answered 202 once they are stored in
/// the inboxes of its runs in progress and its schedule's log.
pub struct WorkflowIngress {
    controller: Arc<crate::controller::Controller>,
}

impl WorkflowIngress {
    pub fn new(controller: Arc<crate::controller::Controller>) -> Arc<WorkflowIngress> {
        Arc::new(WorkflowIngress { controller })
    }
}

fn answer(status: http::StatusCode, message: &str) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    serval_dispatch::ingress::answer_with(status, "POST", message)
}

impl serval_gateway::Ingress for WorkflowIngress {
    fn claims(&self, rest: &str) -> bool {
        serval_dispatch::ingress::namespace_and_name(rest).is_some()
    }

    fn handle(
        &self,
        rest: String,
        req: http::Request<serval_gateway::ProxyBody>,
    ) -> BoxFuture<'static, http::Response<http_body_util::Full<bytes::Bytes>>> {
        use http::StatusCode;
        let controller = self.controller.clone();
        Box::pin(async move {
            let Some((namespace, name)) = serval_dispatch::ingress::namespace_and_name(&rest) else {
                return answer(StatusCode::NOT_FOUND, "not the address of a workflow");
            };
            if req.method() != http::Method::POST {
                return answer(StatusCode::METHOD_NOT_ALLOWED, "send events with POST");
            }
            let events = match serval_dispatch::ingress::events_of(req, "POST").await {
                Ok(events) => events.iter().map(serval_eventing::to_json).collect::<Vec<Value>>(),
                Err(refused) => return refused,
            };
            match controller.deliver_to_workflow(namespace, name, &events).await {
                Ok(()) => answer(StatusCode::ACCEPTED, ""),
                Err(e @ ControlError::NotFound { .. }) => answer(StatusCode::NOT_FOUND, &e.to_string()),
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &format!("the event was not stored: {e}")),
            }
        })
    }
}
