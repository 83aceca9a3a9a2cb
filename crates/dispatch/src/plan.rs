//! What a dispatcher runs: a [`Plan`] made from a Trigger (a broker's log, a filter, a
//! subscriber, replies back into the broker) or a Subscription (a channel's log, a
//! subscriber, replies to its `reply`), with every destination resolved once
//! ([`resolve`]): serval's own brokers, channels and flows are logs appended to in process,
//! Services and URLs are HTTP targets.

use std::collections::HashSet;
use std::sync::Arc;

use serval_eventing::{CompiledFilter, DeliverySpec, RetryPolicy, SubscriptionsApiFilter, TriggerFilter};
use serval_model::{Addressee, Broker, Channel, Destination, InMemoryChannel, Resource, Subscription, Trigger};
use serval_store::{ResourceStoreExt, Storage};

use crate::DispatchError;
use crate::delivery::DeliveryUrl;

/// A durable event log of serval's: a broker's or a channel's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogRef {
    Broker { namespace: String, name: String },
    Channel { namespace: String, name: String },
}

impl LogRef {
    /// Its id in the store.
    pub fn id(&self) -> String {
        match self {
            LogRef::Broker { namespace, name } => broker_log(namespace, name),
            LogRef::Channel { namespace, name } => channel_log(namespace, name),
        }
    }

    /// Its ingress URL on the gateway.
    pub fn url(&self, gateway: &str) -> String {
        match self {
            LogRef::Broker { namespace, name } => format!("{gateway}/b/{namespace}/{name}"),
            LogRef::Channel { namespace, name } => format!("{gateway}/c/{namespace}/{name}"),
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            LogRef::Broker { namespace, .. } | LogRef::Channel { namespace, .. } => namespace,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            LogRef::Broker { name, .. } | LogRef::Channel { name, .. } => name,
        }
    }

    /// "broker ns/name" or "channel ns/name".
    pub fn describe(&self) -> String {
        let kind = if matches!(self, LogRef::Broker { .. }) { "broker" } else { "channel" };
        format!("{kind} {}/{}", self.namespace(), self.name())
    }
}

/// The ids of the logs that exist: every broker's, and every channel's (a Channel or an
/// InMemoryChannel).
pub fn existing_logs(store: &dyn Storage) -> Result<HashSet<String>, DispatchError> {
    let mut logs = HashSet::new();
    for broker in store.list::<Broker>(Broker::KIND, None)? {
        logs.insert(broker_log(&broker.metadata.namespace, &broker.metadata.name));
    }
    for kind in [Channel::KIND, InMemoryChannel::KIND] {
        for channel in store.list::<Channel>(kind, None)? {
            logs.insert(channel_log(&channel.metadata.namespace, &channel.metadata.name));
        }
    }
    Ok(logs)
}

/// The id of a broker's event log in the store.
pub fn broker_log(namespace: &str, broker: &str) -> String {
    format!("brokers/{namespace}/{broker}")
}

/// The id of a channel's event log in the store.
pub fn channel_log(namespace: &str, channel: &str) -> String {
    format!("channels/{namespace}/{channel}")
}

/// The id of a trigger's cursor (how far it has delivered its broker's log) in the store.
pub fn trigger_consumer(namespace: &str, trigger: &str) -> String {
    format!("triggers/{namespace}/{trigger}")
}

/// The id of a subscription's cursor (how far it has delivered its channel's log).
pub fn subscription_consumer(namespace: &str, subscription: &str) -> String {
    format!("subscriptions/{namespace}/{subscription}")
}

/// Where a delivery goes.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// Appended to one of serval's logs in process (one durable commit).
    Log(LogRef),
    /// POSTed.
    Http(DeliveryUrl),
}

/// A destination resolved: its URL (for status) and where deliveries to it go.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub url: String,
    pub(crate) target: Target,
}

/// Resolves a destination seen from `namespace`: a Broker, Channel, Sequence or Parallel to
/// its log (a flow's first channel), a Service to its path route on the gateway (`gateway`
/// is `http://host:port`), a Workflow to its address there (`/w/<ns>/<name>`), a URI as it
/// is. `Err` says why it cannot be delivered to.
pub fn resolve(dest: &Destination, namespace: &str, gateway: &str) -> Result<Resolved, String> {
    let http = |url: String| {
        let target = Target::Http(DeliveryUrl::parse(&url, gateway).map_err(|e| format!("{url:?}: {e}"))?);
        Ok(Resolved { url, target })
    };
    let log = match serval_model::classify(dest, namespace)? {
        Addressee::Service { namespace, name, path } => return http(format!("{gateway}/f/{namespace}/{name}{path}")),
        Addressee::Url(url) => return http(url),
        Addressee::Workflow { namespace, name } => return http(format!("{gateway}/w/{namespace}/{name}")),
        Addressee::Broker { namespace, name } => LogRef::Broker { namespace, name },
        channel_or_flow => match channel_or_flow.channel() {
            Some((namespace, name)) => LogRef::Channel { namespace: namespace.to_string(), name },
            None => return Err(format!("{channel_or_flow:?} has no event log")),
        },
    };
    Ok(Resolved { url: log.url(gateway), target: Target::Log(log) })
}

