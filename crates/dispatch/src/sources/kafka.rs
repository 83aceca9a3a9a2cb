//! KafkaSource (Knative's `sources.knative.dev/v1beta1`): the records of Kafka topics as
//! CloudEvents, read with rskafka. There are no consumer groups: each partition's offset is
//! kept in serval's store (a [`Positions`](super::Positions) key `<topic>/<partition>`,
//! holding the next offset + 1, so that 0 stays "none"), and `spec.consumerGroup` is only
//! shown. A partition without a stored offset starts at `spec.initialOffset` (`latest`, the
//! default, or `earliest`).
//!
//! Every partition of every topic is read by its own loop, all in parallel, each in order:
//! the next records are fetched while the last ones are delivered, in the sink's batches
//! (one event per request unless `serval.dev/delivery-batch-size` says more), one request
//! after the other (or several at once for an unordered source), and a partition's offset
//! is stored only after every record before it was accepted (at least once: a crash
//! delivers again what was in flight). Records are Knative's events: type
//! `dev.knative.kafka.event`, source `/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>`,
//! subject `partition:<p>#<offset>`, id `partition:<p>/offset:<offset>`, the record's
//! timestamp as time, its key as the `key` extension and its headers as `kafkaheader<name>`
//! extensions. Batches compressed with gzip, snappy, lz4 or zstd are read.
//!
//! A broker that cannot be reached makes the source NotReady (`KafkaUnreachable`), a topic
//! that does not exist `TopicNotFound`, an answer that cannot be decoded `KafkaError`; it
//! connects again by itself, backing off.
//!
//! Transactional producers' commit and abort markers are stepped over. rskafka 0.6 cannot
//! decode them (influxdata/rskafka#297) and fails a whole fetch that holds one, so such a
//! fetch goes again for the one batch at its offset: its records, or the marker, skipped.
//! Records of aborted transactions are delivered (Kafka's default `read_uncommitted`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Display;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, MaybeDone, maybe_done, try_join_all};
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError, RequestError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::RecordAndOffset;
use serval_eventing::{CloudEvent, Data};
use serval_model::KafkaSource;
use tokio::sync::watch;
use tokio::task::{self, JoinSet};
use tokio::time::error::Elapsed;

use super::{Backoff, Positions, SourceContext, SourceTask, Stopped};
use crate::DispatchError;

/// The type of every event of a KafkaSource (Knative's).
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";
/// The extension holding the record's key, as text.
pub const KEY_EXTENSION: &str = "key";
/// The prefix of the extensions a record's headers become (Knative's).
pub const HEADER_PREFIX: &str = "kafkaheader";
/// Longest header name (letters and digits) carried as an extension.
const MAX_HEADER_NAME: usize = 20;
/// Most bytes one fetch asks for.
const FETCH_BYTES: i32 = 1_000_000;
/// How long one fetch waits for records (the broker answers as soon as there are some);
/// the lag is refreshed after each.
const FETCH_WAIT_MS: i32 = 1_000;
/// How long rskafka retries a request before it gives up (the source then reports the
/// problem and connects again, backing off).
const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// The longest a single operation may take, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The reasons a KafkaSource is not Ready.
const UNREACHABLE: &str = "KafkaUnreachable";
const TOPIC_NOT_FOUND: &str = "TopicNotFound";
const KAFKA_ERROR: &str = "KafkaError";

/// A KafkaSource made ready to run.
pub struct KafkaTask {
    servers: Vec<String>,
    /// The servers, for messages.
    shown: String,
    topics: Vec<String>,
    /// Where a partition without a stored offset starts.
    earliest: bool,
}

