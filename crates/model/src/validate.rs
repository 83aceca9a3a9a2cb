use std::fmt;
use std::time::Duration;

use crate::service::{Container, RuntimeKind, Service, annotations};

/// One problem in a resource, located by a JSON-path-like field path
/// (`spec.template.spec.containers[0].image`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// All problems found in a resource; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Longest service name: its revision names (`<name>-00001`) must stay a DNS label.
const MAX_SERVICE_NAME: usize = 57;
const MAX_CONTAINER_CONCURRENCY: u32 = 1000;
const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// Knative fields that serval accepts but does not act on yet; they produce warnings.
const IGNORED_CONTAINER_FIELDS: &[&str] = &[
    "resources",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "securityContext",
    "imagePullPolicy",
    "volumeMounts",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// Checks a DNS-1035 label: lowercase letters, digits and `-`, starting with a letter,
/// ending with a letter or digit, at most `max` characters.
pub fn validate_name(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let bytes = value.as_bytes();
    let ok_chars = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ok_start = bytes[0].is_ascii_lowercase();
    let ok_end = bytes[bytes.len() - 1] != b'-';
    if !(ok_chars && ok_start && ok_end) {
        return Err(format!(
            "{value:?} is not a valid name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Parses a Go-style duration as Knative writes them: `60s`, `1m30s`, `500ms`, `1h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration (examples: 30s, 1m30s, 500ms)");
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = value;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * seconds_per_unit);
    }
    Ok(total)
}

struct Checker {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Checker {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
    }
    fn warn_unknown<'a>(&mut self, path: &str, keys: impl Iterator<Item = &'a String>) {
        for key in keys {
            self.warnings.push(format!("{path}.{key}: unknown field, ignored"));
        }
    }
}

/// Validates a Service as submitted by a user. Returns the warnings (fields serval ignores)
/// or every error found, each with its field path.
pub fn validate_service(service: &Service) -> Result<Vec<String>, ValidationError> {
    let mut c = Checker { errors: Vec::new(), warnings: Vec::new() };
    if service.api_version != crate::SERVING_API_VERSION {
        c.error("apiVersion", format!("must be {}", crate::SERVING_API_VERSION));
    }
    if service.kind != "Service" {
        c.error("kind", "must be Service");
    }
    if let Err(m) = validate_name(&service.metadata.name, MAX_SERVICE_NAME) {
        c.error("metadata.name", m);
    }
    if !service.metadata.namespace.is_empty()
        && let Err(m) = validate_name(&service.metadata.namespace, 63)
    {
        c.error("metadata.namespace", m);
    }
    c.warn_unknown("spec", service.spec.unknown.keys());

    let template = &service.spec.template;
    if let Some(name) = &template.metadata.name {
        let prefix = format!("{}-", service.metadata.name);
        if !name.starts_with(&prefix) {
            c.error("spec.template.metadata.name", format!("must start with {prefix:?}"));
        } else if let Err(m) = validate_name(name, 63) {
            c.error("spec.template.metadata.name", m);
        }
    }
    check_annotations(&mut c, service);

    let spec = &template.spec;
    c.warn_unknown("spec.template.spec", spec.unknown.keys());
    match spec.containers.len() {
        0 => c.error("spec.template.spec.containers", "one container is required"),
        1 => check_container(&mut c, &spec.containers[0], service),
        _ => c.error("spec.template.spec.containers", "serval runs exactly one container per revision"),
    }
    if spec.container_concurrency() > MAX_CONTAINER_CONCURRENCY {
        c.error(
            "spec.template.spec.containerConcurrency",
            format!("must be between 0 and {MAX_CONTAINER_CONCURRENCY}"),
        );
    }
    if let Some(t) = spec.timeout_seconds
        && (t == 0 || t > MAX_TIMEOUT_SECONDS)
    {
        c.error("spec.template.spec.timeoutSeconds", format!("must be between 1 and {MAX_TIMEOUT_SECONDS}"));
    }
    for (i, t) in service.spec.traffic.iter().enumerate() {
        let is_plain_latest = t.latest_revision == Some(true) && t.percent.unwrap_or(100) == 100 && t.tag.is_none();
        if !is_plain_latest || service.spec.traffic.len() > 1 {
            c.error(
                format!("spec.traffic[{i}]"),
                "only a single target with latestRevision: true and percent: 100 is supported",
            );
        }
    }
    if c.errors.is_empty() { Ok(c.warnings) } else { Err(ValidationError { errors: c.errors }) }
}

