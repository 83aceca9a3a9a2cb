//! `serval secret …` and `serval configmap …`: Kubernetes `v1` Secrets and ConfigMaps that
//! services read through `envFrom` and `valueFrom`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;
use crate::output;

/// Which of the two kinds a command works on.
#[derive(Clone, Copy)]
pub enum DataKind {
    Secret,
    ConfigMap,
}

impl DataKind {
    fn kind(self) -> &'static str {
        match self {
            DataKind::Secret => "Secret",
            DataKind::ConfigMap => "ConfigMap",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            DataKind::Secret => "secrets",
            DataKind::ConfigMap => "configmaps",
        }
    }
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Create or replace one from literals, files and env files; services that read it get
    /// a new revision when a value they read changes.
    Create {
        /// Its name.
        name: String,
        /// A key and its value (repeatable).
        #[arg(long = "from-literal", value_name = "KEY=VALUE")]
        literals: Vec<String>,
        /// A file's content under its file name, or under KEY (repeatable).
        #[arg(long = "from-file", value_name = "[KEY=]PATH")]
        files: Vec<String>,
        /// KEY=VALUE lines of a file (`#` starts a comment), each a key.
        #[arg(long = "from-env-file", value_name = "PATH")]
        env_file: Option<std::path::PathBuf>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one (a Secret's values are shown as <redacted> unless --show-secrets).
    Get {
        /// Its name.
        name: String,
        /// Print a Secret's values.
        #[arg(long)]
        show_secrets: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List them with their keys.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete one; services that read it turn not ready at their next revision.
    Delete {
        /// Its name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// The key → value map a `create` describes, in bytes.
fn collect_values(literals: &[String], files: &[String], env_file: Option<&Path>) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut values = BTreeMap::new();
    if let Some(path) = env_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        for (key, value) in super::resources::parse_env_file(&text).with_context(|| path.display().to_string())? {
            values.insert(key, value.into_bytes());
        }
    }
    for spec in files {
        let (key, path) = match spec.split_once('=') {
            Some((key, path)) => (key.to_string(), path),
            None => {
                let name = Path::new(spec).file_name().and_then(|n| n.to_str());
                (name.with_context(|| format!("--from-file {spec:?} has no file name"))?.to_string(), spec.as_str())
            }
        };
        values.insert(key, std::fs::read(path).with_context(|| format!("cannot read --from-file {path}"))?);
    }
    for literal in literals {
        let Some((key, value)) = literal.split_once('=') else {
            bail!("--from-literal {literal:?} must look like KEY=VALUE")
        };
        values.insert(key.to_string(), value.as_bytes().to_vec());
    }
    if values.is_empty() {
        bail!("give at least one --from-literal, --from-file or --from-env-file");
    }
    Ok(values)
}

/// The document: values as `data` (base64) for a Secret; for a ConfigMap as `data` when
/// they are text, else `binaryData`.
fn document(kind: DataKind, name: &str, namespace: &str, values: BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let mut doc =
        json!({ "apiVersion": "v1", "kind": kind.kind(), "metadata": { "name": name, "namespace": namespace } });
    match kind {
        DataKind::Secret => {
            doc["type"] = json!("Opaque");
            doc["data"] = values.iter().map(|(k, v)| (k.clone(), json!(b64(v)))).collect();
        }
        DataKind::ConfigMap => {
            let (mut text, mut binary) = (serde_json::Map::new(), serde_json::Map::new());
            for (k, v) in values {
                match String::from_utf8(v) {
                    Ok(t) => text.insert(k, json!(t)),
                    Err(e) => binary.insert(k, json!(b64(e.as_bytes()))),
                };
            }
            doc["data"] = Value::Object(text);
            if !binary.is_empty() {
                doc["binaryData"] = Value::Object(binary);
            }
        }
    }
    doc
}

/// Key and value rows: text as it is, a Secret's base64 `data` decoded when it is text.
fn values_table(kind: DataKind) -> impl FnOnce(&Value) -> Table {
    move |value| {
        let mut t = Table::new();
        t.load_preset(NOTHING).set_header(["KEY", "VALUE"]);
        let decoded = |encoded: &str| {
            base64::engine::general_purpose::STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok())
        };
        for field in ["data", "binaryData"] {
            for (k, v) in value[field].as_object().into_iter().flatten() {
                let raw = v.as_str().unwrap_or_default();
                let shown = match (kind, field) {
                    (DataKind::Secret, _) if raw == "<redacted>" => raw.to_string(),
                    (DataKind::Secret, _) => decoded(raw).unwrap_or_else(|| format!("<binary, base64 {raw}>")),
                    (DataKind::ConfigMap, "binaryData") => format!("<binary, base64 {raw}>"),
                    (DataKind::ConfigMap, _) => raw.to_string(),
                };
                t.add_row([k.clone(), shown]);
            }
        }
        t
    }
}

pub(super) fn list_table(value: &Value) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(["NAME", "KEYS"]);
    let items = value["items"].as_array().cloned().unwrap_or_else(|| vec![value.clone()]);
    for item in &items {
        let keys: Vec<&str> = ["data", "binaryData"]
            .iter()
            .filter_map(|f| item[*f].as_object())
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        t.add_row([item["metadata"]["name"].as_str().unwrap_or_default().to_string(), keys.join(",")]);
    }
    t
}

pub async fn run(kind: DataKind, command: DataCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let path = |namespace: &str, name: &str| format!("/api/v1/namespaces/{namespace}/{}/{name}", kind.plural());
    let noun = kind.kind().to_lowercase();
    match command {
        DataCommand::Create { name, literals, files, env_file, namespace } => {
            let values = collect_values(&literals, &files, env_file.as_deref())?;
            let keys = values.len();
            client.put(&path(&namespace, &name), &document(kind, &name, &namespace, values)).await?;
            eprintln!("{noun} {namespace}/{name} configured ({keys} keys)");
            Ok(())
        }
        DataCommand::Get { name, show_secrets, namespace, read } => {
            let query = if show_secrets { "?showSecrets=true" } else { "" };
            let value = client.get(&format!("{}{query}", path(&namespace, &name))).await?;
            output::print(&value, read.output, values_table(kind))
        }
        DataCommand::List { namespace, read } => {
            let value = client.get(&format!("/api/v1/namespaces/{namespace}/{}", kind.plural())).await?;
            output::print(&value, read.output, list_table)
        }
        DataCommand::Delete { name, namespace } => {
            client.delete(&path(&namespace, &name)).await?;
            eprintln!("{noun} {namespace}/{name} deleted");
            Ok(())
        }
    }
}
