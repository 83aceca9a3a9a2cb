//! Commands on resources: deploy, apply, get, list, delete, revisions.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use serval_model::{KindInfo, api_group};

use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;
use crate::output::{self, Format};

/// How long `deploy` and `apply` wait for a service to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Service name.
    pub name: String,
    /// OCI image to run.
    #[arg(long, conflicts_with = "cmd", required_unless_present_any = ["cmd", "source", "lambda_zip"])]
    pub image: Option<String>,
    /// Command line to run on the host, split like a shell would (no shell features). The
    /// instance must listen on 127.0.0.1 at the port serval gives it: read `$PORT` from the
    /// environment, or write `$(PORT)` (also `$PORT`, `${PORT}`) in the command line, e.g.
    /// --cmd 'gunicorn -b 127.0.0.1:$PORT app:app' (single quotes keep your shell out).
    #[arg(long)]
    pub cmd: Option<String>,
    /// Environment variable for the function (repeatable); `$(NAME)` in the value expands
    /// from `PORT`, `K_*` and the variables before it.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (`#` starts a comment);
    /// `--env` flags override it.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<std::path::PathBuf>,
    /// Working directory of the function (Kubernetes `workingDir`).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// A function project (`serval init`) to deploy: its `serval.yaml` (or its language's
    /// defaults) gives the start command, environment and annotations; flags override them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["image", "cmd", "workdir"])]
    pub source: Option<std::path::PathBuf>,
    /// With `--source`: how it runs. By default its image is built (from its Containerfile
    /// or Dockerfile) into the local image store and run; `process` runs the project's start
    /// command on this machine, from its directory (the server must run on this machine too).
    /// With `--lambda-zip`: the Lambda runtime (python3.12, nodejs20.x, provided.al2023…).
    #[arg(long)]
    pub runtime: Option<String>,
    /// A Lambda function's deployment package (a zip, as `aws lambda create-function
    /// --zip-file` takes it), deployed through the Lambda API on the gateway: CreateFunction,
    /// or UpdateFunctionConfiguration and UpdateFunctionCode when the function exists. Needs
    /// --handler and --runtime; the function is a service of namespace `default`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["image", "cmd", "source", "workdir", "concurrency", "min_scale", "max_scale", "target"],
        requires_all = ["handler", "runtime"]
    )]
    pub lambda_zip: Option<std::path::PathBuf>,
    /// The handler of a `--lambda-zip` function (`lambda_function.handler`, `index.handler`).
    #[arg(long, requires = "lambda_zip")]
    pub handler: Option<String>,
    /// The memory of a `--lambda-zip` function in MB (Lambda's `MemorySize`, 128 by default).
    #[arg(long, value_name = "MB", requires = "lambda_zip")]
    pub memory: Option<u64>,
    /// The OCI runtime CLI that runs the build's RUN steps (`--source` without `--runtime`).
    #[arg(long, default_value = "runc", requires = "source")]
    pub oci_runtime: std::path::PathBuf,
    /// containerConcurrency: requests one instance serves at once (0 = unlimited).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Instances kept running even without requests (0 = scale to zero).
    #[arg(long)]
    pub min_scale: Option<u32>,
    /// Most instances the autoscaler may run (0: as many as the server allows).
    #[arg(long)]
    pub max_scale: Option<u32>,
    /// Autoscaling target (concurrent requests per instance).
    #[arg(long)]
    pub target: Option<u32>,
    /// Request timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Return without waiting for the service to become ready.
    #[arg(long)]
    pub no_wait: bool,
}

/// How a `--source` project runs.
#[derive(Clone, Copy, Debug)]
pub enum SourceRuntime {
    /// The project's start command on the host.
    Process,
}

/// `--runtime process`, the only runtime of `--source`.
pub const PROCESS_RUNTIME: &str = "process";

impl DeployArgs {
    /// How `--source` runs, from `--runtime` (which, with `--lambda-zip`, names a Lambda
    /// runtime instead).
    fn source_runtime(&self) -> Result<Option<SourceRuntime>> {
        match (&self.source, self.runtime.as_deref()) {
            (_, None) => Ok(None),
            (Some(_), Some(PROCESS_RUNTIME)) => Ok(Some(SourceRuntime::Process)),
            (Some(_), Some(other)) => bail!("--runtime {other:?}: with --source, the runtime is `process`"),
            (None, Some(_)) if self.lambda_zip.is_some() => Ok(None),
            (None, Some(other)) => bail!("--runtime {other:?} goes with --source or --lambda-zip"),
        }
    }

    /// The environment `--env-file` and then `--env` give, in order.
    pub(super) fn env_pairs(&self) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        if let Some(file) = &self.env_file {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read --env-file {}", file.display()))?;
            pairs.extend(parse_env_file(&text).with_context(|| format!("--env-file {}", file.display()))?);
        }
        for kv in &self.env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => bail!("--env {kv:?} must look like KEY=VALUE"),
            }
        }
        Ok(pairs)
    }
}

fn service_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{name}")
}

