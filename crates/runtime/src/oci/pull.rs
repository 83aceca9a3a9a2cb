//! Pulling images from OCI distribution registries (through `oci-client`).

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::OciDistributionError;

use super::store::{CommitImage, StagedBlob};
use super::{
    ConfigFile, Descriptor, ImageStore, ImageSummary, Index, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX,
    MT_OCI_MANIFEST, Manifest, Versioned, digest_hex, is_image_config, layer_compression, normalize_reference,
    pick_linux_amd64, platforms_of, sha256_digest,
};
use crate::RuntimeError;

/// Credentials for a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No credentials; registries that hand out anonymous bearer tokens (Docker Hub, ghcr.io)
    /// work with this too.
    #[default]
    Anonymous,
    /// HTTP basic credentials; also used to obtain a bearer token when the registry asks for
    /// one (the usual `docker login` flow).
    Basic { username: String, password: String },
    /// A bearer token sent as is.
    Bearer(String),
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl RegistryAuth {
    /// The credentials a user gave: basic when both a user name and a password came, else
    /// the bearer token when one came, else none.
    pub fn from_credentials(username: Option<String>, password: Option<String>, token: Option<String>) -> RegistryAuth {
        match (username, password, token) {
            (Some(username), Some(password), _) => RegistryAuth::Basic { username, password },
            (_, _, Some(token)) => RegistryAuth::Bearer(token),
            _ => RegistryAuth::Anonymous,
        }
    }

    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
            RegistryAuth::Bearer(token) => oci_client::secrets::RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// What [`ImageStore::pull`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// The image manifest was found: its digest and its layers (digest, compressed size).
    Resolved { digest: String, layers: Vec<(String, u64)> },
    /// `downloaded` of `total` bytes of a layer have arrived.
    Layer { digest: String, downloaded: u64, total: u64 },
    /// A layer is complete and verified; `cached` when the store already had it.
    LayerDone { digest: String, size: u64, cached: bool },
}

const MANIFEST_TYPES: &[&str] = &[MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST];
/// Layers downloaded at the same time.
const PARALLEL_LAYERS: usize = 3;

impl ImageStore {
    /// Pulls `reference` (normalized like Docker's: `busybox` is
    /// `docker.io/library/busybox:latest`) into the store and points its name at it.
    ///
    /// Manifest lists / image indexes resolve to their linux/amd64 image. Layers the store
    /// already has are not downloaded; the others are streamed into temporary files (gzip,
    /// zstd and plain tar layers) and checked against their digests and sizes, as are the
    /// manifest and config; nothing is recorded unless all of them check out. Registries on
    /// `localhost` / loopback addresses are spoken to over plain HTTP, all others over HTTPS.
    /// Errors are [`RuntimeError::PullFailed`] carrying the registry's message.
    pub async fn pull(
        &self,
        reference: &str,
        auth: RegistryAuth,
        progress: impl Fn(PullProgress) + Send + Sync,
    ) -> Result<ImageSummary, RuntimeError> {
        let fail = |message: String| RuntimeError::PullFailed { reference: reference.to_owned(), message };
        let name = normalize_reference(reference).map_err(|e| fail(e.to_string()))?;
        let image: Reference = name.parse().map_err(|e| fail(format!("invalid reference: {e}")))?;
        let client = client_for(&image);
        let auth = auth.to_oci();
        let registry_err = |e| registry_error(reference, e);

        let (bytes, _) = client.pull_manifest_raw(&image, &auth, MANIFEST_TYPES).await.map_err(registry_err)?;
        let mut manifest_bytes = bytes.to_vec();
        let mut digest = sha256_digest(&manifest_bytes);
        if let Some(wanted) = image.digest()
            && wanted != digest
        {
            return Err(fail(format!("the registry sent a manifest hashing to {digest} for {wanted}")));
        }
        let versioned = parse_versioned(&manifest_bytes).map_err(fail)?;
        if versioned.is_index() {
            let index: Index = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| fail(format!("the registry sent an invalid manifest list: {e}")))?;
            let pick = pick_linux_amd64(&index.manifests).ok_or_else(|| {
                fail(format!("no linux/amd64 image in the manifest list (it has: {})", platforms_of(&index.manifests)))
            })?;
            digest_hex(&pick.digest, "manifest list entry").map_err(|e| fail(e.to_string()))?;
            let (bytes, _) = client
                .pull_manifest_raw(&image.clone_with_digest(pick.digest.clone()), &auth, MANIFEST_TYPES)
                .await
                .map_err(registry_err)?;
            manifest_bytes = bytes.to_vec();
            digest = sha256_digest(&manifest_bytes);
            if digest != pick.digest {
                return Err(fail(format!("the registry sent a manifest hashing to {digest} for {}", pick.digest)));
            }
            if parse_versioned(&manifest_bytes).map_err(fail)?.is_index() {
                return Err(fail("the linux/amd64 entry of the manifest list is itself a list".to_owned()));
            }
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| fail(format!("the registry sent an invalid image manifest: {e}")))?;
        if !is_image_config(&manifest.config.media_type) {
            return Err(fail(format!("not a container image (config media type {:?})", manifest.config.media_type)));
        }
        digest_hex(&manifest.config.digest, "config").map_err(|e| fail(e.to_string()))?;
        for layer in &manifest.layers {
            digest_hex(&layer.digest, "layer").map_err(|e| fail(e.to_string()))?;
            if layer_compression(&layer.media_type).is_none() {
                return Err(fail(format!("layer {} has unsupported media type {:?}", layer.digest, layer.media_type)));
            }
        }
        progress(PullProgress::Resolved {
            digest: digest.clone(),
            layers: manifest.layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
        });

