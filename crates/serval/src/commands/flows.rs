//! `serval channel|subscription|sequence|parallel …`: Knative's messaging and flows kinds,
//! written through the generic resource API and shown with the columns the server's kind
//! catalog gives them.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;

const MESSAGING: &str = "messaging.knative.dev/v1";
const FLOWS: &str = "flows.knative.dev/v1";

/// The destination syntax of every `DEST` flag, for `--help`.
pub(super) const DEST_HELP: &str = "DEST is where events go: an absolute http:// or https:// URL; KIND:NAME[/PATH], \
KIND one of service (or ksvc), broker, channel, imc (an InMemoryChannel), sequence, parallel, with PATH \
appended to its address; or a bare NAME, a Service of the namespace.";

/// A kind these commands write: where it is served and what it is called.
pub(super) struct Kind {
    pub(super) api_version: &'static str,
    pub(super) kind: &'static str,
    pub(super) plural: &'static str,
}

const CHANNEL: Kind = Kind { api_version: MESSAGING, kind: "Channel", plural: "channels" };
const IN_MEMORY_CHANNEL: Kind = Kind { api_version: MESSAGING, kind: "InMemoryChannel", plural: "inmemorychannels" };
const SUBSCRIPTION: Kind = Kind { api_version: MESSAGING, kind: "Subscription", plural: "subscriptions" };
const SEQUENCE: Kind = Kind { api_version: FLOWS, kind: "Sequence", plural: "sequences" };
const PARALLEL: Kind = Kind { api_version: FLOWS, kind: "Parallel", plural: "parallels" };

/// The channel template of Channels, Sequences and Parallels: serval's in-memory channel.
fn channel_template() -> Value {
    json!({ "apiVersion": MESSAGING, "kind": IN_MEMORY_CHANNEL.kind })
}

impl Kind {
    fn path(&self, namespace: &str, name: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/{}/{name}", self.plural)
    }

    pub(super) fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// PUTs `{apiVersion, kind, metadata, spec}`; returns the object the server wrote.
    pub(super) async fn write(&self, client: &Client, namespace: &str, name: &str, spec: Value) -> Result<Value> {
        let manifest = json!({
            "apiVersion": self.api_version, "kind": self.kind,
            "metadata": { "name": name, "namespace": namespace }, "spec": spec
        });
        let written = client.put(&self.path(namespace, name), &manifest).await?;
        for w in &written.warnings {
            eprintln!("warning: {w}");
        }
        Ok(written.object)
    }

    /// `get` (with a name) or `list` (without), as the generic commands print them.
    pub(super) async fn show(
        &self,
        client: &Client,
        namespace: &str,
        name: Option<&str>,
        read: &ReadOpts,
    ) -> Result<()> {
        super::resources::show(client, self.plural, namespace, name, read.output).await
    }

    pub(super) async fn delete(&self, client: &Client, namespace: &str, name: &str) -> Result<()> {
        client.delete(&self.path(namespace, name)).await?;
        eprintln!("{} {namespace}/{name} deleted", self.singular());
        Ok(())
    }
}

