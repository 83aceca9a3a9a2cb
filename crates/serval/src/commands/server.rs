//! `serval server`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serval_platform::{Listeners, PlatformConfig, load_or_create_aws_credentials, load_or_create_token};
use tokio::net::TcpListener;

use crate::Global;
use crate::client::ServerInfo;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Control API address (`:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub api_addr: String,
    /// Gateway (data plane) address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway_addr: String,
    /// Serve Prometheus /metrics here without a token, for scrapers (on the API it needs the token).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Routing domain: services answer at <service>.<namespace>.<domain>.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    #[command(flatten)]
    pub autoscaler: AutoscalerArgs,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// OCI runtime CLI that runs images (runc, crun, youki).
    #[arg(long, default_value = "runc")]
    pub oci_runtime: std::path::PathBuf,
    /// Revisions kept per service that no route references; older ones are deleted.
    #[arg(long, default_value_t = 10)]
    pub revision_history: usize,
    /// A request head must be complete this long after its first byte (or after connecting).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes either way this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Connections open at once per listener (gateway, API); more wait until one closes.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Instances running at once on this server, all revisions together (default: one per
    /// 64 MiB of memory and per 16 open files allowed, at most 10 000).
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// The highest autoscaling.knative.dev/max-scale a revision may ask for (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_scale_limit: u32,
    /// Run Lambda zips of a runtime in an image (repeatable): RUNTIME is a runtime
    /// (`python3.12`) or a family (`python3`, `nodejs`), IMAGE has its interpreter on PATH;
    /// the zip is bound in read-only at /var/task. Without one, zips run on the host.
    #[arg(long = "lambda-image", value_name = "RUNTIME=IMAGE", value_parser = parse_lambda_image)]
    pub lambda_images: Vec<(String, String)>,
    /// A trigger's delivery attempt times out after this unless its delivery.timeout says otherwise.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
}

/// Server-wide autoscaler defaults (Knative's config-autoscaler); revisions override the
/// window and more by annotation.
#[derive(clap::Args, Clone)]
pub struct AutoscalerArgs {
    /// Stable window: the period load is averaged over; with no request in it, a revision
    /// heads for zero.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stable_window: Duration,
    /// How long the last instance stays after the autoscaler decided on zero.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub scale_to_zero_grace: Duration,
    /// How often the autoscaler decides without an event.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub autoscaler_tick: Duration,
}

impl AutoscalerArgs {
    pub fn apply(&self, defaults: &mut serval_platform::ClusterDefaults) {
        defaults.stable_window = self.stable_window;
        defaults.scale_to_zero_grace = self.scale_to_zero_grace;
        defaults.tick = self.autoscaler_tick;
    }
}

fn parse_lambda_image(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((runtime, image)) if !runtime.is_empty() && !image.is_empty() => {
            Ok((runtime.to_string(), image.to_string()))
        }
        _ => Err(format!("{s:?} must look like RUNTIME=IMAGE (python3.12=localhost/python:3.12)")),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    serval_model::parse_duration(s)
}

/// `:0` and `host:0` pick a free port, a bare `:port` means loopback.
fn listen_address(addr: &str) -> Result<SocketAddr> {
    let addr = if addr.starts_with(':') { format!("127.0.0.1{addr}") } else { addr.to_string() };
    addr.parse().with_context(|| format!("{addr:?} is not an address like 127.0.0.1:8080"))
}

/// Binds the API's listener on `addr` (see [`listen_address`]).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    let parsed = listen_address(addr)?;
    TcpListener::bind(parsed).await.with_context(|| format!("cannot listen on {parsed}"))
}

/// Binds the gateway's listener on `addr`, shareable by the gateway's threads.
pub fn bind_gateway(addr: &str) -> Result<TcpListener> {
    let parsed = listen_address(addr)?;
    serval_platform::bind_gateway(parsed).with_context(|| format!("cannot listen on {parsed}"))
}

fn write_server_json(dir: &Path, info: &ServerInfo) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join("server.json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(info)?.as_bytes())?;
    std::fs::rename(&tmp, dir.join("server.json"))?;
    Ok(())
}

/// One instance per 64 MiB of memory and per 16 open files (each holds sockets and pipes),
/// between 16 and 10 000.
fn default_max_instances(open_files: u64) -> u32 {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(4 * 1024 * 1024u64);
    let by_memory = memory_kib / (64 * 1024);
    let by_files = open_files / 16;
    u32::try_from(by_memory.min(by_files).clamp(16, 10_000)).unwrap_or(10_000)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub async fn run(args: ServerArgs, global: Global) -> Result<()> {
    if std::env::var_os("SERVAL_EXIT_WITH_PARENT").is_some() {
        serval_runtime::die_with_parent()?;
    }
    crate::log::init();
    let open_files = match serval_runtime::raise_open_files_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open files limit: {e}");
            1024
        }
    };
    let data_dir = global.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let token = load_or_create_token(&data_dir)?;
    let aws = load_or_create_aws_credentials(&data_dir)?;
    let metrics = match &args.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_url = metrics.as_ref().map(|l| l.local_addr()).transpose()?.map(|a| format!("http://{a}"));
    let listeners = Listeners { api: bind(&args.api_addr).await?, gateway: bind_gateway(&args.gateway_addr)?, metrics };
    let addrs = listeners.addrs()?;
    let mut config = PlatformConfig::new(data_dir.clone(), token.clone());
    config.domain = args.domain;
    args.autoscaler.apply(&mut config.autoscaler);
    config.grace_period = args.grace_period;
    config.revision_history = args.revision_history;
    config.oci_runtime = args.oci_runtime;
    config.delivery_timeout = args.delivery_timeout;
    config.max_instances = args.max_instances.unwrap_or_else(|| default_max_instances(open_files)).max(1);
    config.max_scale_limit = args.max_scale_limit;
    config.lambda_images = args.lambda_images.clone();
    config.connections = serval_platform::ConnectionLimits {
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
    };

    let info = ServerInfo {
        api: format!("http://{}", addrs.api),
        gateway: format!("http://{}", addrs.gateway),
        token,
        metrics: metrics_url,
        aws_access_key_id: Some(aws.access_key_id),
        aws_secret_access_key: Some(aws.secret_access_key),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let platform = tokio::spawn(serval_platform::run(listeners, config, shutdown_signal(), ready_tx));
    if ready_rx.await.is_ok() {
        write_server_json(&data_dir, &info)?;
        println!("serval ready: api {} gateway {} data-dir {}", info.api, info.gateway, data_dir.display());
    }
    let result = platform.await.context("the platform task failed")?;
    let _ = std::fs::remove_file(data_dir.join("server.json"));
    Ok(result?)
}