        let mut staged: Vec<StagedBlob> = Vec::new();
        if !self.has_blob(&manifest.config.digest) {
            let mut data = Vec::new();
            client.pull_blob(&image, manifest.config.digest.as_str(), &mut data).await.map_err(registry_err)?;
            serde_json::from_slice::<ConfigFile>(&data)
                .map_err(|e| fail(format!("the registry sent an invalid image config: {e}")))?;
            let blob = self.stage_blocking(data).await?;
            blob.expect(&manifest.config.digest, Some(manifest.config.size), "the image config")
                .map_err(|e| fail(e.to_string()))?;
            staged.push(blob);
        }
        // Collected first: a closure inside the stream's type would make the whole future
        // lose `Send` (higher-ranked lifetime inference), and pulls run on spawned tasks.
        let downloads: Vec<_> = manifest
            .layers
            .iter()
            .map(|layer| self.pull_layer(&client, &image, &auth, layer, reference, &progress))
            .collect();
        let layers: Vec<Option<StagedBlob>> =
            stream::iter(downloads).buffer_unordered(PARALLEL_LAYERS).try_collect().await?;
        staged.extend(layers.into_iter().flatten());
        staged.push(self.stage_blocking(manifest_bytes.clone()).await?);

        let mut blobs = vec![digest.clone(), manifest.config.digest.clone()];
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        let commit = CommitImage {
            names: vec![name.clone()],
            manifest: Descriptor {
                media_type: versioned_media_type(&manifest_bytes),
                digest: digest.clone(),
                size: manifest_bytes.len() as u64,
                annotations: Default::default(),
                platform: None,
            },
            blobs,
        };
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.commit(staged, &[commit])?;
            store.summary(Some(name), &digest)
        })
        .await
        .map_err(|e| fail(format!("storing the image: {e}")))?
    }

    /// `stage_bytes` (which fsyncs) off the async workers.
    async fn stage_blocking(&self, data: Vec<u8>) -> Result<StagedBlob, RuntimeError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.stage_bytes(&data))
            .await
            .map_err(|e| RuntimeError::Image(format!("storing a blob: {e}")))?
    }

    /// Downloads one layer into a staged blob (`None` when the store already has it).
    async fn pull_layer(
        &self,
        client: &oci_client::Client,
        image: &Reference,
        auth: &oci_client::secrets::RegistryAuth,
        layer: &Descriptor,
        reference: &str,
        progress: &(impl Fn(PullProgress) + Send + Sync),
    ) -> Result<Option<StagedBlob>, RuntimeError> {
        let fail = |message: String| RuntimeError::PullFailed { reference: reference.to_owned(), message };
        if self.has_blob(&layer.digest) {
            progress(PullProgress::LayerDone { digest: layer.digest.clone(), size: layer.size, cached: true });
            return Ok(None);
        }
        client.store_auth_if_needed(image.resolve_registry(), auth).await;
        let mut body =
            client.pull_blob_stream(image, layer.digest.as_str()).await.map_err(|e| registry_error(reference, e))?;
        let mut writer = self.blob_writer()?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| fail(format!("downloading layer {}: {e}", layer.digest)))?;
            writer.write_all(&chunk).map_err(|e| fail(format!("storing layer {}: {e}", layer.digest)))?;
            if writer.written() > layer.size {
                return Err(fail(format!(
                    "layer {} is larger than the {} bytes its manifest announces",
                    layer.digest, layer.size
                )));
            }
            progress(PullProgress::Layer {
                digest: layer.digest.clone(),
                downloaded: writer.written(),
                total: layer.size,
            });
        }
        // fsync can take a while: off the async workers.
        let blob = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| fail(format!("storing layer {}: {e}", layer.digest)))??;
        blob.expect(&layer.digest, Some(layer.size), "a layer").map_err(|e| fail(e.to_string()))?;
        progress(PullProgress::LayerDone { digest: layer.digest.clone(), size: layer.size, cached: false });
        Ok(Some(blob))
    }
}

