//! Secrets and ConfigMaps: stored (a Secret's values sealed), read back (a Secret's values
//! redacted unless asked for), resolved into a revision's environment; a change of a value a
//! service reads rolls out a new revision of that service.

use std::collections::BTreeMap;

use base64::Engine;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serval_model::{
    ConfigKind, ConfigMap, Container, ObjectMeta, Resource, Revision, Secret, Service, validate_secret,
};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{ApplyMode, Change, Reconciler, carry_identity, decode, fill_identity, now_rfc3339};

/// What `get` shows instead of a Secret's value.
pub const REDACTED: &str = "<redacted>";
/// When it changes, the template changes, and a new revision runs the new values.
use serval_model::annotations::CONFIG_DIGEST;

/// How a Secret is stored: everything but its values in clear; the values (`data`, base64,
/// as one JSON object) sealed and bound to the Secret's namespace and name.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSecret {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    secret_type: String,
    sealed_data: String,
}

fn owner(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn encode_values(values: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    values.iter().map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v))).collect()
}

impl Controller {
    fn unseal(&self, stored: &StoredSecret) -> Result<BTreeMap<String, String>, ControlError> {
        let plain = self.sealer.open(&owner(&stored.metadata.namespace, &stored.metadata.name), &stored.sealed_data)?;
        serde_json::from_slice(&plain).map_err(|e| ControlError::Io(std::io::Error::other(e)))
    }

    fn secret_view(&self, stored: StoredSecret, reveal: bool) -> Result<Secret, ControlError> {
        let data = self.unseal(&stored)?;
        let data = if reveal { data } else { data.into_keys().map(|k| (k, REDACTED.to_string())).collect() };
        Ok(Secret {
            api_version: stored.api_version,
            kind: stored.kind,
            metadata: stored.metadata,
            secret_type: stored.secret_type,
            data,
            ..Default::default()
        })
    }

    /// Creates or updates a Secret (`stringData` is merged into `data`, as Kubernetes does).
    pub async fn apply_secret(
        &self,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        mode: ApplyMode,
    ) -> Result<(Secret, bool), ControlError> {
        let mut secret: Secret = decode(body, Secret::KIND)?;
        fill_identity(Secret::KIND, &mut secret.metadata.namespace, namespace, "metadata.namespace")?;
        if let Some(name) = name {
            fill_identity(Secret::KIND, &mut secret.metadata.name, name, "metadata.name")?;
        }
        validate_secret(&secret).map_err(|source| ControlError::Invalid { kind: Secret::KIND, source })?;
        let name = secret.metadata.name.clone();
        let name = name.as_str();
        let data = encode_values(&secret.values());
        let _guard = self.write_lock.lock().await;
        let existing: Option<StoredSecret> = self.store.get(Secret::KIND, namespace, name)?;
        let old_data = existing.as_ref().map(|s| self.unseal(s)).transpose()?;
        let changed = old_data.as_ref() != Some(&data);
        carry_identity(
            Secret::KIND,
            mode,
            &mut secret.metadata,
            existing.as_ref().map(|o| (&o.metadata, changed)),
            &now_rfc3339(),
        )?;
        let plain = serde_json::to_vec(&data).map_err(|e| ControlError::Io(std::io::Error::other(e)))?;
        let stored = StoredSecret {
            api_version: secret.api_version,
            kind: secret.kind,
            sealed_data: self.sealer.seal(&owner(namespace, name), &plain)?,
            metadata: secret.metadata,
            secret_type: secret.secret_type,
        };
        self.store.write(vec![WriteOp::put(Secret::KIND, namespace, name, &stored)?]).await?;
        self.roll_out_config_change(namespace, ConfigKind::Secret, name).await?;
        Ok((self.secret_view(stored, false)?, existing.is_none()))
    }

    pub fn get_secret(&self, namespace: &str, name: &str, reveal: bool) -> Result<Secret, ControlError> {
        let stored: StoredSecret = self
            .store
            .get(Secret::KIND, namespace, name)?
            .ok_or_else(|| ControlError::NotFound { kind: "Secret", namespace: namespace.into(), name: name.into() })?;
        self.secret_view(stored, reveal)
    }

