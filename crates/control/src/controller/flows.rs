//! Channels, InMemoryChannels, Subscriptions, Sequences and Parallels: what each adds to
//! the generic store path ([`crate::kinds::Stored`]).
//!
//! A channel is a durable log (`channels/<ns>/<name>`) with an ingress; a subscription is a
//! dispatcher over its channel's log, like a trigger over its broker's. A flow is compiled
//! into channels and subscriptions it owns (Knative's names), written in the same commit as
//! the flow, with their own admission (status, cursors), and removed with it.

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use serval_dispatch::delivery::{channel_log, subscription_consumer};
use serval_dispatch::plan::stored_channel;
use serval_model::{
    Channel, ChannelTemplate, Condition, ConditionStatus, Destination, FLOWS_API_VERSION, InMemoryChannel, KReference,
    MESSAGING_API_VERSION, ObjectMeta, OwnerReference, Parallel, Resource, Sequence, SubscriberSpec, SubscriberStatus,
    Subscription, SubscriptionSpec,
};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{ApplyMode, Change, Reconciler, carry_identity, now_rfc3339};

/// What a channel's Ready says: it is there, and durable whatever its kind.
const DURABLE: &str =
    "events are stored durably before they are accepted (in serval every channel is durable, InMemoryChannel too)";

impl Controller {
    /// A channel's status: its address and readiness.
    fn admit_channel(&self, channel: &mut Channel, previous: Option<&Channel>) {
        let (namespace, name) = (&channel.metadata.namespace, &channel.metadata.name);
        // The server shows the channel's subscribers (see `channel_view`); a user's are not kept.
        channel.spec.subscribers.clear();
        channel.status = previous.map(|c| c.status.clone()).unwrap_or_default();
        channel.status.subscribers.clear();
        channel.status.address =
            Some(serval_model::Addressable { url: format!("http://{}/c/{namespace}/{name}", self.addrs.gateway) });
        Condition::set(
            &mut channel.status.conditions,
            Condition::new("Ready", ConditionStatus::True, "Durable", DURABLE),
            &now_rfc3339(),
        );
    }

    /// A channel with its subscriptions (`spec.subscribers`, `status.subscribers`), as
    /// they are now.
    fn channel_view(&self, mut channel: Channel) -> Value {
        let (namespace, name) = (&channel.metadata.namespace, &channel.metadata.name);
        let subscriptions: Vec<Subscription> = self.store.list(Subscription::KIND, Some(namespace)).unwrap_or_default();
        for s in subscriptions.iter().filter(|s| &s.spec.channel.name == name) {
            let physical = s.status.physical_subscription.clone().unwrap_or_default();
            channel.spec.subscribers.push(SubscriberSpec {
                uid: s.metadata.uid.clone(),
                generation: s.metadata.generation,
                subscriber_uri: physical.subscriber_uri,
                reply_uri: physical.reply_uri,
                delivery: s.spec.delivery.clone(),
            });
            let ready = Condition::find(&s.status.conditions, "Ready");
            channel.status.subscribers.push(SubscriberStatus {
                uid: s.metadata.uid.clone(),
                observed_generation: s.metadata.generation,
                ready: ready.map_or("Unknown".into(), |c| format!("{:?}", c.status)),
                message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            });
        }
        serde_json::to_value(channel).unwrap_or_default()
    }

    /// A deleted channel's log goes with it, unless the other kind of channel of that name
    /// (which shares it) is still there.
    fn channel_removed(&self, channel: &Channel) -> Vec<WriteOp> {
        let (namespace, name) = (&channel.metadata.namespace, &channel.metadata.name);
        let other = if channel.kind == InMemoryChannel::KIND { Channel::KIND } else { InMemoryChannel::KIND };
        match self.store.get_document(other, namespace, name) {
            Ok(None) => vec![WriteOp::delete_events(&channel_log(namespace, name))],
            _ => Vec::new(),
        }
    }

