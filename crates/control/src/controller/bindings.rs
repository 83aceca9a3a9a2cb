//! SinkBindings and ContainerSources.
//!
//! A SinkBinding is stamped into the template of every Service it binds (annotations
//! naming the binding, the sink's URL and the overrides), so a change of the binding or its
//! sink makes a new revision, and the revision's instances get `K_SINK` and
//! `K_CE_OVERRIDES` from its annotations. A ContainerSource owns a Service
//! (`<name>-deployment`, at one instance or more, ready once started) and a SinkBinding
//! (`<name>-sinkbinding`) naming it, as Knative's owns a Deployment and a SinkBinding.

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_model::annotations::{K_CE_OVERRIDES, K_SINK, READINESS, SINK_BINDING};
use serval_model::{
    BindingSubject, Condition, ConditionStatus, ContainerSource, OwnerReference, Resource, Revision,
    SERVING_API_VERSION, Service, SinkBinding, SinkBindingSpec, Source, container_source_binding,
    container_source_service,
};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{ApplyMode, Change, Reconciler, carry_identity, now_rfc3339};

/// The annotations a binding stamps into a template.
const STAMPED: [&str; 3] = [SINK_BINDING, K_SINK, K_CE_OVERRIDES];

impl Controller {
    /// Stamps into a Service's template the first SinkBinding of its namespace (by name)
    /// that binds it and whose sink resolves; removes a stamp no binding gives any more.
    pub(super) fn stamp_sink_binding(&self, service: &mut Service) {
        let namespace = service.metadata.namespace.clone();
        let mut labels = service.metadata.labels.clone();
        labels.extend(service.spec.template.metadata.labels.clone());
        let annotations = &mut service.spec.template.metadata.annotations;
        for key in STAMPED {
            annotations.remove(key);
        }
        let bindings: Vec<SinkBinding> = self.store.list(SinkBinding::KIND, Some(&namespace)).unwrap_or_default();
        let gateway = self.gateway_url();
        for binding in bindings.iter().filter(|b| b.spec.subject.selects(&service.metadata.name, &labels)) {
            let Ok(sink) = serval_dispatch::delivery::resolve(&binding.spec.sink, &namespace, &gateway) else {
                continue;
            };
            annotations.insert(SINK_BINDING.into(), binding.metadata.name.clone());
            annotations.insert(K_SINK.into(), sink.url);
            if let Some(overrides) = binding.spec.ce_overrides.as_ref().filter(|o| !o.extensions.is_empty()) {
                annotations.insert(K_CE_OVERRIDES.into(), json!({ "extensions": overrides.extensions }).to_string());
            }
            return;
        }
    }

    /// `K_SINK` and `K_CE_OVERRIDES` of a revision's instances, from its stamp.
    pub(super) fn bound_environment(revision: &Revision) -> Vec<(String, String)> {
        [("K_SINK", K_SINK), ("K_CE_OVERRIDES", K_CE_OVERRIDES)]
            .into_iter()
            .filter_map(|(var, key)| revision.annotation(key).map(|v| (var.to_string(), v.to_string())))
            .collect()
    }

    /// After a SinkBinding changed: every Service of the namespace whose stamp changes is
    /// written again (a new revision). Called under the write lock.
    async fn roll_out_bindings(&self, namespace: &str) -> Result<(), ControlError> {
        let services: Vec<Service> = self.store.list(Service::KIND, Some(namespace))?;
        for service in services {
            let mut stamped = service.clone();
            self.stamp_sink_binding(&mut stamped);
            if stamped.spec.template == service.spec.template {
                continue;
            }
            let name = service.metadata.name.clone();
            match self.write_service_locked(service, ApplyMode::CreateOrUpdate).await {
                Err(ControlError::Conflict(why)) => {
                    tracing::warn!("a SinkBinding of {namespace} changed; service {name} not updated: {why}")
                }
                other => other.map(|_| ())?,
            }
        }
        Ok(())
    }

