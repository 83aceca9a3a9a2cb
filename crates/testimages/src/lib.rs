//! Test images built from host files, written as real OCI image layouts or `docker save`
//! archives, so that tests need no network; and a local registry for pull tests.
//!
//! Owns: test-image building (layers, configs, manifests, archives) with its own spelling
//! of the OCI formats, so that the runtime's reader is checked against an independent writer.
//! Must not depend on: any serval crate (the runtime's tests use it).
//!
//! Typical use: `build_image_layout(dir, "test/busybox:1", &busybox_files()?, spec)` and then
//! `ImageStore::import(dir)`; add `binary_with_libs(path, "/usr/local/bin/app")?` to the file
//! list to run a dynamically linked host binary inside the image.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use sha2::{Digest, Sha256};

/// Media types and the annotation of the OCI image specification, as the images are written.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `data`.
fn sha256_digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Why a test image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TestImageError {
    #[error("{0}")]
    Image(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Modification time of every generated entry (deterministic images).
const MTIME: u64 = 1_700_000_000;

/// Where a file of a test image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    /// A host file: its content (links followed) and permission bits.
    File(PathBuf),
    /// Literal content with a mode.
    Bytes { data: Vec<u8>, mode: u32 },
    /// A symbolic link with this target.
    Symlink(String),
    /// A directory with a mode.
    Dir { mode: u32 },
}

/// The runtime part of a test image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfigSpec {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
}

/// One raw tar entry. Paths are written as given (no checks), so malicious layers (`../x`,
/// `/abs`, links out of the root) can be built too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    File { path: String, data: Vec<u8>, mode: u32 },
    Dir { path: String, mode: u32 },
    Symlink { path: String, target: String },
    HardLink { path: String, target: String },
    Fifo { path: String },
    CharDevice { path: String, major: u32, minor: u32 },
}

impl LayerEntry {
    /// A regular 0644 file.
    pub fn file(path: &str, data: &[u8]) -> Self {
        LayerEntry::File { path: path.to_owned(), data: data.to_vec(), mode: 0o644 }
    }
    /// A 0755 directory.
    pub fn dir(path: &str) -> Self {
        LayerEntry::Dir { path: path.to_owned(), mode: 0o755 }
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        LayerEntry::Symlink { path: path.to_owned(), target: target.to_owned() }
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        LayerEntry::HardLink { path: path.to_owned(), target: target.to_owned() }
    }
}

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> TestImageError {
    TestImageError::Image(format!("test image: {what}: {e}"))
}

/// Layer entries for `files` (container path → source), with every missing parent directory
/// added (0755) before its first child.
pub fn layer_entries(files: &[(String, HostSource)]) -> Result<Vec<LayerEntry>, TestImageError> {
    let explicit_dirs: HashSet<String> = files
        .iter()
        .filter(|(_, s)| matches!(s, HostSource::Dir { .. }))
        .map(|(p, _)| p.trim_matches('/').to_owned())
        .collect();
    let mut made: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for (path, source) in files {
        let path = path.trim_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if !explicit_dirs.contains(&parent) && made.insert(parent.clone()) {
                out.push(LayerEntry::dir(&parent));
            }
        }
        out.push(match source {
            HostSource::File(host) => {
                let data = fs::read(host).map_err(|e| err(host.display(), e))?;
                let mode = fs::metadata(host).map_err(|e| err(host.display(), e))?.permissions().mode() & 0o7777;
                LayerEntry::File { path: path.to_owned(), data, mode }
            }
            HostSource::Bytes { data, mode } => {
                LayerEntry::File { path: path.to_owned(), data: data.clone(), mode: *mode }
            }
            HostSource::Symlink(target) => LayerEntry::symlink(path, target),
            HostSource::Dir { mode } => {
                made.insert(path.to_owned());
                LayerEntry::Dir { path: path.to_owned(), mode: *mode }
            }
        });
    }
    Ok(out)
}

