//! One module per command group; `run` dispatches.

mod build;
mod config_data;
mod demo;
mod dev;
mod eventing;
mod flows;
mod image;
mod init;
mod invoke;
mod kv;
mod lambda;
mod resources;
mod server;
mod sources;
mod workflow;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::Global;
use crate::output::Format;

pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Subcommand)]
pub enum Command {
    /// Run the platform: control API, gateway, controllers.
    Server(server::ServerArgs),
    /// Start a throw-away platform, deploy the bundled example, call it, and show it scale.
    Demo(demo::DemoArgs),
    /// Create a function project from a template: `serval init DIR --lang python|node|rust|go|shell`.
    Init(init::InitArgs),
    /// Build an OCI image from a Containerfile or Dockerfile into the local image store (no daemon).
    Build(build::BuildArgs),
    /// The local loop: deploy a project as a process service and reload it on every change.
    Dev(dev::DevArgs),
    /// Create or update a Service from a command, wait until it is ready, print its URL.
    Deploy(resources::DeployArgs),
    /// Create or update resources from a YAML or JSON file (`-` for stdin).
    Apply(resources::ApplyArgs),
    /// Show one resource.
    Get(resources::GetArgs),
    /// List resources of a kind (services by default; revisions, brokers, triggers, …).
    List(resources::ListArgs),
    /// Delete a resource (a service with its revisions by default; `delete trigger t`, …).
    Delete(resources::DeleteArgs),
    /// List a service's revisions.
    Revisions(resources::RevisionsArgs),
    /// Split traffic between revisions, tag them, or roll back: `serval traffic NAME REV=PCT… [--latest PCT] [--tag REV=TAG]`.
    Traffic(resources::TrafficArgs),
    /// Brokers: durable event logs with an HTTP ingress (create, get, list, delete).
    #[command(subcommand)]
    Broker(eventing::BrokerCommand),
    /// Triggers: deliver a broker's matching events to a subscriber (create, get, list, delete).
    #[command(subcommand)]
    Trigger(eventing::TriggerCommand),
    /// Channels: an address whose events go to every subscription (create, get, list, delete).
    #[command(subcommand)]
    Channel(flows::ChannelCommand),
    /// Subscriptions: deliver a channel's events to a subscriber (create, get, list, delete).
    #[command(subcommand)]
    Subscription(flows::SubscriptionCommand),
    /// Sequences: pass each event through steps in order (create, get, list, delete).
    #[command(subcommand)]
    Sequence(flows::SequenceCommand),
    /// Parallels: send each event to filtered branches at once (create, get, list, delete).
    #[command(subcommand)]
    Parallel(flows::ParallelCommand),
    /// Event sources: `serval source ping|file|nats|postgres|kafka|webhook create|get|list|delete`.
    #[command(subcommand)]
    Source(eventing::SourceCommand),
    /// Send CloudEvents to a broker, or tail what it accepted.
    #[command(subcommand)]
    Event(eventing::EventCommand),
    /// Secrets (values encrypted at rest, redacted when shown): create, get, list, delete.
    #[command(subcommand)]
    Secret(config_data::DataCommand),
    /// ConfigMaps: create, get, list, delete.
    #[command(subcommand, name = "configmap", alias = "cm")]
    ConfigMap(config_data::DataCommand),
    /// Workflows (Serverless Workflow DSL 1.0): create, run, runs, get-run, cancel.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Key-value stores of functions (SERVAL_KV_URL): get, set, rm, ls, incr, create.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Manage the local image store: import, pull, ls, rm.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Live view of services: instances, load, panic mode (refreshes until Ctrl-C).
    Top(resources::TopArgs),
    /// Send a request to a service through the gateway and print the answer.
    Invoke(invoke::InvokeArgs),
    /// List a service's async calls (queued, running, retrying, succeeded, failed).
    Calls(invoke::CallsArgs),
    /// Print a service's captured output.
    Logs(invoke::LogsArgs),
    /// Print credentials for other tools: `eval "$(serval credentials aws)"` lets boto3 and
    /// the AWS CLI call the Lambda API on the gateway.
    Credentials {
        /// Which: `aws` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
        /// AWS_ENDPOINT_URL_LAMBDA as export lines).
        #[arg(value_parser = ["aws"])]
        kind: String,
    },
    /// Print the version and the git commit this binary was built from.
    Version,
    /// Print a shell completion script: `source <(serval completion bash)`.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `-o` and `-n`, shared by read commands.
#[derive(clap::Args, Clone)]
pub struct ReadOpts {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// A Knative `delivery` block (retries, backoff, dead-letter sink), or `None` when no part
/// of it is given; shared by triggers and subscriptions.
pub(crate) fn delivery_spec(
    retry: Option<u32>,
    backoff_policy: Option<String>,
    backoff_delay: Option<String>,
    dead_letter_sink: Option<Value>,
) -> Option<Value> {
    let mut delivery = serde_json::Map::new();
    if let Some(r) = retry {
        delivery.insert("retry".into(), json!(r));
    }
    if let Some(p) = backoff_policy {
        delivery.insert("backoffPolicy".into(), json!(p));
    }
    if let Some(d) = backoff_delay {
        delivery.insert("backoffDelay".into(), json!(d));
    }
    if let Some(d) = dead_letter_sink {
        delivery.insert("deadLetterSink".into(), d);
    }
    (!delivery.is_empty()).then_some(Value::Object(delivery))
}

pub async fn run(command: Command, global: Global) -> Result<()> {
    match command {
        Command::Server(a) => server::run(a, global).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Init(a) => init::run(a),
        Command::Build(a) => build::run(a, global).await,
        Command::Dev(a) => dev::run(a, global).await,
        Command::Deploy(a) => resources::deploy(a, global).await,
        Command::Apply(a) => resources::apply(a, global).await,
        Command::Get(a) => resources::get(a, global).await,
        Command::List(a) => resources::list(a, global).await,
        Command::Delete(a) => resources::delete(a, global).await,
        Command::Revisions(a) => resources::revisions(a, global).await,
        Command::Top(a) => resources::top(a, global).await,
        Command::Kv(c) => kv::run(c, global).await,
        Command::Workflow(c) => workflow::run(c, global).await,
        Command::Traffic(a) => resources::traffic(a, global).await,
        Command::Image(c) => image::run(c, global).await,
        Command::Secret(c) => config_data::run(config_data::DataKind::Secret, c, global).await,
        Command::ConfigMap(c) => config_data::run(config_data::DataKind::ConfigMap, c, global).await,
        Command::Broker(c) => eventing::broker(c, global).await,
        Command::Event(c) => eventing::event(c, global).await,
        Command::Trigger(c) => eventing::trigger(c, global).await,
        Command::Source(c) => eventing::source(c, global).await,
        Command::Channel(c) => flows::channel(c, global).await,
        Command::Subscription(c) => flows::subscription(c, global).await,
        Command::Sequence(c) => flows::sequence(c, global).await,
        Command::Parallel(c) => flows::parallel(c, global).await,
        Command::Invoke(a) => invoke::invoke(a, global).await,
        Command::Calls(a) => invoke::calls(a, global).await,
        Command::Logs(a) => invoke::logs(a, global).await,
        Command::Completion { shell } => {
            crate::print_completion(shell);
            Ok(())
        }
        Command::Credentials { kind: _ } => {
            let info = crate::client::ServerInfo::read(&global.data_dir())?;
            let (Some(id), Some(secret)) = (info.aws_access_key_id, info.aws_secret_access_key) else {
                anyhow::bail!("this server wrote no AWS credentials (an older version?); restart it");
            };
            println!("export AWS_ACCESS_KEY_ID={id}");
            println!("export AWS_SECRET_ACCESS_KEY={secret}");
            println!("export AWS_DEFAULT_REGION=us-east-1");
            println!("export AWS_ENDPOINT_URL_LAMBDA={}", info.gateway);
            Ok(())
        }
        Command::Version => {
            println!("serval {}", crate::VERSION);
            Ok(())
        }
    }
}