/// Checks a KafkaSource's spec (bootstrap servers, topic names, initial offset) and makes
/// its task.
pub fn task(source: &KafkaSource) -> Result<Arc<dyn SourceTask>, DispatchError> {
    let spec = &source.spec;
    let invalid = |field: &str, message: String| DispatchError::invalid_field("KafkaSource", field, message);
    if spec.bootstrap_servers.is_empty() {
        return Err(invalid("spec.bootstrapServers", "give at least one host:port".into()));
    }
    let mut servers = Vec::with_capacity(spec.bootstrap_servers.len());
    for (i, server) in spec.bootstrap_servers.iter().enumerate() {
        let server = check_server(server).map_err(|m| invalid(&format!("spec.bootstrapServers[{i}]"), m))?;
        servers.push(server);
    }
    if spec.topics.is_empty() {
        return Err(invalid("spec.topics", "give at least one topic".into()));
    }
    for (i, topic) in spec.topics.iter().enumerate() {
        check_topic(topic).map_err(|m| invalid(&format!("spec.topics[{i}]"), m))?;
    }
    let earliest = match spec.initial_offset.as_deref().map(str::trim) {
        None | Some("" | "latest") => false,
        Some("earliest") => true,
        Some(other) => return Err(invalid("spec.initialOffset", format!("{other:?} must be earliest or latest"))),
    };
    let mut topics: Vec<String> = Vec::with_capacity(spec.topics.len());
    for topic in &spec.topics {
        if !topics.contains(topic) {
            topics.push(topic.clone());
        }
    }
    Ok(Arc::new(KafkaTask { shown: servers.join(", "), servers, topics, earliest }))
}

/// A bootstrap server: `host:port` (a `[v6]:port` too), without a scheme.
fn check_server(server: &str) -> Result<String, String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("is required".into());
    }
    if server.contains("://") {
        return Err(format!("{server:?}: give host:port, without a scheme"));
    }
    if server.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("{server:?} is not host:port"));
    }
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("{server:?} has no port (host:port)"));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{server:?} names no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(server.to_string()),
        _ => Err(format!("{server:?}: {port:?} is not a port")),
    }
}

/// A topic name: 1 to 249 letters, digits, `.`, `_` and `-`, not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is required".into());
    }
    if topic.len() > 249 {
        return Err("is longer than 249 characters".into());
    }
    if topic == "." || topic == ".." {
        return Err(format!("{topic:?} is not a topic name"));
    }
    match topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(c) => Err(format!("{topic:?} may not contain {c:?} (letters, digits, '.', '_' and '-')")),
        None => Ok(()),
    }
}

