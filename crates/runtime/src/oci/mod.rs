//! The image side of the OCI runtime: a content-addressed image store in OCI image-layout
//! form, `docker save` / OCI-layout import, registry pulls, and secure layer unpacking into
//! per-image root filesystems.
//!
//! Lifecycle: [`ImageStore::open`] a directory once; fill it with [`ImageStore::import`] or
//! [`ImageStore::pull`]; [`ImageStore::resolve`] a name or digest to a [`ResolvedImage`]
//! (config and layers); [`ImageStore::rootfs`] unpacks it once per manifest digest and returns
//! the directory; [`ImageStore::remove`] drops a name and deletes blobs no image needs.
//!
//! The store's synchronous methods do blocking file IO: call them from
//! `tokio::task::spawn_blocking` when on an async runtime.

mod import;
mod pull;
mod push;
mod store;
mod unpack;
mod write;

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::RuntimeError;

pub use pull::{PullProgress, RegistryAuth};
pub use store::ImageStore;
pub use unpack::unpack_layer;
pub use write::StoredLayer;

/// One entry of [`ImageStore::list`]: a name (or an unnamed image) and what it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The normalized name (`docker.io/library/busybox:latest`); `None` for an image kept
    /// only by digest (imported without a tag, or whose tag moved to a newer image).
    pub name: Option<String>,
    /// Digest of the image manifest (`sha256:<hex>`), the image's identity.
    pub digest: String,
    /// Bytes stored for the image: manifest, config and (compressed) layers.
    pub size: u64,
    /// The `created` time of the image config (RFC 3339), when it has one.
    pub created: Option<String>,
}

/// An image found in the store: everything needed to build a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalized name it was resolved by; `None` when resolved by digest.
    pub name: Option<String>,
    /// Digest of the image manifest (`sha256:<hex>`).
    pub digest: String,
    /// Digest of the image config blob.
    pub config_digest: String,
    pub config: ImageConfig,
    /// Layers in application order (lowest first).
    pub layers: Vec<LayerRef>,
}

/// The runtime-relevant part of an image config (`config` object of the OCI image config).
/// Empty vectors mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid` as written in the image.
    pub user: Option<String>,
    /// `port/proto` keys, e.g. `8080/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    pub os: String,
    pub architecture: String,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub media_type: String,
    /// Size of the (compressed) blob.
    pub size: u64,
}

// ---- media types ----------------------------------------------------------------------------

pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The annotation that names an image in an OCI layout's `index.json`.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker 25+'s) full image name annotation, preferred on import.
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares; `None` when the media type is not a layer
/// serval can unpack.
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The compression the first bytes of a stream show (gzip and zstd magic numbers).
pub(crate) fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

// ---- digests --------------------------------------------------------------------------------

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The hex part of a `sha256:<64 lower-case hex>` digest, or an error naming `what`.
/// Digests come from untrusted manifests and become file names, so this is strict.
pub(crate) fn digest_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str, RuntimeError> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => Ok(hex),
        Some(("sha256", _)) => Err(RuntimeError::Image(format!("{what}: malformed digest {digest:?}"))),
        Some((alg, _)) => {
            Err(RuntimeError::Image(format!("{what}: unsupported digest algorithm {alg:?} (only sha256 is supported)")))
        }
        None => Err(RuntimeError::Image(format!("{what}: malformed digest {digest:?}"))),
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A reader that hashes (sha256) and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Reads the rest of the stream and returns `(sha256:<hex>, total bytes)`.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("sha256:{}", hex(&self.hasher.finalize())), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

// ---- names ----------------------------------------------------------------------------------

/// Normalizes an image reference like Docker does: `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/x` and other names with a registry host are kept (with `:latest` added when
/// neither tag nor digest is given).
pub fn normalize_reference(name: &str) -> Result<String, RuntimeError> {
    let reference: oci_client::Reference =
        name.parse().map_err(|e| RuntimeError::Image(format!("invalid image reference {name:?}: {e}")))?;
    if reference.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(RuntimeError::Image(format!(
            "invalid image reference {name:?}: repository names must be lowercase"
        )));
    }
    Ok(reference.whole())
}

// ---- JSON documents (only the fields serval reads or writes) ---------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Just enough of any manifest-like document to tell what it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Versioned {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<serde_json::Value>,
}

impl Versioned {
    pub(crate) fn is_index(&self) -> bool {
        match self.media_type.as_deref() {
            Some(MT_OCI_INDEX | MT_DOCKER_LIST) => true,
            Some(_) => false,
            None => self.manifests.is_some(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            os: self.os.clone().unwrap_or_default(),
            architecture: self.architecture.clone().unwrap_or_default(),
        }
    }
}

/// Whether a config media type is a container image config serval can run.
pub(crate) fn is_image_config(media_type: &str) -> bool {
    matches!(media_type, MT_OCI_CONFIG | MT_DOCKER_CONFIG)
}

/// Whether a manifest media type is a single-image manifest.
pub(crate) fn is_image_manifest(media_type: &str) -> bool {
    matches!(media_type, MT_OCI_MANIFEST | MT_DOCKER_MANIFEST)
}

/// The linux/amd64 entry of an index (the platform serval runs), if there is one.
pub(crate) fn pick_linux_amd64(entries: &[Descriptor]) -> Option<&Descriptor> {
    entries.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            && is_image_manifest(&d.media_type)
    })
}

/// `os/arch[/variant]` of each entry, for "no matching platform" messages.
pub(crate) fn platforms_of(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|d| match &d.platform {
            Some(p) => match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            },
            None => "unknown".to_owned(),
        })
        .collect();
    if list.is_empty() { "none".to_owned() } else { list.join(", ") }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let n = |s| normalize_reference(s).expect("valid");
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("index.docker.io/library/alpine:3"), "docker.io/library/alpine:3");
        assert_eq!(n("localhost:5000/test/busybox:1"), "localhost:5000/test/busybox:1");
        assert_eq!(n("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(n("ghcr.io/o/r:v1"), "ghcr.io/o/r:v1");
        assert!(normalize_reference("UPPER/case").is_err());
    }

    #[test]
    fn digests_are_strict() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(digest_hex(&good, "x").is_ok());
        assert!(digest_hex("sha256:../../etc/passwd", "x").is_err());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64)), "x").is_err());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(128)), "x").is_err());
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
