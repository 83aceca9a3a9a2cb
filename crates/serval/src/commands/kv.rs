//! `serval kv get|set|rm|ls|incr|create`: the key-value stores functions use (through
//! `SERVAL_KV_URL`), read and written from the command line with the API's token.

use std::io::Write;

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::DEFAULT_NAMESPACE;
use crate::Global;
use crate::client::Client;

/// Which store of which namespace.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The store (every namespace has `default`; more with `serval kv create`).
    #[arg(long, default_value = serval_model::DEFAULT_KV_STORE)]
    store: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

#[derive(clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value.
    Get {
        /// The key (up to 256 bytes).
        key: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Write a key's value; prints its new version (its ETag).
    Set {
        /// The key (up to 256 bytes).
        key: String,
        /// The value (up to 1 MiB).
        value: String,
        /// Expire it after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        /// Only if the key does not exist (If-None-Match: *).
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Only if the key is at this version (If-Match).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<i64>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Remove a key (nothing happens when it is absent).
    Rm {
        /// The key.
        key: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// List keys, in order.
    Ls {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Add to the integer a key holds (0 when absent); prints the new value.
    Incr {
        /// The key.
        key: String,
        /// What to add (negative to subtract).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Create a store (a KeyValueStore) in a namespace.
    Create {
        /// The store's name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// The endpoint path of a key (its characters escaped, `/` kept), or of the store.
fn path(at: &StoreArgs, key: Option<&str>) -> Result<String> {
    let mut path = format!("/kv/{}/{}", at.namespace, at.store);
    if let Some(key) = key {
        if key.is_empty() {
            bail!("the key is empty");
        }
        if key.len() > serval_kv::MAX_KEY {
            bail!("the key is {} bytes, more than {}", key.len(), serval_kv::MAX_KEY);
        }
        path.push('/');
        for segment in key.split('/') {
            path.push_str(&escape(segment));
            path.push('/');
        }
        path.pop();
    }
    Ok(path)
}

/// Percent-escapes what a URL path segment cannot hold as it is.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(command: KvCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        KvCommand::Get { key, at } => {
            let value = client.raw(Method::GET, &path(&at, Some(&key))?, Vec::new(), &[]).await?.bytes().await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            if !value.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&out) {
                writeln!(out)?;
            }
        }
        KvCommand::Set { key, value, ttl, if_absent, if_version, at } => {
            let mut headers = Vec::new();
            if let Some(ttl) = ttl {
                if ttl == 0 {
                    bail!("--ttl must be above 0 seconds");
                }
                headers.push(("x-serval-ttl", ttl.to_string()));
            }
            if if_absent {
                headers.push(("if-none-match", "*".to_string()));
            }
            if let Some(version) = if_version {
                headers.push(("if-match", format!("\"{version}\"")));
            }
            let answer = client.raw(Method::PUT, &path(&at, Some(&key))?, value.into_bytes(), &headers).await?;
            let written: Value = answer.json().await?;
            println!("{}", written["version"].as_str().unwrap_or_default());
        }
        KvCommand::Rm { key, at } => {
            client.raw(Method::DELETE, &path(&at, Some(&key))?, Vec::new(), &[]).await?;
        }
        KvCommand::Ls { prefix, at } => {
            let mut after = String::new();
            loop {
                let query = format!(
                    "{}?prefix={}&after={}&limit={}",
                    path(&at, None)?,
                    escape(&prefix),
                    escape(&after),
                    serval_kv::MAX_LIST
                );
                let page: Value = client.raw(Method::GET, &query, Vec::new(), &[]).await?.json().await?;
                for key in page["keys"].as_array().into_iter().flatten() {
                    println!("{}", key.as_str().unwrap_or_default());
                }
                match page["next"].as_str() {
                    Some(next) => after = next.to_string(),
                    None => break,
                }
            }
        }
        KvCommand::Incr { key, delta, at } => {
            let increment = format!("{}:increment", path(&at, Some(&key))?);
            let value = client.raw(Method::POST, &increment, delta.to_string().into_bytes(), &[]).await?;
            println!("{}", value.text().await?);
        }
        KvCommand::Create { name, namespace } => {
            let manifest = json!({
                "apiVersion": serval_model::SERVAL_API_VERSION, "kind": "KeyValueStore",
                "metadata": { "name": name, "namespace": namespace }
            });
            client.put(&format!("/api/v1/namespaces/{namespace}/keyvaluestores/{name}"), &manifest).await?;
            println!("keyvaluestore {namespace}/{name} created");
        }
    }
    Ok(())
}
