//! What every kind of resource has in common, and how kinds describe themselves to the API
//! and the CLI: a [`Resource`] type, its [`KindInfo`] (kind, apiVersion, plural, short
//! names, table columns), and the tiny path language of those columns.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{Condition, ObjectMeta};
use crate::validate::ValidationError;
use crate::{
    Broker, Channel, ConfigMap, InMemoryChannel, Parallel, PingSource, Revision, Secret, Sequence, Service,
    Subscription, Trigger,
};

/// A kind of Kubernetes-shaped object serval stores: `apiVersion`, `kind`, `metadata`,
/// usually `spec` and `status`.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// `kind` of its documents (`Broker`).
    const KIND: &'static str;
    /// The `apiVersion` serval takes it as (`eventing.knative.dev/v1`).
    const API_VERSION: &'static str;
    /// Its collection in the API (`brokers`).
    const PLURAL: &'static str;
    /// Other names the CLI accepts for it (`ksvc`).
    const SHORT_NAMES: &'static [&'static str] = &[];

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;

    /// Checks a document as a user submitted it: every problem with its field path; on
    /// success, the warnings (fields serval accepts but ignores).
    fn validate(&self) -> Result<Vec<String>, ValidationError>;

    /// `status.conditions`, for the generic READY and REASON columns.
    fn conditions(&self) -> &[Condition] {
        &[]
    }

    /// Columns of its table beyond NAME (and NAMESPACE across namespaces).
    fn columns() -> Vec<Column> {
        Column::readiness()
    }

    /// Where `apply` writes it among the documents of one file: what others refer to
    /// first (0: configuration data, 1: event routers, 2: workloads, 3: the rest).
    fn apply_order() -> u8 {
        3
    }

    /// How the API and the CLI know this kind.
    fn info() -> KindInfo {
        default_info::<Self>()
    }
}

/// A kind as the API lists it at `GET /api/v1` (Kubernetes' APIResourceList, simplified).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindInfo {
    pub kind: String,
    pub api_version: String,
    pub plural: String,
    #[serde(default)]
    pub short_names: Vec<String>,
    /// Whether PUT, POST and DELETE take it (Revisions follow their Service).
    #[serde(default)]
    pub writable: bool,
    /// Whether `?watch=true` streams it (not Secrets: their stored form is sealed).
    #[serde(default)]
    pub watchable: bool,
    #[serde(default)]
    pub apply_order: u8,
    #[serde(default)]
    pub columns: Vec<Column>,
}

impl KindInfo {
    /// The lowercase singular the CLI takes (`pingsource`).
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// Whether `word` names this kind: its kind, singular, plural or a short name, in any case.
    pub fn is_named(&self, word: &str) -> bool {
        let word = word.to_lowercase();
        word == self.singular() || word == self.plural || self.short_names.contains(&word)
    }

    /// `serving.knative.dev` of `serving.knative.dev/v1`; the empty core group of `v1`.
    pub fn group(&self) -> &str {
        api_group(&self.api_version)
    }
}

/// The group of an apiVersion: `serving.knative.dev` of `serving.knative.dev/v1`, the
/// empty core group of `v1`.
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// One column of a kind's table: a header and where its value is in the object.
///
/// `path` is dotted field names from the object's root (`status.address.url`), where a
/// name may select one entry of a list of conditions by type (`status.conditions[Ready].reason`),
/// or an index of a list (`spec.containers[0].image`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub path: String,
}

impl Column {
    pub fn new(name: &str, path: &str) -> Column {
        Column { name: name.into(), path: path.into() }
    }

    /// READY and REASON from the `Ready` condition.
    pub fn readiness() -> Vec<Column> {
        vec![
            Column::new("READY", "status.conditions[Ready].status"),
            Column::new("REASON", "status.conditions[Ready].reason"),
        ]
    }

    /// The column's value in `object` as table text (empty when absent).
    pub fn value(&self, object: &Value) -> String {
        match lookup(object, &self.path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

/// The value at a column path (see [`Column`]).
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut here = object;
    for step in path.split('.').filter(|s| !s.is_empty()) {
        let (field, selector) = match step.split_once('[') {
            Some((field, rest)) => (field, Some(rest.strip_suffix(']')?)),
            None => (step, None),
        };
        here = here.get(field)?;
        if let Some(selector) = selector {
            here = match selector.parse::<usize>() {
                Ok(index) => here.get(index)?,
                Err(_) => here.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(selector))?,
            };
        }
    }
    Some(here)
}

impl Resource for Service {
    const KIND: &'static str = "Service";
    const API_VERSION: &'static str = crate::SERVING_API_VERSION;
    const PLURAL: &'static str = "services";
    const SHORT_NAMES: &'static [&'static str] = &["svc", "ksvc", "kservice"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_service(self)
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        let mut columns =
            vec![Column::new("URL", "status.url"), Column::new("LATEST", "status.latestReadyRevisionName")];
        columns.extend(Column::readiness());
        columns
    }
    fn apply_order() -> u8 {
        2
    }
}

