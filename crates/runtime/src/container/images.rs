//! The image store as the OCI runtime's image source: resolve, pull when missing, unpack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{ImageDefaults, ImageSource, PreparedImage};
use crate::RuntimeError;
use crate::oci::{ImageStore, RegistryAuth};

/// Serves images from the local store, pulling anonymously what is not there yet. Prepared
/// images are remembered per reference until the store's index changes (a pull, import or
/// removal), so a cold start does not re-read manifests.
pub struct StoreImages {
    store: Arc<ImageStore>,
    prepared: Mutex<HashMap<String, (SystemTime, PreparedImage)>>,
}

impl StoreImages {
    pub fn new(store: Arc<ImageStore>) -> StoreImages {
        StoreImages { store, prepared: Mutex::new(HashMap::new()) }
    }

    fn index_version(&self) -> Option<SystemTime> {
        std::fs::metadata(self.store.dir().join("index.json")).and_then(|m| m.modified()).ok()
    }
}

impl ImageSource for StoreImages {
    fn prepare(&self, reference: &str) -> BoxFuture<'_, Result<PreparedImage, RuntimeError>> {
        let store = self.store.clone();
        let reference = reference.to_string();
        let version = self.index_version();
        let cached = self.prepared.lock().ok().and_then(|p| p.get(&reference).cloned());
        if let (Some((at, image)), Some(now)) = (cached, version)
            && at == now
            && image.rootfs.is_dir()
        {
            return async move { Ok(image) }.boxed();
        }
        async move {
            let resolved = match store.resolve(&reference) {
                Ok(r) => r,
                Err(RuntimeError::ImageNotFound(_)) => {
                    tracing::info!("pulling {reference} (not in the image store)");
                    store.pull(&reference, RegistryAuth::Anonymous, |_| {}).await?;
                    store.resolve(&reference)?
                }
                Err(e) => return Err(e),
            };
            let config = resolved.config.clone();
            let rootfs = tokio::task::spawn_blocking(move || store.rootfs(&resolved))
                .await
                .map_err(|e| RuntimeError::Image(format!("unpacking {reference} failed: {e}")))??;
            let image = PreparedImage {
                rootfs,
                defaults: ImageDefaults {
                    entrypoint: config.entrypoint,
                    cmd: config.cmd,
                    env: config.env,
                    working_dir: config.working_dir,
                    user: config.user,
                },
            };
            if let (Some(at), Ok(mut prepared)) = (self.index_version(), self.prepared.lock()) {
                prepared.insert(reference, (at, image.clone()));
            }
            Ok(image)
        }
        .boxed()
    }
}
