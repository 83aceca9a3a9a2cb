//! Event sources beyond PingSource: Knative's `sources.knative.dev/v1beta1` KafkaSource and
//! serval's `sources.serval.dev/v1alpha1` NatsSource, PostgresSource, FileSource and
//! WebhookSource. Each turns an external system into CloudEvents delivered to `spec.sink`
//! (any destination), with `spec.ceOverrides.extensions` added to every event.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eventing::Destination;
use crate::meta::{Condition, ObjectMeta};
use crate::validate::{FieldError, ValidationError, validate_name};

pub const KAFKA_SOURCE_API_VERSION: &str = "sources.knative.dev/v1beta1";
pub const SERVAL_SOURCES_API_VERSION: &str = "sources.serval.dev/v1alpha1";

/// Most entries of a source's lists (servers, topics, tables).
pub const MAX_SOURCE_LIST: usize = 100;

/// A source of one kind: `spec` is the kind's own (`S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: DeserializeOwned"))]
pub struct Source<S> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default)]
    pub status: SourceStatus,
}

/// `spec.ceOverrides`: extensions added to (or replacing those of) every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CeOverrides {
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_uri: Option<String>,
    /// Where it takes requests (a WebhookSource's ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<crate::Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Knative's KafkaSource: records of `topics` from the brokers at `bootstrapServers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    pub bootstrap_servers: Vec<String>,
    pub topics: Vec<String>,
    #[serde(default)]
    pub consumer_group: String,
    /// `earliest` or `latest` (the default): where a partition without a stored offset starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Messages of a NATS JetStream stream, through a durable pull consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsSourceSpec {
    /// `nats://host:port` URLs.
    pub servers: Vec<String>,
    pub stream: String,
    /// A subject filter (wildcards `*` and `>`); the stream's subjects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The durable consumer's name.
    pub consumer: String,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Row changes of PostgreSQL tables, through logical replication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSourceSpec {
    /// A libpq URL (`postgresql://user@host:port/db`).
    pub connection: String,
    /// An environment variable of the server holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// `schema.table` names.
    pub tables: Vec<String>,
    pub slot: String,
    pub publication: String,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Files dropped into a directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSourceSpec {
    pub path: String,
    /// A glob the file names match (all files when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default)]
    pub recursive: bool,
    /// `keep` (the default), `delete`, or `move:<dir>`: what happens to a file once its
    /// event was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A webhook's shared secret: given inline or read from a Secret's key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<crate::KeySelector>,
}

/// Any POST to `/s/<namespace>/<name>` on the gateway, as a CloudEvent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSourceSpec {
    /// The events' `type`; a `{header:Name}` in it is replaced by that request header
    /// (`com.github.{header:X-GitHub-Event}`). Default `dev.serval.webhook`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Request headers carried as extensions (lower-cased, non-alphanumerics removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The HMAC-SHA256 secret requests are signed with (`X-Hub-Signature-256` or
    /// `X-Signature-256: sha256=<hex>`); unsigned requests are taken when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<WebhookSecret>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Knative's ApiServerSource over serval's own resources: changes of the listed kinds in
/// the source's namespace, and (`v1 Event`) the platform's instance lifecycle events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSourceSpec {
    /// `Reference` (the default: the event names the object) or `Resource` (the event
    /// carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub resources: Vec<ApiServerResource>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One kind an ApiServerSource watches, optionally only objects with matching labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerResource {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<crate::LabelSelector>,
}

/// The kind (Kubernetes' `v1 Event`) that selects the platform's instance lifecycle events
/// in an ApiServerSource.
pub const INSTANCE_EVENTS_KIND: &str = "Event";

/// The modes of an ApiServerSource.
pub const API_SERVER_MODES: [&str; 2] = ["Reference", "Resource"];

impl ApiServerSourceSpec {
    /// Whether events carry the whole object (`Resource` mode).
    pub fn carries_objects(&self) -> bool {
        self.mode.as_deref() == Some("Resource")
    }
}

/// The kinds an ApiServerSource can watch: serval's stored kinds that are watched (not
/// Secrets, whose stored form is sealed, nor the Configuration and Route views).
pub fn watchable_kinds() -> Vec<crate::KindInfo> {
    crate::builtin_kinds().into_iter().filter(|k| k.watchable).collect()
}

pub type KafkaSource = Source<KafkaSourceSpec>;
pub type ApiServerSource = Source<ApiServerSourceSpec>;
pub type NatsSource = Source<NatsSourceSpec>;
pub type PostgresSource = Source<PostgresSourceSpec>;
pub type FileSource = Source<FileSourceSpec>;
pub type WebhookSource = Source<WebhookSourceSpec>;

