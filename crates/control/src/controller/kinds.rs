//! The built-in kinds as the API serves them: Brokers, Triggers, PingSources, Channels,
//! InMemoryChannels, Subscriptions, Sequences, Parallels and ConfigMaps through the generic store path with the controller as their reconciler;
//! Services, Secrets and the read-only Revisions, Configurations and Routes through their
//! own [`KindApi`]s.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use serval_model::{
    Broker, Channel, ConfigMap, InMemoryChannel, KindInfo, Parallel, PingSource, Resource, Revision, Secret, Sequence,
    Service, Subscription, Trigger,
};

use super::Controller;
use crate::ControlError;
use crate::kinds::{ApplyMode, KindApi, ReadQuery, Stored, Written};

/// Every kind serval serves, in the order `GET /api/v1` lists them.
pub fn builtin_kinds(controller: &Arc<Controller>) -> Vec<Arc<dyn KindApi>> {
    let context = controller.kind_context();
    vec![
        Arc::new(Services { info: Service::info(), controller: controller.clone() }),
        Arc::new(Revisions { info: Revision::info(), controller: controller.clone() }),
        Arc::new(ServiceViews {
            info: serval_model::configuration_info(),
            controller: controller.clone(),
            view: Service::configuration_view,
        }),
        Arc::new(ServiceViews {
            info: serval_model::route_info(),
            controller: controller.clone(),
            view: Service::route_view,
        }),
        Stored::<Broker, _>::new(&context, controller.clone()),
        Stored::<Trigger, _>::new(&context, controller.clone()),
        Stored::<PingSource, _>::new(&context, controller.clone()),
        Stored::<Channel, _>::new(&context, controller.clone()),
        Stored::<InMemoryChannel, _>::new(&context, controller.clone()),
        Stored::<Subscription, _>::new(&context, controller.clone()),
        Stored::<Sequence, _>::new(&context, controller.clone()),
        Stored::<Parallel, _>::new(&context, controller.clone()),
        Stored::<serval_model::FileSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::KafkaSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::ApiServerSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::SinkBinding, _>::new(&context, controller.clone()),
        Stored::<serval_model::ContainerSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::NatsSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::PostgresSource, _>::new(&context, controller.clone()),
        Stored::<serval_model::WebhookSource, _>::new(&context, controller.clone()),
        Arc::new(Secrets { info: Secret::info(), controller: controller.clone() }),
        Stored::<ConfigMap, _>::new(&context, controller.clone()),
        Stored::<serval_model::KeyValueStore, _>::new(&context, controller.clone()),
        Stored::<serval_model::Workflow, _>::new(&context, controller.clone()),
    ]
}

fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

struct Services {
    info: KindInfo,
    controller: Arc<Controller>,
}

impl KindApi for Services {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn get(&self, namespace: &str, name: &str, _query: &ReadQuery) -> Result<Value, ControlError> {
        Ok(to_json(self.controller.get_service(namespace, name)?))
    }

    fn list(&self, namespace: Option<&str>, _query: &ReadQuery) -> Result<Vec<Value>, ControlError> {
        Ok(self.controller.list_services(namespace)?.into_iter().map(to_json).collect())
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        name: Option<&'a str>,
        body: &'a [u8],
        mode: ApplyMode,
    ) -> BoxFuture<'a, Result<Written, ControlError>> {
        Box::pin(async move {
            let applied = self.controller.apply_service(namespace, name, body, mode).await?;
            Ok(Written { object: to_json(applied.service), created: applied.created, warnings: applied.warnings })
        })
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(self.controller.delete_service(namespace, name))
    }
}

/// Revisions: read only (a Service's template makes them); `?service=NAME` lists one
/// service's.
struct Revisions {
    info: KindInfo,
    controller: Arc<Controller>,
}

impl KindApi for Revisions {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn get(&self, namespace: &str, name: &str, _query: &ReadQuery) -> Result<Value, ControlError> {
        Ok(to_json(self.controller.get_revision(namespace, name)?))
    }

    fn list(&self, namespace: Option<&str>, query: &ReadQuery) -> Result<Vec<Value>, ControlError> {
        let service = query.get("service").map(String::as_str);
        Ok(self.controller.list_revisions(namespace, service)?.into_iter().map(to_json).collect())
    }
}

/// Knative's Configuration and Route of a Service: read-only views of it.
struct ServiceViews {
    info: KindInfo,
    controller: Arc<Controller>,
    view: fn(&Service) -> Value,
}

impl KindApi for ServiceViews {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn get(&self, namespace: &str, name: &str, _query: &ReadQuery) -> Result<Value, ControlError> {
        Ok((self.view)(&self.controller.get_service(namespace, name)?))
    }

    fn list(&self, namespace: Option<&str>, _query: &ReadQuery) -> Result<Vec<Value>, ControlError> {
        Ok(self.controller.list_services(namespace)?.iter().map(self.view).collect())
    }
}

/// Secrets: sealed when stored, redacted when read unless `?showSecrets=true`.
struct Secrets {
    info: KindInfo,
    controller: Arc<Controller>,
}

impl KindApi for Secrets {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn get(&self, namespace: &str, name: &str, query: &ReadQuery) -> Result<Value, ControlError> {
        let reveal = query.get("showSecrets").is_some_and(|v| v == "true");
        Ok(to_json(self.controller.get_secret(namespace, name, reveal)?))
    }

    fn list(&self, namespace: Option<&str>, _query: &ReadQuery) -> Result<Vec<Value>, ControlError> {
        Ok(self.controller.list_secrets(namespace)?.into_iter().map(to_json).collect())
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        name: Option<&'a str>,
        body: &'a [u8],
        mode: ApplyMode,
    ) -> BoxFuture<'a, Result<Written, ControlError>> {
        Box::pin(async move {
            let (secret, created) = self.controller.apply_secret(namespace, name, body, mode).await?;
            Ok(Written { object: to_json(secret), created, warnings: Vec::new() })
        })
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(self.controller.delete_secret(namespace, name))
    }
}