/// Why a connection's work ended.
enum End {
    Stopped,
    /// Not ready: a reason (CamelCase) and a message.
    Problem(&'static str, String),
}

impl SourceTask for KafkaTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::default();
            loop {
                let Err(end) = self.connected(&context, &mut stopped, &mut backoff).await;
                match end {
                    End::Stopped => return,
                    End::Problem(reason, message) => {
                        tracing::warn!("kafkasource {}/{}: {message}", context.namespace, context.name);
                        context.health.not_ready(reason, message);
                        if !backoff.sleep(&mut stopped).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}

/// One partition being read.
struct Partition {
    topic: String,
    partition: i32,
    /// `<topic>/<partition>`: its key among the positions and lags.
    key: String,
    client: PartitionClient,
}

/// The lag of each partition, summed into the source's health.
#[derive(Default)]
struct Lags(Mutex<HashMap<String, u64>>);

impl Lags {
    fn set(&self, context: &SourceContext, key: &str, lag: u64) {
        let mut lags = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lags.insert(key.to_string(), lag);
        context.health.set_lag(Some(lags.values().sum()));
    }
}

impl KafkaTask {
    fn unreachable(&self, why: impl Display) -> End {
        End::Problem(UNREACHABLE, format!("cannot reach {}: {why}", self.shown))
    }

    /// A failed operation: a missing topic, an unreachable broker or another error.
    fn failed(&self, doing: &str, error: KafkaError) -> End {
        match &error {
            KafkaError::ServerError { protocol_error: ProtocolError::UnknownTopicOrPartition, .. } => {
                End::Problem(TOPIC_NOT_FOUND, format!("{doing}: the topic does not exist on {}: create it", self.shown))
            }
            KafkaError::ServerError { .. } | KafkaError::InvalidResponse(_) => {
                End::Problem(KAFKA_ERROR, format!("{doing} on {}: {error}", self.shown))
            }
            // The broker answered, but the answer cannot be decoded: not an unreachable broker.
            KafkaError::Request(
                RequestError::ReadError(_) | RequestError::ReadVersionedError(_) | RequestError::TooMuchData { .. },
            ) => End::Problem(KAFKA_ERROR, format!("{doing} on {}: cannot decode the answer: {error}", self.shown)),
            _ => self.unreachable(format!("{doing}: {error}")),
        }
    }

    /// Awaits a Kafka operation, unless the source is stopped or it takes too long.
    async fn wait<T>(
        &self,
        doing: &str,
        stopped: &mut watch::Receiver<bool>,
        work: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, End> {
        tokio::select! {
            done = tokio::time::timeout(OPERATION_TIMEOUT, work) => match done {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(self.failed(doing, e)),
                Err(_) => Err(self.unreachable(format!("{doing}: no answer in {OPERATION_TIMEOUT:?}"))),
            },
            _ = stopped.wait_for(|s| *s) => Err(End::Stopped),
        }
    }

    /// Connects, finds the topics' partitions and reads them all until stopped or one of
    /// them fails (a new connection is made then).
    async fn connected(
        &self,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<Infallible, End> {
        let builder = ClientBuilder::new(self.servers.clone())
            .client_id(format!("serval-kafkasource-{}-{}", context.namespace, context.name))
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(REQUEST_DEADLINE),
            });
        let client: Client = self.wait("connecting", stopped, builder.build()).await?;
        let listed = self.wait("listing the topics", stopped, client.list_topics()).await?;
        let mut partitions = Vec::new();
        for topic in &self.topics {
            let Some(found) = listed.iter().find(|t| t.name == *topic) else {
                return Err(End::Problem(
                    TOPIC_NOT_FOUND,
                    format!("the topic {topic} does not exist on {}: create it", self.shown),
                ));
            };
            for &partition in &found.partitions {
                let doing = format!("finding the leader of {topic}/{partition}");
                let client = self
                    .wait(
                        &doing,
                        stopped,
                        client.partition_client(topic.clone(), partition, UnknownTopicHandling::Error),
                    )
                    .await?;
                partitions.push(Partition {
                    topic: topic.clone(),
                    partition,
                    key: format!("{topic}/{partition}"),
                    client,
                });
            }
        }
        let lags = Arc::new(Lags::default());
        let mut starts = Vec::with_capacity(partitions.len());
        for partition in &partitions {
            starts.push(self.start(context, stopped, partition).await?);
        }
        context.health.ready();
        backoff.reset();
        let event_source = format!("/apis/v1/namespaces/{}/kafkasources/{}", context.namespace, context.name);
        let reads = partitions.iter().zip(starts).map(|(partition, start)| {
            let mut stopped = stopped.clone();
            let (lags, event_source) = (lags.clone(), &event_source);
            async move { self.read(context, &mut stopped, partition, start, &lags, event_source).await }
        });
        match try_join_all(reads).await {
            Ok(_) => Err(End::Stopped),
            Err(end) => Err(end),
        }
    }

    /// Where a partition's reading starts: its stored offset, else `spec.initialOffset`,
    /// which is stored at once (as Knative commits a consumer group's initial offsets), so
    /// that a source that starts at the latest record and restarts, or loses the broker,
    /// before its first delivery does not skip what was produced meanwhile.
    async fn start(
        &self,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
        partition: &Partition,
    ) -> Result<i64, End> {
        let stored = context
            .positions
            .get(&partition.key)
            .map_err(|e| End::Problem(KAFKA_ERROR, format!("reading the stored offset of {}: {e}", partition.key)))?;
        if stored > 0 {
            return Ok(stored - 1);
        }
        let at = if self.earliest { OffsetAt::Earliest } else { OffsetAt::Latest };
        let doing = format!("reading the offsets of {}", partition.key);
        let offset = self.wait(&doing, stopped, partition.client.get_offset(at)).await?;
        store_next_offset(&context.positions, &partition.key, offset)
            .await
            .map_err(|e| End::Problem(KAFKA_ERROR, format!("storing the starting offset of {}: {e}", partition.key)))?;
        Ok(offset)
    }

    /// Reads a partition from `offset`: the next records are fetched while the last ones
    /// are made into events, and those delivered in batches (see [`Deliveries`]).
    async fn read(
        &self,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
        partition: &Partition,
        mut offset: i64,
        lags: &Lags,
        event_source: &str,
    ) -> Result<Infallible, End> {
        let source: Arc<str> = format!("{event_source}#{}", partition.topic).into();
        let topic: Arc<str> = partition.topic.as_str().into();
        let doing = format!("fetching records of {}", partition.key);
        let mut next = Box::pin(fetching(partition, offset));
        let mut deliveries = Deliveries::new(context, lags, &partition.key, offset);
        loop {
            loop {
                tokio::select! {
                    () = next.as_mut() => break,
                    stepped = deliveries.step() => stepped?,
                    _ = stopped.wait_for(|s| *s) => return Err(End::Stopped),
                }
            }
            let (records, high_watermark) = match next.as_mut().take_output() {
                Some(Ok(Ok(fetched))) => fetched,
                Some(Ok(Err(KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. }))) => {
                    offset = self.out_of_range(stopped, partition, offset).await?;
                    next = Box::pin(fetching(partition, offset));
                    continue;
                }
                Some(Ok(Err(e))) if is_marker_error(&e) => {
                    match self.around_marker(stopped, partition, offset).await? {
                        Some(fetched) => fetched,
                        None => {
                            offset += 1;
                            next = Box::pin(fetching(partition, offset));
                            continue;
                        }
                    }
                }
                Some(Ok(Err(e))) => return Err(self.failed(&doing, e)),
                Some(Err(_)) | None => {
                    return Err(self.unreachable(format!("{doing}: no answer in {OPERATION_TIMEOUT:?}")));
                }
            };
            // A compressed batch may start before the offset asked for.
            let records: Vec<RecordAndOffset> = records.into_iter().filter(|r| r.offset >= offset).collect();
            let Some(fetched_to) = records.last().map(|r| r.offset + 1) else {
                if deliveries.idle() {
                    lags.set(context, &partition.key, u64::try_from(high_watermark - offset).unwrap_or(0));
                }
                next = Box::pin(fetching(partition, offset));
                continue;
            };
            next = Box::pin(fetching(partition, fetched_to));
            let mut records = records.into_iter();
            loop {
                let batch: Vec<RecordAndOffset> = records.by_ref().take(context.sink.batch()).collect();
                let Some(last) = batch.last().map(|r| r.offset) else { break };
                while deliveries.full() {
                    tokio::select! {
                        stepped = while_fetching(next.as_mut(), deliveries.step()) => stepped?,
                        _ = stopped.wait_for(|s| *s) => return Err(End::Stopped),
                    }
                }
                // A stopped source starts nothing more (its next run goes on from the
                // stored offset; dropping `deliveries` aborts what is under way).
                if *stopped.borrow() {
                    return Err(End::Stopped);
                }
                let (source, topic, number) = (source.clone(), topic.clone(), partition.partition);
                let events = move || batch.iter().map(|r| event_of(&source, &topic, number, r)).collect();
                deliveries.start(events, last + 1, high_watermark, stopped);
            }
            offset = fetched_to;
        }
    }

    /// A fetch from `offset` failed on a transaction's commit or abort marker, which rskafka
    /// 0.6 cannot decode (influxdata/rskafka#297) and which fails the whole answer it is in.
    /// Fetches the one batch at `offset` alone (a broker answers the first batch whole
    /// whatever the size asked for): its records and the partition's end, or `None` when
    /// that batch is the marker itself (one offset: a control batch holds one record), to
    /// be stepped over. Markers are never delivered (Kafka's consumers skip them too).
    async fn around_marker(
        &self,
        stopped: &mut watch::Receiver<bool>,
        partition: &Partition,
        offset: i64,
    ) -> Result<Option<(Vec<RecordAndOffset>, i64)>, End> {
        let doing = format!("fetching the batch at {} of {}", offset, partition.key);
        let one_batch = async {
            match partition.client.fetch_records(offset, 1..2, FETCH_WAIT_MS).await {
                Err(e) if is_marker_error(&e) => Ok(None),
                fetched => fetched.map(Some),
            }
        };
        self.wait(&doing, stopped, one_batch).await
    }

    /// The offset to go on from when `offset` is not in the partition: its earliest record
    /// when the records before it were removed, else (the topic is new, or was emptied) its
    /// earliest too, so that nothing written since is missed.
    async fn out_of_range(
        &self,
        stopped: &mut watch::Receiver<bool>,
        partition: &Partition,
        offset: i64,
    ) -> Result<i64, End> {
        let doing = format!("reading the offsets of {}", partition.key);
        let earliest = self.wait(&doing, stopped, partition.client.get_offset(OffsetAt::Earliest)).await?;
        tracing::warn!("{}: offset {offset} is not in the partition; going on from {earliest}", partition.key);
        Ok(earliest)
    }
}

/// A partition's batches on their way to the sink and its stored offset. Each batch is
/// delivered by a task of its own, up to the sink's requests in flight (one: in order), so
/// that the next records are read and made into events meanwhile. The offset stored is the
/// one after the last batch the sink accepted with every batch before it, by one commit at
/// a time (at least once: a crash delivers again what came after it). Dropped, it aborts
/// its tasks.
struct Deliveries<'a> {
    context: &'a SourceContext,
    lags: &'a Lags,
    key: &'a str,
    posting: JoinSet<Result<(), Stopped>>,
    /// Batches under way, oldest first: their task, the offset after their last record
    /// and the partition's high watermark when they were fetched.
    queue: VecDeque<(task::Id, i64, i64)>,
    /// Tasks of `queue` whose batch was accepted.
    accepted: HashSet<task::Id>,
    /// The offset after every batch accepted so far.
    delivered_to: i64,
    /// The commit of an offset, at most one at a time.
    storing: JoinSet<Result<i64, DispatchError>>,
    stored: i64,
    /// The last commit failed: the next is tried after the next batch is accepted.
    store_failed: bool,
}

impl<'a> Deliveries<'a> {
    fn new(context: &'a SourceContext, lags: &'a Lags, key: &'a str, offset: i64) -> Self {
        Deliveries {
            context,
            lags,
            key,
            posting: JoinSet::new(),
            queue: VecDeque::new(),
            accepted: HashSet::new(),
            delivered_to: offset,
            storing: JoinSet::new(),
            stored: offset,
            store_failed: false,
        }
    }

