//! NatsSource: the messages of a NATS JetStream stream, read through a durable pull
//! consumer, as CloudEvents. A message that carries a CloudEvent (binary mode: `ce-`
//! headers; structured mode: `Content-Type: application/cloudevents+json`) is that event;
//! any other message becomes a `dev.serval.nats.message` event with the payload as its data.
//!
//! The stream is the user's and is never created; the consumer is created when missing
//! (explicit acks, from the stream's first message). Messages are fetched in batches,
//! delivered in order, and only then acknowledged, each confirmed by the server: a crash
//! or a lost connection in between makes JetStream deliver them again (at least once),
//! once the consumer's ack wait has passed. While a slow sink holds a batch, the source
//! tells the server it is still working on it, so nothing is redelivered meanwhile.
//!
//! A server that cannot be reached (or a connection that is lost) makes the source
//! NotReady (`NatsUnreachable`); it connects again by itself, backing off.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, FromConsumer, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, ConnectOptions, Event, HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::future::{BoxFuture, MaybeDone, maybe_done};
use futures_util::{FutureExt, StreamExt};
use serval_eventing::{CloudEvent, STRUCTURED_CONTENT_TYPE};
use serval_model::NatsSource;
use tokio::sync::{mpsc, watch};

use super::{Backoff, SourceContext, SourceTask};
use crate::DispatchError;

/// The type of an event made from a plain NATS message.
pub const NATS_EVENT_TYPE: &str = "dev.serval.nats.message";
/// The extension holding the message's sequence number in the stream.
pub const SEQUENCE_EXTENSION: &str = "natsstreamsequence";
/// Most messages fetched, delivered and acknowledged at once (rounded up to a multiple of
/// what the sink takes at once).
const BATCH: usize = 256;
/// How long one fetch waits for a first message (the server answers as soon as there is
/// one); the lag is refreshed after each empty wait.
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// The ack wait of a consumer this source creates: how long after a crash the messages it
/// held are delivered again.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long stopping may wait for the server to take the negative acks of a batch not
/// delivered (so that the next run gets it at once, not after the ack wait).
const NAK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long stopping waits for a batch being fetched, to give it back too (when the stream
/// has messages, they come in less; else there is nothing to give back).
const PREFETCH_GRACE: Duration = Duration::from_millis(100);
/// The reasons a NatsSource is not Ready.
const UNREACHABLE: &str = "NatsUnreachable";
const STREAM_NOT_FOUND: &str = "StreamNotFound";
const JETSTREAM_NOT_ENABLED: &str = "JetStreamNotEnabled";
const CONSUMER_NOT_USABLE: &str = "ConsumerNotUsable";
const NATS_ERROR: &str = "NatsError";

/// A batch being fetched: the messages there are, up to a number, as soon as there is
/// one; none after [`FETCH_WAIT`] without any.
type Fetching = MaybeDone<BoxFuture<'static, Result<Vec<jetstream::Message>, async_nats::Error>>>;

/// Starts fetching the next batch of `consumer` (the request goes out when first polled).
fn fetching(consumer: &PullConsumer, most: usize) -> Fetching {
    let consumer = consumer.clone();
    let fetch = async move {
        // `no_wait` with an expiry: the server waits up to the expiry for a first message,
        // then answers with what there is.
        let mut batch = consumer.fetch().max_messages(most).expires(FETCH_WAIT).messages().await?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message?);
        }
        Ok(messages)
    };
    maybe_done(fetch.boxed())
}

/// A NatsSource made ready to run.
pub struct NatsTask {
    servers: Vec<ServerAddr>,
    /// The servers as `scheme://host:port`, without credentials, for messages.
    shown: String,
    stream: String,
    subject: Option<String>,
    consumer: String,
    /// `nats://<first server>/<stream>`: the `source` of plain messages' events.
    event_source: String,
}

