//! Knative messaging and flows: `messaging.knative.dev/v1` Channel, InMemoryChannel and
//! Subscription, `flows.knative.dev/v1` Sequence and Parallel, and what every event path
//! shares: where a [`Destination`] points ([`Addressee`]), including Kubernetes `v1`
//! Service refs and `*.svc.cluster.local` URIs, which name serval Services.
//!
//! Flows compile into channels and subscriptions named as Knative names them
//! ([`sequence_channel`], [`parallel_ingress`], …); the control plane writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eventing::{Addressable, Destination, KReference};
use crate::meta::{Condition, ObjectMeta};
use crate::validate::{FieldError, ValidationError, validate_name};

pub const MESSAGING_API_VERSION: &str = "messaging.knative.dev/v1";
pub const FLOWS_API_VERSION: &str = "flows.knative.dev/v1";

/// The longest name of a flow: its children add `-kn-parallel-filter-NNN` and must stay
/// within 63 characters.
pub const MAX_FLOW_NAME: usize = 40;
/// Most steps of a Sequence or branches of a Parallel.
pub const MAX_FLOW_PARTS: usize = 100;

/// Which kind of channel a flow's channels are (`spec.channelTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTemplate {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
}

/// A `Channel` or `InMemoryChannel`: a durable event log with an HTTP ingress at
/// `/c/<namespace>/<name>` on the gateway. In serval every channel is durable; a Channel
/// and an InMemoryChannel of one name in one namespace are one channel (Knative backs a
/// Channel by the channel its template names, of the same name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ChannelSpec,
    #[serde(default)]
    pub status: ChannelStatus,
}

/// An `InMemoryChannel`: the same shape and behaviour as a [`Channel`] (durable all the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InMemoryChannel(pub Channel);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// The channel's subscriptions, as the server shows them (kept in step with the
    /// Subscriptions of this channel; what a user writes here is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribers: Vec<SubscriberSpec>,
    /// Default delivery of its subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One subscription of a channel (`spec.subscribers[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberSpec {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
}

/// The readiness of one subscription of a channel (`status.subscribers[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberStatus {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub observed_generation: u64,
    pub ready: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribers: Vec<SubscriberStatus>,
}

/// A `Subscription`: the events of a channel delivered to a subscriber, whose replies go to
/// `reply` (or, without one, are dropped); without a subscriber, events go to `reply` as
/// they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: SubscriptionSpec,
    #[serde(default)]
    pub status: SubscriptionStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    pub channel: KReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_subscription: Option<PhysicalSubscription>,
}

/// Where a subscription's events, replies and dead letters go, resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink_uri: Option<String>,
}

/// A `Sequence`: events pass through `steps` in order, each step's reply feeding the next,
/// the last one's going to `reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sequence {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: SequenceSpec,
    #[serde(default)]
    pub status: FlowStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceSpec {
    #[serde(default)]
    pub steps: Vec<SequenceStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One step: a destination with its own delivery settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceStep {
    #[serde(flatten)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
}

/// A `Parallel`: every event goes to every branch whose filter passes it (a filter's 2xx
/// with the event back), then to the branch's subscriber, whose reply goes to the branch's
/// `reply` or the Parallel's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parallel {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ParallelSpec,
    #[serde(default)]
    pub status: FlowStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParallelSpec {
    #[serde(default)]
    pub branches: Vec<ParallelBranch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParallelBranch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Destination>,
    pub subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
}

/// A flow's status: its address (its first channel's), readiness, and its parts'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The channels the flow made, with their readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_statuses: Vec<Value>,
    /// The subscriptions the flow made, with their readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_statuses: Vec<Value>,
}

/// The channel of step `step` of Sequence `sequence` (its first is the Sequence's address).
pub fn sequence_channel(sequence: &str, step: usize) -> String {
    format!("{sequence}-kn-sequence-{step}")
}

/// The subscription of step `step` of Sequence `sequence` (on the step's channel).
pub fn sequence_subscription(sequence: &str, step: usize) -> String {
    sequence_channel(sequence, step)
}

/// The ingress channel of Parallel `parallel` (its address).
pub fn parallel_ingress(parallel: &str) -> String {
    format!("{parallel}-kn-parallel")
}

/// The channel of branch `branch` of Parallel `parallel` (after its filter).
pub fn parallel_branch_channel(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-{branch}")
}

