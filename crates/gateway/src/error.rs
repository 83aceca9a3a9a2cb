use http::StatusCode;

/// Everything that can go wrong on the data path; [`GatewayError::status`] is the one
/// place that maps it to HTTP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no service matches host {host:?} and path {path:?}")]
    NoRoute { host: String, path: String },
    #[error("service {0} has no ready revision: {1}")]
    NotReady(String, String),
    #[error("too many requests are waiting for service {0}")]
    QueueFull(String),
    #[error("request to service {service} timed out after {seconds}s")]
    Timeout { service: String, seconds: u64 },
    #[error("instance failed to start: {0}")]
    StartFailed(String),
    #[error("instance failed to answer: {0}")]
    Upstream(String),
    #[error("revision {0} is shutting down")]
    Closed(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotReady(..) | GatewayError::QueueFull(_) | GatewayError::Closed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::StartFailed(_) | GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short machine-readable reason for the JSON error body.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NoRoute { .. } => "NotFound",
            GatewayError::NotReady(..) => "RevisionNotReady",
            GatewayError::QueueFull(_) => "Overloaded",
            GatewayError::Timeout { .. } => "Timeout",
            GatewayError::StartFailed(_) => "InstanceStartFailed",
            GatewayError::Upstream(_) => "InstanceFailed",
            GatewayError::Closed(_) => "ShuttingDown",
            GatewayError::BadRequest(_) => "BadRequest",
        }
    }

    /// Seconds a client should wait before retrying, for 503s.
    pub fn retry_after(&self) -> Option<u32> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1)
    }

    /// The client's connection cannot go on after this answer (it broke the protocol).
    pub fn closes_connection(&self) -> bool {
        matches!(self, GatewayError::BadRequest(_))
    }

    pub fn body(&self) -> String {
        serde_json::json!({
            "error": { "code": self.status().as_u16(), "reason": self.reason(), "message": self.to_string() }
        })
        .to_string()
    }
}