/// Checks a NatsSource's spec (server URLs, stream, consumer and subject names) and makes
/// its task.
pub fn task(source: &NatsSource) -> Result<Arc<dyn SourceTask>, DispatchError> {
    let spec = &source.spec;
    let invalid = |field: &str, message: String| DispatchError::invalid_field("NatsSource", field, message);
    if spec.servers.is_empty() {
        return Err(invalid("spec.servers", "give at least one nats://host:port URL".into()));
    }
    let mut servers = Vec::with_capacity(spec.servers.len());
    for (i, server) in spec.servers.iter().enumerate() {
        let addr =
            ServerAddr::from_str(server.trim()).map_err(|e| invalid(&format!("spec.servers[{i}]"), e.to_string()))?;
        if addr.host().is_empty() {
            return Err(invalid(&format!("spec.servers[{i}]"), format!("{server:?} names no host")));
        }
        servers.push(addr);
    }
    if servers.iter().any(ServerAddr::is_websocket) && !servers.iter().all(ServerAddr::is_websocket) {
        return Err(invalid("spec.servers", "cannot mix websocket (ws://, wss://) and other servers".into()));
    }
    check_name(&spec.stream).map_err(|m| invalid("spec.stream", m))?;
    check_name(&spec.consumer).map_err(|m| invalid("spec.consumer", m))?;
    let subject = spec.subject.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(subject) = subject {
        check_filter(subject).map_err(|m| invalid("spec.subject", m))?;
    }
    let shown = servers.iter().map(shown).collect::<Vec<_>>().join(", ");
    let event_source = format!("nats://{}/{}", host_port(&servers[0]), spec.stream);
    Ok(Arc::new(NatsTask {
        servers,
        shown,
        stream: spec.stream.clone(),
        subject: subject.map(str::to_string),
        consumer: spec.consumer.clone(),
        event_source,
    }))
}

/// A stream or consumer name: no whitespace, `.`, `*`, `>` or path separators.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.len() > 255 {
        return Err("is longer than 255 characters".into());
    }
    match name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')) {
        Some(c) => Err(format!("{name:?} may not contain {c:?}")),
        None => Ok(()),
    }
}

/// A subject filter: dot-separated non-empty tokens without whitespace, `*` or `>` only as
/// whole tokens, `>` only last.
fn check_filter(subject: &str) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("{subject:?} has an empty token"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{subject:?} may not contain whitespace"));
        }
        if (token.contains('*') || token.contains('>')) && !matches!(*token, "*" | ">") {
            return Err(format!("{subject:?}: the wildcards * and > stand for whole tokens"));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("{subject:?}: > may only be the last token"));
        }
    }
    Ok(())
}

fn host_port(server: &ServerAddr) -> String {
    match server.host() {
        host if host.contains(':') => format!("[{host}]:{}", server.port()),
        host => format!("{host}:{}", server.port()),
    }
}

/// A server as `scheme://host:port` (never with its credentials).
fn shown(server: &ServerAddr) -> String {
    format!("{}://{}", server.scheme(), host_port(server))
}

