//! A function's code and settings on its Service: the zip unpacked under the code directory
//! (or an image), the command its runtime needs, its environment, memory, timeout, handler
//! and runtime — what `CreateFunction`, `UpdateFunctionCode` and
//! `UpdateFunctionConfiguration` set, and `FunctionConfiguration` reads back.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use serval_model::{ConditionStatus, Container, EnvVar, ResourceRequirements, Revision, RevisionSpec, Service};

use super::versions::{FunctionMeta, LATEST, arn};
use super::{AwsError, invalid};

/// The largest unpacked function (Lambda's limit).
const MAX_UNZIPPED: u64 = 250 * 1024 * 1024;
/// Lambda's defaults.
pub const DEFAULT_TIMEOUT: u64 = 3;
pub const DEFAULT_MEMORY: u64 = 128;
/// The most environment variables' bytes (Lambda's 4 KB).
const MAX_ENVIRONMENT: usize = 4096;

/// Where a function's code is.
pub enum Code {
    /// A zip, unpacked into this directory.
    Dir(PathBuf),
    Image(String),
}

/// A zip unpacked for a function.
pub struct Unpacked {
    pub dir: PathBuf,
    pub size: u64,
    /// Base64 of its SHA-256, as `CodeSha256` is.
    pub sha256: String,
}

/// Unpacks the base64 zip of `Code.ZipFile` (or `ZipFile`) for `function` under
/// `code_dir/<function>/<sha256 hex>`.
pub async fn unpack(code_dir: &Path, function: &str, zip: &str, field: &str) -> Result<Unpacked, AwsError> {
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip)
        .map_err(|e| invalid(format!("{field} is not base64: {e}")))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &zip);
    let sha256 = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let hex = serval_lambda::sigv4::hex(digest.as_ref());
    let dir = code_dir.join(function).join(hex);
    let size = zip.len() as u64;
    // Named by its digest: code that is there already stays as it is (a version may be
    // running it); new code is unpacked beside it and renamed into place whole.
    if !dir.is_dir() {
        let staging = dir.with_extension(format!("unpacking-{:016x}", fastrand::u64(..)));
        let unpack_to = staging.clone();
        let unpacked = tokio::task::spawn_blocking(move || unzip(&zip, &unpack_to))
            .await
            .map_err(|e| invalid(e.to_string()))
            .and_then(|r| r.map_err(|e| invalid(format!("{field}: {e}"))))
            .and_then(|()| {
                std::fs::rename(&staging, &dir)
                    .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(invalid(e.to_string())) })
            });
        let _ = std::fs::remove_dir_all(&staging);
        unpacked?;
    }
    Ok(Unpacked { dir, size, sha256 })
}

/// The function's container (a Service always has one).
pub fn container(service: &mut Service) -> &mut Container {
    let containers = &mut service.spec.template.spec.containers;
    if containers.is_empty() {
        containers.push(Container::default());
    }
    &mut containers[0]
}

/// Where the function's code is now.
pub fn code_of(service: &Service) -> Option<Code> {
    if let Some(dir) = service.spec.template.metadata.annotations.get(serval_model::LAMBDA_CODE) {
        return Some(Code::Dir(PathBuf::from(dir)));
    }
    let container = service.spec.template.spec.containers.first()?;
    match (&container.image, &container.working_dir) {
        (Some(image), _) => Some(Code::Image(image.clone())),
        (None, Some(dir)) => Some(Code::Dir(PathBuf::from(dir))),
        (None, None) => None,
    }
}

/// Whether a zip of `runtime` runs here: on an interpreter (which runs serval's runtime
/// client) for `python3.x` and `nodejs*`, by the zip's `bootstrap` for `provided.*`.
pub fn zip_runtime(runtime: &str) -> bool {
    ["python3", "nodejs", "provided"].iter().any(|family| runtime.starts_with(family))
}

/// The refusal of a zip whose runtime does not run here.
pub fn unsupported(runtime: Option<&str>) -> AwsError {
    invalid(format!(
        "Runtime {runtime:?} is not supported for a zip here: use python3.x, nodejs*, provided.al2 or provided.al2023 (or PackageType Image)"
    ))
}

/// Where a zip runs in an image: its code bound in read-only here.
const TASK_ROOT: &str = "/var/task";

