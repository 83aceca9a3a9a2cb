//! Reconciliation of Services: stored spec → revisions, routes, runners and status.
//!
//! Level-triggered: `reconcile` looks only at what is stored now and what runs now, so it is
//! run after every change, at start-up and periodically, and always converges.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serval_gateway::{RequestTimeouts, Route, RouteKey, RoutingTable, Target};
use serval_model::{
    Condition, ConditionStatus, Resource, Revision, RuntimeKind, ScaleLimits, Service, TrafficTarget, annotations,
    check_scale_limits, revision_name, validate_service,
};
use serval_runtime::oci::ImageStore;
use serval_runtime::{ContainerSettings, Readiness, Runtime, Workload};
use serval_scaler::KpaSpec;
use serval_store::{ResourceStoreExt, Storage, WriteOp};
use tokio::sync::mpsc;

use crate::kinds::{ApplyMode, carry_identity, decode, fill_identity, now_rfc3339};
use crate::logs::LogBook;
use crate::metrics::PlatformMetrics;
use crate::runner::{InstanceSlots, RevisionRunner, RunnerSpec};
use crate::sealer::Sealer;
use crate::{BoundAddrs, ControlConfig, ControlError};
use serval_dispatch::delivery::Dispatchers;

mod bindings;
mod config_data;
mod eventing;
mod flows;
mod kinds;
mod kv;
mod references;
mod sources;
mod workflows;

pub use kinds::builtin_kinds;

/// How often services that are not Ready are reconciled again without a change.
const RESYNC: Duration = Duration::from_secs(10);
/// The region Lambda functions see (`AWS_REGION`).
const LAMBDA_REGION: &str = "us-east-1";
/// How much longer the gateway waits for a Lambda function's answer than its timeout, so
/// that the function's own timeout answers ("Task timed out after N.00 seconds").
const LAMBDA_TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

/// A runtime, or why there is none (e.g. `runc` not installed).
pub type RuntimeOrWhyNot = Result<Arc<dyn Runtime>, String>;

/// The runtimes instances run on, by the kind of workload they run.
#[derive(Clone, Default)]
pub struct Runtimes {
    registered: Vec<(RuntimeKind, RuntimeOrWhyNot)>,
}

impl Runtimes {
    /// Runs workloads of `kind` with `runtime` (replacing an earlier registration).
    pub fn register(&mut self, kind: RuntimeKind, runtime: RuntimeOrWhyNot) {
        self.registered.retain(|(k, _)| *k != kind);
        self.registered.push((kind, runtime));
    }

    fn available(&self) -> impl Iterator<Item = &Arc<dyn Runtime>> {
        self.registered.iter().filter_map(|(_, runtime)| runtime.as_ref().ok())
    }

    /// The runtime of `kind`, or why there is none.
    fn get(&self, kind: RuntimeKind) -> Result<&Arc<dyn Runtime>, String> {
        match self.registered.iter().find(|(k, _)| *k == kind) {
            Some((_, runtime)) => runtime.as_ref().map_err(Clone::clone),
            None => Err(format!("the {} runtime is not available in this version of serval", kind.as_str())),
        }
    }
}

/// The result of an apply.
pub struct Applied {
    pub service: Service,
    pub warnings: Vec<String>,
    pub created: bool,
}