/// What every source spec has.
pub trait SourceSpec {
    fn sink(&self) -> &Destination;
    fn ce_overrides(&self) -> Option<&CeOverrides>;
    /// The spec's own checks.
    fn check(&self, errors: &mut Vec<FieldError>);
    /// Fields accepted and not acted on.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

macro_rules! common {
    () => {
        fn sink(&self) -> &Destination {
            &self.sink
        }
        fn ce_overrides(&self) -> Option<&CeOverrides> {
            self.ce_overrides.as_ref()
        }
    };
}

fn required(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError { field: field.into(), message: "is required".into() });
    }
}

fn list(errors: &mut Vec<FieldError>, field: &str, values: &[String]) {
    if values.is_empty() || values.len() > MAX_SOURCE_LIST {
        errors.push(FieldError { field: field.into(), message: format!("give 1 to {MAX_SOURCE_LIST} entries") });
    }
    for (i, v) in values.iter().enumerate() {
        required(errors, &format!("{field}[{i}]"), v);
    }
}

impl SourceSpec for KafkaSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        list(errors, "spec.bootstrapServers", &self.bootstrap_servers);
        list(errors, "spec.topics", &self.topics);
        if let Some(o) = self.initial_offset.as_deref().filter(|o| !matches!(*o, "earliest" | "latest")) {
            errors.push(FieldError {
                field: "spec.initialOffset".into(),
                message: format!("{o:?} must be earliest or latest"),
            });
        }
    }
}

impl SourceSpec for NatsSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        list(errors, "spec.servers", &self.servers);
        required(errors, "spec.stream", &self.stream);
        required(errors, "spec.consumer", &self.consumer);
    }
}

impl SourceSpec for PostgresSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        if !(self.connection.starts_with("postgresql://") || self.connection.starts_with("postgres://")) {
            errors.push(FieldError {
                field: "spec.connection".into(),
                message: "must be a libpq URL (postgresql://user@host:port/database)".into(),
            });
        }
        list(errors, "spec.tables", &self.tables);
        for (i, t) in self.tables.iter().enumerate() {
            if t.split('.').count() != 2 {
                errors.push(FieldError {
                    field: format!("spec.tables[{i}]"),
                    message: format!("{t:?} must be schema.table"),
                });
            }
        }
        required(errors, "spec.slot", &self.slot);
        required(errors, "spec.publication", &self.publication);
    }
}

impl SourceSpec for FileSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        if !self.path.starts_with('/') {
            errors.push(FieldError { field: "spec.path".into(), message: "must be an absolute directory path".into() });
        }
        match self.after.as_deref() {
            None | Some("keep" | "delete") => {}
            Some(m) if m.strip_prefix("move:").is_some_and(|d| d.starts_with('/')) => {}
            Some(other) => errors.push(FieldError {
                field: "spec.after".into(),
                message: format!("{other:?} must be keep, delete or move:<absolute directory>"),
            }),
        }
    }
}

impl SourceSpec for WebhookSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        if let Some(s) = &self.secret
            && s.value.is_some() == s.secret_key_ref.is_some()
        {
            errors.push(FieldError { field: "spec.secret".into(), message: "give value or secretKeyRef".into() });
        }
        if self.headers.len() > MAX_SOURCE_LIST {
            errors.push(FieldError { field: "spec.headers".into(), message: format!("at most {MAX_SOURCE_LIST}") });
        }
    }
}

impl SourceSpec for ApiServerSourceSpec {
    common!();
    fn check(&self, errors: &mut Vec<FieldError>) {
        if let Some(mode) = self.mode.as_deref().filter(|m| !API_SERVER_MODES.contains(m)) {
            errors.push(FieldError {
                field: "spec.mode".into(),
                message: format!("{mode:?} must be Reference or Resource"),
            });
        }
        if self.resources.is_empty() || self.resources.len() > MAX_SOURCE_LIST {
            errors.push(FieldError {
                field: "spec.resources".into(),
                message: format!("give 1 to {MAX_SOURCE_LIST} entries"),
            });
        }
        let kinds = watchable_kinds();
        for (i, r) in self.resources.iter().enumerate() {
            if r.kind != INSTANCE_EVENTS_KIND && !kinds.iter().any(|k| k.kind == r.kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
                errors.push(FieldError {
                    field: format!("spec.resources[{i}].kind"),
                    message: format!(
                        "{:?} is not a kind serval watches: give one of {}, or v1 Event for instance lifecycle events",
                        r.kind,
                        names.join(", ")
                    ),
                });
            }
            if let Some(selector) = &r.selector {
                selector.check(&format!("spec.resources[{i}].selector"), errors);
            }
        }
    }
    fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .unknown
            .keys()
            .map(|k| format!("spec.{k} is accepted and ignored (serval watches the source's own namespace)"))
            .collect();
        let kinds = watchable_kinds();
        for (i, r) in self.resources.iter().enumerate() {
            if r.kind == INSTANCE_EVENTS_KIND {
                if r.selector.is_some() {
                    warnings.push(format!("spec.resources[{i}].selector is ignored for instance lifecycle events"));
                }
            } else if let Some(k) = kinds.iter().find(|k| k.kind == r.kind && k.api_version != r.api_version) {
                warnings.push(format!(
                    "spec.resources[{i}]: {} {} is taken as serval's {} {}",
                    r.api_version, r.kind, k.api_version, k.kind
                ));
            }
        }
        warnings
    }
}

