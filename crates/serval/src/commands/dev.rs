//! `serval dev [DIR]`: the local loop. Deploys the project as a process service, watches
//! its files, and on a change rolls out a new revision (same URL), printing how long the
//! reload took; the service's output is streamed meanwhile.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::Watcher;

use super::DEFAULT_NAMESPACE;
use super::invoke::LogsArgs;
use super::resources::{DeployArgs, PROCESS_RUNTIME};
use crate::Global;

/// Changes closer together than this make one reload (an editor's save writes several).
const SETTLE: Duration = Duration::from_millis(50);

/// Paths whose changes never reload: tools' and languages' own files.
const IGNORED: &[&str] = &[".git", "__pycache__", "node_modules", "target", ".pytest_cache", ".venv"];

#[derive(clap::Args)]
pub struct DevArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Service name (default: serval.yaml's name, else the directory's).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace of the service.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

fn deploy_args(name: &str, args: &DevArgs, generation: u64) -> DeployArgs {
    DeployArgs {
        name: name.to_string(),
        image: None,
        cmd: None,
        // A new value makes a new revision, which starts the changed code. Python's
        // bytecode cache trusts a source's mtime (in seconds) and size, so a cache written
        // by one revision would hide an edit within the same second that keeps the size:
        // the project's bytecode is not written while developing.
        env: vec![format!("SERVAL_DEV_GENERATION={generation}"), "PYTHONDONTWRITEBYTECODE=1".to_string()],
        env_file: None,
        workdir: None,
        source: Some(args.dir.clone()),
        runtime: Some(PROCESS_RUNTIME.to_string()),
        lambda_zip: None,
        handler: None,
        memory: None,
        oci_runtime: PathBuf::from("runc"),
        concurrency: None,
        min_scale: Some(1),
        max_scale: None,
        target: None,
        timeout: None,
        namespace: args.namespace.clone(),
        no_wait: false,
    }
}

/// Whether a changed path is one that reloads the project.
fn reloads(dir: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    !rel.components().any(|c| IGNORED.iter().any(|i| c.as_os_str() == *i))
        && !rel.extension().is_some_and(|e| e == "pyc" || e == "swp")
}

pub async fn run(args: DevArgs, global: Global) -> Result<()> {
    let dir = std::fs::canonicalize(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => match serval_project::Manifest::find(&dir)? {
            Some(manifest) => manifest.name,
            None => serval_project::default_name(&dir).context("pass --name")?,
        },
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::Recursive).with_context(|| format!("watching {}", dir.display()))?;

    let mut generation = 1;
    super::resources::deploy(deploy_args(&name, &args, generation), global.clone()).await?;
    let logs = LogsArgs { name: name.clone(), follow: true, tail: Some(0), namespace: args.namespace.clone() };
    let streaming = tokio::spawn(super::invoke::logs(logs, global.clone()));
    eprintln!("watching {} (Ctrl-C stops watching; the service stays deployed)", dir.display());
    loop {
        tokio::select! {
            changed = rx.recv() => {
                let Some(first) = changed else { break };
                if !reloads(&dir, &first) {
                    continue;
                }
                let began = Instant::now();
                // Let the rest of a save arrive, then reload once.
                while let Ok(Some(_)) = tokio::time::timeout(SETTLE, rx.recv()).await {}
                generation += 1;
                let changed = first.strip_prefix(&dir).unwrap_or(&first).display().to_string();
                match super::resources::deploy(deploy_args(&name, &args, generation), global.clone()).await {
                    Ok(()) => eprintln!("reloaded after {changed} changed, in {:.2} s", began.elapsed().as_secs_f64()),
                    Err(e) => eprintln!("reload after {changed} changed failed: {e:#}"),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    streaming.abort();
    Ok(())
}
