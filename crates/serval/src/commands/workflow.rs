//! `serval workflow create|run|runs|get-run|cancel`: Serverless Workflow DSL 1.0 documents
//! run on serval's engine. `create -f` is `apply -f` of the document.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{DEFAULT_NAMESPACE, ReadOpts};
use crate::Global;
use crate::client::Client;
use crate::output;

#[derive(clap::Subcommand)]
pub enum WorkflowCommand {
    /// Create (or update) a workflow from a DSL document (YAML or JSON).
    Create {
        /// The DSL document (YAML or JSON).
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Start a run; prints its id, or with --wait its output (exit 1 when it faults).
    Run {
        /// The workflow.
        name: String,
        /// The input: JSON, or @FILE holding JSON or YAML.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// Wait for the run to end.
        #[arg(long)]
        wait: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// List the runs of a workflow (newest first).
    Runs {
        /// The workflow.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Show a run: input, output, error and its task journal.
    GetRun {
        /// The run's id (from `workflow run` or `workflow runs`).
        id: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Cancel a run in progress.
    Cancel {
        /// The run's id.
        id: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// The input a `--input` gives.
fn input(text: Option<&str>) -> Result<Value> {
    let Some(text) = text else { return Ok(json!({})) };
    match text.strip_prefix('@') {
        Some(file) => {
            let content = std::fs::read_to_string(file).with_context(|| format!("cannot read --input file {file}"))?;
            serde_saphyr::from_str(&content).with_context(|| format!("--input file {file} is not JSON or YAML"))
        }
        None => serde_json::from_str(text).context("--input is not JSON (give @FILE for a file)"),
    }
}

fn runs_table(value: &Value) -> comfy_table::Table {
    let mut table = output::table(&["ID", "STATE", "STARTED", "ENDED"]);
    let items = value["items"].as_array().cloned().unwrap_or_else(|| vec![value.clone()]);
    for run in items {
        let field = |f: &str| run[f].as_str().unwrap_or("").to_string();
        table.add_row(vec![field("id"), field("state"), field("startedAt"), field("endedAt")]);
    }
    table
}

pub async fn run(command: WorkflowCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        WorkflowCommand::Create { file, namespace } => {
            super::resources::apply(super::resources::ApplyArgs::for_file(file, namespace), global).await
        }
        WorkflowCommand::Run { name, input: given, wait, namespace } => {
            let body = serde_json::to_vec(&input(given.as_deref())?)?;
            let path = format!("/api/v1/namespaces/{namespace}/workflows/{name}/runs");
            let started: Value = client.post(&path, body.into(), "application/json").await?.json().await?;
            let id = started["id"].as_str().unwrap_or_default().to_string();
            if !wait {
                println!("{id}");
                return Ok(());
            }
            let run_path = format!("/api/v1/namespaces/{namespace}/workflowruns/{id}");
            loop {
                let run = client.get(&run_path).await?;
                match run["state"].as_str() {
                    Some("completed") => {
                        println!("{}", serde_json::to_string_pretty(&run["output"])?);
                        return Ok(());
                    }
                    Some("faulted") => bail!("run {id} faulted: {}", run["error"]),
                    Some("cancelled") => bail!("run {id} was cancelled"),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        WorkflowCommand::Runs { name, namespace, read } => {
            let runs = client.get(&format!("/api/v1/namespaces/{namespace}/workflows/{name}/runs")).await?;
            output::print(&runs, read.output, runs_table)
        }
        WorkflowCommand::GetRun { id, namespace, read } => {
            let run = client.get(&format!("/api/v1/namespaces/{namespace}/workflowruns/{id}")).await?;
            output::print(&run, read.output, runs_table)
        }
        WorkflowCommand::Cancel { id, namespace } => {
            let path = format!("/api/v1/namespaces/{namespace}/workflowruns/{id}/cancel");
            client.post(&path, Vec::new().into(), "application/json").await?;
            println!("run {namespace}/{id} cancelled");
            Ok(())
        }
    }
}