/// The annotation that lets a source post events to an HTTP sink several at a time
/// (`unordered`) instead of one after the other (`ordered`, the default). Knative's
/// annotation of the Kafka broker's triggers is taken too.
pub const DELIVERY_ORDER: &str = "serval.dev/delivery-order";
pub const KNATIVE_DELIVERY_ORDER: &str = "kafka.eventing.knative.dev/delivery.order";

/// Whether a source's events may be delivered out of order (see [`DELIVERY_ORDER`]); the
/// error names the annotation with a value other than `ordered` or `unordered`.
pub fn delivers_unordered(meta: &ObjectMeta) -> Result<bool, FieldError> {
    let mut unordered = false;
    for key in [DELIVERY_ORDER, KNATIVE_DELIVERY_ORDER] {
        match meta.annotations.get(key).map(String::as_str) {
            None | Some("ordered") => {}
            Some("unordered") => unordered = true,
            Some(other) => {
                return Err(FieldError {
                    field: format!("metadata.annotations[{key}]"),
                    message: format!("{other:?} must be ordered or unordered"),
                });
            }
        }
    }
    Ok(unordered)
}

/// The annotation that makes a source post its events to an HTTP sink in batches of up to
/// this many, as one `application/cloudevents-batch+json` request each (the CloudEvents
/// HTTP binding's batched mode; AWS Lambda's `BatchSize` of an event source mapping). The
/// sink must take that content type; without the annotation each event is a request.
pub const DELIVERY_BATCH_SIZE: &str = "serval.dev/delivery-batch-size";
/// The largest batch a source may post at once.
pub const MAX_DELIVERY_BATCH_SIZE: usize = 1000;

/// How many events a source posts in one request (see [`DELIVERY_BATCH_SIZE`]): 1 without
/// the annotation; the error names it when it is not an integer from 1 to
/// [`MAX_DELIVERY_BATCH_SIZE`].
pub fn delivery_batch_size(meta: &ObjectMeta) -> Result<usize, FieldError> {
    let Some(value) = meta.annotations.get(DELIVERY_BATCH_SIZE) else { return Ok(1) };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_DELIVERY_BATCH_SIZE).contains(&n) => Ok(n),
        _ => Err(FieldError {
            field: format!("metadata.annotations[{DELIVERY_BATCH_SIZE}]"),
            message: format!("{value:?} must be an integer from 1 to {MAX_DELIVERY_BATCH_SIZE}"),
        }),
    }
}

/// Checks a source: identity, the kind's spec, the sink's shape, the overrides' names.
pub fn validate_source<S: SourceSpec>(
    source: &Source<S>,
    api_version: &str,
    kind: &str,
) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    if source.api_version != api_version {
        errors.push(FieldError { field: "apiVersion".into(), message: format!("must be {api_version}") });
    }
    if source.kind != kind {
        errors.push(FieldError { field: "kind".into(), message: format!("must be {kind}") });
    }
    if let Err(m) = validate_name(&source.metadata.name, 63) {
        errors.push(FieldError { field: "metadata.name".into(), message: m });
    }
    source.spec.check(&mut errors);
    if let Err(e) = delivers_unordered(&source.metadata) {
        errors.push(e);
    }
    if let Err(e) = delivery_batch_size(&source.metadata) {
        errors.push(e);
    }
    crate::check_destination_shape(source.spec.sink(), "spec.sink", &mut errors);
    for name in source.spec.ce_overrides().map(|o| o.extensions.keys()).into_iter().flatten() {
        if name.is_empty() || name.len() > 20 || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            errors.push(FieldError {
                field: format!("spec.ceOverrides.extensions.{name}"),
                message: "an extension name is 1 to 20 lower-case letters and digits".into(),
            });
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
}

