//! ApiServerSource: Knative's shape over serval's own resources. The changes of the listed
//! kinds in the source's namespace become `dev.knative.apiserver.ref.*` (Reference mode:
//! the event names the object) or `dev.knative.apiserver.resource.*` (Resource mode: the
//! event carries it) events; `v1 Event` selects the platform's instance lifecycle
//! (`dev.serval.instance.started|ready|stopped|crashed|oomkilled|failed`).
//!
//! Changes come from the store's change feed; each is committed to the source's inbox with
//! the newest resourceVersion seen (one commit), and the inbox is delivered to the sink.
//! A restart lists the watched kinds and sends `add` for objects written after that
//! version, as a Kubernetes informer does on start; deletions and instance lifecycle events
//! that happened while serval was down are not replayed (the live watch only sees them).

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_eventing::CloudEvent;
use serval_model::{ApiServerSource, INSTANCE_EVENTS_KIND, KindInfo, LabelSelector, Resource};
use serval_store::{ChangeType, Storage};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, watch};

use super::{SourceContext, SourceTask};
use crate::DispatchError;

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Its start began (`coldStart`: no instance of its revision was running).
    Started,
    /// It passed its readiness check (`startupMs`).
    Ready,
    /// It was stopped (scaled down, revision retired) and exited.
    Stopped,
    /// It exited without being asked to.
    Crashed,
    /// The kernel killed it for exceeding its memory limit.
    OomKilled,
    /// It never became ready.
    Failed,
}

impl Lifecycle {
    pub fn event_type(self) -> &'static str {
        match self {
            Lifecycle::Started => "dev.serval.instance.started",
            Lifecycle::Ready => "dev.serval.instance.ready",
            Lifecycle::Stopped => "dev.serval.instance.stopped",
            Lifecycle::Crashed => "dev.serval.instance.crashed",
            Lifecycle::OomKilled => "dev.serval.instance.oomkilled",
            Lifecycle::Failed => "dev.serval.instance.failed",
        }
    }
}

/// One instance lifecycle event, as the runners publish it.
#[derive(Debug, Clone)]
pub struct InstanceEvent {
    pub lifecycle: Lifecycle,
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub instance: String,
    /// More fields of the event's data (`coldStart`, `startupMs`, `exit`, `reason`, …).
    pub detail: serde_json::Map<String, Value>,
    pub time: SystemTime,
}

/// Instance lifecycle events published by the runners, heard by the running
/// ApiServerSources that watch `v1 Event`.
pub struct PlatformEvents {
    sender: broadcast::Sender<Arc<InstanceEvent>>,
}

/// Events kept for a slow listener before it misses some.
const PLATFORM_BACKLOG: usize = 4096;

impl Default for PlatformEvents {
    fn default() -> Self {
        PlatformEvents { sender: broadcast::channel(PLATFORM_BACKLOG).0 }
    }
}

impl PlatformEvents {
    /// Publishes an event (nothing happens when no source listens).
    pub fn publish(&self, event: InstanceEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(event));
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<InstanceEvent>> {
        self.sender.subscribe()
    }
}

/// An ApiServerSource made ready to run.
pub struct ApiServerTask {
    namespace: String,
    /// The watched kinds (with how the API serves them) and their label selectors.
    watched: Vec<(KindInfo, Option<LabelSelector>)>,
    lifecycle: bool,
    carries_objects: bool,
    store: Arc<dyn Storage>,
    platform: Arc<PlatformEvents>,
    /// The events' `source`: the API's URL, as Knative gives the API server's.
    source: String,
}

/// The position (the newest resourceVersion committed to the inbox) among the source's.
const VERSION_POSITION: &str = "version";

/// Makes an ApiServerSource's task; `api_url` is serval's API.
pub fn task(
    source: &ApiServerSource,
    store: Arc<dyn Storage>,
    platform: Arc<PlatformEvents>,
    api_url: &str,
) -> Result<Arc<dyn SourceTask>, DispatchError> {
    let kinds = serval_model::watchable_kinds();
    let mut watched: Vec<(KindInfo, Option<LabelSelector>)> = Vec::new();
    let mut lifecycle = false;
    for (i, r) in source.spec.resources.iter().enumerate() {
        if r.kind == INSTANCE_EVENTS_KIND {
            lifecycle = true;
            continue;
        }
        let info = kinds.iter().find(|k| k.kind == r.kind).ok_or_else(|| {
            DispatchError::invalid_field(
                ApiServerSource::KIND,
                format!("spec.resources[{i}].kind"),
                format!("{:?} is not a kind serval watches", r.kind),
            )
        })?;
        watched.push((info.clone(), r.selector.clone()));
    }
    Ok(Arc::new(ApiServerTask {
        namespace: source.metadata.namespace.clone(),
        watched,
        lifecycle,
        carries_objects: source.spec.carries_objects(),
        store,
        platform,
        source: api_url.trim_end_matches('/').to_string(),
    }))
}

