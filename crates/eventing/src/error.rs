//! The crate's one error type.

/// Why a message or a value is not a valid CloudEvent.
///
/// Every variant's `Display` is a complete sentence fragment meant for the body of an
/// HTTP 400 answer: it names the attribute, header, member or batch index at fault and
/// what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute (`specversion`, `id`, `source`, `type`) is absent (or `null`
    /// in JSON).
    #[error("missing required attribute '{0}'")]
    MissingAttribute(&'static str),
    /// A required attribute is absent from a binary-mode message: no `ce-<name>` header.
    #[error(
        "missing required attribute '{0}': binary content mode needs a 'ce-{0}' header \
         (send Content-Type: application/cloudevents+json for structured mode)"
    )]
    MissingHeader(&'static str),
    /// `specversion` is something other than `1.0`.
    #[error("unsupported specversion '{0}': only 1.0 is supported")]
    UnsupportedSpecVersion(String),
    /// An attribute or extension name breaks the naming rules.
    #[error("invalid attribute name '{name}': {reason}")]
    InvalidAttributeName { name: String, reason: &'static str },
    /// An attribute's value has the wrong type or format.
    #[error("invalid value for attribute '{name}': {reason}")]
    InvalidAttribute { name: String, reason: String },
    /// A binary-mode header cannot be decoded (percent-encoding, quoting, UTF-8,
    /// duplicates) or is not allowed.
    #[error("invalid header '{name}': {reason}")]
    InvalidHeader { name: String, reason: String },
    /// A JSON event has both `data` and `data_base64`.
    #[error("'data' and 'data_base64' are both present; an event carries at most one of them")]
    DataConflict,
    /// `data_base64` is not a base64 string.
    #[error("'data_base64' is not valid base64: {0}")]
    InvalidBase64(String),
    /// A structured or batched body is not UTF-8.
    #[error("{what} is not valid UTF-8 (invalid byte sequence at offset {offset})")]
    InvalidUtf8 { what: &'static str, offset: usize },
    /// A structured or batched body is not JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A structured event (or a batch item) is a JSON value other than an object.
    #[error("an event in JSON format must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// A batched body is a JSON value other than an array.
    #[error("a batch must be a JSON array of events, found {0}")]
    NotAnArray(&'static str),
    /// The event at `index` (counting from 0) of a batch is invalid.
    #[error("event {index} of the batch: {source}")]
    InBatch { index: usize, source: Box<EventError> },
    /// The Content-Type names a CloudEvents event format other than JSON.
    #[error(
        "unsupported event format '{0}': supported are application/cloudevents+json \
         and application/cloudevents-batch+json (or binary content mode)"
    )]
    UnsupportedFormat(String),
    /// A Trigger's `filter` or `filters` is invalid; `path` names the field at fault, for
    /// example `spec.filters[1].cesql`.
    #[error("invalid filter at '{path}': {reason}")]
    InvalidFilter { path: String, reason: String },
    /// A string is not an ISO-8601 duration of the form Knative accepts (`PnWnDTnHnMn.nS`).
    #[error("invalid ISO-8601 duration '{value}': {reason}")]
    InvalidDuration { value: String, reason: String },
    /// A delivery spec field is invalid; `field` names it, for example
    /// `spec.delivery.backoffDelay`.
    #[error("invalid delivery field '{field}': {reason}")]
    InvalidDelivery { field: String, reason: String },
}
