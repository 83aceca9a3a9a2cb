//! The data plane: one hop from client to instance.
//!
//! Owns: routing by host (`<service>.<namespace>.<domain>`) and path (`/f/<ns>/<service>/…`),
//! the per-revision [`RevisionPool`] (in-flight counting, `containerConcurrency`, the queue
//! that holds requests while instances start — Knative's activator and queue-proxy in one),
//! the streaming reverse proxy on two paths (an HTTP/1.1 relay for plain requests, hyper for
//! the rest) and the one set of rules both follow to rewrite requests and to send them again
//! (`rewrite`), the hand-off of requests under registered path prefixes to [`Ingress`]
//! handlers implemented elsewhere (brokers' `/b/…`), its listeners, the data plane's
//! keep-alive client connections, the whole-message exchanges event delivery sends through
//! ([`Exchanges`]), and the single mapping of data-plane errors to HTTP statuses.
//!
//! Inside, dependencies point one way: `server` (listeners, accept loops) → `relay` and
//! `proxy` (the two paths, which never import each other) → `router` (where a request
//! goes) and `rewrite` (how it is rewritten; sans-IO); `exchange` writes and reads heads
//! with the relay's parsing and connections.
//!
//! Must not depend on: the store, the runtime or eventing. Instances are plain addresses
//! added to and drained from pools by whoever runs them.

mod chunked;
mod error;
mod exchange;
#[cfg(test)]
mod fuzz;
mod listen;
mod metrics;
mod pool;
mod proxy;
mod relay;
mod rewrite;
mod router;
mod routes;
mod server;
mod upstream;

pub use error::GatewayError;
pub use exchange::{Exchanges, WholeResponse};
pub use listen::{ConnectionCap, ConnectionLimits, serve_connection, serve_listener};
pub use metrics::{GatewayMetrics, LatencyFamily, RevisionLabels, RevisionMetrics, latency_family};
pub use pool::{
    EndpointLoad, InstanceAddr, InstanceHandler, Lease, PoolConfig, PoolStats, RequestTimeouts, RevisionPool,
};
pub use proxy::{GatewayBody, LocalClient};
pub use router::{ASYNC_PREFIX, AsyncQueue, Gateway, Ingress, prefers_async};
pub use routes::{Route, RouteKey, RoutingTable, Target};
pub use server::{bind, serve};
pub use upstream::ProxyBody;
