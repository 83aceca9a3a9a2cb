//! The interpreter: runs a [`Workflow`] on an input, task by task, with the DSL's data flow
//! (`input.from` → the task → `output.as` → `export.as` into `$context`) and flow
//! directives (`then: continue | exit | end | <task>`). Every effect — HTTP, emitting an
//! event, waiting, the clock, ids — goes through [`Effects`], so the engine does no IO of
//! its own and runs in tests on simulated time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::dsl::{TaskList, Workflow, kind_of, task_list};
use crate::error::Error;
use crate::expr::{Scope, evaluate_field, holds, interpolate};
use crate::listen::{Listening, Read};

/// The most attempts a `retry` makes when its policy gives no limit.
const DEFAULT_RETRY_ATTEMPTS: u64 = 10;
/// The most iterations a `for` makes (a bound on untrusted documents and inputs).
const MAX_ITERATIONS: usize = 100_000;

/// An HTTP request a `call` makes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything the engine does to the world.
pub trait Effects: Send + Sync {
    /// Sends a request; `Err` when no answer came (the peer could not be reached).
    fn http(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>>;
    /// Publishes a CloudEvent (JSON, structured mode).
    fn emit(&self, event: Value) -> BoxFuture<'_, Result<(), String>>;
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
    fn now(&self) -> SystemTime;
    /// A new unique id (of an instance, an event).
    fn new_id(&self) -> String;
    /// Keeps a journal entry durably before the run goes on (nothing by default: a run
    /// that need not survive a restart).
    fn journal(&self, record: &TaskRecord) -> BoxFuture<'_, Result<(), String>> {
        let _ = record;
        Box::pin(async { Ok(()) })
    }
    /// The first event of the run's inbox after position `after`, waiting until one comes:
    /// its position and the event (a CloudEvent in JSON).
    fn receive(&self, after: u64) -> BoxFuture<'_, Result<(u64, Value), String>> {
        let _ = after;
        Box::pin(async { Err("this run receives no events".to_string()) })
    }
}

/// Where a task is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    Started,
    Completed,
    Faulted,
}

/// One entry of a run's journal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub name: String,
    /// The task's JSON pointer in the document (`/do/0/tryGetPet/try/0/getPet`).
    pub reference: String,
    /// Which run of that task it is (loops and retries run a task again): 0, 1, …
    #[serde(default)]
    pub occurrence: u32,
    pub phase: Phase,
    /// The output (Completed) or error (Faulted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// What came next (Completed): `continue`, `exit`, `end` or a task's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// `$context` after the task (Completed, when it exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// When (unix ms).
    #[serde(default)]
    pub at: u64,
    /// Of a `listen`: the inbox position it reads after (Started), the position of the
    /// last event it read (Completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

/// How a run ended, with its journal.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub output: Result<Value, Error>,
    pub journal: Vec<TaskRecord>,
}

impl Outcome {
    /// The names of the tasks that completed, in order.
    pub fn completed(&self) -> Vec<&str> {
        self.journal.iter().filter(|r| r.phase == Phase::Completed).map(|r| r.name.as_str()).collect()
    }
}

/// What comes after a task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Leave the task list the task is in.
    Exit,
    /// End the workflow.
    End,
    Goto(String),
}

impl Flow {
    fn text(&self) -> String {
        match self {
            Flow::Continue => "continue".into(),
            Flow::Exit => "exit".into(),
            Flow::End => "end".into(),
            Flow::Goto(task) => task.clone(),
        }
    }
}

fn flow_of(then: Option<&Value>) -> Flow {
    match then.and_then(Value::as_str) {
        None | Some("continue") => Flow::Continue,
        Some("exit") => Flow::Exit,
        Some("end") => Flow::End,
        Some(task) => Flow::Goto(task.to_string()),
    }
}

/// Runs `workflow` on `input` to its end.
pub async fn run(workflow: &Workflow, input: Value, effects: &dyn Effects) -> Outcome {
    resume(workflow, input, effects, Vec::new(), effects.now()).await
}

