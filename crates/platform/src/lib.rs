//! The composition root of serval: wires the store, the runtimes, the scaler and the gateway
//! together, runs the controllers that turn Services into Revisions, routes and instances,
//! and serves the control API.
//!
//! Owns: reconciliation (desired spec → running state and `status.conditions`), the
//! per-revision runners (start/stop instances on the scaler's decisions), captured logs,
//! the control API and the one mapping of platform errors to HTTP statuses.
//! Must not depend on: the binary's argument parsing or output formats; it takes bound
//! listeners and a shutdown future so that tests run it on port 0.

mod api;
mod brokers;
mod config;
mod controller;
mod delivery;
mod error;
mod logs;
mod metrics;
mod runner;
mod sealer;
mod sources;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serval_gateway::{Gateway, RoutingTable};
use serval_runtime::container::{OciRuntime, StoreImages};
use serval_runtime::oci::ImageStore;
use serval_runtime::{ProcessRuntime, Runtime};
use serval_store::Store;
use tokio::net::TcpListener;

pub use config::{PlatformConfig, load_or_create_token};
pub use error::PlatformError;
pub use serval_gateway::{ConnectionLimits, bind as bind_gateway};
pub use serval_scaler::ClusterDefaults;

/// The listeners the platform serves on, bound by the caller (`:0` works).
pub struct Listeners {
    pub api: TcpListener,
    pub gateway: TcpListener,
    /// Where `/metrics` is served without a token, for scrapers (`--metrics-addr`).
    pub metrics: Option<TcpListener>,
}

/// Addresses actually bound, for the ready line and `server.json`.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub api: SocketAddr,
    pub gateway: SocketAddr,
}

impl Listeners {
    pub fn addrs(&self) -> Result<BoundAddrs, PlatformError> {
        Ok(BoundAddrs { api: self.api.local_addr()?, gateway: self.gateway.local_addr()? })
    }
}

/// Runs the platform until `shutdown` resolves; then stops accepting requests, drains and
/// stops every instance, and returns. `ready` fires once stored services are reconciled and
/// both listeners serve.
pub async fn run(
    listeners: Listeners,
    config: PlatformConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), PlatformError> {
    let addrs = listeners.addrs()?;
    let store = Arc::new(Store::open(&config.data_dir)?);
    let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(config.data_dir.join("instances"))?);
    let images = Arc::new(ImageStore::open(config.data_dir.join("images"))?);
    let oci = if OciRuntime::available(&config.oci_runtime).await {
        let source = Arc::new(StoreImages::new(images.clone()));
        let oci = OciRuntime::new(config.oci_runtime.clone(), &config.data_dir.join("containers"), source).await?;
        Ok(Arc::new(oci) as Arc<dyn Runtime>)
    } else {
        Err(format!(
            "the OCI runtime {:?} was not found; install runc (or pass --oci-runtime) to run images",
            config.oci_runtime
        ))
    };
    let runtimes = controller::Runtimes { process, oci };
    let routes = Arc::new(RoutingTable::new(config.domain.clone()));
    let metrics = Arc::new(metrics::PlatformMetrics::default());
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let dispatchers = delivery::Dispatchers::new(store.clone(), config.delivery_timeout);
    let controller = controller::Controller::new(
        config.clone(),
        addrs,
        controller::Parts {
            store: store.clone(),
            runtimes,
            images,
            routes: routes.clone(),
            metrics: metrics.clone(),
            events: events_tx,
            dispatchers: dispatchers.clone(),
            sealer: sealer::Sealer::open_or_create(&config.data_dir)?,
        },
    );
    let events = tokio::spawn(controller.clone().handle_events(events_rx));
    let registry = Arc::new(metrics.registry(Arc::downgrade(&controller)));
    controller.resync_all().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let gateway = tokio::spawn(serval_gateway::serve(
        listeners.gateway,
        Arc::new(
            Gateway::new(routes, metrics.gateway.clone())
                .ingress(brokers::PREFIX, brokers::Ingress::new(store.clone(), dispatchers.clone())),
        ),
        config.gateway_threads,
        config.connections,
        stopped(stop_rx.clone()),
    ));
    if let Some(listener) = listeners.metrics {
        let scrape = api::handler(api::metrics_router(registry.clone()));
        tokio::spawn(serval_gateway::serve_listener(listener, scrape, config.connections, "metrics", stop_rx.clone()));
    }
    let app = api::router(controller.clone(), registry);
    let api = tokio::spawn(serval_gateway::serve_listener(
        listeners.api,
        api::handler(app),
        config.connections,
        "api",
        stop_rx,
    ));
    let resync = tokio::spawn(controller.clone().resync_periodically());
    let compaction = tokio::spawn(delivery::compact_periodically(store.clone()));
    let _ = ready.send(());

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    resync.abort();
    compaction.abort();
    events.abort();
    dispatchers.stop_all();
    controller.stop_sources();
    controller.shutdown().await;
    let _ = gateway.await;
    let _ = api.await;
    Ok(())
}