fn parse_versioned(bytes: &[u8]) -> Result<Versioned, String> {
    let v: Versioned =
        serde_json::from_slice(bytes).map_err(|e| format!("the registry sent an invalid manifest: {e}"))?;
    match v.schema_version {
        2 => Ok(v),
        1 => {
            Err("the image has a schema 1 manifest, which is not supported; push it again with a current client"
                .to_owned())
        }
        other => Err(format!("unsupported manifest schema version {other}")),
    }
}

fn versioned_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<Versioned>(bytes)
        .ok()
        .and_then(|v| v.media_type)
        .unwrap_or_else(|| MT_OCI_MANIFEST.to_owned())
}

/// Whether `registry` (`host[:port]`) is this machine, where plain HTTP is allowed.
fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn client_for(image: &Reference) -> oci_client::Client {
    let registry = image.resolve_registry().to_owned();
    let protocol = if is_loopback_registry(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    })
}

/// Turns an `oci-client` error into a one-line message that keeps what the registry said.
pub(crate) fn registry_error(reference: &str, e: OciDistributionError) -> RuntimeError {
    let message = match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let errors: Vec<String> = envelope
                .errors
                .iter()
                .map(|err| {
                    let code = serde_json::to_value(&err.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| format!("{:?}", err.code));
                    if err.message.is_empty() { code } else { format!("{code}: {}", err.message) }
                })
                .collect();
            format!("the registry answered: {}", errors.join("; "))
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let message = message.trim();
            if message.is_empty() {
                format!("the registry answered HTTP {code}")
            } else {
                format!("the registry answered HTTP {code}: {message}")
            }
        }
        OciDistributionError::UnauthorizedError { url } => {
            format!("unauthorized: the registry refused access to {url} (missing or wrong credentials)")
        }
        OciDistributionError::AuthenticationFailure(message) => {
            format!("authentication failed: {}", message.trim())
        }
        OciDistributionError::RequestError(e) => {
            let mut message = format!("cannot reach the registry: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            message
        }
        other => other.to_string(),
    };
    RuntimeError::PullFailed { reference: reference.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_http() {
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("index.docker.io"));
        assert!(!is_loopback_registry("registry.example.com:5000"));
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let auth = RegistryAuth::Basic { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(!format!("{:?}", RegistryAuth::Bearer("tok".into())).contains("tok"));
    }
}
