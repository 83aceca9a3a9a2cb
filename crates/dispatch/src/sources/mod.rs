//! Event sources: one task per source under one [`Supervisor`], each turning an external
//! system (a cron schedule, files, a NATS stream, a database's changes, a Kafka topic)
//! into CloudEvents delivered to its sink.
//!
//! What they share: a [`SourceSink`] that delivers an event until the sink accepted it
//! (backing off, never dropping it), [`Positions`] kept in the store's cursors (advanced
//! only after delivery, so a crash replays at most what was in flight), and a
//! [`SourceHealth`] the task reports into (Ready, with a reason, and counters) that the
//! control plane shows live in the source's status.

pub mod apiserver;
pub mod file;
pub mod kafka;
pub mod nats;
pub mod ping;
pub mod postgres;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serval_eventing::{CloudEvent, Outcome};
use serval_store::{Storage, WriteOp};
use tokio::sync::watch;

use crate::DispatchError;
use crate::delivery::{Dispatchers, Resolved, Ttl};
use crate::plan::Target;
use crate::supervisor::{Supervisor, Wanted};

/// A running source's work: runs until `stopped` turns true (or it returns, e.g. on a
/// configuration it cannot use, having said why in its health).
pub trait SourceTask: Send + Sync + 'static {
    fn run(self: Arc<Self>, context: SourceContext, stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()>;

    /// For sources that take requests (webhooks): what turns one into an event. The
    /// gateway's `/s/<namespace>/<name>` hands requests to it; accepted events go into the
    /// source's [`Inbox`] (202 after their commit), which the task delivers from.
    fn ingress(self: Arc<Self>) -> Option<Arc<dyn SourceIngress>> {
        None
    }
}

/// Turns a request to a source's address into an event, or says why not (an HTTP status
/// and a reason).
pub trait SourceIngress: Send + Sync + 'static {
    fn accept(&self, headers: &http::HeaderMap, body: bytes::Bytes) -> Result<CloudEvent, (u16, String)>;
}

/// A source's own durable log (`sources/<kind>/<namespace>/<name>`): what its ingress
/// accepted and its task has not delivered yet.
pub struct Inbox {
    store: Arc<dyn Storage>,
    log: String,
    waker: tokio::sync::Notify,
}

/// Events read from an inbox at a time.
const INBOX_PAGE: usize = 256;

impl Inbox {
    /// Appends events in one durable commit and wakes the task.
    pub async fn append(&self, events: &[CloudEvent]) -> Result<(), DispatchError> {
        self.commit(events, Vec::new()).await
    }

    /// Appends events and moves positions of the source in one durable commit, and wakes
    /// the task.
    pub async fn append_with_positions(
        &self,
        events: &[CloudEvent],
        positions: &Positions,
        moved: &[(&str, i64)],
    ) -> Result<(), DispatchError> {
        let moves = moved.iter().map(|(key, seq)| WriteOp::set_cursor(&positions.id(key), Some(*seq))).collect();
        self.commit(events, moves).await
    }

    async fn commit(&self, events: &[CloudEvent], mut ops: Vec<WriteOp>) -> Result<(), DispatchError> {
        ops.extend(events.iter().map(|e| WriteOp::append_event(&self.log, serval_eventing::to_json_string(e))));
        self.store.write(ops).await?;
        self.waker.notify_waiters();
        Ok(())
    }

