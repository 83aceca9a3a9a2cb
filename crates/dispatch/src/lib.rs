//! Dispatch: events from where they arrive to where they go.
//!
//! Owns: the async call queues of services (`calls.rs`: calls stored before their 202,
//! replayed through the data plane with retries, outcomes to callbacks, destinations and a
//! results log); the ingress of brokers (`/b/<namespace>/<broker>`), channels (`/c/…`) and webhook
//! sources (`/s/…`), registered on the gateway; the one append into logs (a broker's stamps
//! arrival time and TTL; one commit, fsynced unless it is a hand-off between logs); plans (triggers and subscriptions with their
//! destinations resolved once); dispatchers (log → filter → delivery with retries, dead
//! letters and replies, cursors as the delivery window's watermark); log compaction; event
//! sources (ping, files, NATS, PostgreSQL, Kafka, webhooks, serval's own resource changes
//! and instance lifecycle: positions advanced only after delivery); and the [`Supervisor`](supervisor::Supervisor) that keeps one task per wanted
//! dispatcher or source running.
//! Must not depend on: the control plane (reconcilers, runners, the API) or a runtime; it
//! is given plans (what to run) and a store (`dyn Storage`), and reports counts and health.

pub mod calls;
pub mod delivery;
mod error;
pub mod ingress;
pub mod plan;
pub mod sources;
pub mod supervisor;

pub use error::DispatchError;