/// Runs `workflow` again after a restart, from the journal `done` of its first run (which
/// began at `started`): a task the journal says completed is not run again (its output,
/// what came next and `$context` are taken from it); a task that started and did not
/// complete runs again (at least once); a `wait` that started waits only what is left.
pub async fn resume(
    workflow: &Workflow,
    input: Value,
    effects: &dyn Effects,
    done: Vec<TaskRecord>,
    started: SystemTime,
) -> Outcome {
    let definition = &workflow.definition;
    let mut replay = HashMap::new();
    for record in done.iter().filter(|r| r.phase != Phase::Faulted) {
        replay.insert((record.reference.clone(), record.occurrence, record.phase), record.clone());
    }
    let runner = Runner {
        effects,
        definition,
        journal: Mutex::new(done),
        context: Mutex::new(json!({})),
        replay,
        occurrences: Mutex::default(),
        inbox_read: Mutex::default(),
    };
    let output = runner.run_workflow(input, started).await;
    Outcome { output, journal: runner.journal.into_inner().unwrap_or_else(|p| p.into_inner()) }
}

struct Runner<'a> {
    effects: &'a dyn Effects,
    definition: &'a Value,
    journal: Mutex<Vec<TaskRecord>>,
    context: Mutex<Value>,
    /// The journal of an earlier run, by (reference, occurrence, phase).
    replay: HashMap<(String, u32, Phase), TaskRecord>,
    /// How many times each task started in this run.
    occurrences: Mutex<HashMap<String, u32>>,
    /// The inbox position the last `listen` that ended read up to (0: none did).
    inbox_read: Mutex<u64>,
}