impl Resource for Revision {
    const KIND: &'static str = "Revision";
    const API_VERSION: &'static str = crate::SERVING_API_VERSION;
    const PLURAL: &'static str = "revisions";
    const SHORT_NAMES: &'static [&'static str] = &["rev"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    /// Revisions are made by the server from a Service's template, never submitted.
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        Ok(Vec::new())
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn info() -> KindInfo {
        KindInfo { writable: false, ..default_info::<Self>() }
    }
}

/// Knative's Configuration: a read-only view of a Service (its template and revisions).
pub fn configuration_info() -> KindInfo {
    serving_view("Configuration", "configurations", &["config", "cfg"])
}

/// Knative's Route: a read-only view of a Service (its traffic and URLs).
pub fn route_info() -> KindInfo {
    serving_view("Route", "routes", &["rt"])
}

fn serving_view(kind: &str, plural: &str, short_names: &[&str]) -> KindInfo {
    KindInfo {
        kind: kind.into(),
        api_version: crate::SERVING_API_VERSION.into(),
        plural: plural.into(),
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        writable: false,
        watchable: false,
        apply_order: 3,
        columns: Column::readiness(),
    }
}

/// Every kind serval itself serves, in the order the API lists them (a server may serve
/// more; clients ask it at `GET /api/v1`).
pub fn builtin_kinds() -> Vec<KindInfo> {
    vec![
        Service::info(),
        Revision::info(),
        configuration_info(),
        route_info(),
        Broker::info(),
        Trigger::info(),
        PingSource::info(),
        Channel::info(),
        InMemoryChannel::info(),
        Subscription::info(),
        Sequence::info(),
        Parallel::info(),
        crate::ApiServerSource::info(),
        crate::SinkBinding::info(),
        crate::ContainerSource::info(),
        crate::FileSource::info(),
        crate::KafkaSource::info(),
        crate::NatsSource::info(),
        crate::PostgresSource::info(),
        crate::WebhookSource::info(),
        Secret::info(),
        ConfigMap::info(),
        crate::KeyValueStore::info(),
        crate::Workflow::info(),
    ]
}

/// [`Resource::info`] as the trait's default builds it, for kinds that change a field of it.
fn default_info<R: Resource>() -> KindInfo {
    KindInfo {
        kind: R::KIND.into(),
        api_version: R::API_VERSION.into(),
        plural: R::PLURAL.into(),
        short_names: R::SHORT_NAMES.iter().map(|s| s.to_string()).collect(),
        writable: true,
        watchable: true,
        apply_order: R::apply_order(),
        columns: R::columns(),
    }
}

impl Resource for Broker {
    const KIND: &'static str = "Broker";
    const API_VERSION: &'static str = crate::EVENTING_API_VERSION;
    const PLURAL: &'static str = "brokers";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_broker(self).map(|()| Vec::new())
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        address_columns()
    }
    fn apply_order() -> u8 {
        1
    }
}

impl Resource for Trigger {
    const KIND: &'static str = "Trigger";
    const API_VERSION: &'static str = crate::EVENTING_API_VERSION;
    const PLURAL: &'static str = "triggers";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_trigger(self)
            .map(|()| crate::destination_warnings([("spec.subscriber".to_string(), &self.spec.subscriber)]))
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        let mut columns = vec![Column::new("BROKER", "spec.broker"), Column::new("SUBSCRIBER", "status.subscriberUri")];
        columns.extend(Column::readiness());
        columns.extend(delivery_columns());
        columns
    }
}

impl Resource for PingSource {
    const KIND: &'static str = "PingSource";
    const API_VERSION: &'static str = crate::SOURCES_API_VERSION;
    const PLURAL: &'static str = "pingsources";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_ping_source(self)
            .map(|()| crate::destination_warnings([("spec.sink".to_string(), &self.spec.sink)]))
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        let mut columns = vec![Column::new("SCHEDULE", "spec.schedule"), Column::new("SINK", "status.subscriberUri")];
        columns.extend(Column::readiness());
        columns
    }
}

/// URL, READY and REASON: the table of addressable kinds.
fn address_columns() -> Vec<Column> {
    let mut columns = vec![Column::new("URL", "status.address.url")];
    columns.extend(Column::readiness());
    columns
}

/// The delivery counters of a trigger or subscription (`status.delivery`).
fn delivery_columns() -> Vec<Column> {
    [
        ("PENDING", "pending"),
        ("RETRYING", "retrying"),
        ("DELIVERED", "delivered"),
        ("DEAD-LETTERED", "deadLettered"),
        ("DROPPED", "dropped"),
    ]
    .into_iter()
    .map(|(name, field)| Column::new(name, &format!("status.delivery.{field}")))
    .collect()
}

impl Resource for Channel {
    const KIND: &'static str = "Channel";
    const API_VERSION: &'static str = crate::MESSAGING_API_VERSION;
    const PLURAL: &'static str = "channels";
    const SHORT_NAMES: &'static [&'static str] = &["ch"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_channel(self, Self::KIND).map(|()| Vec::new())
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        address_columns()
    }
    fn apply_order() -> u8 {
        1
    }
}

