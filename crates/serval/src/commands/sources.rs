//! `serval source file|nats|postgres …`: serval's own event sources
//! (`sources.serval.dev/v1alpha1`), written through the generic resource API and shown with
//! the columns the server's kind catalog gives them (SINK, READY, REASON and the counters).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use serval_model::SERVAL_SOURCES_API_VERSION;

use super::flows::{DEST_HELP, Kind, parse_destination};
use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;

const FILE_SOURCE: Kind = Kind { api_version: SERVAL_SOURCES_API_VERSION, kind: "FileSource", plural: "filesources" };
const KAFKA_SOURCE: Kind =
    Kind { api_version: serval_model::KAFKA_SOURCE_API_VERSION, kind: "KafkaSource", plural: "kafkasources" };
const WEBHOOK_SOURCE: Kind =
    Kind { api_version: SERVAL_SOURCES_API_VERSION, kind: "WebhookSource", plural: "webhooksources" };
const NATS_SOURCE: Kind = Kind { api_version: SERVAL_SOURCES_API_VERSION, kind: "NatsSource", plural: "natssources" };
const APISERVER_SOURCE: Kind =
    Kind { api_version: serval_model::SOURCES_API_VERSION, kind: "ApiServerSource", plural: "apiserversources" };
const POSTGRES_SOURCE: Kind =
    Kind { api_version: SERVAL_SOURCES_API_VERSION, kind: "PostgresSource", plural: "postgressources" };

/// The destination syntax of `--sink`, for `--help`.
/// Longest extension name `--ce-override` takes (as the server checks).
const MAX_EXTENSION_NAME: usize = 20;

