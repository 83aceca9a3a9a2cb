//! Async invocation settings of a Service: how often a queued call is tried, how long it may
//! wait, and where its outcome goes (Lambda's event invoke config, as annotations).

use std::time::Duration;

use crate::{Destination, FieldError, KReference, Service};

/// Retries after a queued call's first attempt fails (Lambda's `MaximumRetryAttempts`).
pub const ASYNC_RETRIES: &str = "serval.dev/async-retries";
/// How long a queued call may wait for a successful attempt (Lambda's
/// `MaximumEventAgeInSeconds`), a duration such as `6h` or `90s`.
pub const ASYNC_MAX_AGE: &str = "serval.dev/async-max-age";
/// Where a destination record goes when a queued call succeeds.
pub const ASYNC_ON_SUCCESS: &str = "serval.dev/async-on-success";
/// Where a destination record goes when a queued call fails for good.
pub const ASYNC_ON_FAILURE: &str = "serval.dev/async-on-failure";

/// Retries without the annotation (Lambda's default).
pub const DEFAULT_ASYNC_RETRIES: u32 = 2;
/// The most retries a service may ask for.
pub const MAX_ASYNC_RETRIES: u32 = 10;
/// Event age without the annotation (Lambda's default and maximum: 6 hours).
pub const DEFAULT_ASYNC_MAX_AGE: Duration = Duration::from_secs(6 * 3600);
/// The longest age a service may ask for: a week.
pub const MAX_ASYNC_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A service's async invocation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncSettings {
    pub retries: u32,
    pub max_age: Duration,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
}

/// The service's async settings from its annotations (template first, then the Service's
/// own), or every annotation that is wrong.
pub fn async_settings(service: &Service) -> Result<AsyncSettings, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut error = |key: &str, message: String| {
        errors.push(FieldError { field: format!("metadata.annotations[{key}]"), message });
    };
    let retries = match service.annotation(ASYNC_RETRIES) {
        None => DEFAULT_ASYNC_RETRIES,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if n <= MAX_ASYNC_RETRIES => n,
            _ => {
                error(ASYNC_RETRIES, format!("{raw:?} must be an integer from 0 to {MAX_ASYNC_RETRIES}"));
                DEFAULT_ASYNC_RETRIES
            }
        },
    };
    let max_age = match service.annotation(ASYNC_MAX_AGE) {
        None => DEFAULT_ASYNC_MAX_AGE,
        Some(raw) => match crate::validate::parse_duration(raw.trim()) {
            Ok(age) if !age.is_zero() && age <= MAX_ASYNC_MAX_AGE => age,
            Ok(_) => {
                error(ASYNC_MAX_AGE, format!("{raw:?} must be more than 0 and at most 168h"));
                DEFAULT_ASYNC_MAX_AGE
            }
            Err(e) => {
                error(ASYNC_MAX_AGE, e);
                DEFAULT_ASYNC_MAX_AGE
            }
        },
    };
    let mut destination = |key: &str| {
        let raw = service.annotation(key)?;
        parse_destination(raw).map_err(|e| error(key, e)).ok()
    };
    let (on_success, on_failure) = (destination(ASYNC_ON_SUCCESS), destination(ASYNC_ON_FAILURE));
    if errors.is_empty() { Ok(AsyncSettings { retries, max_age, on_success, on_failure }) } else { Err(errors) }
}

/// A destination written in one annotation value: an absolute `http(s)://` URI, or
/// `Kind/name` (`broker/default`, `service/audit`; the kind in any case) in the service's
/// namespace.
pub fn parse_destination(raw: &str) -> Result<Destination, String> {
    let raw = raw.trim();
    if raw.starts_with("http://") || raw.starts_with("https://") {
        return Ok(Destination { reference: None, uri: Some(raw.to_string()) });
    }
    const KINDS: [&str; 7] = ["Service", "Broker", "Channel", "InMemoryChannel", "Sequence", "Parallel", "Workflow"];
    let bad =
        || format!("{raw:?} must be an http(s):// URI or KIND/NAME, KIND one of {}", KINDS.join(", ").to_lowercase());
    let (kind, name) = raw.split_once('/').ok_or_else(bad)?;
    let kind = KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind)).ok_or_else(bad)?;
    crate::validate::validate_name(name, 63).map_err(|e| format!("{raw:?}: {e}"))?;
    let reference =
        KReference { api_version: String::new(), kind: kind.to_string(), name: name.to_string(), namespace: None };
    Ok(Destination { reference: Some(reference), uri: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(annotations: &[(&str, &str)]) -> Service {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}
        }))
        .expect("service");
        for (k, v) in annotations {
            s.metadata.annotations.insert(k.to_string(), v.to_string());
        }
        s
    }

    #[test]
    fn defaults_are_lambdas() {
        let s = async_settings(&service(&[])).expect("valid");
        assert_eq!((s.retries, s.max_age, s.on_success, s.on_failure), (2, DEFAULT_ASYNC_MAX_AGE, None, None));
    }

    #[test]
    fn annotations_are_read_and_checked() {
        let s = async_settings(&service(&[
            (ASYNC_RETRIES, "0"),
            (ASYNC_MAX_AGE, "90s"),
            (ASYNC_ON_SUCCESS, "http://127.0.0.1:9/ok"),
            (ASYNC_ON_FAILURE, "Broker/default"),
        ]))
        .expect("valid");
        assert_eq!((s.retries, s.max_age), (0, Duration::from_secs(90)));
        assert_eq!(s.on_success.and_then(|d| d.uri).as_deref(), Some("http://127.0.0.1:9/ok"));
        let failure = s.on_failure.and_then(|d| d.reference).expect("a ref");
        assert_eq!((failure.kind.as_str(), failure.name.as_str()), ("Broker", "default"));
        let errors =
            async_settings(&service(&[(ASYNC_RETRIES, "11"), (ASYNC_MAX_AGE, "soon"), (ASYNC_ON_FAILURE, "queue/x")]))
                .expect_err("three errors");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.annotations[serval.dev/async-retries]",
                "metadata.annotations[serval.dev/async-max-age]",
                "metadata.annotations[serval.dev/async-on-failure]"
            ]
        );
    }
}