/// SINK, READY, REASON and the live counters of a source (`status.counters`).
fn source_columns() -> Vec<crate::Column> {
    let mut columns = vec![crate::Column::new("SINK", "status.sinkUri")];
    columns.extend(crate::Column::readiness());
    for (name, field) in [("RECEIVED", "received"), ("DELIVERED", "delivered"), ("FAILED", "failed"), ("LAG", "lag")] {
        columns.push(crate::Column::new(name, &format!("status.counters.{field}")));
    }
    columns
}

macro_rules! source_resource {
    ($spec:ty, $kind:literal, $api:expr, $plural:literal) => {
        impl crate::Resource for Source<$spec> {
            const KIND: &'static str = $kind;
            const API_VERSION: &'static str = $api;
            const PLURAL: &'static str = $plural;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn validate(&self) -> Result<Vec<String>, ValidationError> {
                validate_source(self, $api, $kind)?;
                let mut warnings = crate::destination_warnings([("spec.sink".to_string(), self.spec.sink())]);
                warnings.extend(self.spec.warnings());
                Ok(warnings)
            }
            fn conditions(&self) -> &[Condition] {
                &self.status.conditions
            }
            fn columns() -> Vec<crate::Column> {
                source_columns()
            }
        }
    };
}

source_resource!(KafkaSourceSpec, "KafkaSource", KAFKA_SOURCE_API_VERSION, "kafkasources");
source_resource!(ApiServerSourceSpec, "ApiServerSource", crate::SOURCES_API_VERSION, "apiserversources");
source_resource!(crate::bindings::SinkBindingSpec, "SinkBinding", crate::SOURCES_API_VERSION, "sinkbindings");
source_resource!(
    crate::bindings::ContainerSourceSpec,
    "ContainerSource",
    crate::SOURCES_API_VERSION,
    "containersources"
);
source_resource!(NatsSourceSpec, "NatsSource", SERVAL_SOURCES_API_VERSION, "natssources");
source_resource!(PostgresSourceSpec, "PostgresSource", SERVAL_SOURCES_API_VERSION, "postgressources");
source_resource!(FileSourceSpec, "FileSource", SERVAL_SOURCES_API_VERSION, "filesources");
source_resource!(WebhookSourceSpec, "WebhookSource", SERVAL_SOURCES_API_VERSION, "webhooksources");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    #[test]
    fn sources_check_their_spec_sink_and_overrides() {
        let file: FileSource = serde_json::from_value(serde_json::json!({
            "apiVersion": SERVAL_SOURCES_API_VERSION, "kind": "FileSource", "metadata": {"name": "drops"},
            "spec": {"path": "relative", "after": "shred", "sink": {"uri": "http://127.0.0.1:1/"},
                     "ceOverrides": {"extensions": {"Bad-Name": "x", "team": "a"}}}
        }))
        .expect("decodes");
        let fields: Vec<String> = file.validate().expect_err("invalid").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.path", "spec.after", "spec.ceOverrides.extensions.Bad-Name"]);
        let kafka: KafkaSource = serde_json::from_value(serde_json::json!({
            "apiVersion": KAFKA_SOURCE_API_VERSION, "kind": "KafkaSource", "metadata": {"name": "k"},
            "spec": {"bootstrapServers": ["127.0.0.1:9092"], "topics": ["t"], "initialOffset": "earliest",
                     "sink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "s"}}}
        }))
        .expect("decodes");
        let warnings = kafka.validate().expect("valid");
        let mut unordered = kafka.clone();
        unordered.metadata.annotations.insert(KNATIVE_DELIVERY_ORDER.into(), "unordered".into());
        assert_eq!(delivers_unordered(&unordered.metadata), Ok(true));
        unordered.metadata.annotations.insert(DELIVERY_ORDER.into(), "sometimes".into());
        let fields: Vec<String> = unordered.validate().expect_err("bad").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["metadata.annotations[serval.dev/delivery-order]"]);
        let mut batched = kafka.clone();
        assert_eq!(delivery_batch_size(&batched.metadata), Ok(1));
        batched.metadata.annotations.insert(DELIVERY_BATCH_SIZE.into(), "250".into());
        assert_eq!(delivery_batch_size(&batched.metadata), Ok(250));
        for bad in ["0", "1001", "many", "-3"] {
            batched.metadata.annotations.insert(DELIVERY_BATCH_SIZE.into(), bad.into());
            let fields: Vec<String> = batched.validate().expect_err(bad).errors.into_iter().map(|e| e.field).collect();
            assert_eq!(fields, ["metadata.annotations[serval.dev/delivery-batch-size]"], "{bad}");
        }
        assert_eq!(warnings.len(), 1, "the Kubernetes Service sink is named: {warnings:?}");
    }
}
