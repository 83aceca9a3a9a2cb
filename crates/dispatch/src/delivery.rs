//! Trigger delivery: one dispatcher task per trigger reads its broker's durable log from the
//! trigger's cursor, filters, delivers (binary or structured mode) with the trigger's retry
//! policy, dead-letters what fails for good and feeds replies back into the broker.
//!
//! Up to the trigger's delivery concurrency (`serval.dev/delivery-concurrency`) events are
//! in flight at once, started in log order and finishing in any order (a [`DeliveryWindow`]);
//! the log is read ahead in pages while they fly. The stored cursor is the window's
//! watermark — every event up to it was handled — written as it advances, one write at a
//! time, group-committed with the broker's other writes. At-least-once: a crash redelivers
//! the events after the last stored watermark.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::BodyExt;
use serval_eventing::{CloudEvent, Decision, DeliveryWindow, Outcome, RetryAfter};
use serval_gateway::{Exchanges, LocalClient};
use serval_model::{Broker, Channel, InMemoryChannel, Resource, Subscription, Trigger};
use serval_store::{ResourceStoreExt, Storage, WriteOp};
use tokio::sync::{Notify, watch};

use crate::DispatchError;
pub use crate::plan::{
    LogRef, Plan, Resolved, broker_log, channel_log, existing_logs, plans, resolve, subscription_consumer,
    subscription_plan, trigger_consumer, trigger_plan,
};
use crate::plan::{Reply, Target};
use crate::supervisor::{Supervisor, Wanted};

/// Events read from the log at a time; the next page is read when half are left.
const READ_AHEAD: usize = 512;
/// Re-read the log this often even without a notification, and wait this long before
/// retrying a failed cursor write.
const POLL: Duration = Duration::from_secs(1);
/// The shortest time between two cursor writes of one trigger: a crash redelivers at most
/// this much more, and a busy trigger costs the store 20 commits a second, not hundreds.
const SAVE_EVERY: Duration = Duration::from_millis(50);
/// The longest wait for a subscriber's TCP connection (a full listen backlog otherwise
/// leaves the attempt to the kernel's SYN retransmissions, minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest reply body read from a subscriber, as at the broker's ingress; a longer
/// one fails the attempt.
const MAX_REPLY: usize = 10 * 1024 * 1024;
/// Knative's default time-to-live of an event bouncing between broker and subscribers.
pub const DEFAULT_TTL: i32 = 255;

/// A delivery destination, parsed once. Those on serval's own gateway (services, brokers)
/// go through the data plane in process ([`LocalClient`]: the pool, no socket to the
/// gateway); other plain-HTTP ones (subscribers on this machine) over the data plane's own
/// keep-alive connections, driven by the delivering task (no connection tasks, no
/// hand-offs); others (https) through reqwest and its TLS.
#[derive(Clone, Debug)]
pub(crate) struct DeliveryUrl {
    url: reqwest::Url,
    plain: Option<PlainTarget>,
    /// Addressed to serval's own gateway.
    local: bool,
}

/// Where a plain-HTTP delivery goes: `host:port` to connect to, and the request line's
/// origin-form target and Host header.
#[derive(Clone, Debug)]
struct PlainTarget {
    address: String,
    path: http::Uri,
    host: http::HeaderValue,
}

impl DeliveryUrl {
    /// `text` as a destination; `gateway` is serval's gateway URL (`http://host:port`).
    pub(crate) fn parse(text: &str, gateway: &str) -> Result<DeliveryUrl, String> {
        let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
        let plain = match (url.scheme(), url.host_str(), url.port_or_known_default()) {
            ("http", Some(host), Some(port)) => {
                let uri = http::Uri::try_from(url.as_str()).map_err(|e| e.to_string())?;
                let authority = uri.authority().ok_or("no host")?;
                Some(PlainTarget {
                    // A bracketed IPv6 literal stays bracketed, as `host:port` wants it.
                    address: format!("{host}:{port}"),
                    path: uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| e.to_string())?,
                    host: http::HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
                })
            }
            _ => None,
        };
        let local = plain.is_some()
            && text.strip_prefix(gateway).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']));
        Ok(DeliveryUrl { url, plain, local })
    }
}

/// The parts of a subscriber's answer that delivery looks at.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Most idle connections kept to one subscriber (a trigger keeps up to its delivery
/// concurrency busy).
const MAX_IDLE_PER_SUBSCRIBER: usize = 1024;