/// An uncompressed layer tar of `entries`, in order.
pub fn layer_tar(entries: &[LayerEntry]) -> Result<Vec<u8>, TestImageError> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        append(&mut builder, entry).map_err(|e| err("building a layer", e))?;
    }
    builder.into_inner().map_err(|e| err("building a layer", e))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &LayerEntry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(0);
    let (path, data): (&str, &[u8]) = match entry {
        LayerEntry::File { path, data, mode } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(data.len() as u64);
            (path, data)
        }
        LayerEntry::Dir { path, mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            (path, &[])
        }
        LayerEntry::Symlink { path, target } | LayerEntry::HardLink { path, target } => {
            let kind = if matches!(entry, LayerEntry::Symlink { .. }) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            };
            header.set_entry_type(kind);
            header.set_mode(0o777);
            set_raw(&mut header.as_old_mut().linkname, target)?;
            (path, &[])
        }
        LayerEntry::Fifo { path } => {
            header.set_entry_type(tar::EntryType::Fifo);
            header.set_mode(0o644);
            (path, &[])
        }
        LayerEntry::CharDevice { path, major, minor } => {
            header.set_entry_type(tar::EntryType::Char);
            header.set_mode(0o666);
            header.set_device_major(*major)?;
            header.set_device_minor(*minor)?;
            (path, &[])
        }
    };
    let unsafe_path = path.starts_with('/') || path.split('/').any(|p| p == "..");
    if unsafe_path || path.len() < 100 {
        // Written raw: the tar crate refuses `..` and absolute paths (rightly, for archives
        // meant to be safe); these layers are meant to test an unpacker.
        set_raw(&mut header.as_old_mut().name, path)?;
        header.set_cksum();
        builder.append(&header, data)
    } else {
        builder.append_data(&mut header, path, data)
    }
}

fn set_raw(slot: &mut [u8], value: &str) -> io::Result<()> {
    if value.len() >= slot.len() {
        return Err(io::Error::other(format!("{value:?} is too long for a raw tar field")));
    }
    slot.fill(0);
    slot[..value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

/// `data` compressed as asked.
pub fn compress(data: &[u8], compression: LayerCompression) -> Result<Vec<u8>, TestImageError> {
    match compression {
        LayerCompression::None => Ok(data.to_vec()),
        LayerCompression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).map_err(|e| err("gzip", e))?;
            enc.finish().map_err(|e| err("gzip", e))
        }
        LayerCompression::Zstd => zstd::encode_all(data, 3).map_err(|e| err("zstd", e)),
    }
}

fn media_type(compression: LayerCompression) -> &'static str {
    match compression {
        LayerCompression::None => MT_LAYER_TAR,
        LayerCompression::Gzip => MT_LAYER_GZIP,
        LayerCompression::Zstd => MT_LAYER_ZSTD,
    }
}

fn config_json(spec: &ImageConfigSpec, diff_ids: &[String]) -> Vec<u8> {
    let mut config = serde_json::Map::new();
    if !spec.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        config.insert("Cmd".into(), json!(spec.cmd));
    }
    if !spec.env.is_empty() {
        config.insert("Env".into(), json!(spec.env));
    }
    if let Some(w) = &spec.workdir {
        config.insert("WorkingDir".into(), json!(w));
    }
    let doc = json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": diff_ids.iter().map(|_| json!({"created_by": "serval test image"})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&doc).expect("a JSON value always serializes")
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), TestImageError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| err(parent.display(), e))?;
    }
    fs::write(path, data).map_err(|e| err(path.display(), e))
}

/// Writes an OCI image layout directory at `dest` holding one image named `name` (the
/// `org.opencontainers.image.ref.name` annotation) with one gzip layer of `files`.
pub fn build_image_layout(
    dest: &Path,
    name: &str,
    files: &[(String, HostSource)],
    config: ImageConfigSpec,
) -> Result<(), TestImageError> {
    let entries = layer_entries(files)?;
    build_image_layout_with_layers(dest, name, &[entries], LayerCompression::Gzip, &config).map(|_| ())
}