    /// A subscription's Ready: its channel, subscriber and reply exist.
    pub(super) fn subscription_readiness(&self, subscription: &Subscription) -> Condition {
        let namespace = &subscription.metadata.namespace;
        let channel = &subscription.spec.channel.name;
        if stored_channel(self.store.as_ref(), namespace, channel).is_none() {
            let message = format!("channel {namespace}/{channel} does not exist");
            return Condition::new("Ready", ConditionStatus::False, "ChannelNotFound", message);
        }
        let parts =
            [("SubscriberNotFound", &subscription.spec.subscriber), ("ReplyNotFound", &subscription.spec.reply)];
        for (reason, dest) in parts {
            if let Some(dest) = dest
                && let Err(why) = self.check_destination(dest, namespace)
            {
                return Condition::new("Ready", ConditionStatus::False, reason, why);
            }
        }
        Condition::new("Ready", ConditionStatus::True, "", "")
    }

    /// A flow's Ready from its parts' destinations (`(what, destination)`): the first that
    /// cannot take events is the reason.
    fn flow_readiness(&self, namespace: &str, parts: Vec<(String, &Destination)>) -> Condition {
        for (what, dest) in parts {
            if let Err(why) = self.check_destination(dest, namespace) {
                return Condition::new(
                    "Ready",
                    ConditionStatus::False,
                    "DestinationNotReady",
                    format!("{what}: {why}"),
                );
            }
        }
        Condition::new("Ready", ConditionStatus::True, "", "")
    }

    pub(super) fn sequence_readiness(&self, sequence: &Sequence) -> Condition {
        self.flow_readiness(&sequence.metadata.namespace, sequence.destinations())
    }

    pub(super) fn parallel_readiness(&self, parallel: &Parallel) -> Condition {
        self.flow_readiness(&parallel.metadata.namespace, parallel.destinations())
    }

    /// The writes that make a flow's channels and subscriptions what `parts` says (created,
    /// updated with their identity carried over and their own admission, or removed when
    /// the flow no longer has them). A part's name taken by an object the flow does not own
    /// is a conflict.
    fn write_flow_parts(
        &self,
        owner: &OwnerReference,
        namespace: &str,
        parts: FlowParts,
    ) -> Result<Vec<WriteOp>, ControlError> {
        let now = now_rfc3339();
        let mut ops = Vec::new();
        let claim = |kind: &str, meta: &mut ObjectMeta, old: Option<&ObjectMeta>, spec_changed: bool| {
            if let Some(old) = old
                && !old.is_owned_by(&owner.kind, &owner.name)
            {
                return Err(ControlError::Conflict(format!(
                    "{} {namespace}/{} exists and is not part of {} {}; delete or rename it",
                    kind.to_lowercase(),
                    meta.name,
                    owner.kind.to_lowercase(),
                    owner.name
                )));
            }
            meta.namespace = namespace.to_string();
            meta.owner_references = vec![owner.clone()];
            carry_identity(kind, ApplyMode::CreateOrUpdate, meta, old.map(|o| (o, spec_changed)), &now)
        };
        let kind = parts.channel_kind;
        for mut channel in parts.channels {
            let previous: Option<Channel> = self.store.get(kind, namespace, &channel.metadata.name)?;
            let changed = previous.as_ref().is_none_or(|p| p.spec != channel.spec);
            claim(kind, &mut channel.metadata, previous.as_ref().map(|p| &p.metadata), changed)?;
            self.admit_channel(&mut channel, previous.as_ref());
            ops.push(WriteOp::put(kind, namespace, &channel.metadata.name, &channel)?);
        }
        for mut subscription in parts.subscriptions {
            let previous: Option<Subscription> =
                self.store.get(Subscription::KIND, namespace, &subscription.metadata.name)?;
            let changed = previous.as_ref().is_none_or(|p| p.spec != subscription.spec);
            claim(Subscription::KIND, &mut subscription.metadata, previous.as_ref().map(|p| &p.metadata), changed)?;
            match &previous {
                // A subscription's channel is immutable: a new one replaces it.
                Some(p) if p.spec.channel != subscription.spec.channel => {
                    ops.extend(<Controller as Reconciler<Subscription>>::removed(self, p));
                    ops.extend(self.admit_subscription(&mut subscription, None)?);
                }
                _ => ops.extend(self.admit_subscription(&mut subscription, previous.as_ref())?),
            }
            ops.push(WriteOp::put(Subscription::KIND, namespace, &subscription.metadata.name, &subscription)?);
        }
        ops.extend(self.remove_flow_parts(owner, namespace, &parts.keep)?);
        Ok(ops)
    }

