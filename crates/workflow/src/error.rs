//! The DSL's error shape (`type`, `status`, `title`, `detail`, `instance` as a JSON pointer
//! to the task), which is also this crate's one error type: a workflow faults with it, a
//! `try` catches it, a document that does not parse is refused with it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The standard error types of the DSL (`https://serverlessworkflow.io/spec/1.0.0/errors/…`).
pub const ERRORS: &str = "https://serverlessworkflow.io/spec/1.0.0/errors/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{}{}: {}", self.title.as_deref().unwrap_or("error"), self.instance.as_deref().map(|i| format!(" at {i}")).unwrap_or_default(), self.detail.as_deref().unwrap_or(&self.r#type))]
pub struct Error {
    #[serde(rename = "type")]
    pub r#type: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Error {
    fn standard(kind: &str, status: u16, title: &str, detail: String) -> Error {
        Error {
            r#type: format!("{ERRORS}{kind}"),
            status,
            title: Some(title.into()),
            detail: Some(detail),
            instance: None,
        }
    }

    /// A document that does not follow the DSL.
    pub fn validation(detail: impl Into<String>) -> Error {
        Error::standard("validation", 400, "Validation Error", detail.into())
    }

    /// A runtime expression that does not parse or fails.
    pub fn expression(detail: impl Into<String>) -> Error {
        Error::standard("expression", 400, "Expression Error", detail.into())
    }

    /// A call that failed: the peer's status, or 503 when it could not be reached.
    pub fn communication(status: u16, detail: impl Into<String>) -> Error {
        Error::standard("communication", status, "Communication Error", detail.into())
    }

    /// Something the engine could not do (a task kind it does not run, a cancelled run).
    pub fn runtime(detail: impl Into<String>) -> Error {
        Error::standard("runtime", 500, "Runtime Error", detail.into())
    }

    /// A timeout of a task or workflow.
    pub fn timeout(detail: impl Into<String>) -> Error {
        Error::standard("timeout", 408, "Timeout Error", detail.into())
    }

    /// The same error, located at `instance` unless it already is.
    pub fn at(mut self, instance: &str) -> Error {
        self.instance.get_or_insert_with(|| instance.to_string());
        self
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Whether this error's type is `wanted`. The DSL's standard types are named two ways
    /// in the wild (`…/spec/1.0.0/errors/communication` in the specification,
    /// `…/dsl/errors/types/communication` in its conformance kit): they are equal when both
    /// are serverlessworkflow.io types with the same last segment.
    pub fn is_type(&self, wanted: &str) -> bool {
        let standard = |t: &str| t.starts_with("https://serverlessworkflow.io/");
        let last = |t: &str| t.rsplit('/').next().map(str::to_string);
        self.r#type == wanted || (standard(&self.r#type) && standard(wanted) && last(&self.r#type) == last(wanted))
    }
}
