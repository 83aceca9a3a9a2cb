//! Eventing for serval: Knative-shaped brokers, triggers and delivery.
//!
//! Owns, today: CloudEvents 1.0.2 — the [`CloudEvent`] type with its validation, the JSON
//! event format (single and batch), and the HTTP protocol binding in binary, structured
//! and batched content modes. The codec is sans-IO: it turns a [`http::HeaderMap`] plus
//! a body into events and back, and never touches a socket. Also: trigger filters (on top of
//! `serval-cesql`), the delivery policy (retries, backoff, dead-letter attributes), the
//! [`DeliveryWindow`] of a trigger's stream, and PingSource schedules — all sans-IO; the
//! platform does the IO.
//!
//! Must not depend on: the gateway (the gateway routes broker ingress to this crate, not
//! the other way round), the store's SQL, a runtime, or any IO in the codec.
//!
//! ```
//! use serval_eventing::{decode_request, encode_binary, CloudEvent, Data};
//!
//! let event = CloudEvent::builder()
//!     .id("1234-1234-1234")
//!     .source("/mycontext")
//!     .event_type("com.example.someevent")
//!     .datacontenttype("text/plain")
//!     .data(Data::Text("hello".into()))
//!     .build()
//!     .expect("a valid event");
//! let (headers, body) = encode_binary(&event);
//! assert_eq!(headers["ce-id"], "1234-1234-1234");
//! let decoded = decode_request(&headers, body).expect("decodes");
//! assert_eq!(decoded, vec![event]);
//! ```

mod cloudevent;
pub mod delivery;
mod error;
pub mod filter;

pub use cloudevent::*;
pub use delivery::{
    BackoffPolicy, Decision, DeliverySpec, DeliveryWindow, Destination, KReference, Outcome, RetryAfter, RetryPolicy,
    dead_letter_extensions, parse_iso8601_duration,
};
pub use error::EventError;
pub mod ping;
pub use filter::{CompiledFilter, SubscriptionsApiFilter, TriggerFilter, compile};
