//! The composition root of serval: builds the store, the runtimes, the dispatchers, the
//! control plane, the gateway and the API from one [`PlatformConfig`], runs them on the
//! listeners it is given until a shutdown future resolves, and stops them in order.
//!
//! Owns: [`run`]/[`run_with`], [`PlatformConfig`] and [`Extensions`] (what an embedder or a
//! test puts in: kinds, a store, runtimes). No logic of its own beyond wiring.
//! Must not depend on: the binary's argument parsing or output formats; it takes bound
//! listeners and a shutdown future so that tests run it on port 0.

mod config;
mod error;

use std::future::Future;
use std::sync::Arc;

use serval_gateway::{Gateway, RoutingTable};
use serval_model::RuntimeKind;
use serval_runtime::container::{OciRuntime, StoreImages};
use serval_runtime::oci::ImageStore;
use serval_runtime::{ProcessRuntime, Runtime};
use serval_store::{Storage, Store};
use tokio::net::TcpListener;

pub use config::{PlatformConfig, load_or_create_aws_credentials, load_or_create_token};
pub use error::PlatformError;
pub use serval_control::{BoundAddrs, ClusterDefaults, kinds};
use serval_control::{controller, metrics, sealer};
pub use serval_gateway::{ConnectionLimits, bind as bind_gateway};

/// The listeners the platform serves on, bound by the caller (`:0` works).
pub struct Listeners {
    pub api: TcpListener,
    pub gateway: TcpListener,
    /// Where `/metrics` is served without a token, for scrapers (`--metrics-addr`).
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub fn addrs(&self) -> Result<BoundAddrs, PlatformError> {
        Ok(BoundAddrs { api: self.api.local_addr()?, gateway: self.gateway.local_addr()? })
    }
}

/// The `oci` runtime on the configured runc, or why there is none.
async fn oci_runtime(
    config: &PlatformConfig,
    images: &Arc<ImageStore>,
) -> Result<controller::RuntimeOrWhyNot, PlatformError> {
    if !OciRuntime::available(&config.oci_runtime).await {
        return Ok(Err(format!(
            "the OCI runtime {:?} was not found; install runc (or pass --oci-runtime) to run images",
            config.oci_runtime
        )));
    }
    let source = Arc::new(StoreImages::new(images.clone()));
    let oci = OciRuntime::new(config.oci_runtime.clone(), &config.data_dir.join("containers"), source).await?;
    Ok(Ok(Arc::new(oci)))
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
    run_with(listeners, config, Extensions::default(), shutdown, ready).await
}

/// Makes the [`KindApi`](kinds::KindApi) of a kind beyond the built-in ones, from what
/// generic kinds share with the platform.
pub type KindFactory = Box<dyn FnOnce(&kinds::KindContext) -> Arc<dyn kinds::KindApi> + Send>;

/// What an embedder or a test puts into the platform beside or instead of its defaults.
#[derive(Default)]
pub struct Extensions {
    /// Kinds served beside the built-in ones.
    pub kinds: Vec<KindFactory>,
    /// The store (default: SQLite in the data directory).
    pub storage: Option<Arc<dyn Storage>>,
    /// Runtimes by the kind of workload they run, instead of the default ones.
    pub runtimes: Vec<(RuntimeKind, Arc<dyn Runtime>)>,
}

