use serval_model::ValidationError;

/// Errors of the control plane, by what went wrong; the API maps them to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: &'static str, namespace: String, name: String },
    #[error("invalid {kind}: {source}")]
    Invalid { kind: &'static str, source: ValidationError },
    #[error("{0}")]
    BadRequest(String),
    /// The object exists already (a create of a taken name, an image still in use).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A write carried a `metadata.resourceVersion` that is no longer the stored one.
    #[error("{0}")]
    StaleVersion(String),
    #[error(transparent)]
    Store(#[from] serval_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] serval_runtime::RuntimeError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// Dispatch's errors are the control plane's own kinds of error (a 422 stays a 422).
impl From<serval_dispatch::DispatchError> for ControlError {
    fn from(e: serval_dispatch::DispatchError) -> ControlError {
        use serval_dispatch::DispatchError;
        match e {
            DispatchError::Invalid { kind, source } => ControlError::Invalid { kind, source },
            DispatchError::NotFound { kind, namespace, name } => ControlError::NotFound { kind, namespace, name },
            DispatchError::BadEvent(why) => ControlError::BadRequest(why),
            DispatchError::Store(e) => ControlError::Store(e),
        }
    }
}

impl ControlError {
    /// A 422 naming one field of a `kind` document.
    pub fn invalid_field(kind: &'static str, field: impl Into<String>, message: impl Into<String>) -> ControlError {
        ControlError::Invalid {
            kind,
            source: ValidationError {
                errors: vec![serval_model::FieldError { field: field.into(), message: message.into() }],
            },
        }
    }
}