/// The subscription of branch `branch`'s filter (on the ingress channel, replying into the
/// branch's channel).
pub fn parallel_filter_subscription(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-filter-{branch}")
}

/// The subscription of branch `branch`'s subscriber (on the branch's channel).
pub fn parallel_branch_subscription(parallel: &str, branch: usize) -> String {
    parallel_branch_channel(parallel, branch)
}

/// What a destination names, in serval's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// A serval Service, with the path its URL adds (`""` or starting with `/`).
    Service {
        namespace: String,
        name: String,
        path: String,
    },
    Broker {
        namespace: String,
        name: String,
    },
    /// A Channel or an InMemoryChannel (`kind` says which the reference named).
    Channel {
        namespace: String,
        name: String,
        kind: String,
    },
    Sequence {
        namespace: String,
        name: String,
    },
    Parallel {
        namespace: String,
        name: String,
    },
    /// A serval Workflow (its `listen` tasks and `schedule.on`).
    Workflow {
        namespace: String,
        name: String,
    },
    /// Any other absolute URL.
    Url(String),
}

impl Addressee {
    /// The kind and (namespace, name) of the object it names, if any.
    pub fn object(&self) -> Option<(&str, &str, &str)> {
        match self {
            Addressee::Service { namespace, name, .. } => Some(("Service", namespace, name)),
            Addressee::Broker { namespace, name } => Some(("Broker", namespace, name)),
            Addressee::Channel { namespace, name, kind } => Some((kind, namespace, name)),
            Addressee::Sequence { namespace, name } => Some(("Sequence", namespace, name)),
            Addressee::Parallel { namespace, name } => Some(("Parallel", namespace, name)),
            Addressee::Workflow { namespace, name } => Some(("Workflow", namespace, name)),
            Addressee::Url(_) => None,
        }
    }

    /// The channel events sent to it enter, for channels and flows: (namespace, name).
    pub fn channel(&self) -> Option<(&str, String)> {
        match self {
            Addressee::Channel { namespace, name, .. } => Some((namespace, name.clone())),
            Addressee::Sequence { namespace, name } => Some((namespace, sequence_channel(name, 0))),
            Addressee::Parallel { namespace, name } => Some((namespace, parallel_ingress(name))),
            _ => None,
        }
    }
}

/// Where `dest` points, seen from an object in `namespace`: the object a `ref` names (a
/// Kubernetes `v1` Service names the serval Service of that name; a relative `uri` beside a
/// `ref` to a Service is a path on it), or a `uri`, where `http://NAME.NS.svc.cluster.local`
/// (or `NAME.NS.svc`) names the serval Service NAME of namespace NS. `Err` says why not.
pub fn classify(dest: &Destination, namespace: &str) -> Result<Addressee, String> {
    match (&dest.reference, &dest.uri) {
        (Some(r), uri) => {
            let ns = r.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| namespace.to_string());
            let name = r.name.clone();
            let group = crate::api_group(&r.api_version);
            let addressee = match (group, r.kind.as_str()) {
                ("" | "serving.knative.dev", "Service") => {
                    let path = uri.as_deref().unwrap_or("");
                    let path =
                        if path.is_empty() || path.starts_with('/') { path.to_string() } else { format!("/{path}") };
                    return Ok(Addressee::Service { namespace: ns, name, path });
                }
                ("" | "eventing.knative.dev", "Broker") => Addressee::Broker { namespace: ns, name },
                ("" | "messaging.knative.dev", kind @ ("Channel" | "InMemoryChannel")) => {
                    Addressee::Channel { namespace: ns, name, kind: kind.to_string() }
                }
                ("" | "flows.knative.dev", "Sequence") => Addressee::Sequence { namespace: ns, name },
                ("" | "flows.knative.dev", "Parallel") => Addressee::Parallel { namespace: ns, name },
                ("" | "serval.dev", "Workflow") => Addressee::Workflow { namespace: ns, name },
                (_, kind) => {
                    return Err(format!(
                        "{kind} ({}) is not a kind serval delivers to; use a Service, Broker, Channel, InMemoryChannel, Sequence, Parallel, Workflow or a uri",
                        r.api_version
                    ));
                }
            };
            match uri.as_deref() {
                Some(path) if !path.is_empty() => {
                    Err(format!("a uri ({path:?}) beside a ref is a path on a Service; {} takes none", r.kind))
                }
                _ => Ok(addressee),
            }
        }
        (None, Some(uri)) => classify_uri(uri),
        (None, None) => Err("give ref or uri".into()),
    }
}

