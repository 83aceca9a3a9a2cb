//! Event sources in the control plane: each kind's spec is checked and its sink resolved
//! when it is written, its task started through dispatch's [`Sources`] after every change,
//! and its status shown with the running task's live readiness and counters.
//!
//! [`Sources`]: serval_dispatch::sources::Sources

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use serval_dispatch::DispatchError;
use serval_dispatch::sources::{SinkDelivery, SourcePlan, SourceTask};
use serval_model::{
    ApiServerSource, Condition, ConditionStatus, PingSource, Resource, Source, SourceSpec, WebhookSource,
};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{Change, Reconciler, now_rfc3339};

/// Builds a source kind's task from a stored source (a 422 naming the field when its spec
/// cannot run).
pub(super) type TaskBuilder<S> = fn(&Source<S>) -> Result<Arc<dyn SourceTask>, DispatchError>;

impl Controller {
    /// Makes the running sources match the stored ones.
    pub(super) fn sync_sources(&self) {
        let gateway = self.gateway_url();
        let mut plans = Vec::new();
        for s in self.store.list::<PingSource>(PingSource::KIND, None).unwrap_or_default() {
            let Ok((task, Ok(sink))) = serval_dispatch::sources::ping::ping_plan(&s, &gateway) else { continue };
            let plan = SourcePlan {
                kind: PingSource::KIND,
                namespace: s.metadata.namespace.clone(),
                name: s.metadata.name.clone(),
                sink,
                overrides: Vec::new(),
                delivery: SinkDelivery::default(),
                task: Arc::new(task),
            };
            plans.push((plan, serde_json::to_string(&s.spec).unwrap_or_default()));
        }
        for add in SOURCE_KINDS {
            add(self, &mut plans);
        }
        self.sources.sync(plans);
    }

    /// The plans of every stored source of one kind whose spec runs and whose sink resolves.
    fn source_plans<S>(&self, build: TaskBuilder<S>, plans: &mut Vec<(SourcePlan, String)>)
    where
        S: SourceSpec + serde::Serialize + serde::de::DeserializeOwned,
        Source<S>: Resource,
    {
        let gateway = self.gateway_url();
        for source in self.store.list::<Source<S>>(Source::<S>::KIND, None).unwrap_or_default() {
            let namespace = &source.metadata.namespace;
            let Ok(sink) = serval_dispatch::delivery::resolve(source.spec.sink(), namespace, &gateway) else {
                continue;
            };
            let Ok(task) = build(&source) else { continue };
            let plan = SourcePlan {
                kind: Source::<S>::KIND,
                namespace: namespace.clone(),
                name: source.metadata.name.clone(),
                sink,
                overrides: overrides(&source.spec),
                delivery: delivery(&source.metadata),
                task,
            };
            plans.push((plan, serde_json::to_string(&source.spec).unwrap_or_default()));
        }
    }

    /// A webhook's shared secret: inline, or read from a Secret's key (an unknown Secret or
    /// key is a 422 naming the field).
    fn webhook_secret(&self, source: &WebhookSource) -> Result<Option<Vec<u8>>, ControlError> {
        let Some(secret) = &source.spec.secret else { return Ok(None) };
        if let Some(value) = &secret.value {
            return Ok(Some(value.as_bytes().to_vec()));
        }
        let Some(r) = &secret.secret_key_ref else { return Ok(None) };
        let field = "spec.secret.secretKeyRef";
        let stored = self
            .get_secret(&source.metadata.namespace, &r.name, true)
            .map_err(|e| ControlError::invalid_field(WebhookSource::KIND, field, e.to_string()))?;
        let value = stored.data.get(&r.key).ok_or_else(|| {
            ControlError::invalid_field(
                WebhookSource::KIND,
                field,
                format!("secret {:?} has no key {:?}", r.name, r.key),
            )
        })?;
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .map(Some)
            .map_err(|e| ControlError::invalid_field(WebhookSource::KIND, field, format!("not base64: {e}")))
    }

    /// The plans of the stored WebhookSources (their secrets resolved; a change of the
    /// secret restarts the task).
    fn webhook_plans(&self, plans: &mut Vec<(SourcePlan, String)>) {
        let gateway = self.gateway_url();
        for source in self.store.list::<WebhookSource>(WebhookSource::KIND, None).unwrap_or_default() {
            let namespace = &source.metadata.namespace;
            let Ok(sink) = serval_dispatch::delivery::resolve(&source.spec.sink, namespace, &gateway) else { continue };
            let Ok(secret) = self.webhook_secret(&source) else { continue };
            let fingerprint = format!(
                "{}|{}",
                serde_json::to_string(&source.spec).unwrap_or_default(),
                secret.as_deref().map(|s| format!("{:x}", sha2_digest(s))).unwrap_or_default()
            );
            let Ok(task) = serval_dispatch::sources::webhook::task(&source, secret) else { continue };
            let plan = SourcePlan {
                kind: WebhookSource::KIND,
                namespace: namespace.clone(),
                name: source.metadata.name.clone(),
                sink,
                overrides: overrides(&source.spec),
                delivery: delivery(&source.metadata),
                task,
            };
            plans.push((plan, fingerprint));
        }
    }