    /// The writes that remove a flow's parts except those named in `keep` (`(kind, name)`).
    fn remove_flow_parts(
        &self,
        owner: &OwnerReference,
        namespace: &str,
        keep: &[(&str, String)],
    ) -> Result<Vec<WriteOp>, ControlError> {
        let kept = |kind: &str, meta: &ObjectMeta| {
            !meta.is_owned_by(&owner.kind, &owner.name) || keep.iter().any(|(k, n)| *k == kind && *n == meta.name)
        };
        let mut ops = Vec::new();
        for kind in [Channel::KIND, InMemoryChannel::KIND] {
            for channel in self.store.list::<Channel>(kind, Some(namespace))? {
                if !kept(kind, &channel.metadata) {
                    ops.push(WriteOp::delete(kind, namespace, &channel.metadata.name));
                    ops.extend(self.channel_removed(&channel));
                }
            }
        }
        for subscription in self.store.list::<Subscription>(Subscription::KIND, Some(namespace))? {
            if !kept(Subscription::KIND, &subscription.metadata) {
                ops.push(WriteOp::delete(Subscription::KIND, namespace, &subscription.metadata.name));
                ops.extend(<Controller as Reconciler<Subscription>>::removed(self, &subscription));
            }
        }
        Ok(ops)
    }

    /// A subscription's status (resolved destinations, readiness) and, for a new one, its
    /// cursor at the end of the log: it delivers what its channel accepts from now on.
    fn admit_subscription(
        &self,
        subscription: &mut Subscription,
        previous: Option<&Subscription>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        let namespace = subscription.metadata.namespace.clone();
        let channel = stored_channel(self.store.as_ref(), &namespace, &subscription.spec.channel.name);
        let plan = serval_dispatch::delivery::subscription_plan(
            subscription,
            channel.as_ref().and_then(|c| c.spec.delivery.as_ref()),
            &self.gateway_url(),
        )?;
        subscription.status = previous.map(|p| p.status.clone()).unwrap_or_default();
        subscription.status.physical_subscription = Some(serval_model::PhysicalSubscription {
            subscriber_uri: plan.subscriber_url().map(str::to_string),
            reply_uri: plan.reply_url.clone(),
            dead_letter_sink_uri: plan.dead_letter_url().map(str::to_string),
        });
        let ready = self.subscription_readiness(subscription);
        Condition::set(&mut subscription.status.conditions, ready, &now_rfc3339());
        Ok(match previous {
            None => {
                let consumer = subscription_consumer(&namespace, &subscription.metadata.name);
                vec![WriteOp::set_cursor(&consumer, Some(self.store.last_event_seq()?))]
            }
            Some(_) => Vec::new(),
        })
    }

    /// A flow's status beside its own: its parts and their readiness, as they are now.
    fn flow_view(&self, mut view: Value, kind: &str, namespace: &str, name: &str) -> Value {
        let ready = |conditions: &[Condition]| {
            let c = Condition::find(conditions, "Ready");
            json!({ "type": "Ready", "status": c.map_or("Unknown".into(), |c| format!("{:?}", c.status)),
                    "message": c.map(|c| c.message.clone()).unwrap_or_default() })
        };
        let mut channels = Vec::new();
        for channel_kind in [InMemoryChannel::KIND, Channel::KIND] {
            for c in self.store.list::<Channel>(channel_kind, Some(namespace)).unwrap_or_default() {
                if c.metadata.is_owned_by(kind, name) {
                    channels.push(json!({
                        "channel": { "apiVersion": MESSAGING_API_VERSION, "kind": channel_kind, "name": c.metadata.name },
                        "ready": ready(&c.status.conditions),
                    }));
                }
            }
        }
        let subscriptions: Vec<Value> = self
            .store
            .list::<Subscription>(Subscription::KIND, Some(namespace))
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.metadata.is_owned_by(kind, name))
            .map(|s| {
                json!({
                    "subscription": { "apiVersion": MESSAGING_API_VERSION, "kind": Subscription::KIND, "name": s.metadata.name },
                    "ready": ready(&s.status.conditions),
                })
            })
            .collect();
        view["status"]["channelStatuses"] = json!(channels);
        view["status"]["subscriptionStatuses"] = json!(subscriptions);
        view
    }

    fn flow_url(&self, namespace: &str, channel: &str) -> serval_model::Addressable {
        serval_model::Addressable { url: format!("http://{}/c/{namespace}/{channel}", self.addrs.gateway) }
    }
}