/// What `--source` contributes to a deploy.
struct SourceSettings {
    env: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

/// Builds the Knative Service a `deploy` describes; `built` is the image `--source` built.
fn deploy_manifest(args: &DeployArgs, built: Option<&str>) -> Result<Value> {
    let mut container = json!({});
    let project = match (&args.source, args.source_runtime()?) {
        (None, _) => None,
        (Some(dir), Some(SourceRuntime::Process)) => {
            let run = serval_project::HostRun::of(dir).with_context(|| format!("--source {}", dir.display()))?;
            let argv: Vec<String> = run.command.iter().map(|w| port_references(w)).collect();
            container["command"] = json!(argv);
            container["workingDir"] = json!(run.dir.to_string_lossy());
            Some(SourceSettings { env: run.env, annotations: run.annotations })
        }
        (Some(dir), None) => {
            let manifest =
                serval_project::Manifest::find(dir).with_context(|| format!("--source {}", dir.display()))?;
            container["image"] = json!(built.context("the image of --source was not built")?);
            manifest.map(|m| SourceSettings { env: m.env, annotations: m.annotations })
        }
    };
    if let Some(image) = &args.image {
        container["image"] = json!(image);
    }
    if let Some(cmd) = &args.cmd {
        let argv = shell_words::split(cmd).with_context(|| format!("--cmd {cmd:?} cannot be split into words"))?;
        if argv.is_empty() {
            bail!("--cmd must not be empty");
        }
        let argv: Vec<String> = argv.iter().map(|w| port_references(w)).collect();
        container["command"] = json!(argv);
    }
    if let Some(dir) = &args.workdir {
        container["workingDir"] = json!(dir);
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(project) = &project {
        pairs.extend(project.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    pairs.extend(args.env_pairs()?);
    let mut env: Vec<Value> = Vec::new();
    for (k, v) in pairs {
        env.retain(|e| e["name"] != k.as_str());
        env.push(json!({ "name": k, "value": v }));
    }
    if !env.is_empty() {
        container["env"] = json!(env);
    }
    let mut annotations = serde_json::Map::new();
    if let Some(project) = &project {
        annotations.extend(project.annotations.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    for (key, value) in [
        ("autoscaling.knative.dev/min-scale", args.min_scale),
        ("autoscaling.knative.dev/max-scale", args.max_scale),
        ("autoscaling.knative.dev/target", args.target),
    ] {
        if let Some(v) = value {
            annotations.insert(key.into(), json!(v.to_string()));
        }
    }
    let mut spec = json!({ "containers": [container] });
    if let Some(c) = args.concurrency {
        spec["containerConcurrency"] = json!(c);
    }
    if let Some(t) = args.timeout {
        spec["timeoutSeconds"] = json!(t);
    }
    Ok(json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": args.name, "namespace": args.namespace },
        "spec": { "template": { "metadata": { "annotations": annotations }, "spec": spec } }
    }))
}

/// The name a `--source` build gives its image: the service's, in the local namespace.
fn normalize_image_name(service: &str) -> String {
    format!("localhost/{service}")
}

/// `$PORT` and `${PORT}` written as Kubernetes' `$(PORT)`, which the server expands; a
/// longer name (`$PORTS`) is left alone.
fn port_references(word: &str) -> String {
    let word = word.replace("${PORT}", "$(PORT)");
    let mut out = String::with_capacity(word.len());
    let mut rest = word.as_str();
    while let Some(at) = rest.find("$PORT") {
        let after = &rest[at + "$PORT".len()..];
        let longer = after.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if longer { "$PORT" } else { "$(PORT)" });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `KEY=VALUE` lines (docker's `--env-file` format, plus optional `export ` and quotes
/// around the value); blank lines and lines starting with `#` are skipped.
pub(super) fn parse_env_file(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: {line:?} must look like KEY=VALUE", number + 1)
        };
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close))
            .unwrap_or(value);
        pairs.push((key.trim().to_string(), unquoted.to_string()));
    }
    Ok(pairs)
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

pub async fn deploy(args: DeployArgs, global: Global) -> Result<()> {
    if args.lambda_zip.is_some() {
        return super::lambda::deploy_zip(args, global).await;
    }
    let built = match (&args.source, args.source_runtime()?) {
        (Some(dir), None) => {
            let name = normalize_image_name(&args.name);
            let (containerfile, containerfile_text) = super::build::containerfile_for(dir, None, None)?;
            let request = serval_builder::BuildRequest {
                context: dir.clone(),
                containerfile,
                containerfile_text,
                tags: vec![name.clone()],
                ..Default::default()
            };
            let store = super::build::image_store(&global)?;
            let built = super::build::build_image(&request, &args.oci_runtime, &store, &global).await?;
            // By digest: a rebuilt image is a new revision even under the same name.
            Some(format!("{name}@{}", built.image.digest))
        }
        _ => None,
    };
    let mut manifest = deploy_manifest(&args, built.as_deref())?;
    let client = Client::from_global(&global)?;
    let path = service_path(&args.namespace, &args.name);
    // Like `kn service update`: a new template keeps the traffic block (pinned revisions
    // and tags stay where the user put them).
    if let Some(existing) = client.get_optional(&path).await?
        && let Some(traffic) = existing["spec"].get("traffic")
    {
        manifest["spec"]["traffic"] = traffic.clone();
    }
    let written = client.put(&path, &manifest).await?;
    print_warnings(&written.warnings);
    report_deployed(&client, &args, written.object).await
}

/// Waits for a deployed service to be ready (unless `--no-wait`) and prints its URL.
pub(super) async fn report_deployed(client: &Client, args: &DeployArgs, written: Value) -> Result<()> {
    let service =
        if args.no_wait { written } else { client.wait_ready(&args.namespace, &args.name, READY_TIMEOUT).await? };
    let revision = service["status"]["latestCreatedRevisionName"].as_str().unwrap_or("");
    eprintln!("service {}/{} ready (revision {revision})", args.namespace, args.name);
    println!("{}", service["status"]["url"].as_str().unwrap_or(""));
    if let Some(path_url) = output::path_url(&service) {
        eprintln!("also: {path_url}");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// YAML (multi-document) or JSON file, or a directory of them; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub file: String,
    /// Namespace for resources that do not name one.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Return without waiting for services to become ready.
    #[arg(long)]
    pub no_wait: bool,
    /// Run an image's containers as a command on this machine instead (repeatable): every
    /// container of a Knative Service in the file whose `image` is exactly IMAGE loses its
    /// image and gets CMD, split into words like a shell would, as its `command`; its `args`
    /// and `env` stay. The command must listen on 127.0.0.1 at `$PORT` (`$PORT` and `${PORT}`
    /// in CMD become `$(PORT)`), e.g. --image-map 'ghcr.io/acme/api:1=python3 app.py'.
    #[arg(long = "image-map", value_name = "IMAGE=CMD")]
    pub image_maps: Vec<String>,
    /// Read --image-map entries from a file of IMAGE=CMD lines (blank lines and lines
    /// starting with `#` are skipped); --image-map flags override its entries.
    #[arg(long, value_name = "FILE")]
    pub image_map_file: Option<std::path::PathBuf>,
}

/// One `--image-map`: the containers of `image` run `command` on the host instead.
#[derive(Debug, PartialEq)]
struct ImageMap {
    image: String,
    command: Vec<String>,
}

/// `IMAGE=CMD`, CMD split into words; `origin` names the flag (or file line) in errors.
fn parse_image_map(origin: &str, text: &str) -> Result<ImageMap> {
    let Some((image, cmd)) = text.split_once('=') else { bail!("{origin} {text:?} must look like IMAGE=CMD") };
    let image = image.trim();
    if image.is_empty() {
        bail!("{origin} {text:?} names no image: it must look like IMAGE=CMD");
    }
    let words =
        shell_words::split(cmd).with_context(|| format!("{origin} {text:?}: CMD cannot be split into words"))?;
    if words.is_empty() {
        bail!("{origin} {text:?} has an empty CMD: it must look like IMAGE=CMD");
    }
    Ok(ImageMap { image: image.to_string(), command: words.iter().map(|w| port_references(w)).collect() })
}

/// The mappings of `--image-map-file` (its name and text) and then of the `--image-map`
/// flags; a later mapping of an image replaces an earlier one.
fn image_maps(flags: &[String], file: Option<(&str, &str)>) -> Result<Vec<ImageMap>> {
    let mut maps: Vec<ImageMap> = Vec::new();
    let mut add = |map: ImageMap| {
        maps.retain(|m| m.image != map.image);
        maps.push(map);
    };
    if let Some((name, text)) = file {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add(parse_image_map(&format!("--image-map-file {name}: line {}:", number + 1), line)?);
        }
    }
    for flag in flags {
        add(parse_image_map("--image-map", flag)?);
    }
    Ok(maps)
}

/// Rewrites the containers of the Knative Services among `docs` that run a mapped image so
/// that they run the mapping's command as a process; returns a warning for each mapping
/// that matched no container.
fn map_images<'a>(docs: impl IntoIterator<Item = &'a mut Value>, maps: &[ImageMap]) -> Vec<String> {
    let mut matched = vec![false; maps.len()];
    for doc in docs {
        let service = api_group(doc["apiVersion"].as_str().unwrap_or_default()) == "serving.knative.dev"
            && doc["kind"] == "Service";
        if !service {
            continue;
        }
        // `pointer_mut`, not indexing: indexing a missing field would insert it as null.
        let containers = doc.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut);
        let Some(containers) = containers else { continue };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
            let Some(at) = maps.iter().position(|m| m.image == image) else { continue };
            matched[at] = true;
            container.remove("image");
            container.insert("command".into(), json!(maps[at].command));
        }
    }
    maps.iter()
        .zip(matched)
        .filter(|(_, matched)| !matched)
        .map(|(m, _)| format!("--image-map {} matched no container", m.image))
        .collect()
}