/// Unix milliseconds of a time (the journal's `at`).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Tasks whose start is journaled too (they act on the world, or wait).
const JOURNALED_STARTS: [&str; 4] = ["call", "emit", "listen", "wait"];

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl<'a> Runner<'a> {
    async fn run_workflow(&self, raw_input: Value, started: SystemTime) -> Result<Value, Error> {
        let base = Scope::default().with("runtime", json!({"name": "serval", "version": env!("CARGO_PKG_VERSION")}));
        let input = match self.definition["input"]["from"].as_str() {
            Some(from) => evaluate_field(from, &raw_input, &base.with("context", json!({})))?,
            None => raw_input,
        };
        let workflow = json!({
            "id": self.effects.new_id(), "definition": self.definition, "input": input,
            "startedAt": rfc3339(started),
        });
        let scope = base.with("input", input.clone()).with("workflow", workflow);
        let tasks = task_list(&self.definition["do"])?;
        let (output, _) = self.run_list(&tasks, "/do", input, &scope).await?;
        match self.definition["output"]["as"].as_str() {
            Some(filter) => evaluate_field(filter, &output, &self.scope(&scope)),
            None => Ok(output),
        }
    }

    /// `scope` with the current `$context`.
    fn scope(&self, scope: &Scope) -> Scope {
        let context = self.context.lock().unwrap_or_else(|p| p.into_inner()).clone();
        scope.with("context", context)
    }

    /// Journals a task transition: kept durably (through [`Effects::journal`]) when
    /// `durable`, then added to the run's journal.
    async fn record(&self, record: TaskRecord, durable: bool) -> Result<(), Error> {
        if durable {
            self.effects.journal(&record).await.map_err(|e| Error::runtime(format!("keeping the journal: {e}")))?;
        }
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        Ok(())
    }

    fn transition(&self, name: &str, reference: &str, occurrence: u32, phase: Phase) -> TaskRecord {
        TaskRecord {
            name: name.into(),
            reference: reference.into(),
            occurrence,
            phase,
            output: None,
            then: None,
            context: None,
            at: unix_ms(self.effects.now()),
            position: None,
        }
    }

    /// Runs a task list from its first task; its output and whether the workflow ends.
    fn run_list<'s>(
        &'s self,
        tasks: &'s TaskList,
        at: &'s str,
        input: Value,
        scope: &'s Scope,
    ) -> BoxFuture<'s, Result<(Value, Flow), Error>> {
        Box::pin(async move {
            let mut data = input;
            let mut i = 0;
            while let Some((name, task)) = tasks.get(i) {
                let reference = format!("{at}/{i}/{name}");
                if let Some(condition) = task.get("if").and_then(Value::as_str)
                    && !holds(condition, &data, &self.scope(scope)).map_err(|e| e.at(&reference))?
                {
                    i += 1;
                    continue;
                }
                let (output, flow) = self.run_task(name, task, &reference, data, scope).await?;
                data = output;
                match flow {
                    Flow::Continue => i += 1,
                    Flow::Exit => return Ok((data, Flow::Continue)),
                    Flow::End => return Ok((data, Flow::End)),
                    Flow::Goto(target) => {
                        i = tasks.iter().position(|(n, _)| *n == target).ok_or_else(|| {
                            Error::validation(format!("then: no task {target:?} in this list")).at(&reference)
                        })?;
                    }
                }
            }
            Ok((data, Flow::Continue))
        })
    }

    /// Runs one task with its data flow; its output and what comes next.
    fn run_task<'s>(
        &'s self,
        name: &'s str,
        task: &'s Value,
        reference: &'s str,
        raw_input: Value,
        scope: &'s Scope,
    ) -> BoxFuture<'s, Result<(Value, Flow), Error>> {
        Box::pin(async move {
            let occurrence = {
                let mut counts = self.occurrences.lock().unwrap_or_else(|p| p.into_inner());
                let count = counts.entry(reference.to_string()).or_default();
                *count += 1;
                *count - 1
            };
            let key = (reference.to_string(), occurrence, Phase::Completed);
            if let Some(done) = self.replay.get(&key) {
                if let Some(context) = &done.context {
                    *self.context.lock().unwrap_or_else(|p| p.into_inner()) = context.clone();
                }
                if let Some(read) = done.position {
                    *self.inbox_read.lock().unwrap_or_else(|p| p.into_inner()) = read;
                }
                let flow = flow_of(done.then.as_ref().map(|t| Value::String(t.clone())).as_ref());
                return Ok((done.output.clone().unwrap_or(Value::Null), flow));
            }
            let kind = task.as_object().and_then(kind_of).unwrap_or_default();
            let started = match self.replay.get(&(reference.to_string(), occurrence, Phase::Started)) {
                Some(earlier) => earlier.clone(),
                None => {
                    let mut record = self.transition(name, reference, occurrence, Phase::Started);
                    if kind == "listen" {
                        record.position = Some(*self.inbox_read.lock().unwrap_or_else(|p| p.into_inner()));
                    }
                    self.record(record.clone(), JOURNALED_STARTS.contains(&kind)).await?;
                    record
                }
            };
            let result = self.task_body(name, task, reference, raw_input, scope, &started).await;
            match result {
                Ok((output, flow, exported)) => {
                    let mut record = self.transition(name, reference, occurrence, Phase::Completed);
                    record.output = Some(output.clone());
                    record.then = Some(flow.text());
                    record.context = exported;
                    if kind == "listen" {
                        record.position = Some(*self.inbox_read.lock().unwrap_or_else(|p| p.into_inner()));
                    }
                    self.record(record, true).await?;
                    Ok((output, flow))
                }
                Err(e) => {
                    let e = e.at(reference);
                    let mut record = self.transition(name, reference, occurrence, Phase::Faulted);
                    record.output = Some(e.to_value());
                    self.record(record, false).await?;
                    Err(e)
                }
            }
        })
    }

    /// A task's output, what comes next, and `$context` when it exported; `started`: its
    /// start, maybe by an earlier run (a wait waits only what is left, a listen reads the
    /// inbox from where it was).
    async fn task_body(
        &self,
        name: &str,
        task: &Value,
        reference: &str,
        raw_input: Value,
        scope: &Scope,
        started: &TaskRecord,
    ) -> Result<(Value, Flow, Option<Value>), Error> {
        let Some(map) = task.as_object() else { return Err(Error::validation("a task is a mapping")) };
        let outer = self.scope(scope);
        let input = match map.get("input").and_then(|i| i.get("from")).and_then(Value::as_str) {
            Some(from) => evaluate_field(from, &raw_input, &outer)?,
            None => raw_input,
        };
        let task_arg = json!({
            "name": name, "reference": reference, "definition": task, "input": input,
            "startedAt": rfc3339(self.effects.now()),
        });
        // In a task's expressions `$input` is the task's (transformed) input.
        let scope = scope.with("task", task_arg).with("input", input.clone());
        let (raw_output, mut flow) = match kind_of(map) {
            Some("set") => (self.set(map, &input, &scope)?, Flow::Continue),
            Some("do") => {
                let tasks = task_list(&map["do"])?;
                self.run_list(&tasks, &format!("{reference}/do"), input, &scope).await?
            }
            Some("for") => self.for_each(map, reference, input, &scope).await?,
            Some("switch") => {
                let (output, flow) = self.switch(map, input, &scope)?;
                return Ok((output, flow, None));
            }
            Some("fork") => (self.fork(map, reference, input, &scope).await?, Flow::Continue),
            Some("try") => self.try_catch(map, reference, input, &scope).await?,
            Some("raise") => return Err(self.raise(map, &input, &scope)?),
            Some("emit") => (self.emit(map, &input, &scope).await?, Flow::Continue),
            Some("wait") => {
                let waited = Duration::from_millis(unix_ms(self.effects.now()).saturating_sub(started.at));
                self.effects.sleep(duration(&map["wait"])?.saturating_sub(waited)).await;
                (input, Flow::Continue)
            }
            Some("listen") => (self.listen(map, started.position.unwrap_or_default(), &scope).await?, Flow::Continue),
            Some("call") => (self.call(map, &input, &scope).await?, Flow::Continue),
            Some(other) => return Err(Error::runtime(format!("serval does not run {other} tasks yet"))),
            None => return Err(Error::validation(format!("task {name:?} has no task kind"))),
        };
        let scope = self.scope(&scope);
        let output = match map.get("output").and_then(|o| o.get("as")) {
            Some(Value::String(filter)) => evaluate_field(filter, &raw_output, &scope)?,
            Some(shape) => interpolate(shape, &raw_output, &scope)?,
            None => raw_output,
        };
        let mut exported = None;
        if let Some(export) = map.get("export").and_then(|e| e.get("as")) {
            let context = match export {
                Value::String(filter) => evaluate_field(filter, &output, &scope)?,
                shape => interpolate(shape, &output, &scope)?,
            };
            *self.context.lock().unwrap_or_else(|p| p.into_inner()) = context.clone();
            exported = Some(context);
        }
        if flow != Flow::End {
            flow = flow_of(map.get("then"));
        }
        Ok((output, flow, exported))
    }

    fn set(&self, map: &Map<String, Value>, input: &Value, scope: &Scope) -> Result<Value, Error> {
        let scope = self.scope(scope);
        match &map["set"] {
            Value::String(filter) => evaluate_field(filter, input, &scope),
            shape => interpolate(shape, input, &scope),
        }
    }

    async fn for_each(
        &self,
        map: &Map<String, Value>,
        reference: &str,
        input: Value,
        scope: &Scope,
    ) -> Result<(Value, Flow), Error> {
        let spec = &map["for"];
        let each = spec["each"].as_str().unwrap_or("item");
        let at = spec["at"].as_str().unwrap_or("index");
        let collection = evaluate_field(spec["in"].as_str().unwrap_or("."), &input, &self.scope(scope))?;
        let items: Vec<Value> = match collection {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => return Err(Error::expression(format!("for.in gave {other}, not a list"))),
        };
        if items.len() > MAX_ITERATIONS {
            return Err(Error::runtime(format!("for over {} items, more than {MAX_ITERATIONS}", items.len())));
        }
        let tasks = task_list(&map["do"])?;
        let at_list = format!("{reference}/do");
        let mut data = input;
        for (index, item) in items.into_iter().enumerate() {
            let scope = scope.with(each, item).with(at, json!(index));
            if let Some(condition) = map.get("while").and_then(Value::as_str)
                && !holds(condition, &data, &self.scope(&scope))?
            {
                break;
            }
            let (output, flow) = self.run_list(&tasks, &at_list, data, &scope).await?;
            data = output;
            if flow == Flow::End {
                return Ok((data, Flow::End));
            }
        }
        Ok((data, Flow::Continue))
    }

    /// The first case whose `when` holds (a case without one is the default) chooses what
    /// comes next; no case: the task's own `then`. The output is the input.
    fn switch(&self, map: &Map<String, Value>, input: Value, scope: &Scope) -> Result<(Value, Flow), Error> {
        let scope = self.scope(scope);
        for (_, case) in task_list(&map["switch"])? {
            let matched = match case.get("when").and_then(Value::as_str) {
                Some(condition) => holds(condition, &input, &scope)?,
                None => true,
            };
            if matched {
                return Ok((input, flow_of(case.get("then"))));
            }
        }
        Ok((input, flow_of(map.get("then"))))
    }

    /// Branches run at once; with `compete`, the first to complete gives the output, else
    /// the output is every branch's, in order.
    async fn fork(
        &self,
        map: &Map<String, Value>,
        reference: &str,
        input: Value,
        scope: &Scope,
    ) -> Result<Value, Error> {
        let branches = task_list(&map["fork"]["branches"])?;
        let compete = map["fork"]["compete"].as_bool().unwrap_or(false);
        let runs: Vec<BoxFuture<'_, Result<(Value, Flow), Error>>> = branches
            .iter()
            .enumerate()
            .map(|(i, (name, task))| {
                let reference = format!("{reference}/fork/branches/{i}/{name}");
                let input = input.clone();
                Box::pin(async move { self.run_task(name, task, &reference, input, scope).await })
                    as BoxFuture<'_, Result<(Value, Flow), Error>>
            })
            .collect();
        if compete {
            let (first, _) = futures_util::future::select_ok(runs).await?;
            Ok(first.0)
        } else {
            let outputs = futures_util::future::try_join_all(runs).await?;
            Ok(Value::Array(outputs.into_iter().map(|(output, _)| output).collect()))
        }
    }

    async fn try_catch(
        &self,
        map: &Map<String, Value>,
        reference: &str,
        input: Value,
        scope: &Scope,
    ) -> Result<(Value, Flow), Error> {
        let tasks = task_list(&map["try"])?;
        let at = format!("{reference}/try");
        let catch = map.get("catch").cloned().unwrap_or(Value::Null);
        let var = catch["as"].as_str().unwrap_or("error").to_string();
        let retry = &catch["retry"];
        let mut attempt: u64 = 0;
        loop {
            let error = match self.run_list(&tasks, &at, input.clone(), scope).await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if !self.catches(&catch, &error, &var, scope)? {
                return Err(error);
            }
            attempt += 1;
            if retry.is_object() && attempt < retry_limit(retry) {
                self.effects.sleep(retry_delay(retry, attempt)?).await;
                continue;
            }
            return match catch.get("do") {
                Some(handler) => {
                    let tasks = task_list(handler)?;
                    let scope = scope.with(&var, error.to_value());
                    self.run_list(&tasks, &format!("{reference}/catch/do"), input, &scope).await
                }
                None if retry.is_object() => Err(error),
                None => Ok((input, Flow::Continue)),
            };
        }
    }

    /// Whether `catch` takes `error`: its `errors.with` filter (type, status, instance,
    /// title, detail), `when` and `exceptWhen`.
    fn catches(&self, catch: &Value, error: &Error, var: &str, scope: &Scope) -> Result<bool, Error> {
        if let Some(with) = catch["errors"]["with"].as_object() {
            for (field, wanted) in with {
                let matched = match field.as_str() {
                    "type" => wanted.as_str().is_some_and(|t| error.is_type(t)),
                    "status" => wanted.as_u64() == Some(u64::from(error.status)),
                    _ => error.to_value().get(field) == Some(wanted),
                };
                if !matched {
                    return Ok(false);
                }
            }
        }
        let scope = self.scope(scope).with(var, error.to_value());
        let input = error.to_value();
        if let Some(condition) = catch["when"].as_str()
            && !holds(condition, &input, &scope)?
        {
            return Ok(false);
        }
        if let Some(condition) = catch["exceptWhen"].as_str()
            && holds(condition, &input, &scope)?
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// The error a `raise` raises: inline, or one of `use.errors` by name.
    fn raise(&self, map: &Map<String, Value>, input: &Value, scope: &Scope) -> Result<Error, Error> {
        let definition = match &map["raise"]["error"] {
            Value::String(name) => self.definition["use"]["errors"][name.as_str()].clone(),
            inline => inline.clone(),
        };
        if !definition.is_object() {
            return Err(Error::validation("raise.error names no error of use.errors"));
        }
        let error = interpolate(&definition, input, &self.scope(scope))?;
        serde_json::from_value(error).map_err(|e| Error::validation(format!("raise.error: {e}")))
    }

    async fn emit(&self, map: &Map<String, Value>, input: &Value, scope: &Scope) -> Result<Value, Error> {
        let attributes = &map["emit"]["event"]["with"];
        let mut event = interpolate(attributes, input, &self.scope(scope))?;
        let Some(fields) = event.as_object_mut() else { return Err(Error::validation("emit.event.with is a mapping")) };
        for required in ["source", "type"] {
            if !fields.get(required).is_some_and(Value::is_string) {
                return Err(Error::validation(format!("emit.event.with.{required} is required")));
            }
        }
        fields.entry("id").or_insert_with(|| self.effects.new_id().into());
        fields.entry("specversion").or_insert_with(|| "1.0".into());
        fields.entry("time").or_insert_with(|| rfc3339(self.effects.now()).into());
        if fields.contains_key("data") {
            fields.entry("datacontenttype").or_insert_with(|| "application/json".into());
        }
        self.effects.emit(event.clone()).await.map_err(|e| Error::communication(503, e))?;
        Ok(event)
    }

    /// Events of the run's inbox after `position`, offered in order until the strategy of
    /// `listen.to` is satisfied; the events consumed, as `listen.read` says. The next listen
    /// reads after the last event this one read: every event delivered to a run is offered
    /// to one listen at most, and none delivered between two listens is missed.
    async fn listen(&self, map: &Map<String, Value>, position: u64, scope: &Scope) -> Result<Value, Error> {
        let listen = &map["listen"];
        if listen.get("foreach").is_some() {
            return Err(Error::runtime("serval does not iterate listen.foreach yet"));
        }
        let mut listening = Listening::new(&listen["to"], Read::parse(listen["read"].as_str())?)?;
        let scope = self.scope(scope);
        let mut after = position;
        loop {
            let (at, event) = self.effects.receive(after).await.map_err(Error::runtime)?;
            after = at;
            if listening.offer(&event, &scope)? {
                *self.inbox_read.lock().unwrap_or_else(|p| p.into_inner()) = after;
                return Ok(Value::Array(listening.consumed().to_vec()));
            }
        }
    }

    async fn call(&self, map: &Map<String, Value>, input: &Value, scope: &Scope) -> Result<Value, Error> {
        let scope = self.scope(scope);
        let with = interpolate(&map.get("with").cloned().unwrap_or(Value::Null), input, &scope)?;
        let (request, format) = match map["call"].as_str().unwrap_or_default() {
            "http" => http_request(&with, input)?,
            "openapi" => self.openapi_request(&with, input).await?,
            kind @ ("grpc" | "asyncapi" | "a2a" | "mcp") => {
                return Err(Error::runtime(format!("serval does not make {kind} calls yet")));
            }
            function if self.definition["use"]["functions"].get(function).is_some() => {
                return Err(Error::runtime(format!("serval does not run custom functions ({function}) yet")));
            }
            service => service_request(service, &with, input),
        };
        let response = self
            .effects
            .http(request.clone())
            .await
            .map_err(|e| Error::communication(503, format!("{} {}: {e}", request.method, request.uri)))?;
        if response.status >= 400 {
            return Err(Error::communication(
                response.status,
                format!("{} {} answered {}", request.method, request.uri, response.status),
            ));
        }
        let content = content_of(&response.body);
        Ok(match format.as_str() {
            "response" => json!({
                "request": {"method": request.method, "uri": request.uri, "headers": headers_object(&request.headers)},
                "statusCode": response.status,
                "headers": headers_object(&response.headers),
                "content": content,
            }),
            "raw" => Value::String(String::from_utf8_lossy(&response.body).into_owned()),
            _ => content,
        })
    }

    /// An OpenAPI call as the HTTP request its operation makes: the document fetched, the
    /// operation found by id, path parameters filled in, the others sent as the query.
    async fn openapi_request(&self, with: &Value, input: &Value) -> Result<(HttpRequest, String), Error> {
        let endpoint = match &with["document"]["endpoint"] {
            Value::String(uri) => uri.clone(),
            other => other["uri"].as_str().unwrap_or_default().to_string(),
        };
        let get = HttpRequest { method: "GET".into(), uri: endpoint.clone(), headers: Vec::new(), body: None };
        let response =
            self.effects.http(get).await.map_err(|e| Error::communication(503, format!("{endpoint}: {e}")))?;
        if response.status >= 400 {
            return Err(Error::communication(response.status, format!("the OpenAPI document {endpoint}")));
        }
        let document: Value = serde_saphyr::from_slice(&response.body)
            .map_err(|e| Error::validation(format!("the OpenAPI document {endpoint}: {e}")))?;
        let operation_id = with["operationId"].as_str().unwrap_or_default();
        let (path, method, operation) = find_operation(&document, operation_id)
            .ok_or_else(|| Error::validation(format!("no operation {operation_id:?} in {endpoint}")))?;
        let base = openapi_base(&document, &endpoint);
        let parameters = with["parameters"].as_object().cloned().unwrap_or_default();
        let in_path: Vec<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        let mut uri = format!("{base}{path}");
        let mut query = Vec::new();
        for (name, value) in &parameters {
            let text = scalar_text(value);
            if in_path.contains(name) {
                uri = uri.replace(&format!("{{{name}}}"), &text);
            } else {
                query.push(format!("{name}={text}"));
            }
        }
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }
        let _ = input;
        let format = with["output"].as_str().unwrap_or("content").to_string();
        Ok((HttpRequest { method: method.to_uppercase(), uri, headers: Vec::new(), body: None }, format))
    }
}