/// A Knative destination from the command line (see [`DEST_HELP`]); `flag` names the flag
/// in errors.
pub(super) fn parse_destination(flag: &str, text: &str) -> Result<Value> {
    const KINDS: &[(&str, &str, &str)] = &[
        ("service", "serving.knative.dev/v1", "Service"),
        ("ksvc", "serving.knative.dev/v1", "Service"),
        ("broker", "eventing.knative.dev/v1", "Broker"),
        ("channel", MESSAGING, "Channel"),
        ("imc", MESSAGING, "InMemoryChannel"),
        ("sequence", FLOWS, "Sequence"),
        ("parallel", FLOWS, "Parallel"),
    ];
    let text = text.trim();
    if text.starts_with("http://") || text.starts_with("https://") {
        let url = reqwest::Url::parse(text).with_context(|| format!("{flag} {text:?} is not a valid URL"))?;
        if !url.has_host() {
            bail!("{flag} {text:?} is not a valid URL: it has no host");
        }
        return Ok(json!({ "uri": text }));
    }
    let (kind, rest) = match text.split_once(':') {
        Some((kind, rest)) => (kind, rest),
        None => ("service", text),
    };
    let Some((_, api_version, kind)) = KINDS.iter().find(|(word, ..)| word.eq_ignore_ascii_case(kind)) else {
        let words: Vec<&str> = KINDS.iter().map(|(word, ..)| *word).collect();
        bail!(
            "{flag} {text:?}: unknown kind {kind:?}; give an http(s):// URL, KIND:NAME[/PATH] with KIND one of {}, or a Service's NAME",
            words.join(", ")
        )
    };
    let (name, path) = match rest.split_once('/') {
        Some((name, path)) => (name, Some(path)),
        None => (rest, None),
    };
    if name.is_empty() {
        bail!("{flag} {text:?} names no {kind}: give KIND:NAME[/PATH], an http(s):// URL or a Service's NAME");
    }
    if name.chars().any(char::is_whitespace) {
        bail!("{flag} {text:?}: a name has no spaces");
    }
    let mut destination = json!({ "ref": { "apiVersion": api_version, "kind": kind, "name": name } });
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        destination["uri"] = json!(format!("/{path}"));
    }
    Ok(destination)
}

/// A Parallel branch from `--branch [FILTER=>]SUBSCRIBER`.
fn parse_branch(text: &str) -> Result<Value> {
    match text.split_once("=>") {
        Some((filter, subscriber)) => Ok(json!({
            "filter": parse_destination(&format!("--branch {text:?}: filter"), filter)?,
            "subscriber": parse_destination(&format!("--branch {text:?}: subscriber"), subscriber)?,
        })),
        None => Ok(json!({ "subscriber": parse_destination("--branch", text)? })),
    }
}

/// Prints `status.address.url` of a written object.
fn print_address(object: &Value) {
    println!("{}", object["status"]["address"]["url"].as_str().unwrap_or(""));
}