/// Writes an OCI image layout directory with one layer per element of `layers` (applied in
/// order). Returns the manifest digest. Adds to an existing layout at `dest` (several images).
pub fn build_image_layout_with_layers(
    dest: &Path,
    name: &str,
    layers: &[Vec<LayerEntry>],
    compression: LayerCompression,
    config: &ImageConfigSpec,
) -> Result<String, TestImageError> {
    let blob = |data: &[u8]| -> Result<(String, u64), TestImageError> {
        let digest = sha256_digest(data);
        let hex = digest.trim_start_matches("sha256:");
        write_file(&dest.join("blobs/sha256").join(hex), data)?;
        Ok((digest, data.len() as u64))
    };
    let mut diff_ids = Vec::new();
    let mut layer_descs = Vec::new();
    for entries in layers {
        let tar = layer_tar(entries)?;
        diff_ids.push(sha256_digest(&tar));
        let (digest, size) = blob(&compress(&tar, compression)?)?;
        layer_descs.push(json!({"mediaType": media_type(compression), "digest": digest, "size": size}));
    }
    let (config_digest, config_size) = blob(&config_json(config, &diff_ids))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a JSON value always serializes");
    let (manifest_digest, manifest_size) = blob(&manifest_bytes)?;
    write_file(&dest.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index_path = dest.join("index.json");
    let mut index: serde_json::Value = match fs::read(&index_path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| err(index_path.display(), e))?,
        Err(_) => json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}),
    };
    index["manifests"].as_array_mut().ok_or_else(|| err(index_path.display(), "no manifests array"))?.push(json!({
        "mediaType": MT_OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {ANNOTATION_REF_NAME: name},
    }));
    write_file(&index_path, &serde_json::to_vec_pretty(&index).expect("a JSON value always serializes"))?;
    Ok(manifest_digest)
}

/// Writes a `docker save` archive (legacy format: `manifest.json`, `<hex>.json` config,
/// `<id>/layer.tar`) at `dest` holding one image tagged `name` with one layer of `files`.
pub fn write_docker_archive(
    dest: &Path,
    name: &str,
    files: &[(String, HostSource)],
    config: ImageConfigSpec,
) -> Result<(), TestImageError> {
    write_docker_archive_with_layers(dest, name, &[layer_entries(files)?], &config)
}