/// One document of an `apply`, and where it stands for messages.
struct Document {
    /// `document 3`, or `dir/b.yaml document 3` for a file of a directory.
    label: String,
    value: Value,
}

/// Parses a file of one or more YAML documents (JSON is YAML too), or every `.yaml`,
/// `.yml` and `.json` file of a directory in name order. Documents are numbered in their
/// file as the parser yields them: sections that hold only comments are not documents.
fn read_documents(file: &str) -> Result<Vec<Document>> {
    let path = std::path::Path::new(file);
    if !path.is_dir() {
        return parse_documents(file, "");
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read directory {file}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let f = f.display().to_string();
        docs.extend(parse_documents(&f, &format!("{f} "))?);
    }
    Ok(docs)
}

/// The documents of one file (`-`: stdin), labelled `<prefix>document N`.
fn parse_documents(file: &str, label_prefix: &str) -> Result<Vec<Document>> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let values: Vec<Value> =
        serde_saphyr::from_multiple(&text).with_context(|| format!("{file} is not valid YAML or JSON"))?;
    Ok(values
        .into_iter()
        .enumerate()
        .filter(|(_, value)| !value.is_null())
        .map(|(i, value)| Document { label: format!("{label_prefix}document {}", i + 1), value })
        .collect())
}

/// Kubernetes kinds that run or expose workloads; serval runs Knative Services instead.
const KUBERNETES_WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Pod",
    "Job",
    "CronJob",
    "Service",
];

