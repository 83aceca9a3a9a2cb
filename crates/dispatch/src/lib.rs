//! Dispatch: events from where they arrive to where they go.
//!
//! Owns: the broker ingress (`/b/<namespace>/<broker>`, registered on the gateway), the one
//! append into brokers' logs (arrival time and TTL stamped, one durable commit), trigger
//! dispatchers (log → filter → delivery with retries, dead letters and replies, cursors as
//! the delivery window's watermark), log compaction, event sources (PingSource), and the
//! [`Supervisor`](supervisor::Supervisor) that keeps one task per wanted dispatcher or
//! source running.
//! Must not depend on: the control plane (reconcilers, runners, the API) or a runtime; it
//! is given plans (what to run) and a store (`dyn Storage`), and reports counts.

pub mod delivery;
mod error;
pub mod ingress;
pub mod plan;
pub mod sources;
pub mod supervisor;

pub use error::DispatchError;
