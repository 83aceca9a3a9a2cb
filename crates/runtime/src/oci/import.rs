//! Import of `docker save` archives and OCI image layouts (tar or directory) into the store.
//!
//! A tar is streamed once: each regular file goes to a temporary file in the store while it
//! is hashed, so blobs are renamed into place without a second copy. Every blob is checked
//! against the digest that names it (OCI descriptors, `<hex>.json` configs, `blobs/sha256/<hex>`
//! paths, the config's `diff_ids` for uncompressed docker layers) before anything is recorded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::store::{CommitImage, MAX_JSON, StagedBlob};
use super::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Compression, ConfigFile, Descriptor, ImageStore, ImageSummary,
    Index, MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD, MT_OCI_CONFIG, MT_OCI_MANIFEST, Manifest, Versioned, digest_hex,
    is_image_config, is_sha256_hex, layer_compression, normalize_reference, pick_linux_amd64, platforms_of,
    sniff_compression,
};
use crate::RuntimeError;

/// One entry of a docker archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image of a `docker save` archive (legacy or Docker 25+ format), an OCI
    /// image-layout tar, or an OCI image-layout directory at `path` (tars may be gzip or zstd
    /// compressed). Names come from `RepoTags` or the `io.containerd.image.name` /
    /// `org.opencontainers.image.ref.name` annotations, normalized like Docker's; an image
    /// without one is kept unnamed (by digest). An image index in a layout contributes its
    /// linux/amd64 image. Nothing is recorded unless every image of the archive checks out.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageSummary>, RuntimeError> {
        let shown = path.display().to_string();
        let meta = fs::metadata(path).map_err(|e| RuntimeError::Image(format!("cannot import {shown}: {e}")))?;
        let mut files = if meta.is_dir() {
            let root =
                fs::canonicalize(path).map_err(|e| RuntimeError::Image(format!("cannot import {shown}: {e}")))?;
            Files::new(self, Source::Dir(root))
        } else {
            Files::from_tar(self, path)?
        };
        let images = if files.exists("manifest.json") {
            import_docker(&mut files)?
        } else if files.exists("index.json") {
            import_layout(&mut files)?
        } else {
            return Err(RuntimeError::Image(format!(
                "cannot import {shown}: not a docker archive (no manifest.json) nor an OCI image layout (no index.json)"
            )));
        };
        if images.is_empty() {
            return Err(RuntimeError::Image(format!("cannot import {shown}: it holds no image")));
        }
        // Only what the images reference becomes a blob (not manifest.json, VERSION files…).
        let needed: std::collections::HashSet<&String> = images.iter().flat_map(|i| &i.blobs).collect();
        let staged: Vec<StagedBlob> = files.blobs.into_values().filter(|b| needed.contains(&b.digest)).collect();
        self.commit(staged, &images)?;
        let mut out = Vec::new();
        for image in &images {
            if image.names.is_empty() {
                out.push(self.summary(None, &image.manifest.digest)?);
            }
            for name in &image.names {
                out.push(self.summary(Some(name.clone()), &image.manifest.digest)?);
            }
        }
        Ok(out)
    }
}

enum Source {
    /// A directory: files are staged when first asked for.
    Dir(PathBuf),
    /// A tar: every regular file was staged while reading it; links are aliases.
    Tar { links: HashMap<String, String> },
}

/// The files of the archive being imported, as staged blobs.
struct Files<'s> {
    store: &'s ImageStore,
    source: Source,
    /// Archive path → digest of its content.
    paths: HashMap<String, String>,
    /// Staged content by digest (each content once).
    blobs: HashMap<String, StagedBlob>,
}