/// An HTTP call's request and output format from its `with`.
fn http_request(with: &Value, input: &Value) -> Result<(HttpRequest, String), Error> {
    let (uri, authentication) = match &with["endpoint"] {
        Value::String(uri) => (uri.clone(), Value::Null),
        other => (other["uri"].as_str().unwrap_or_default().to_string(), other["authentication"].clone()),
    };
    if uri.is_empty() {
        return Err(Error::validation("call http takes with.endpoint"));
    }
    let mut uri = fill_template(&uri, input);
    if let Some(query) = with["query"].as_object().filter(|q| !q.is_empty()) {
        let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", scalar_text(v))).collect();
        uri = format!("{uri}{}{}", if uri.contains('?') { "&" } else { "?" }, pairs.join("&"));
    }
    let mut headers: Vec<(String, String)> =
        with["headers"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), scalar_text(v))).collect();
    if let Some(basic) = authentication.get("basic") {
        use base64::Engine as _;
        let pair = format!("{}:{}", scalar_text(&basic["username"]), scalar_text(&basic["password"]));
        headers.push((
            "authorization".into(),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)),
        ));
    }
    if let Some(bearer) = authentication.get("bearer") {
        headers.push(("authorization".into(), format!("Bearer {}", scalar_text(&bearer["token"]))));
    }
    let method = with["method"].as_str().unwrap_or("get").to_uppercase();
    let body = with.get("body").cloned();
    let format = with["output"].as_str().unwrap_or("content").to_string();
    Ok((HttpRequest { method, uri, headers, body }, format))
}