    /// Starts delivering a batch whose last record is before `after`: its task makes the
    /// records into `events` first, so that the reading loop goes back to the next fetch.
    fn start(
        &mut self,
        events: impl FnOnce() -> Vec<CloudEvent> + Send + 'static,
        after: i64,
        high_watermark: i64,
        stopped: &watch::Receiver<bool>,
    ) {
        let (sink, mut stopped) = (self.context.sink.clone(), stopped.clone());
        let id = self.posting.spawn(async move { sink.deliver(events(), &mut stopped).await }).id();
        self.queue.push_back((id, after, high_watermark));
    }

    /// As many batches are under way as the sink takes requests at once.
    fn full(&self) -> bool {
        self.queue.len() >= self.context.sink.in_flight()
    }

    fn idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// A task that did not finish: aborted (this is being dropped), or it panicked.
    fn ended(&self, doing: &str, e: task::JoinError) -> End {
        if e.is_cancelled() { End::Stopped } else { End::Problem(KAFKA_ERROR, format!("{doing} ({}): {e}", self.key)) }
    }

    /// Waits for a batch to be accepted or an offset stored and goes on from there
    /// (pending while nothing is under way).
    async fn step(&mut self) -> Result<(), End> {
        tokio::select! {
            Some(done) = self.posting.join_next_with_id() => {
                let id = match done {
                    Ok((id, Ok(()))) => id,
                    Ok((_, Err(Stopped))) => return Err(End::Stopped),
                    Err(e) => return Err(self.ended("delivering", e)),
                };
                self.accepted.insert(id);
                let mut lag = None;
                while let Some(&(first, after, high_watermark)) = self.queue.front()
                    && self.accepted.remove(&first)
                {
                    self.queue.pop_front();
                    self.delivered_to = after;
                    lag = Some(u64::try_from(high_watermark - after).unwrap_or(0));
                }
                if let Some(lag) = lag {
                    self.lags.set(self.context, self.key, lag);
                }
                self.store_failed = false;
            }
            Some(done) = self.storing.join_next() => match done {
                Ok(Ok(offset)) => self.stored = offset,
                Ok(Err(e)) => {
                    let context = self.context;
                    tracing::error!(
                        "kafkasource {}/{}: storing the offset of {}: {e}",
                        context.namespace,
                        context.name,
                        self.key
                    );
                    self.store_failed = true;
                }
                Err(e) => return Err(self.ended("storing the offset", e)),
            },
            else => std::future::pending::<()>().await,
        }
        if self.storing.is_empty() && !self.store_failed && self.delivered_to > self.stored {
            let (positions, key, offset) = (self.context.positions.clone(), self.key.to_string(), self.delivered_to);
            self.storing.spawn(async move { store_next_offset(&positions, &key, offset).await.map(|()| offset) });
        }
        Ok(())
    }
}

/// Whether `error` is rskafka's failure to decode a transaction's marker (a control batch).
fn is_marker_error(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Request(RequestError::ReadError(_) | RequestError::ReadVersionedError(_)))
        && error.to_string().contains("control batch")
}