#[derive(clap::Subcommand)]
pub enum ChannelCommand {
    /// Create (or update) a channel (its events go to every subscription); prints its address.
    Create {
        /// Channel name.
        name: String,
        /// Create an InMemoryChannel itself rather than a Channel backed by one.
        #[arg(long)]
        in_memory: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one channel.
    Get {
        /// Channel name.
        name: String,
        /// An InMemoryChannel rather than a Channel.
        #[arg(long)]
        in_memory: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List channels.
    List {
        /// InMemoryChannels rather than Channels.
        #[arg(long)]
        in_memory: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a channel.
    Delete {
        /// Channel name.
        name: String,
        /// An InMemoryChannel rather than a Channel.
        #[arg(long)]
        in_memory: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

fn channel_kind(in_memory: bool) -> &'static Kind {
    if in_memory { &IN_MEMORY_CHANNEL } else { &CHANNEL }
}

pub async fn channel(command: ChannelCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        ChannelCommand::Create { name, in_memory, namespace } => {
            let spec = if in_memory { json!({}) } else { json!({ "channelTemplate": channel_template() }) };
            print_address(&channel_kind(in_memory).write(&client, &namespace, &name, spec).await?);
            Ok(())
        }
        ChannelCommand::Get { name, in_memory, namespace, read } => {
            channel_kind(in_memory).show(&client, &namespace, Some(&name), &read).await
        }
        ChannelCommand::List { in_memory, namespace, read } => {
            channel_kind(in_memory).show(&client, &namespace, None, &read).await
        }
        ChannelCommand::Delete { name, in_memory, namespace } => {
            channel_kind(in_memory).delete(&client, &namespace, &name).await
        }
    }
}

#[derive(clap::Subcommand)]
pub enum SubscriptionCommand {
    /// Create (or update) a subscription: a channel's events sent to a subscriber, its replies
    /// to a reply destination; prints the subscriber's resolved URL.
    #[command(after_help = DEST_HELP)]
    Create {
        /// Subscription name.
        name: String,
        /// The channel whose events the subscription delivers.
        #[arg(long)]
        channel: String,
        /// The channel is an InMemoryChannel rather than a Channel.
        #[arg(long)]
        in_memory: bool,
        /// Where each event goes.
        #[arg(long, value_name = "DEST")]
        subscriber: Option<String>,
        /// Where the subscriber's replies go.
        #[arg(long, value_name = "DEST")]
        reply: Option<String>,
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
        #[arg(long, value_name = "DEST")]
        dead_letter_sink: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one subscription.
    Get {
        /// Subscription name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List subscriptions.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a subscription.
    Delete {
        /// Subscription name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

pub async fn subscription(command: SubscriptionCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        SubscriptionCommand::Create {
            name,
            channel,
            in_memory,
            subscriber,
            reply,
            retry,
            backoff_policy,
            backoff_delay,
            dead_letter_sink,
            namespace,
        } => {
            let channel_ref = json!({ "apiVersion": MESSAGING, "kind": channel_kind(in_memory).kind, "name": channel });
            let mut spec = json!({ "channel": channel_ref });
            if let Some(s) = &subscriber {
                spec["subscriber"] = parse_destination("--subscriber", s)?;
            }
            if let Some(r) = &reply {
                spec["reply"] = parse_destination("--reply", r)?;
            }
            let dead_letter_sink = dead_letter_sink.map(|d| parse_destination("--dead-letter-sink", &d)).transpose()?;
            if let Some(delivery) = super::delivery_spec(retry, backoff_policy, backoff_delay, dead_letter_sink) {
                spec["delivery"] = delivery;
            }
            let written = SUBSCRIPTION.write(&client, &namespace, &name, spec).await?;
            let (ready, reason, message) = crate::output::condition(&written, "Ready").unwrap_or(("Unknown", "", ""));
            if ready != "True" {
                eprintln!("subscription {namespace}/{name} is not ready: {reason}: {message}");
            }
            println!("{}", written["status"]["physicalSubscription"]["subscriberUri"].as_str().unwrap_or(""));
            Ok(())
        }
        SubscriptionCommand::Get { name, namespace, read } => {
            SUBSCRIPTION.show(&client, &namespace, Some(&name), &read).await
        }
        SubscriptionCommand::List { namespace, read } => SUBSCRIPTION.show(&client, &namespace, None, &read).await,
        SubscriptionCommand::Delete { name, namespace } => SUBSCRIPTION.delete(&client, &namespace, &name).await,
    }
}

#[derive(clap::Subcommand)]
pub enum SequenceCommand {
    /// Create (or update) a sequence: each event goes through the steps in order, each step's
    /// reply being the next step's event; prints the sequence's address.
    #[command(after_help = DEST_HELP)]
    Create {
        /// Sequence name.
        name: String,
        /// A step (repeatable, in order; at least one).
        #[arg(long = "step", value_name = "DEST", required = true)]
        steps: Vec<String>,
        /// Where the last step's replies go.
        #[arg(long, value_name = "DEST")]
        reply: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one sequence.
    Get {
        /// Sequence name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List sequences.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a sequence.
    Delete {
        /// Sequence name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// The spec of a Sequence from `--step` and `--reply`.
fn sequence_spec(steps: &[String], reply: Option<&str>) -> Result<Value> {
    if steps.is_empty() {
        bail!("give at least one --step");
    }
    let steps = steps.iter().map(|s| parse_destination("--step", s)).collect::<Result<Vec<_>>>()?;
    let mut spec = json!({ "channelTemplate": channel_template(), "steps": steps });
    if let Some(r) = reply {
        spec["reply"] = parse_destination("--reply", r)?;
    }
    Ok(spec)
}

pub async fn sequence(command: SequenceCommand, global: Global) -> Result<()> {
    match command {
        SequenceCommand::Create { name, steps, reply, namespace } => {
            let spec = sequence_spec(&steps, reply.as_deref())?;
            let client = Client::from_global(&global)?;
            print_address(&SEQUENCE.write(&client, &namespace, &name, spec).await?);
            Ok(())
        }
        SequenceCommand::Get { name, namespace, read } => {
            SEQUENCE.show(&Client::from_global(&global)?, &namespace, Some(&name), &read).await
        }
        SequenceCommand::List { namespace, read } => {
            SEQUENCE.show(&Client::from_global(&global)?, &namespace, None, &read).await
        }
        SequenceCommand::Delete { name, namespace } => {
            SEQUENCE.delete(&Client::from_global(&global)?, &namespace, &name).await
        }
    }
}

#[derive(clap::Subcommand)]
pub enum ParallelCommand {
    /// Create (or update) a parallel: each event goes to every branch whose filter (if any)
    /// answers it, then to the branch's subscriber; prints the parallel's address.
    #[command(after_help = DEST_HELP)]
    Create {
        /// Parallel name.
        name: String,
        /// A branch (repeatable; at least one): SUBSCRIBER, or FILTER=>SUBSCRIBER, both
        /// DESTs; an event reaches the subscriber when the filter answers it with a 2xx
        /// (e.g. --branch 'ksvc:is-order=>ksvc:ship').
        #[arg(long = "branch", value_name = "[FILTER=>]SUBSCRIBER", required = true)]
        branches: Vec<String>,
        /// Where the subscribers' replies go.
        #[arg(long, value_name = "DEST")]
        reply: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show one parallel.
    Get {
        /// Parallel name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// List parallels.
    List {
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a parallel.
    Delete {
        /// Parallel name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// The spec of a Parallel from `--branch` and `--reply`.
fn parallel_spec(branches: &[String], reply: Option<&str>) -> Result<Value> {
    if branches.is_empty() {
        bail!("give at least one --branch");
    }
    let branches = branches.iter().map(|b| parse_branch(b)).collect::<Result<Vec<_>>>()?;
    let mut spec = json!({ "channelTemplate": channel_template(), "branches": branches });
    if let Some(r) = reply {
        spec["reply"] = parse_destination("--reply", r)?;
    }
    Ok(spec)
}

pub async fn parallel(command: ParallelCommand, global: Global) -> Result<()> {
    match command {
        ParallelCommand::Create { name, branches, reply, namespace } => {
            let spec = parallel_spec(&branches, reply.as_deref())?;
            let client = Client::from_global(&global)?;
            print_address(&PARALLEL.write(&client, &namespace, &name, spec).await?);
            Ok(())
        }
        ParallelCommand::Get { name, namespace, read } => {
            PARALLEL.show(&Client::from_global(&global)?, &namespace, Some(&name), &read).await
        }
        ParallelCommand::List { namespace, read } => {
            PARALLEL.show(&Client::from_global(&global)?, &namespace, None, &read).await
        }
        ParallelCommand::Delete { name, namespace } => {
            PARALLEL.delete(&Client::from_global(&global)?, &namespace, &name).await
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{parallel_spec, parse_destination, sequence_spec};

    fn dest(text: &str) -> serde_json::Value {
        parse_destination("--subscriber", text).expect("a destination")
    }

    fn dest_error(text: &str) -> String {
        parse_destination("--subscriber", text).expect_err("not a destination").to_string()
    }

    #[test]
    fn urls_become_uris() {
        assert_eq!(dest("http://127.0.0.1:8080/events"), json!({ "uri": "http://127.0.0.1:8080/events" }));
        assert_eq!(dest("https://example.com"), json!({ "uri": "https://example.com" }));
    }

    #[test]
    fn kinds_and_names_become_refs() {
        let cases = [
            ("service:web", "serving.knative.dev/v1", "Service", "web"),
            ("ksvc:web", "serving.knative.dev/v1", "Service", "web"),
            ("broker:default", "eventing.knative.dev/v1", "Broker", "default"),
            ("channel:orders", "messaging.knative.dev/v1", "Channel", "orders"),
            ("imc:orders", "messaging.knative.dev/v1", "InMemoryChannel", "orders"),
            ("sequence:steps", "flows.knative.dev/v1", "Sequence", "steps"),
            ("parallel:fan", "flows.knative.dev/v1", "Parallel", "fan"),
            ("Broker:b", "eventing.knative.dev/v1", "Broker", "b"),
            ("web", "serving.knative.dev/v1", "Service", "web"),
        ];
        for (text, api_version, kind, name) in cases {
            assert_eq!(
                dest(text),
                json!({ "ref": { "apiVersion": api_version, "kind": kind, "name": name } }),
                "{text}"
            );
        }
    }

    #[test]
    fn a_path_after_the_name_is_a_relative_uri() {
        assert_eq!(
            dest("ksvc:web/hooks/in"),
            json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "web" }, "uri": "/hooks/in" })
        );
        assert_eq!(
            dest("web/x"),
            json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "web" }, "uri": "/x" })
        );
        assert_eq!(
            dest("broker:b/"),
            json!({ "ref": { "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b" } })
        );
    }

    #[test]
    fn bad_destinations_are_one_line_errors_naming_the_flag() {
        for (text, expected) in [
            ("localhost:8080", r#"--subscriber "localhost:8080": unknown kind "localhost""#),
            ("trigger:t", r#"unknown kind "trigger""#),
            ("broker:", r#"--subscriber "broker:" names no Broker"#),
            ("", r#"--subscriber "" names no Service"#),
            ("http://", r#"--subscriber "http://" is not a valid URL"#),
            ("ksvc:a b", "a name has no spaces"),
        ] {
            let err = dest_error(text);
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn sequences_take_steps_in_order_and_a_reply() {
        let steps = ["ksvc:first".to_string(), "http://h/second".to_string()];
        let spec = sequence_spec(&steps, Some("broker:default")).expect("spec");
        assert_eq!(
            spec,
            json!({
                "channelTemplate": { "apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel" },
                "steps": [
                    { "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "first" } },
                    { "uri": "http://h/second" },
                ],
                "reply": { "ref": { "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default" } },
            })
        );
        assert!(sequence_spec(&[], None).is_err());
        let err = sequence_spec(&["nope:x".to_string()], None).expect_err("bad step").to_string();
        assert!(err.starts_with(r#"--step "nope:x""#), "{err}");
    }

    #[test]
    fn parallel_branches_take_an_optional_filter() {
        let branches = ["ksvc:is-order=>ksvc:ship".to_string(), "http://h/audit".to_string()];
        let spec = parallel_spec(&branches, None).expect("spec");
        let service =
            |name: &str| json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name } });
        assert_eq!(
            spec["branches"],
            json!([
                { "filter": service("is-order"), "subscriber": service("ship") },
                { "subscriber": { "uri": "http://h/audit" } },
            ])
        );
        assert!(spec.get("reply").is_none());
        assert_eq!(spec["channelTemplate"]["kind"], "InMemoryChannel");
        let err = format!("{:#}", parallel_spec(&["x=>".to_string()], None).expect_err("no subscriber"));
        assert!(err.starts_with(r#"--branch "x=>": subscriber "" names no Service"#), "{err}");
        let err = format!("{:#}", parallel_spec(&["bad:f=>s".to_string()], None).expect_err("bad filter"));
        assert!(err.starts_with(r#"--branch "bad:f=>s": filter "bad:f": unknown kind "bad""#), "{err}");
    }
}