pub struct Controller {
    config: ControlConfig,
    addrs: BoundAddrs,
    store: Arc<dyn Storage>,
    runtimes: Runtimes,
    images: Arc<ImageStore>,
    routes: Arc<RoutingTable>,
    logs: LogBook,
    /// Runners by `namespace/revision`.
    runners: Mutex<HashMap<String, Arc<RevisionRunner>>>,
    /// Serializes read-modify-write of resources and reconciles.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Services (namespace, name) whose last reconcile left them not Ready.
    unsettled: Mutex<HashSet<(String, String)>>,
    instance_ids: Arc<AtomicU64>,
    /// The server-wide instance limit, shared by the runners.
    instance_slots: InstanceSlots,
    metrics: Arc<PlatformMetrics>,
    events: mpsc::UnboundedSender<Event>,
    dispatchers: Arc<Dispatchers>,
    sources: Arc<serval_dispatch::sources::Sources>,
    /// The services' async call queues.
    calls: Arc<serval_dispatch::calls::AsyncCalls>,
    /// Instance lifecycle events, for ApiServerSources.
    platform: Arc<serval_dispatch::sources::apiserver::PlatformEvents>,
    /// The key-value stores functions reach at `SERVAL_KV_URL`, and their tokens.
    kv: Arc<serval_kv::KeyValueStores>,
    kv_tokens: Arc<serval_kv::Tokens>,
    /// The runs of workflows in progress.
    workflows: Arc<crate::workflows::WorkflowRuns>,
    sealer: Sealer,
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
    pub store: Arc<dyn Storage>,
    pub runtimes: Runtimes,
    pub images: Arc<ImageStore>,
    pub routes: Arc<RoutingTable>,
    pub metrics: Arc<PlatformMetrics>,
    pub events: mpsc::UnboundedSender<Event>,
    pub dispatchers: Arc<Dispatchers>,
    pub sealer: Sealer,
}

