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
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        ApiError::Control(ControlError::Runtime(e))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        let ApiError::Control(control) = self else {
            return match self {
                ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
        };
        match control {
            ControlError::NotFound { .. } => StatusCode::NOT_FOUND,
            ControlError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) | ControlError::StaleVersion(_) => StatusCode::CONFLICT,
            ControlError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ControlError::Runtime(RuntimeError::ImageNotFound(_)) => StatusCode::NOT_FOUND,
            ControlError::Runtime(
                RuntimeError::PullFailed { .. } | RuntimeError::UnpackRejected(_) | RuntimeError::Image(_),
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Store(_) | ControlError::Runtime(_) | ControlError::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `reason` of the JSON answer (Kubernetes' `StatusReason` names where one fits).
    fn reason(&self) -> &'static str {
        let ApiError::Control(control) = self else {
            return match self {
                ApiError::BadRequest(_) => "BadRequest",
                ApiError::Unauthorized => "Unauthorized",
                _ => "InternalError",
            };
        };
        match control {
            ControlError::NotFound { .. } => "NotFound",
            ControlError::Invalid { .. } => "Invalid",
            ControlError::BadRequest(_) => "BadRequest",
            ControlError::Conflict(_) => "AlreadyExists",
            ControlError::StaleVersion(_) => "Conflict",
            ControlError::MethodNotAllowed(_) => "MethodNotAllowed",
            ControlError::Runtime(RuntimeError::ImageNotFound(_)) => "NotFound",
            ControlError::Runtime(
                RuntimeError::PullFailed { .. } | RuntimeError::UnpackRejected(_) | RuntimeError::Image(_),
            ) => "ImageError",
            ControlError::Store(_) | ControlError::Runtime(_) | ControlError::Io(_) => "InternalError",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = match &self {
            ApiError::Control(ControlError::Invalid { source, .. }) => {
                serde_json::to_value(&source.errors).unwrap_or_default()
            }
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
