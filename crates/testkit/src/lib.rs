//! The test kit: serval's platform in the test process on port 0, with the in-memory store
//! and a fake runtime, so that controller and reconciler tests run in milliseconds without
//! a binary, a database file or child processes.
//!
//! Owns: [`FakeRuntime`] and [`InProcess`] (start, API calls, waiting on watches, requests
//! through the gateway), and [`ServerProcess`], the one harness of a real `serval server`
//! child process that end-to-end tests and benchmarks share.
//! Must not depend on: the `serval` crate (it is given the binary to run).

mod fake_runtime;
mod in_process;
mod server_process;

pub use fake_runtime::{EXITS_BEFORE_READY, FakeRuntime, MISSING_PROGRAM, RevisionCounts, SeenRequest};
pub use in_process::InProcess;
pub use server_process::{ServerProcess, stop_gracefully};