    /// A binding's Ready: its sink exists, and a subject named by name exists.
    fn binding_readiness(&self, binding: &SinkBinding) -> Condition {
        let namespace = &binding.metadata.namespace;
        let missing = binding
            .spec
            .subject
            .name
            .as_ref()
            .filter(|name| matches!(self.store.get::<Service>(Service::KIND, namespace, name), Ok(None)));
        let problem =
            missing.map(|name| ("SubjectNotFound".to_string(), format!("Service {namespace}/{name} does not exist")));
        self.source_readiness(&binding.spec.sink, namespace, problem)
    }

    /// The Service a ContainerSource runs: its template, kept at one instance or more,
    /// ready once started, owned by the source.
    fn container_source_parts(&self, source: &ContainerSource) -> (Service, SinkBinding) {
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        let owner = OwnerReference {
            api_version: serval_model::SOURCES_API_VERSION.into(),
            kind: ContainerSource::KIND.into(),
            name: name.clone(),
            uid: source.metadata.uid.clone(),
            controller: Some(true),
        };
        let service_name = container_source_service(name);
        let mut template = source.spec.template.clone();
        template.metadata.name = None;
        let annotations = &mut template.metadata.annotations;
        annotations.entry(serval_model::autoscaling::MIN_SCALE.into()).or_insert_with(|| "1".into());
        annotations.entry(READINESS.into()).or_insert_with(|| "started".into());
        let mut service = Service::new(namespace, &service_name, template);
        service.metadata.labels = source.metadata.labels.clone();
        service.metadata.owner_references = vec![owner.clone()];
        let mut binding = SinkBinding {
            api_version: serval_model::SOURCES_API_VERSION.into(),
            kind: SinkBinding::KIND.into(),
            metadata: serval_model::ObjectMeta {
                name: container_source_binding(name),
                namespace: namespace.clone(),
                owner_references: vec![owner],
                ..Default::default()
            },
            spec: SinkBindingSpec {
                subject: BindingSubject {
                    api_version: SERVING_API_VERSION.into(),
                    kind: Service::KIND.into(),
                    name: Some(service_name),
                    selector: None,
                },
                sink: source.spec.sink.clone(),
                ce_overrides: source.spec.ce_overrides.clone(),
                unknown: Default::default(),
            },
            status: Default::default(),
        };
        self.source_status(&mut binding);
        (service, binding)
    }

    /// Refuses a part's name held by an object the ContainerSource does not own.
    fn check_container_source_names(&self, source: &ContainerSource) -> Result<(), ControlError> {
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        let service: Option<Service> = self.store.get(Service::KIND, namespace, &container_source_service(name))?;
        let binding: Option<SinkBinding> =
            self.store.get(SinkBinding::KIND, namespace, &container_source_binding(name))?;
        let taken = [service.map(|s| (Service::KIND, s.metadata)), binding.map(|b| (SinkBinding::KIND, b.metadata))];
        for (kind, meta) in taken.into_iter().flatten() {
            if !meta.is_owned_by(ContainerSource::KIND, name) {
                return Err(ControlError::Conflict(format!(
                    "{} {namespace}/{} exists and is not owned by containersource {name}",
                    kind.to_lowercase(),
                    meta.name
                )));
            }
        }
        Ok(())
    }

    /// Writes a ContainerSource's SinkBinding, then its Service (stamped by the binding).
    /// Called under the write lock, after the source's commit and at every start.
    pub(super) async fn ensure_container_source(&self, source: &ContainerSource) -> Result<(), ControlError> {
        self.check_container_source_names(source)?;
        let (service, mut binding) = self.container_source_parts(source);
        let namespace = &source.metadata.namespace;
        let stored: Option<SinkBinding> = self.store.get(SinkBinding::KIND, namespace, &binding.metadata.name)?;
        if stored.as_ref().is_none_or(|s| s.spec != binding.spec) {
            let old = stored.as_ref().map(|s| (&s.metadata, true));
            carry_identity(SinkBinding::KIND, ApplyMode::CreateOrUpdate, &mut binding.metadata, old, &now_rfc3339())?;
            let op = WriteOp::put(SinkBinding::KIND, namespace, &binding.metadata.name.clone(), &binding)?;
            self.store.write(vec![op]).await?;
        }
        let existing: Option<Service> = self.store.get(Service::KIND, namespace, &service.metadata.name)?;
        let mut stamped = service.clone();
        self.stamp_sink_binding(&mut stamped);
        let unchanged = existing.as_ref().is_some_and(|e| {
            e.spec.template == stamped.spec.template && e.metadata.owner_references == stamped.metadata.owner_references
        });
        if !unchanged {
            self.write_service_locked(service, ApplyMode::CreateOrUpdate).await?;
        }
        Ok(())
    }