/// An archive-relative path in canonical form (`a/b`), or `None` when it has `..` components.
fn clean_path(p: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            _ => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The target of a link at `entry` (relative to its directory, or to the archive root for
/// hard links), in canonical form; `None` when it leaves the archive.
fn link_target(entry: &str, target: &str, relative_to_entry: bool) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if relative_to_entry && !target.starts_with('/') {
        parts.extend(entry.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl<'s> Files<'s> {
    fn new(store: &'s ImageStore, source: Source) -> Self {
        Files { store, source, paths: HashMap::new(), blobs: HashMap::new() }
    }

    fn from_tar(store: &'s ImageStore, path: &Path) -> Result<Self, RuntimeError> {
        let shown = path.display().to_string();
        let bad = |e: io::Error| RuntimeError::Image(format!("cannot import {shown}: {e}"));
        let file = File::open(path).map_err(bad)?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let head = reader.fill_buf().map_err(bad)?;
        let stream: Box<dyn Read> = match sniff_compression(head) {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(bad)?),
        };
        let mut files = Files::new(store, Source::Tar { links: HashMap::new() });
        let mut links = HashMap::new();
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = clean_path(&raw) else { continue };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut w = store.blob_writer()?;
                    io::copy(&mut entry, &mut w).map_err(bad)?;
                    let blob = w.finish()?;
                    files.add(name, blob);
                }
                kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                    let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned());
                    if let Some(target) = target.and_then(|t| link_target(&name, &t, kind == tar::EntryType::Symlink)) {
                        links.insert(name, target);
                    }
                }
                _ => {}
            }
        }
        files.source = Source::Tar { links };
        Ok(files)
    }

    fn add(&mut self, path: String, blob: StagedBlob) {
        self.paths.insert(path, blob.digest.clone());
        self.blobs.entry(blob.digest.clone()).or_insert(blob);
    }

    fn exists(&self, path: &str) -> bool {
        match &self.source {
            Source::Dir(root) => root.join(path).is_file(),
            Source::Tar { .. } => self.lookup(path).is_some(),
        }
    }

    /// Follows tar link aliases to a staged path.
    fn lookup(&self, path: &str) -> Option<&String> {
        let Source::Tar { links } = &self.source else { return self.paths.get(path) };
        let mut current = path.to_owned();
        for _ in 0..16 {
            if let Some(d) = self.paths.get(&current) {
                return Some(d);
            }
            current = links.get(&current)?.clone();
        }
        None
    }

    /// The staged blob holding the archive file `path`.
    fn get(&mut self, path: &str) -> Result<&StagedBlob, RuntimeError> {
        let missing = || RuntimeError::Image(format!("the archive has no file {path:?}"));
        let clean = clean_path(path).ok_or_else(missing)?;
        let digest = match &self.source {
            Source::Tar { .. } => self.lookup(&clean).cloned().ok_or_else(missing)?,
            Source::Dir(root) => match self.paths.get(&clean) {
                Some(d) => d.clone(),
                None => {
                    let full = fs::canonicalize(root.join(&clean)).map_err(|_| missing())?;
                    if !full.starts_with(root) || !full.is_file() {
                        return Err(missing());
                    }
                    let mut file =
                        File::open(&full).map_err(|e| RuntimeError::Image(format!("{}: {e}", full.display())))?;
                    let mut w = self.store.blob_writer()?;
                    io::copy(&mut file, &mut w).map_err(|e| RuntimeError::Image(format!("{}: {e}", full.display())))?;
                    let blob = w.finish()?;
                    let digest = blob.digest.clone();
                    self.add(clean, blob);
                    digest
                }
            },
        };
        self.blobs.get(&digest).ok_or_else(missing)
    }

    fn read(&mut self, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let blob = self.get(path)?;
        if blob.size > MAX_JSON {
            return Err(RuntimeError::Image(format!("{path} is too large ({} bytes)", blob.size)));
        }
        let file = blob.path().ok_or_else(|| RuntimeError::Image(format!("{path} was already stored")))?;
        fs::read(file).map_err(|e| RuntimeError::Image(format!("reading {path}: {e}")))
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self, path: &str) -> Result<T, RuntimeError> {
        let data = self.read(path)?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Image(format!("{path} is invalid: {e}")))
    }

    fn head(&mut self, path: &str) -> Result<Compression, RuntimeError> {
        let blob = self.get(path)?;
        let file = blob.path().ok_or_else(|| RuntimeError::Image(format!("{path} was already stored")))?;
        let mut head = [0u8; 4];
        let mut f = File::open(file).map_err(|e| RuntimeError::Image(format!("reading {path}: {e}")))?;
        let n = f.read(&mut head).map_err(|e| RuntimeError::Image(format!("reading {path}: {e}")))?;
        Ok(sniff_compression(&head[..n]))
    }

    /// The blob `blobs/sha256/<hex>` of a layout, checked against its descriptor.
    fn layout_blob(&mut self, d: &Descriptor, what: &str) -> Result<(), RuntimeError> {
        let hex = digest_hex(&d.digest, what)?;
        if matches!(self.source, Source::Dir(_))
            && self.store.has_blob(&d.digest)
            && layer_compression(&d.media_type).is_some()
        {
            return Ok(()); // a layer the store already has (verified when it was stored): no copy
        }
        let blob = self.get(&format!("blobs/sha256/{hex}"))?;
        blob.expect(&d.digest, Some(d.size), what)
    }

    fn stage_bytes(&mut self, data: &[u8]) -> Result<String, RuntimeError> {
        let blob = self.store.stage_bytes(data)?;
        let digest = blob.digest.clone();
        self.blobs.entry(digest.clone()).or_insert(blob);
        Ok(digest)
    }
}

/// When the file name of `path` is a digest (`<hex>.json`, `blobs/sha256/<hex>`), the content
/// must hash to it.
fn check_named(path: &str, actual: &str) -> Result<(), RuntimeError> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.strip_suffix(".json").unwrap_or(file);
    if is_sha256_hex(stem) && actual != format!("sha256:{stem}") {
        return Err(RuntimeError::Image(format!(
            "digest mismatch for {path}: its name says sha256:{stem}, but the content hashes to {actual}"
        )));
    }
    Ok(())
}

