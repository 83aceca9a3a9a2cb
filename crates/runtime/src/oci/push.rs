//! Pushing a stored image to a registry as it is stored: its layers, config and manifest
//! sent byte for byte, so the pushed image keeps its digest.

use oci_client::Reference;
use oci_client::RegistryOperation;

use super::pull::{RegistryAuth, client_for, registry_error};
use super::{ImageStore, MT_OCI_MANIFEST, normalize_reference};
use crate::RuntimeError;

impl ImageStore {
    /// Pushes the stored image `source` (a name or digest in the store) to `target` (a
    /// registry reference, normalized like Docker's), with `auth`. Registries on loopback
    /// addresses are spoken to over plain HTTP, as for pulls. Returns the manifest digest.
    pub async fn push(&self, source: &str, target: &str, auth: RegistryAuth) -> Result<String, RuntimeError> {
        let fail = |message: String| RuntimeError::PushFailed { reference: target.to_owned(), message };
        let registry_err = |e| match registry_error(target, e) {
            RuntimeError::PullFailed { message, .. } => fail(message),
            other => other,
        };
        let store = self.clone();
        let name = source.to_owned();
        let image =
            tokio::task::spawn_blocking(move || store.resolve(&name)).await.map_err(|e| fail(e.to_string()))??;
        let reference: Reference = normalize_reference(target)
            .map_err(|e| fail(e.to_string()))?
            .parse()
            .map_err(|e| fail(format!("invalid reference: {e}")))?;
        let client = client_for(&reference);
        client.auth(&reference, &auth.to_oci(), RegistryOperation::Push).await.map_err(registry_err)?;
        let mut blobs: Vec<String> = image.layers.iter().map(|l| l.digest.clone()).collect();
        blobs.push(image.config_digest.clone());
        for digest in blobs {
            let path = self.blob_path(&digest)?;
            let data = tokio::fs::read(&path).await.map_err(|e| fail(format!("reading blob {digest}: {e}")))?;
            client.push_blob(&reference, data, &digest).await.map_err(registry_err)?;
        }
        let manifest = self.read_blob(&image.digest)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| MT_OCI_MANIFEST.to_owned());
        let content_type = media_type.parse().map_err(|_| fail(format!("invalid media type {media_type:?}")))?;
        client.push_manifest_raw(&reference, manifest, content_type).await.map_err(registry_err)?;
        Ok(image.digest)
    }
}
