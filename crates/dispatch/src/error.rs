use serval_model::{FieldError, ValidationError};

/// Errors of the dispatch crate.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A trigger's or source's spec that cannot be planned (a 422 naming the field).
    #[error("invalid {kind}: {source}")]
    Invalid { kind: &'static str, source: ValidationError },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: &'static str, namespace: String, name: String },
    /// An event that cannot be taken (e.g. an extension it cannot carry).
    #[error("{0}")]
    BadEvent(String),
    #[error(transparent)]
    Store(#[from] serval_store::StoreError),
}

impl DispatchError {
    /// A 422 naming one field of a `kind` document.
    pub fn invalid_field(kind: &'static str, field: impl Into<String>, message: impl Into<String>) -> DispatchError {
        DispatchError::Invalid {
            kind,
            source: ValidationError { errors: vec![FieldError { field: field.into(), message: message.into() }] },
        }
    }
}