/// What a dispatcher has done since the server started.
#[derive(Debug, Default)]
pub struct Counts {
    delivered: std::sync::atomic::AtomicU64,
    retrying: std::sync::atomic::AtomicU64,
    dead_lettered: std::sync::atomic::AtomicU64,
    /// Given up on with no dead-letter sink to send them to.
    dropped: std::sync::atomic::AtomicU64,
    /// When each delivery in flight (attempts, waits between them) began, by log position
    /// (deliveries start in log order, so the first is the oldest).
    in_flight: Mutex<std::collections::BTreeMap<i64, Instant>>,
}

impl Counts {
    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<i64, Instant>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the oldest delivery in flight has been going on.
    fn oldest_in_flight(&self, now: Instant) -> Option<Duration> {
        self.lock_in_flight().first_key_value().map(|(_, began)| now.duration_since(*began))
    }
}

/// A trigger's delivery status, for `status.delivery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// Accepted events the trigger has not handled yet.
    pub pending: u64,
    /// Events waiting for a retry right now.
    pub retrying: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Given up on with no dead-letter sink configured.
    pub dropped: u64,
    /// Seconds the oldest delivery in flight has taken so far (attempts and the waits
    /// between them): a growing value means a subscriber holds deliveries up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_in_flight_seconds: Option<u64>,
}

/// The dispatchers of all triggers.
pub struct Dispatchers {
    store: Arc<dyn Storage>,
    /// An attempt's timeout when the trigger's `delivery.timeout` sets none: a subscriber
    /// that accepts and never answers must not hold an in-flight slot for ever.
    default_timeout: Duration,
    http: reqwest::Client,
    plain_http: Exchanges,
    /// The gateway in process, for destinations on it (set once the gateway exists).
    local: OnceLock<LocalClient>,
    running: Supervisor,
    /// What each running dispatcher has done, by trigger.
    counts: Mutex<HashMap<String, Arc<Counts>>>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The ids of the logs that exist (brokers', channels'), as of the last [`Self::sync`]:
    /// an append checks it instead of reading the store.
    logs: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl Dispatchers {
    pub fn new(store: Arc<dyn Storage>, default_timeout: Duration) -> Arc<Dispatchers> {
        Arc::new(Dispatchers {
            store,
            default_timeout,
            http: reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().unwrap_or_default(),
            plain_http: Exchanges::new(MAX_IDLE_PER_SUBSCRIBER, CONNECT_TIMEOUT),
            local: OnceLock::new(),
            running: Supervisor::default(),
            counts: Mutex::new(HashMap::new()),
            wakers: Mutex::new(HashMap::new()),
            logs: Default::default(),
        })
    }

    /// Delivers to destinations on serval's own gateway through `client`, in process, from
    /// now on (before, they go over a socket to the gateway like any other URL).
    pub fn deliver_in_process(&self, client: LocalClient) {
        let _ = self.local.set(client);
    }

    /// The data plane in process, once the gateway exists.
    pub(crate) fn local(&self) -> Option<&LocalClient> {
        self.local.get()
    }

    /// The store the dispatchers read and write.
    pub(crate) fn store(&self) -> &dyn Storage {
        self.store.as_ref()
    }

    fn waker(&self, log: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        match wakers.get(log) {
            Some(waker) => waker.clone(),
            None => wakers.entry(log.to_string()).or_default().clone(),
        }
    }

    /// New events were committed to a log (its id).
    pub fn notify(&self, log: &str) {
        self.waker(log).notify_waiters();
    }

    /// Makes the running dispatchers match `plans`: starts new ones, restarts changed ones
    /// (from their stored cursor), stops those whose trigger or subscription is gone; and
    /// takes `logs` (see [`existing_logs`]) as the logs appends may go into.
    pub fn sync(self: &Arc<Self>, plans: Vec<(Plan, String)>, logs: std::collections::HashSet<String>) {
        *self.logs.write().unwrap_or_else(|p| p.into_inner()) = logs;
        let wanted: Vec<Wanted<Plan>> = plans
            .into_iter()
            .map(|(plan, fingerprint)| Wanted { key: plan.consumer.clone(), fingerprint, plan })
            .collect();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.retain(|consumer, _| wanted.iter().any(|w| w.key == *consumer));
        self.running.sync(wanted, |consumer, plan, stopped| {
            let fresh = Arc::new(Counts::default());
            counts.insert(consumer.to_string(), fresh.clone());
            tokio::spawn(self.clone().dispatch(plan, stopped, fresh));
        });
    }

    /// The delivery status of a trigger or subscription: its cursor (`consumer`) in `log`
    /// (pending counts accepted events after the cursor).
    pub fn status(&self, consumer: &str, log: &str) -> DeliveryStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let pending =
            self.store.cursor(consumer).and_then(|cursor| self.store.count_events_after(log, cursor)).unwrap_or(0);
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(consumer).cloned();
        let counts = counts.unwrap_or_default();
        DeliveryStatus {
            pending,
            retrying: counts.retrying.load(Relaxed),
            delivered: counts.delivered.load(Relaxed),
            dead_lettered: counts.dead_lettered.load(Relaxed),
            dropped: counts.dropped.load(Relaxed),
            oldest_in_flight_seconds: counts.oldest_in_flight(Instant::now()).map(|d| d.as_secs()),
        }
    }

