//! serval's workflow engine: the CNCF Serverless Workflow DSL 1.0 (`document.dsl: 1.0.x`).
//!
//! Owns: parsing and checking documents ([`dsl`]), runtime expressions through jq (the
//! jaq crates, [`expr`]), the interpreter with the DSL's data flow, flow directives and
//! error shape ([`engine`], [`Error`]), event consumption of `listen` and `schedule.on`
//! ([`listen`]). Every effect goes through the [`engine::Effects`]
//! trait: the engine does no IO, reads no clock, and is tested on simulated time.
//! Must not depend on: HTTP clients or servers, the store, the control plane.

pub mod dsl;
pub mod engine;
mod error;
pub mod expr;
pub mod listen;

pub use dsl::Workflow;
pub use engine::{Effects, HttpRequest, HttpResponse, Outcome, Phase, TaskRecord, run};
pub use error::{ERRORS, Error};