/// What every `create` takes besides the kind's own flags.
#[derive(clap::Args)]
pub struct SinkArgs {
    /// Where the events go.
    #[arg(long, value_name = "DEST")]
    sink: String,
    /// An extension attribute set on every event, replacing the source's own (repeatable).
    #[arg(long = "ce-override", value_name = "NAME=VALUE")]
    ce_overrides: Vec<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

/// `get`, `list` and `delete`, the same for every source kind.
#[derive(clap::Subcommand)]
pub enum ReadCommand {
    /// Show one source.
    Get {
        /// Source name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List sources of this kind.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a source.
    Delete {
        /// Source name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

#[derive(clap::Subcommand)]
pub enum FileCommand {
    /// Create (or update) a file source: an event for each file written into a directory
    /// (type dev.serval.file.added; data: name, size, sha256, content); prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(FileCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Args)]
pub struct FileCreate {
    /// Source name.
    name: String,
    /// The directory to watch (made absolute against the current directory; the server
    /// reads it, so it must be a directory of the server's machine).
    #[arg(long, value_name = "DIR")]
    path: String,
    /// Only files whose name (relative to DIR) matches this glob, e.g. '*.csv'.
    #[arg(long, value_name = "GLOB")]
    pattern: Option<String>,
    /// Watch the subdirectories too.
    #[arg(long)]
    recursive: bool,
    /// What happens to a file once its event was accepted: keep (the default), delete,
    /// or move:DIR.
    #[arg(long, value_name = "keep|delete|move:DIR")]
    after: Option<String>,
    #[command(flatten)]
    sink: SinkArgs,
}

#[derive(clap::Subcommand)]
pub enum NatsCommand {
    /// Create (or update) a NATS source: the messages of a JetStream stream, read through a
    /// durable pull consumer; prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(NatsCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Args)]
pub struct NatsCreate {
    /// Source name.
    name: String,
    /// A NATS server, e.g. nats://127.0.0.1:4222 (repeatable; at least one).
    #[arg(long = "server", value_name = "URL", required = true)]
    servers: Vec<String>,
    /// The JetStream stream (it must exist).
    #[arg(long)]
    stream: String,
    /// Only messages of this subject (wildcards * and >); all of the stream's by default.
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// The durable consumer's name (created if missing; it keeps the position).
    #[arg(long)]
    consumer: String,
    #[command(flatten)]
    sink: SinkArgs,
}

#[derive(clap::Subcommand)]
pub enum KafkaCommand {
    /// Create (or update) a Kafka source (Knative's KafkaSource): the records of topics, every
    /// partition in order, offsets kept by serval; prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(KafkaCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Args)]
pub struct KafkaCreate {
    /// Source name.
    name: String,
    /// A broker, host:port (repeatable; at least one).
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT", required = true)]
    bootstrap_servers: Vec<String>,
    /// A topic (repeatable; at least one).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// The consumer group's name (Knative's field; serval keeps the offsets itself).
    #[arg(long, default_value = "serval")]
    consumer_group: String,
    /// Where a partition without a stored offset starts.
    #[arg(long, value_name = "earliest|latest")]
    initial_offset: Option<String>,
    #[command(flatten)]
    sink: SinkArgs,
}

#[derive(clap::Subcommand)]
pub enum WebhookCommand {
    /// Create (or update) a webhook source: any POST to its address (printed on stderr)
    /// becomes an event; prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(WebhookCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Subcommand)]
pub enum ApiServerCommand {
    /// Create (or update) an API server source: changes of serval's own resources
    /// (dev.knative.apiserver.ref|resource.add|update|delete) and, with `--resource event`,
    /// instance lifecycle events (dev.serval.instance.started|ready|stopped|crashed|
    /// oomkilled|failed) of the namespace; prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(ApiServerCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Args)]
pub struct ApiServerCreate {
    /// Source name.
    name: String,
    /// A kind to watch (service, trigger, broker, …; `event` for instance lifecycle;
    /// repeatable).
    #[arg(long = "resource", value_name = "KIND", required = true)]
    resources: Vec<String>,
    /// Only objects with this label (repeatable; all must match).
    #[arg(long = "selector", value_name = "LABEL=VALUE")]
    selectors: Vec<String>,
    /// Reference (the event names the object) or Resource (it carries the object).
    #[arg(long, default_value = "Reference", value_parser = ["Reference", "Resource"])]
    mode: String,
    #[command(flatten)]
    sink: SinkArgs,
}

#[derive(clap::Args)]
pub struct WebhookCreate {
    /// Source name.
    name: String,
    /// The events' type; `{header:Name}` in it is replaced by that request header.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// A request header carried as an extension (repeatable).
    #[arg(long = "header", value_name = "NAME")]
    headers: Vec<String>,
    /// The Secret (`NAME/KEY`) holding the HMAC-SHA256 key requests are signed with
    /// (`X-Hub-Signature-256: sha256=<hex>`).
    #[arg(long, value_name = "NAME/KEY")]
    secret: Option<String>,
    #[command(flatten)]
    sink: SinkArgs,
}

#[derive(clap::Subcommand)]
pub enum PostgresCommand {
    /// Create (or update) a PostgreSQL source: the row changes of tables, read through
    /// logical replication; prints the sink's URL.
    #[command(after_help = DEST_HELP)]
    Create(PostgresCreate),
    #[command(flatten)]
    Read(ReadCommand),
}

#[derive(clap::Args)]
pub struct PostgresCreate {
    /// Source name.
    name: String,
    /// A libpq URL: postgresql://USER@HOST:PORT/DATABASE (give the password with
    /// --password-env or --password-file rather than in the URL).
    #[arg(long, value_name = "URL")]
    connection: String,
    /// A table whose changes become events (repeatable; at least one).
    #[arg(long = "table", value_name = "SCHEMA.TABLE", required = true)]
    tables: Vec<String>,
    /// The replication slot (created if missing; it keeps the position).
    #[arg(long)]
    slot: String,
    /// The publication (created if missing).
    #[arg(long)]
    publication: String,
    /// An environment variable of the server holding the password.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// A file holding the password (made absolute against the current directory; the
    /// server reads it).
    #[arg(long, value_name = "FILE")]
    password_file: Option<String>,
    #[command(flatten)]
    sink: SinkArgs,
}

/// `path` made absolute against `cwd`, without touching the file system (`.` components
/// dropped, `..` kept); `flag` names the flag in errors.
fn absolute(flag: &str, path: &str, cwd: &Path) -> Result<String> {
    non_empty(flag, path)?;
    let path = Path::new(path);
    let joined = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
    let cleaned: PathBuf = joined.components().filter(|c| *c != Component::CurDir).collect();
    match cleaned.to_str() {
        Some(text) => Ok(text.to_string()),
        None => bail!("{flag} {:?}: the absolute path {} is not UTF-8", path.display(), cleaned.display()),
    }
}

/// The current directory, to make paths absolute against.
fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().context("cannot read the current directory")
}

/// Fails when a flag's value is empty.
fn non_empty(flag: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        bail!("{flag} is empty");
    }
    Ok(())
}

/// `spec.ceOverrides` from `--ce-override NAME=VALUE` flags, or `None` without any.
fn ce_overrides(flags: &[String]) -> Result<Option<Value>> {
    let mut extensions = BTreeMap::new();
    for flag in flags {
        let Some((name, value)) = flag.split_once('=') else {
            bail!("--ce-override {flag:?} must look like NAME=VALUE")
        };
        if name.is_empty()
            || name.len() > MAX_EXTENSION_NAME
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bail!(
                "--ce-override {flag:?}: an extension NAME is 1 to {MAX_EXTENSION_NAME} lower-case letters and digits"
            );
        }
        if extensions.insert(name.to_string(), value.to_string()).is_some() {
            bail!("--ce-override {name:?} is given twice");
        }
    }
    Ok((!extensions.is_empty()).then(|| json!({ "extensions": extensions })))
}

/// Adds `sink` and `ceOverrides` to a kind's own spec.
fn with_sink(mut spec: Value, sink: &SinkArgs) -> Result<Value> {
    spec["sink"] = parse_destination("--sink", &sink.sink)?;
    if let Some(overrides) = ce_overrides(&sink.ce_overrides)? {
        spec["ceOverrides"] = overrides;
    }
    Ok(spec)
}

/// The spec of a FileSource; relative paths are taken against `cwd`.
fn file_spec(args: &FileCreate, cwd: &Path) -> Result<Value> {
    let mut spec = json!({ "path": absolute("--path", &args.path, cwd)?, "recursive": args.recursive });
    if let Some(pattern) = &args.pattern {
        non_empty("--pattern", pattern)?;
        spec["pattern"] = json!(pattern);
    }
    if let Some(after) = &args.after {
        let after = match after.trim() {
            "keep" | "delete" => after.trim().to_string(),
            other => match other.strip_prefix("move:") {
                Some(dir) if !dir.trim().is_empty() => format!("move:{}", absolute("--after move:", dir, cwd)?),
                Some(_) => bail!("--after {after:?} names no directory: give move:DIR"),
                None => bail!("--after {after:?} must be keep, delete or move:DIR"),
            },
        };
        spec["after"] = json!(after);
    }
    with_sink(spec, &args.sink)
}

/// The spec of a NatsSource.
fn nats_spec(args: &NatsCreate) -> Result<Value> {
    if args.servers.is_empty() {
        bail!("give at least one --server");
    }
    for server in &args.servers {
        non_empty("--server", server)?;
        if server.chars().any(char::is_whitespace) {
            bail!("--server {server:?} has spaces: give one URL per --server");
        }
    }
    non_empty("--stream", &args.stream)?;
    non_empty("--consumer", &args.consumer)?;
    let mut spec = json!({ "servers": args.servers, "stream": args.stream, "consumer": args.consumer });
    if let Some(subject) = &args.subject {
        non_empty("--subject", subject)?;
        spec["subject"] = json!(subject);
    }
    with_sink(spec, &args.sink)
}

/// The spec of a KafkaSource.
fn kafka_spec(args: &KafkaCreate) -> Result<Value> {
    for server in &args.bootstrap_servers {
        non_empty("--bootstrap-server", server)?;
    }
    for topic in &args.topics {
        non_empty("--topic", topic)?;
    }
    non_empty("--consumer-group", &args.consumer_group)?;
    let mut spec = json!({
        "bootstrapServers": args.bootstrap_servers, "topics": args.topics, "consumerGroup": args.consumer_group
    });
    match args.initial_offset.as_deref() {
        None => {}
        Some(o @ ("earliest" | "latest")) => spec["initialOffset"] = json!(o),
        Some(other) => bail!("--initial-offset {other:?} must be earliest or latest"),
    }
    with_sink(spec, &args.sink)
}

/// The spec of an ApiServerSource: each `--resource` named as the server's kinds are
/// (kind, plural or short name, any case), `event` for instance lifecycle events.
fn apiserver_spec(args: &ApiServerCreate) -> Result<Value> {
    let mut labels = serde_json::Map::new();
    for selector in &args.selectors {
        let Some((label, value)) = selector.split_once('=').filter(|(l, _)| !l.trim().is_empty()) else {
            bail!("--selector {selector:?} must look like LABEL=VALUE");
        };
        labels.insert(label.trim().to_string(), json!(value));
    }
    let kinds = serval_model::watchable_kinds();
    let mut resources = Vec::new();
    for word in &args.resources {
        if ["event", "events"].contains(&word.to_lowercase().as_str()) {
            resources.push(json!({ "apiVersion": "v1", "kind": serval_model::INSTANCE_EVENTS_KIND }));
            continue;
        }
        let Some(info) = kinds.iter().find(|k| k.is_named(word)) else {
            let names: Vec<String> = kinds.iter().map(|k| k.singular()).collect();
            bail!("--resource {word:?} is not a kind serval watches: give one of {}, or event", names.join(", "));
        };
        let mut resource = json!({ "apiVersion": info.api_version, "kind": info.kind });
        if !labels.is_empty() {
            resource["selector"] = json!({ "matchLabels": labels });
        }
        resources.push(resource);
    }
    with_sink(json!({ "mode": args.mode, "resources": resources }), &args.sink)
}

/// The spec of a WebhookSource.
fn webhook_spec(args: &WebhookCreate) -> Result<Value> {
    let mut spec = json!({});
    if let Some(t) = &args.event_type {
        non_empty("--type", t)?;
        spec["type"] = json!(t);
    }
    for header in &args.headers {
        non_empty("--header", header)?;
    }
    if !args.headers.is_empty() {
        spec["headers"] = json!(args.headers);
    }
    if let Some(secret) = &args.secret {
        let Some((name, key)) = secret.split_once('/').filter(|(n, k)| !n.is_empty() && !k.is_empty()) else {
            bail!("--secret {secret:?} must look like NAME/KEY (a Secret and one of its keys)");
        };
        spec["secret"] = json!({ "secretKeyRef": { "name": name, "key": key } });
    }
    with_sink(spec, &args.sink)
}

/// The spec of a PostgresSource, and a warning when the connection URL holds a password;
/// a relative `--password-file` is taken against `cwd`.
fn postgres_spec(args: &PostgresCreate, cwd: &Path) -> Result<(Value, Option<String>)> {
    let connection = args.connection.trim();
    if !(connection.starts_with("postgresql://") || connection.starts_with("postgres://")) {
        bail!("--connection {connection:?} must be a libpq URL: postgresql://USER@HOST:PORT/DATABASE");
    }
    let url = reqwest::Url::parse(connection)
        .map_err(|e| anyhow::anyhow!("--connection {connection:?} is not a valid URL: {e}"))?;
    let warning = url.password().is_some().then(|| {
        "the password in --connection is stored in the source as it is; --password-env or --password-file keep it out"
            .to_string()
    });
    if args.tables.is_empty() {
        bail!("give at least one --table");
    }
    for table in &args.tables {
        match table.split_once('.') {
            Some((schema, name)) if !schema.is_empty() && !name.is_empty() && !name.contains('.') => {}
            _ => bail!("--table {table:?} must look like SCHEMA.TABLE"),
        }
    }
    non_empty("--slot", &args.slot)?;
    non_empty("--publication", &args.publication)?;
    let mut spec = json!({
        "connection": connection, "tables": args.tables, "slot": args.slot, "publication": args.publication
    });
    if let Some(var) = &args.password_env {
        non_empty("--password-env", var)?;
        if var.contains(['=', '\0']) {
            bail!("--password-env {var:?} is not an environment variable's name");
        }
        spec["passwordEnv"] = json!(var);
    }
    if let Some(file) = &args.password_file {
        spec["passwordFile"] = json!(absolute("--password-file", file, cwd)?);
    }
    Ok((with_sink(spec, &args.sink)?, warning))
}

/// Writes a source; prints its sink's URL, and on stderr why it is not ready (if it is not).
async fn create(kind: &Kind, global: &Global, name: &str, namespace: &str, spec: Value) -> Result<()> {
    let client = Client::from_global(global)?;
    let written = kind.write(&client, namespace, name, spec).await?;
    let (ready, reason, message) = crate::output::condition(&written, "Ready").unwrap_or(("Unknown", "", ""));
    if ready != "True" {
        eprintln!("{} {namespace}/{name} is not ready: {reason}: {message}", kind.singular());
    }
    println!("{}", written["status"]["sinkUri"].as_str().unwrap_or(""));
    Ok(())
}

async fn read(kind: &Kind, command: ReadCommand, global: &Global) -> Result<()> {
    let client = Client::from_global(global)?;
    match command {
        ReadCommand::Get { name, namespace, read } => kind.show(&client, &namespace, Some(&name), &read).await,
        ReadCommand::List { namespace, read } => kind.show(&client, &namespace, None, &read).await,
        ReadCommand::Delete { name, namespace } => kind.delete(&client, &namespace, &name).await,
    }
}

pub async fn file(command: FileCommand, global: Global) -> Result<()> {
    match command {
        FileCommand::Create(args) => {
            let spec = file_spec(&args, &current_dir()?)?;
            create(&FILE_SOURCE, &global, &args.name, &args.sink.namespace, spec).await
        }
        FileCommand::Read(command) => read(&FILE_SOURCE, command, &global).await,
    }
}

pub async fn nats(command: NatsCommand, global: Global) -> Result<()> {
    match command {
        NatsCommand::Create(args) => {
            let spec = nats_spec(&args)?;
            create(&NATS_SOURCE, &global, &args.name, &args.sink.namespace, spec).await
        }
        NatsCommand::Read(command) => read(&NATS_SOURCE, command, &global).await,
    }
}

pub async fn kafka(command: KafkaCommand, global: Global) -> Result<()> {
    match command {
        KafkaCommand::Create(args) => {
            let spec = kafka_spec(&args)?;
            create(&KAFKA_SOURCE, &global, &args.name, &args.sink.namespace, spec).await
        }
        KafkaCommand::Read(command) => read(&KAFKA_SOURCE, command, &global).await,
    }
}

pub async fn webhook(command: WebhookCommand, global: Global) -> Result<()> {
    match command {
        WebhookCommand::Create(args) => {
            let spec = webhook_spec(&args)?;
            let client = Client::from_global(&global)?;
            let written = WEBHOOK_SOURCE.write(&client, &args.sink.namespace, &args.name, spec).await?;
            let (namespace, name) = (&args.sink.namespace, &args.name);
            let (ready, reason, message) = crate::output::condition(&written, "Ready").unwrap_or(("Unknown", "", ""));
            if ready != "True" {
                eprintln!("webhooksource {namespace}/{name} is not ready: {reason}: {message}");
            }
            eprintln!("webhooks to {}", written["status"]["address"]["url"].as_str().unwrap_or(""));
            println!("{}", written["status"]["sinkUri"].as_str().unwrap_or(""));
            Ok(())
        }
        WebhookCommand::Read(command) => read(&WEBHOOK_SOURCE, command, &global).await,
    }
}

pub async fn apiserver(command: ApiServerCommand, global: Global) -> Result<()> {
    match command {
        ApiServerCommand::Create(args) => {
            let spec = apiserver_spec(&args)?;
            create(&APISERVER_SOURCE, &global, &args.name, &args.sink.namespace, spec).await
        }
        ApiServerCommand::Read(command) => read(&APISERVER_SOURCE, command, &global).await,
    }
}

pub async fn postgres(command: PostgresCommand, global: Global) -> Result<()> {
    match command {
        PostgresCommand::Create(args) => {
            let (spec, warning) = postgres_spec(&args, &current_dir()?)?;
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            create(&POSTGRES_SOURCE, &global, &args.name, &args.sink.namespace, spec).await
        }
        PostgresCommand::Read(command) => read(&POSTGRES_SOURCE, command, &global).await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;
    use serde_json::{Value, json};
    use serval_model::{FileSource, NatsSource, PostgresSource, Resource};

    use super::{
        APISERVER_SOURCE, ApiServerCommand, FILE_SOURCE, FileCommand, KAFKA_SOURCE, KafkaCommand, Kind, NATS_SOURCE,
        NatsCommand, POSTGRES_SOURCE, PostgresCommand, ReadCommand, WEBHOOK_SOURCE, WebhookCommand, apiserver_spec,
        file_spec, kafka_spec, nats_spec, postgres_spec, webhook_spec,
    };

    #[derive(Parser)]
    struct Cli<C: clap::Subcommand> {
        #[command(subcommand)]
        command: C,
    }

    /// A command line (shell words) after `serval source KIND`, parsed.
    fn try_parse<C: clap::Subcommand>(line: &str) -> Result<C, clap::Error> {
        let words = shell_words::split(line).expect("shell words");
        Cli::<C>::try_parse_from(std::iter::once("source".to_string()).chain(words)).map(|cli| cli.command)
    }

    fn parse<C: clap::Subcommand>(line: &str) -> C {
        try_parse(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn parse_error<C: clap::Subcommand>(line: &str) -> String {
        match try_parse::<C>(line) {
            Ok(_) => panic!("{line} parsed"),
            Err(e) => e.to_string(),
        }
    }

    const CWD: &str = "/home/me/work";

    /// The manifest `Kind::write` PUTs.
    fn manifest(kind: &Kind, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": kind.api_version, "kind": kind.kind,
            "metadata": { "name": name, "namespace": "default" }, "spec": spec
        })
    }

    fn file(line: &str) -> anyhow::Result<Value> {
        match parse::<FileCommand>(line) {
            FileCommand::Create(args) => file_spec(&args, Path::new(CWD)),
            FileCommand::Read(_) => panic!("not create"),
        }
    }

    fn nats(line: &str) -> anyhow::Result<Value> {
        match parse::<NatsCommand>(line) {
            NatsCommand::Create(args) => nats_spec(&args),
            NatsCommand::Read(_) => panic!("not create"),
        }
    }

    fn postgres(line: &str) -> anyhow::Result<(Value, Option<String>)> {
        match parse::<PostgresCommand>(line) {
            PostgresCommand::Create(args) => postgres_spec(&args, Path::new(CWD)),
            PostgresCommand::Read(_) => panic!("not create"),
        }
    }

    /// The error of bad input, checked to be one line.
    fn one_line(result: anyhow::Result<impl std::fmt::Debug>) -> String {
        let text = format!("{:#}", result.expect_err("bad input"));
        assert!(!text.contains('\n'), "one line: {text}");
        text
    }

    #[test]
    fn kinds_are_the_servers() {
        for (kind, info) in [
            (&FILE_SOURCE, FileSource::info()),
            (&NATS_SOURCE, NatsSource::info()),
            (&POSTGRES_SOURCE, PostgresSource::info()),
        ] {
            assert_eq!(kind.api_version, info.api_version);
            assert_eq!(kind.kind, info.kind);
            assert_eq!(kind.plural, info.plural);
        }
    }

    #[test]
    fn file_sources_take_every_flag() {
        let spec = file(
            "create drops --path in/./box --pattern '*.csv' --recursive --after move:../done \
             --sink broker:default --ce-override team=data --ce-override env=a=b",
        )
        .expect("spec");
        assert_eq!(
            spec,
            json!({
                "path": "/home/me/work/in/box",
                "pattern": "*.csv",
                "recursive": true,
                "after": "move:/home/me/work/../done",
                "sink": { "ref": { "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default" } },
                "ceOverrides": { "extensions": { "env": "a=b", "team": "data" } },
            })
        );
        let source: FileSource =
            serde_json::from_value(manifest(&FILE_SOURCE, "drops", spec)).expect("the server's FileSource");
        source.validate().expect("valid for the server");
    }

    #[test]
    fn file_sources_leave_out_what_is_not_given() {
        let spec = file("create drops --path /tmp/x/ --sink http://127.0.0.1:9/").expect("spec");
        assert_eq!(spec, json!({ "path": "/tmp/x", "recursive": false, "sink": { "uri": "http://127.0.0.1:9/" } }));
        for after in ["keep", "delete", "move:/srv/done"] {
            let spec = file(&format!("create d --path /tmp --after {after} --sink web")).expect("spec");
            assert_eq!(spec["after"], after);
            let source: FileSource = serde_json::from_value(manifest(&FILE_SOURCE, "d", spec)).expect("decodes");
            source.validate().expect("valid for the server");
        }
    }

    #[test]
    fn bad_file_flags_are_one_line_errors_naming_the_flag() {
        for (flags, expected) in [
            ("--ce-override x", r#"--ce-override "x" must look like NAME=VALUE"#),
            ("--ce-override Team=a", r#"--ce-override "Team=a": an extension NAME is 1 to 20"#),
            ("--ce-override =a", r#"--ce-override "=a": an extension NAME"#),
            ("--ce-override a=1 --ce-override a=2", r#"--ce-override "a" is given twice"#),
            ("--after shred", r#"--after "shred" must be keep, delete or move:DIR"#),
            ("--after move:", r#"--after "move:" names no directory"#),
            ("--pattern ''", "--pattern is empty"),
        ] {
            let err = one_line(file(&format!("create d --path /tmp --sink http://h/ {flags}")));
            assert!(err.starts_with(expected), "{flags}: {err}");
        }
        assert!(one_line(file("create d --path '' --sink web")).starts_with("--path is empty"));
        let err = one_line(file("create d --path /tmp --sink nope:x"));
        assert!(err.starts_with(r#"--sink "nope:x": unknown kind "nope""#), "{err}");
        let err = parse_error::<FileCommand>("create d --sink http://h/");
        assert!(err.contains("--path <DIR>"), "{err}");
    }

    #[test]
    fn nats_sources_take_servers_stream_subject_and_consumer() {
        let spec = nats(
            "create orders --server nats://a:4222 --server nats://b:4222 --stream ORDERS --subject 'orders.>' \
             --consumer serval --sink ksvc:shop/in --ce-override origin=nats",
        )
        .expect("spec");
        assert_eq!(
            spec,
            json!({
                "servers": ["nats://a:4222", "nats://b:4222"],
                "stream": "ORDERS",
                "subject": "orders.>",
                "consumer": "serval",
                "sink": {
                    "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "shop" },
                    "uri": "/in",
                },
                "ceOverrides": { "extensions": { "origin": "nats" } },
            })
        );
        let source: NatsSource = serde_json::from_value(manifest(&NATS_SOURCE, "orders", spec)).expect("decodes");
        source.validate().expect("valid for the server");
        let spec = nats("create o --server nats://a --stream S --consumer c --sink web").expect("spec");
        assert!(spec.get("subject").is_none() && spec.get("ceOverrides").is_none(), "{spec}");
    }

    #[test]
    fn bad_nats_flags_are_errors_naming_the_flag() {
        let err = parse_error::<NatsCommand>("create o --stream S --consumer c --sink web");
        assert!(err.contains("--server <URL>"), "{err}");
        for (flags, expected) in [
            ("--server nats://a --stream '' --consumer c", "--stream is empty"),
            ("--server nats://a --stream S --consumer ' '", "--consumer is empty"),
            ("--server 'nats://a nats://b' --stream S --consumer c", r#"--server "nats://a nats://b" has spaces"#),
            ("--server nats://a --stream S --consumer c --subject ''", "--subject is empty"),
            ("--server nats://a --stream S --consumer c --ce-override x", r#"--ce-override "x" must"#),
        ] {
            let err = one_line(nats(&format!("create o --sink web {flags}")));
            assert!(err.starts_with(expected), "{flags}: {err}");
        }
    }

    #[test]
    fn postgres_sources_take_tables_slot_publication_and_a_password() {
        let (spec, warning) = postgres(
            "create rows --connection postgresql://app@db:5432/shop --table public.orders --table sales.items \
             --slot serval --publication serval_pub --password-file secrets/pg --sink channel:changes",
        )
        .expect("spec");
        assert_eq!(warning, None);
        assert_eq!(
            spec,
            json!({
                "connection": "postgresql://app@db:5432/shop",
                "tables": ["public.orders", "sales.items"],
                "slot": "serval",
                "publication": "serval_pub",
                "passwordFile": "/home/me/work/secrets/pg",
                "sink": { "ref": { "apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "changes" } },
            })
        );
        let source: PostgresSource = serde_json::from_value(manifest(&POSTGRES_SOURCE, "rows", spec)).expect("decodes");
        source.validate().expect("valid for the server");
        let (spec, warning) = postgres(
            "create rows --connection postgres://app:hunter2@db/shop --table public.orders --slot s \
             --publication p --password-env PGPASSWORD --sink web",
        )
        .expect("spec");
        assert_eq!(spec["passwordEnv"], "PGPASSWORD");
        assert!(spec.get("passwordFile").is_none());
        assert!(warning.is_some_and(|w| w.contains("--connection")), "a password in the URL is warned about");
    }

    #[test]
    fn bad_postgres_flags_are_errors_naming_the_flag() {
        let line = |connection: &str, table: &str, slot: &str, rest: &str| {
            format!(
                "create rows --sink web --connection {connection} --table {table} --slot {slot} --publication p {rest}"
            )
        };
        for (line, expected) in [
            (line("db:5432", "a.b", "s", ""), r#"--connection "db:5432" must be a libpq URL"#),
            (line("postgresql://db:port/x", "a.b", "s", ""), r#"--connection "postgresql://db:port/x" is not a valid"#),
            (line("postgresql://db/x", "orders", "s", ""), r#"--table "orders" must look like SCHEMA.TABLE"#),
            (line("postgresql://db/x", "a.b.c", "s", ""), r#"--table "a.b.c" must look like SCHEMA.TABLE"#),
            (line("postgresql://db/x", ".t", "s", ""), r#"--table ".t" must look like SCHEMA.TABLE"#),
            (line("postgresql://db/x", "a.b", "''", ""), "--slot is empty"),
            (line("postgresql://db/x", "a.b", "s", "--password-env ''"), "--password-env is empty"),
            (
                line("postgresql://db/x", "a.b", "s", "--password-env A=B"),
                r#"--password-env "A=B" is not an environment"#,
            ),
            (line("postgresql://db/x", "a.b", "s", "--password-file ''"), "--password-file is empty"),
        ] {
            let err = one_line(postgres(&line));
            assert!(err.starts_with(expected), "{line}: {err}");
        }
        let err = parse_error::<PostgresCommand>(&line(
            "postgresql://db/x",
            "a.b",
            "s",
            "--password-env V --password-file /f",
        ));
        assert!(err.contains("--password-env") && err.contains("--password-file"), "{err}");
    }

    #[test]
    fn get_list_and_delete_take_a_namespace_and_a_format() {
        match parse::<FileCommand>("get drops -n team -o json") {
            FileCommand::Read(ReadCommand::Get { name, namespace, read }) => {
                assert_eq!((name.as_str(), namespace.as_str()), ("drops", "team"));
                assert!(matches!(read.output, crate::output::Format::Json));
            }
            _ => panic!("get"),
        }
        assert!(matches!(
            parse::<NatsCommand>("list -o yaml"),
            NatsCommand::Read(ReadCommand::List { read, .. }) if matches!(read.output, crate::output::Format::Yaml)
        ));
        assert!(matches!(
            parse::<PostgresCommand>("delete rows -n x"),
            PostgresCommand::Read(ReadCommand::Delete { name, namespace }) if name == "rows" && namespace == "x"
        ));
    }

    #[test]
    fn kafka_and_webhook_sources_are_what_the_server_takes() {
        let spec = match parse::<KafkaCommand>(
            "create orders --bootstrap-server 127.0.0.1:9092 --topic orders --topic refunds --initial-offset earliest \
             --sink broker:default",
        ) {
            KafkaCommand::Create(args) => kafka_spec(&args).expect("spec"),
            KafkaCommand::Read(_) => panic!("not create"),
        };
        assert_eq!(spec["topics"], json!(["orders", "refunds"]));
        assert_eq!(spec["consumerGroup"], "serval");
        let source: serval_model::KafkaSource =
            serde_json::from_value(manifest(&KAFKA_SOURCE, "orders", spec)).expect("decodes");
        source.validate().expect("valid for the server");
        let spec = match parse::<WebhookCommand>(
            "create github --type 'com.github.{header:X-GitHub-Event}' --header X-GitHub-Event \
             --secret hook/token --sink http://127.0.0.1:9/",
        ) {
            WebhookCommand::Create(args) => webhook_spec(&args).expect("spec"),
            WebhookCommand::Read(_) => panic!("not create"),
        };
        assert_eq!(spec["secret"], json!({ "secretKeyRef": { "name": "hook", "key": "token" } }));
        let source: serval_model::WebhookSource =
            serde_json::from_value(manifest(&WEBHOOK_SOURCE, "github", spec)).expect("decodes");
        source.validate().expect("valid for the server");
        let bad = match parse::<WebhookCommand>("create g --secret nokey --sink web") {
            WebhookCommand::Create(args) => webhook_spec(&args).expect_err("bad secret").to_string(),
            WebhookCommand::Read(_) => panic!("not create"),
        };
        assert!(bad.starts_with("--secret"), "{bad}");
    }

    fn apiserver(line: &str) -> anyhow::Result<Value> {
        match parse::<ApiServerCommand>(line) {
            ApiServerCommand::Create(args) => apiserver_spec(&args),
            ApiServerCommand::Read(_) => panic!("not create"),
        }
    }

    #[test]
    fn apiserver_create_names_kinds_as_the_server_does() {
        let spec = apiserver(
            "create audit --resource ksvc --resource Triggers --resource event --selector team=shop \
                              --mode Resource --sink broker:default",
        )
        .expect("valid");
        assert_eq!(spec["mode"], "Resource");
        assert_eq!(
            spec["resources"][0],
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                                 "selector": {"matchLabels": {"team": "shop"}}})
        );
        assert_eq!(spec["resources"][1]["kind"], "Trigger");
        assert_eq!(spec["resources"][2], json!({"apiVersion": "v1", "kind": "Event"}));
        let source: serval_model::ApiServerSource =
            serde_json::from_value(manifest(&APISERVER_SOURCE, "audit", spec)).expect("decodes");
        source.validate().expect("the server takes it");
        let err = apiserver("create a --resource secret --sink broker:default").expect_err("secrets are not watched");
        assert!(err.to_string().starts_with(r#"--resource "secret" is not a kind serval watches"#), "{err}");
        let err = apiserver("create a --resource service --selector team --sink broker:default").expect_err("no =");
        assert_eq!(err.to_string(), r#"--selector "team" must look like LABEL=VALUE"#);
        assert!(parse_error::<ApiServerCommand>("create a --sink broker:default").contains("--resource"));
        assert!(parse_error::<ApiServerCommand>("create a --resource service --mode Watch --sink x").contains("Watch"));
    }
}