    /// Stops every dispatcher.
    pub fn stop_all(&self) {
        self.running.stop_all();
    }

    async fn dispatch(self: Arc<Self>, plan: Plan, stopped: watch::Receiver<bool>, counts: Arc<Counts>) {
        let (namespace, trigger) = (plan.namespace.as_str(), plan.name.as_str());
        let kind = plan.kind.to_lowercase();
        let log = plan.source.id();
        let reader = LogReader {
            store: self.store.as_ref(),
            log: &log,
            consumer: &plan.consumer,
            concurrency: plan.concurrency,
            waker: self.waker(&log),
            poll: POLL,
            what: format!("{kind} {namespace}/{trigger}"),
        };
        let (plan, counts, this) = (&plan, &counts, &self);
        let start = |stored: serval_store::StoredEvent| {
            let event = match serval_eventing::from_json_str(&stored.body) {
                Ok(event) => Some(event).filter(|event| plan.filter.matches(event)),
                Err(e) => {
                    // Accepted under older rules (attribute values now bounded): not
                    // deliverable, and never skipped in silence.
                    tracing::error!("{kind} {namespace}/{trigger}: stored event {} is skipped: {e}", stored.seq);
                    None
                }
            }?;
            let seq = stored.seq;
            counts.lock_in_flight().insert(seq, Instant::now());
            Some(async move {
                this.deliver(plan, event, counts).await;
                counts.lock_in_flight().remove(&seq);
            })
        };
        reader.consume(stopped, start, |_| Vec::new()).await;
    }