    pub fn list_secrets(&self, namespace: Option<&str>) -> Result<Vec<Secret>, ControlError> {
        let stored: Vec<StoredSecret> = self.store.list(Secret::KIND, namespace)?;
        stored.into_iter().map(|s| self.secret_view(s, false)).collect()
    }

    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        self.get_secret(namespace, name, false)?;
        self.store.write(vec![WriteOp::delete(Secret::KIND, namespace, name)]).await?;
        self.roll_out_config_change(namespace, ConfigKind::Secret, name).await
    }

    pub fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ControlError> {
        self.store.get(ConfigMap::KIND, namespace, name)?.ok_or_else(|| ControlError::NotFound {
            kind: "ConfigMap",
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// The values of a Secret or ConfigMap, `None` when it does not exist (or cannot be read,
    /// which is logged).
    fn config_values(&self, kind: ConfigKind, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let values = match kind {
            ConfigKind::Secret => self.get_secret(namespace, name, true).map(|s| s.values()),
            ConfigKind::ConfigMap => self.get_config_map(namespace, name).map(|c| c.values()),
        };
        match values {
            Ok(values) => Some(values),
            Err(ControlError::NotFound { .. }) => None,
            Err(e) => {
                tracing::error!("reading {} {namespace}/{name}: {e}", kind.as_str());
                None
            }
        }
    }

    /// A container's environment with its Secret and ConfigMap references resolved; the
    /// error names what is missing.
    pub(super) fn resolve_environment(
        &self,
        namespace: &str,
        container: &Container,
    ) -> Result<Vec<(String, String)>, String> {
        container.resolve_environment(|kind, name| self.config_values(kind, namespace, name))
    }

    /// The revision's environment (with `K_SINK` and `K_CE_OVERRIDES` of its SinkBinding,
    /// and its key-value endpoint), or why it cannot be built.
    pub(super) fn revision_environment(&self, revision: &Revision) -> Result<Vec<(String, String)>, String> {
        let mut env = match revision.spec.containers.first() {
            Some(container) => self.resolve_environment(&revision.metadata.namespace, container)?,
            None => Vec::new(),
        };
        env.extend(Controller::bound_environment(revision));
        env.extend(self.kv_environment(revision));
        Ok(env)
    }

    /// Sets (or removes) the template's [`CONFIG_DIGEST`]: a keyed digest of what the
    /// container's references resolve to now (the values, or what is missing).
    pub(super) fn stamp_config_digest(&self, service: &mut Service) {
        let annotations = &mut service.spec.template.metadata.annotations;
        let Some(container) = service.spec.template.spec.containers.first() else { return };
        if container.config_references().is_empty() {
            annotations.remove(CONFIG_DIGEST);
            return;
        }
        let resolved = self.resolve_environment(&service.metadata.namespace, container);
        let text = serde_json::to_vec(&resolved).unwrap_or_default();
        annotations.insert(CONFIG_DIGEST.into(), self.sealer.digest(&text));
    }

    /// After a Secret or ConfigMap changed: every service of the namespace that reads it is
    /// written again, which makes a new revision where the resolved values changed.
    /// Called under the write lock.
    async fn roll_out_config_change(&self, namespace: &str, kind: ConfigKind, name: &str) -> Result<(), ControlError> {
        let services: Vec<Service> = self.store.list(Service::KIND, Some(namespace))?;
        for service in services {
            let reads = service
                .spec
                .template
                .spec
                .containers
                .first()
                .is_some_and(|c| c.config_references().iter().any(|(k, n)| *k == kind && n == name));
            if reads {
                let (service_name, which) = (service.metadata.name.clone(), kind.as_str());
                match self.write_service_locked(service, ApplyMode::CreateOrUpdate).await {
                    // A pinned template name cannot take a new revision: the service keeps
                    // its revision and says so in the log.
                    Err(ControlError::Conflict(why)) => {
                        tracing::warn!("{which} {namespace}/{name} changed; service {service_name} not updated: {why}")
                    }
                    other => other.map(|_| ())?,
                }
            }
        }
        Ok(())
    }
}

/// A change of a ConfigMap rolls out a new revision of every service that reads it.
impl Reconciler<ConfigMap> for Controller {
    fn changed<'a>(&'a self, change: Change<'a, ConfigMap>) -> BoxFuture<'a, Result<(), ControlError>> {
        let meta = &change.object().metadata;
        Box::pin(self.roll_out_config_change(&meta.namespace, ConfigKind::ConfigMap, &meta.name))
    }
}
