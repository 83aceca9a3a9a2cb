//! serval's `Workflow` (`serval.dev/v1alpha1`): a CNCF Serverless Workflow DSL 1.0 document
//! (`spec`, as written) that runs on serval's engine. `serval apply -f` takes the DSL
//! document itself and wraps it (name and namespace from its `document`). The DSL is
//! checked by the engine when the object is written; this checks the wrapper.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{Condition, ObjectMeta};
use crate::validate::{FieldError, ValidationError, validate_name};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The DSL document.
    #[serde(default)]
    pub spec: Value,
    #[serde(default)]
    pub status: WorkflowStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where to POST CloudEvents for its `listen` tasks and `schedule.on` (the gateway's
    /// `/w/<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<crate::Addressable>,
}

/// The trigger a workflow owns to receive its broker's events: `<workflow>-workflow`.
pub fn workflow_trigger(workflow: &str) -> String {
    format!("{workflow}-workflow")
}

/// The annotation naming the Broker a workflow's `emit` tasks publish to (`default`).
pub const WORKFLOW_BROKER_ANNOTATION: &str = "serval.dev/broker";

pub fn validate_workflow(workflow: &Workflow) -> Result<Vec<String>, ValidationError> {
    let mut errors = Vec::new();
    if workflow.api_version != crate::SERVAL_API_VERSION {
        errors
            .push(FieldError { field: "apiVersion".into(), message: format!("must be {}", crate::SERVAL_API_VERSION) });
    }
    if workflow.kind != "Workflow" {
        errors.push(FieldError { field: "kind".into(), message: "must be Workflow".into() });
    }
    if let Err(m) = validate_name(&workflow.metadata.name, 63) {
        errors.push(FieldError { field: "metadata.name".into(), message: m });
    }
    if !workflow.spec.get("document").is_some_and(Value::is_object) {
        errors.push(FieldError { field: "spec.document".into(), message: "is required (a DSL 1.0 document)".into() });
    }
    if errors.is_empty() { Ok(Vec::new()) } else { Err(ValidationError { errors }) }
}

/// A DSL document (it has `document.dsl` and no `apiVersion`) as the Workflow object
/// `apply` writes: named by `document.name`, in `namespace`.
pub fn workflow_from_document(document: &Value, namespace: &str) -> Option<Value> {
    let dsl = document.get("document")?.get("dsl")?;
    if document.get("apiVersion").is_some() || !(dsl.is_string() || dsl.is_number()) {
        return None;
    }
    let name = document["document"]["name"].as_str()?;
    Some(serde_json::json!({
        "apiVersion": crate::SERVAL_API_VERSION, "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": document,
    }))
}
