//! A run resumed from its journal after a crash: completed tasks are not run again (an
//! HTTP call made before the crash is not made twice), a wait that had started waits only
//! what is left, and the output is the one an uninterrupted run gives. Simulated time.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_workflow::{Effects, HttpRequest, HttpResponse, Phase, TaskRecord, Workflow};

const DOC: &str = r#"
document: {dsl: '1.0.3', namespace: default, name: nightly, version: '1.0.0'}
do:
  - fetch:
      call: http
      with: {method: get, endpoint: 'http://svc/count'}
      export:
        as: '{ fetched: . }'
  - pause:
      wait: PT1H
  - report:
      set:
        count: ${ $context.fetched.count + 1 }
"#;

/// Effects on a simulated clock; a sleep advances it. `crash_at_wait` makes the journal
/// refuse to go on once the wait started (the server died there).
struct Sim {
    now: Mutex<SystemTime>,
    calls: Mutex<u32>,
    slept: Mutex<Vec<Duration>>,
    journal: Mutex<Vec<TaskRecord>>,
    crash_at_wait: bool,
}

impl Sim {
    fn new(crash_at_wait: bool) -> Sim {
        Sim {
            now: Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            calls: Mutex::new(0),
            slept: Mutex::default(),
            journal: Mutex::default(),
            crash_at_wait,
        }
    }
}

impl Effects for Sim {
    fn http(&self, _request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        *self.calls.lock().expect("lock") += 1;
        Box::pin(async { Ok(HttpResponse { status: 200, headers: Vec::new(), body: br#"{"count": 41}"#.to_vec() }) })
    }
    fn emit(&self, _event: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        self.slept.lock().expect("lock").push(duration);
        *self.now.lock().expect("lock") += duration;
        Box::pin(async {})
    }
    fn now(&self) -> SystemTime {
        *self.now.lock().expect("lock")
    }
    fn new_id(&self) -> String {
        "run-1".into()
    }
    fn journal(&self, record: &TaskRecord) -> BoxFuture<'_, Result<(), String>> {
        self.journal.lock().expect("lock").push(record.clone());
        let crash = self.crash_at_wait && record.name == "pause" && record.phase == Phase::Started;
        Box::pin(async move { if crash { Err("the server died".into()) } else { Ok(()) } })
    }
}

#[tokio::test]
async fn a_resumed_run_skips_what_completed_and_waits_what_is_left() {
    let workflow = Workflow::parse(DOC).expect("valid");
    let whole = serval_workflow::run(&workflow, json!({}), &Sim::new(false)).await;
    assert_eq!(whole.output.clone().expect("completes"), json!({"count": 42}));

    // The first run dies once the wait started (its start is journaled, then nothing).
    let first = Sim::new(true);
    let started = first.now();
    let crashed = serval_workflow::run(&workflow, json!({}), &first).await;
    assert!(crashed.output.is_err());
    let journal = first.journal.lock().expect("lock").clone();
    assert_eq!(*first.calls.lock().expect("lock"), 1);

    // 59 minutes later the server is back.
    let second = Sim::new(false);
    *second.now.lock().expect("lock") = started + Duration::from_secs(59 * 60);
    let resumed = serval_workflow::engine::resume(&workflow, json!({}), &second, journal, started).await;
    assert_eq!(resumed.output.expect("completes"), json!({"count": 42}), "$context came back from the journal");
    assert_eq!(*second.calls.lock().expect("lock"), 0, "the call completed before the crash is not made again");
    assert_eq!(*second.slept.lock().expect("lock"), [Duration::from_secs(60)], "only the minute left is waited");
}