impl SourceTask for ApiServerTask {
    fn run(self: Arc<Self>, context: SourceContext, stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            context.health.ready();
            let inbox = context.inbox.clone();
            let mut drain_stopped = stopped.clone();
            tokio::join!(self.watch(&context, stopped), inbox.drain(&context, &mut drain_stopped));
        })
    }
}

/// What a kind's watcher forwards: a change, or `None` when the watch ended (the store
/// closed, or it fell behind) and the kinds must be listed again.
type Forwarded = Option<(usize, ChangeType, Value)>;

impl ApiServerTask {
    /// Commits the watched changes and lifecycle events to the inbox until stopped.
    async fn watch(&self, context: &SourceContext, mut stopped: watch::Receiver<bool>) {
        let mut lifecycle = self.lifecycle.then(|| self.platform.subscribe());
        loop {
            // Subscribe first, then list: a change between the two is seen twice at most
            // (and sent once: versions at or below the committed one are skipped).
            let (sender, mut changes) = mpsc::channel::<Forwarded>(1024);
            let mut forwarders = tokio::task::JoinSet::new();
            for (index, (info, _)) in self.watched.iter().enumerate() {
                let Ok((_, mut watcher)) = self.store.watch(&info.kind, Some(&self.namespace), None) else { continue };
                let sender = sender.clone();
                forwarders.spawn(async move {
                    while let Some((change, document)) = watcher.next().await {
                        if sender.send(Some((index, change, document))).await.is_err() {
                            return;
                        }
                    }
                    let _ = sender.send(None).await;
                });
            }
            drop(sender);
            let mut committed = context.positions.get(VERSION_POSITION).unwrap_or(0);
            if let Err(e) = self.resync(context, &mut committed).await {
                context.health.not_ready("StoreUnavailable", format!("listing the watched kinds: {e}"));
            }
            loop {
                tokio::select! {
                    change = changes.recv(), if !self.watched.is_empty() => match change {
                        Some(Some((index, change, document))) => {
                            let version = resource_version(&document);
                            if version <= committed || !self.selects(index, &document) {
                                continue;
                            }
                            let events = self.resource_event(index, change, &document).into_iter().collect();
                            if self.commit(context, events, version).await {
                                committed = version;
                            }
                        }
                        _ => break,
                    },
                    heard = recv_lifecycle(&mut lifecycle) => match heard {
                        Ok(event) if event.namespace == self.namespace => {
                            if let Some(event) = self.lifecycle_event(&event) {
                                self.commit(context, vec![event], committed).await;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!("apiserversource {}/{}: {missed} instance events missed (the sink is slow)", context.namespace, context.name);
                        }
                        Err(broadcast::error::RecvError::Closed) => lifecycle = None,
                    },
                    () = async { let _ = stopped.wait_for(|s| *s).await; } => {
                        forwarders.abort_all();
                        return;
                    }
                }
            }
            forwarders.abort_all();
        }
    }

    /// Sends `add` for the watched objects written after the committed version.
    async fn resync(&self, context: &SourceContext, committed: &mut i64) -> Result<(), DispatchError> {
        let mut found = Vec::new();
        for (index, (info, _)) in self.watched.iter().enumerate() {
            for document in self.store.list_documents(&info.kind, Some(&self.namespace), None)? {
                let version = resource_version(&document);
                if version > *committed && self.selects(index, &document) {
                    found.push((version, index, document));
                }
            }
        }
        found.sort_by_key(|(version, ..)| *version);
        let Some(newest) = found.last().map(|(version, ..)| *version) else { return Ok(()) };
        let events =
            found.iter().filter_map(|(_, index, d)| self.resource_event(*index, ChangeType::Added, d)).collect();
        if self.commit(context, events, newest).await {
            *committed = newest;
        }
        Ok(())
    }

    /// Commits events to the inbox with the version they bring the source to; `false`
    /// (logged, reported) when the store refused.
    async fn commit(&self, context: &SourceContext, events: Vec<CloudEvent>, version: i64) -> bool {
        let count = events.len();
        match context.inbox.append_with_positions(&events, &context.positions, &[(VERSION_POSITION, version)]).await {
            Ok(()) => true,
            Err(e) => {
                context.health.not_ready("StoreUnavailable", format!("keeping {count} events: {e}"));
                tracing::error!("apiserversource {}/{}: keeping {count} events: {e}", context.namespace, context.name);
                false
            }
        }
    }

    fn selects(&self, index: usize, document: &Value) -> bool {
        let Some((_, Some(selector))) = self.watched.get(index) else { return true };
        let labels = document["metadata"]["labels"]
            .as_object()
            .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        selector.matches(&labels)
    }

    /// Knative's event for a change of a watched object.
    fn resource_event(&self, index: usize, change: ChangeType, document: &Value) -> Option<CloudEvent> {
        let info = &self.watched[index].0;
        let verb = match change {
            ChangeType::Added => "add",
            ChangeType::Modified => "update",
            ChangeType::Deleted => "delete",
        };
        let name = document["metadata"]["name"].as_str().unwrap_or_default();
        let version = resource_version(document);
        let root = if info.group().is_empty() { "api" } else { "apis" };
        let subject = format!("/{root}/{}/namespaces/{}/{}/{name}", info.api_version, self.namespace, info.plural);
        let (event_type, data) = if self.carries_objects {
            (format!("dev.knative.apiserver.resource.{verb}"), document.clone())
        } else {
            let reference = json!({
                "apiVersion": info.api_version, "kind": info.kind, "name": name,
                "namespace": self.namespace, "resourceVersion": version.to_string(),
            });
            (format!("dev.knative.apiserver.ref.{verb}"), reference)
        };
        let id = digest_id(&format!("{subject}|{version}|{event_type}"));
        let mut event = built(id, &self.source, &event_type, &subject, SystemTime::now(), data)?;
        for (extension, value) in [("kind", info.kind.as_str()), ("name", name), ("namespace", &self.namespace)] {
            let _ = event.set_extension(extension, value.to_string());
        }
        Some(event)
    }

    /// The event of an instance's lifecycle.
    fn lifecycle_event(&self, heard: &InstanceEvent) -> Option<CloudEvent> {
        let mut data = serde_json::Map::new();
        data.insert("namespace".into(), heard.namespace.clone().into());
        data.insert("service".into(), heard.service.clone().into());
        data.insert("revision".into(), heard.revision.clone().into());
        data.insert("instance".into(), heard.instance.clone().into());
        data.extend(heard.detail.clone());
        let event_type = heard.lifecycle.event_type();
        let source = format!(
            "{}/apis/{}/namespaces/{}/services/{}",
            self.source,
            serval_model::SERVING_API_VERSION,
            heard.namespace,
            heard.service
        );
        let time = humantime::format_rfc3339_micros(heard.time).to_string();
        let id = digest_id(&format!("{}|{event_type}|{time}", heard.instance));
        built(id, &source, event_type, &heard.instance, heard.time, Value::Object(data))
    }
}

/// The next lifecycle event when listening; never when not.
async fn recv_lifecycle(
    lifecycle: &mut Option<broadcast::Receiver<Arc<InstanceEvent>>>,
) -> Result<Arc<InstanceEvent>, broadcast::error::RecvError> {
    match lifecycle {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// An event with JSON data (`None`, logged, when an attribute is not valid).
fn built(
    id: String,
    source: &str,
    event_type: &str,
    subject: &str,
    time: SystemTime,
    data: Value,
) -> Option<CloudEvent> {
    let built = CloudEvent::builder()
        .id(id)
        .source(source)
        .event_type(event_type)
        .subject(subject)
        .time(humantime::format_rfc3339_micros(time).to_string())
        .datacontenttype("application/json")
        .data(data)
        .build();
    built.inspect_err(|e| tracing::warn!("an apiserversource event for {subject}: {e}")).ok()
}

/// A stable event id (a redelivery is recognisable).
fn digest_id(text: &str) -> String {
    Sha256::digest(text).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn resource_version(document: &Value) -> i64 {
    document["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0)
}