    /// Delivers what the inbox holds to `sink`, in order, page by page, until stopped;
    /// the position (`positions`' `inbox`) and the inbox's delivered events are dropped
    /// in one commit after each page.
    pub async fn drain(&self, context: &SourceContext, stopped: &mut watch::Receiver<bool>) {
        let mut after = context.positions.get(INBOX_POSITION).unwrap_or(0);
        loop {
            let notified = self.waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let page = match self.store.events_after(&self.log, after, INBOX_PAGE) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!("{}: reading the inbox: {e}", self.log);
                    Vec::new()
                }
            };
            if page.is_empty() {
                tokio::select! {
                    () = notified => continue,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
            let last = page.last().map_or(after, |e| e.seq);
            let events: Vec<CloudEvent> =
                page.iter().filter_map(|e| serval_eventing::from_json_str(&e.body).ok()).collect();
            if context.sink.deliver(events, stopped).await.is_err() {
                return;
            }
            let id = context.positions.id(INBOX_POSITION);
            let ops = vec![
                WriteOp::set_cursor(&id, Some(last)),
                WriteOp::delete_events_up_to(&self.log, last, INBOX_PAGE as u32),
            ];
            if let Err(e) = self.store.write(ops).await {
                tracing::error!("{}: saving the position: {e}", self.log);
            }
            after = last;
        }
    }
}

/// The position of a source's inbox among its [`Positions`].
const INBOX_POSITION: &str = "inbox";

/// A source made ready to run: its identity, resolved sink, overrides and task.
#[derive(Clone)]
pub struct SourcePlan {
    /// `FileSource`, `NatsSource`, …
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub sink: Resolved,
    /// `spec.ceOverrides.extensions`, set on every event.
    pub overrides: Vec<(String, String)>,
    pub delivery: SinkDelivery,
    pub task: Arc<dyn SourceTask>,
}

/// How a source posts its events to an HTTP sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkDelivery {
    /// Requests in flight at once: 1 keeps the events in order.
    pub in_flight: usize,
    /// Events per request: more than 1 posts them as `application/cloudevents-batch+json`.
    pub batch: usize,
}

impl Default for SinkDelivery {
    /// One event per request, one request at a time.
    fn default() -> Self {
        SinkDelivery { in_flight: 1, batch: 1 }
    }
}

impl SourcePlan {
    fn key(&self) -> String {
        source_key(self.kind, &self.namespace, &self.name)
    }
}

/// The content type and data of a message's payload (a Kafka record's value, a NATS
/// message): the content type the message names, else JSON when the payload parses as
/// JSON, else bytes; the data as that content type reads it ([`Data::of_body`]). An empty
/// payload is no data. `bytes` gives the payload as [`Bytes`](bytes::Bytes) when it travels
/// as bytes.
fn payload_data(
    content_type: Option<String>,
    payload: &[u8],
    bytes: impl FnOnce() -> bytes::Bytes,
) -> (Option<String>, Option<serval_eventing::Data>) {
    use serval_eventing::{Data, JsonData};
    let content_type = content_type.filter(|ct| !ct.is_empty());
    if payload.is_empty() {
        return (content_type, None);
    }
    match content_type {
        Some(ct) => {
            let data = Data::of_body(Some(&ct), payload, bytes);
            (Some(ct), data)
        }
        // Parsed once: the sniffed JSON is the data.
        None => match JsonData::parse_bytes(payload) {
            Ok(json) => (Some("application/json".to_string()), Some(Data::Json(json))),
            Err(_) => (Some("application/octet-stream".to_string()), Some(Data::Binary(bytes()))),
        },
    }
}

fn source_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The writes that forget a deleted source's positions and inbox (committed with its
/// deletion: a source made again under that name starts afresh).
pub fn forget(kind: &str, namespace: &str, name: &str) -> Vec<WriteOp> {
    let key = source_key(kind, namespace, name);
    vec![WriteOp::delete_cursors(&format!("sources/{key}/")), WriteOp::delete_events(&format!("sources/{key}"))]
}

/// What a task is given.
#[derive(Clone)]
pub struct SourceContext {
    pub namespace: String,
    pub name: String,
    pub sink: SourceSink,
    pub health: Arc<SourceHealth>,
    pub positions: Positions,
    /// The source's own log, for sources with an ingress.
    pub inbox: Arc<Inbox>,
}

/// A source's readiness as its task last reported it, and what it has done since it
/// started.
#[derive(Debug, Default)]
pub struct SourceHealth {
    /// `None`: ready; else (reason, message).
    problem: Mutex<Option<(String, String)>>,
    received: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Messages the external system holds that the source has not read (where it says).
    lag: Mutex<Option<u64>>,
}