/// What happens to a subscriber's reply.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// Back into the trigger's broker, one hop closer to its `knativebrokerttl`.
    IntoBroker(LogRef),
    /// To the subscription's reply destination.
    To(Box<Resolved>),
    /// Dropped (a subscription without a reply).
    Drop,
}

/// A trigger or subscription made ready to deliver: the log it reads, its cursor,
/// compiled filter, resolved destinations, retry policy.
#[derive(Clone)]
pub struct Plan {
    /// `Trigger` or `Subscription`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The log it delivers from.
    pub source: LogRef,
    /// The id of its cursor in the store.
    pub consumer: String,
    pub(crate) filter: Arc<CompiledFilter>,
    /// Its subscriber; `Err` says why it cannot be delivered to (the plan is stored but
    /// does not run); `None`: a subscription that only forwards to its reply.
    pub subscriber: Option<Result<Resolved, String>>,
    pub(crate) reply: Reply,
    /// The reply destination's URL, for status.
    pub reply_url: Option<String>,
    pub(crate) dead_letter: Option<Resolved>,
    pub policy: RetryPolicy,
    pub structured: bool,
    /// Sends `Prefer: reply` (channel deliveries).
    pub prefer_reply: bool,
    /// Events in flight at once.
    pub concurrency: usize,
}

impl Plan {
    /// The subscriber's URL, when it resolves.
    pub fn subscriber_url(&self) -> Option<&str> {
        match &self.subscriber {
            Some(Ok(r)) => Some(&r.url),
            _ => None,
        }
    }

    /// The dead-letter sink's URL.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter.as_ref().map(|r| r.url.as_str())
    }

    /// Whether every destination resolves (only such plans run).
    pub fn runnable(&self) -> bool {
        !matches!(self.subscriber, Some(Err(_)))
    }
}

fn parse_delivery(value: Option<&serde_json::Value>, kind: &'static str) -> Result<DeliverySpec, DispatchError> {
    Ok(value
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| DispatchError::invalid_field(kind, "spec.delivery", e.to_string()))?
        .unwrap_or_default())
}

/// The retry policy and dead-letter sink of a delivery spec.
fn delivery_parts(
    delivery: &DeliverySpec,
    kind: &'static str,
    namespace: &str,
    gateway: &str,
) -> Result<(RetryPolicy, Option<Resolved>), DispatchError> {
    let policy = RetryPolicy::from_spec(delivery)
        .map_err(|e| DispatchError::invalid_field(kind, "spec.delivery", e.to_string()))?;
    let dead_letter = delivery
        .dead_letter_sink
        .as_ref()
        .map(|d| resolve(d, namespace, gateway))
        .transpose()
        .map_err(|e| DispatchError::invalid_field(kind, "spec.delivery.deadLetterSink", e))?;
    Ok((policy, dead_letter))
}