    /// Writes the parts of every ContainerSource (after a restart: a crash may have come
    /// between a source's commit and its parts'). Called under the write lock.
    pub(super) async fn ensure_container_sources(&self) {
        for source in self.store.list::<ContainerSource>(ContainerSource::KIND, None).unwrap_or_default() {
            if let Err(e) = self.ensure_container_source(&source).await {
                let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
                tracing::error!("containersource {namespace}/{name}: {e}");
            }
        }
    }

    /// A ContainerSource's Ready: its sink exists and its Service is ready.
    fn container_source_readiness(&self, source: &ContainerSource) -> Condition {
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        let service_name = container_source_service(name);
        let problem = match self.get_service(namespace, &service_name) {
            Ok(service) => Condition::find(&service.status.conditions, "Ready")
                .filter(|c| c.status != ConditionStatus::True)
                .map(|c| {
                    let reason = if c.reason.is_empty() { "ServiceNotReady".into() } else { c.reason.clone() };
                    (reason, format!("service {service_name}: {}", c.message))
                }),
            Err(_) => Some(("ServiceNotFound".into(), format!("service {namespace}/{service_name} does not exist"))),
        };
        self.source_readiness(&source.spec.sink, namespace, problem)
    }
}

fn with_ready<S: serde::Serialize>(mut source: Source<S>, ready: Condition) -> Value {
    Condition::set(&mut source.status.conditions, ready, &now_rfc3339());
    serde_json::to_value(source).unwrap_or_default()
}

/// A SinkBinding: its sink resolved when written; every Service it binds (before or after
/// the change) rolls out.
impl Reconciler<SinkBinding> for Controller {
    fn admit(&self, binding: &mut SinkBinding, _previous: Option<&SinkBinding>) -> Result<Vec<WriteOp>, ControlError> {
        self.source_status(binding);
        Ok(Vec::new())
    }

    fn changed<'a>(&'a self, change: Change<'a, SinkBinding>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(self.roll_out_bindings(&change.object().metadata.namespace))
    }

    fn view(&self, binding: SinkBinding) -> Value {
        let ready = self.binding_readiness(&binding);
        with_ready(binding, ready)
    }
}

/// A ContainerSource: its template checked as a Service's when written, its parts written
/// after its commit and removed with it.
impl Reconciler<ContainerSource> for Controller {
    fn admit(
        &self,
        source: &mut ContainerSource,
        _previous: Option<&ContainerSource>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        self.check_container_source_names(source)?;
        let (service, _) = self.container_source_parts(source);
        serval_model::validate_service(&service)
            .map_err(|e| ControlError::Invalid { kind: ContainerSource::KIND, source: e })?;
        self.source_status(source);
        Ok(Vec::new())
    }

    fn removed(&self, source: &ContainerSource) -> Vec<WriteOp> {
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        vec![WriteOp::delete(SinkBinding::KIND, namespace, &container_source_binding(name))]
    }

    fn changed<'a>(&'a self, change: Change<'a, ContainerSource>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            match change {
                Change::Deleted(source) => {
                    let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
                    self.delete_service_locked(namespace, &container_source_service(name)).await
                }
                Change::Created(source) | Change::Updated(source) => self.ensure_container_source(source).await,
            }
        })
    }

    fn view(&self, source: ContainerSource) -> Value {
        let ready = self.container_source_readiness(&source);
        with_ready(source, ready)
    }
}
