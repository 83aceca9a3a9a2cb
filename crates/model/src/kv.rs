//! serval's `KeyValueStore` (`serval.dev/v1alpha1`): a named key-value store of a namespace
//! for its functions (every namespace also has `default`, without an object). The entries
//! live in the store's key-value table, not in the object; deleting it removes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{Condition, ObjectMeta};
use crate::validate::{FieldError, ValidationError, validate_name};

pub const SERVAL_API_VERSION: &str = "serval.dev/v1alpha1";
/// The store every namespace has without a KeyValueStore object.
pub const DEFAULT_KV_STORE: &str = "default";
/// The annotation of a Service naming the stores (comma-separated) its functions may open;
/// all of their namespace's when absent.
pub const KV_STORES_ANNOTATION: &str = "serval.dev/kv-stores";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueStore {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BTreeMap<String, Value>,
    #[serde(default)]
    pub status: KeyValueStoreStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueStoreStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

pub fn validate_key_value_store(store: &KeyValueStore) -> Result<Vec<String>, ValidationError> {
    let mut errors = Vec::new();
    if store.api_version != SERVAL_API_VERSION {
        errors.push(FieldError { field: "apiVersion".into(), message: format!("must be {SERVAL_API_VERSION}") });
    }
    if store.kind != "KeyValueStore" {
        errors.push(FieldError { field: "kind".into(), message: "must be KeyValueStore".into() });
    }
    if let Err(m) = validate_name(&store.metadata.name, 63) {
        errors.push(FieldError { field: "metadata.name".into(), message: m });
    }
    if store.metadata.name == DEFAULT_KV_STORE {
        errors.push(FieldError {
            field: "metadata.name".into(),
            message: "every namespace has the store default already".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    Ok(store.spec.keys().map(|k| format!("spec.{k}: unknown field, ignored")).collect())
}

/// The stores a Service's functions may open (`serval.dev/kv-stores`), `None` for all.
pub fn kv_stores_of(annotation: Option<&str>) -> Option<Vec<String>> {
    let stores: Vec<String> =
        annotation?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    Some(stores)
}
