//! Brokers, Triggers and PingSources: what each adds to the generic store path
//! ([`crate::kinds::Stored`]) — their status, the writes that go with them (a broker's log,
//! a trigger's cursor), and the dispatchers and sources kept in step after every change.

use futures_util::future::BoxFuture;
use serval_model::{Broker, Condition, ConditionStatus, PingSource, Resource, Trigger};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{Change, Reconciler, now_rfc3339};
use serval_dispatch::delivery::{broker_log, trigger_consumer};

impl Controller {
    fn broker_url(&self, namespace: &str, name: &str) -> String {
        format!("http://{}/b/{namespace}/{name}", self.addrs.gateway)
    }

    pub(super) fn gateway_url(&self) -> String {
        format!("http://{}", self.addrs.gateway)
    }

    /// Accepted events of a broker after `after` (a log position), oldest first.
    pub fn broker_events(
        &self,
        namespace: &str,
        name: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<serval_store::StoredEvent>, ControlError> {
        if self.store.get::<Broker>(Broker::KIND, namespace, name)?.is_none() {
            return Err(crate::kinds::not_found(Broker::KIND, namespace, name));
        }
        Ok(self.store.events_after(&broker_log(namespace, name), after, limit)?)
    }

    /// Makes the trigger dispatchers match the stored triggers.
    pub(super) fn sync_dispatchers(&self) {
        use serval_dispatch::delivery::{existing_logs, plans};
        let logs = existing_logs(self.store.as_ref()).unwrap_or_else(|e| {
            tracing::error!("listing the brokers and channels: {e}");
            Default::default()
        });
        self.dispatchers.sync(plans(self.store.as_ref(), &self.gateway_url()), logs);
    }

    /// Stops every source.
    pub fn stop_sources(&self) {
        self.sources.stop_all();
    }
}

/// A Broker is ready as soon as it is stored (its log is the store's).
impl Reconciler<Broker> for Controller {
    fn admit(&self, broker: &mut Broker, previous: Option<&Broker>) -> Result<Vec<WriteOp>, ControlError> {
        let (namespace, name) = (&broker.metadata.namespace, &broker.metadata.name);
        broker.status = previous.map(|b| b.status.clone()).unwrap_or_default();
        broker.status.address = Some(serval_model::Addressable { url: self.broker_url(namespace, name) });
        Condition::set(
            &mut broker.status.conditions,
            Condition::new("Ready", ConditionStatus::True, "", ""),
            &now_rfc3339(),
        );
        Ok(Vec::new())
    }

    /// Its event log goes with it.
    fn removed(&self, broker: &Broker) -> Vec<WriteOp> {
        vec![WriteOp::delete_events(&broker_log(&broker.metadata.namespace, &broker.metadata.name))]
    }

    fn changed<'a>(&'a self, change: Change<'a, Broker>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            if !matches!(change, Change::Updated(_)) {
                self.refresh_referrers(Some(&change.object().metadata.namespace)).await?;
            }
            self.sync_dispatchers();
            Ok(())
        })
    }
}

/// A Trigger's filters and delivery are compiled when it is written (bad ones are a 422
/// naming the field); a new trigger delivers the events accepted from then on.
impl Reconciler<Trigger> for Controller {
    fn admit(&self, trigger: &mut Trigger, previous: Option<&Trigger>) -> Result<Vec<WriteOp>, ControlError> {
        let namespace = trigger.metadata.namespace.clone();
        let broker: Option<Broker> = self.store.get(Broker::KIND, &namespace, &trigger.spec.broker)?;
        let plan = serval_dispatch::delivery::trigger_plan(
            trigger,
            broker.as_ref().and_then(|b| b.spec.delivery.as_ref()),
            &self.gateway_url(),
        )?;
        trigger.status = previous.map(|o| o.status.clone()).unwrap_or_default();
        trigger.status.subscriber_uri = plan.subscriber_url().map(str::to_string);
        let ready = self.trigger_readiness(trigger);
        Condition::set(&mut trigger.status.conditions, ready, &now_rfc3339());
        Ok(match previous {
            None => {
                let consumer = trigger_consumer(&namespace, &trigger.metadata.name);
                vec![WriteOp::set_cursor(&consumer, Some(self.store.last_event_seq()?))]
            }
            Some(_) => Vec::new(),
        })
    }

    /// Its cursor goes with it.
    fn removed(&self, trigger: &Trigger) -> Vec<WriteOp> {
        vec![WriteOp::set_cursor(&trigger_consumer(&trigger.metadata.namespace, &trigger.metadata.name), None)]
    }

    fn changed<'a>(&'a self, _change: Change<'a, Trigger>) -> BoxFuture<'a, Result<(), ControlError>> {
        self.sync_dispatchers();
        Box::pin(async { Ok(()) })
    }

    /// With its live delivery counts (`status.delivery`).
    fn view(&self, trigger: Trigger) -> serde_json::Value {
        let (namespace, name) = (&trigger.metadata.namespace, &trigger.metadata.name);
        let status =
            self.dispatchers.status(&trigger_consumer(namespace, name), &broker_log(namespace, &trigger.spec.broker));
        let mut view = serde_json::to_value(trigger).unwrap_or_default();
        view["status"]["delivery"] = serde_json::to_value(status).unwrap_or_default();
        view
    }
}

/// A PingSource's schedule and time zone are checked when it is written (a 422 otherwise).
impl Reconciler<PingSource> for Controller {
    fn admit(&self, source: &mut PingSource, _previous: Option<&PingSource>) -> Result<Vec<WriteOp>, ControlError> {
        let (_, sink) = serval_dispatch::sources::ping::ping_plan(source, &self.gateway_url())?;
        source.status.subscriber_uri = sink.ok().map(|s| s.url);
        let ready = self.ping_source_readiness(source);
        Condition::set(&mut source.status.conditions, ready, &now_rfc3339());
        Ok(Vec::new())
    }

    fn changed<'a>(&'a self, _change: Change<'a, PingSource>) -> BoxFuture<'a, Result<(), ControlError>> {
        self.sync_sources();
        Box::pin(async { Ok(()) })
    }
}