/// What `apply` does with one document.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Written into this API collection, in this place of the order of writes.
    Write { plural: String, order: u8 },
    /// Not serval's to run: left out, with this warning.
    Skip(String),
    /// Cannot be applied, for this reason; nothing of the file is.
    Refuse(String),
}

fn plan(doc: &Value, catalog: &Catalog) -> Plan {
    let Some(object) = doc.as_object() else {
        return Plan::Refuse("is not a resource (a mapping with apiVersion, kind and metadata)".into());
    };
    let field = |key: &str| object.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (api_version, kind) = match (field("apiVersion"), field("kind")) {
        (Some(api_version), Some(kind)) => (api_version, kind),
        (None, Some(kind)) => return Plan::Refuse(format!("kind {kind} has no apiVersion")),
        (Some(api_version), None) => return Plan::Refuse(format!("{api_version} resource has no kind")),
        (None, None) => return Plan::Refuse("has no apiVersion and no kind".into()),
    };
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("{api_version} {kind} {name:?}");
    let group = api_group(api_version);
    if let Some(info) = catalog.kinds.iter().find(|k| k.api_version == api_version && k.kind == kind && k.writable) {
        if name.is_empty() {
            return Plan::Refuse(format!("{api_version} {kind}: metadata.name is required"));
        }
        return Plan::Write { plural: info.plural.clone(), order: info.apply_order };
    }
    match (group, kind) {
        ("", "Namespace") => Plan::Skip(format!("namespace {name:?} is created implicitly")),
        ("serving.knative.dev", "Route") => {
            // Knative names a Service's route and configuration after the Service.
            let service = doc["spec"]["traffic"][0]["configurationName"].as_str().unwrap_or(name);
            Plan::Refuse(format!(
                "kind Route is not applied: serval derives routes from the Service; put this traffic block under the Service `{service}`'s spec.traffic"
            ))
        }
        (group, _) if group.ends_with("knative.dev") || group.ends_with("serval.dev") => {
            match catalog.kinds.iter().find(|k| k.kind == kind && k.group() == group) {
                Some(info) if !info.writable => Plan::Refuse(format!(
                    "{what}: {kind} objects are made by the server from Services; apply the Service"
                )),
                Some(info) => Plan::Refuse(format!("{what}: serval takes {kind} as apiVersion {}", info.api_version)),
                None => Plan::Refuse(format!("{what} is not supported by serval yet")),
            }
        }
        ("" | "apps" | "batch", kind) if KUBERNETES_WORKLOADS.contains(&kind) => Plan::Skip(format!(
            "skipped {what} (serval does not run Kubernetes workloads; deploy a Knative Service instead)"
        )),
        ("", "ServiceAccount") | ("rbac.authorization.k8s.io", _) => Plan::Skip(format!(
            "skipped {what} (serval has no Kubernetes accounts or roles; its API takes one bearer token)"
        )),
        _ => Plan::Skip(format!("skipped {what} (not a kind serval runs)")),
    }
}

impl ApplyArgs {
    /// `apply -f FILE -n NAMESPACE` with every other flag at its default.
    pub fn for_file(file: String, namespace: String) -> ApplyArgs {
        ApplyArgs { file, namespace, no_wait: false, image_maps: Vec::new(), image_map_file: None }
    }
}