    /// One POST of an event; the outcome and, for 2xx, the response (a possible reply).
    pub(crate) async fn post(
        &self,
        to: &DeliveryUrl,
        event: &CloudEvent,
        structured: bool,
        timeout: Option<Duration>,
        prefer_reply: bool,
    ) -> (Outcome, Bytes, Option<CloudEvent>) {
        let (mut headers, body) =
            if structured { serval_eventing::encode_structured(event) } else { serval_eventing::encode_binary(event) };
        if prefer_reply {
            headers.insert("prefer", http::HeaderValue::from_static("reply"));
        }
        let Some(Answer { status, headers, body }) = self.post_raw(to, headers, body, timeout).await else {
            return (Outcome::NoResponse, Bytes::new(), None);
        };
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| RetryAfter::parse(v, SystemTime::now()));
        let reply = ((200..300).contains(&status) && serval_eventing::is_cloudevent(&headers))
            .then(|| serval_eventing::decode_request(&headers, body.clone()).ok())
            .flatten()
            .and_then(|mut events| events.pop());
        (Outcome::Status(status, retry_after), body, reply)
    }

    /// One POST of `body` with `headers` to `to`, within `timeout` (the dispatchers' default
    /// without one) for the whole exchange, response body included; `None`: no answer.
    pub(crate) async fn post_raw(
        &self,
        to: &DeliveryUrl,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Option<Answer> {
        let exchange = async {
            let local = if to.local { self.local.get() } else { None };
            match (&to.plain, local) {
                (Some(target), Some(local)) => self.post_local(local, target, headers, body).await,
                (Some(target), None) => self.post_plain(target, headers, body).await,
                (None, _) => self.post_reqwest(&to.url, headers, body).await,
            }
        };
        tokio::time::timeout(timeout.unwrap_or(self.default_timeout), exchange).await.ok().flatten()
    }

    async fn post_plain(&self, to: &PlainTarget, mut headers: http::HeaderMap, body: Bytes) -> Option<Answer> {
        headers.insert(http::header::HOST, to.host.clone());
        let target = to.path.path_and_query().map_or("/", |p| p.as_str());
        let answer =
            self.plain_http.send(&to.address, &http::Method::POST, target, &headers, &body, MAX_REPLY).await.ok()?;
        Some(Answer { status: answer.status.as_u16(), headers: answer.headers, body: answer.body })
    }

    async fn post_local(
        &self,
        local: &LocalClient,
        to: &PlainTarget,
        mut headers: http::HeaderMap,
        body: Bytes,
    ) -> Option<Answer> {
        let mut req = http::Request::post(to.path.clone()).body(body).ok()?;
        headers.insert(http::header::HOST, to.host.clone());
        *req.headers_mut() = headers;
        exchange_local(local, req).await
    }

    async fn post_reqwest(&self, url: &reqwest::Url, headers: http::HeaderMap, body: Bytes) -> Option<Answer> {
        let mut resp = self.http.post(url.clone()).headers(headers).body(body).send().await.ok()?;
        let (status, headers) = (resp.status().as_u16(), std::mem::take(resp.headers_mut()));
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.ok()? {
            if body.len() + chunk.len() > MAX_REPLY {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        Some(Answer { status, headers, body: body.freeze() })
    }

    /// Delivers one event: to the subscriber with retries (a subscription without one
    /// forwards the event itself), then the subscriber's reply where the plan sends replies,
    /// with retries too; what fails for good is dead-lettered (or dropped without a sink).
    async fn deliver(&self, plan: &Plan, event: CloudEvent, counts: &Counts) {
        use std::sync::atomic::Ordering::Relaxed;
        let reply = match &plan.subscriber {
            Some(Ok(subscriber)) => {
                match self.send_with_retries(plan, subscriber, &event, plan.prefer_reply, counts).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            // Plans whose subscriber does not resolve are not run.
            Some(Err(_)) => return,
            None => Some(event.clone()),
        };
        counts.delivered.fetch_add(1, Relaxed);
        let Some(reply) = reply else { return };
        match &plan.reply {
            Reply::Drop => {}
            Reply::IntoBroker(broker) => self.reingest(plan, broker, &event, reply).await,
            Reply::To(destination) => {
                self.send_with_retries(plan, destination, &reply, false, counts).await;
            }
        }
    }

    /// Sends `event` to `to` with the plan's retries; when it fails for good, dead-letters
    /// it (or drops it) and answers `None`. `Some`: the answer's reply event, if any.
    async fn send_with_retries(
        &self,
        plan: &Plan,
        to: &Resolved,
        event: &CloudEvent,
        prefer_reply: bool,
        counts: &Counts,
    ) -> Option<Option<CloudEvent>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (outcome, body, reply) = self.send(to, event, plan.structured, plan.policy.timeout, prefer_reply).await;
            match plan.policy.decide(attempt, outcome, Instant::now()) {
                Decision::Done => return Some(reply),
                Decision::RetryAt(at) => {
                    counts.retrying.fetch_add(1, Relaxed);
                    tokio::time::sleep_until(at.into()).await;
                    counts.retrying.fetch_sub(1, Relaxed);
                }
                Decision::DeadLetter { code } => {
                    self.dead_letter(plan, to, event, code, &body, attempt, counts).await;
                    return None;
                }
            }
        }
    }

    /// An event given up on: to the plan's dead-letter sink with Knative's `knativeerror*`
    /// extensions naming `failed` (the destination that refused it), or dropped.
    #[expect(clippy::too_many_arguments, reason = "one call site; the parts of one failure")]
    async fn dead_letter(
        &self,
        plan: &Plan,
        failed: &Resolved,
        event: &CloudEvent,
        code: Option<u16>,
        body: &Bytes,
        attempts: u32,
        counts: &Counts,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let (kind, namespace, name) = (plan.kind.to_lowercase(), &plan.namespace, &plan.name);
        let Some(sink) = &plan.dead_letter else {
            counts.dropped.fetch_add(1, Relaxed);
            let last = code.map_or_else(|| "no HTTP answer".to_string(), |c| format!("HTTP {c}"));
            tracing::warn!(
                "{kind} {namespace}/{name}: event {} to {} dropped after {attempts} attempts (no dead-letter sink); last answer: {last}",
                event.id(),
                failed.url
            );
            return;
        };
        counts.dead_lettered.fetch_add(1, Relaxed);
        let mut dead = event.clone();
        for (extension, value) in serval_eventing::dead_letter_extensions(&failed.url, code, body) {
            let _ = dead.set_extension(extension, value);
        }
        let (outcome, _, _) = self.send(sink, &dead, plan.structured, plan.policy.timeout, false).await;
        if !matches!(outcome, Outcome::Status(200..=299, _)) {
            tracing::warn!("{kind} {namespace}/{name}: dead-letter sink refused event {}", dead.id());
        }
    }

    /// One attempt to hand `event` to `to`: a POST, or an append to one of serval's logs
    /// (answered as its ingress would: 202, 404 when it does not exist).
    pub(crate) async fn send(
        &self,
        to: &Resolved,
        event: &CloudEvent,
        structured: bool,
        timeout: Option<Duration>,
        prefer_reply: bool,
    ) -> (Outcome, Bytes, Option<CloudEvent>) {
        let log = match &to.target {
            Target::Http(url) => return self.post(url, event, structured, timeout, prefer_reply).await,
            Target::Log(log) => log,
        };
        match self.hand_off(log, vec![event.clone()], Ttl::KeepOrDefault).await {
            Ok(()) => (Outcome::Status(202, None), Bytes::new(), None),
            Err(e @ DispatchError::NotFound { .. }) => (Outcome::Status(404, None), Bytes::from(e.to_string()), None),
            Err(e @ DispatchError::BadEvent(_)) => (Outcome::Status(400, None), Bytes::from(e.to_string()), None),
            Err(e) => {
                tracing::warn!("appending to {}: {e}", log.describe());
                (Outcome::NoResponse, Bytes::new(), None)
            }
        }
    }

    /// A subscriber's reply goes back into the trigger's broker, one hop closer to its TTL.
    async fn reingest(&self, plan: &Plan, broker: &LogRef, original: &CloudEvent, reply: CloudEvent) {
        let ttl = original
            .extension("knativebrokerttl")
            .and_then(|v| v.as_integer())
            .unwrap_or(DEFAULT_TTL)
            .saturating_sub(1);
        if ttl <= 0 {
            tracing::warn!(
                "trigger {}/{}: reply {} dropped: knativebrokerttl exhausted",
                plan.namespace,
                plan.name,
                reply.id()
            );
            return;
        }
        if let Err(e) = self.hand_off(broker, vec![reply], Ttl::Set(ttl)).await {
            tracing::error!("trigger {}/{}: storing a reply: {e}", plan.namespace, plan.name);
        }
    }

    /// Appends events to an existing log in one durable (fsynced) commit, then wakes its
    /// dispatchers: the way events from outside enter a broker or a channel (ingress,
    /// sources, workflows), answered for once this returns.
    pub async fn append_to(&self, log: &LogRef, events: Vec<CloudEvent>, ttl: Ttl) -> Result<(), DispatchError> {
        self.append(log, events, ttl, true).await
    }

    /// [`Dispatchers::append_to`] for an event a delivery hands on (a reply, a delivery to
    /// one of serval's logs, a dead letter): committed unsynced
    /// ([`serval_store::Durable::write_unsynced`]), as the event it came from is redone
    /// when this is lost — the cursor write that covers that event comes after it, and a
    /// power loss loses the last commits, never one while keeping a later one.
    async fn hand_off(&self, log: &LogRef, events: Vec<CloudEvent>, ttl: Ttl) -> Result<(), DispatchError> {
        self.append(log, events, ttl, false).await
    }

    /// Appends events to an existing log in one commit (fsynced or not: `synced`), then
    /// wakes its dispatchers: the one way events enter a broker or a channel. Events
    /// entering a broker are stamped with the time of arrival and their
    /// `knativebrokerttl`; a channel takes them as they are.
    async fn append(&self, log: &LogRef, events: Vec<CloudEvent>, ttl: Ttl, synced: bool) -> Result<(), DispatchError> {
        let id = log.id();
        if !self.logs.read().unwrap_or_else(|p| p.into_inner()).contains(&id) {
            let kind = if matches!(log, LogRef::Broker { .. }) { Broker::KIND } else { Channel::KIND };
            return Err(DispatchError::NotFound { kind, namespace: log.namespace().into(), name: log.name().into() });
        }
        let arrival = matches!(log, LogRef::Broker { .. })
            .then(|| humantime::format_rfc3339_micros(SystemTime::now()).to_string());
        let mut ops = Vec::with_capacity(events.len());
        for mut event in events {
            if let Some(arrival) = &arrival {
                event
                    .set_extension("knativearrivaltime", arrival.clone())
                    .map_err(|e| DispatchError::BadEvent(e.to_string()))?;
                match ttl {
                    Ttl::Set(ttl) => {
                        let _ = event.set_extension("knativebrokerttl", ttl);
                    }
                    Ttl::KeepOrDefault if event.extension("knativebrokerttl").is_none() => {
                        let _ = event.set_extension("knativebrokerttl", DEFAULT_TTL);
                    }
                    Ttl::KeepOrDefault => {}
                }
            }
            ops.push(WriteOp::append_event(&id, serval_eventing::to_json_string(&event)));
        }
        if synced {
            self.store.write(ops).await?
        } else {
            self.store.write_unsynced(ops).await?
        }
        self.notify(&id);
        Ok(())
    }
}

/// Sends `req` through the data plane in process and reads the whole answer (up to
/// [`MAX_REPLY`]); `None`: no answer, or a longer one.
pub(crate) async fn exchange_local(local: &LocalClient, req: http::Request<Bytes>) -> Option<Answer> {
    let (parts, body) = local.send(req).await?.into_parts();
    // Frame by frame: the compiler cannot prove `Collect` over the boxed body `Send` here.
    let mut body = std::pin::pin!(body);
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if read.len() + data.len() > MAX_REPLY {
                return None;
            }
            read.extend_from_slice(&data);
        }
    }
    Some(Answer { status: parts.status.as_u16(), headers: parts.headers, body: read.freeze() })
}