/// A snapshot of a [`SourceHealth`], for `status.counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceCounters {
    pub received: u64,
    pub delivered: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

impl SourceHealth {
    pub fn ready(&self) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Not ready, for `reason` (a CamelCase word) and `message` (what to do about it).
    pub fn not_ready(&self, reason: &str, message: impl Into<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some((reason.into(), message.into()));
    }

    /// `None` when ready; else (reason, message).
    pub fn problem(&self) -> Option<(String, String)> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// An attempt to deliver failed (it is tried again).
    pub fn failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_lag(&self, lag: Option<u64>) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }

    pub fn counters(&self) -> SourceCounters {
        SourceCounters {
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            lag: *self.lag.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// The first wait after a failed delivery or connection; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a sink may take to answer one delivery.
const SINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Doubling waits from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_BACKOFF }
    }
}

impl Backoff {
    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }

    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    /// Sleeps the next wait; `false` when `stopped` turned true meanwhile.
    pub async fn sleep(&mut self, stopped: &mut watch::Receiver<bool>) -> bool {
        let wait = self.next_wait();
        let slept = tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = stopped.wait_for(|s| *s) => false,
        };
        slept && !*stopped.borrow()
    }
}

/// The source was stopped before the delivery was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Where a source's events go.
#[derive(Clone)]
pub struct SourceSink {
    dispatchers: Arc<Dispatchers>,
    sink: Resolved,
    overrides: Arc<Vec<(String, String)>>,
    delivery: SinkDelivery,
    health: Arc<SourceHealth>,
    what: Arc<str>,
}

impl SourceSink {
    /// The sink's URL.
    pub fn url(&self) -> &str {
        &self.sink.url
    }

    /// The most events one request carries (`serval.dev/delivery-batch-size`, else 1).
    pub fn batch(&self) -> usize {
        self.delivery.batch.max(1)
    }

    /// The most requests in flight at once (1: one after the other, in order).
    pub fn in_flight(&self) -> usize {
        self.delivery.in_flight.max(1)
    }

    /// The most events posted at once (a batch per request in flight): a source reading
    /// many at once hands [`Self::deliver`] at least this many, so that the requests fill.
    pub fn at_once(&self) -> usize {
        self.delivery.batch.max(1) * self.delivery.in_flight.max(1)
    }

    /// Delivers `events`, each until the sink accepts it (2xx), backing off between
    /// attempts and never giving up: to an HTTP sink one request per event (or per batch
    /// of [`SinkDelivery::batch`]), in order, or (an unordered source) that many requests
    /// at a time; a sink that is one of serval's logs takes them all in one commit.
    /// `Err(Stopped)` when the source is stopped first (what was not accepted is delivered
    /// again by the next run, from the stored position).
    pub async fn deliver(&self, events: Vec<CloudEvent>, stopped: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        let events: Vec<CloudEvent> = events.into_iter().map(|e| self.overridden(e)).collect();
        let count = events.len() as u64;
        self.health.received(count);
        match &self.sink.target {
            Target::Log(log) => {
                let mut backoff = Backoff::default();
                while let Err(e) = self.dispatchers.append_to(log, events.clone(), Ttl::KeepOrDefault).await {
                    self.refused(&format!("{}: {e}", log.describe()), &mut backoff, stopped).await?;
                }
            }
            Target::Http(url) => {
                let mut waiting = events.chunks(self.delivery.batch.max(1));
                let mut posting = futures_util::stream::FuturesUnordered::new();
                loop {
                    while posting.len() < self.delivery.in_flight.max(1)
                        && let Some(batch) = waiting.next()
                    {
                        posting.push(self.post_until_accepted(url, batch, stopped.clone()));
                    }
                    // A stopped source posts no more: what it did not deliver, its next
                    // run delivers (its positions did not move past it).
                    tokio::select! {
                        posted = posting.next() => match posted {
                            Some(posted) => posted?,
                            None => break,
                        },
                        _ = stopped.wait_for(|s| *s) => return Err(Stopped),
                    }
                }
            }
        }
        self.health.delivered(count);
        if self.health.problem().is_some_and(|(reason, _)| reason == SINK_NOT_READY) {
            self.health.ready();
        }
        Ok(())
    }

