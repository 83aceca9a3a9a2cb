//! Lambda functions as services: the protocol annotation that makes a revision's instances
//! speak the Lambda Runtime API, and what the function's runtime needs to know.

use crate::{FieldError, Revision, Service};

/// How a revision's instances take requests: `http` (the default: they serve HTTP on
/// `PORT`) or `lambda` (they pull invocations from the Lambda Runtime API).
pub const PROTOCOL: &str = "serval.dev/protocol";
/// A Lambda function's handler (`_HANDLER`), e.g. `lambda_function.handler`.
pub const LAMBDA_HANDLER: &str = "serval.dev/lambda-handler";
/// A Lambda function's runtime, e.g. `python3.12` or `provided.al2023`.
pub const LAMBDA_RUNTIME: &str = "serval.dev/lambda-runtime";

/// The host directory of a zip run in an image (set by the Lambda API): bound in read-only
/// at the container's working directory (`/var/task`).
pub const LAMBDA_CODE: &str = "serval.dev/lambda-code";

/// A function's Lambda metadata (role, description, code size and digest, last change) as
/// JSON, for the Lambda API's `FunctionConfiguration` (set by the server).
pub const LAMBDA_FUNCTION: &str = "serval.dev/lambda-function";

/// A revision that runs a Lambda function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaFunction {
    pub handler: Option<String>,
    pub runtime: Option<String>,
    /// The host directory of its zip when it runs in an image ([`LAMBDA_CODE`]).
    pub code: Option<String>,
}

impl Revision {
    /// The Lambda function this revision runs, when its protocol is `lambda`.
    pub fn lambda(&self) -> Option<LambdaFunction> {
        (self.annotation(PROTOCOL) == Some("lambda")).then(|| LambdaFunction {
            handler: self.annotation(LAMBDA_HANDLER).map(str::to_string),
            runtime: self.annotation(LAMBDA_RUNTIME).map(str::to_string),
            code: self.annotation(LAMBDA_CODE).map(str::to_string),
        })
    }
}

/// Checks a service's protocol annotations; each problem with its field.
pub fn check_lambda(service: &Service) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let field = |key: &str| format!("spec.template.metadata.annotations[{key}]");
    if let Some(protocol) = service.annotation(PROTOCOL)
        && !matches!(protocol, "http" | "lambda")
    {
        errors.push(FieldError { field: field(PROTOCOL), message: format!("{protocol:?} must be http or lambda") });
    }
    if let Some(handler) = service.annotation(LAMBDA_HANDLER)
        && (handler.is_empty() || handler.len() > 128 || handler.chars().any(char::is_whitespace))
    {
        let message = format!("{handler:?} must be 1 to 128 characters without spaces");
        errors.push(FieldError { field: field(LAMBDA_HANDLER), message });
    }
    if let Some(runtime) = service.annotation(LAMBDA_RUNTIME)
        && (runtime.is_empty()
            || runtime.len() > 64
            || !runtime.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'))
    {
        let message = format!("{runtime:?} must be a Lambda runtime name such as python3.12 or provided.al2023");
        errors.push(FieldError { field: field(LAMBDA_RUNTIME), message });
    }
    if let Some(code) = service.annotation(LAMBDA_CODE)
        && (!code.starts_with('/') || code.split('/').any(|part| part == ".."))
    {
        errors.push(FieldError { field: field(LAMBDA_CODE), message: format!("{code:?} must be an absolute path") });
    }
    errors
}