pub async fn apply(args: ApplyArgs, global: Global) -> Result<()> {
    let map_file = match &args.image_map_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --image-map-file {}", file.display()))?;
            Some((file.display().to_string(), text))
        }
        None => None,
    };
    let maps = image_maps(&args.image_maps, map_file.as_ref().map(|(name, text)| (name.as_str(), text.as_str())))?;
    let mut docs = read_documents(&args.file)?;
    if docs.is_empty() {
        bail!("{} holds no resources", args.file);
    }
    // A Serverless Workflow DSL document is taken as it is: the Workflow it names.
    for doc in &mut docs {
        if let Some(workflow) = serval_model::workflow_from_document(&doc.value, &args.namespace) {
            doc.value = workflow;
        }
    }
    let unmatched = map_images(docs.iter_mut().map(|d| &mut d.value), &maps);
    // Without a server, a file is still checked against serval's own kinds.
    let client = Client::from_global(&global);
    let catalog = match &client {
        Ok(client) => Catalog::fetch(client).await.unwrap_or_else(|_| Catalog::builtin()),
        Err(_) => Catalog::builtin(),
    };
    let (mut writes, mut skipped, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for doc in &docs {
        match plan(&doc.value, &catalog) {
            Plan::Write { plural, order } => writes.push((order, plural, &doc.value)),
            Plan::Skip(why) => skipped.push(format!("{}: {why}", doc.label)),
            Plan::Refuse(why) => refused.push(format!("{}: {why}", doc.label)),
        }
    }
    if !refused.is_empty() {
        bail!("{}: nothing applied: {}", args.file, refused.join("; "));
    }
    print_warnings(&skipped);
    print_warnings(&unmatched);
    if writes.is_empty() {
        bail!("{} holds no resource that serval runs", args.file);
    }
    let client = client?;
    let mut services = Vec::new();
    writes.sort_by_key(|(order, ..)| *order);
    for (_, plural, doc) in writes {
        let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or(&args.namespace);
        let written = client.put(&format!("/api/v1/namespaces/{namespace}/{plural}/{name}"), doc).await?;
        print_warnings(&written.warnings);
        eprintln!("{kind} {namespace}/{name} configured");
        if plural == "services" {
            services.push((namespace, name));
        }
    }
    if !args.no_wait {
        for (namespace, name) in services {
            let service = client.wait_ready(namespace, name, READY_TIMEOUT).await?;
            println!("{namespace}/{name} {}", service["status"]["url"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// The kinds a server serves, as it lists them at `GET /api/v1`.
pub struct Catalog {
    kinds: Vec<KindInfo>,
}

impl Catalog {
    pub async fn fetch(client: &Client) -> Result<Catalog> {
        let list = client.get("/api/v1").await?;
        let kinds =
            serde_json::from_value(list["resources"].clone()).context("the server's list of kinds is not valid")?;
        Ok(Catalog { kinds })
    }

    /// serval's own kinds, for checking a file without a server.
    fn builtin() -> Catalog {
        Catalog { kinds: serval_model::builtin_kinds() }
    }

    /// The kind `word` names (its kind, singular, plural or short name).
    pub fn find(&self, word: &str) -> Result<&KindInfo> {
        self.kinds.iter().find(|k| k.is_named(word)).ok_or_else(|| {
            let known: Vec<String> = self.kinds.iter().map(KindInfo::singular).collect();
            anyhow::anyhow!("unknown kind {word:?}; use one of {}", known.join(", "))
        })
    }
}

/// How a table shows objects of a kind: its columns, or a richer table for the kinds
/// whose status carries more than columns show (live instances and load, keys).
fn table_for(info: &KindInfo) -> Box<dyn FnOnce(&Value) -> comfy_table::Table + '_> {
    match info.kind.as_str() {
        "Service" => Box::new(output::services_table),
        "Revision" => Box::new(output::revisions_table),
        "Secret" | "ConfigMap" => Box::new(super::config_data::list_table),
        _ => Box::new(|value| output::columns_table(&info.columns, value)),
    }
}

/// Prints one object of a kind the server serves (`name`), or its collection in `namespace`,
/// as `get` and `list` do.
pub(super) async fn show(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: Option<&str>,
    format: output::Format,
) -> Result<()> {
    let catalog = Catalog::fetch(client).await?;
    let kind = catalog.find(kind)?;
    let collection = format!("/api/v1/namespaces/{namespace}/{}", kind.plural);
    let path = match name {
        Some(name) => format!("{collection}/{name}"),
        None => collection,
    };
    output::print(&client.get(&path).await?, format, table_for(kind))
}

/// `[KIND] NAME` words: a kind and a name, or a Service's name.
fn kind_and_name<'a>(words: &'a [String], catalog: &'a Catalog) -> Result<(&'a KindInfo, &'a str)> {
    match words {
        [name] => Ok((catalog.find("service")?, name)),
        [kind, name] => Ok((catalog.find(kind)?, name)),
        _ => bail!("give a name, or a kind and a name"),
    }
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// `KIND NAME` (service, revision, configuration, route, broker, trigger, pingsource,
    /// channel, inmemorychannel, subscription, sequence, parallel, secret, configmap; any kind
    /// the server serves, plurals and short names too), or just `NAME` for a service.
    #[arg(num_args = 1..=2, required = true, value_name = "[KIND] NAME")]
    pub words: Vec<String>,
    /// Namespace of the resource.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub read: ReadOpts,
    /// After printing, print its changes as they happen, until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

pub async fn get(args: GetArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let catalog = Catalog::fetch(&client).await?;
    let (kind, name) = kind_and_name(&args.words, &catalog)?;
    let path = format!("/api/v1/namespaces/{}/{}/{name}", args.namespace, kind.plural);
    let object = client.get(&path).await?;
    output::print(&object, args.read.output, table_for(kind))?;
    if args.watch {
        let collection = format!("/api/v1/namespaces/{}/{}", args.namespace, kind.plural);
        watch(&client, &collection, kind, args.read.output, |object| object["metadata"]["name"] == name).await?;
    }
    Ok(())
}

/// Prints the changes of a collection as they happen (`-w`): a table row per change with
/// its type first, or one JSON or YAML document per change.
async fn watch(
    client: &Client,
    collection: &str,
    kind: &KindInfo,
    format: output::Format,
    wanted: impl Fn(&Value) -> bool,
) -> Result<()> {
    if !kind.watchable {
        bail!("{} cannot be watched", kind.plural);
    }
    let resp = client.get_text(&format!("{collection}?watch=true")).await?;
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("the watch broke off")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value =
                serde_json::from_slice(&line).context("the server sent a watch event that is not JSON")?;
            if !wanted(&event["object"]) {
                continue;
            }
            match format {
                output::Format::Json => println!("{}", serde_json::to_string(&event)?),
                output::Format::Yaml => print!("---\n{}", serde_saphyr::to_string(&event)?),
                output::Format::Table => {
                    let object = &event["object"];
                    let mut row = vec![event["type"].as_str().unwrap_or_default().to_string()];
                    row.push(object["metadata"]["name"].as_str().unwrap_or_default().to_string());
                    row.extend(kind.columns.iter().map(|c| c.value(object)));
                    println!("{}", row.join("  "));
                }
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// What to list: any kind the server serves, by name, plural or short name (`serval list
    /// brokers`).
    #[arg(default_value = "services")]
    pub kind: String,
    /// Namespace to list.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub read: ReadOpts,
    /// After listing, print changes as they happen, until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

pub async fn list(args: ListArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let catalog = Catalog::fetch(&client).await?;
    let kind = catalog.find(&args.kind)?;
    let path = match args.all_namespaces {
        true => format!("/api/v1/{}", kind.plural),
        false => format!("/api/v1/namespaces/{}/{}", args.namespace, kind.plural),
    };
    output::print(&client.get(&path).await?, args.read.output, table_for(kind))?;
    if args.watch {
        watch(&client, &path, kind, args.read.output, |_| true).await?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// `KIND NAME` (service, broker, trigger, pingsource, channel, subscription, sequence,
    /// parallel, secret, configmap; any kind the server writes), or just `NAME` for a service.
    #[arg(num_args = 1..=2, required = true, value_name = "[KIND] NAME")]
    pub words: Vec<String>,
    /// Namespace of the resource.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

pub async fn delete(args: DeleteArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let catalog = Catalog::fetch(&client).await?;
    let (kind, name) = kind_and_name(&args.words, &catalog)?;
    if !kind.writable {
        bail!("{} objects follow their service: delete the service", kind.singular());
    }
    client.delete(&format!("/api/v1/namespaces/{}/{}/{name}", args.namespace, kind.plural)).await?;
    eprintln!("{} {}/{name} deleted", kind.singular(), args.namespace);
    Ok(())
}

#[derive(clap::Args)]
pub struct RevisionsArgs {
    /// Service name.
    pub name: String,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub read: ReadOpts,
}

pub async fn revisions(args: RevisionsArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let service = client.get(&service_path(&args.namespace, &args.name)).await?;
    let mut revs =
        client.get(&format!("/api/v1/namespaces/{}/revisions?service={}", args.namespace, args.name)).await?;
    // Each revision's share of the service's traffic, for the table and the documents.
    let traffic = service["status"]["traffic"].as_array().cloned().unwrap_or_default();
    if let Some(items) = revs["items"].as_array_mut() {
        for rev in items {
            let share: u64 = traffic
                .iter()
                .filter(|t| t["revisionName"] == rev["metadata"]["name"])
                .filter_map(|t| t["percent"].as_u64())
                .sum();
            rev["status"]["traffic"] = json!(share);
            let tags: Vec<&str> = traffic
                .iter()
                .filter(|t| t["revisionName"] == rev["metadata"]["name"])
                .filter_map(|t| t["tag"].as_str())
                .collect();
            rev["status"]["tags"] = json!(tags.join(","));
        }
    }
    if matches!(args.read.output, Format::Table) && revs["items"].as_array().is_some_and(Vec::is_empty) {
        eprintln!("no revisions");
        return Ok(());
    }
    output::print(&revs, args.read.output, output::revisions_table)
}

#[derive(clap::Args)]
pub struct TopArgs {
    /// Namespace of the services.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = super::server::parse_duration)]
    pub interval: Duration,
    /// Print this many frames and exit (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn top(args: TopArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let path = if args.all_namespaces {
        "/api/v1/services".to_string()
    } else {
        format!("/api/v1/namespaces/{}/services", args.namespace)
    };
    let mut frame = 0;
    loop {
        let services = client.get(&path).await?;
        // Clear the screen and home the cursor (ANSI), then the table.
        print!("\x1b[2J\x1b[H");
        println!(
            "serval top — {} (every {:?}, Ctrl-C to quit)\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            args.interval
        );
        println!("{}", output::services_table(&services));
        frame += 1;
        if args.count.is_some_and(|c| frame >= c) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[derive(clap::Args)]
pub struct TrafficArgs {
    /// Service name.
    pub name: String,
    /// REVISION=PERCENT targets (`@latest=PERCENT` follows the latest ready revision).
    #[arg(value_name = "REV=PCT")]
    pub targets: Vec<String>,
    /// Percent for the latest ready revision (same as `@latest=PCT`).
    #[arg(long)]
    pub latest: Option<u32>,
    /// REVISION=TAG: give a revision its own URL `<tag>-<service>…` (repeatable). Existing
    /// tags are kept (at 0 % when their revision gets no share) unless removed with --untag.
    #[arg(long = "tag", value_name = "REV=TAG")]
    pub tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "TAG")]
    pub untags: Vec<String>,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub read: ReadOpts,
}

fn traffic_target(revision: &str, percent: u32) -> Value {
    if revision == "@latest" {
        json!({ "latestRevision": true, "percent": percent })
    } else {
        json!({ "revisionName": revision, "percent": percent })
    }
}

/// The spec.traffic a `serval traffic` asks for, given the current one.
fn build_traffic(args: &TrafficArgs, current: &[Value]) -> Result<Vec<Value>> {
    let mut targets = Vec::new();
    for t in &args.targets {
        let Some((rev, pct)) = t.split_once('=') else { bail!("{t:?} must look like REVISION=PERCENT") };
        let pct: u32 = pct.parse().with_context(|| format!("{t:?}: {pct:?} is not a percent"))?;
        targets.push(traffic_target(rev, pct));
    }
    if let Some(pct) = args.latest {
        targets.push(traffic_target("@latest", pct));
    }
    if targets.is_empty() {
        // Only tags: keep the split as it is.
        targets = if current.is_empty() { vec![traffic_target("@latest", 100)] } else { current.to_vec() };
    } else {
        // A new split keeps the tags of the old one: a tagged target it does not carry stays
        // at 0 %.
        for old in current.iter().filter(|t| t["tag"].is_string()) {
            let latest = |v: &Value| v["latestRevision"] == true;
            let same_revision =
                |v: &Value| latest(v) == latest(old) && (latest(v) || v["revisionName"] == old["revisionName"]);
            let already = targets.iter().any(|v| v["tag"] == old["tag"]);
            match targets.iter_mut().find(|v| same_revision(v) && v["tag"].is_null()) {
                _ if already => {}
                Some(v) => v["tag"] = old["tag"].clone(),
                None => {
                    let mut kept = old.clone();
                    kept["percent"] = json!(0);
                    targets.push(kept);
                }
            }
        }
    }
    for untag in &args.untags {
        if !targets.iter().any(|v| v["tag"] == untag.as_str()) {
            bail!("--untag {untag:?}: no traffic target has that tag");
        }
        for v in targets.iter_mut().filter(|v| v["tag"] == untag.as_str()) {
            if let Some(fields) = v.as_object_mut() {
                fields.remove("tag");
            }
        }
        // A target that only carried the tag goes with it.
        targets.retain(|v| v["tag"].is_string() || v["percent"].as_u64().unwrap_or(0) > 0);
    }
    for t in &args.tags {
        let Some((rev, tag)) = t.split_once('=') else { bail!("--tag {t:?} must look like REVISION=TAG") };
        let matches = |v: &Value| {
            if rev == "@latest" { v["latestRevision"] == true } else { v["revisionName"] == rev }
        };
        match targets.iter_mut().find(|v| matches(v)) {
            Some(v) => v["tag"] = json!(tag),
            None => {
                let mut v = traffic_target(rev, 0);
                v["tag"] = json!(tag);
                targets.push(v);
            }
        }
    }
    Ok(targets)
}

pub async fn traffic(args: TrafficArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let path = service_path(&args.namespace, &args.name);
    let mut service = client.get(&path).await?;
    let current = service["spec"]["traffic"].as_array().cloned().unwrap_or_default();
    service["spec"]["traffic"] = json!(build_traffic(&args, &current)?);
    if let Some(status) = service.as_object_mut() {
        status.remove("status");
    }
    // The controller writes status between our read and write; the traffic block is ours
    // to set whatever it wrote, so the write does not ask for the version read.
    if let Some(metadata) = service["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    let written = client.put(&path, &service).await?;
    print_warnings(&written.warnings);
    let service = client.wait_ready(&args.namespace, &args.name, READY_TIMEOUT).await?;
    output::print(&service["status"]["traffic"], args.read.output, output::traffic_table)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::{
        Catalog, ImageMap, Plan, TrafficArgs, build_traffic, image_maps, map_images, parse_env_file, plan,
        port_references,
    };

    #[test]
    fn port_references_become_kubernetes_ones() {
        assert_eq!(port_references("127.0.0.1:$PORT"), "127.0.0.1:$(PORT)");
        assert_eq!(port_references("${PORT}/$PORT"), "$(PORT)/$(PORT)");
        assert_eq!(port_references("$PORTS $PORT_X $PORT-1"), "$PORTS $PORT_X $(PORT)-1");
    }

    #[derive(Parser)]
    struct TrafficCli {
        #[command(flatten)]
        args: TrafficArgs,
    }

    fn traffic(argv: &[&str], current: &[serde_json::Value]) -> anyhow::Result<Vec<serde_json::Value>> {
        let cli = TrafficCli::try_parse_from(std::iter::once("traffic").chain(argv.iter().copied()))?;
        build_traffic(&cli.args, current)
    }

    #[test]
    fn a_new_split_keeps_tags_unless_untagged() {
        let current = [
            json!({ "revisionName": "s-00001", "percent": 50, "tag": "blue" }),
            json!({ "latestRevision": true, "percent": 50, "tag": "green" }),
        ];
        let got = traffic(&["s", "--latest", "100"], &current).expect("split");
        assert_eq!(
            got,
            vec![
                json!({ "latestRevision": true, "percent": 100, "tag": "green" }),
                json!({ "revisionName": "s-00001", "percent": 0, "tag": "blue" }),
            ]
        );
        let got = traffic(&["s", "--latest", "100", "--untag", "blue"], &current).expect("untag");
        assert_eq!(got, vec![json!({ "latestRevision": true, "percent": 100, "tag": "green" })]);
        assert!(traffic(&["s", "--untag", "nope"], &current).is_err());
    }

    #[test]
    fn env_files_take_comments_exports_and_quotes() {
        let text = "# db\nDB_HOST=localhost\n\nexport DB_USER=\"app\"\nEMPTY=\nEQ='a=b'\n";
        let pairs = parse_env_file(text).expect("parses");
        let expected = [("DB_HOST", "localhost"), ("DB_USER", "app"), ("EMPTY", ""), ("EQ", "a=b")];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        let err = parse_env_file("A=1\nnonsense\n").expect_err("no =");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    fn service(name: &str, containers: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": { "name": name },
            "spec": { "template": { "spec": { "containers": containers } } }
        })
    }

    #[test]
    fn image_maps_run_matching_containers_as_processes() {
        let maps = image_maps(&["ghcr.io/acme/api:1=python3 app.py --port $PORT".to_string()], None).expect("maps");
        let mut docs = vec![
            service(
                "api",
                json!([{
                    "image": "ghcr.io/acme/api:1", "args": ["--verbose"],
                    "env": [{ "name": "MODE", "value": "dev" }]
                }]),
            ),
            service("other", json!([{ "image": "ghcr.io/acme/api:10" }])),
            // Not a Knative Service: left alone.
            json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                    "spec": { "template": { "spec": { "containers": [{ "image": "ghcr.io/acme/api:1" }] } } } }),
        ];
        let warnings = map_images(&mut docs, &maps);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            docs[0]["spec"]["template"]["spec"]["containers"][0],
            json!({
                "command": ["python3", "app.py", "--port", "$(PORT)"], "args": ["--verbose"],
                "env": [{ "name": "MODE", "value": "dev" }]
            })
        );
        assert_eq!(docs[1]["spec"]["template"]["spec"]["containers"][0], json!({ "image": "ghcr.io/acme/api:10" }));
        assert_eq!(docs[2]["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/api:1");
    }

    #[test]
    fn an_image_map_that_matches_nothing_warns() {
        let maps = image_maps(&["a:1=run-a".to_string(), "b:1=run-b".to_string()], None).expect("maps");
        let mut docs = vec![service("a", json!([{ "image": "a:1" }]))];
        assert_eq!(map_images(&mut docs, &maps), vec!["--image-map b:1 matched no container".to_string()]);
    }

    #[test]
    fn image_map_files_skip_comments_and_flags_override_them() {
        let file = "# local builds\n\nweb:1 = ./web --listen '127.0.0.1:${PORT}'\nworker:2=./worker\n";
        let maps = image_maps(&["worker:2=./worker --fast".to_string()], Some(("maps.txt", file))).expect("maps");
        let command = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            maps,
            vec![
                ImageMap { image: "web:1".into(), command: command(&["./web", "--listen", "127.0.0.1:$(PORT)"]) },
                ImageMap { image: "worker:2".into(), command: command(&["./worker", "--fast"]) },
            ]
        );
    }

    #[test]
    fn bad_image_maps_are_one_line_errors() {
        for (flag, expected) in [
            ("no-equals", r#"--image-map "no-equals" must look like IMAGE=CMD"#),
            ("=cmd", r#"--image-map "=cmd" names no image"#),
            ("img=", r#"--image-map "img=" has an empty CMD"#),
            ("img=run 'open", r#"--image-map "img=run 'open": CMD cannot be split into words"#),
        ] {
            let err = format!("{:#}", image_maps(&[flag.to_string()], None).expect_err(flag));
            assert!(err.starts_with(expected), "{flag:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = image_maps(&[], Some(("maps.txt", "# x\nok=run\nbroken\n"))).expect_err("line 3").to_string();
        assert!(err.starts_with(r#"--image-map-file maps.txt: line 3: "broken" must look like IMAGE=CMD"#), "{err}");
    }

    #[test]
    fn api_server_sources_are_written_and_unknown_knative_kinds_refused() {
        let doc = json!({
            "apiVersion": "sources.knative.dev/v1", "kind": "ApiServerSource", "metadata": { "name": "src" }
        });
        assert!(matches!(plan(&doc, &Catalog::builtin()), Plan::Write { .. }));
        let kafka =
            json!({ "apiVersion": "messaging.knative.dev/v1", "kind": "KafkaChannel", "metadata": { "name": "k" } });
        assert!(matches!(plan(&kafka, &Catalog::builtin()), Plan::Refuse(_)));
    }
}
