//! `listen` through the engine: it reads the run's inbox after what the previous listen
//! read (events delivered while the run did something else are not missed), ends when its
//! strategy is satisfied, and a run resumed after a crash reads the inbox again from the
//! position journaled with the listen's start, so an event delivered before the crash is
//! not lost. Simulated inbox and clock.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_workflow::{Effects, HttpRequest, HttpResponse, Phase, TaskRecord, Workflow};

const DOC: &str = r#"
document: {dsl: '1.0.3', namespace: default, name: vitals, version: '1.0.0'}
do:
  - callDoctor:
      listen:
        to:
          all:
          - with:
              type: com.fake-hospital.vitals.measurements.temperature
              data: ${ .temperature > 38 }
          - with:
              type: com.fake-hospital.vitals.measurements.bpm
              data: ${ .bpm < 60 or .bpm > 100 }
  - summary:
      set:
        readings: ${ length }
        first: ${ .[0] }
  - discharge:
      listen:
        to:
          one:
            with: {type: com.fake-hospital.discharged}
        read: envelope
      output:
        as: '${ .[0].id }'
"#;

fn vital(kind: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": kind, "source": "/ward/7", "type": format!("com.fake-hospital.vitals.measurements.{kind}"), "data": data})
}

/// An inbox of events (position n is `events[n - 1]`); receiving past its end delivers
/// the next of `coming`, and when none is left fails, as the server dying while the
/// listen waits.
struct Inbox {
    events: Mutex<Vec<Value>>,
    coming: Mutex<Vec<Value>>,
    journal: Mutex<Vec<TaskRecord>>,
}

impl Inbox {
    fn new(events: Vec<Value>, coming: Vec<Value>) -> Inbox {
        Inbox { events: Mutex::new(events), coming: Mutex::new(coming), journal: Mutex::default() }
    }
}

impl Effects for Inbox {
    fn http(&self, _request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async { Err("no network".to_string()) })
    }
    fn emit(&self, _event: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn sleep(&self, _duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }
    fn new_id(&self) -> String {
        "run-1".into()
    }
    fn journal(&self, record: &TaskRecord) -> BoxFuture<'_, Result<(), String>> {
        self.journal.lock().expect("lock").push(record.clone());
        Box::pin(async { Ok(()) })
    }
    fn receive(&self, after: u64) -> BoxFuture<'_, Result<(u64, Value), String>> {
        let mut events = self.events.lock().expect("lock");
        if events.len() <= after as usize {
            let mut coming = self.coming.lock().expect("lock");
            if !coming.is_empty() {
                events.push(coming.remove(0));
            }
        }
        let next = events.get(after as usize).cloned();
        Box::pin(async move { next.map(|e| (after + 1, e)).ok_or_else(|| "the server died".to_string()) })
    }
}

#[tokio::test]
async fn listens_read_the_inbox_in_turn_and_resume_from_their_journaled_position() {
    let workflow = Workflow::parse(DOC).expect("valid");
    // A normal temperature, then a normal bpm, an alarming one, and the server dies.
    let inbox = Inbox::new(
        vec![vital("temperature", json!({"temperature": 37}))],
        vec![vital("bpm", json!({"bpm": 80})), vital("bpm", json!({"bpm": 130}))],
    );
    let crashed = serval_workflow::engine::run(&workflow, json!({}), &inbox).await;
    assert!(crashed.output.is_err(), "the listen was still waiting");
    let journal = inbox.journal.lock().expect("lock").clone();
    let start = journal.iter().find(|r| r.name == "callDoctor" && r.phase == Phase::Started).expect("started");
    assert_eq!(start.position, Some(0), "the first listen reads the inbox from its start");

    // After the restart the temperature alarm arrives; the bpm alarm from before is kept.
    // The discharge came while the run was summing up: the next listen takes it.
    inbox.events.lock().expect("lock").push(vital("temperature", json!({"temperature": 39.5})));
    inbox
        .events
        .lock()
        .expect("lock")
        .push(json!({"specversion": "1.0", "id": "bye", "source": "/ward/7", "type": "com.fake-hospital.discharged"}));
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let resumed = serval_workflow::engine::resume(&workflow, json!({}), &inbox, journal, started).await;
    let summary = resumed.journal.iter().find(|r| r.name == "summary" && r.phase == Phase::Completed).expect("summary");
    assert_eq!(summary.output, Some(json!({"readings": 2, "first": {"bpm": 130}})));
    let alarm = resumed.journal.iter().find(|r| r.name == "callDoctor" && r.phase == Phase::Completed).expect("done");
    assert_eq!(alarm.position, Some(4), "it read up to the temperature alarm");
    assert_eq!(resumed.output.expect("completes"), json!("bye"));
}

#[tokio::test]
async fn listen_any_until_and_read_envelope() {
    let doc = r#"
document: {dsl: '1.0.3', namespace: default, name: ticks, version: '1.0.0'}
do:
  - collect:
      listen:
        to:
          any:
          - with: {source: /clock}
          until: '${ length == 2 }'
        read: envelope
      output:
        as: '${ map(.id) }'
"#;
    let workflow = Workflow::parse(doc).expect("valid");
    let tick = |id: &str, source: &str| json!({"specversion": "1.0", "id": id, "source": source, "type": "tick"});
    let inbox =
        Inbox::new(vec![tick("a", "/clock"), tick("b", "/other"), tick("c", "/clock"), tick("d", "/clock")], vec![]);
    // Listening from position 0 (nothing was delivered before this inbox's events).
    let start = TaskRecord {
        name: "collect".into(),
        reference: "/do/0/collect".into(),
        occurrence: 0,
        phase: Phase::Started,
        output: None,
        then: None,
        context: None,
        at: 0,
        position: Some(0),
    };
    let outcome =
        serval_workflow::engine::resume(&workflow, json!({}), &inbox, vec![start], SystemTime::UNIX_EPOCH).await;
    assert_eq!(outcome.output.expect("completes"), json!(["a", "c"]));

    let bad = doc.replace("read: envelope", "read: bytes");
    let err = Workflow::parse(&bad).expect_err("read is checked");
    assert_eq!(err.instance.as_deref(), Some("/do/0/collect"));
}