/// Stores `next` as the offset a partition goes on from: kept as `next + 1`, so that 0
/// stays "none" (read back by [`KafkaTask::start`]).
async fn store_next_offset(positions: &Positions, key: &str, next: i64) -> Result<(), DispatchError> {
    positions.set(&[(key, next + 1)]).await
}

/// Records being fetched from an offset (the request goes out when first polled).
type Fetching<'a> = MaybeDone<BoxFuture<'a, Result<Result<(Vec<RecordAndOffset>, i64), KafkaError>, Elapsed>>>;

fn fetching(partition: &Partition, offset: i64) -> Fetching<'_> {
    let fetch = partition.client.fetch_records(offset, 1..FETCH_BYTES, FETCH_WAIT_MS);
    maybe_done(tokio::time::timeout(OPERATION_TIMEOUT, fetch).boxed())
}

/// Awaits `work` while the next records are fetched.
async fn while_fetching<T>(mut next: Pin<&mut Fetching<'_>>, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        let fetched = matches!(*next, MaybeDone::Done(_));
        tokio::select! {
            done = &mut work => return done,
            () = next.as_mut(), if !fetched => {}
        }
    }
}

/// The event of a record (Knative's KafkaSource event).
fn event_of(source: &str, topic: &str, partition: i32, record: &RecordAndOffset) -> CloudEvent {
    let offset = record.offset;
    let id = format!("partition:{partition}/offset:{offset}");
    let r = &record.record;
    let content_type = r
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_string());
    let value = r.value.as_deref().unwrap_or_default();
    let (content_type, data) = super::payload_data(content_type, value, || Bytes::copy_from_slice(value));
    let millis = r.timestamp.timestamp_millis();
    let time = u64::try_from(millis)
        .ok()
        .map(|ms| humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string());
    let build = |content_type: Option<&str>, data: Option<Data>| {
        let mut builder = CloudEvent::builder()
            .id(id.clone())
            .source(source)
            .event_type(KAFKA_EVENT_TYPE)
            .subject(format!("partition:{partition}#{offset}"));
        if let Some(time) = &time {
            builder = builder.time(time.clone());
        }
        if let Some(ct) = content_type {
            builder = builder.datacontenttype(ct);
        }
        if let Some(data) = data {
            builder = builder.data(data);
        }
        builder.build()
    };
    // A content type the event cannot carry leaves the data as bytes.
    let built = build(content_type.as_deref(), data)
        .or_else(|_| build(Some("application/octet-stream"), r.value.clone().map(|v| Data::Binary(Bytes::from(v)))))
        .or_else(|_| build(None, None));
    let mut event = match built {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("{topic}/{partition} #{offset}: {e}");
            CloudEvent::builder()
                .id(id.clone())
                .source("/apis/v1/kafkasources")
                .event_type(KAFKA_EVENT_TYPE)
                .build()
                .unwrap_or_else(|_| unreachable!("a fixed event is valid"))
        }
    };
    if let Some(key) = &r.key {
        let _ = event.set_extension(KEY_EXTENSION, String::from_utf8_lossy(key).into_owned());
    }
    for (name, value) in &r.headers {
        if let Some(name) = header_extension(name) {
            let _ = event.set_extension(name, String::from_utf8_lossy(value).into_owned());
        }
    }
    event
}

