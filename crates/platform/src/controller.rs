//! Reconciliation of Services: stored spec → revisions, routes, runners and status.
//!
//! Level-triggered: `reconcile` looks only at what is stored now and what runs now, so it is
//! run after every change, at start-up and periodically, and always converges.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serval_gateway::{RequestTimeouts, Route, RouteKey, RoutingTable, Target};
use serval_model::{
    Broker, Condition, ConditionStatus, PingSource, Revision, RuntimeKind, ScaleLimits, Service, TrafficTarget,
    Trigger, annotations, check_scale_limits, revision_name, validate_broker, validate_ping_source, validate_service,
    validate_trigger,
};
use serval_runtime::oci::ImageStore;
use serval_runtime::{ContainerSettings, Readiness, Runtime};
use serval_scaler::KpaSpec;
use serval_store::{Kind, Store, WriteOp};
use tokio::sync::mpsc;

use crate::delivery::Dispatchers;
use crate::logs::LogBook;
use crate::metrics::PlatformMetrics;
use crate::runner::{InstanceSlots, RevisionRunner, RunnerSpec};
use crate::sealer::Sealer;
use crate::{BoundAddrs, PlatformConfig, PlatformError};

mod config_data;
mod references;

/// How often services that are not Ready are reconciled again without a change.
const RESYNC: Duration = Duration::from_secs(10);

/// The runtimes instances can run on.
#[derive(Clone)]
pub struct Runtimes {
    pub process: Arc<dyn Runtime>,
    /// The OCI runtime, or why there is none (e.g. `runc` not installed).
    pub oci: Result<Arc<dyn Runtime>, String>,
}

/// Whether an apply may replace an existing Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    Create,
    CreateOrUpdate,
}

/// The result of an apply.
pub struct Applied {
    pub service: Service,
    pub warnings: Vec<String>,
    pub created: bool,
}

pub struct Controller {
    config: PlatformConfig,
    addrs: BoundAddrs,
    store: Arc<Store>,
    runtimes: Runtimes,
    images: Arc<ImageStore>,
    routes: Arc<RoutingTable>,
    logs: LogBook,
    /// Runners by `namespace/revision`.
    runners: Mutex<HashMap<String, Arc<RevisionRunner>>>,
    /// Serializes read-modify-write of resources and reconciles.
    write_lock: tokio::sync::Mutex<()>,
    /// Services (namespace, name) whose last reconcile left them not Ready.
    unsettled: Mutex<HashSet<(String, String)>>,
    instance_ids: Arc<AtomicU64>,
    /// The server-wide instance limit, shared by the runners.
    instance_slots: InstanceSlots,
    metrics: Arc<PlatformMetrics>,
    events: mpsc::UnboundedSender<Event>,
    dispatchers: Arc<Dispatchers>,
    sources: crate::sources::Sources,
    sealer: Sealer,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn runner_key(namespace: &str, revision: &str) -> String {
    format!("{namespace}/{revision}")
}

/// The number in a configuration-generation label, 0 when absent.
fn configuration_generation(rev: &Revision) -> u64 {
    rev.metadata.labels.get(annotations::CONFIGURATION_GENERATION_LABEL).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What the controller works with, built by `run`.
pub struct Parts {
    pub store: Arc<Store>,
    pub runtimes: Runtimes,
    pub images: Arc<ImageStore>,
    pub routes: Arc<RoutingTable>,
    pub metrics: Arc<PlatformMetrics>,
    pub events: mpsc::UnboundedSender<Event>,
    pub dispatchers: Arc<Dispatchers>,
    pub sealer: Sealer,
}

impl Controller {
    pub fn new(config: PlatformConfig, addrs: BoundAddrs, parts: Parts) -> Arc<Controller> {
        let Parts { store, runtimes, images, routes, metrics, events, dispatchers, sealer } = parts;
        let instance_slots = Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize));
        Arc::new(Controller {
            config,
            addrs,
            store,
            runtimes,
            images,
            routes,
            logs: LogBook::default(),
            runners: Mutex::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
            unsettled: Mutex::new(HashSet::new()),
            instance_ids: Arc::new(AtomicU64::new(1)),
            instance_slots,
            metrics,
            events,
            dispatchers,
            sources: Default::default(),
            sealer,
        })
    }

