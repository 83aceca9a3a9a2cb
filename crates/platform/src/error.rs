use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serval_model::ValidationError;

/// Errors of the platform; [`IntoResponse`] below is the one place they become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: &'static str, namespace: String, name: String },
    #[error("invalid {kind}: {source}")]
    Invalid { kind: &'static str, source: ValidationError },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A write carried a `metadata.resourceVersion` that is no longer the stored one.
    #[error("{0}")]
    StaleVersion(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error(transparent)]
    Store(#[from] serval_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] serval_runtime::RuntimeError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// Dispatch's errors are the platform's own kinds of error (a 422 stays a 422).
impl From<serval_dispatch::DispatchError> for PlatformError {
    fn from(e: serval_dispatch::DispatchError) -> PlatformError {
        use serval_dispatch::DispatchError;
        match e {
            DispatchError::Invalid { kind, source } => PlatformError::Invalid { kind, source },
            DispatchError::NotFound { kind, namespace, name } => PlatformError::NotFound { kind, namespace, name },
            DispatchError::BadEvent(why) => PlatformError::BadRequest(why),
            DispatchError::Store(e) => PlatformError::Store(e),
        }
    }
}

impl PlatformError {
    /// A 422 naming one field of a `kind` document.
    pub fn invalid_field(kind: &'static str, field: impl Into<String>, message: impl Into<String>) -> PlatformError {
        PlatformError::Invalid {
            kind,
            source: ValidationError {
                errors: vec![serval_model::FieldError { field: field.into(), message: message.into() }],
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            PlatformError::NotFound { .. } => StatusCode::NOT_FOUND,
            PlatformError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            PlatformError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PlatformError::Conflict(_) | PlatformError::StaleVersion(_) => StatusCode::CONFLICT,
            PlatformError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            PlatformError::Unauthorized => StatusCode::UNAUTHORIZED,
            PlatformError::Runtime(serval_runtime::RuntimeError::ImageNotFound(_)) => StatusCode::NOT_FOUND,
            PlatformError::Runtime(
                serval_runtime::RuntimeError::PullFailed { .. }
                | serval_runtime::RuntimeError::UnpackRejected(_)
                | serval_runtime::RuntimeError::Image(_),
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            PlatformError::Store(_) | PlatformError::Runtime(_) | PlatformError::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            PlatformError::NotFound { .. } => "NotFound",
            PlatformError::Invalid { .. } => "Invalid",
            PlatformError::BadRequest(_) => "BadRequest",
            PlatformError::Conflict(_) => "AlreadyExists",
            PlatformError::StaleVersion(_) => "Conflict",
            PlatformError::MethodNotAllowed(_) => "MethodNotAllowed",
            PlatformError::Unauthorized => "Unauthorized",
            PlatformError::Runtime(serval_runtime::RuntimeError::ImageNotFound(_)) => "NotFound",
            PlatformError::Runtime(
                serval_runtime::RuntimeError::PullFailed { .. }
                | serval_runtime::RuntimeError::UnpackRejected(_)
                | serval_runtime::RuntimeError::Image(_),
            ) => "ImageError",
            PlatformError::Store(_) | PlatformError::Runtime(_) | PlatformError::Io(_) => "InternalError",
        }
    }
}

impl IntoResponse for PlatformError {
    fn into_response(self) -> Response {
        let details = match &self {
            PlatformError::Invalid { source, .. } => serde_json::to_value(&source.errors).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("api error: {self}");
        }
        let body = serde_json::json!({
            "error": { "code": status.as_u16(), "reason": self.reason(), "message": self.to_string(), "details": details }
        });
        (status, axum::Json(body)).into_response()
    }
}