impl Resource for InMemoryChannel {
    const KIND: &'static str = "InMemoryChannel";
    const API_VERSION: &'static str = crate::MESSAGING_API_VERSION;
    const PLURAL: &'static str = "inmemorychannels";
    const SHORT_NAMES: &'static [&'static str] = &["imc"];

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_channel(&self.0, Self::KIND).map(|()| Vec::new())
    }
    fn conditions(&self) -> &[Condition] {
        &self.0.status.conditions
    }
    fn columns() -> Vec<Column> {
        address_columns()
    }
    fn apply_order() -> u8 {
        1
    }
}

impl Resource for Subscription {
    const KIND: &'static str = "Subscription";
    const API_VERSION: &'static str = crate::MESSAGING_API_VERSION;
    const PLURAL: &'static str = "subscriptions";
    const SHORT_NAMES: &'static [&'static str] = &["sub"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_subscription(self).map(|()| crate::destination_warnings(self.destinations()))
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        let mut columns = vec![
            Column::new("CHANNEL", "spec.channel.name"),
            Column::new("SUBSCRIBER", "status.physicalSubscription.subscriberUri"),
            Column::new("REPLY", "status.physicalSubscription.replyUri"),
        ];
        columns.extend(Column::readiness());
        columns.extend(delivery_columns());
        columns
    }
}

impl Resource for Sequence {
    const KIND: &'static str = "Sequence";
    const API_VERSION: &'static str = crate::FLOWS_API_VERSION;
    const PLURAL: &'static str = "sequences";
    const SHORT_NAMES: &'static [&'static str] = &["seq"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_sequence(self).map(|()| crate::destination_warnings(self.destinations()))
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        address_columns()
    }
    fn apply_order() -> u8 {
        1
    }
}

impl Resource for Parallel {
    const KIND: &'static str = "Parallel";
    const API_VERSION: &'static str = crate::FLOWS_API_VERSION;
    const PLURAL: &'static str = "parallels";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_parallel(self).map(|()| crate::destination_warnings(self.destinations()))
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn columns() -> Vec<Column> {
        address_columns()
    }
    fn apply_order() -> u8 {
        1
    }
}

impl Resource for Secret {
    const KIND: &'static str = "Secret";
    const API_VERSION: &'static str = crate::CORE_API_VERSION;
    const PLURAL: &'static str = "secrets";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_secret(self).map(|()| Vec::new())
    }
    fn columns() -> Vec<Column> {
        vec![Column::new("TYPE", "type")]
    }
    fn apply_order() -> u8 {
        0
    }
    fn info() -> KindInfo {
        KindInfo { watchable: false, ..default_info::<Self>() }
    }
}

impl Resource for crate::KeyValueStore {
    const KIND: &'static str = "KeyValueStore";
    const API_VERSION: &'static str = crate::SERVAL_API_VERSION;
    const PLURAL: &'static str = "keyvaluestores";
    const SHORT_NAMES: &'static [&'static str] = &["kv"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_key_value_store(self)
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
    fn apply_order() -> u8 {
        0
    }
}

impl Resource for crate::Workflow {
    const KIND: &'static str = "Workflow";
    const API_VERSION: &'static str = crate::SERVAL_API_VERSION;
    const PLURAL: &'static str = "workflows";
    const SHORT_NAMES: &'static [&'static str] = &["wf"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_workflow(self)
    }
    fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }
}

impl Resource for ConfigMap {
    const KIND: &'static str = "ConfigMap";
    const API_VERSION: &'static str = crate::CORE_API_VERSION;
    const PLURAL: &'static str = "configmaps";
    const SHORT_NAMES: &'static [&'static str] = &["cm"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        crate::validate_config_map(self).map(|()| Vec::new())
    }
    fn columns() -> Vec<Column> {
        Vec::new()
    }
    fn apply_order() -> u8 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_paths_select_fields_list_entries_and_conditions_by_type() {
        let object = serde_json::json!({
            "spec": { "containers": [{ "image": "a" }] },
            "status": { "conditions": [
                { "type": "Routed", "status": "True" },
                { "type": "Ready", "status": "False", "reason": "ExitCode" }
            ], "n": 3 }
        });
        let value = |path: &str| Column::new("X", path).value(&object);
        assert_eq!(value("spec.containers[0].image"), "a");
        assert_eq!(value("status.conditions[Ready].reason"), "ExitCode");
        assert_eq!(value("status.conditions[Ready].status"), "False");
        assert_eq!(value("status.n"), "3");
        assert_eq!(value("status.conditions[Missing].status"), "");
        assert_eq!(value("spec.containers[1].image"), "");
        assert_eq!(value("status.conditions[Ready"), "");
    }

    #[test]
    fn kinds_are_named_by_kind_plural_and_short_names_in_any_case() {
        let info = Service::info();
        for word in ["service", "Services", "ksvc", "SVC", "kservice"] {
            assert!(info.is_named(word), "{word}");
        }
        assert!(!info.is_named("serv"));
        assert_eq!(info.group(), "serving.knative.dev");
        assert!(!Revision::info().writable);
        assert!(!Secret::info().watchable);
        assert_eq!(ConfigMap::info().group(), "");
    }
}