/// The channels and subscriptions a flow is made of.
struct FlowParts {
    channel_kind: &'static str,
    channels: Vec<Channel>,
    subscriptions: Vec<Subscription>,
    /// All of them, by (kind, name): what the flow keeps.
    keep: Vec<(&'static str, String)>,
}

impl FlowParts {
    fn new(template: Option<&ChannelTemplate>) -> FlowParts {
        let channel_kind =
            if template.is_some_and(|t| t.kind == Channel::KIND) { Channel::KIND } else { InMemoryChannel::KIND };
        FlowParts { channel_kind, channels: Vec::new(), subscriptions: Vec::new(), keep: Vec::new() }
    }

    fn channel(&mut self, name: String) {
        let spec = if self.channel_kind == Channel::KIND {
            serval_model::ChannelSpec {
                channel_template: Some(ChannelTemplate {
                    api_version: MESSAGING_API_VERSION.into(),
                    kind: InMemoryChannel::KIND.into(),
                    spec: None,
                }),
                ..Default::default()
            }
        } else {
            Default::default()
        };
        self.keep.push((self.channel_kind, name.clone()));
        self.channels.push(Channel {
            api_version: MESSAGING_API_VERSION.into(),
            kind: self.channel_kind.into(),
            metadata: ObjectMeta { name, ..Default::default() },
            spec,
            status: Default::default(),
        });
    }

    fn subscription(
        &mut self,
        name: String,
        channel: String,
        subscriber: Option<Destination>,
        reply: Option<Destination>,
        delivery: Option<Value>,
    ) {
        self.keep.push((Subscription::KIND, name.clone()));
        let channel = KReference {
            api_version: MESSAGING_API_VERSION.into(),
            kind: self.channel_kind.into(),
            name: channel,
            namespace: None,
        };
        self.subscriptions.push(Subscription {
            api_version: MESSAGING_API_VERSION.into(),
            kind: Subscription::KIND.into(),
            metadata: ObjectMeta { name, ..Default::default() },
            spec: SubscriptionSpec { channel, subscriber, reply, delivery, unknown: Default::default() },
            status: Default::default(),
        });
    }

