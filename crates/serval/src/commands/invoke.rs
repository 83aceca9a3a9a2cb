//! `serval invoke`, `serval calls` and `serval logs`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::Method;

use super::DEFAULT_NAMESPACE;
use crate::Global;
use crate::client::Client;

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Service name.
    pub name: String,
    /// Request body: a string, or @FILE to send a file (makes the request a POST).
    #[arg(short = 'd', long)]
    pub data: Option<String>,
    /// Extra request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE")]
    pub headers: Vec<String>,
    /// Path (and query) to request on the service.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP method (default: GET, or POST with --data).
    #[arg(short = 'X', long)]
    pub method: Option<String>,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print the status line and response headers to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Queue the call (`Prefer: respond-async`) and print its id instead of the answer;
    /// `serval calls NAME` shows how it went.
    #[arg(long = "async")]
    pub queue: bool,
    /// With --async: where the outcome is POSTed when the call ends (X-Callback-Url).
    #[arg(long, requires = "queue", value_name = "URL")]
    pub callback: Option<String>,
}

pub async fn invoke(args: InvokeArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let gateway = client.gateway().await?;
    let path = if args.path.starts_with('/') { args.path.clone() } else { format!("/{}", args.path) };
    let url = format!("{gateway}/f/{}/{}{path}", args.namespace, args.name);
    let body = match &args.data {
        Some(d) => match d.strip_prefix('@') {
            Some(file) => Some(std::fs::read(file).with_context(|| format!("cannot read {file}"))?),
            None => Some(d.clone().into_bytes()),
        },
        None => None,
    };
    let method = match (&args.method, &body) {
        (Some(m), _) => {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).with_context(|| format!("bad method {m:?}"))?
        }
        (None, Some(_)) => Method::POST,
        (None, None) => Method::GET,
    };
    let mut req = reqwest::Client::new().request(method, &url);
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else { bail!("header {h:?} must look like KEY:VALUE") };
        req = req.header(k.trim(), v.trim());
    }
    if args.queue {
        req = req.header("prefer", "respond-async");
    }
    if let Some(callback) = &args.callback {
        req = req.header("x-callback-url", callback);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the gateway at {gateway}"))?;
    if args.queue && resp.status() == reqwest::StatusCode::ACCEPTED {
        let id = resp.headers().get("x-call-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        println!("{id}");
        return Ok(());
    }
    let status = resp.status();
    if args.verbose {
        eprintln!("{:?} {status}", resp.version());
        for (k, v) in resp.headers() {
            eprintln!("{k}: {}", v.to_str().unwrap_or("<binary>"));
        }
    }
    let bytes = resp.bytes().await.context("the response body broke off")?;
    if !status.is_success() {
        bail!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&bytes).trim());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CallsArgs {
    /// Service name.
    pub name: String,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The most calls listed, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub read: super::ReadOpts,
}

/// `serval calls NAME`: the service's async calls with their state and result.
pub async fn calls(args: CallsArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let path = format!("/api/v1/namespaces/{}/services/{}/calls?limit={}", args.namespace, args.name, args.limit);
    let calls = client.get(&path).await?;
    crate::output::print(&calls, args.read.output, |value| {
        let mut table = crate::output::table(&["ID", "STATE", "ATTEMPTS", "STATUS", "ACCEPTED", "RESULT"]);
        for call in value["items"].as_array().into_iter().flatten() {
            let field = |f: &str| match &call[f] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let result: String = field("result").chars().take(60).collect();
            table.add_row(vec![
                field("id"),
                field("state"),
                field("attempts"),
                field("status"),
                field("accepted"),
                result.replace('\n', " "),
            ]);
        }
        table
    })
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Service name.
    pub name: String,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

pub async fn logs(args: LogsArgs, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    let mut path = format!("/api/v1/namespaces/{}/services/{}/logs?follow={}", args.namespace, args.name, args.follow);
    if let Some(t) = args.tail {
        path.push_str(&format!("&tail={t}"));
    }
    let resp = client.get_text(&path).await?;
    let mut stream = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk.context("the log stream broke off")?)?;
        out.flush()?;
    }
    Ok(())
}
