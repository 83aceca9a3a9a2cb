//! The image store as the OCI runtime's image source: resolve, pull when missing, unpack.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{ImageDefaults, ImageSource, PreparedImage};
use crate::RuntimeError;
use crate::oci::{ImageStore, RegistryAuth};

/// Serves images from the local store, pulling anonymously what is not there yet.
pub struct StoreImages(pub Arc<ImageStore>);

impl ImageSource for StoreImages {
    fn prepare(&self, reference: &str) -> BoxFuture<'_, Result<PreparedImage, RuntimeError>> {
        let store = self.0.clone();
        let reference = reference.to_string();
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
            Ok(PreparedImage {
                rootfs,
                defaults: ImageDefaults {
                    entrypoint: config.entrypoint,
                    cmd: config.cmd,
                    env: config.env,
                    working_dir: config.working_dir,
                    user: config.user,
                },
            })
        }
        .boxed()
    }
}