    /// The plans of the stored ApiServerSources (each watching the store's change feed and
    /// the runners' lifecycle events).
    fn apiserver_plans(&self, plans: &mut Vec<(SourcePlan, String)>) {
        let gateway = self.gateway_url();
        for source in self.store.list::<ApiServerSource>(ApiServerSource::KIND, None).unwrap_or_default() {
            let namespace = &source.metadata.namespace;
            let Ok(sink) = serval_dispatch::delivery::resolve(&source.spec.sink, namespace, &gateway) else { continue };
            let Ok(task) = self.apiserver_task(&source) else { continue };
            let plan = SourcePlan {
                kind: ApiServerSource::KIND,
                namespace: namespace.clone(),
                name: source.metadata.name.clone(),
                sink,
                overrides: overrides(&source.spec),
                delivery: delivery(&source.metadata),
                task,
            };
            plans.push((plan, serde_json::to_string(&source.spec).unwrap_or_default()));
        }
    }

    fn apiserver_task(&self, source: &ApiServerSource) -> Result<Arc<dyn SourceTask>, DispatchError> {
        let api = format!("http://{}", self.addrs.api);
        serval_dispatch::sources::apiserver::task(source, self.store.clone(), self.platform.clone(), &api)
    }

    /// Checks a source's spec by building its task, resolves its sink into the status.
    fn admit_source<S>(&self, source: &mut Source<S>, build: TaskBuilder<S>) -> Result<(), ControlError>
    where
        Source<S>: Resource,
        S: SourceSpec,
    {
        build(source)?;
        self.source_status(source);
        Ok(())
    }

    /// A source's sink resolved into its status, and its Ready from the sink.
    pub(super) fn source_status<S>(&self, source: &mut Source<S>)
    where
        S: SourceSpec,
    {
        let namespace = source.metadata.namespace.clone();
        let sink = serval_dispatch::delivery::resolve(source.spec.sink(), &namespace, &self.gateway_url());
        source.status.sink_uri = sink.ok().map(|s| s.url);
        let ready = self.source_readiness(source.spec.sink(), &namespace, None);
        Condition::set(&mut source.status.conditions, ready, &now_rfc3339());
    }

    /// A source's Ready: its sink exists, and its task (when it runs) reports no problem.
    pub(super) fn source_readiness(
        &self,
        sink: &serval_model::Destination,
        namespace: &str,
        problem: Option<(String, String)>,
    ) -> Condition {
        if let Err(why) = self.check_destination(sink, namespace) {
            return Condition::new("Ready", ConditionStatus::False, "SinkNotFound", why);
        }
        match problem {
            Some((reason, message)) => Condition::new("Ready", ConditionStatus::False, &reason, message),
            None => Condition::new("Ready", ConditionStatus::True, "", ""),
        }
    }

    /// A source as it is now: Ready from its sink and its running task, and the task's
    /// counters (`status.counters`).
    fn source_view<S>(&self, mut source: Source<S>) -> Value
    where
        Source<S>: Resource,
        S: SourceSpec,
    {
        let (namespace, name) = (source.metadata.namespace.clone(), source.metadata.name.clone());
        let health = self.sources.health(Source::<S>::KIND, &namespace, &name);
        let problem = health.as_ref().and_then(|h| h.problem());
        let ready = self.source_readiness(source.spec.sink(), &namespace, problem);
        Condition::set(&mut source.status.conditions, ready, &now_rfc3339());
        let mut view = serde_json::to_value(source).unwrap_or_default();
        if let Some(health) = health {
            view["status"]["counters"] = serde_json::to_value(health.counters()).unwrap_or_default();
        }
        view
    }
}

/// The writes that forget a deleted source's positions and inbox.
fn forget<S>(source: &Source<S>) -> Vec<WriteOp>
where
    Source<S>: Resource,
{
    serval_dispatch::sources::forget(Source::<S>::KIND, &source.metadata.namespace, &source.metadata.name)
}

/// Events an unordered source posts at once to an HTTP sink.
const UNORDERED_IN_FLIGHT: usize = 32;

/// How a source posts to an HTTP sink: several requests at once when unordered
/// (`serval.dev/delivery-order: unordered`, or Knative's
/// `kafka.eventing.knative.dev/delivery.order`), else one after the other; each request
/// one event, or a batch (`serval.dev/delivery-batch-size`).
fn delivery(meta: &serval_model::ObjectMeta) -> SinkDelivery {
    let unordered = serval_model::delivers_unordered(meta).unwrap_or(false);
    SinkDelivery {
        in_flight: if unordered { UNORDERED_IN_FLIGHT } else { 1 },
        batch: serval_model::delivery_batch_size(meta).unwrap_or(1),
    }
}

