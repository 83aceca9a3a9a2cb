//! Knative's `sources.knative.dev/v1` SinkBinding and ContainerSource. A SinkBinding gives
//! the serval Services it names or selects `K_SINK` (its resolved sink) and
//! `K_CE_OVERRIDES`; a ContainerSource is a container run at one instance or more with
//! such a binding (it sends its events itself).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eventing::Destination;
use crate::meta::LabelSelector;
use crate::sources::{CeOverrides, Source, SourceSpec};
use crate::validate::FieldError;
use crate::{RevisionTemplate, SERVING_API_VERSION};

/// What a SinkBinding binds: serval Services by name or by labels. Kubernetes workload
/// kinds (`apps/v1 Deployment`, …) are taken as the serval Services of that name or those
/// labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingSubject {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl BindingSubject {
    /// Whether the Service `name` with `labels` (its own and its template's) is bound.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        match (&self.name, &self.selector) {
            (Some(wanted), _) => wanted == name,
            (None, Some(selector)) => selector.matches(labels),
            (None, None) => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkBindingSpec {
    pub subject: BindingSubject,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A container that sends events to `K_SINK`, kept running (one instance or more).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSourceSpec {
    pub template: RevisionTemplate,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

pub type SinkBinding = Source<SinkBindingSpec>;
pub type ContainerSource = Source<ContainerSourceSpec>;

/// The Service a ContainerSource runs (Knative names its Deployment so).
pub fn container_source_service(source: &str) -> String {
    format!("{source}-deployment")
}

/// The SinkBinding a ContainerSource's Service is bound by.
pub fn container_source_binding(source: &str) -> String {
    format!("{source}-sinkbinding")
}

/// Knative's kinds a subject may name (each taken as serval Services).
const WORKLOAD_KINDS: [&str; 6] = ["Service", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"];

impl SourceSpec for SinkBindingSpec {
    fn sink(&self) -> &Destination {
        &self.sink
    }
    fn ce_overrides(&self) -> Option<&CeOverrides> {
        self.ce_overrides.as_ref()
    }
    fn check(&self, errors: &mut Vec<FieldError>) {
        let subject = &self.subject;
        if !WORKLOAD_KINDS.contains(&subject.kind.as_str()) {
            errors.push(FieldError {
                field: "spec.subject.kind".into(),
                message: format!(
                    "{:?} must be a Service (or a workload kind: {})",
                    subject.kind,
                    WORKLOAD_KINDS[1..].join(", ")
                ),
            });
        }
        if subject.name.is_some() == subject.selector.is_some() {
            errors.push(FieldError { field: "spec.subject".into(), message: "give name or selector".into() });
        }
        if let Some(selector) = &subject.selector {
            selector.check("spec.subject.selector", errors);
        }
    }
    fn warnings(&self) -> Vec<String> {
        let subject = &self.subject;
        if subject.kind == "Service" && subject.api_version == SERVING_API_VERSION {
            return Vec::new();
        }
        let which = match &subject.name {
            Some(name) => format!("the serval Service {name:?}"),
            None => "the serval Services with those labels".into(),
        };
        vec![format!("spec.subject: {} {} is taken as {which}", subject.api_version, subject.kind)]
    }
}

impl SourceSpec for ContainerSourceSpec {
    fn sink(&self) -> &Destination {
        &self.sink
    }
    fn ce_overrides(&self) -> Option<&CeOverrides> {
        self.ce_overrides.as_ref()
    }
    fn check(&self, errors: &mut Vec<FieldError>) {
        if self.template.spec.containers.len() != 1 {
            errors.push(FieldError {
                field: "spec.template.spec.containers".into(),
                message: "give exactly one container".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    #[test]
    fn sink_bindings_name_or_select_their_subject() {
        let binding: SinkBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "sources.knative.dev/v1", "kind": "SinkBinding", "metadata": {"name": "b"},
            "spec": {"subject": {"apiVersion": "apps/v1", "kind": "Deployment",
                                  "selector": {"matchLabels": {"app": "node-server"}}},
                     "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}}}
        }))
        .expect("decodes");
        let warnings = binding.validate().expect("valid");
        assert_eq!(warnings, ["spec.subject: apps/v1 Deployment is taken as the serval Services with those labels"]);
        let labels: BTreeMap<String, String> = [("app".to_string(), "node-server".to_string())].into();
        assert!(binding.spec.subject.selects("anything", &labels));
        assert!(!binding.spec.subject.selects("anything", &BTreeMap::new()));

        let bad: SinkBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "sources.knative.dev/v1", "kind": "SinkBinding", "metadata": {"name": "b"},
            "spec": {"subject": {"apiVersion": "v1", "kind": "Pod", "name": "x",
                                  "selector": {"matchLabels": {"a": "b"}}},
                     "sink": {"uri": "http://127.0.0.1:1/"}}
        }))
        .expect("decodes");
        let fields: Vec<String> = bad.validate().expect_err("invalid").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.subject.kind", "spec.subject"]);
    }
}