/// Like [`write_docker_archive`] with one uncompressed layer per element of `layers`.
pub fn write_docker_archive_with_layers(
    dest: &Path,
    name: &str,
    layers: &[Vec<LayerEntry>],
    config: &ImageConfigSpec,
) -> Result<(), TestImageError> {
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| -> Result<(), TestImageError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(MTIME);
        header.set_size(data.len() as u64);
        out.append_data(&mut header, path, data).map_err(|e| err(dest.display(), e))
    };
    let mut diff_ids = Vec::new();
    let mut layer_paths = Vec::new();
    for entries in layers {
        let tar = layer_tar(entries)?;
        let digest = sha256_digest(&tar);
        let id = digest.trim_start_matches("sha256:").to_owned();
        add(&format!("{id}/VERSION"), b"1.0")?;
        add(&format!("{id}/json"), format!(r#"{{"id":"{id}"}}"#).as_bytes())?;
        add(&format!("{id}/layer.tar"), &tar)?;
        layer_paths.push(format!("{id}/layer.tar"));
        diff_ids.push(digest);
    }
    let config = config_json(config, &diff_ids);
    let config_name = format!("{}.json", sha256_digest(&config).trim_start_matches("sha256:"));
    add(&config_name, &config)?;
    let manifest = json!([{ "Config": config_name, "RepoTags": [name], "Layers": layer_paths }]);
    add("manifest.json", &serde_json::to_vec(&manifest).expect("a JSON value always serializes"))?;
    let data = out.into_inner().map_err(|e| err(dest.display(), e))?;
    write_file(dest, &data)
}

/// Writes the OCI layout directory `layout` as a tar at `dest`.
pub fn write_oci_archive(layout: &Path, dest: &Path) -> Result<(), TestImageError> {
    let mut out = tar::Builder::new(Vec::new());
    out.append_dir_all(".", layout).map_err(|e| err(layout.display(), e))?;
    let data = out.into_inner().map_err(|e| err(dest.display(), e))?;
    write_file(dest, &data)
}

/// Applets linked to busybox in [`busybox_files`] (those the host's busybox has).
const APPLETS: &[&str] = &[
    "sh", "ash", "ls", "cat", "echo", "sleep", "id", "ps", "mkdir", "touch", "httpd", "nc", "wget", "env", "true",
    "false", "rm", "cp", "mv", "ln", "grep", "sed", "head", "tail", "hostname", "pwd", "kill", "test", "printf", "wc",
    "dd", "yes", "uname", "date", "find", "chmod", "stat", "seq", "tr", "cut", "awk", "sort", "which", "whoami",
    "mount", "df", "free", "top", "vi", "tee", "xargs", "basename", "dirname", "readlink", "realpath", "nproc",
];

/// The files of a minimal busybox root filesystem from Debian's `busybox-static`
/// (`/bin/busybox`): `/bin/busybox`, `/bin/<applet>` links for common applets (sh, ls, cat,
/// echo, sleep, id, ps, mkdir, touch, httpd, nc, wget, …), `/usr/bin/env`, `/etc/passwd`,
/// `/etc/group`, and the mount points a container runtime needs (`/proc`, `/sys`, `/dev`,
/// `/tmp`).
pub fn busybox_files() -> Result<Vec<(String, HostSource)>, TestImageError> {
    let busybox = Path::new("/bin/busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| err("/bin/busybox (install Debian's busybox-static)", e))?;
    let available: HashSet<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_owned).collect();
    let dir = |mode| HostSource::Dir { mode };
    let mut files =
        vec![("/bin".to_owned(), dir(0o755)), ("/bin/busybox".to_owned(), HostSource::File(busybox.to_path_buf()))];
    for applet in APPLETS.iter().filter(|a| available.contains(**a)) {
        files.push((format!("/bin/{applet}"), HostSource::Symlink("busybox".to_owned())));
    }
    files.extend([
        ("/usr/bin/env".to_owned(), HostSource::Symlink("/bin/busybox".to_owned())),
        (
            "/etc/passwd".to_owned(),
            HostSource::Bytes {
                data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
                mode: 0o644,
            },
        ),
        ("/etc/group".to_owned(), HostSource::Bytes { data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(), mode: 0o644 }),
        ("/root".to_owned(), dir(0o700)),
        ("/proc".to_owned(), dir(0o555)),
        ("/sys".to_owned(), dir(0o555)),
        ("/dev".to_owned(), dir(0o755)),
        ("/tmp".to_owned(), dir(0o1777)),
        ("/var".to_owned(), dir(0o755)),
    ]);
    Ok(files)
}

/// A host binary placed at `container_path` plus every shared library `ldd` says it needs
/// (at the paths `ldd` prints, the dynamic loader included), so that it runs inside an image
/// without the host's file system. A static binary yields just itself.
pub fn binary_with_libs(binary: &Path, container_path: &str) -> Result<Vec<(String, HostSource)>, TestImageError> {
    if !binary.is_file() {
        return Err(err(binary.display(), "no such file"));
    }
    let mut files = vec![(container_path.to_owned(), HostSource::File(binary.to_path_buf()))];
    let output = Command::new("ldd").arg(binary).output().map_err(|e| err("running ldd", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(files);
        }
        return Err(err(format!("ldd {}", binary.display()), stderr.trim()));
    }
    for lib in parse_ldd(&stdout).map_err(|e| err(format!("ldd {}", binary.display()), e))? {
        files.push((lib.clone(), HostSource::File(PathBuf::from(lib))));
    }
    Ok(files)
}

/// The library paths in `ldd` output (`name => /path (0x…)` and `/path (0x…)` lines; the vDSO
/// has no path). A library `ldd` could not find is an error.
fn parse_ldd(output: &str) -> Result<Vec<String>, String> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        let path_part = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("library {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = path_part.split(" (").next().unwrap_or(path_part).trim();
        if path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

// ---- a registry for pull tests ----

/// Debian's `docker-registry`.
const REGISTRY: &str = "/usr/bin/docker-registry";

/// The first `name` on `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// `skopeo`'s path when both it and Debian's `docker-registry` are installed.
pub fn registry_tools() -> Option<PathBuf> {
    let skopeo = find_tool("skopeo");
    if Path::new(REGISTRY).is_file() { skopeo } else { None }
}

/// A `docker-registry` serving on 127.0.0.1; killed when dropped.
pub struct TestRegistry {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRegistry {
    /// Starts a registry; with `htpasswd` (an htpasswd file's content) it requires basic auth.
    pub fn start(htpasswd: Option<&str>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: serval-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some(htpasswd) = htpasswd {
            let path = dir.path().join("htpasswd");
            fs::write(&path, htpasswd).expect("htpasswd");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: serval-test\n    path: {}\n", path.display()));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starts docker-registry");
        let registry = TestRegistry { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// Copies `source` (a skopeo transport reference) to `<registry>/<repo>`.
    pub fn push(&self, skopeo: &Path, source: &str, repo: &str, creds: Option<&str>, all: bool) {
        let mut cmd = Command::new(skopeo);
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        let out = cmd.arg(source).arg(format!("docker://{}/{repo}", self.addr)).output().expect("runs skopeo");
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd0b5f4000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out).expect("parses"),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }
}
