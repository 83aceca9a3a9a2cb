//! Knative Eventing shapes: `eventing.knative.dev/v1` Broker and Trigger. Filters and delivery
//! settings stay JSON here; the eventing crate compiles and checks them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{Condition, ObjectMeta};
use crate::validate::{FieldError, ValidationError, validate_name};

pub const EVENTING_API_VERSION: &str = "eventing.knative.dev/v1";
pub const SOURCES_API_VERSION: &str = "sources.knative.dev/v1";

fn default_api_version() -> String {
    EVENTING_API_VERSION.into()
}

/// An addressable's URL (`status.address.url`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Addressable {
    pub url: String,
}

/// A `Broker`: a durable event log with an HTTP ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Broker {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BrokerSpec,
    #[serde(default)]
    pub status: EventingStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Default delivery for the broker's triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A `Trigger`: the events of a broker that match a filter, delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TriggerSpec,
    #[serde(default)]
    pub status: EventingStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    #[serde(default)]
    pub broker: String,
    /// Legacy attribute filter: `{ attributes: { type: "x" } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// Subscriptions-API filters (exact, prefix, suffix, all, any, not, cesql).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Value>,
    pub subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Where events go: a reference to a serval Service, or a URI (or both: the URI is then
/// resolved relative to the reference, as Knative does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KReference {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_uri: Option<String>,
}

fn check_identity(errors: &mut Vec<FieldError>, api_version: &str, kind: &str, expected: &str, meta: &ObjectMeta) {
    let wanted = if expected == "PingSource" { SOURCES_API_VERSION } else { EVENTING_API_VERSION };
    if api_version != wanted {
        errors.push(FieldError { field: "apiVersion".into(), message: format!("must be {wanted}") });
    }
    if kind != expected {
        errors.push(FieldError { field: "kind".into(), message: format!("must be {expected}") });
    }
    if let Err(m) = validate_name(&meta.name, 63) {
        errors.push(FieldError { field: "metadata.name".into(), message: m });
    }
}

fn result(errors: Vec<FieldError>) -> Result<(), ValidationError> {
    if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
}

pub fn validate_broker(broker: &Broker) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(&mut errors, &broker.api_version, &broker.kind, "Broker", &broker.metadata);
    result(errors)
}

/// serval's Trigger annotation: how many of the trigger's events are delivered at once
/// (events waiting for a retry included).
pub const DELIVERY_CONCURRENCY: &str = "serval.dev/delivery-concurrency";
/// The delivery concurrency of a trigger without the annotation.
pub const DEFAULT_DELIVERY_CONCURRENCY: u32 = 100;
/// The largest delivery concurrency a trigger may ask for.
pub const MAX_DELIVERY_CONCURRENCY: u32 = 10_000;

/// The trigger's delivery concurrency: its [`DELIVERY_CONCURRENCY`] annotation (an integer
/// from 1 to [`MAX_DELIVERY_CONCURRENCY`]) or the default.
pub fn delivery_concurrency(trigger: &Trigger) -> Result<u32, FieldError> {
    let Some(raw) = trigger.metadata.annotations.get(DELIVERY_CONCURRENCY) else {
        return Ok(DEFAULT_DELIVERY_CONCURRENCY);
    };
    raw.trim().parse::<u32>().ok().filter(|n| (1..=MAX_DELIVERY_CONCURRENCY).contains(n)).ok_or_else(|| FieldError {
        field: format!("metadata.annotations[{DELIVERY_CONCURRENCY}]"),
        message: format!("{raw:?} must be an integer from 1 to {MAX_DELIVERY_CONCURRENCY}"),
    })
}

/// Checks the trigger's shape; filters and delivery are checked by the eventing crate.
pub fn validate_trigger(trigger: &Trigger) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(&mut errors, &trigger.api_version, &trigger.kind, "Trigger", &trigger.metadata);
    if let Err(e) = delivery_concurrency(trigger) {
        errors.push(e);
    }
    if let Err(m) = validate_name(&trigger.spec.broker, 63) {
        errors.push(FieldError { field: "spec.broker".into(), message: m });
    }
    crate::messaging::check_destination_shape(&trigger.spec.subscriber, "spec.subscriber", &mut errors);
    result(errors)
}

/// A `PingSource`: a cron schedule that emits `dev.knative.sources.ping` events to a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSource {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PingSourceSpec,
    #[serde(default)]
    pub status: EventingStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSourceSpec {
    /// Cron: 5 fields, or 6 with seconds first.
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub sink: Destination,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Checks the source's shape; the schedule and time zone are checked by the eventing crate.
pub fn validate_ping_source(source: &PingSource) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_identity(&mut errors, &source.api_version, &source.kind, "PingSource", &source.metadata);
    if source.spec.schedule.trim().is_empty() {
        errors.push(FieldError { field: "spec.schedule".into(), message: "is required".into() });
    }
    if source.spec.data.is_some() && source.spec.data_base64.is_some() {
        errors
            .push(FieldError { field: "spec.dataBase64".into(), message: "give data or dataBase64, not both".into() });
    }
    crate::messaging::check_destination_shape(&source.spec.sink, "spec.sink", &mut errors);
    result(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(json: &str) -> Trigger {
        serde_json::from_str(json).expect("decodes")
    }

    #[test]
    fn delivery_concurrency_comes_from_the_annotation_within_range() {
        let mut t = trigger(
            r#"{"apiVersion":"eventing.knative.dev/v1","kind":"Trigger","metadata":{"name":"t"},
                "spec":{"broker":"default","subscriber":{"uri":"http://127.0.0.1:1/"}}}"#,
        );
        assert_eq!(delivery_concurrency(&t), Ok(DEFAULT_DELIVERY_CONCURRENCY));
        t.metadata.annotations.insert(DELIVERY_CONCURRENCY.into(), "7".into());
        assert_eq!(delivery_concurrency(&t), Ok(7));
        assert!(validate_trigger(&t).is_ok());
        for bad in ["0", "-1", "ten", "10001"] {
            t.metadata.annotations.insert(DELIVERY_CONCURRENCY.into(), bad.into());
            let err = validate_trigger(&t).expect_err(bad);
            assert_eq!(err.errors[0].field, "metadata.annotations[serval.dev/delivery-concurrency]", "{bad}");
        }
    }

    #[test]
    fn triggers_need_a_broker_and_a_subscriber() {
        let ok = trigger(
            r#"{"apiVersion":"eventing.knative.dev/v1","kind":"Trigger","metadata":{"name":"t"},
                "spec":{"broker":"default","subscriber":{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"s"}}}}"#,
        );
        assert!(validate_trigger(&ok).is_ok());
        let bad = trigger(
            r#"{"apiVersion":"eventing.knative.dev/v1","kind":"Trigger","metadata":{"name":"t"},
                "spec":{"broker":"","subscriber":{"uri":"ftp://x"}}}"#,
        );
        let fields: Vec<String> =
            validate_trigger(&bad).expect_err("invalid").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.broker", "spec.subscriber.uri"]);
    }
}