    /// Posts events (one in binary mode, or a batch) until the sink accepts them (2xx),
    /// backing off between attempts.
    async fn post_until_accepted(
        &self,
        url: &crate::delivery::DeliveryUrl,
        events: &[CloudEvent],
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut backoff = Backoff::default();
        // Encoded once for every attempt. `events` is never empty (a chunk of a delivery); a
        // sink that takes batches gets every request as one, even of one event.
        let (headers, body) = match events {
            [event] if self.delivery.batch <= 1 => serval_eventing::encode_binary(event),
            _ => serval_eventing::encode_batch(events),
        };
        loop {
            let why = match self.dispatchers.post_raw(url, headers.clone(), body.clone(), Some(SINK_TIMEOUT)).await {
                Some(answer) if (200..300).contains(&answer.status) => return Ok(()),
                Some(answer) => format!(
                    "the sink answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
                ),
                None => "the sink did not answer".to_string(),
            };
            self.refused(&why, &mut backoff, &mut stopped).await?;
        }
    }

    /// One attempt to deliver one event (for sources that do not retry, like PingSource):
    /// `Err` says why it was not accepted.
    pub async fn send_once(&self, event: CloudEvent, timeout: Duration) -> Result<(), String> {
        let event = self.overridden(event);
        self.health.received(1);
        let result = match &self.sink.target {
            Target::Log(log) => self
                .dispatchers
                .append_to(log, vec![event], Ttl::KeepOrDefault)
                .await
                .map_err(|e| format!("{}: {e}", log.describe())),
            Target::Http(url) => match self.dispatchers.post(url, &event, false, Some(timeout), false).await.0 {
                Outcome::Status(200..=299, _) => Ok(()),
                Outcome::Status(code, _) => Err(format!("the sink answered {code}")),
                Outcome::NoResponse => Err("the sink did not answer".into()),
            },
        };
        match &result {
            Ok(()) => self.health.delivered(1),
            Err(_) => self.health.failed(1),
        }
        result
    }

    /// A delivery was refused: counted, reported, waited on.
    async fn refused(
        &self,
        why: &str,
        backoff: &mut Backoff,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        self.health.failed(1);
        self.health.not_ready(SINK_NOT_READY, format!("delivering to {}: {why}", self.sink.url));
        tracing::warn!("{}: delivering to {}: {why}", self.what, self.sink.url);
        if backoff.sleep(stopped).await { Ok(()) } else { Err(Stopped) }
    }

    fn overridden(&self, mut event: CloudEvent) -> CloudEvent {
        for (name, value) in self.overrides.iter() {
            let _ = event.set_extension(name, value.clone());
        }
        event
    }
}

/// The reason a source is not ready while its sink refuses its events.
pub const SINK_NOT_READY: &str = "SinkNotReady";

/// A source's positions (offsets, LSNs, stream sequences, files seen) in the store, as
/// cursors `sources/<kind>/<namespace>/<name>/<key>`; 0 is "none".
#[derive(Clone)]
pub struct Positions {
    store: Arc<dyn Storage>,
    prefix: String,
}