fn check_annotations(c: &mut Checker, service: &Service) {
    let path = |key: &str| format!("spec.template.metadata.annotations[{key}]");
    let template = &service.spec.template.metadata.annotations;
    if let Err(errors) = crate::parse_autoscaling(template, "spec.template.metadata.annotations") {
        c.errors.extend(errors);
    }
    for key in service.metadata.annotations.keys().filter(|k| k.starts_with("autoscaling.knative.dev/")) {
        c.warnings.push(format!(
            "metadata.annotations[{key}]: autoscaling annotations belong in spec.template.metadata.annotations; ignored"
        ));
    }
    if let Some(raw) = service.annotation(annotations::RUNTIME)
        && RuntimeKind::parse(raw).is_none()
    {
        c.error(path(annotations::RUNTIME), format!("{raw:?} must be one of process, oci, wasm"));
    }
}

fn check_container(c: &mut Checker, container: &Container, service: &Service) {
    let base = "spec.template.spec.containers[0]";
    let runtime = service
        .annotation(annotations::RUNTIME)
        .and_then(RuntimeKind::parse)
        .unwrap_or(if container.image.is_some() { RuntimeKind::Oci } else { RuntimeKind::Process });
    match (&container.image, runtime) {
        (Some(image), _) if image.trim().is_empty() => c.error(format!("{base}.image"), "must not be empty"),
        (None, RuntimeKind::Process) if container.command.is_empty() => {
            c.error(base, "either image or command is required")
        }
        (None, RuntimeKind::Oci | RuntimeKind::Wasm) => {
            c.error(format!("{base}.image"), format!("is required by the {} runtime", runtime.as_str()))
        }
        _ => {}
    }
    if container.command.first().is_some_and(|c| c.trim().is_empty()) {
        c.error(format!("{base}.command[0]"), "must not be empty");
    }
    for (i, env) in container.env.iter().enumerate() {
        if env.name.is_empty() || env.name.contains('=') || env.name.contains('\0') {
            c.error(format!("{base}.env[{i}].name"), format!("{:?} is not a valid variable name", env.name));
        }
        if env.unknown.contains_key("valueFrom") {
            c.error(format!("{base}.env[{i}].valueFrom"), "is not supported; give a value");
        }
    }
    if container.ports.len() > 1 {
        c.error(format!("{base}.ports"), "at most one port may be given");
    }
    if container.ports.first().is_some_and(|p| p.container_port == 0) {
        c.error(format!("{base}.ports[0].containerPort"), "must be between 1 and 65535");
    }
    for key in container.unknown.keys() {
        if IGNORED_CONTAINER_FIELDS.contains(&key.as_str()) {
            c.warnings.push(format!("{base}.{key}: not supported yet, ignored"));
        } else {
            c.warnings.push(format!("{base}.{key}: unknown field, ignored"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, RevisionTemplate, Service};

    fn service(container: Container) -> Service {
        let mut t = RevisionTemplate::default();
        t.spec.containers.push(container);
        Service::new("default", "hello", t)
    }

    fn cmd(c: &str) -> Container {
        Container { command: vec![c.into()], ..Default::default() }
    }

    #[test]
    fn accepts_a_plain_command() {
        assert_eq!(validate_service(&service(cmd("/bin/true"))), Ok(vec![]));
    }

    #[test]
    fn reports_field_paths() {
        let mut s = service(Container::default());
        s.metadata.name = "Bad_Name".into();
        s.spec.template.spec.timeout_seconds = Some(0);
        s.spec.template.metadata.annotations.insert(crate::autoscaling::MIN_SCALE.into(), "-1".into());
        let err = validate_service(&s).expect_err("invalid");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "spec.template.metadata.annotations[autoscaling.knative.dev/min-scale]",
                "spec.template.spec.containers[0]",
                "spec.template.spec.timeoutSeconds"
            ]
        );
    }

    #[test]
    fn min_above_max_is_rejected() {
        let mut s = service(cmd("x"));
        let a = &mut s.spec.template.metadata.annotations;
        a.insert(crate::autoscaling::MIN_SCALE.into(), "3".into());
        a.insert(crate::autoscaling::MAX_SCALE.into(), "2".into());
        assert!(validate_service(&s).is_err());
    }

    #[test]
    fn unknown_fields_become_warnings() {
        let json = r#"{"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{"name":"a"},
            "spec":{"template":{"spec":{"containers":[{"command":["x"],"resources":{},"foo":1}]}}}}"#;
        let s: Service = serde_json::from_str(json).expect("decodes");
        let warnings = validate_service(&s).expect("valid");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("a-1", 63).is_ok());
        assert!(validate_name("1a", 63).is_err());
        assert!(validate_name("a-", 63).is_err());
        assert!(validate_name("", 63).is_err());
    }
}
