//! Kubernetes `v1` Secrets and ConfigMaps, and a container's references to them
//! (`env[].valueFrom.secretKeyRef|configMapKeyRef`, `envFrom[].secretRef|configMapRef`).

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Container;
use crate::meta::ObjectMeta;
use crate::validate::{FieldError, ValidationError, validate_name};

/// The API version of Kubernetes' core kinds.
pub const CORE_API_VERSION: &str = "v1";
/// Kubernetes' limit on the data of one Secret or ConfigMap.
pub const MAX_CONFIG_DATA_BYTES: usize = 1024 * 1024;

fn core_api_version() -> String {
    CORE_API_VERSION.into()
}

/// A `v1` Secret: `data` holds base64 values, `stringData` plain ones (merged into `data`
/// when written, as Kubernetes does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default = "core_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub secret_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A `v1` ConfigMap: `data` holds text values, `binaryData` base64 ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default = "core_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl Secret {
    /// Every key's value: `data` decoded, then `stringData` over it. Call after validation.
    pub fn values(&self) -> BTreeMap<String, Vec<u8>> {
        let mut values: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .filter_map(|(k, v)| base64::engine::general_purpose::STANDARD.decode(v).ok().map(|v| (k.clone(), v)))
            .collect();
        values.extend(self.string_data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
        values
    }
}

impl ConfigMap {
    /// Every key's value: `data`, then `binaryData` decoded. Call after validation.
    pub fn values(&self) -> BTreeMap<String, Vec<u8>> {
        let mut values: BTreeMap<String, Vec<u8>> =
            self.data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        values.extend(
            self.binary_data
                .iter()
                .filter_map(|(k, v)| base64::engine::general_purpose::STANDARD.decode(v).ok().map(|v| (k.clone(), v))),
        );
        values
    }
}

/// A data key: Kubernetes' `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
fn check_data_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    if key == "." || key == ".." {
        return Err("must not be . or ..".into());
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("may hold only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

fn check_core_identity(errors: &mut Vec<FieldError>, api_version: &str, kind: &str, expected: &str, meta: &ObjectMeta) {
    let mut error = |field: &str, message: String| errors.push(FieldError { field: field.into(), message });
    if api_version != CORE_API_VERSION {
        error("apiVersion", format!("must be {CORE_API_VERSION}"));
    }
    if kind != expected {
        error("kind", format!("must be {expected}"));
    }
    if let Err(m) = validate_name(&meta.name, 253) {
        error("metadata.name", m);
    }
}

/// Checks keys, base64 values and the total size of one data map.
fn check_data(errors: &mut Vec<FieldError>, field: &str, data: &BTreeMap<String, String>, base64: bool) -> usize {
    let mut size = 0;
    for (key, value) in data {
        if let Err(m) = check_data_key(key) {
            errors.push(FieldError { field: format!("{field}[{key}]"), message: m });
        }
        if base64 && base64::engine::general_purpose::STANDARD.decode(value).is_err() {
            errors.push(FieldError { field: format!("{field}[{key}]"), message: "is not valid base64".into() });
        }
        size += key.len() + value.len();
    }
    size
}

fn check_size(errors: &mut Vec<FieldError>, size: usize) {
    if size > MAX_CONFIG_DATA_BYTES {
        errors.push(FieldError {
            field: "data".into(),
            message: format!("holds {size} bytes; at most {MAX_CONFIG_DATA_BYTES} are allowed"),
        });
    }
}

fn into_result(errors: Vec<FieldError>) -> Result<(), ValidationError> {
    if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
}

pub fn validate_secret(secret: &Secret) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_core_identity(&mut errors, &secret.api_version, &secret.kind, "Secret", &secret.metadata);
    let size = check_data(&mut errors, "data", &secret.data, true)
        + check_data(&mut errors, "stringData", &secret.string_data, false);
    check_size(&mut errors, size);
    into_result(errors)
}

pub fn validate_config_map(config_map: &ConfigMap) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    check_core_identity(&mut errors, &config_map.api_version, &config_map.kind, "ConfigMap", &config_map.metadata);
    let size = check_data(&mut errors, "data", &config_map.data, false)
        + check_data(&mut errors, "binaryData", &config_map.binary_data, true);
    for key in config_map.data.keys().filter(|k| config_map.binary_data.contains_key(*k)) {
        errors.push(FieldError { field: format!("binaryData[{key}]"), message: "is also a key of data".into() });
    }
    check_size(&mut errors, size);
    into_result(errors)
}