/// [`run`] with [`Extensions`].
pub async fn run_with(
    listeners: Listeners,
    config: PlatformConfig,
    extensions: Extensions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), PlatformError> {
    let Extensions { kinds: extra_kinds, storage, runtimes: given_runtimes } = extensions;
    let addrs = listeners.addrs()?;
    let store: Arc<dyn Storage> = match storage {
        Some(storage) => storage,
        None => Arc::new(Store::open(&config.data_dir)?),
    };
    let images = Arc::new(ImageStore::open(config.data_dir.join("images"))?);
    let mut runtimes = controller::Runtimes::default();
    if !given_runtimes.iter().any(|(kind, _)| *kind == RuntimeKind::Process) {
        let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(config.data_dir.join("instances"))?);
        runtimes.register(RuntimeKind::Process, Ok(process));
    }
    if !given_runtimes.iter().any(|(kind, _)| *kind == RuntimeKind::Oci) {
        runtimes.register(RuntimeKind::Oci, oci_runtime(&config, &images).await?);
    }
    for (kind, runtime) in given_runtimes {
        runtimes.register(kind, Ok(runtime));
    }
    let routes = Arc::new(RoutingTable::new(config.domain.clone()));
    let metrics = Arc::new(metrics::PlatformMetrics::default());
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let dispatchers = serval_dispatch::delivery::Dispatchers::new(store.clone(), config.delivery_timeout);
    let controller = controller::Controller::new(
        config.control(),
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
    use serval_dispatch::ingress::{Ingress, LogKind};
    let lambda = serval_control::lambda_api::LambdaApi::new(
        controller.clone(),
        load_or_create_aws_credentials(&config.data_dir)?,
    );
    let [lambda_prefix, lambda_async_prefix] = serval_control::lambda_api::PREFIXES;
    let gateway = Arc::new(
        Gateway::new(routes, metrics.gateway.clone())
            .ingress(lambda_prefix, lambda.clone())
            .ingress(lambda_async_prefix, lambda.clone())
            .ingress(LogKind::Broker.prefix(), Ingress::new(dispatchers.clone(), LogKind::Broker))
            .ingress(LogKind::Channel.prefix(), Ingress::new(dispatchers.clone(), LogKind::Channel))
            .ingress(
                serval_dispatch::sources::webhook::PREFIX,
                serval_dispatch::sources::webhook::WebhookIngress::new(controller.sources()),
            )
            .ingress(
                serval_control::workflows::INGRESS_PREFIX,
                serval_control::workflows::WorkflowIngress::new(controller.clone()),
            )
            .async_queue(controller.calls()),
    );
    dispatchers.deliver_in_process(serval_gateway::LocalClient::new(&gateway));
    lambda.invoke_through(serval_gateway::LocalClient::new(&gateway));
    controller.calls().resume().map_err(serval_control::ControlError::from)?;
    let gateway = tokio::spawn(serval_gateway::serve(
        listeners.gateway,
        gateway,
        config.gateway_threads,
        config.connections,
        stopped(stop_rx.clone()),
    ));
    if let Some(listener) = listeners.metrics {
        let scrape = serval_api::handler(serval_api::metrics_router(registry.clone()));
        tokio::spawn(serval_gateway::serve_listener(listener, scrape, config.connections, "metrics", stop_rx.clone()));
    }
    let mut kinds = kinds::Kinds::default();
    for kind in controller::builtin_kinds(&controller) {
        kinds.register(kind);
    }
    let context = controller.kind_context();
    for make in extra_kinds {
        kinds.register(make(&context));
    }
    let api_config = serval_api::ApiConfig { token: config.token.clone(), scratch_dir: config.data_dir.clone() };
    let app = serval_api::router(api_config, controller.clone(), Arc::new(kinds), registry);
    let api = tokio::spawn(serval_gateway::serve_listener(
        listeners.api,
        serval_api::handler(app),
        config.connections,
        "api",
        stop_rx,
    ));
    let resync = tokio::spawn(controller.clone().resync_periodically());
    let compaction = tokio::spawn(serval_dispatch::delivery::compact_periodically(store.clone()));
    let kv_sweep = tokio::spawn(controller.kv().clone().sweep_expired());
    let _ = ready.send(());

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    resync.abort();
    compaction.abort();
    kv_sweep.abort();
    events.abort();
    dispatchers.stop_all();
    controller.calls().stop_all();
    controller.stop_sources();
    controller.shutdown().await;
    let _ = gateway.await;
    let _ = api.await;
    Ok(())
}
