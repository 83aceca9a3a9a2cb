//! The test kit: serval's platform in the test process on port 0, with the in-memory store
//! and a fake runtime, so that controller and reconciler tests run in milliseconds without
//! a binary, a database file or child processes.
//!
//! Owns: [`FakeRuntime`] and [`InProcess`] (start, API calls, waiting on watches, requests
//! through the gateway).
//! Must not depend on: the `serval` binary or its CLI (end-to-end tests drive those).

mod fake_runtime;
mod in_process;

pub use fake_runtime::{EXITS_BEFORE_READY, FakeRuntime, MISSING_PROGRAM, RevisionCounts};
pub use in_process::InProcess;
