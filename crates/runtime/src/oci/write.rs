//! Writing new images into the store (what `serval build` makes): layers from tar streams,
//! then an image from its config document and layers, committed under the store's lock.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use super::store::{CommitImage, ImageStore};
use super::{Descriptor, LayerRef, MT_LAYER_GZIP, MT_OCI_CONFIG, MT_OCI_MANIFEST, Manifest, hex};
use crate::RuntimeError;
use crate::oci::{ImageSummary, ResolvedImage};

/// A layer written into the store: its blob (compressed) and its diff ID (the digest of
/// the uncompressed tar, which the image config lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLayer {
    pub layer: LayerRef,
    pub diff_id: String,
}

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ImageStore {
    /// Writes a gzip-compressed layer whose uncompressed tar `fill` writes, and keeps its
    /// blob in the store (collected again by the next `remove` unless an image uses it).
    pub fn write_layer(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StoredLayer, RuntimeError> {
        let blob = self.blob_writer()?;
        let gzip = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
        let mut tar = Hashing { inner: gzip, hasher: Sha256::new() };
        fill(&mut tar).map_err(|e| RuntimeError::Image(format!("writing a layer: {e}")))?;
        let diff_id = format!("sha256:{}", hex(&tar.hasher.finalize()));
        let blob = tar.inner.finish().map_err(|e| RuntimeError::Image(format!("compressing a layer: {e}")))?;
        let staged = blob.finish()?;
        let layer = LayerRef { digest: staged.digest.clone(), media_type: MT_LAYER_GZIP.to_owned(), size: staged.size };
        self.commit([staged], &[])?;
        Ok(StoredLayer { layer, diff_id })
    }

    /// Opens the blob of a layer to read (e.g. to unpack it with [`super::unpack_layer`]).
    pub fn open_blob(&self, digest: &str) -> Result<std::fs::File, RuntimeError> {
        let path = self.blob_path(digest)?;
        std::fs::File::open(&path).map_err(|e| RuntimeError::Image(format!("blob {digest}: {e}")))
    }

    /// Whether the store holds the blob of `digest` (a layer a cache remembers may have
    /// been collected since).
    pub fn holds_blob(&self, digest: &str) -> bool {
        self.has_blob(digest)
    }

    /// The whole image config document of `image` (what a builder extends).
    pub fn config_document(&self, image: &ResolvedImage) -> Result<serde_json::Value, RuntimeError> {
        serde_json::from_slice(&self.read_blob(&image.config_digest)?)
            .map_err(|e| RuntimeError::Image(format!("image config {} is invalid: {e}", image.config_digest)))
    }

    /// Stores an image of `layers` (already in the store, lowest first) and the OCI image
    /// config document `config`, under `names` (normalized references; none: unnamed).
    pub fn store_image(
        &self,
        config: &serde_json::Value,
        layers: &[LayerRef],
        names: &[String],
    ) -> Result<ImageSummary, RuntimeError> {
        let config_bytes = serde_json::to_vec(config).map_err(|e| RuntimeError::Image(e.to_string()))?;
        let config_blob = self.stage_bytes(&config_bytes)?;
        let descriptor = |media_type: &str, digest: &str, size: u64| Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
            annotations: Default::default(),
            platform: None,
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MT_OCI_MANIFEST.to_owned()),
            config: descriptor(MT_OCI_CONFIG, &config_blob.digest, config_blob.size),
            layers: layers.iter().map(|l| descriptor(&l.media_type, &l.digest, l.size)).collect(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| RuntimeError::Image(e.to_string()))?;
        let manifest_blob = self.stage_bytes(&manifest_bytes)?;
        let mut blobs: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        blobs.push(config_blob.digest.clone());
        blobs.push(manifest_blob.digest.clone());
        let image = CommitImage {
            names: names.to_vec(),
            manifest: descriptor(MT_OCI_MANIFEST, &manifest_blob.digest, manifest_blob.size),
            blobs,
        };
        let digest = manifest_blob.digest.clone();
        self.commit([config_blob, manifest_blob], &[image])?;
        self.summary(names.first().cloned(), &digest)
    }
}