pub fn classify_uri(uri: &str) -> Result<Addressee, String> {
    let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) else {
        return Err(format!("{uri:?} must be an absolute http(s) URL"));
    };
    let (authority, path) = rest.find(['/', '?']).map_or((rest, ""), |at| rest.split_at(at));
    if authority.is_empty() {
        return Err(format!("{uri:?} has no host"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.to_ascii_lowercase();
    let cluster_local = host.strip_suffix(".svc.cluster.local").or_else(|| host.strip_suffix(".svc"));
    if let Some((name, namespace)) = cluster_local.and_then(|h| h.split_once('.'))
        && !name.is_empty()
        && !namespace.is_empty()
        && !namespace.contains('.')
    {
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        return Ok(Addressee::Service { namespace: namespace.into(), name: name.into(), path });
    }
    Ok(Addressee::Url(uri.to_string()))
}

/// Why a destination given by a user is malformed (`ref` and `uri` both missing, a
/// relative `uri` alone); a `ref` to a kind serval cannot deliver to is not malformed —
/// the referrer is stored and reports it in its Ready condition.
pub fn check_destination_shape(dest: &Destination, field: &str, errors: &mut Vec<FieldError>) {
    match (&dest.reference, &dest.uri) {
        (None, None) => errors.push(FieldError { field: field.into(), message: "give ref or uri".into() }),
        (None, Some(uri)) if !(uri.starts_with("http://") || uri.starts_with("https://")) => errors.push(FieldError {
            field: format!("{field}.uri"),
            message: format!("{uri:?} must be an absolute http(s) URL"),
        }),
        (Some(r), _) if r.name.is_empty() => {
            errors.push(FieldError { field: format!("{field}.ref.name"), message: "is required".into() })
        }
        (Some(r), _) if r.kind.is_empty() => {
            errors.push(FieldError { field: format!("{field}.ref.kind"), message: "is required".into() })
        }
        _ => {}
    }
}

/// What a user should know about how serval reads these destinations (`(field,
/// destination)`): a Kubernetes `v1` Service ref, or a cluster-local URI, names the serval
/// Service of that name.
pub fn destination_warnings<'a>(destinations: impl IntoIterator<Item = (String, &'a Destination)>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (field, dest) in destinations {
        if let Some(r) = dest.reference.as_ref().filter(|r| r.api_version == "v1" && r.kind == "Service") {
            warnings.push(format!(
                "{field}.ref: Kubernetes v1 Service {:?} is taken as the serval Service of that name",
                r.name
            ));
        } else if let (None, Some(uri)) = (&dest.reference, &dest.uri)
            && let Ok(Addressee::Service { namespace, name, .. }) = classify_uri(uri)
        {
            warnings.push(format!("{field}.uri: {uri} is taken as the serval Service {namespace}/{name}"));
        }
    }
    warnings
}

impl Subscription {
    /// Its destinations by field.
    pub fn destinations(&self) -> Vec<(String, &Destination)> {
        let spec = &self.spec;
        let subscriber = spec.subscriber.iter().map(|d| ("spec.subscriber".to_string(), d));
        subscriber.chain(spec.reply.iter().map(|d| ("spec.reply".to_string(), d))).collect()
    }
}

impl Sequence {
    /// Its destinations by field.
    pub fn destinations(&self) -> Vec<(String, &Destination)> {
        let steps = self.spec.steps.iter().enumerate().map(|(i, s)| (format!("spec.steps[{i}]"), &s.destination));
        steps.chain(self.spec.reply.iter().map(|d| ("spec.reply".to_string(), d))).collect()
    }
}

impl Parallel {
    /// Its destinations by field.
    pub fn destinations(&self) -> Vec<(String, &Destination)> {
        let mut all = Vec::new();
        for (i, b) in self.spec.branches.iter().enumerate() {
            all.extend(b.filter.iter().map(|d| (format!("spec.branches[{i}].filter"), d)));
            all.push((format!("spec.branches[{i}].subscriber"), &b.subscriber));
            all.extend(b.reply.iter().map(|d| (format!("spec.branches[{i}].reply"), d)));
        }
        all.extend(self.spec.reply.iter().map(|d| ("spec.reply".to_string(), d)));
        all
    }
}