fn import_docker(files: &mut Files<'_>) -> Result<Vec<CommitImage>, RuntimeError> {
    let entries: Vec<DockerEntry> = files.json("manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let config = files.get(&entry.config)?;
        let (config_digest, config_size) = (config.digest.clone(), config.size);
        check_named(&entry.config, &config_digest)?;
        let parsed: ConfigFile = files.json(&entry.config)?;
        let diff_ids = parsed.rootfs.unwrap_or_default().diff_ids;
        if diff_ids.len() != entry.layers.len() {
            return Err(RuntimeError::Image(format!(
                "image config {} lists {} layers, but manifest.json lists {}",
                entry.config,
                diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let blob = files.get(path)?;
            let (digest, size) = (blob.digest.clone(), blob.size);
            check_named(path, &digest)?;
            let media_type = match files.head(path)? {
                Compression::None => {
                    // An uncompressed layer's digest is its diff_id.
                    if &digest != diff_id {
                        return Err(RuntimeError::Image(format!(
                            "digest mismatch for layer {path}: the image config expects {diff_id}, but the content hashes to {digest}"
                        )));
                    }
                    MT_LAYER_TAR
                }
                Compression::Gzip => MT_LAYER_GZIP,
                Compression::Zstd => MT_LAYER_ZSTD,
            };
            layers.push(Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size,
                annotations: Default::default(),
                platform: None,
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MT_OCI_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: MT_OCI_CONFIG.to_owned(),
                digest: config_digest.clone(),
                size: config_size,
                annotations: Default::default(),
                platform: None,
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest always serializes");
        let manifest_digest = files.stage_bytes(&bytes)?;
        let mut names = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            names.push(normalize_reference(&tag)?);
        }
        let mut blobs = vec![manifest_digest.clone(), config_digest];
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        images.push(CommitImage {
            names,
            manifest: Descriptor {
                media_type: MT_OCI_MANIFEST.to_owned(),
                digest: manifest_digest,
                size: bytes.len() as u64,
                annotations: Default::default(),
                platform: None,
            },
            blobs,
        });
    }
    Ok(images)
}

fn import_layout(files: &mut Files<'_>) -> Result<Vec<CommitImage>, RuntimeError> {
    if !files.exists("oci-layout") {
        return Err(RuntimeError::Image("not an OCI image layout: index.json without an oci-layout file".to_owned()));
    }
    let index: Index = files.json("index.json")?;
    let mut images = Vec::new();
    for d in &index.manifests {
        let name = d
            .annotations
            .get(ANNOTATION_CONTAINERD_NAME)
            .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
            .map(|n| normalize_reference(n))
            .transpose()?;
        images.push(import_layout_manifest(files, d, name, 0)?);
    }
    Ok(images)
}

fn import_layout_manifest(
    files: &mut Files<'_>,
    d: &Descriptor,
    name: Option<String>,
    depth: u32,
) -> Result<CommitImage, RuntimeError> {
    if depth > 4 {
        return Err(RuntimeError::Image("image indexes nested too deeply".to_owned()));
    }
    let what = "an image manifest";
    files.layout_blob(d, what)?;
    let hex = digest_hex(&d.digest, what)?;
    let path = format!("blobs/sha256/{hex}");
    let versioned: Versioned = files.json(&path)?;
    if versioned.schema_version != 2 {
        return Err(RuntimeError::Image(format!(
            "manifest {}: unsupported schema version {}",
            d.digest, versioned.schema_version
        )));
    }
    if versioned.is_index() {
        let nested: Index = files.json(&path)?;
        let pick = pick_linux_amd64(&nested.manifests).ok_or_else(|| {
            RuntimeError::Image(format!(
                "image index {} has no linux/amd64 image (it has: {})",
                d.digest,
                platforms_of(&nested.manifests)
            ))
        })?;
        return import_layout_manifest(files, &pick.clone(), name, depth + 1);
    }
    let manifest: Manifest = files.json(&path)?;
    if !is_image_config(&manifest.config.media_type) {
        return Err(RuntimeError::Image(format!(
            "manifest {} is not a container image (config media type {:?})",
            d.digest, manifest.config.media_type
        )));
    }
    files.layout_blob(&manifest.config, "an image config")?;
    let config_hex = digest_hex(&manifest.config.digest, "config")?;
    let _: ConfigFile = files.json(&format!("blobs/sha256/{config_hex}"))?;
    for layer in &manifest.layers {
        if layer_compression(&layer.media_type).is_none() {
            return Err(RuntimeError::Image(format!(
                "layer {} has unsupported media type {:?}",
                layer.digest, layer.media_type
            )));
        }
        files.layout_blob(layer, "a layer")?;
    }
    let mut blobs = vec![d.digest.clone(), manifest.config.digest.clone()];
    blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    let media_type = versioned
        .media_type
        .clone()
        .unwrap_or_else(|| if d.media_type.is_empty() { MT_OCI_MANIFEST.to_owned() } else { d.media_type.clone() });
    Ok(CommitImage {
        names: name.into_iter().collect(),
        manifest: Descriptor {
            media_type,
            digest: d.digest.clone(),
            size: d.size,
            annotations: Default::default(),
            platform: None,
        },
        blobs,
    })
}
