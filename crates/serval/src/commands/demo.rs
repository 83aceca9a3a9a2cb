//! `serval demo`: the platform's main job on embedded defaults, end to end, in one command.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use serval_platform::{Listeners, PlatformConfig, load_or_create_token};

use super::server::{bind, bind_gateway, parse_duration};
use crate::client::Client;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stable window (short, so that the demo shows scale to zero within seconds).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub stable_window: Duration,
    /// Keep the platform running after the demo (until Ctrl-C).
    #[arg(long)]
    pub keep: bool,
    /// Function binary to deploy (default: serval-echo next to this binary).
    #[arg(long)]
    pub function: Option<PathBuf>,
}

fn example_binary(args: &DemoArgs) -> Result<PathBuf> {
    if let Some(f) = &args.function {
        return Ok(f.clone());
    }
    let exe = std::env::current_exe().context("cannot locate the serval binary")?;
    let candidate = exe.with_file_name("serval-echo");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "the example function {} is missing; build it with `cargo build --release --workspace` or pass --function",
        candidate.display()
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn instances(service: &Value) -> (u64, u64) {
    let i = &service["status"]["instances"];
    (i["ready"].as_u64().unwrap_or(0), i["starting"].as_u64().unwrap_or(0))
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let function = example_binary(&args)?;
    let data = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let token = load_or_create_token(data.path())?;
    let listeners = Listeners { api: bind("127.0.0.1:0").await?, gateway: bind_gateway("127.0.0.1:0")?, metrics: None };
    let addrs = listeners.addrs()?;
    let mut config = PlatformConfig::new(data.path().to_path_buf(), token.clone());
    config.autoscaler.stable_window = args.stable_window;
    config.autoscaler.scale_to_zero_grace = Duration::ZERO;
    config.autoscaler.tick = Duration::from_millis(250);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let platform = tokio::spawn(serval_platform::run(
        listeners,
        config,
        async {
            let _ = stop_rx.await;
        },
        ready_tx,
    ));
    ready_rx.await.context("the platform did not start")?;
    println!(
        "serval is up: api http://{} gateway http://{} (data in {})",
        addrs.api,
        addrs.gateway,
        data.path().display()
    );

    let client = Client::new(&addrs.api.to_string(), &token)?;
    let manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": "hello", "namespace": "default" },
        "spec": { "template": {
            "metadata": { "annotations": { "autoscaling.knative.dev/max-scale": "5" } },
            "spec": {
                "containerConcurrency": 1,
                "containers": [{ "command": [function.display().to_string()], "env": [{ "name": "GREETING", "value": "hi" }] }]
            }
        } }
    });
    println!("\n1. deploy: {} as service default/hello (containerConcurrency 1, max-scale 5)", function.display());
    client.put("/api/v1/namespaces/default/services/hello", &manifest).await?;
    let service = client.wait_ready("default", "hello", Duration::from_secs(30)).await?;
    let url = service["status"]["url"].as_str().unwrap_or_default().to_string();
    let path_url = format!("http://{}/f/default/hello", addrs.gateway);
    let startup = service["status"]["instances"]["lastColdStartMs"].as_f64().unwrap_or(0.0);
    println!("   ready: {url}  (or {path_url}/)");
    println!("   the deploy started one instance to prove the revision runs (ready in {startup:.1} ms);");
    let idle = scaled_to_zero(&client, args.stable_window + Duration::from_secs(30)).await?;
    println!("   with no requests it scaled to zero after {:.1} s", idle.as_secs_f64());

    let http = reqwest::Client::new();
    let call = |path: &str| {
        let req = http.get(format!("{path_url}{path}"));
        async move {
            let began = Instant::now();
            let resp = req.send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            anyhow::Ok((began.elapsed(), status, body))
        }
    };
    println!("\n2. first request, from zero instances:");
    let (cold, status, body) = call("/hello").await?;
    let service = client.get("/api/v1/namespaces/default/services/hello").await?;
    let startup = service["status"]["instances"]["lastColdStartMs"].as_f64().unwrap_or(0.0);
    println!("   {status} {:?} in {} (instance start to ready: {startup:.1} ms)", body.trim(), ms(cold));
    let (warm, status, _) = call("/hello").await?;
    println!("   second request (warm): {status} in {}", ms(warm));

    println!("\n3. burst: 5 concurrent requests that take 300 ms each");
    let began = Instant::now();
    let burst: Vec<_> = (0..5).map(|_| call("/?sleep_ms=300")).collect();
    let monitor = async {
        let mut peak = 0;
        while began.elapsed() < Duration::from_millis(600) {
            if let Ok(s) = client.get("/api/v1/namespaces/default/services/hello").await {
                peak = peak.max(instances(&s).0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    };
    let (results, peak) = tokio::join!(futures_util::future::join_all(burst), monitor);
    let ok = results.iter().filter(|r| r.as_ref().is_ok_and(|(_, s, _)| s.is_success())).count();
    let each: Vec<String> = results.iter().flatten().map(|(d, _, _)| ms(*d)).collect();
    println!("   {ok}/5 answered 200 ({}); instances scaled up to {peak}", each.join(", "));

    println!("\n4. idle: the autoscaler scales down once the {:?} stable window has no requests", args.stable_window);
    let idle = scaled_to_zero(&client, args.stable_window + Duration::from_secs(30)).await?;
    println!("   scaled to zero after {:.1} s", idle.as_secs_f64());
    let logs = client.get_text("/api/v1/namespaces/default/services/hello/logs?tail=8").await?.text().await?;
    println!("\n5. the service's log (last lines):");
    for line in logs.lines() {
        println!("   {line}");
    }

    if args.keep {
        println!("\nstill serving at {url} — press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop_tx.send(());
    platform.await.context("the platform task failed")??;
    println!("\ndone: platform stopped, every instance gone.");
    Ok(())
}

/// Waits until the demo service runs no instance; returns how long that took.
async fn scaled_to_zero(client: &Client, patience: Duration) -> Result<Duration> {
    let began = Instant::now();
    loop {
        let s = client.get("/api/v1/namespaces/default/services/hello").await?;
        if instances(&s) == (0, 0) {
            return Ok(began.elapsed());
        }
        if began.elapsed() > patience {
            bail!("the instances were not stopped within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