impl Positions {
    fn id(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    /// The stored position of `key` (0: none).
    pub fn get(&self, key: &str) -> Result<i64, DispatchError> {
        Ok(self.store.cursor(&self.id(key))?)
    }

    /// Stores positions durably, all in one commit.
    pub async fn set(&self, positions: &[(&str, i64)]) -> Result<(), DispatchError> {
        let ops = positions.iter().map(|(key, seq)| WriteOp::set_cursor(&self.id(key), Some(*seq))).collect();
        Ok(self.store.write(ops).await?)
    }

    /// Forgets positions.
    pub async fn remove(&self, keys: &[&str]) -> Result<(), DispatchError> {
        let ops = keys.iter().map(|key| WriteOp::set_cursor(&self.id(key), None)).collect();
        Ok(self.store.write(ops).await?)
    }
}

/// A running source's ingress and the inbox it takes requests into.
pub type TakesRequests = (Arc<dyn SourceIngress>, Arc<Inbox>);

/// The running sources.
pub struct Sources {
    running: Supervisor,
    dispatchers: Arc<Dispatchers>,
    store: Arc<dyn Storage>,
    healths: Mutex<HashMap<String, Arc<SourceHealth>>>,
    /// The ingress and inbox of each running source that takes requests.
    ingresses: Mutex<HashMap<String, TakesRequests>>,
}

impl Sources {
    pub fn new(dispatchers: Arc<Dispatchers>, store: Arc<dyn Storage>) -> Sources {
        Sources {
            running: Supervisor::default(),
            dispatchers,
            store,
            healths: Mutex::default(),
            ingresses: Mutex::default(),
        }
    }

    /// The ingress and inbox of the running source `kind` `namespace/name`, if it takes requests.
    pub fn ingress(&self, kind: &str, namespace: &str, name: &str) -> Option<TakesRequests> {
        self.ingresses.lock().unwrap_or_else(|p| p.into_inner()).get(&source_key(kind, namespace, name)).cloned()
    }

    /// Makes the running sources match `plans` (`(plan, fingerprint)`): new ones start,
    /// changed ones restart (from their stored positions), gone ones stop.
    pub fn sync(&self, plans: Vec<(SourcePlan, String)>) {
        let wanted = plans.into_iter().map(|(plan, fingerprint)| {
            // A change of how the events are posted restarts the task too.
            Wanted { key: plan.key(), fingerprint: format!("{fingerprint}|{:?}", plan.delivery), plan }
        });
        let wanted: Vec<Wanted<SourcePlan>> = wanted.collect();
        let mut healths = self.healths.lock().unwrap_or_else(|p| p.into_inner());
        healths.retain(|key, _| wanted.iter().any(|w| w.key == *key));
        let mut ingresses = self.ingresses.lock().unwrap_or_else(|p| p.into_inner());
        ingresses.retain(|key, _| wanted.iter().any(|w| w.key == *key));
        self.running.sync(wanted, |key, plan, stopped| {
            let health = Arc::new(SourceHealth::default());
            healths.insert(key.to_string(), health.clone());
            let inbox = Arc::new(Inbox {
                store: self.store.clone(),
                log: format!("sources/{key}"),
                waker: tokio::sync::Notify::new(),
            });
            match plan.task.clone().ingress() {
                Some(ingress) => ingresses.insert(key.to_string(), (ingress, inbox.clone())),
                None => ingresses.remove(key),
            };
            let what: Arc<str> = format!("{} {}/{}", plan.kind.to_lowercase(), plan.namespace, plan.name).into();
            let context = SourceContext {
                namespace: plan.namespace.clone(),
                name: plan.name.clone(),
                sink: SourceSink {
                    dispatchers: self.dispatchers.clone(),
                    sink: plan.sink.clone(),
                    overrides: Arc::new(plan.overrides.clone()),
                    delivery: plan.delivery,
                    health: health.clone(),
                    what,
                },
                health,
                positions: Positions { store: self.store.clone(), prefix: format!("sources/{key}") },
                inbox,
            };
            tokio::spawn(plan.task.clone().run(context, stopped));
        });
    }

    /// The health of a running source.
    pub fn health(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<SourceHealth>> {
        self.healths.lock().unwrap_or_else(|p| p.into_inner()).get(&source_key(kind, namespace, name)).cloned()
    }

    pub fn stop_all(&self) {
        self.running.stop_all();
    }
}
