//! Whether the destinations of triggers and ping sources exist: a `ref` to a missing
//! Service or Broker, or to a kind serval cannot deliver to, makes the referrer
//! `Ready=False` until it appears, and a deleted one makes it not ready again.

use serval_model::{Broker, Condition, ConditionStatus, Destination, PingSource, Resource, Service, Trigger};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::now_rfc3339;

/// Whether `conditions` already say what `wanted` says (its time aside).
fn holds(conditions: &[Condition], wanted: &Condition) -> bool {
    Condition::find(conditions, &wanted.kind)
        .is_some_and(|c| c.status == wanted.status && c.reason == wanted.reason && c.message == wanted.message)
}

impl Controller {
    /// `Ok` when `dest` can receive events now; else why not.
    fn check_destination(&self, dest: &Destination, namespace: &str) -> Result<(), String> {
        let Some(r) = &dest.reference else { return Ok(()) };
        let ns = r.namespace.as_deref().unwrap_or(namespace);
        let exists = match (r.api_version.as_str(), r.kind.as_str()) {
            ("" | serval_model::EVENTING_API_VERSION, "Broker") => {
                self.store.get::<Broker>(Broker::KIND, ns, &r.name).map(|b| b.is_some())
            }
            // A Kubernetes `v1` Service names the workload behind it; serval's Services are both.
            ("" | serval_model::SERVING_API_VERSION | "v1", "Service") => {
                self.store.get::<Service>(Service::KIND, ns, &r.name).map(|s| s.is_some())
            }
            (api, kind) => {
                return Err(format!(
                    "{kind} ({api}) is not a kind serval delivers to; use a Service, a Broker or a uri"
                ));
            }
        };
        match exists {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{} {ns}/{} does not exist", r.kind.to_lowercase(), r.name)),
            Err(e) => Err(format!("cannot read {} {ns}/{}: {e}", r.kind.to_lowercase(), r.name)),
        }
    }

    /// A trigger's Ready: its broker and its subscriber exist.
    pub(super) fn trigger_readiness(&self, trigger: &Trigger) -> Condition {
        let namespace = &trigger.metadata.namespace;
        let broker = self.store.get::<Broker>(Broker::KIND, namespace, &trigger.spec.broker).ok().flatten();
        if broker.is_none() {
            let message = format!("broker {:?} does not exist", trigger.spec.broker);
            return Condition::new("Ready", ConditionStatus::False, "BrokerDoesNotExist", message);
        }
        match self.check_destination(&trigger.spec.subscriber, namespace) {
            Ok(()) => Condition::new("Ready", ConditionStatus::True, "", ""),
            Err(why) => Condition::new("Ready", ConditionStatus::False, "SubscriberNotFound", why),
        }
    }

    /// A ping source's Ready: its sink exists.
    pub(super) fn ping_source_readiness(&self, source: &PingSource) -> Condition {
        match self.check_destination(&source.spec.sink, &source.metadata.namespace) {
            Ok(()) => Condition::new("Ready", ConditionStatus::True, "", ""),
            Err(why) => Condition::new("Ready", ConditionStatus::False, "SinkNotFound", why),
        }
    }

    /// Writes the Ready condition of every trigger and ping source (of `namespace`, or all)
    /// whose destinations appeared or went away. Called under the write lock.
    pub(super) async fn refresh_referrers(&self, namespace: Option<&str>) -> Result<(), ControlError> {
        let now = now_rfc3339();
        let mut ops = Vec::new();
        for mut trigger in self.store.list::<Trigger>(Trigger::KIND, namespace)? {
            let ready = self.trigger_readiness(&trigger);
            if !holds(&trigger.status.conditions, &ready) {
                Condition::set(&mut trigger.status.conditions, ready, &now);
                ops.push(WriteOp::put(Trigger::KIND, &trigger.metadata.namespace, &trigger.metadata.name, &trigger)?);
            }
        }
        for mut source in self.store.list::<PingSource>(PingSource::KIND, namespace)? {
            let ready = self.ping_source_readiness(&source);
            if !holds(&source.status.conditions, &ready) {
                Condition::set(&mut source.status.conditions, ready, &now);
                ops.push(WriteOp::put(PingSource::KIND, &source.metadata.namespace, &source.metadata.name, &source)?);
            }
        }
        if !ops.is_empty() {
            self.store.write(ops).await?;
        }
        Ok(())
    }
}
