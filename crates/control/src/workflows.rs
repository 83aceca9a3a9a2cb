//! Workflow runs: each run of a Workflow is a stored record (`WorkflowRun`, owned by its
//! workflow: state, input, output, error, times) and a journal log
//! (`workflowruns/<ns>/<id>`) of its task transitions, appended durably by the engine
//! before it goes on. A run in progress when the server died is resumed at the next start
//! from its journal: completed tasks are replayed, not run again; a task that had started
//! (an HTTP call, an emit) runs again — at least once —; a wait waits only what is left.
//!
//! The engine's effects here: HTTP with reqwest (a URL of a serval Service, such as
//! `http://NAME.NAMESPACE.svc.cluster.local/…`, goes to the gateway's path route), events
//! appended to the workflow's Broker (`serval.dev/broker`, else `default`), tokio's timers.

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
use serval_workflow::engine::{Effects, HttpRequest, HttpResponse, TaskRecord};

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

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The runs in progress, and what they use.
pub struct WorkflowRuns {
    store: Arc<dyn Storage>,
    dispatchers: Arc<Dispatchers>,
    http: reqwest::Client,
    /// `http://host:port` of the gateway.
    gateway: String,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    ids: AtomicU64,
}

impl WorkflowRuns {
    pub fn new(store: Arc<dyn Storage>, dispatchers: Arc<Dispatchers>, gateway: String) -> WorkflowRuns {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        WorkflowRuns { store, dispatchers, http, gateway, running: Mutex::default(), ids: AtomicU64::new(0) }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new run id: the start time and a counter, in hex.
    fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{:011x}{:04x}", unix_ms(SystemTime::now()), n & 0xffff)
    }

    /// Stores a new run of `workflow` and starts it.
    pub async fn start(
        self: &Arc<Self>,
        workflow: serval_workflow::Workflow,
        namespace: &str,
        name: &str,
        broker: String,
        input: Value,
    ) -> Result<Run, ControlError> {
        let now = SystemTime::now();
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
        self.store.write(vec![WriteOp::put_owned(RUN_KIND, namespace, &run.id, name, &run)?]).await?;
        self.spawn(run.clone(), workflow, broker, Vec::new());
        Ok(run)
    }

    /// Resumes a stored run that was in progress (after a restart).
    pub fn resume(self: &Arc<Self>, run: Run, workflow: serval_workflow::Workflow, broker: String) {
        match self.journal(&run.namespace, &run.id) {
            Ok(journal) => self.spawn(run, workflow, broker, journal),
            Err(e) => tracing::error!("workflow run {}/{}: reading its journal: {e}", run.namespace, run.id),
        }
    }

    fn spawn(
        self: &Arc<Self>,
        run: Run,
        workflow: serval_workflow::Workflow,
        broker: String,
        journal: Vec<TaskRecord>,
    ) {
        let runs = self.clone();
        let id = run.id.clone();
        let task = tokio::spawn(async move {
            let effects = RunEffects {
                runs: runs.clone(),
                log: journal_log(&run.namespace, &run.id),
                broker,
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
        self.running().insert(id, task.abort_handle());
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
        if let Some(task) = self.running().remove(&run.id) {
            task.abort();
        }
        run.state = "cancelled".into();
        run.ended_at = Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        self.store.write(vec![WriteOp::put_owned(RUN_KIND, &run.namespace, &run.id, &run.workflow, &run)?]).await?;
        Ok(run)
    }

    /// Stops every run (the server stops; they resume at the next start).
    pub fn stop_all(&self) {
        for (_, task) in self.running().drain() {
            task.abort();
        }
    }

    /// The writes that remove a run and its journal.
    pub fn forget(namespace: &str, id: &str) -> Vec<WriteOp> {
        vec![WriteOp::delete(RUN_KIND, namespace, id), WriteOp::delete_events(&journal_log(namespace, id))]
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

/// The engine's effects for one run.
struct RunEffects {
    runs: Arc<WorkflowRuns>,
    log: String,
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
}