/// Why a connection's work ended.
enum End {
    Stopped,
    /// Not ready: a reason (CamelCase) and a message.
    Problem(&'static str, String),
}

impl SourceTask for NatsTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::default();
            loop {
                let Err(end) = self.connected(&context, &mut stopped, &mut backoff).await;
                match end {
                    End::Stopped => return,
                    End::Problem(reason, message) => {
                        tracing::warn!("natssource {}/{}: {message}", context.namespace, context.name);
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

/// One connection to the servers: its client, the events it reports, and `stopped`.
struct Connection<'a> {
    task: &'a NatsTask,
    client: Client,
    events: mpsc::UnboundedReceiver<Event>,
    stopped: &'a mut watch::Receiver<bool>,
}

impl Connection<'_> {
    /// Awaits `work`, unless the source is stopped or the connection is lost first.
    async fn wait<T>(&mut self, work: impl Future<Output = T>) -> Result<T, End> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                value = &mut work => return Ok(value),
                _ = self.stopped.wait_for(|s| *s) => return Err(End::Stopped),
                event = self.events.recv() => match event {
                    Some(Event::Disconnected | Event::Closed) | None => {
                        return Err(self.task.unreachable("the connection was lost"));
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// A failed operation: unreachable when the connection is down, else a NATS error.
    fn failed(&self, doing: &str, error: impl Display) -> End {
        // A server shutting down ends pull requests (409) before it closes the connection.
        if error.to_string().contains("Server Shutdown") {
            self.task.unreachable("the server is shutting down")
        } else if self.client.connection_state() == async_nats::connection::State::Connected {
            End::Problem(NATS_ERROR, format!("{doing} on {}: {error}", self.task.shown))
        } else {
            self.task.unreachable(format!("{doing}: {error}"))
        }
    }
}

impl NatsTask {
    fn unreachable(&self, why: impl Display) -> End {
        End::Problem(UNREACHABLE, format!("cannot reach {}: {why}", self.shown))
    }

    /// Connects, binds the consumer and reports its messages until stopped or something
    /// fails (a new connection is made then).
    async fn connected(
        &self,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<Infallible, End> {
        let (events_tx, events) = mpsc::unbounded_channel();
        // After a lost connection the client tries each server once more by itself, then
        // closes: this task makes the next connection, backing off (a client left to
        // reconnect forever would outlive the task).
        let options = ConnectOptions::new()
            .name(format!("serval natssource {}/{}", context.namespace, context.name))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(self.servers.len())
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            });
        let client = tokio::select! {
            connected = options.connect(self.servers.clone()) => connected.map_err(|e| self.unreachable(e))?,
            _ = stopped.wait_for(|s| *s) => return Err(End::Stopped),
        };
        let mut connection = Connection { task: self, client, events, stopped };
        let consumer = self.bind(&mut connection).await?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        // Whole requests to the sink (a multiple of what it takes at once), but no more than
        // half what the server lets the consumer hold unacknowledged (a batch is fetched
        // while the one before is delivered).
        let at_once = context.sink.at_once();
        let most_pending = usize::try_from(consumer.cached_info().config.max_ack_pending).unwrap_or(0);
        let fetch_size = match BATCH.div_ceil(at_once) * at_once {
            wanted if most_pending > 1 && wanted > most_pending / 2 => most_pending / 2,
            wanted => wanted,
        };
        context.health.set_lag(Some(consumer.cached_info().num_pending));
        context.health.ready();
        backoff.reset();
        let mut next = Box::pin(fetching(&consumer, fetch_size));
        loop {
            connection.wait(next.as_mut()).await?;
            let fetched = next.as_mut().take_output().unwrap_or_else(|| Ok(Vec::new()));
            let messages = fetched.map_err(|e| connection.failed("fetching messages", e))?;
            next = Box::pin(fetching(&consumer, fetch_size));
            let Some(last) = messages.last() else {
                let info = connection
                    .wait(consumer.get_info())
                    .await?
                    .map_err(|e| connection.failed("reading the consumer's state", e))?;
                context.health.set_lag(Some(info.num_pending));
                continue;
            };
            let lag = last.info().map(|i| i.pending).ok();
            let events: Vec<CloudEvent> = messages.iter().map(|m| self.event(m)).collect();
            match self.deliver(context, &mut connection, &messages, events, ack_wait, next.as_mut()).await {
                Ok(()) => {}
                Err(End::Stopped) => {
                    // Given back, with the next batch if it comes at once (an empty stream
                    // holds a fetch), so that the next run has them at once.
                    let nak = async {
                        for message in &messages {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        let _ = tokio::time::timeout(PREFETCH_GRACE, &mut next).await;
                        if let Some(Ok(prefetched)) = next.as_mut().take_output() {
                            for message in &prefetched {
                                let _ = message.ack_with(AckKind::Nak(None)).await;
                            }
                        }
                        let _ = connection.client.flush().await;
                    };
                    let _ = tokio::time::timeout(NAK_TIMEOUT, nak).await;
                    return Err(End::Stopped);
                }
                Err(problem) => return Err(problem),
            }
            // Each message's ack goes out in order on the connection; the server confirms
            // the last one's after it took the others (a lost ack only means a message
            // comes again after the ack wait).
            let acks = async {
                for message in &messages[..messages.len() - 1] {
                    message.ack().await?;
                }
                last.double_ack().await
            };
            if let Err(e) = connection.wait(acks).await? {
                return Err(connection.failed("acknowledging delivered messages", e));
            }
            if lag.is_some() {
                context.health.set_lag(lag);
            }
        }
    }

    /// The stream (which must exist) and the durable pull consumer, created when missing.
    async fn bind(&self, connection: &mut Connection<'_>) -> Result<PullConsumer, End> {
        let js = jetstream::new(connection.client.clone());
        let stream = match connection.wait(js.get_stream(&self.stream)).await? {
            Ok(stream) => stream,
            Err(e) => {
                use jetstream::context::GetStreamErrorKind;
                return Err(match e.kind() {
                    GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                        End::Problem(
                            STREAM_NOT_FOUND,
                            format!("the stream {} does not exist on {}: create it", self.stream, self.shown),
                        )
                    }
                    GetStreamErrorKind::JetStream(js) if not_enabled(js.error_code()) => self.jetstream_not_enabled(),
                    GetStreamErrorKind::Request if no_responders(&e) => self.jetstream_not_enabled(),
                    _ => connection.failed(&format!("reading the stream {}", self.stream), e),
                });
            }
        };
        let wanted = pull::Config {
            durable_name: Some(self.consumer.clone()),
            filter_subject: self.subject.clone().unwrap_or_default(),
            // Each message acked (not all before one: after a crash, the messages in
            // flight come again only after the ack wait, and an ack of a later one would
            // cover them undelivered).
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: ACK_WAIT,
            ..Default::default()
        };
        let not_usable = |why: String| {
            End::Problem(
                CONSUMER_NOT_USABLE,
                format!("the consumer {} of the stream {}: {why}", self.consumer, self.stream),
            )
        };
        let consumer: PullConsumer =
            match connection.wait(stream.get_or_create_consumer(&self.consumer, wanted.clone())).await? {
                Ok(consumer) => consumer,
                Err(e) => {
                    use jetstream::stream::ConsumerErrorKind;
                    return Err(match e.kind() {
                        ConsumerErrorKind::InvalidConsumerType => {
                            not_usable("is a push consumer; delete it or name another (a pull consumer)".into())
                        }
                        ConsumerErrorKind::JetStream(js) => not_usable(js.to_string()),
                        _ => connection.failed(&format!("binding the consumer {}", self.consumer), e),
                    });
                }
            };
        let config = &consumer.cached_info().config;
        if config.ack_policy == AckPolicy::None {
            return Err(not_usable("acknowledges nothing (ack policy none); delete it or name another".into()));
        }
        let filters: Vec<&str> = if config.filter_subjects.is_empty() {
            Some(config.filter_subject.as_str()).filter(|s| !s.is_empty()).into_iter().collect()
        } else {
            config.filter_subjects.iter().map(String::as_str).collect()
        };
        if filters != self.subject.as_deref().into_iter().collect::<Vec<_>>() {
            // The spec's subject changed: the consumer follows (servers from 2.10 on).
            let mut changed = pull::Config::try_from_consumer_config(config.clone())
                .map_err(|e| not_usable(format!("cannot be read: {e}")))?;
            changed.filter_subject = self.subject.clone().unwrap_or_default();
            changed.filter_subjects = Vec::new();
            return match connection.wait(stream.update_consumer(changed)).await? {
                Ok(consumer) => Ok(consumer),
                Err(e) => Err(not_usable(format!(
                    "filters {} and cannot be changed to {} ({e}); delete it or name another",
                    if filters.is_empty() { "nothing".to_string() } else { filters.join(", ") },
                    self.subject.as_deref().unwrap_or("the whole stream"),
                ))),
            };
        }
        Ok(consumer)
    }

    fn jetstream_not_enabled(&self) -> End {
        End::Problem(JETSTREAM_NOT_ENABLED, format!("{} does not run JetStream (nats-server -js)", self.shown))
    }

    /// Delivers the events of a batch while the next batch is fetched, telling the server
    /// that the work on both is in progress every third of the ack wait.
    async fn deliver(
        &self,
        context: &SourceContext,
        connection: &mut Connection<'_>,
        messages: &[jetstream::Message],
        events: Vec<CloudEvent>,
        ack_wait: Duration,
        mut next: Pin<&mut Fetching>,
    ) -> Result<(), End> {
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let delivery = context.sink.deliver(events, connection.stopped);
        let mut delivery = std::pin::pin!(delivery);
        loop {
            let fetched = matches!(*next, MaybeDone::Done(_));
            tokio::select! {
                delivered = &mut delivery => return delivered.map_err(|_| End::Stopped),
                () = next.as_mut(), if !fetched => {}
                _ = progress.tick() => {
                    let prefetched = match next.as_mut().output_mut() {
                        Some(Ok(prefetched)) => &prefetched[..],
                        _ => &[],
                    };
                    for message in messages.iter().chain(prefetched) {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }

    /// The CloudEvent of a message.
    fn event(&self, message: &jetstream::Message) -> CloudEvent {
        let info = message.info().ok();
        let sequence = info.as_ref().map_or(0, |i| i.stream_sequence);
        let published = info.as_ref().and_then(|i| {
            let nanos = u64::try_from(i.published.unix_timestamp_nanos()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        });
        event_of(
            &self.stream,
            &self.event_source,
            message.subject.as_str(),
            message.headers.as_ref(),
            &message.payload,
            sequence,
            published,
        )
    }
}

fn not_enabled(code: ErrorCode) -> bool {
    code == ErrorCode::JETSTREAM_NOT_ENABLED || code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
}

/// Whether a request failed because nobody answers JetStream's API (no JetStream).
fn no_responders(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<jetstream::context::RequestError>() {
            return e.kind() == jetstream::context::RequestErrorKind::NoResponders;
        }
        source = e.source();
    }
    false
}

/// The event a message carries (CloudEvents binary or structured mode), else the message
/// as a `dev.serval.nats.message` event: id `<stream>-<sequence>` (the same on every
/// redelivery), the NATS subject as `subject`, the payload as data, its other headers as
/// `nats<name>` extensions (when that name is at most 20 letters and digits).
fn event_of(
    stream: &str,
    event_source: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    sequence: u64,
    published: Option<SystemTime>,
) -> CloudEvent {
    let mut content_type = None;
    let mut carried = http::HeaderMap::new();
    let mut extensions = Vec::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        let value = values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_string());
        }
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value)) {
            carried.append(n, v);
        }
        if !name.to_ascii_lowercase().starts_with("nats-") && !name.eq_ignore_ascii_case("content-type") {
            extensions.push((header_extension(name), value));
        }
    }
    if carried.contains_key("ce-specversion") {
        match serval_eventing::decode_binary(&carried, payload.clone()) {
            Ok(event) => return event,
            Err(e) => tracing::debug!("{stream} #{sequence}: not a CloudEvent in binary mode: {e}"),
        }
    }
    if content_type.as_deref().is_some_and(|ct| essence(ct) == STRUCTURED_CONTENT_TYPE) {
        match serval_eventing::decode_structured(payload) {
            Ok(event) => return event,
            Err(e) => tracing::debug!("{stream} #{sequence}: not a structured CloudEvent: {e}"),
        }
    }
    let (content_type, data) = super::payload_data(content_type, payload, || payload.clone());
    let plain = |content_type: Option<&str>| {
        let mut builder = CloudEvent::builder()
            .id(format!("{stream}-{sequence}"))
            .source(event_source)
            .event_type(NATS_EVENT_TYPE)
            .subject(subject)
            .extension(SEQUENCE_EXTENSION, sequence.to_string());
        if let Some(time) = published {
            builder = builder.time(humantime::format_rfc3339_micros(time).to_string());
        }
        if let Some(ct) = content_type {
            builder = builder.datacontenttype(ct);
        }
        if let Some(data) = data.clone() {
            builder = builder.data(data);
        }
        builder.build()
    };
    // A content type the event cannot carry leaves the data as bytes.
    let built = plain(content_type.as_deref()).or_else(|_| plain(Some("application/octet-stream")));
    let mut event = match built {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("{stream} #{sequence}: {e}");
            CloudEvent::builder()
                .id(format!("{stream}-{sequence}"))
                .source(event_source)
                .event_type(NATS_EVENT_TYPE)
                .data(payload.clone())
                .datacontenttype("application/octet-stream")
                .build()
                .unwrap_or_else(|_| unreachable!("a fixed event is valid"))
        }
    };
    for (name, value) in extensions {
        if let Some(name) = name
            && event.extension(&name).is_none()
        {
            let _ = event.set_extension(name, value);
        }
    }
    event
}

/// A media type without its parameters, lower-cased.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The extension a header becomes: `nats` and its letters and digits, lower-cased, when
/// that is at most 20 characters and not one of the source's own.
fn header_extension(name: &str) -> Option<String> {
    let name: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    let name = format!("nats{name}");
    (name.len() > 4 && name.len() <= 20 && name != SEQUENCE_EXTENSION).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_eventing::Data;
    use serval_model::{Destination, NatsSourceSpec};

    fn source(servers: &[&str], stream: &str, subject: Option<&str>, consumer: &str) -> NatsSource {
        NatsSource {
            api_version: serval_model::SERVAL_SOURCES_API_VERSION.into(),
            kind: "NatsSource".into(),
            metadata: Default::default(),
            spec: NatsSourceSpec {
                servers: servers.iter().map(|s| s.to_string()).collect(),
                stream: stream.into(),
                subject: subject.map(str::to_string),
                consumer: consumer.into(),
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
        assert!(task(&source(&["nats://127.0.0.1:4222"], "ORDERS", Some("orders.>"), "serval")).is_ok());
        assert!(task(&source(&["localhost", "tls://nats.example:4443"], "ORDERS", None, "serval")).is_ok());
        for (spec, field) in [
            (source(&["http://x:1"], "ORDERS", None, "c"), "spec.servers[0]"),
            (source(&["nats://a:1", "nats://"], "ORDERS", None, "c"), "spec.servers[1]"),
            (source(&["nats://a:1"], "OR.DERS", None, "c"), "spec.stream"),
            (source(&["nats://a:1"], "", None, "c"), "spec.stream"),
            (source(&["nats://a:1"], "ORDERS", None, "my consumer"), "spec.consumer"),
            (source(&["nats://a:1"], "ORDERS", Some("orders.>.x"), "c"), "spec.subject"),
            (source(&["nats://a:1"], "ORDERS", Some("orders..x"), "c"), "spec.subject"),
            (source(&["nats://a:1"], "ORDERS", Some("orders.a*"), "c"), "spec.subject"),
        ] {
            assert_eq!(field_of(task(&spec)), field);
        }
    }

    #[test]
    fn servers_are_shown_without_credentials() {
        let addr = ServerAddr::from_str("nats://user:secret@nats.example:4222").expect("addr");
        assert_eq!(shown(&addr), "nats://nats.example:4222");
        assert_eq!(host_port(&ServerAddr::from_str("nats://[::1]:4222").expect("addr")), "[::1]:4222");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, *v);
        }
        map
    }

    #[test]
    fn a_plain_message_becomes_an_event_with_its_sequence_and_headers() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[("Tenant", "acme"), ("Nats-Msg-Id", "m1"), ("A-Very-Long-Header-Name-Indeed", "x")]);
        let event = event_of(
            "ORDERS",
            "nats://h:1/ORDERS",
            "orders.new",
            Some(&h),
            &Bytes::from_static(br#"{"n":1}"#),
            7,
            Some(at),
        );
        assert_eq!(event.id(), "ORDERS-7");
        assert_eq!(event.source(), "nats://h:1/ORDERS");
        assert_eq!(event.event_type(), NATS_EVENT_TYPE);
        assert_eq!(event.subject(), Some("orders.new"));
        assert_eq!(event.time(), Some("2023-11-14T22:13:20.000000Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data(), Some(&Data::from(serde_json::json!({"n": 1}))));
        assert_eq!(event.extension(SEQUENCE_EXTENSION).and_then(|v| v.as_integer()), Some(7));
        assert_eq!(event.extension("natstenant").and_then(|v| v.as_str()), Some("acme"));
        assert_eq!(event.extensions().count(), 2, "{event:?}");

        let bytes = event_of("S", "nats://h:1/S", "x", None, &Bytes::from_static(b"\x00\x01"), 1, None);
        assert_eq!(bytes.datacontenttype(), Some("application/octet-stream"));
        assert_eq!(bytes.data(), Some(&Data::Binary(Bytes::from_static(b"\x00\x01"))));
        let h = headers(&[("Content-Type", "text/plain; charset=utf-8")]);
        let text = event_of("S", "nats://h:1/S", "x", Some(&h), &Bytes::from_static(b"{}"), 2, None);
        assert_eq!(text.datacontenttype(), Some("text/plain; charset=utf-8"));
        assert_eq!(text.data(), Some(&Data::Text("{}".into())));
        assert_eq!(text.extensions().count(), 1);
        let h = headers(&[("Content-Type", "not a media type")]);
        let odd = event_of("S", "nats://h:1/S", "x", Some(&h), &Bytes::from_static(b"a"), 3, None);
        assert_eq!(odd.datacontenttype(), Some("application/octet-stream"));
    }

    #[test]
    fn a_message_carrying_a_cloudevent_is_that_event() {
        let h = headers(&[
            ("Ce-Specversion", "1.0"),
            ("Ce-Id", "abc"),
            ("Ce-Source", "/shop"),
            ("Ce-Type", "com.example.order"),
            ("Ce-Tenant", "acme"),
            ("Content-Type", "application/json"),
        ]);
        let event = event_of("S", "nats://h:1/S", "orders", Some(&h), &Bytes::from_static(br#"{"a":1}"#), 9, None);
        assert_eq!((event.id(), event.source(), event.event_type()), ("abc", "/shop", "com.example.order"));
        assert_eq!(event.extension("tenant").and_then(|v| v.as_str()), Some("acme"));
        assert_eq!(event.data(), Some(&Data::from(serde_json::json!({"a": 1}))));
        assert!(event.extension(SEQUENCE_EXTENSION).is_none());

        let h = headers(&[("Content-Type", "application/cloudevents+json; charset=utf-8")]);
        let body = br#"{"specversion":"1.0","id":"s1","source":"/s","type":"t","data":{"b":2}}"#;
        let event = event_of("S", "nats://h:1/S", "orders", Some(&h), &Bytes::from_static(body), 10, None);
        assert_eq!(event.id(), "s1");

        // Broken CloudEvents headers: the message is wrapped instead.
        let h = headers(&[("Ce-Specversion", "0.3"), ("Ce-Id", "x")]);
        let event = event_of("S", "nats://h:1/S", "orders", Some(&h), &Bytes::from_static(b"1"), 11, None);
        assert_eq!(event.id(), "S-11");
    }
}