fn check_identity(
    errors: &mut Vec<FieldError>,
    (api_version, kind): (&str, &str),
    (wanted_api, wanted_kind): (&str, &str),
    meta: &ObjectMeta,
    max_name: usize,
) {
    if api_version != wanted_api {
        errors.push(FieldError { field: "apiVersion".into(), message: format!("must be {wanted_api}") });
    }
    if kind != wanted_kind {
        errors.push(FieldError { field: "kind".into(), message: format!("must be {wanted_kind}") });
    }
    if let Err(m) = validate_name(&meta.name, max_name) {
        errors.push(FieldError { field: "metadata.name".into(), message: m });
    }
}

fn result(errors: Vec<FieldError>) -> Result<(), ValidationError> {
    if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
}

fn check_template(template: Option<&ChannelTemplate>, errors: &mut Vec<FieldError>) {
    if let Some(t) = template
        && !(matches!(t.kind.as_str(), "Channel" | "InMemoryChannel")
            && matches!(t.api_version.as_str(), "" | MESSAGING_API_VERSION))
    {
        errors.push(FieldError {
            field: "spec.channelTemplate".into(),
            message: format!(
                "{} {} is not a channel serval has; use {MESSAGING_API_VERSION} InMemoryChannel or Channel",
                t.api_version, t.kind
            ),
        });
    }
}

/// Checks a channel (`kind` is `Channel` or `InMemoryChannel`).
pub fn validate_channel(channel: &Channel, kind: &str) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(
        &mut errors,
        (&channel.api_version, &channel.kind),
        (MESSAGING_API_VERSION, kind),
        &channel.metadata,
        63,
    );
    check_template(channel.spec.channel_template.as_ref(), &mut errors);
    result(errors)
}

pub fn validate_subscription(subscription: &Subscription) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(
        &mut errors,
        (&subscription.api_version, &subscription.kind),
        (MESSAGING_API_VERSION, "Subscription"),
        &subscription.metadata,
        63,
    );
    let channel = &subscription.spec.channel;
    if !matches!(channel.kind.as_str(), "Channel" | "InMemoryChannel") {
        errors.push(FieldError {
            field: "spec.channel.kind".into(),
            message: format!("{:?} is not a channel; use Channel or InMemoryChannel", channel.kind),
        });
    }
    if let Err(m) = validate_name(&channel.name, 63) {
        errors.push(FieldError { field: "spec.channel.name".into(), message: m });
    }
    if channel.namespace.as_deref().is_some_and(|ns| !ns.is_empty() && ns != subscription.metadata.namespace) {
        errors.push(FieldError {
            field: "spec.channel.namespace".into(),
            message: "a subscription's channel is in its own namespace".into(),
        });
    }
    let (subscriber, reply) = (&subscription.spec.subscriber, &subscription.spec.reply);
    if subscriber.is_none() && reply.is_none() {
        errors
            .push(FieldError { field: "spec.subscriber".into(), message: "give a subscriber, a reply or both".into() });
    }
    if let Some(d) = subscriber {
        check_destination_shape(d, "spec.subscriber", &mut errors);
    }
    if let Some(d) = reply {
        check_destination_shape(d, "spec.reply", &mut errors);
    }
    result(errors)
}

pub fn validate_sequence(sequence: &Sequence) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(
        &mut errors,
        (&sequence.api_version, &sequence.kind),
        (FLOWS_API_VERSION, "Sequence"),
        &sequence.metadata,
        MAX_FLOW_NAME,
    );
    check_template(sequence.spec.channel_template.as_ref(), &mut errors);
    let steps = &sequence.spec.steps;
    if steps.is_empty() || steps.len() > MAX_FLOW_PARTS {
        errors.push(FieldError { field: "spec.steps".into(), message: format!("give 1 to {MAX_FLOW_PARTS} steps") });
    }
    for (i, step) in steps.iter().enumerate() {
        check_destination_shape(&step.destination, &format!("spec.steps[{i}]"), &mut errors);
    }
    if let Some(d) = &sequence.spec.reply {
        check_destination_shape(d, "spec.reply", &mut errors);
    }
    result(errors)
}

