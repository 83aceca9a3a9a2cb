//! `serval broker …` and `serval event …`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use serval_model::{Broker, PingSource, Resource, Trigger};

use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;
use crate::output;

#[derive(clap::Subcommand)]
pub enum BrokerCommand {
    /// Create (or update) a broker; prints its ingress URL.
    Create {
        /// Broker name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one broker.
    Get {
        /// Broker name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List brokers.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a broker and its stored events.
    Delete {
        /// Broker name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

#[derive(clap::Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process; boxing would only obscure the clap shape")]
pub enum TriggerCommand {
    /// Create (or update) a trigger: the events of a broker that match, sent to a subscriber.
    Create {
        /// Trigger name.
        name: String,
        /// The broker whose events the trigger delivers.
        #[arg(long, default_value = "default")]
        broker: String,
        /// Subscriber URL.
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        sink: Option<String>,
        /// Subscriber: a serval Service in the namespace.
        #[arg(long)]
        service: Option<String>,
        /// Exact attribute filter NAME=VALUE (repeatable).
        #[arg(long = "filter", value_name = "NAME=VALUE")]
        filters: Vec<String>,
        /// A CESQL filter expression.
        #[arg(long)]
        cesql: Option<String>,
        /// Retries after the first attempt.
        #[arg(long)]
        retry: Option<u32>,
        /// linear or exponential.
        #[arg(long)]
        backoff_policy: Option<String>,
        /// ISO-8601 base delay, e.g. PT0.2S.
        #[arg(long)]
        backoff_delay: Option<String>,
        /// Where events go when delivery fails for good.
        #[arg(long)]
        dead_letter_sink: Option<String>,
        /// Events delivered at once (annotation serval.dev/delivery-concurrency; default 100).
        #[arg(long)]
        concurrency: Option<u32>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one trigger.
    Get {
        /// Trigger name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List triggers.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a trigger.
    Delete {
        /// Trigger name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

fn trigger_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/triggers/{name}")
}

pub async fn trigger(command: TriggerCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        TriggerCommand::Create {
            name,
            broker,
            sink,
            service,
            filters,
            cesql,
            retry,
            backoff_policy,
            backoff_delay,
            dead_letter_sink,
            concurrency,
            namespace,
        } => {
            let subscriber = match (sink, service) {
                (Some(uri), _) => json!({ "uri": uri }),
                (None, Some(svc)) => {
                    json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": svc } })
                }
                (None, None) => bail!("give --sink or --service"),
            };
            let mut exact = serde_json::Map::new();
            for f in &filters {
                let Some((k, v)) = f.split_once('=') else { bail!("--filter {f:?} must look like NAME=VALUE") };
                exact.insert(k.to_string(), json!(v));
            }
            let mut spec = json!({ "broker": broker, "subscriber": subscriber });
            let mut api_filters = Vec::new();
            if !exact.is_empty() {
                api_filters.push(json!({ "exact": exact }));
            }
            if let Some(expr) = cesql {
                api_filters.push(json!({ "cesql": expr }));
            }
            if !api_filters.is_empty() {
                spec["filters"] = json!(api_filters);
            }
            let dead_letter_sink = dead_letter_sink.map(|d| json!({ "uri": d }));
            if let Some(delivery) = super::delivery_spec(retry, backoff_policy, backoff_delay, dead_letter_sink) {
                spec["delivery"] = delivery;
            }
            let mut metadata = json!({ "name": name, "namespace": namespace });
            if let Some(n) = concurrency {
                metadata["annotations"] = json!({ serval_model::DELIVERY_CONCURRENCY: n.to_string() });
            }
            let manifest = json!({
                "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": metadata, "spec": spec
            });
            let written = client.put(&trigger_path(&namespace, &name), &manifest).await?;
            let (ready, reason, message) = output::condition(&written.object, "Ready").unwrap_or(("Unknown", "", ""));
            if ready != "True" {
                eprintln!("trigger {namespace}/{name} is not ready: {reason}: {message}");
            }
            println!("{}", written.object["status"]["subscriberUri"].as_str().unwrap_or(""));
            Ok(())
        }
        TriggerCommand::Get { name, namespace, read } => {
            output::print(&client.get(&trigger_path(&namespace, &name)).await?, read.output, |v: &Value| {
                output::columns_table(&Trigger::info().columns, v)
            })
        }
        TriggerCommand::List { namespace, read } => output::print(
            &client.get(&format!("/api/v1/namespaces/{namespace}/triggers")).await?,
            read.output,
            |v: &Value| output::columns_table(&Trigger::info().columns, v),
        ),
        TriggerCommand::Delete { name, namespace } => {
            client.delete(&trigger_path(&namespace, &name)).await?;
            eprintln!("trigger {namespace}/{name} deleted");
            Ok(())
        }
    }
}

/// The `status.address.url` of the object at `path`.
async fn address(client: &Client, path: &str) -> Result<String> {
    let object = client.get(path).await?;
    object["status"]["address"]["url"].as_str().map(str::to_string).context("it has no address (status.address.url)")
}

#[derive(clap::Subcommand)]
pub enum EventCommand {
    /// Send a CloudEvent (binary mode) to a broker's ingress, or to a channel's or flow's.
    Send {
        /// The broker to send to.
        #[arg(long, required_unless_present = "to", conflicts_with = "to")]
        broker: Option<String>,
        /// Where to send it instead of a broker: KIND:NAME of a channel, imc, sequence or
        /// parallel (or broker), or an http(s):// URL.
        #[arg(long, value_name = "DEST")]
        to: Option<String>,
        /// The event's `type` attribute, e.g. com.example.order.created.
        #[arg(long = "type")]
        event_type: String,
        /// The event's `source` attribute, a URI reference, e.g. /shop/orders.
        #[arg(long)]
        source: String,
        /// Event id (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// Data, or @FILE.
        #[arg(long)]
        data: Option<String>,
        /// Media type of the data (`datacontenttype`).
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Extension attributes (repeatable).
        #[arg(long = "ext", value_name = "NAME=VALUE")]
        extensions: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Print the events a broker accepted (and, with -f, those that follow).
    Tail {
        /// Broker name.
        broker: String,
        /// Keep printing events as they arrive (until Ctrl-C).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

fn broker_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/brokers/{name}")
}

pub async fn broker(command: BrokerCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        BrokerCommand::Create { name, namespace } => {
            let manifest = json!({
                "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                "metadata": { "name": name, "namespace": namespace }
            });
            let written = client.put(&broker_path(&namespace, &name), &manifest).await?;
            println!("{}", written.object["status"]["address"]["url"].as_str().unwrap_or(""));
            Ok(())
        }
        BrokerCommand::Get { name, namespace, read } => {
            output::print(&client.get(&broker_path(&namespace, &name)).await?, read.output, |v: &Value| {
                output::columns_table(&Broker::info().columns, v)
            })
        }
        BrokerCommand::List { namespace, read } => output::print(
            &client.get(&format!("/api/v1/namespaces/{namespace}/brokers")).await?,
            read.output,
            |v: &Value| output::columns_table(&Broker::info().columns, v),
        ),
        BrokerCommand::Delete { name, namespace } => {
            client.delete(&broker_path(&namespace, &name)).await?;
            eprintln!("broker {namespace}/{name} deleted");
            Ok(())
        }
    }
}

fn fresh_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

pub async fn event(command: EventCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        EventCommand::Send { broker, to, event_type, source, id, data, content_type, extensions, namespace } => {
            let (url, target) = match (broker, to) {
                (Some(broker), _) => {
                    (address(&client, &broker_path(&namespace, &broker)).await?, format!("{namespace}/{broker}"))
                }
                (None, Some(to)) => {
                    let dest = super::flows::parse_destination("--to", &to)?;
                    match (dest["uri"].as_str(), dest["ref"]["kind"].as_str(), dest["ref"]["name"].as_str()) {
                        (Some(url), None, _) => (url.to_string(), to.clone()),
                        (_, Some(kind), Some(name)) => {
                            let plural = format!("{}s", kind.to_lowercase());
                            let path = format!("/api/v1/namespaces/{namespace}/{plural}/{name}");
                            (address(&client, &path).await?, to.clone())
                        }
                        _ => bail!("--to {to:?} names nothing that takes events"),
                    }
                }
                (None, None) => bail!("give --broker or --to"),
            };
            let body =
                match data.as_deref().map(|d| d.strip_prefix('@').map_or(Ok(d.as_bytes().to_vec()), std::fs::read)) {
                    Some(read) => read.context("cannot read the data file")?,
                    None => Vec::new(),
                };
            let mut req = reqwest::Client::new()
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", id.unwrap_or_else(fresh_id))
                .header("ce-type", event_type)
                .header("ce-source", source);
            if !body.is_empty() {
                req = req.header("content-type", content_type);
            }
            for ext in &extensions {
                let Some((name, value)) = ext.split_once('=') else { bail!("--ext {ext:?} must look like NAME=VALUE") };
                req = req.header(format!("ce-{name}"), value);
            }
            let resp = req.body(body).send().await.with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status();
            if status.as_u16() != 202 {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or(text);
                bail!("{message} ({})", status.as_u16());
            }
            eprintln!("event accepted by {target}");
            Ok(())
        }
        EventCommand::Tail { broker, follow, namespace } => {
            let mut after = 0i64;
            loop {
                let page =
                    client.get(&format!("{}/events?after={after}&limit=500", broker_path(&namespace, &broker))).await?;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                for item in &items {
                    println!("{}", item["event"]);
                    after = item["seq"].as_i64().unwrap_or(after);
                }
                if items.is_empty() {
                    if !follow {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[derive(clap::Subcommand)]
pub enum SourceCommand {
    /// PingSources: events on a cron schedule.
    #[command(subcommand)]
    Ping(PingCommand),
    /// FileSources: an event for each file written into a directory of the server's machine.
    #[command(subcommand)]
    File(super::sources::FileCommand),
    /// NatsSources: the messages of a NATS JetStream stream.
    #[command(subcommand)]
    Nats(super::sources::NatsCommand),
    /// PostgresSources: the row changes of PostgreSQL tables (logical replication).
    #[command(subcommand)]
    Postgres(super::sources::PostgresCommand),
    /// KafkaSources: the records of Kafka topics.
    #[command(subcommand)]
    Kafka(super::sources::KafkaCommand),
    /// WebhookSources: any POST to their address, as an event.
    #[command(subcommand)]
    Webhook(super::sources::WebhookCommand),
    /// ApiServerSources: changes of serval's resources and instance lifecycle, as events.
    #[command(subcommand)]
    Apiserver(super::sources::ApiServerCommand),
}

#[derive(clap::Subcommand)]
pub enum PingCommand {
    /// Create (or update) a ping source.
    Create {
        /// Ping source name.
        name: String,
        /// Cron schedule: 5 fields, or 6 with seconds first ("*/2 * * * * *").
        #[arg(long)]
        schedule: String,
        /// IANA time zone of the schedule (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Data of each event, as text.
        #[arg(long, conflicts_with = "data_base64")]
        data: Option<String>,
        /// Data of each event, base64-encoded (for binary data).
        #[arg(long)]
        data_base64: Option<String>,
        /// Media type of the data.
        #[arg(long)]
        content_type: Option<String>,
        /// Sink URL.
        #[arg(long, required_unless_present = "broker", conflicts_with = "broker")]
        sink: Option<String>,
        /// Sink: a broker in the namespace.
        #[arg(long)]
        broker: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// List ping sources.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a ping source.
    Delete {
        /// Ping source name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

pub async fn source(command: SourceCommand, global: Global) -> Result<()> {
    let command = match command {
        SourceCommand::Ping(command) => command,
        SourceCommand::File(command) => return super::sources::file(command, global).await,
        SourceCommand::Nats(command) => return super::sources::nats(command, global).await,
        SourceCommand::Postgres(command) => return super::sources::postgres(command, global).await,
        SourceCommand::Kafka(command) => return super::sources::kafka(command, global).await,
        SourceCommand::Webhook(command) => return super::sources::webhook(command, global).await,
        SourceCommand::Apiserver(command) => return super::sources::apiserver(command, global).await,
    };
    let client = Client::from_global(&global)?;
    match command {
        PingCommand::Create { name, schedule, timezone, data, data_base64, content_type, sink, broker, namespace } => {
            let sink = match (sink, broker) {
                (Some(uri), _) => json!({ "uri": uri }),
                (None, Some(b)) => {
                    json!({ "ref": { "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": b } })
                }
                (None, None) => bail!("give --sink or --broker"),
            };
            let mut spec = json!({ "schedule": schedule, "sink": sink });
            for (key, value) in
                [("timezone", timezone), ("data", data), ("dataBase64", data_base64), ("contentType", content_type)]
            {
                if let Some(v) = value {
                    spec[key] = json!(v);
                }
            }
            let manifest = json!({
                "apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
                "metadata": { "name": name, "namespace": namespace }, "spec": spec
            });
            let written = client.put(&format!("/api/v1/namespaces/{namespace}/pingsources/{name}"), &manifest).await?;
            println!("{}", written.object["status"]["subscriberUri"].as_str().unwrap_or(""));
            Ok(())
        }
        PingCommand::List { namespace, read } => output::print(
            &client.get(&format!("/api/v1/namespaces/{namespace}/pingsources")).await?,
            read.output,
            |v: &Value| output::columns_table(&PingSource::info().columns, v),
        ),
        PingCommand::Delete { name, namespace } => {
            client.delete(&format!("/api/v1/namespaces/{namespace}/pingsources/{name}")).await?;
            eprintln!("pingsource {namespace}/{name} deleted");
            Ok(())
        }
    }
}