/// Points the function at `code`: an image runs its entrypoint; a zip runs by the command
/// its `runtime` needs (see [`zip_runtime`]), on the host from its directory, or — when
/// `images` names an image for the runtime (or its family; the longest match wins) — in
/// that image, the directory bound in at `/var/task`.
pub fn set_code(
    service: &mut Service,
    runtime: Option<&str>,
    code: Code,
    images: &[(String, String)],
) -> Result<(), AwsError> {
    let annotations = &mut service.spec.template.metadata.annotations;
    annotations.remove(serval_model::LAMBDA_CODE);
    let dir = match code {
        Code::Image(image) => {
            let container = container(service);
            container.image = Some(image);
            container.command.clear();
            container.working_dir = None;
            return Ok(());
        }
        Code::Dir(dir) => dir,
    };
    let runtime = runtime.filter(|r| zip_runtime(r)).ok_or_else(|| unsupported(runtime))?;
    let image = images
        .iter()
        .filter(|(prefix, _)| runtime.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, image)| image.clone());
    let root = match &image {
        Some(_) => PathBuf::from(TASK_ROOT),
        None => dir.clone(),
    };
    // An interpreter running serval's client, else the zip's own `bootstrap`.
    let command = match serval_lambda::runtime_client(runtime) {
        Some(client) => client.interpreter.to_string(),
        None => root.join("bootstrap").display().to_string(),
    };
    if image.is_some() {
        annotations.insert(serval_model::LAMBDA_CODE.to_string(), dir.display().to_string());
    }
    let container = container(service);
    container.image = image;
    container.command = vec![command];
    container.working_dir = Some(root.display().to_string());
    Ok(())
}

/// Applies the settings `input` gives (`Timeout`, `MemorySize`, `Environment`, `Handler`,
/// `Runtime`) to the function's template; the runtime's command follows a new `Runtime`
/// (see [`set_code`] for `images`).
pub fn apply_settings(service: &mut Service, input: &Value, images: &[(String, String)]) -> Result<(), AwsError> {
    let spec = &mut service.spec.template.spec;
    if let Some(timeout) = input.get("Timeout") {
        let timeout = timeout.as_u64().filter(|t| (1..=900).contains(t));
        spec.timeout_seconds = Some(timeout.ok_or_else(|| invalid("Timeout must be 1 to 900 seconds"))?);
    }
    let annotations = &mut service.spec.template.metadata.annotations;
    for (field, key) in [("Handler", serval_model::LAMBDA_HANDLER), ("Runtime", serval_model::LAMBDA_RUNTIME)] {
        if let Some(value) = input.get(field) {
            let value = value.as_str().ok_or_else(|| invalid(format!("{field} must be a string")))?;
            annotations.insert(key.to_string(), value.to_string());
        }
    }
    let container = container(service);
    if let Some(memory) = input.get("MemorySize") {
        let memory = memory.as_u64().filter(|m| (128..=10_240).contains(m));
        let memory = memory.ok_or_else(|| invalid("MemorySize must be 128 to 10240 MB"))?;
        container
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .limits
            .insert("memory".to_string(), format!("{memory}Mi"));
    }
    if let Some(variables) = input.get("Environment").map(|e| &e["Variables"]) {
        let variables = match variables {
            Value::Null => serde_json::Map::new(),
            Value::Object(map) => map.clone(),
            _ => return Err(invalid("Environment.Variables must be an object of strings")),
        };
        let size: usize = variables.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if size > MAX_ENVIRONMENT {
            return Err(invalid(format!("Environment.Variables: {size} bytes, over Lambda's {MAX_ENVIRONMENT}")));
        }
        container.env = variables
            .into_iter()
            .map(|(name, value)| {
                let value = value
                    .as_str()
                    .ok_or_else(|| invalid(format!("Environment.Variables[{name}] must be a string")))?
                    .to_string();
                Ok(EnvVar { name, value, ..EnvVar::default() })
            })
            .collect::<Result<_, AwsError>>()?;
    }
    if input.get("Runtime").is_some()
        && let Some(code @ Code::Dir(_)) = code_of(service)
    {
        let runtime = service.annotation(serval_model::LAMBDA_RUNTIME).map(str::to_string);
        set_code(service, runtime.as_deref(), code, images)?;
    }
    Ok(())
}

/// What a version of a function runs.
pub enum Runs<'a> {
    /// `$LATEST`: the Service's template, and its latest created revision when there is one.
    Latest(&'a Service, Option<&'a Revision>),
    /// A published version's revision.
    Version(&'a Revision),
}

