//! `serval image import|pull|ls|rm`.

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::NOTHING};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::ReadOpts;
use crate::Global;
use crate::client::Client;
use crate::output;

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Import a `docker save` archive or an OCI image layout (tar or directory).
    Import {
        /// The archive (a directory is packed into an OCI-layout tar first).
        file: String,
    },
    /// Pull an image from an OCI distribution registry.
    Pull {
        /// Reference, e.g. docker.io/library/busybox:latest or 127.0.0.1:5000/app:1.
        reference: String,
        /// Registry user name (with --password).
        #[arg(long)]
        username: Option<String>,
        /// Password for --username (or SERVAL_REGISTRY_PASSWORD).
        #[arg(long, env = "SERVAL_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A registry bearer token instead of a username and password (or SERVAL_REGISTRY_TOKEN).
        #[arg(long, env = "SERVAL_REGISTRY_TOKEN", hide_env_values = true, conflicts_with = "username")]
        registry_token: Option<String>,
    },
    /// List images.
    Ls {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Remove an image (refused while a revision uses it).
    Rm {
        /// Reference as `serval image ls` shows it.
        reference: String,
    },
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn images_table(value: &Value) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(["NAME", "DIGEST", "SIZE", "CREATED"]);
    for i in value["items"].as_array().into_iter().flatten() {
        let digest = i["digest"].as_str().unwrap_or("");
        t.add_row(vec![
            i["name"].as_str().unwrap_or("<none>").to_string(),
            digest.chars().take(19).collect(),
            human_size(i["size"].as_u64().unwrap_or(0)),
            i["created"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t
}

/// Packs an OCI image-layout directory into a tar in memory.
fn tar_directory(dir: &std::path::Path) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).with_context(|| format!("cannot pack {}", dir.display()))?;
    Ok(builder.into_inner()?)
}

pub async fn run(command: ImageCommand, global: Global) -> Result<()> {
    let client = Client::from_global(&global)?;
    match command {
        ImageCommand::Import { file } => {
            let path = std::path::Path::new(&file);
            let bytes = if path.is_dir() {
                tar_directory(path)?
            } else {
                std::fs::read(path).with_context(|| format!("cannot read {file}"))?
            };
            let resp = client.post("/api/v1/images/import", bytes.into(), "application/x-tar").await?;
            let imported: Value = resp.json().await?;
            for i in imported["items"].as_array().into_iter().flatten() {
                println!("imported {} {}", i["name"].as_str().unwrap_or("<none>"), i["digest"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        ImageCommand::Pull { reference, username, password, registry_token } => {
            if username.is_some() != password.is_some() {
                bail!("--username and --password go together");
            }
            let body =
                json!({ "reference": reference, "username": username, "password": password, "token": registry_token });
            let resp = client.post("/api/v1/images/pull", body.to_string().into(), "application/json").await?;
            let mut lines = resp.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(chunk) = lines.next().await {
                buffer.extend_from_slice(&chunk.context("the pull stream broke off")?);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let event: Value = serde_json::from_slice(&line).context("bad progress line")?;
                    if let Some(err) = event["error"].as_str() {
                        bail!("{err}");
                    }
                    if let Some(image) = event.get("image") {
                        println!(
                            "pulled {} {}",
                            image["name"].as_str().unwrap_or(&reference),
                            image["digest"].as_str().unwrap_or("")
                        );
                        return Ok(());
                    }
                    eprintln!(
                        "{} {} / {}",
                        event["layer"].as_str().unwrap_or("").chars().take(19).collect::<String>(),
                        human_size(event["done"].as_u64().unwrap_or(0)),
                        human_size(event["total"].as_u64().unwrap_or(0))
                    );
                }
            }
            bail!("the server ended the pull without a result")
        }
        ImageCommand::Ls { read } => {
            let images = client.get("/api/v1/images").await?;
            output::print(&images, read.output, images_table)
        }
        ImageCommand::Rm { reference } => {
            let encoded: String = reference
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            client.delete(&format!("/api/v1/images?reference={encoded}")).await?;
            eprintln!("image {reference} removed");
            Ok(())
        }
    }
}