/// Validates a trigger's filters and delivery and resolves where its events go.
pub fn trigger_plan(
    trigger: &Trigger,
    broker_delivery: Option<&serde_json::Value>,
    gateway: &str,
) -> Result<Plan, DispatchError> {
    let invalid = |field: &str, message: String| DispatchError::invalid_field("Trigger", field, message);
    let filter: Option<TriggerFilter> = trigger
        .spec
        .filter
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| invalid("spec.filter", e.to_string()))?;
    let filters: Vec<SubscriptionsApiFilter> = trigger
        .spec
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::from_value(f.clone()).map_err(|e| invalid(&format!("spec.filters[{i}]"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let compiled =
        serval_eventing::compile(filter.as_ref(), &filters).map_err(|e| invalid("spec.filters", e.to_string()))?;
    let delivery = parse_delivery(trigger.spec.delivery.as_ref().or(broker_delivery), "Trigger")?;
    let namespace = trigger.metadata.namespace.clone();
    let (policy, dead_letter) = delivery_parts(&delivery, "Trigger", &namespace, gateway)?;
    let concurrency = serval_model::delivery_concurrency(trigger).map_err(|e| invalid(&e.field, e.message))?;
    let broker = LogRef::Broker { namespace: namespace.clone(), name: trigger.spec.broker.clone() };
    Ok(Plan {
        kind: Trigger::KIND,
        consumer: trigger_consumer(&namespace, &trigger.metadata.name),
        name: trigger.metadata.name.clone(),
        source: broker.clone(),
        filter: Arc::new(compiled),
        subscriber: Some(resolve(&trigger.spec.subscriber, &namespace, gateway)),
        reply: Reply::IntoBroker(broker),
        reply_url: None,
        dead_letter,
        policy,
        structured: delivery.format.as_deref() == Some("json"),
        prefer_reply: false,
        concurrency: concurrency as usize,
        namespace,
    })
}

/// Validates a subscription's delivery and resolves its subscriber, reply and dead-letter
/// sink (`channel_delivery`: its channel's default delivery).
pub fn subscription_plan(
    subscription: &Subscription,
    channel_delivery: Option<&serde_json::Value>,
    gateway: &str,
) -> Result<Plan, DispatchError> {
    let spec = &subscription.spec;
    let namespace = subscription.metadata.namespace.clone();
    let delivery = parse_delivery(spec.delivery.as_ref().or(channel_delivery), "Subscription")?;
    let (policy, dead_letter) = delivery_parts(&delivery, "Subscription", &namespace, gateway)?;
    let subscriber = spec.subscriber.as_ref().map(|d| resolve(d, &namespace, gateway));
    let (reply, reply_url) = match &spec.reply {
        None => (Reply::Drop, None),
        Some(d) => match resolve(d, &namespace, gateway) {
            Ok(resolved) => (Reply::To(Box::new(resolved.clone())), Some(resolved.url)),
            // A reply that cannot be resolved: the plan does not run (see `runnable`).
            Err(why) => return Ok(unrunnable(subscription, namespace, why, policy)),
        },
    };
    Ok(Plan {
        kind: Subscription::KIND,
        consumer: subscription_consumer(&namespace, &subscription.metadata.name),
        name: subscription.metadata.name.clone(),
        source: LogRef::Channel { namespace: namespace.clone(), name: spec.channel.name.clone() },
        filter: Arc::new(CompiledFilter::match_all()),
        subscriber,
        reply,
        reply_url,
        dead_letter,
        policy,
        structured: delivery.format.as_deref() == Some("json"),
        prefer_reply: true,
        concurrency: serval_model::DEFAULT_DELIVERY_CONCURRENCY as usize,
        namespace,
    })
}

/// A subscription plan that does not run, for why.
fn unrunnable(subscription: &Subscription, namespace: String, why: String, policy: RetryPolicy) -> Plan {
    Plan {
        kind: Subscription::KIND,
        consumer: subscription_consumer(&namespace, &subscription.metadata.name),
        name: subscription.metadata.name.clone(),
        source: LogRef::Channel { namespace: namespace.clone(), name: subscription.spec.channel.name.clone() },
        filter: Arc::new(CompiledFilter::match_all()),
        subscriber: Some(Err(why)),
        reply: Reply::Drop,
        reply_url: None,
        dead_letter: None,
        policy,
        structured: false,
        prefer_reply: true,
        concurrency: 1,
        namespace,
    }
}

/// The stored triggers and subscriptions whose log exists and whose destinations resolve,
/// as plans, with a fingerprint of what each was built from.
pub fn plans(store: &dyn Storage, gateway: &str) -> Vec<(Plan, String)> {
    let mut plans = Vec::new();
    let triggers: Vec<Trigger> = store.list(Trigger::KIND, None).unwrap_or_default();
    for t in &triggers {
        let broker: Option<Broker> = store.get(Broker::KIND, &t.metadata.namespace, &t.spec.broker).ok().flatten();
        let Some(broker) = broker else { continue };
        let Ok(plan) = trigger_plan(t, broker.spec.delivery.as_ref(), gateway) else { continue };
        let fingerprint = format!(
            "{}|{}|{}",
            serde_json::to_string(&t.spec).unwrap_or_default(),
            serde_json::to_string(&broker.spec.delivery).unwrap_or_default(),
            plan.concurrency
        );
        plans.push((plan, fingerprint));
    }
    let subscriptions: Vec<Subscription> = store.list(Subscription::KIND, None).unwrap_or_default();
    for s in &subscriptions {
        let Some(channel) = stored_channel(store, &s.metadata.namespace, &s.spec.channel.name) else { continue };
        let Ok(plan) = subscription_plan(s, channel.spec.delivery.as_ref(), gateway) else { continue };
        let fingerprint = format!(
            "{}|{}",
            serde_json::to_string(&s.spec).unwrap_or_default(),
            serde_json::to_string(&channel.spec.delivery).unwrap_or_default(),
        );
        plans.push((plan, fingerprint));
    }
    plans.retain(|(plan, _)| plan.runnable());
    plans
}

/// The channel of that name: a Channel, else an InMemoryChannel.
pub fn stored_channel(store: &dyn Storage, namespace: &str, name: &str) -> Option<Channel> {
    let channel: Option<Channel> = store.get(Channel::KIND, namespace, name).ok().flatten();
    channel.or_else(|| {
        let imc: Option<InMemoryChannel> = store.get(InMemoryChannel::KIND, namespace, name).ok().flatten();
        imc.map(|c| c.0)
    })
}