    /// A destination naming one of the flow's channels.
    fn to_channel(&self, name: String) -> Destination {
        Destination {
            reference: Some(KReference {
                api_version: MESSAGING_API_VERSION.into(),
                kind: self.channel_kind.into(),
                name,
                namespace: None,
            }),
            uri: None,
        }
    }
}

fn owner_of(kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: FLOWS_API_VERSION.into(),
        kind: kind.into(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: Some(true),
    }
}

/// Channel and InMemoryChannel: one shape, two kinds.
trait AsChannel {
    fn channel(&self) -> &Channel;
    fn channel_mut(&mut self) -> &mut Channel;
    fn into_channel(self) -> Channel;
}

impl AsChannel for Channel {
    fn channel(&self) -> &Channel {
        self
    }
    fn channel_mut(&mut self) -> &mut Channel {
        self
    }
    fn into_channel(self) -> Channel {
        self
    }
}

impl AsChannel for InMemoryChannel {
    fn channel(&self) -> &Channel {
        &self.0
    }
    fn channel_mut(&mut self) -> &mut Channel {
        &mut self.0
    }
    fn into_channel(self) -> Channel {
        self.0
    }
}

macro_rules! channel_reconciler {
    ($kind:ty) => {
        /// A channel is ready as soon as it is stored (its log is the store's).
        impl Reconciler<$kind> for Controller {
            fn admit(&self, channel: &mut $kind, previous: Option<&$kind>) -> Result<Vec<WriteOp>, ControlError> {
                self.admit_channel(channel.channel_mut(), previous.map(AsChannel::channel));
                Ok(Vec::new())
            }

            fn removed(&self, channel: &$kind) -> Vec<WriteOp> {
                self.channel_removed(channel.channel())
            }

            fn changed<'a>(&'a self, change: Change<'a, $kind>) -> BoxFuture<'a, Result<(), ControlError>> {
                Box::pin(async move {
                    if !matches!(change, Change::Updated(_)) {
                        self.refresh_referrers(Some(&change.object().channel().metadata.namespace)).await?;
                    }
                    self.sync_dispatchers();
                    Ok(())
                })
            }

            fn view(&self, channel: $kind) -> Value {
                self.channel_view(channel.into_channel())
            }
        }
    };
}

channel_reconciler!(Channel);
channel_reconciler!(InMemoryChannel);

/// A Subscription's delivery is checked when it is written (a 422 naming the field); its
/// channel cannot change; a new one delivers what its channel accepts from then on.
impl Reconciler<Subscription> for Controller {
    fn admit(
        &self,
        subscription: &mut Subscription,
        previous: Option<&Subscription>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        if let Some(previous) = previous
            && previous.spec.channel.name != subscription.spec.channel.name
        {
            return Err(ControlError::invalid_field(
                Subscription::KIND,
                "spec.channel",
                format!(
                    "is immutable (it is {:?}); delete the subscription and create it again",
                    previous.spec.channel.name
                ),
            ));
        }
        self.admit_subscription(subscription, previous)
    }

    /// Its cursor goes with it.
    fn removed(&self, subscription: &Subscription) -> Vec<WriteOp> {
        let consumer = subscription_consumer(&subscription.metadata.namespace, &subscription.metadata.name);
        vec![WriteOp::set_cursor(&consumer, None)]
    }

    fn changed<'a>(&'a self, _change: Change<'a, Subscription>) -> BoxFuture<'a, Result<(), ControlError>> {
        self.sync_dispatchers();
        Box::pin(async { Ok(()) })
    }

    /// With its live delivery counts (`status.delivery`).
    fn view(&self, subscription: Subscription) -> Value {
        let (namespace, name) = (&subscription.metadata.namespace, &subscription.metadata.name);
        let status = self
            .dispatchers
            .status(&subscription_consumer(namespace, name), &channel_log(namespace, &subscription.spec.channel.name));
        let mut view = serde_json::to_value(subscription).unwrap_or_default();
        view["status"]["delivery"] = serde_json::to_value(status).unwrap_or_default();
        view
    }
}

/// A Sequence is a channel per step and a subscription per step from that channel to the
/// step, replying into the next step's channel (the last one to the Sequence's reply).
impl Reconciler<Sequence> for Controller {
    fn admit(&self, sequence: &mut Sequence, previous: Option<&Sequence>) -> Result<Vec<WriteOp>, ControlError> {
        let (namespace, name) = (sequence.metadata.namespace.clone(), sequence.metadata.name.clone());
        let mut parts = FlowParts::new(sequence.spec.channel_template.as_ref());
        let steps = &sequence.spec.steps;
        for i in 0..steps.len() {
            parts.channel(serval_model::sequence_channel(&name, i));
        }
        for (i, step) in steps.iter().enumerate() {
            let reply = if i + 1 < steps.len() {
                Some(parts.to_channel(serval_model::sequence_channel(&name, i + 1)))
            } else {
                sequence.spec.reply.clone()
            };
            parts.subscription(
                serval_model::sequence_subscription(&name, i),
                serval_model::sequence_channel(&name, i),
                Some(step.destination.clone()),
                reply,
                step.delivery.clone(),
            );
        }
        let ops = self.write_flow_parts(&owner_of(Sequence::KIND, &sequence.metadata), &namespace, parts)?;
        sequence.status = previous.map(|p| p.status.clone()).unwrap_or_default();
        sequence.status.channel_statuses.clear();
        sequence.status.subscription_statuses.clear();
        sequence.status.address = Some(self.flow_url(&namespace, &serval_model::sequence_channel(&name, 0)));
        let ready = self.sequence_readiness(sequence);
        Condition::set(&mut sequence.status.conditions, ready, &now_rfc3339());
        Ok(ops)
    }