/// `secretKeyRef` / `configMapKeyRef`: one key of a named Secret or ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `env[].valueFrom`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `secretRef` / `configMapRef` of `envFrom`: every key of a named Secret or ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameSelector {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `envFrom[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NameSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<NameSelector>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Which kind of object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    Secret,
    ConfigMap,
}

impl ConfigKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Secret => "secret",
            ConfigKind::ConfigMap => "configmap",
        }
    }
}

/// The one of two references that is given (a Secret's first, as validation allows one).
fn selected<'s, T>(secret: &'s Option<T>, config_map: &'s Option<T>) -> Option<(ConfigKind, &'s T)> {
    match (secret, config_map) {
        (Some(s), _) => Some((ConfigKind::Secret, s)),
        (None, Some(c)) => Some((ConfigKind::ConfigMap, c)),
        (None, None) => None,
    }
}

impl EnvVarSource {
    /// The key this variable reads.
    pub fn selected(&self) -> Option<(ConfigKind, &KeySelector)> {
        selected(&self.secret_key_ref, &self.config_map_key_ref)
    }
}

impl EnvFromSource {
    /// The object whose keys become variables.
    pub fn selected(&self) -> Option<(ConfigKind, &NameSelector)> {
        selected(&self.secret_ref, &self.config_map_ref)
    }
}