impl Runs<'_> {
    fn spec(&self) -> &RevisionSpec {
        match self {
            Runs::Latest(service, _) => &service.spec.template.spec,
            Runs::Version(revision) => &revision.spec,
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            Runs::Latest(service, _) => service.annotation(key),
            Runs::Version(revision) => revision.annotation(key),
        }
    }

    /// Whether the latest revision failed (so that waiting for it is over).
    pub fn failed(&self) -> bool {
        match self {
            Runs::Latest(service, _) => service
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "ConfigurationsReady" && c.status == ConditionStatus::False),
            Runs::Version(revision) => revision_state(revision).0 == "Failed",
        }
    }

    /// `State` (`Active`, `Pending` or `Failed`) with its reason, and `LastUpdateStatus`
    /// (`Successful`, `InProgress` or `Failed`): a function that served once stays
    /// `Active` while an update of it is in progress or failed.
    fn state(&self) -> ((&'static str, String), &'static str) {
        let (service, latest) = match self {
            Runs::Version(revision) => return (revision_state(revision), "Successful"),
            Runs::Latest(service, latest) => (service, latest),
        };
        let status = &service.status;
        let served = !status.latest_ready_revision_name.is_empty();
        let latest = latest.map(revision_state);
        let state = match (&latest, served) {
            (_, true) => ("Active", String::new()),
            (Some(("Failed", why)), false) => ("Failed", why.clone()),
            _ => ("Pending", String::new()),
        };
        let last_update = match latest {
            _ if served && status.latest_created_revision_name == status.latest_ready_revision_name => "Successful",
            Some(("Failed", _)) => "Failed",
            _ => "InProgress",
        };
        (state, last_update)
    }
}

fn revision_state(revision: &Revision) -> (&'static str, String) {
    match revision.status.conditions.iter().find(|c| c.kind == "Ready").map(|c| (&c.status, c.message.clone())) {
        Some((ConditionStatus::True, _)) => ("Active", String::new()),
        Some((ConditionStatus::False, message)) => ("Failed", message),
        _ => ("Pending", String::new()),
    }
}

/// `FunctionConfiguration` of `version` (`$LATEST` or a number) of a function.
pub fn configuration(name: &str, meta: &FunctionMeta, version: &str, runs: &Runs<'_>, revision_id: &str) -> Value {
    let container = runs.spec().containers.first().cloned().unwrap_or_default();
    let (state, last_update) = runs.state();
    let code = meta.version(version).map_or(&meta.code, |v| &v.code);
    let variables: serde_json::Map<String, Value> = container
        .env
        .iter()
        .filter(|e| e.value_from.is_none())
        .map(|e| (e.name.clone(), Value::String(e.value.clone())))
        .collect();
    let memory = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.get("memory"))
        .and_then(|m| serval_model::parse_memory(m).ok())
        .map_or(DEFAULT_MEMORY, |b| (b / (1024 * 1024)) as u64);
    json!({
        "FunctionName": name,
        "FunctionArn": arn(name, (version != LATEST).then_some(version)),
        "Runtime": runs.annotation(serval_model::LAMBDA_RUNTIME),
        "Role": meta.role,
        "Handler": runs.annotation(serval_model::LAMBDA_HANDLER),
        "CodeSize": code.code_size,
        "Description": code.description,
        "Timeout": runs.spec().timeout_seconds(),
        "MemorySize": memory,
        "LastModified": code.last_modified,
        "CodeSha256": code.code_sha256,
        "Version": version,
        "Environment": {"Variables": variables},
        "RevisionId": revision_id,
        "State": state.0,
        "StateReason": state.1,
        "LastUpdateStatus": last_update,
        "PackageType": if container.image.is_some() { "Image" } else { "Zip" },
        "Architectures": ["x86_64"],
    })
}

/// Now, as Lambda writes `LastModified`.
pub fn last_modified() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string().replace('Z', "+0000")
}

/// Unpacks a function's zip into `dir` (made), refusing entries outside it and more
/// than [`MAX_UNZIPPED`] bytes; keeps the executable bits.
fn unzip(zip: &[u8], dir: &Path) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!("entry {:?} points outside the function's directory", entry.name()));
        };
        let path = dir.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut data = Vec::new();
        (&mut entry).take(MAX_UNZIPPED - total + 1).read_to_end(&mut data).map_err(|e| e.to_string())?;
        total += data.len() as u64;
        if total > MAX_UNZIPPED {
            return Err(format!("unpacked, the function is over {MAX_UNZIPPED} bytes"));
        }
        std::fs::write(&path, &data).map_err(|e| e.to_string())?;
        let executable =
            entry.unix_mode().is_some_and(|m| m & 0o111 != 0) || relative.file_name().is_some_and(|n| n == "bootstrap");
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