pub fn validate_parallel(parallel: &Parallel) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(
        &mut errors,
        (&parallel.api_version, &parallel.kind),
        (FLOWS_API_VERSION, "Parallel"),
        &parallel.metadata,
        MAX_FLOW_NAME,
    );
    check_template(parallel.spec.channel_template.as_ref(), &mut errors);
    let branches = &parallel.spec.branches;
    if branches.is_empty() || branches.len() > MAX_FLOW_PARTS {
        errors.push(FieldError {
            field: "spec.branches".into(),
            message: format!("give 1 to {MAX_FLOW_PARTS} branches"),
        });
    }
    for (i, branch) in branches.iter().enumerate() {
        if let Some(f) = &branch.filter {
            check_destination_shape(f, &format!("spec.branches[{i}].filter"), &mut errors);
        }
        check_destination_shape(&branch.subscriber, &format!("spec.branches[{i}].subscriber"), &mut errors);
        if let Some(r) = &branch.reply {
            check_destination_shape(r, &format!("spec.branches[{i}].reply"), &mut errors);
        }
    }
    if let Some(d) = &parallel.spec.reply {
        check_destination_shape(d, "spec.reply", &mut errors);
    }
    result(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(json: &str) -> Destination {
        serde_json::from_str(json).expect("decodes")
    }

    #[test]
    fn destinations_name_services_brokers_channels_flows_and_urls() {
        let service = |ns: &str, name: &str, path: &str| Addressee::Service {
            namespace: ns.into(),
            name: name.into(),
            path: path.into(),
        };
        let cases = [
            (r#"{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"s"}}"#, service("ns", "s", "")),
            (
                r#"{"ref":{"apiVersion":"v1","kind":"Service","name":"s"},"uri":"/insert"}"#,
                service("ns", "s", "/insert"),
            ),
            (
                r#"{"ref":{"apiVersion":"v1","kind":"Service","name":"s","namespace":"o"},"uri":"x"}"#,
                service("o", "s", "/x"),
            ),
            (r#"{"uri":"http://me-switcher.default.svc.cluster.local/0"}"#, service("default", "me-switcher", "/0")),
            (r#"{"uri":"http://s.other.svc:80"}"#, service("other", "s", "")),
            (
                r#"{"ref":{"apiVersion":"eventing.knative.dev/v1","kind":"Broker","name":"b"}}"#,
                Addressee::Broker { namespace: "ns".into(), name: "b".into() },
            ),
            (
                r#"{"ref":{"apiVersion":"messaging.knative.dev/v1","kind":"InMemoryChannel","name":"c"}}"#,
                Addressee::Channel { namespace: "ns".into(), name: "c".into(), kind: "InMemoryChannel".into() },
            ),
            (
                r#"{"ref":{"apiVersion":"flows.knative.dev/v1","kind":"Sequence","name":"q"}}"#,
                Addressee::Sequence { namespace: "ns".into(), name: "q".into() },
            ),
            (r#"{"uri":"http://127.0.0.1:9/x"}"#, Addressee::Url("http://127.0.0.1:9/x".into())),
            (r#"{"uri":"http://cluster.local/x"}"#, Addressee::Url("http://cluster.local/x".into())),
        ];
        for (json, expected) in cases {
            assert_eq!(classify(&dest(json), "ns"), Ok(expected), "{json}");
        }
        assert!(
            classify(&dest(r#"{"ref":{"apiVersion":"apps/v1","kind":"Deployment","name":"d"}}"#), "ns")
                .expect_err("not deliverable")
                .contains("Deployment")
        );
        assert!(classify(&dest(r#"{"uri":"/relative"}"#), "ns").is_err());
        let sequence = classify(&dest(r#"{"ref":{"kind":"Sequence","name":"q"}}"#), "ns").expect("ok");
        assert_eq!(sequence.channel(), Some(("ns", "q-kn-sequence-0".to_string())));
    }

    #[test]
    fn flows_need_parts_and_short_names() {
        let sequence: Sequence = serde_json::from_value(serde_json::json!({
            "apiVersion": FLOWS_API_VERSION, "kind": "Sequence", "metadata": {"name": "s"},
            "spec": {"steps": [{"ref": {"kind": "Service", "name": "a"}}, {"uri": "nope"}],
                     "channelTemplate": {"apiVersion": "messaging.knative.dev/v1", "kind": "KafkaChannel"}}
        }))
        .expect("decodes");
        let fields: Vec<String> =
            validate_sequence(&sequence).expect_err("invalid").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.channelTemplate", "spec.steps[1].uri"]);
        let parallel: Parallel = serde_json::from_value(serde_json::json!({
            "apiVersion": FLOWS_API_VERSION, "kind": "Parallel", "metadata": {"name": "p".repeat(41)},
            "spec": {"branches": []}
        }))
        .expect("decodes");
        let fields: Vec<String> =
            validate_parallel(&parallel).expect_err("invalid").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["metadata.name", "spec.branches"]);
    }
}