/// The extension a header becomes: `kafkaheader` and the header's letters and digits,
/// lower-cased (Knative's), when those are 1 to 20 characters.
fn header_extension(name: &str) -> Option<String> {
    let name: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    (!name.is_empty() && name.len() <= MAX_HEADER_NAME).then(|| format!("{HEADER_PREFIX}{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::chrono::{TimeZone, Utc};
    use rskafka::record::Record;
    use serval_model::{Destination, KafkaSourceSpec};
    use std::collections::BTreeMap;

    fn source(servers: &[&str], topics: &[&str], initial: Option<&str>) -> KafkaSource {
        KafkaSource {
            api_version: serval_model::KAFKA_SOURCE_API_VERSION.into(),
            kind: "KafkaSource".into(),
            metadata: Default::default(),
            spec: KafkaSourceSpec {
                bootstrap_servers: servers.iter().map(|s| s.to_string()).collect(),
                topics: topics.iter().map(|s| s.to_string()).collect(),
                initial_offset: initial.map(str::to_string),
                sink: Destination { uri: Some("http://127.0.0.1:1/".into()), ..Default::default() },
                ..Default::default()
            },
            status: Default::default(),
        }
    }

    fn field_of(result: Result<Arc<dyn SourceTask>, DispatchError>) -> String {
        match result {
            Err(DispatchError::Invalid { source, .. }) => source.errors[0].field.clone(),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_spec_that_cannot_run_names_its_field() {
        assert!(task(&source(&["127.0.0.1:9092"], &["orders"], None)).is_ok());
        assert!(task(&source(&["kafka.example:9092", "[::1]:9093"], &["a.b_c-d"], Some("earliest"))).is_ok());
        for (spec, field) in [
            (source(&[], &["t"], None), "spec.bootstrapServers"),
            (source(&["kafka://h:9092"], &["t"], None), "spec.bootstrapServers[0]"),
            (source(&["h:1", "h"], &["t"], None), "spec.bootstrapServers[1]"),
            (source(&["h:port"], &["t"], None), "spec.bootstrapServers[0]"),
            (source(&["h:1"], &[], None), "spec.topics"),
            (source(&["h:1"], &["ok", "not ok"], None), "spec.topics[1]"),
            (source(&["h:1"], &[".."], None), "spec.topics[0]"),
            (source(&["h:1"], &["t"], Some("newest")), "spec.initialOffset"),
        ] {
            assert_eq!(field_of(task(&spec)), field);
        }
    }

    fn record(key: Option<&str>, value: &[u8], headers: &[(&str, &str)], offset: i64) -> RecordAndOffset {
        RecordAndOffset {
            record: Record {
                key: key.map(|k| k.as_bytes().to_vec()),
                value: Some(value.to_vec()),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect::<BTreeMap<_, _>>(),
                timestamp: Utc.timestamp_millis_opt(1_700_000_000_123).single().expect("time"),
            },
            offset,
        }
    }

    #[test]
    fn a_record_becomes_knatives_event() {
        let source = "/apis/v1/namespaces/default/kafkasources/orders#orders";
        let r = record(Some("order-1"), br#"{"n":1}"#, &[("Tenant", "acme"), ("a-header-name-far-too-long", "x")], 42);
        let event = event_of(source, "orders", 2, &r);
        assert_eq!(event.id(), "partition:2/offset:42");
        assert_eq!(event.source(), source);
        assert_eq!(event.event_type(), KAFKA_EVENT_TYPE);
        assert_eq!(event.subject(), Some("partition:2#42"));
        assert_eq!(event.time(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data(), Some(&Data::from(serde_json::json!({"n": 1}))));
        assert_eq!(event.extension("key").and_then(|v| v.as_str()), Some("order-1"));
        assert_eq!(event.extension("kafkaheadertenant").and_then(|v| v.as_str()), Some("acme"));
        assert_eq!(event.extensions().count(), 2, "{event:?}");

        let bytes = event_of(source, "orders", 0, &record(None, b"\x00\x01", &[], 1));
        assert_eq!(bytes.datacontenttype(), Some("application/octet-stream"));
        assert_eq!(bytes.data(), Some(&Data::Binary(Bytes::from_static(b"\x00\x01"))));
        assert!(bytes.extension("key").is_none());
        let text = event_of(source, "orders", 0, &record(None, b"{}", &[("content-type", "text/plain")], 2));
        assert_eq!(text.datacontenttype(), Some("text/plain"));
        assert_eq!(text.data(), Some(&Data::Text("{}".into())));
        let odd = event_of(source, "orders", 0, &record(None, b"a", &[("content-type", "not a type")], 3));
        assert_eq!(odd.datacontenttype(), Some("application/octet-stream"));
    }
}