impl Container {
    /// The Secrets and ConfigMaps the container's environment reads, in order.
    pub fn config_references(&self) -> Vec<(ConfigKind, String)> {
        let from = self.env_from.iter().filter_map(|f| f.selected().map(|(kind, r)| (kind, r.name.clone())));
        let keys =
            self.env.iter().filter_map(|e| e.value_from.as_ref()?.selected().map(|(kind, r)| (kind, r.name.clone())));
        let mut refs: Vec<(ConfigKind, String)> = from.chain(keys).collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// The container's environment with its references resolved through `lookup` (the
    /// values of a Secret or ConfigMap, `None` when it does not exist): `envFrom` first,
    /// then `env` in order (a later name replaces an earlier one, as in Kubernetes). Keys
    /// of `envFrom` that are not variable names are skipped. Errors name what is missing.
    pub fn resolve_environment(
        &self,
        lookup: impl Fn(ConfigKind, &str) -> Option<BTreeMap<String, Vec<u8>>>,
    ) -> Result<Vec<(String, String)>, String> {
        let text = |kind: ConfigKind, name: &str, key: &str, bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| format!("key {key:?} of {} {name:?} is not UTF-8 text", kind.as_str()))
        };
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        };
        for source in &self.env_from {
            let Some((kind, selector)) = source.selected() else { continue };
            let Some(values) = lookup(kind, &selector.name) else {
                if selector.optional == Some(true) {
                    continue;
                }
                return Err(format!("{} {:?} not found", kind.as_str(), selector.name));
            };
            let prefix = source.prefix.as_deref().unwrap_or("");
            for (key, bytes) in values {
                let name = format!("{prefix}{key}");
                if crate::validate::check_env_name(&name).is_ok() {
                    let value = text(kind, &selector.name, &key, bytes)?;
                    set(&mut env, name, value);
                }
            }
        }
        for var in &self.env {
            let Some((kind, selector)) = var.value_from.as_ref().and_then(EnvVarSource::selected) else {
                set(&mut env, var.name.clone(), var.value.clone());
                continue;
            };
            let optional = selector.optional == Some(true);
            let value = match lookup(kind, &selector.name) {
                None if optional => continue,
                None => return Err(format!("{} {:?} not found", kind.as_str(), selector.name)),
                Some(mut values) => match values.remove(&selector.key) {
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "key {:?} not found in {} {:?}",
                            selector.key,
                            kind.as_str(),
                            selector.name
                        ));
                    }
                    Some(bytes) => text(kind, &selector.name, &selector.key, bytes)?,
                },
            };
            set(&mut env, var.name.clone(), value);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvVar;

    fn lookup(kind: ConfigKind, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match (kind, name) {
            (ConfigKind::Secret, "db") => Some(BTreeMap::from([
                ("password".to_string(), b"s3cret".to_vec()),
                ("user".to_string(), b"app".to_vec()),
                ("not-a-name".to_string(), b"x".to_vec()),
            ])),
            (ConfigKind::ConfigMap, "settings") => Some(BTreeMap::from([("MODE".to_string(), b"fast".to_vec())])),
            _ => None,
        }
    }

    fn secret_key(name: &str, key: &str, optional: Option<bool>) -> Option<EnvVarSource> {
        Some(EnvVarSource {
            secret_key_ref: Some(KeySelector { name: name.into(), key: key.into(), optional }),
            ..Default::default()
        })
    }

    #[test]
    fn env_from_then_env_with_later_names_winning_and_missing_ones_named() {
        let env_from = vec![
            EnvFromSource {
                prefix: Some("DB_".into()),
                secret_ref: Some(NameSelector { name: "db".into(), optional: None }),
                ..Default::default()
            },
            EnvFromSource {
                config_map_ref: Some(NameSelector { name: "settings".into(), optional: None }),
                ..Default::default()
            },
        ];
        let env = vec![
            EnvVar { name: "MODE".into(), value: "slow".into(), ..Default::default() },
            EnvVar { name: "PW".into(), value_from: secret_key("db", "password", None), ..Default::default() },
            EnvVar { name: "OPT".into(), value_from: secret_key("nope", "x", Some(true)), ..Default::default() },
        ];
        let mut c = Container { env_from, env, ..Default::default() };
        let env = c.resolve_environment(lookup).expect("resolves");
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_password"), Some("s3cret"));
        assert_eq!(get("DB_not-a-name"), None, "keys that are not variable names are skipped");
        assert_eq!(get("MODE"), Some("slow"));
        assert_eq!(get("PW"), Some("s3cret"));
        assert_eq!(get("OPT"), None);
        assert_eq!(
            c.config_references(),
            vec![
                (ConfigKind::Secret, "db".into()),
                (ConfigKind::Secret, "nope".into()),
                (ConfigKind::ConfigMap, "settings".into())
            ]
        );

        c.env.push(EnvVar { name: "X".into(), value_from: secret_key("db", "missing", None), ..Default::default() });
        assert_eq!(
            c.resolve_environment(lookup).expect_err("missing key"),
            r#"key "missing" not found in secret "db""#
        );
        c.env.push(EnvVar { name: "Y".into(), value_from: secret_key("gone", "k", None), ..Default::default() });
        c.env.remove(3);
        assert_eq!(c.resolve_environment(lookup).expect_err("missing secret"), r#"secret "gone" not found"#);
    }

    #[test]
    fn secrets_and_config_maps_are_checked_like_kubernetes() {
        let mut s = Secret { kind: "Secret".into(), api_version: "v1".into(), ..Default::default() };
        s.metadata.name = "db".into();
        s.data.insert("password".into(), "czNjcmV0".into());
        s.string_data.insert("user".into(), "app".into());
        assert!(validate_secret(&s).is_ok());
        assert_eq!(s.values()["password"], b"s3cret");
        assert_eq!(s.values()["user"], b"app");
        s.data.insert("bad key".into(), "!!".into());
        let err = validate_secret(&s).expect_err("bad key and base64");
        assert_eq!(err.errors.len(), 2, "{err:?}");
        assert!(err.errors.iter().all(|e| e.field == "data[bad key]"));

        let mut m = ConfigMap { kind: "ConfigMap".into(), api_version: "v1".into(), ..Default::default() };
        m.metadata.name = "settings".into();
        m.data.insert("big".into(), "x".repeat(MAX_CONFIG_DATA_BYTES));
        let err = validate_config_map(&m).expect_err("too big");
        assert_eq!(err.errors[0].field, "data");
    }
}