/// A source's `spec.ceOverrides.extensions`.
fn overrides(spec: &impl SourceSpec) -> Vec<(String, String)> {
    spec.ce_overrides().map(|o| o.extensions.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// A digest of a secret, for a fingerprint that changes with it (the secret stays out).
fn sha2_digest(secret: &[u8]) -> u128 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    u128::from_be_bytes(digest.as_ref()[..16].try_into().unwrap_or_default())
}

/// Adds one kind's plans.
type AddPlans = fn(&Controller, &mut Vec<(SourcePlan, String)>);

/// Every source kind beyond PingSource, each with its task builder.
const SOURCE_KINDS: &[AddPlans] = &[
    |c, plans| c.source_plans(serval_dispatch::sources::file::task, plans),
    |c, plans| c.source_plans(serval_dispatch::sources::kafka::task, plans),
    |c, plans| c.source_plans(serval_dispatch::sources::nats::task, plans),
    |c, plans| c.source_plans(serval_dispatch::sources::postgres::task, plans),
    |c, plans| c.webhook_plans(plans),
    |c, plans| c.apiserver_plans(plans),
];

/// A source kind's reconciler: its spec checked and sink resolved when written, its task
/// (re)started after every change, its live status shown; `deleted` cleans up in the
/// external system after a deletion (in the background, logged when it fails).
macro_rules! source_reconciler {
    ($spec:ty, $build:path $(, deleted: $deleted:path)?) => {
        impl Reconciler<Source<$spec>> for Controller {
            fn admit(
                &self,
                source: &mut Source<$spec>,
                _previous: Option<&Source<$spec>>,
            ) -> Result<Vec<WriteOp>, ControlError> {
                self.admit_source(source, $build)?;
                Ok(Vec::new())
            }

            fn removed(&self, source: &Source<$spec>) -> Vec<WriteOp> {
                forget(source)
            }

            fn changed<'a>(&'a self, change: Change<'a, Source<$spec>>) -> BoxFuture<'a, Result<(), ControlError>> {
                self.sync_sources();
                $(
                    if let Change::Deleted(source) = change {
                        let source = source.clone();
                        tokio::spawn(async move {
                            if let Err(e) = $deleted(&source).await {
                                tracing::warn!("{}/{}: {e}", source.metadata.namespace, source.metadata.name);
                            }
                        });
                    }
                )?
                let _ = change;
                Box::pin(async { Ok(()) })
            }

            fn view(&self, source: Source<$spec>) -> Value {
                self.source_view(source)
            }
        }
    };
}

source_reconciler!(serval_model::FileSourceSpec, serval_dispatch::sources::file::task);
source_reconciler!(serval_model::NatsSourceSpec, serval_dispatch::sources::nats::task);
source_reconciler!(
    serval_model::PostgresSourceSpec,
    serval_dispatch::sources::postgres::task,
    deleted: serval_dispatch::sources::postgres::drop_slot
);
source_reconciler!(serval_model::KafkaSourceSpec, serval_dispatch::sources::kafka::task);

/// A WebhookSource: its secret resolved when written (a 422 for an unknown Secret or key),
/// its address in the status.
impl Reconciler<WebhookSource> for Controller {
    fn admit(
        &self,
        source: &mut WebhookSource,
        _previous: Option<&WebhookSource>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        let secret = self.webhook_secret(source)?;
        serval_dispatch::sources::webhook::task(source, secret)?;
        self.source_status(source);
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        source.status.address = Some(serval_model::Addressable {
            url: format!(
                "http://{}{}{namespace}/{name}",
                self.addrs.gateway,
                serval_dispatch::sources::webhook::PREFIX
            ),
        });
        Ok(Vec::new())
    }

    fn removed(&self, source: &WebhookSource) -> Vec<WriteOp> {
        forget(source)
    }

    fn changed<'a>(&'a self, _change: Change<'a, WebhookSource>) -> BoxFuture<'a, Result<(), ControlError>> {
        self.sync_sources();
        Box::pin(async { Ok(()) })
    }

    fn view(&self, source: WebhookSource) -> Value {
        self.source_view(source)
    }
}

/// An ApiServerSource: its kinds checked when written, its task watching the store.
impl Reconciler<ApiServerSource> for Controller {
    fn admit(
        &self,
        source: &mut ApiServerSource,
        _previous: Option<&ApiServerSource>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        self.apiserver_task(source)?;
        self.source_status(source);
        Ok(Vec::new())
    }

    fn removed(&self, source: &ApiServerSource) -> Vec<WriteOp> {
        forget(source)
    }

    fn changed<'a>(&'a self, _change: Change<'a, ApiServerSource>) -> BoxFuture<'a, Result<(), ControlError>> {
        self.sync_sources();
        Box::pin(async { Ok(()) })
    }

    fn view(&self, source: ApiServerSource) -> Value {
        self.source_view(source)
    }
}
