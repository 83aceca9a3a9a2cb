//! Whether the destinations of triggers, ping sources, subscriptions and flows exist: a
//! `ref` to a missing Service, Broker, Channel or flow, or to a kind serval cannot deliver
//! to, makes the referrer `Ready=False` until it appears, and a deleted one makes it not
//! ready again.

use serval_model::{
    Broker, Condition, ConditionStatus, Destination, Parallel, PingSource, Resource, Sequence, Subscription, Trigger,
};
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
    /// `Ok` when `dest` can receive events now (what it names exists; a URL always can);
    /// else why not.
    pub(super) fn check_destination(&self, dest: &Destination, namespace: &str) -> Result<(), String> {
        let addressee = serval_model::classify(dest, namespace)?;
        let Some((kind, ns, name)) = addressee.object() else { return Ok(()) };
        let exists = match kind {
            // A Channel and an InMemoryChannel of one name are one channel.
            "Channel" | "InMemoryChannel" => {
                Ok(serval_dispatch::plan::stored_channel(self.store.as_ref(), ns, name).is_some())
            }
            kind => self.store.get_document(kind, ns, name).map(|d| d.is_some()),
        };
        match exists {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{kind} {ns}/{name} does not exist")),
            Err(e) => Err(format!("cannot read {kind} {ns}/{name}: {e}")),
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
        for mut subscription in self.store.list::<Subscription>(Subscription::KIND, namespace)? {
            let ready = self.subscription_readiness(&subscription);
            if !holds(&subscription.status.conditions, &ready) {
                Condition::set(&mut subscription.status.conditions, ready, &now);
                let (ns, name) = (&subscription.metadata.namespace, &subscription.metadata.name);
                ops.push(WriteOp::put(Subscription::KIND, ns, name, &subscription)?);
            }
        }
        for mut sequence in self.store.list::<Sequence>(Sequence::KIND, namespace)? {
            let ready = self.sequence_readiness(&sequence);
            if !holds(&sequence.status.conditions, &ready) {
                Condition::set(&mut sequence.status.conditions, ready, &now);
                let (ns, name) = (&sequence.metadata.namespace, &sequence.metadata.name);
                ops.push(WriteOp::put(Sequence::KIND, ns, name, &sequence)?);
            }
        }
        for mut parallel in self.store.list::<Parallel>(Parallel::KIND, namespace)? {
            let ready = self.parallel_readiness(&parallel);
            if !holds(&parallel.status.conditions, &ready) {
                Condition::set(&mut parallel.status.conditions, ready, &now);
                let (ns, name) = (&parallel.metadata.namespace, &parallel.metadata.name);
                ops.push(WriteOp::put(Parallel::KIND, ns, name, &parallel)?);
            }
        }
        if !ops.is_empty() {
            self.store.write(ops).await?;
        }
        Ok(())
    }
}
