use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serval_control::ControlError;
use serval_runtime::RuntimeError;

/// Errors of the API; [`IntoResponse`] below is the one place errors become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the control plane refused or failed at.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A request the API cannot decode.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// What a key-value store refused.
    #[error(transparent)]
    Kv(#[from] serval_kv::KvError),
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        ApiError::Control(ControlError::Runtime(e))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    /// The status and the `reason` of the JSON answer (Kubernetes' `StatusReason` names
    /// where one fits), together: one table.
    fn kind(&self) -> (StatusCode, &'static str) {
        let control = match self {
            ApiError::Control(control) => control,
            ApiError::BadRequest(_) => return (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Unauthorized => return (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Io(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            ApiError::Kv(kv) => return kv_kind(kv),
        };
        match control {
            ControlError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            ControlError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            ControlError::StaleVersion(_) => (StatusCode::CONFLICT, "Conflict"),
            ControlError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ControlError::Runtime(RuntimeError::ImageNotFound(_)) => (StatusCode::NOT_FOUND, "NotFound"),
            ControlError::Runtime(
                RuntimeError::PullFailed { .. } | RuntimeError::UnpackRejected(_) | RuntimeError::Image(_),
            ) => (StatusCode::UNPROCESSABLE_ENTITY, "ImageError"),
            ControlError::Store(_) | ControlError::Runtime(_) | ControlError::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        }
    }
}

fn kv_kind(error: &serval_kv::KvError) -> (StatusCode, &'static str) {
    use serval_kv::KvError;
    match error {
        KvError::Invalid { .. } => (StatusCode::BAD_REQUEST, "BadRequest"),
        KvError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
        KvError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        KvError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        KvError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
        KvError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "PreconditionFailed"),
        KvError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        KvError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = match &self {
            ApiError::Control(ControlError::Invalid { source, .. }) => {
                serde_json::to_value(&source.errors).unwrap_or_default()
            }
            ApiError::Kv(serval_kv::KvError::Invalid { field, .. } | serval_kv::KvError::TooLarge { field, .. }) => {
                serde_json::json!([{ "field": field }])
            }
            _ => serde_json::Value::Null,
        };
        let (status, reason) = self.kind();
        if status.is_server_error() {
            tracing::error!("api error: {self}");
        }
        let body = serde_json::json!({
            "error": { "code": status.as_u16(), "reason": reason, "message": self.to_string(), "details": details }
        });
        (status, axum::Json(body)).into_response()
    }
}