    /// The changes of a kind of resource (see [`serval_store::Store::watch`]).
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<i64>,
    ) -> Result<(Vec<serval_store::WatchEvent>, serval_store::Watcher), serval_store::TooOld> {
        self.store.watch(kind, namespace, after)
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    fn scale_limits(&self) -> ScaleLimits {
        ScaleLimits { max_instances: self.config.max_instances, max_scale_limit: self.config.max_scale_limit }
    }

    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    pub fn logs(&self) -> &LogBook {
        &self.logs
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// Removes an image from the store unless a revision still runs from it.
    pub fn remove_image(&self, reference: &str) -> Result<(), PlatformError> {
        let target = self.images.resolve(reference)?.digest;
        let revisions: Vec<Revision> = self.store.list(Kind::Revision, None)?;
        for r in &revisions {
            let image = r.spec.containers.first().and_then(|c| c.image.as_deref());
            if let Some(image) = image
                && self.images.resolve(image).is_ok_and(|i| i.digest == target)
            {
                return Err(PlatformError::Conflict(format!(
                    "image {reference} is used by revision {}/{}; delete that service first",
                    r.metadata.namespace, r.metadata.name
                )));
            }
        }
        Ok(self.images.remove(reference)?)
    }

    /// `http://<service>.<namespace>.<domain>[:port]`.
    fn service_url(&self, namespace: &str, name: &str) -> String {
        let port = self.addrs.gateway.port();
        let port = if port == 80 { String::new() } else { format!(":{port}") };
        format!("http://{name}.{namespace}.{}{port}", self.config.domain)
    }

    /// The service's path route on the gateway's own address: works in every client,
    /// where `*.localhost` names may not resolve.
    fn service_path_url(&self, namespace: &str, name: &str) -> String {
        format!("http://{}/f/{namespace}/{name}/", self.addrs.gateway)
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RevisionRunner>>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live counts of every running revision, for metrics.
    pub fn runner_counts(&self) -> Vec<(serval_gateway::RevisionLabels, serval_model::InstanceCounts)> {
        self.runners().values().map(|r| (r.pool().labels().clone(), r.counts())).collect()
    }

    // ---- reads (with live instance counts overlaid) ----

    pub fn get_service(&self, namespace: &str, name: &str) -> Result<Service, PlatformError> {
        let service = self.store.get::<Service>(Kind::Service, namespace, name)?.ok_or_else(|| {
            PlatformError::NotFound { kind: "Service", namespace: namespace.into(), name: name.into() }
        })?;
        Ok(self.with_live_status(service))
    }

    pub fn list_services(&self, namespace: Option<&str>) -> Result<Vec<Service>, PlatformError> {
        let services: Vec<Service> = self.store.list(Kind::Service, namespace)?;
        Ok(services.into_iter().map(|s| self.with_live_status(s)).collect())
    }

    /// The stored service with what its runners know now: the serving revision's instance
    /// counts, and `ContainerHealthy=False` while instances of a revision it routes to keep
    /// failing (a crash loop shows on the service, not only on the revision).
    fn with_live_status(&self, mut service: Service) -> Service {
        let namespace = service.metadata.namespace.clone();
        let serving = &service.status.latest_ready_revision_name;
        let runners = self.runners();
        if let Some(runner) = runners.get(&runner_key(&namespace, serving)) {
            service.status.instances = Some(runner.counts());
        }
        let failing = service
            .status
            .traffic
            .iter()
            .filter_map(|t| t.revision_name.as_deref())
            .chain(std::iter::once(serving.as_str()))
            .find_map(|revision| Some((revision, runners.get(&runner_key(&namespace, revision))?.failing()?)));
        if let Some((revision, mut condition)) = failing {
            condition.message = format!("revision {revision}: {}", condition.message);
            Condition::set(&mut service.status.conditions, condition, &now_rfc3339());
        }
        service
    }

    pub fn list_revisions(&self, namespace: &str, service: Option<&str>) -> Result<Vec<Revision>, PlatformError> {
        let mut revisions: Vec<Revision> = match service {
            Some(service) => self.store.list_owned(Kind::Revision, namespace, service)?,
            None => self.store.list(Kind::Revision, Some(namespace))?,
        };
        revisions.sort_by_key(|r| (r.service_name().to_string(), configuration_generation(r)));
        Ok(revisions.into_iter().map(|r| self.with_live_revision_status(r)).collect())
    }

    pub fn get_revision(&self, namespace: &str, name: &str) -> Result<Revision, PlatformError> {
        let revision = self.store.get::<Revision>(Kind::Revision, namespace, name)?.ok_or_else(|| {
            PlatformError::NotFound { kind: "Revision", namespace: namespace.into(), name: name.into() }
        })?;
        Ok(self.with_live_revision_status(revision))
    }

    fn with_live_revision_status(&self, mut revision: Revision) -> Revision {
        if let Some(runner) = self.runners().get(&runner_key(&revision.metadata.namespace, &revision.metadata.name)) {
            revision.status.instances = Some(runner.counts());
            if let Some(health) = runner.health() {
                Condition::set(&mut revision.status.conditions, health, &now_rfc3339());
            }
        }
        revision
    }

    // ---- writes ----

    /// Creates or updates a Service from a user's JSON document. A change of
    /// `spec.template` creates the next immutable Revision in the same transaction.
    pub async fn apply_service(
        &self,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        mode: ApplyMode,
    ) -> Result<Applied, PlatformError> {
        let mut service = decode_service(body)?;
        fill_identity("Service", &mut service.metadata.namespace, namespace, "metadata.namespace")?;
        if let Some(name) = name {
            fill_identity("Service", &mut service.metadata.name, name, "metadata.name")?;
        }
        let warnings =
            validate_service(&service).map_err(|source| PlatformError::Invalid { kind: "Service", source })?;
        check_scale_limits(&service, self.scale_limits())
            .map_err(|source| PlatformError::Invalid { kind: "Service", source })?;
        let _guard = self.write_lock.lock().await;
        let created = self.write_service_locked(service.clone(), mode).await?;
        let service = self.get_service(namespace, &service.metadata.name)?;
        Ok(Applied { service, warnings, created })
    }

    /// Stores a validated Service (with its configuration digest stamped), making the next
    /// Revision in the same transaction when the template changed, and reconciles it.
    /// Returns whether it was created. Called under the write lock.
    async fn write_service_locked(&self, mut service: Service, mode: ApplyMode) -> Result<bool, PlatformError> {
        let (namespace, name) = (service.metadata.namespace.clone(), service.metadata.name.clone());
        let namespace = namespace.as_str();
        self.stamp_config_digest(&mut service);
        let existing: Option<Service> = self.store.get(Kind::Service, namespace, &name)?;
        if mode == ApplyMode::Create && existing.is_some() {
            return Err(PlatformError::Conflict(format!("service {namespace}/{name} already exists")));
        }
        let now = now_rfc3339();
        let created = existing.is_none();
        if created {
            self.logs.revive(namespace, &name);
        }
        let template_changed = existing.as_ref().is_none_or(|e| e.spec.template != service.spec.template);
        let old = existing.as_ref().map(|o| (&o.metadata, o.spec != service.spec));
        carry_identity("service", &mut service.metadata, old, &now)?;
        service.status = existing.as_ref().map(|o| o.status.clone()).unwrap_or_default();
        let revisions: Vec<Revision> = self.store.list_owned(Kind::Revision, namespace, &name)?;
        let mut ops = Vec::new();
        if template_changed {
            let number = revisions
                .iter()
                .map(configuration_generation)
                .max()
                .unwrap_or(0)
                .max(service.status.configuration_generation)
                + 1;
            let rev_name = service.spec.template.metadata.name.clone().unwrap_or_else(|| revision_name(&name, number));
            if revisions.iter().any(|r| r.metadata.name == rev_name) {
                return Err(PlatformError::Conflict(format!(
                    "revision {rev_name} already exists; revisions are immutable, give spec.template.metadata.name a new value"
                )));
            }
            let revision = Revision::from_service(&service, rev_name.clone(), number, &now);
            ops.push(WriteOp::put_owned(Kind::Revision, namespace, &rev_name, &name, &revision)?);
            service.status.latest_created_revision_name = rev_name;
            service.status.configuration_generation = number;
        }
        for (i, t) in service.spec.traffic.iter().enumerate() {
            if let Some(rev) = &t.revision_name
                && *rev != service.status.latest_created_revision_name
                && !revisions.iter().any(|r| &r.metadata.name == rev)
            {
                return Err(PlatformError::invalid_field(
                    "Service",
                    format!("spec.traffic[{i}].revisionName"),
                    format!("revision {rev:?} does not exist"),
                ));
            }
        }
        ops.push(WriteOp::put(Kind::Service, namespace, &name, &service)?);
        self.store.write(ops).await?;
        self.reconcile_locked(namespace, &name).await?;
        if created {
            self.refresh_referrers(Some(namespace)).await?;
        }
        Ok(created)
    }

    /// Deletes a Service and its Revisions; its instances are drained and stopped.
    pub async fn delete_service(&self, namespace: &str, name: &str) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        if self.store.get::<Service>(Kind::Service, namespace, name)?.is_none() {
            return Err(PlatformError::NotFound { kind: "Service", namespace: namespace.into(), name: name.into() });
        }
        let mut ops = vec![WriteOp::delete(Kind::Service, namespace, name)];
        for revision in self.list_revisions(namespace, Some(name))? {
            ops.push(WriteOp::delete(Kind::Revision, namespace, &revision.metadata.name));
        }
        self.store.write(ops).await?;
        self.reconcile_locked(namespace, name).await?;
        self.logs.forget(namespace, name);
        self.refresh_referrers(Some(namespace)).await
    }

    // ---- brokers ----

    fn broker_url(&self, namespace: &str, name: &str) -> String {
        format!("http://{}/b/{namespace}/{name}", self.addrs.gateway)
    }

    /// Creates or updates a Broker; it is ready as soon as it is stored (its log is SQLite).
    pub async fn apply_broker(
        &self,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Result<(Broker, bool), PlatformError> {
        let mut broker: Broker = decode(body, "Broker")?;
        fill_identity("Broker", &mut broker.metadata.namespace, namespace, "metadata.namespace")?;
        fill_identity("Broker", &mut broker.metadata.name, name, "metadata.name")?;
        validate_broker(&broker).map_err(|source| PlatformError::Invalid { kind: "Broker", source })?;
        let _guard = self.write_lock.lock().await;
        let existing: Option<Broker> = self.store.get(Kind::Broker, namespace, name)?;
        let created = existing.is_none();
        let now = now_rfc3339();
        let old = existing.as_ref().map(|o| (&o.metadata, o.spec != broker.spec));
        carry_identity("broker", &mut broker.metadata, old, &now)?;
        broker.status = existing.map(|b| b.status).unwrap_or_default();
        broker.status.address = Some(serval_model::Addressable { url: self.broker_url(namespace, name) });
        Condition::set(&mut broker.status.conditions, Condition::new("Ready", ConditionStatus::True, "", ""), &now);
        self.store.write(vec![WriteOp::put(Kind::Broker, namespace, name, &broker)?]).await?;
        if created {
            self.refresh_referrers(Some(namespace)).await?;
        }
        self.sync_dispatchers();
        Ok((broker, created))
    }

    pub fn get_broker(&self, namespace: &str, name: &str) -> Result<Broker, PlatformError> {
        self.store.get(Kind::Broker, namespace, name)?.ok_or_else(|| PlatformError::NotFound {
            kind: "Broker",
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    pub fn list_brokers(&self, namespace: Option<&str>) -> Result<Vec<Broker>, PlatformError> {
        Ok(self.store.list(Kind::Broker, namespace)?)
    }

    /// Deletes a Broker and its event log.
    pub async fn delete_broker(&self, namespace: &str, name: &str) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        self.get_broker(namespace, name)?;
        let ops = vec![WriteOp::delete(Kind::Broker, namespace, name), WriteOp::delete_events(namespace, name)];
        self.store.write(ops).await?;
        self.refresh_referrers(Some(namespace)).await?;
        self.sync_dispatchers();
        Ok(())
    }

    /// Accepted events of a broker after `after` (a log position), oldest first.
    pub fn broker_events(
        &self,
        namespace: &str,
        name: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<serval_store::StoredEvent>, PlatformError> {
        self.get_broker(namespace, name)?;
        Ok(self.store.events_after(namespace, name, after, limit)?)
    }

    // ---- triggers ----

    fn gateway_url(&self) -> String {
        format!("http://{}", self.addrs.gateway)
    }

    /// Makes the trigger dispatchers match the stored triggers.
    fn sync_dispatchers(&self) {
        self.dispatchers.sync(crate::delivery::plans(&self.store, &self.gateway_url()));
    }

    /// Creates or updates a Trigger. Filters and delivery are compiled now (bad ones are a
    /// 422 naming the field); a new trigger delivers events accepted from now on.
    pub async fn apply_trigger(
        &self,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Result<(Trigger, bool), PlatformError> {
        let mut trigger: Trigger = decode(body, "Trigger")?;
        fill_identity("Trigger", &mut trigger.metadata.namespace, namespace, "metadata.namespace")?;
        fill_identity("Trigger", &mut trigger.metadata.name, name, "metadata.name")?;
        validate_trigger(&trigger).map_err(|source| PlatformError::Invalid { kind: "Trigger", source })?;
        let _guard = self.write_lock.lock().await;
        let broker: Option<Broker> = self.store.get(Kind::Broker, namespace, &trigger.spec.broker)?;
        let plan = crate::delivery::plan(
            &trigger,
            broker.as_ref().and_then(|b| b.spec.delivery.as_ref()),
            &self.gateway_url(),
        )?;
        let existing: Option<Trigger> = self.store.get(Kind::Trigger, namespace, name)?;
        let created = existing.is_none();
        let now = now_rfc3339();
        let old = existing.as_ref().map(|o| (&o.metadata, o.spec != trigger.spec));
        carry_identity("trigger", &mut trigger.metadata, old, &now)?;
        trigger.status = existing.as_ref().map(|o| o.status.clone()).unwrap_or_default();
        trigger.status.subscriber_uri = Some(plan.subscriber.clone());
        let ready = self.trigger_readiness(&trigger);
        Condition::set(&mut trigger.status.conditions, ready, &now);
        let mut ops = vec![WriteOp::put(Kind::Trigger, namespace, name, &trigger)?];
        if created {
            ops.push(WriteOp::set_cursor(namespace, name, Some(self.store.last_event_seq()?)));
        }
        self.store.write(ops).await?;
        self.sync_dispatchers();
        Ok((trigger, created))
    }

    pub fn get_trigger(&self, namespace: &str, name: &str) -> Result<Trigger, PlatformError> {
        self.store.get(Kind::Trigger, namespace, name)?.ok_or_else(|| PlatformError::NotFound {
            kind: "Trigger",
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    pub fn list_triggers(&self, namespace: Option<&str>) -> Result<Vec<Trigger>, PlatformError> {
        Ok(self.store.list(Kind::Trigger, namespace)?)
    }

    /// A trigger as JSON with its live delivery status (`status.delivery`).
    pub fn trigger_view(&self, trigger: &Trigger) -> serde_json::Value {
        let mut view = serde_json::to_value(trigger).unwrap_or_default();
        let status = self.dispatchers.status(&trigger.metadata.namespace, &trigger.metadata.name, &trigger.spec.broker);
        view["status"]["delivery"] = serde_json::to_value(status).unwrap_or_default();
        view
    }

    pub async fn delete_trigger(&self, namespace: &str, name: &str) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        self.get_trigger(namespace, name)?;
        let ops = vec![WriteOp::delete(Kind::Trigger, namespace, name), WriteOp::set_cursor(namespace, name, None)];
        self.store.write(ops).await?;
        self.sync_dispatchers();
        Ok(())
    }

    // ---- ping sources ----

    fn sync_sources(&self) {
        let sources: Vec<PingSource> = self.store.list(Kind::PingSource, None).unwrap_or_default();
        let gateway = self.gateway_url();
        let plans = sources
            .iter()
            .filter_map(|s| {
                let plan = crate::sources::ping_plan(s, &gateway).ok()?;
                Some((plan, serde_json::to_string(&s.spec).unwrap_or_default()))
            })
            .collect();
        self.sources.sync(plans);
    }

    /// Creates or updates a PingSource; a bad schedule or time zone is a 422.
    pub async fn apply_ping_source(
        &self,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Result<(PingSource, bool), PlatformError> {
        let mut source: PingSource = decode(body, "PingSource")?;
        fill_identity("PingSource", &mut source.metadata.namespace, namespace, "metadata.namespace")?;
        fill_identity("PingSource", &mut source.metadata.name, name, "metadata.name")?;
        validate_ping_source(&source).map_err(|source| PlatformError::Invalid { kind: "PingSource", source })?;
        let plan = crate::sources::ping_plan(&source, &self.gateway_url())?;
        let _guard = self.write_lock.lock().await;
        let existing: Option<PingSource> = self.store.get(Kind::PingSource, namespace, name)?;
        let created = existing.is_none();
        let now = now_rfc3339();
        let old = existing.as_ref().map(|o| (&o.metadata, o.spec != source.spec));
        carry_identity("pingsource", &mut source.metadata, old, &now)?;
        source.status.subscriber_uri = Some(plan.sink.clone());
        let ready = self.ping_source_readiness(&source);
        Condition::set(&mut source.status.conditions, ready, &now);
        self.store.write(vec![WriteOp::put(Kind::PingSource, namespace, name, &source)?]).await?;
        self.sync_sources();
        Ok((source, created))
    }

    pub fn get_ping_source(&self, namespace: &str, name: &str) -> Result<PingSource, PlatformError> {
        self.store.get(Kind::PingSource, namespace, name)?.ok_or_else(|| PlatformError::NotFound {
            kind: "PingSource",
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    pub fn list_ping_sources(&self, namespace: Option<&str>) -> Result<Vec<PingSource>, PlatformError> {
        Ok(self.store.list(Kind::PingSource, namespace)?)
    }

    pub async fn delete_ping_source(&self, namespace: &str, name: &str) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        self.get_ping_source(namespace, name)?;
        self.store.write(vec![WriteOp::delete(Kind::PingSource, namespace, name)]).await?;
        self.sync_sources();
        Ok(())
    }

    /// Stops every source.
    pub fn stop_sources(&self) {
        self.sources.stop_all();
    }

    // ---- reconciliation ----

    pub async fn resync_all(&self) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        self.refresh_referrers(None).await?;
        self.sync_dispatchers();
        self.sync_sources();
        let services: Vec<Service> = self.store.list(Kind::Service, None)?;
        for s in services {
            if let Err(e) = self.reconcile_locked(&s.metadata.namespace, &s.metadata.name).await {
                tracing::error!("reconciling {}/{}: {e}", s.metadata.namespace, s.metadata.name);
            }
        }
        Ok(())
    }

    /// Reconciles, every [`RESYNC`], the services the last reconcile left not Ready (a
    /// missing executable or runtime may have appeared since); a Ready service changes only
    /// through a write or a runner's event, each of which reconciles it at once. Idle cost
    /// thus follows the services in trouble, not all of them.
    pub async fn resync_periodically(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RESYNC).await;
            let due: Vec<(String, String)> = self.unsettled().iter().cloned().collect();
            if due.is_empty() {
                continue;
            }
            let _guard = self.write_lock.lock().await;
            for (namespace, name) in due {
                if let Err(e) = self.reconcile_locked(&namespace, &name).await {
                    tracing::error!("reconciling {namespace}/{name}: {e}");
                }
            }
        }
    }

    fn unsettled(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.unsettled.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reconcile_locked(&self, namespace: &str, name: &str) -> Result<(), PlatformError> {
        let key = RouteKey { namespace: namespace.into(), service: name.into() };
        let Some(mut service) = self.store.get::<Service>(Kind::Service, namespace, name)? else {
            self.routes.set(key, None);
            self.retire_runners(namespace, name, &HashSet::new());
            self.unsettled().remove(&(namespace.to_string(), name.to_string()));
            return Ok(());
        };
        let now = now_rfc3339();
        let mut ops = Vec::new();
        let mut revisions = self.list_revisions(namespace, Some(name))?;

        // 1. Readiness of each revision: its runtime can run it, and one instance started
        //    and passed its readiness check.
        let mut verifying = HashSet::new();
        for revision in &mut revisions {
            let stored = Condition::find(&revision.status.conditions, "Ready").cloned();
            let settled = stored.as_ref().is_some_and(|c| {
                c.status == ConditionStatus::True || (c.status == ConditionStatus::False && c.reason != STATIC_FAILURE)
            });
            if settled {
                continue;
            }
            let runnable = static_readiness(revision, &self.runtimes)
                .and_then(|()| self.revision_environment(revision).map(|_| ()).map_err(|m| (CONFIG_FAILURE, m)));
            let condition = match runnable {
                Err((reason, message)) => Condition::new("Ready", ConditionStatus::False, reason, message),
                Ok(()) => {
                    verifying.insert(revision.metadata.name.clone());
                    self.ensure_verification(revision);
                    Condition::new(
                        "Ready",
                        ConditionStatus::Unknown,
                        "Deploying",
                        "starting one instance to check readiness",
                    )
                }
            };
            let before = revision.status.conditions.clone();
            Condition::set(&mut revision.status.conditions, condition, &now);
            if revision.status.conditions != before {
                let mut stored = revision.clone();
                stored.status.instances = None;
                ops.push(WriteOp::put(Kind::Revision, namespace, &revision.metadata.name, &stored)?);
            }
        }

        // 2. Traffic: resolve every target; switch routing only when all are ready.
        let latest_ready = revisions.iter().rev().find(|r| is_ready(r)).map(|r| r.metadata.name.clone());
        let spec_traffic = service.spec.effective_traffic();
        let mut resolved = Vec::new();
        let mut pending: Option<(&'static str, String)> = None;
        for t in &spec_traffic {
            let target_name = match (&t.revision_name, t.latest_revision) {
                (Some(name), _) => Some(name.clone()),
                (None, _) => latest_ready.clone(),
            };
            let Some(target_name) = target_name else {
                pending.get_or_insert(("RevisionMissing", "no revision is ready yet".into()));
                continue;
            };
            match revisions.iter().find(|r| r.metadata.name == target_name) {
                Some(r) if is_ready(r) => resolved.push((t.clone(), r)),
                Some(_) => {
                    pending.get_or_insert(("RevisionNotReady", format!("revision {target_name:?} is not ready")));
                }
                None => {
                    pending.get_or_insert(("RevisionMissing", format!("revision {target_name:?} does not exist")));
                }
            }
        }
        let mut routed: HashSet<String> = self.routed_revisions(namespace, name);
        if pending.is_none() {
            let mut weighted = Vec::new();
            let mut tags = HashMap::new();
            let mut status_traffic = Vec::new();
            for (t, r) in &resolved {
                let target = Target::Pool(self.ensure_runner(r, false).pool().clone());
                let percent = t.percent.unwrap_or(0);
                if percent > 0 {
                    weighted.push((percent, target.clone()));
                }
                if let Some(tag) = &t.tag {
                    tags.insert(tag.clone(), target);
                }
                status_traffic.push(TrafficTarget {
                    revision_name: Some(r.metadata.name.clone()),
                    latest_revision: Some(t.latest_revision == Some(true)),
                    percent: Some(percent),
                    tag: t.tag.clone(),
                    url: t.tag.as_ref().map(|tag| self.service_url(namespace, &format!("{tag}-{name}"))),
                });
            }
            self.routes.set(key, Some(Route { weighted, tags }));
            routed = resolved.iter().map(|(_, r)| r.metadata.name.clone()).collect();
            service.status.traffic = status_traffic;
        } else if self.routes.get(&key).is_none() {
            let reason = pending.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
            let why = revisions
                .last()
                .and_then(|r| Condition::find(&r.status.conditions, "Ready"))
                .filter(|c| c.status == ConditionStatus::False)
                .map_or(reason, |c| c.message.clone());
            self.routes.set(key, Some(Route::single(Target::Unavailable(why))));
            service.status.traffic.clear();
        }
        // Otherwise the previous routing stays until every target is ready.

        // 3. Runners: the routed and the verifying revisions run; the rest retire.
        let keep: HashSet<String> = routed.union(&verifying).cloned().collect();
        self.retire_runners(namespace, name, &keep);

        // 4. Garbage: unrouted revisions beyond the history limit, oldest first.
        let latest_created = service.status.latest_created_revision_name.clone();
        let collectable: Vec<&Revision> = revisions
            .iter()
            .filter(|r| !keep.contains(&r.metadata.name) && r.metadata.name != latest_created)
            .collect();
        let excess = collectable.len().saturating_sub(self.config.revision_history);
        for r in &collectable[..excess] {
            ops.push(WriteOp::delete(Kind::Revision, namespace, &r.metadata.name));
            self.logs.platform(namespace, name, &r.metadata.name, "revision garbage-collected".into());
        }

        // 5. Status.
        let before = service.status.clone();
        let status = &mut service.status;
        status.observed_generation = service.metadata.generation;
        status.url = self.service_url(namespace, name);
        status.address = Some(serval_model::Addressable { url: self.service_path_url(namespace, name) });
        status.latest_ready_revision_name = latest_ready.clone().unwrap_or_default();
        let latest = revisions.iter().find(|r| r.metadata.name == latest_created);
        let (config_status, config_reason, config_message) =
            match latest.and_then(|l| Condition::find(&l.status.conditions, "Ready")) {
                Some(c) if c.status == ConditionStatus::True => (ConditionStatus::True, "", String::new()),
                Some(c) if c.status == ConditionStatus::Unknown => {
                    (ConditionStatus::Unknown, "Deploying", c.message.clone())
                }
                Some(c) => (
                    ConditionStatus::False,
                    "RevisionFailed",
                    format!("revision {latest_created:?} failed: {}: {}", c.reason, c.message),
                ),
                None => (ConditionStatus::False, "RevisionMissing", "the latest revision was not found".to_string()),
            };
        let (routes_status, routes_reason, routes_message) = match &pending {
            None => (ConditionStatus::True, "", String::new()),
            Some((reason, message)) => (ConditionStatus::Unknown, *reason, message.clone()),
        };
        let (ready, reason, message) = match (config_status, routes_status) {
            (ConditionStatus::True, ConditionStatus::True) => (ConditionStatus::True, "", String::new()),
            (ConditionStatus::True, s) => (s, routes_reason, routes_message.clone()),
            (s, _) => (s, config_reason, config_message.clone()),
        };
        for condition in [
            Condition::new("ConfigurationsReady", config_status, config_reason, config_message.clone()),
            Condition::new("RoutesReady", routes_status, routes_reason, routes_message.clone()),
            Condition::new("Ready", ready, reason, message),
        ] {
            Condition::set(&mut service.status.conditions, condition, &now);
        }
        let id = (namespace.to_string(), name.to_string());
        if ready == ConditionStatus::True {
            self.unsettled().remove(&id);
        } else {
            self.unsettled().insert(id);
        }
        if service.status != before {
            ops.push(WriteOp::put(Kind::Service, namespace, name, &service)?);
        }
        if !ops.is_empty() {
            self.store.write(ops).await?;
        }
        Ok(())
    }

    /// Revisions the routing table currently sends traffic (or tags) to.
    fn routed_revisions(&self, namespace: &str, name: &str) -> HashSet<String> {
        let key = RouteKey { namespace: namespace.into(), service: name.into() };
        let Some(route) = self.routes.get(&key) else { return HashSet::new() };
        route
            .weighted
            .iter()
            .map(|(_, t)| t)
            .chain(route.tags.values())
            .filter_map(|t| match t {
                Target::Pool(p) => Some(p.name().to_string()),
                Target::Unavailable(_) => None,
            })
            .collect()
    }

    /// Starts one instance of a new revision to prove it becomes ready; the outcome is
    /// written to the revision's `Ready` condition by `record_verification`.
    fn ensure_verification(&self, revision: &Revision) {
        let already = self.runners().contains_key(&runner_key(&revision.metadata.namespace, &revision.metadata.name));
        let runner = self.ensure_runner(revision, true);
        if already {
            return;
        }
        let mut outcome = runner.first_start();
        let events = self.events.clone();
        let (namespace, revision_name) = (revision.metadata.namespace.clone(), revision.metadata.name.clone());
        let service = revision.service_name().to_string();
        tokio::spawn(async move {
            if let Ok(result) = outcome.wait_for(Option::is_some).await {
                let result = result.clone().unwrap_or(Ok(()));
                let _ = events.send(Event::Verified { namespace, service, revision: revision_name, result });
            }
        });
    }

    /// Handles events from runners, one at a time, under the write lock.
    pub async fn handle_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            let Event::Verified { namespace, service, revision, result } = event;
            if let Err(e) = self.record_verification(&namespace, &service, &revision, result).await {
                tracing::error!("recording readiness of {namespace}/{revision}: {e}");
            }
        }
    }

    async fn record_verification(
        &self,
        namespace: &str,
        service: &str,
        revision: &str,
        result: Result<(), (&'static str, String)>,
    ) -> Result<(), PlatformError> {
        let _guard = self.write_lock.lock().await;
        let Some(mut rev) = self.store.get::<Revision>(Kind::Revision, namespace, revision)? else { return Ok(()) };
        let condition = match result {
            Ok(()) => Condition::new("Ready", ConditionStatus::True, "", ""),
            Err((reason, message)) => Condition::new("Ready", ConditionStatus::False, reason, message),
        };
        Condition::set(&mut rev.status.conditions, condition, &now_rfc3339());
        self.store.write(vec![WriteOp::put(Kind::Revision, namespace, revision, &rev)?]).await?;
        self.reconcile_locked(namespace, service).await
    }

    fn ensure_runner(&self, revision: &Revision, verify: bool) -> Arc<RevisionRunner> {
        let key = runner_key(&revision.metadata.namespace, &revision.metadata.name);
        let mut runners = self.runners();
        if let Some(r) = runners.get(&key) {
            return r.clone();
        }
        let container = revision.spec.containers.first().cloned().unwrap_or_default();
        let mut autoscaling =
            KpaSpec::new(&revision.autoscaling(), &self.config.autoscaler, revision.spec.container_concurrency());
        if verify {
            autoscaling.initial_scale = autoscaling.initial_scale.max(1);
        }
        // Services stored before the limits were lower are held to them at run time.
        let limits = self.scale_limits();
        autoscaling.max_scale = limits.max_scale(autoscaling.max_scale);
        autoscaling.min_scale = autoscaling.min_scale.min(limits.per_revision());
        autoscaling.initial_scale = autoscaling.initial_scale.min(limits.per_revision());
        let startup_timeout = revision
            .annotation(annotations::PROGRESS_DEADLINE)
            .and_then(|d| serval_model::parse_duration(d).ok())
            .unwrap_or(self.config.startup_timeout);
        let readiness = match container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) {
            Some(get) => Readiness::HttpGet {
                path: get.path.clone().unwrap_or_else(|| "/".into()),
                headers: get.http_headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
                timeout: Duration::from_secs(
                    container.readiness_probe.as_ref().and_then(|p| p.timeout_seconds).unwrap_or(1).into(),
                ),
            },
            None => Readiness::TcpConnect,
        };
        let (runtime, container_settings) = match revision.runtime_kind() {
            RuntimeKind::Oci => match &self.runtimes.oci {
                Ok(oci) => (oci.clone(), Some(container_settings(&container))),
                Err(_) => (self.runtimes.process.clone(), None),
            },
            _ => (self.runtimes.process.clone(), None),
        };
        let spec = RunnerSpec {
            namespace: revision.metadata.namespace.clone(),
            service: revision.service_name().to_string(),
            revision: revision.metadata.name.clone(),
            argv: container.command.iter().chain(&container.args).cloned().collect(),
            env: self.revision_environment(revision).unwrap_or_else(|missing| {
                // Checked before the revision became ready; gone since (deleted meanwhile).
                tracing::warn!("revision {}/{}: {missing}", revision.metadata.namespace, revision.metadata.name);
                container
                    .env
                    .iter()
                    .filter(|e| e.value_from.is_none())
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect()
            }),
            working_dir: container.working_dir.clone(),
            container_concurrency: revision.spec.container_concurrency(),
            autoscaling,
            tick: self.config.autoscaler.tick,
            timeouts: RequestTimeouts {
                total: Duration::from_secs(revision.spec.timeout_seconds()),
                response_start: Duration::from_secs(revision.spec.response_start_timeout_seconds()),
                idle: revision.spec.idle_timeout_seconds().map(Duration::from_secs),
            },
            h2c: container.serves_h2c(),
            grace_period: self.config.grace_period,
            startup_timeout,
            readiness,
            container: container_settings,
        };
        let runner = RevisionRunner::spawn(
            spec,
            runtime,
            self.logs.clone(),
            self.instance_ids.clone(),
            self.metrics.clone(),
            self.instance_slots.clone(),
        );
        runners.insert(key, runner.clone());
        runner
    }

    /// Retires the runners of a service's revisions not in `keep`: the routing table no
    /// longer sends them requests; queued and in-flight ones finish, then instances stop.
    fn retire_runners(&self, namespace: &str, service: &str, keep: &HashSet<String>) {
        let stale: Vec<Arc<RevisionRunner>> = {
            let mut runners = self.runners();
            let keys: Vec<String> = runners
                .iter()
                .filter(|(_, r)| {
                    let s = r.spec();
                    s.namespace == namespace && s.service == service && !keep.contains(&s.revision)
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| runners.remove(k)).collect()
        };
        for runner in stale {
            tokio::spawn(async move { runner.retire().await });
        }
    }

    /// Stops every runner and waits until all instances are gone.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<RevisionRunner>> = self.runners().drain().map(|(_, r)| r).collect();
        futures_util::future::join_all(all.iter().map(|r| r.stop())).await;
    }
}

/// The reason of a `Ready=False` that a later reconcile may revisit (the executable may
/// appear); every other failure of a revision is final.
const STATIC_FAILURE: &str = "ExecutableNotFound";
/// Kubernetes' reason for a container whose Secret or ConfigMap reference cannot be
/// resolved; final for the revision, since a change of what it reads makes a new one.
const CONFIG_FAILURE: &str = "CreateContainerConfigError";

fn is_ready(r: &Revision) -> bool {
    Condition::find(&r.status.conditions, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
}

/// What can be checked without starting anything: is the runtime available, does the
/// program exist?
fn static_readiness(revision: &Revision, runtimes: &Runtimes) -> Result<(), (&'static str, String)> {
    match revision.runtime_kind() {
        RuntimeKind::Process => {
            let container = revision.spec.containers.first();
            let program = container.and_then(|c| c.command.first()).map(String::as_str).unwrap_or_default();
            let dir = container.and_then(|c| c.working_dir.as_deref());
            find_program(program, dir).map_err(|m| (STATIC_FAILURE, m))
        }
        RuntimeKind::Oci => runtimes.oci.as_ref().map(|_| ()).map_err(|why| ("RuntimeUnavailable", why.clone())),
        RuntimeKind::Wasm => {
            Err(("RuntimeUnavailable", "the wasm runtime is not available in this version of serval".to_string()))
        }
    }
}

/// How the `oci` runtime runs a revision's container.
fn container_settings(container: &serval_model::Container) -> ContainerSettings {
    let limits = container.resources.as_ref().map(|r| &r.limits);
    ContainerSettings {
        image: container.image.clone().unwrap_or_default(),
        command: container.command.clone(),
        args: container.args.clone(),
        read_only_root: container.security_context.as_ref().and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        memory_limit: limits.and_then(|l| l.get("memory")).and_then(|q| serval_model::parse_memory(q).ok()),
        cpu_millis: limits.and_then(|l| l.get("cpu")).and_then(|q| serval_model::parse_cpu(q).ok()),
        pids_limit: serval_runtime::container::DEFAULT_PIDS_LIMIT,
    }
}

/// Something a runner reports back to the controller.
#[derive(Debug)]
pub enum Event {
    /// A new revision's first instance became ready (or failed to).
    Verified { namespace: String, service: String, revision: String, result: Result<(), (&'static str, String)> },
}

fn decode_service(body: &[u8]) -> Result<Service, PlatformError> {
    decode(body, "Service")
}

/// Decodes a user's JSON document; type errors name their field path (422), syntax errors
/// are a 400.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8], kind: &'static str) -> Result<T, PlatformError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            PlatformError::BadRequest(format!("request body is not valid JSON: {inner}"))
        } else {
            PlatformError::invalid_field(kind, field, type_error_message(&inner.to_string()))
        }
    })
}

/// serde's type error in a person's words: no line and column (of a document the CLI may
/// have converted from YAML), JSON's names for the expected types instead of Rust's.
fn type_error_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    let mut message = message.to_string();
    for (rust, json) in [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected an object"),
        ("expected a boolean", "expected true or false"),
    ] {
        message = message.replace(rust, json);
    }
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., "expected an object");
    }
    message
}

/// Fills an empty identity field of a `kind` document from the URL, or checks that it matches.
fn fill_identity(kind: &'static str, field: &mut String, from_url: &str, path: &str) -> Result<(), PlatformError> {
    if field.is_empty() {
        *field = from_url.to_string();
        Ok(())
    } else if field == from_url {
        Ok(())
    } else {
        Err(PlatformError::invalid_field(kind, path, format!("{field:?} does not match {from_url:?} in the URL")))
    }
}

/// Keeps what the server owns across an update (uid, creation time; generation bumped when
/// the spec changed), or sets it for a new object. `old` is the stored metadata and whether
/// the spec differs from it.
/// Carries uid, creation time and generation over from the stored object (`old`, with
/// whether the spec changed), or starts them. A `metadata.resourceVersion` in the new one
/// must be the stored one's (Kubernetes' optimistic concurrency: 409 otherwise); an absent
/// one overwrites.
fn carry_identity(
    what: &str,
    meta: &mut serval_model::ObjectMeta,
    old: Option<(&serval_model::ObjectMeta, bool)>,
    now: &str,
) -> Result<(), PlatformError> {
    let given = std::mem::take(&mut meta.resource_version);
    if !given.is_empty() && old.is_none_or(|(old, _)| old.resource_version != given) {
        let now_at =
            old.map_or("it does not exist any more".to_string(), |(o, _)| format!("it is at {}", o.resource_version));
        return Err(PlatformError::StaleVersion(format!(
            "{what} {}/{} was changed since resourceVersion {given} ({now_at}); read it again and retry",
            meta.namespace, meta.name
        )));
    }
    match old {
        Some((old, spec_changed)) => {
            meta.uid = old.uid.clone();
            meta.creation_timestamp = old.creation_timestamp.clone();
            meta.generation = old.generation + u64::from(spec_changed);
        }
        None => {
            meta.uid = new_uid();
            meta.creation_timestamp = now.to_string();
            meta.generation = 1;
        }
    }
    Ok(())
}

#[cfg(test)]
#[test]
fn type_errors_read_like_json_without_positions() {
    assert_eq!(
        type_error_message("invalid type: string \"x\", expected u32 at line 1 column 57"),
        "invalid type: string \"x\", expected a whole number"
    );
    assert_eq!(
        type_error_message("invalid type: integer `3`, expected struct Container"),
        "invalid type: integer `3`, expected an object"
    );
}

fn new_uid() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 96))
}

/// Checks that `program` can be executed: a path (relative to `dir`) or a name on `PATH`.
fn find_program(program: &str, dir: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = match dir {
            Some(d) if !program.starts_with('/') => Path::new(d).join(program),
            _ => Path::new(program).to_path_buf(),
        };
        return if executable(&path) { Ok(()) } else { Err(format!("{} is not an executable file", path.display())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!("{program:?} was not found on PATH"))
    }
}