/// A call of a service by name (`call: <service>`): a request to [`SERVICE_SCHEME`]`<name>`
/// that the effects send to that service of the workflow's namespace. `with` takes
/// `method` (POST), `path` (`/`), `headers`, `query` and `body` (the task input).
fn service_request(service: &str, with: &Value, input: &Value) -> (HttpRequest, String) {
    let path = with["path"].as_str().unwrap_or("/");
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let mut uri = format!("{SERVICE_SCHEME}{service}{path}");
    if let Some(query) = with["query"].as_object().filter(|q| !q.is_empty()) {
        let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", scalar_text(v))).collect();
        uri = format!("{uri}?{}", pairs.join("&"));
    }
    let headers = with["headers"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), scalar_text(v))).collect();
    let method = with["method"].as_str().unwrap_or("post").to_uppercase();
    let body = Some(with.get("body").cloned().unwrap_or_else(|| input.clone()));
    let format = with["output"].as_str().unwrap_or("content").to_string();
    (HttpRequest { method, uri, headers, body }, format)
}

/// The scheme of a request to a service of the workflow's namespace, by name.
pub const SERVICE_SCHEME: &str = "service:";

/// A URI template's `{name}`s filled from the task input's top-level fields.
fn fill_template(template: &str, input: &Value) -> String {
    let mut uri = template.to_string();
    if let Some(fields) = input.as_object() {
        for (name, value) in fields {
            let placeholder = format!("{{{name}}}");
            if uri.contains(&placeholder) {
                uri = uri.replace(&placeholder, &scalar_text(value));
            }
        }
    }
    uri
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn headers_object(headers: &[(String, String)]) -> Value {
    Value::Object(headers.iter().map(|(k, v)| (k.to_lowercase(), Value::String(v.clone()))).collect())
}

/// A body as JSON when it is, else as text.
fn content_of(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn find_operation<'d>(document: &'d Value, operation_id: &str) -> Option<(&'d str, &'d str, &'d Value)> {
    document["paths"].as_object()?.iter().find_map(|(path, methods)| {
        methods.as_object()?.iter().find_map(|(method, operation)| {
            (operation["operationId"] == operation_id).then_some((path.as_str(), method.as_str(), operation))
        })
    })
}

/// Where an OpenAPI document's paths are: OpenAPI 3's first server, Swagger 2's scheme,
/// host and base path, each against the document's own address when partial.
fn openapi_base(document: &Value, endpoint: &str) -> String {
    let origin = endpoint.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    if let Some(server) = document["servers"][0]["url"].as_str() {
        return if server.starts_with("http") {
            server.trim_end_matches('/').to_string()
        } else {
            format!("{origin}{server}")
        };
    }
    let scheme = document["schemes"][0].as_str().unwrap_or_else(|| endpoint.split(':').next().unwrap_or("https"));
    let host = document["host"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| origin.split("//").nth(1).unwrap_or_default().to_string());
    let base_path = document["basePath"].as_str().unwrap_or("").trim_end_matches('/');
    format!("{scheme}://{host}{base_path}")
}

/// A `wait` or retry delay: ISO 8601 (`PT30S`) or `{days, hours, minutes, seconds,
/// milliseconds}`.
pub fn duration(value: &Value) -> Result<Duration, Error> {
    match value {
        Value::String(text) => {
            iso8601(text).ok_or_else(|| Error::validation(format!("{text:?} is not an ISO 8601 duration")))
        }
        Value::Object(parts) => {
            let mut total = Duration::ZERO;
            for (unit, amount) in parts {
                let n = amount.as_f64().ok_or_else(|| Error::validation(format!("duration {unit} is a number")))?;
                let seconds = match unit.as_str() {
                    "days" => 86_400.0,
                    "hours" => 3_600.0,
                    "minutes" => 60.0,
                    "seconds" => 1.0,
                    "milliseconds" => 0.001,
                    other => return Err(Error::validation(format!("duration: unknown unit {other:?}"))),
                };
                total += Duration::try_from_secs_f64(n * seconds).map_err(|e| Error::validation(e.to_string()))?;
            }
            Ok(total)
        }
        _ => Err(Error::validation("a duration is ISO 8601 text or a mapping of units")),
    }
}

/// `P[nD][T[nH][nM][nS]]` (seconds may have a fraction).
fn iso8601(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds = 0.0;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let scale = units.iter().find(|(u, _)| *u == c)?.1;
                seconds += number.parse::<f64>().ok()? * scale;
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    take(days, &[('D', 86_400.0), ('W', 604_800.0)])?;
    take(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn retry_limit(retry: &Value) -> u64 {
    retry["limit"]["attempt"]["count"].as_u64().unwrap_or(DEFAULT_RETRY_ATTEMPTS).max(1)
}

/// The wait before attempt `attempt + 1`: the delay, grown by the backoff.
fn retry_delay(retry: &Value, attempt: u64) -> Result<Duration, Error> {
    let delay = match retry.get("delay") {
        Some(d) => duration(d)?,
        None => Duration::ZERO,
    };
    let factor = if retry["backoff"].get("exponential").is_some() {
        2u32.saturating_pow(u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(20))
    } else if retry["backoff"].get("linear").is_some() {
        u32::try_from(attempt).unwrap_or(u32::MAX)
    } else {
        1
    };
    Ok(delay.saturating_mul(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_both_notations() {
        assert_eq!(duration(&json!("PT30S")).expect("ok"), Duration::from_secs(30));
        assert_eq!(duration(&json!("P1DT1H0.5S")).expect("ok"), Duration::from_millis(90_000_500));
        assert_eq!(duration(&json!({"minutes": 1, "seconds": 5})).expect("ok"), Duration::from_secs(65));
        assert!(duration(&json!("30 seconds")).is_err());
        let retry =
            json!({"delay": {"seconds": 3}, "backoff": {"exponential": {}}, "limit": {"attempt": {"count": 5}}});
        assert_eq!(retry_delay(&retry, 3).expect("ok"), Duration::from_secs(12));
        assert_eq!(retry_limit(&retry), 5);
    }
}