    /// Its channels and subscriptions go with it.
    fn removed(&self, sequence: &Sequence) -> Vec<WriteOp> {
        let owner = owner_of(Sequence::KIND, &sequence.metadata);
        self.remove_flow_parts(&owner, &sequence.metadata.namespace, &[]).unwrap_or_default()
    }

    fn changed<'a>(&'a self, change: Change<'a, Sequence>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.refresh_referrers(Some(&change.object().metadata.namespace)).await?;
            self.sync_dispatchers();
            Ok(())
        })
    }

    fn view(&self, sequence: Sequence) -> Value {
        let (namespace, name) = (sequence.metadata.namespace.clone(), sequence.metadata.name.clone());
        self.flow_view(serde_json::to_value(sequence).unwrap_or_default(), Sequence::KIND, &namespace, &name)
    }
}

/// A Parallel is an ingress channel; per branch, a filter subscription on it replying into
/// the branch's channel, and a subscription from that channel to the branch's subscriber
/// replying to the branch's reply or the Parallel's.
impl Reconciler<Parallel> for Controller {
    fn admit(&self, parallel: &mut Parallel, previous: Option<&Parallel>) -> Result<Vec<WriteOp>, ControlError> {
        let (namespace, name) = (parallel.metadata.namespace.clone(), parallel.metadata.name.clone());
        let mut parts = FlowParts::new(parallel.spec.channel_template.as_ref());
        let ingress = serval_model::parallel_ingress(&name);
        parts.channel(ingress.clone());
        for (i, branch) in parallel.spec.branches.iter().enumerate() {
            let channel = serval_model::parallel_branch_channel(&name, i);
            parts.channel(channel.clone());
            let into_branch = Some(parts.to_channel(channel.clone()));
            parts.subscription(
                serval_model::parallel_filter_subscription(&name, i),
                ingress.clone(),
                branch.filter.clone(),
                into_branch,
                branch.delivery.clone(),
            );
            parts.subscription(
                serval_model::parallel_branch_subscription(&name, i),
                channel,
                Some(branch.subscriber.clone()),
                branch.reply.clone().or_else(|| parallel.spec.reply.clone()),
                branch.delivery.clone(),
            );
        }
        let ops = self.write_flow_parts(&owner_of(Parallel::KIND, &parallel.metadata), &namespace, parts)?;
        parallel.status = previous.map(|p| p.status.clone()).unwrap_or_default();
        parallel.status.channel_statuses.clear();
        parallel.status.subscription_statuses.clear();
        parallel.status.address = Some(self.flow_url(&namespace, &ingress));
        let ready = self.parallel_readiness(parallel);
        Condition::set(&mut parallel.status.conditions, ready, &now_rfc3339());
        Ok(ops)
    }

    /// Its channels and subscriptions go with it.
    fn removed(&self, parallel: &Parallel) -> Vec<WriteOp> {
        let owner = owner_of(Parallel::KIND, &parallel.metadata);
        self.remove_flow_parts(&owner, &parallel.metadata.namespace, &[]).unwrap_or_default()
    }

    fn changed<'a>(&'a self, change: Change<'a, Parallel>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.refresh_referrers(Some(&change.object().metadata.namespace)).await?;
            self.sync_dispatchers();
            Ok(())
        })
    }

    fn view(&self, parallel: Parallel) -> Value {
        let (namespace, name) = (parallel.metadata.namespace.clone(), parallel.metadata.name.clone());
        self.flow_view(serde_json::to_value(parallel).unwrap_or_default(), Parallel::KIND, &namespace, &name)
    }
}