impl Controller {
    pub fn new(config: ControlConfig, addrs: BoundAddrs, parts: Parts) -> Arc<Controller> {
        let Parts { store, runtimes, images, routes, metrics, events, dispatchers, sealer } = parts;
        let sources = Arc::new(serval_dispatch::sources::Sources::new(dispatchers.clone(), store.clone()));
        let instance_slots = Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize));
        let workflows = Arc::new(crate::workflows::WorkflowRuns::new(
            store.clone(),
            dispatchers.clone(),
            format!("http://{}", addrs.gateway),
        ));
        let calls = serval_dispatch::calls::AsyncCalls::new(dispatchers.clone(), format!("http://{}", addrs.gateway));
        let kv = Arc::new(serval_kv::KeyValueStores::new(store.clone()));
        let kv_tokens = Arc::new(serval_kv::Tokens::new(&sealer.derived_key("serval key-value tokens")));
        Arc::new(Controller {
            config,
            addrs,
            store,
            runtimes,
            images,
            routes,
            logs: LogBook::default(),
            runners: Mutex::new(HashMap::new()),
            write_lock: Arc::default(),
            unsettled: Mutex::new(HashSet::new()),
            instance_ids: Arc::new(AtomicU64::new(1)),
            instance_slots,
            metrics,
            events,
            dispatchers,
            sources,
            calls,
            platform: Arc::default(),
            kv,
            kv_tokens,
            workflows,
            sealer,
        })
    }

    /// What generic kinds share with the controller: the store and its write lock.
    pub fn kind_context(&self) -> crate::kinds::KindContext {
        crate::kinds::KindContext { store: self.store.clone(), write_lock: self.write_lock.clone() }
    }

    /// The changes of a kind of resource (see [`serval_store::Store::watch`]).
    pub fn watch(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: Option<i64>,
    ) -> Result<(Vec<serval_store::WatchEvent>, serval_store::Watcher), serval_store::TooOld> {
        self.store.watch(kind, namespace, after)
    }

    /// The running event sources (the gateway's webhook ingress asks them).
    pub fn sources(&self) -> Arc<serval_dispatch::sources::Sources> {
        self.sources.clone()
    }

    /// The services' async call queues (the gateway queues calls in them).
    pub fn calls(&self) -> Arc<serval_dispatch::calls::AsyncCalls> {
        self.calls.clone()
    }

    /// A service's async calls, newest first (at most `limit`, 1 to the outcomes kept);
    /// `NotFound` without the service.
    pub fn service_calls(
        &self,
        namespace: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<serval_dispatch::calls::CallRecord>, ControlError> {
        self.get_service(namespace, name)?;
        let limit = limit.clamp(1, serval_dispatch::calls::KEPT_RESULTS as usize);
        Ok(self.calls.calls(namespace, name, limit)?)
    }

    pub fn config(&self) -> &ControlConfig {
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
    pub fn remove_image(&self, reference: &str) -> Result<(), ControlError> {
        let target = self.images.resolve(reference)?.digest;
        let revisions: Vec<Revision> = self.store.list(Revision::KIND, None)?;
        for r in &revisions {
            let image = r.spec.containers.first().and_then(|c| c.image.as_deref());
            if let Some(image) = image
                && self.images.resolve(image).is_ok_and(|i| i.digest == target)
            {
                return Err(ControlError::Conflict(format!(
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

    pub fn get_service(&self, namespace: &str, name: &str) -> Result<Service, ControlError> {
        let service = self.store.get::<Service>(Service::KIND, namespace, name)?.ok_or_else(|| {
            ControlError::NotFound { kind: "Service", namespace: namespace.into(), name: name.into() }
        })?;
        Ok(self.with_live_status(service))
    }

    pub fn list_services(&self, namespace: Option<&str>) -> Result<Vec<Service>, ControlError> {
        let services: Vec<Service> = self.store.list(Service::KIND, namespace)?;
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

    /// Revisions of a namespace (or all), of one service when given, ordered by service and
    /// generation.
    pub fn list_revisions(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Revision>, ControlError> {
        let mut revisions: Vec<Revision> = match (namespace, service) {
            (Some(namespace), Some(service)) => self.store.list_owned(Revision::KIND, namespace, service)?,
            (namespace, service) => {
                let all: Vec<Revision> = self.store.list(Revision::KIND, namespace)?;
                all.into_iter().filter(|r| service.is_none_or(|s| r.service_name() == s)).collect()
            }
        };
        revisions
            .sort_by_key(|r| (r.metadata.namespace.clone(), r.service_name().to_string(), configuration_generation(r)));
        Ok(revisions.into_iter().map(|r| self.with_live_revision_status(r)).collect())
    }

    pub fn get_revision(&self, namespace: &str, name: &str) -> Result<Revision, ControlError> {
        let revision = self.store.get::<Revision>(Revision::KIND, namespace, name)?.ok_or_else(|| {
            ControlError::NotFound { kind: "Revision", namespace: namespace.into(), name: name.into() }
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
    ) -> Result<Applied, ControlError> {
        let mut service: Service = decode(body, Service::KIND)?;
        fill_identity("Service", &mut service.metadata.namespace, namespace, "metadata.namespace")?;
        if let Some(name) = name {
            fill_identity("Service", &mut service.metadata.name, name, "metadata.name")?;
        }
        let warnings =
            validate_service(&service).map_err(|source| ControlError::Invalid { kind: "Service", source })?;
        check_scale_limits(&service, self.scale_limits())
            .map_err(|source| ControlError::Invalid { kind: "Service", source })?;
        let _guard = self.write_lock.lock().await;
        let created = self.write_service_locked(service.clone(), mode).await?;
        let service = self.get_service(namespace, &service.metadata.name)?;
        Ok(Applied { service, warnings, created })
    }

    /// Stores a validated Service (with its configuration digest stamped), making the next
    /// Revision in the same transaction when the template changed, and reconciles it.
    /// Returns whether it was created. Called under the write lock.
    async fn write_service_locked(&self, mut service: Service, mode: ApplyMode) -> Result<bool, ControlError> {
        let (namespace, name) = (service.metadata.namespace.clone(), service.metadata.name.clone());
        let namespace = namespace.as_str();
        self.stamp_config_digest(&mut service);
        self.stamp_sink_binding(&mut service);
        let existing: Option<Service> = self.store.get(Service::KIND, namespace, &name)?;
        let now = now_rfc3339();
        let created = existing.is_none();
        let template_changed = existing.as_ref().is_none_or(|e| e.spec.template != service.spec.template);
        let old = existing.as_ref().map(|o| (&o.metadata, o.spec != service.spec));
        carry_identity(Service::KIND, mode, &mut service.metadata, old, &now)?;
        if created {
            self.logs.revive(namespace, &name);
        }
        service.status = existing.as_ref().map(|o| o.status.clone()).unwrap_or_default();
        let revisions: Vec<Revision> = self.store.list_owned(Revision::KIND, namespace, &name)?;
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
                return Err(ControlError::Conflict(format!(
                    "revision {rev_name} already exists; revisions are immutable, give spec.template.metadata.name a new value"
                )));
            }
            let revision = Revision::from_service(&service, rev_name.clone(), number, &now);
            ops.push(WriteOp::put_owned(Revision::KIND, namespace, &rev_name, &name, &revision)?);
            service.status.latest_created_revision_name = rev_name;
            service.status.configuration_generation = number;
        }
        for (i, t) in service.spec.traffic.iter().enumerate() {
            if let Some(rev) = &t.revision_name
                && *rev != service.status.latest_created_revision_name
                && !revisions.iter().any(|r| &r.metadata.name == rev)
            {
                return Err(ControlError::invalid_field(
                    "Service",
                    format!("spec.traffic[{i}].revisionName"),
                    format!("revision {rev:?} does not exist"),
                ));
            }
        }
        ops.push(WriteOp::put(Service::KIND, namespace, &name, &service)?);
        self.store.write(ops).await?;
        self.reconcile_locked(namespace, &name).await?;
        if created {
            self.refresh_referrers(Some(namespace)).await?;
        }
        Ok(created)
    }

    /// Deletes a Service and its Revisions; its instances are drained and stopped.
    pub async fn delete_service(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        self.delete_service_locked(namespace, name).await
    }

    /// [`Controller::delete_service`] under the write lock.
    async fn delete_service_locked(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        if self.store.get::<Service>(Service::KIND, namespace, name)?.is_none() {
            return Err(ControlError::NotFound { kind: "Service", namespace: namespace.into(), name: name.into() });
        }
        let mut ops = vec![WriteOp::delete(Service::KIND, namespace, name)];
        for revision in self.list_revisions(Some(namespace), Some(name))? {
            ops.push(WriteOp::delete(Revision::KIND, namespace, &revision.metadata.name));
        }
        self.store.write(ops).await?;
        self.reconcile_locked(namespace, name).await?;
        self.logs.forget(namespace, name);
        self.refresh_referrers(Some(namespace)).await
    }

    // ---- reconciliation ----

    pub async fn resync_all(&self) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        self.refresh_referrers(None).await?;
        self.sync_dispatchers();
        self.sync_sources();
        self.ensure_container_sources().await;
        self.resume_workflow_runs();
        let services: Vec<Service> = self.store.list(Service::KIND, None)?;
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

    async fn reconcile_locked(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        let key = RouteKey { namespace: namespace.into(), service: name.into() };
        let Some(mut service) = self.store.get::<Service>(Service::KIND, namespace, name)? else {
            self.routes.set(key, None);
            self.retire_runners(namespace, name, &HashSet::new());
            self.unsettled().remove(&(namespace.to_string(), name.to_string()));
            return Ok(());
        };
        let now = now_rfc3339();
        let mut ops = Vec::new();
        let mut revisions = self.list_revisions(Some(namespace), Some(name))?;

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
            let runnable = self.runnable(revision);
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
                ops.push(WriteOp::put(Revision::KIND, namespace, &revision.metadata.name, &stored)?);
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
            ops.push(WriteOp::delete(Revision::KIND, namespace, &r.metadata.name));
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
            ops.push(WriteOp::put(Service::KIND, namespace, name, &service)?);
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
    ) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        let Some(mut rev) = self.store.get::<Revision>(Revision::KIND, namespace, revision)? else { return Ok(()) };
        let condition = match result {
            Ok(()) => Condition::new("Ready", ConditionStatus::True, "", ""),
            Err((reason, message)) => Condition::new("Ready", ConditionStatus::False, reason, message),
        };
        Condition::set(&mut rev.status.conditions, condition, &now_rfc3339());
        self.store.write(vec![WriteOp::put(Revision::KIND, namespace, revision, &rev)?]).await?;
        self.reconcile_locked(namespace, service).await
    }

    /// Whether a revision can run: its runtime exists and takes it, and its Secret and
    /// ConfigMap references resolve. `Err((reason, message))` for its `Ready` condition.
    fn runnable(&self, revision: &Revision) -> Result<(), (&'static str, String)> {
        let runtime = self.runtime_for(revision).map_err(|why| ("RuntimeUnavailable", why))?;
        // What the runtime checks (program, image) does not depend on the environment; a
        // missing program is reported first, since it may still appear (a config error is final).
        let spec =
            self.runner_spec(revision, false, Vec::new()).instance_spec(format!("{}-check", revision.metadata.name));
        runtime.check(&spec).map_err(|m| (STATIC_FAILURE, m))?;
        self.revision_environment(revision).map(|_| ()).map_err(|m| (CONFIG_FAILURE, m))
    }

    /// The runtime that runs a revision: its kind's, behind the Lambda Runtime API when the
    /// revision's protocol is `lambda`; `Err` says why there is none.
    fn runtime_for(&self, revision: &Revision) -> Result<Arc<dyn Runtime>, String> {
        let runtime = self.runtimes.get(revision.runtime_kind())?.clone();
        let Some(function) = revision.lambda() else { return Ok(runtime) };
        let container = revision.spec.containers.first();
        let memory = container
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.limits.get("memory"))
            .and_then(|m| serval_model::parse_memory(m).ok())
            .map_or(128, |bytes| (bytes / (1024 * 1024)).max(1) as u64);
        let settings = serval_lambda::FunctionSettings {
            name: revision.service_name().to_string(),
            version: "$LATEST".to_string(),
            memory_mb: memory,
            region: LAMBDA_REGION.to_string(),
            handler: function.handler,
            runtime: function.runtime,
            timeout: Duration::from_secs(revision.spec.timeout_seconds()),
        };
        Ok(Arc::new(serval_lambda::LambdaRuntime::new(runtime, settings)))
    }

    /// The read-only mount of a Lambda zip run in an image: its directory (only under the
    /// functions' code directory) at the container's working directory.
    fn lambda_code_mount(
        &self,
        revision: &Revision,
        container: &serval_model::Container,
    ) -> Option<serval_runtime::ReadOnlyMount> {
        let code = std::path::PathBuf::from(revision.lambda()?.code?);
        if !code.starts_with(&self.config.lambda_code_dir) {
            tracing::warn!(
                "revision {}: {} is not a function's code; not mounted",
                revision.metadata.name,
                code.display()
            );
            return None;
        }
        let destination = container.working_dir.clone().unwrap_or_else(|| "/var/task".to_string());
        Some(serval_runtime::ReadOnlyMount { source: code, destination })
    }

    fn ensure_runner(&self, revision: &Revision, verify: bool) -> Arc<RevisionRunner> {
        let key = runner_key(&revision.metadata.namespace, &revision.metadata.name);
        let mut runners = self.runners();
        if let Some(r) = runners.get(&key) {
            return r.clone();
        }
        let env = self.revision_environment(revision).unwrap_or_else(|missing| {
            // Checked before the revision became ready; gone since (deleted meanwhile).
            tracing::warn!("revision {}/{}: {missing}", revision.metadata.namespace, revision.metadata.name);
            let container = revision.spec.containers.first();
            let literal = container.into_iter().flat_map(|c| &c.env).filter(|e| e.value_from.is_none());
            let literal = literal.map(|e| (e.name.clone(), e.value.clone()));
            literal.chain(Controller::bound_environment(revision)).chain(self.kv_environment(revision)).collect()
        });
        let spec = self.runner_spec(revision, verify, env);
        // A revision whose runtime went away fails its starts with the reason.
        let runtime = match self.runtime_for(revision) {
            Ok(runtime) => runtime,
            Err(why) => Arc::new(Unavailable(why)),
        };
        if !verify {
            // At zero until a request comes: let the runtime get the first start ready.
            let prepared = runtime.prepare(&spec.instance_spec(format!("{}-prepared", spec.revision)));
            let what = format!("{}/{}", spec.namespace, spec.revision);
            tokio::spawn(async move {
                if let Err(e) = prepared.await {
                    tracing::warn!("preparing revision {what}: {e}");
                }
            });
        }
        let runner = RevisionRunner::spawn(
            spec,
            runtime,
            self.logs.clone(),
            self.instance_ids.clone(),
            self.metrics.clone(),
            self.instance_slots.clone(),
            self.platform.clone(),
        );
        runners.insert(key, runner.clone());
        runner
    }

    /// How a revision's instances run, with its environment `env` resolved.
    fn runner_spec(&self, revision: &Revision, verify: bool, env: Vec<(String, String)>) -> RunnerSpec {
        let container = revision.spec.containers.first().cloned().unwrap_or_default();
        // A Lambda function's own timeout ends its invocation (and answers for it): the
        // gateway's, a moment later, only catches an invocation that never started.
        let lambda_margin = if revision.lambda().is_some() { LAMBDA_TIMEOUT_MARGIN } else { Duration::ZERO };
        let mut autoscaling =
            KpaSpec::new(&revision.autoscaling(), &self.config.autoscaler, container_concurrency(revision));
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
            None if revision.annotation(annotations::READINESS) == Some("started") => Readiness::Started,
            None => Readiness::TcpConnect,
        };
        let workload = match revision.runtime_kind() {
            RuntimeKind::Oci => {
                let mut settings = container_settings(&container);
                settings.read_only_mounts.extend(self.lambda_code_mount(revision, &container));
                Workload::Container(settings)
            }
            _ => Workload::Process { argv: container.command.iter().chain(&container.args).cloned().collect() },
        };
        RunnerSpec {
            namespace: revision.metadata.namespace.clone(),
            service: revision.service_name().to_string(),
            revision: revision.metadata.name.clone(),
            workload,
            env,
            working_dir: container.working_dir.clone(),
            container_concurrency: container_concurrency(revision),
            autoscaling,
            tick: self.config.autoscaler.tick,
            timeouts: RequestTimeouts {
                total: Duration::from_secs(revision.spec.timeout_seconds()) + lambda_margin,
                response_start: Duration::from_secs(revision.spec.response_start_timeout_seconds()) + lambda_margin,
                idle: revision.spec.idle_timeout_seconds().map(Duration::from_secs),
            },
            h2c: container.serves_h2c(),
            grace_period: self.config.grace_period,
            startup_timeout,
            readiness,
        }
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

    /// Stops every runner, waits until all instances are gone, then lets the runtimes drop
    /// what they prepared.
    pub async fn shutdown(&self) {
        self.workflows.stop_all();
        let all: Vec<Arc<RevisionRunner>> = self.runners().drain().map(|(_, r)| r).collect();
        futures_util::future::join_all(all.iter().map(|r| r.stop())).await;
        for runtime in self.runtimes.available() {
            runtime.shutdown();
        }
    }
}

/// A revision's `containerConcurrency`; 1 for a Lambda function, whose instances take one
/// invocation at a time.
fn container_concurrency(revision: &Revision) -> u32 {
    if revision.lambda().is_some() { 1 } else { revision.spec.container_concurrency() }
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

/// The runtime of a revision whose runtime is not there (any more): every start fails
/// with why.
struct Unavailable(String);

impl Runtime for Unavailable {
    fn start(
        &self,
        _spec: serval_runtime::InstanceSpec,
        _logs: serval_runtime::LogSink,
    ) -> futures_util::future::BoxFuture<'static, Result<serval_runtime::Instance, serval_runtime::RuntimeError>> {
        let why = self.0.clone();
        Box::pin(async move { Err(serval_runtime::RuntimeError::Io(std::io::Error::other(why))) })
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
        read_only_mounts: Vec::new(),
    }
}

/// Something a runner reports back to the controller.
#[derive(Debug)]
pub enum Event {
    /// A new revision's first instance became ready (or failed to).
    Verified { namespace: String, service: String, revision: String, result: Result<(), (&'static str, String)> },
}