/// The `knativebrokerttl` an event gets when it enters a broker.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// The event's own, or [`DEFAULT_TTL`] when it carries none (events from outside).
    KeepOrDefault,
    /// This one (a reply: one less than the event that caused it).
    Set(i32),
}

/// One consumer of one durable log (a trigger's or subscription's dispatcher, a service's
/// async call queue): reads the log from the consumer's stored cursor in pages, starts up to
/// `concurrency` entries at once in log order (they finish in any order: a
/// [`DeliveryWindow`]), and stores the window's watermark as the cursor as it advances, one
/// write at a time, at most every [`SAVE_EVERY`]. At-least-once: a crash redoes the entries
/// after the last stored watermark.
pub(crate) struct LogReader<'a> {
    pub store: &'a dyn Storage,
    pub log: &'a str,
    pub consumer: &'a str,
    pub concurrency: usize,
    /// Notified when entries are appended to the log.
    pub waker: Arc<Notify>,
    /// Re-read the log this often without a notification.
    pub poll: Duration,
    /// Who reads, for the log lines (`trigger ns/name`).
    pub what: String,
}

impl LogReader<'_> {
    /// Runs until `stopped` turns true: `start` makes the work of an entry (`None`: nothing
    /// to do, the entry is handled at once); `on_save` adds writes to each cursor write
    /// (given the new cursor).
    pub async fn consume<W: Future<Output = ()>>(
        &self,
        mut stopped: watch::Receiver<bool>,
        mut start: impl FnMut(serval_store::StoredEvent) -> Option<W>,
        on_save: impl Fn(i64) -> Vec<WriteOp>,
    ) {
        let cursor = match self.store.cursor(self.consumer) {
            Ok(c) => c,
            Err(e) => return tracing::error!("{}: {e}", self.what),
        };
        let mut window = DeliveryWindow::new(cursor, self.concurrency);
        // The last entry read from the log, and the last cursor stored or being stored.
        let (mut read_to, mut saved) = (cursor, cursor);
        let mut buffered = VecDeque::new();
        // The last read found the end of the log: wait for a notification (or the poll).
        let mut caught_up = false;
        let mut in_flight = FuturesUnordered::new();
        let mut saving = None;
        let mut notified = Box::pin(self.waker.notified());
        loop {
            if *stopped.borrow() {
                return;
            }
            if !caught_up && buffered.len() < READ_AHEAD / 2 {
                // Listen before reading, so that an append right after the read is not missed.
                notified.as_mut().enable();
                match self.store.events_after(self.log, read_to, READ_AHEAD) {
                    Ok(page) => {
                        caught_up = page.len() < READ_AHEAD;
                        read_to = page.last().map_or(read_to, |e| e.seq);
                        buffered.extend(page);
                    }
                    Err(e) => {
                        tracing::error!("{}: reading the log: {e}", self.what);
                        caught_up = true;
                    }
                }
            }
            while window.has_room()
                && let Some(stored) = buffered.pop_front()
            {
                let seq = stored.seq;
                window.start(seq);
                match start(stored) {
                    // Boxed: the future is large and would be copied into the set otherwise.
                    Some(work) => {
                        let work = Box::pin(work);
                        in_flight.push(async move {
                            work.await;
                            seq
                        });
                    }
                    None => window.finish(seq),
                }
            }
            if saving.is_none() && window.watermark() > saved {
                saved = window.watermark();
                let mut ops = vec![WriteOp::set_cursor(self.consumer, Some(saved))];
                ops.extend(on_save(saved));
                saving = Some(Box::pin(self.save(ops)));
            }
            tokio::select! {
                Some(seq) = in_flight.next(), if !in_flight.is_empty() => window.finish(seq),
                () = async { saving.as_mut().expect("guarded by is_some").await }, if saving.is_some() => saving = None,
                () = notified.as_mut(), if caught_up => {
                    caught_up = false;
                    notified.set(self.waker.notified());
                }
                () = tokio::time::sleep(self.poll), if caught_up && in_flight.is_empty() => caught_up = false,
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// Stores a cursor (with `ops`), retrying (every [`POLL`]) until the store takes it;
    /// takes at least [`SAVE_EVERY`]. Unsynced: a cursor lost to a power loss redoes
    /// entries (at-least-once), and everything the handled entries wrote was committed
    /// before it.
    async fn save(&self, ops: Vec<WriteOp>) {
        let spacing = tokio::time::sleep(SAVE_EVERY);
        loop {
            match self.store.write_unsynced(ops.clone()).await {
                Ok(()) => return spacing.await,
                Err(e) => tracing::error!("{}: saving the cursor: {e}", self.what),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Most events one compaction drops from one broker's log: many small rounds keep each
/// one's hold on the store's writer under a millisecond (what an accepted event may wait
/// for its commit), and together drop up to 10 000 events/s per broker; a burst above
/// that is compacted after it.
const COMPACT_LIMIT: u32 = 500;
/// How often handled events are dropped from the brokers' logs.
const COMPACT_EVERY: Duration = Duration::from_millis(50);

/// The newest events each log keeps even when every trigger or subscription handled them, for `serval
/// event tail` (a broker without triggers would otherwise show nothing).
pub const RETAINED_EVENTS: u32 = 1_000;

/// Drops from each broker's and channel's log the events every trigger of that broker
/// (subscription of that channel) has handled (all of them when it has none: a new one
/// starts at the end of the log), except the `retained` newest, so that logs hold what is
/// still to deliver and a short recent history, not their whole history.
pub async fn compact_logs(store: &dyn Storage, retained: u32) -> Result<(), DispatchError> {
    let end = store.last_event_seq()?;
    // Each log with the cursors that read it.
    let mut logs: Vec<(String, Vec<String>)> = Vec::new();
    let triggers: Vec<Trigger> = store.list(Trigger::KIND, None)?;
    for broker in store.list::<Broker>(Broker::KIND, None)? {
        let (namespace, name) = (&broker.metadata.namespace, &broker.metadata.name);
        let consumers = triggers
            .iter()
            .filter(|t| &t.metadata.namespace == namespace && &t.spec.broker == name)
            .map(|t| trigger_consumer(namespace, &t.metadata.name))
            .collect();
        logs.push((broker_log(namespace, name), consumers));
    }
    let subscriptions: Vec<Subscription> = store.list(Subscription::KIND, None)?;
    let mut channels: Vec<serval_model::ObjectMeta> =
        store.list::<Channel>(Channel::KIND, None)?.into_iter().map(|c| c.metadata).collect();
    channels.extend(store.list::<InMemoryChannel>(InMemoryChannel::KIND, None)?.into_iter().map(|c| c.0.metadata));
    channels.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    channels.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    for channel in &channels {
        let (namespace, name) = (&channel.namespace, &channel.name);
        let consumers = subscriptions
            .iter()
            .filter(|s| &s.metadata.namespace == namespace && &s.spec.channel.name == name)
            .map(|s| subscription_consumer(namespace, &s.metadata.name))
            .collect();
        logs.push((channel_log(namespace, name), consumers));
    }
    let mut ops = Vec::new();
    for (log, consumers) in logs {
        let mut handled = end;
        for consumer in &consumers {
            handled = handled.min(store.cursor(consumer)?);
        }
        if retained > 0 {
            // Fewer than `retained` events: the whole log is kept.
            let Some(oldest_retained) = store.nth_newest_event_seq(&log, retained)? else { continue };
            handled = handled.min(oldest_retained - 1);
        }
        // Only a log with something to drop costs a commit (an idle server writes nothing).
        if store.first_event_seq(&log)?.is_some_and(|first| first <= handled) {
            ops.push(WriteOp::delete_events_up_to(&log, handled, COMPACT_LIMIT));
        }
    }
    if !ops.is_empty() {
        // A compaction lost to a power loss is done again: unsynced.
        store.write_unsynced(ops).await?;
    }
    Ok(())
}

/// Runs [`compact_logs`] every [`COMPACT_EVERY`] until the task is dropped, skipping rounds
/// when nothing was committed since the last one (no event appended, no cursor moved).
pub async fn compact_periodically(store: Arc<dyn Storage>) {
    let mut seen = None;
    loop {
        tokio::time::sleep(COMPACT_EVERY).await;
        let commits = store.commits();
        if seen == Some(commits) {
            continue;
        }
        match compact_logs(store.as_ref(), RETAINED_EVENTS).await {
            Ok(()) => seen = Some(commits),
            Err(e) => tracing::warn!("compacting the brokers' logs: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_store::{Durable, EventLog};

    fn put(kind: &str, namespace: &str, name: &str, json: serde_json::Value) -> WriteOp {
        WriteOp::put(kind, namespace, name, &json).expect("encodes")
    }

    fn bodies(store: &dyn Storage, broker: &str) -> Vec<String> {
        store.events_after(&broker_log("ns", broker), 0, 100).expect("read").into_iter().map(|e| e.body).collect()
    }

    #[test]
    fn plain_http_urls_become_an_address_a_target_and_a_host() {
        let plain =
            |url: &str| DeliveryUrl::parse(url, "http://127.0.0.1:1").expect("valid").plain.expect("plain HTTP");
        let t = plain("http://127.0.0.1:8080/f/ns/svc/hook?x=1");
        assert_eq!(
            (t.address.as_str(), t.path.to_string(), t.host.to_str().ok()),
            ("127.0.0.1:8080", "/f/ns/svc/hook?x=1".into(), Some("127.0.0.1:8080"))
        );
        let t = plain("http://localhost");
        assert_eq!(
            (t.address.as_str(), t.path.to_string(), t.host.to_str().ok()),
            ("localhost:80", "/".into(), Some("localhost"))
        );
        let t = plain("http://[::1]:9000/");
        assert_eq!(t.address, "[::1]:9000");
        assert!(
            DeliveryUrl::parse("https://example.com/", "http://127.0.0.1:1").expect("valid").plain.is_none(),
            "TLS goes through reqwest"
        );
        let local = |url: &str| DeliveryUrl::parse(url, "http://127.0.0.1:8080").expect("valid").local;
        assert!(local("http://127.0.0.1:8080/f/ns/svc/hook"), "the gateway's own routes go in process");
        assert!(local("http://127.0.0.1:8080"));
        assert!(!local("http://127.0.0.1:8081/"), "another port");
        assert!(!local("http://127.0.0.1:8080@example.com/"), "another host");
        assert!(!local("http://127.0.0.1:9090/"));
    }

    #[tokio::test]
    async fn compaction_keeps_what_the_slowest_trigger_has_not_handled() {
        let store = serval_store::MemoryStore::default();
        let broker = |name: &str| serde_json::json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {}});
        let trigger = |name: &str| {
            serde_json::json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"broker": "busy", "subscriber": {"uri": "http://127.0.0.1:1/"}}})
        };
        let mut ops = vec![
            put(Broker::KIND, "ns", "busy", broker("busy")),
            put(Broker::KIND, "ns", "quiet", broker("quiet")),
            put(Trigger::KIND, "ns", "fast", trigger("fast")),
            put(Trigger::KIND, "ns", "slow", trigger("slow")),
        ];
        for n in 0..4 {
            ops.push(WriteOp::append_event(&broker_log("ns", "busy"), format!("e{n}")));
            ops.push(WriteOp::append_event(&broker_log("ns", "quiet"), format!("q{n}")));
        }
        store.write(ops).await.expect("write");
        let busy: Vec<i64> =
            store.events_after(&broker_log("ns", "busy"), 0, 10).expect("read").iter().map(|e| e.seq).collect();
        store
            .write(vec![
                WriteOp::set_cursor(&trigger_consumer("ns", "fast"), Some(busy[3])),
                WriteOp::set_cursor(&trigger_consumer("ns", "slow"), Some(busy[1])),
            ])
            .await
            .expect("cursors");
        compact_logs(&store, 3).await.expect("compact keeping 3");
        assert_eq!(bodies(&store, "busy"), ["e1", "e2", "e3"], "e1 is handled, but among the 3 newest");
        assert_eq!(bodies(&store, "quiet"), ["q1", "q2", "q3"], "handled, but among the 3 newest");
        compact_logs(&store, 0).await.expect("compact");
        assert_eq!(bodies(&store, "busy"), ["e2", "e3"], "the slow trigger has handled e0 and e1 only");
        assert!(bodies(&store, "quiet").is_empty(), "no trigger will ever read the quiet broker's events");
        let commits = store.commits();
        compact_logs(&store, 0).await.expect("compact again");
        assert_eq!(store.commits(), commits, "nothing left to drop: no write");
    }
}
