//! The control plane of serval: the registry of resource kinds and their reconcilers, the
//! Service controller (spec → revisions, routes, runners, `status.conditions`), the
//! per-revision runners that start and stop instances on the scaler's decisions, captured
//! logs, secrets sealing and the platform's metrics.
//!
//! Owns: [`kinds`] (a kind is a model type, a reconciler and a registration; the generic
//! write path with validation, identity and optimistic concurrency), [`controller`],
//! the runners, [`ControlError`].
//! Must not depend on: HTTP servers or their types (axum, the API's routes and status
//! codes — the `serval-api` crate maps [`ControlError`] to statuses), the binary's argument
//! parsing, or the SQLite store's type (it holds `dyn Storage`). Everything it runs comes
//! in through [`controller::Parts`], so tests run it on an in-memory store and a fake
//! runtime.

pub mod controller;
mod error;
mod in_process;
pub mod kinds;
pub mod lambda_api;
pub mod logs;
pub mod metrics;
mod runner;
pub mod sealer;
pub mod workflows;

use std::net::SocketAddr;
use std::time::Duration;

pub use error::ControlError;
pub use serval_scaler::ClusterDefaults;

/// The control plane's settings, parsed once at the edge and passed down.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Routing domain: services answer at `<service>.<namespace>.<domain>`.
    pub domain: String,
    /// Autoscaler defaults (Knative's `config-autoscaler`): stable window, scale-to-zero
    /// grace period, tick, targets; revisions override some by annotation.
    pub autoscaler: ClusterDefaults,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub grace_period: Duration,
    /// How long an instance may take to become ready (a revision's
    /// `serving.knative.dev/progress-deadline` overrides it).
    pub startup_timeout: Duration,
    /// Revisions kept that no route references (older ones are garbage-collected).
    pub revision_history: usize,
    /// Instances running or starting at once, all revisions together.
    pub max_instances: u32,
    /// The highest max-scale a revision may ask for (Knative's `max-scale-limit`; 0: none).
    pub max_scale_limit: u32,
    /// Where Lambda functions' zips are unpacked: the only host directory a container may
    /// have bound in (read-only, at `/var/task`, for a zip run in an image).
    pub lambda_code_dir: std::path::PathBuf,
    /// Images that run zips of a Lambda runtime (`python3.12`, or a family: `python3`,
    /// `nodejs`), instead of the host's interpreter; the longest match wins.
    pub lambda_images: Vec<(String, String)>,
}

/// Addresses the platform's listeners actually bound (URLs in statuses, the ready line).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub api: SocketAddr,
    pub gateway: SocketAddr,
}
