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
pub const MAX_SERVICE_NAME: usize = 57;
const MAX_CONTAINER_CONCURRENCY: u32 = 1000;
const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// Knative fields that serval accepts but does not act on yet; they produce warnings.
const IGNORED_CONTAINER_FIELDS: &[&str] = &[
    "livenessProbe",
    "startupProbe",
    "imagePullPolicy",
    "volumeMounts",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// The server's bounds on scale (its `--max-instances` and `--max-scale-limit`).
#[derive(Debug, Clone, Copy)]
pub struct ScaleLimits {
    /// Instances the whole server runs at once.
    pub max_instances: u32,
    /// The highest max-scale a revision may ask for (Knative's `max-scale-limit`; 0: none).
    pub max_scale_limit: u32,
}

impl ScaleLimits {
    /// The most instances one revision may run: the server's, or fewer under max-scale-limit.
    pub fn per_revision(&self) -> u32 {
        match self.max_scale_limit {
            0 => self.max_instances,
            limit => limit.min(self.max_instances),
        }
    }

    /// A revision's max-scale held to max-scale-limit (0, unbounded, becomes the limit).
    pub fn max_scale(&self, asked: u32) -> u32 {
        match self.max_scale_limit {
            limit if limit > 0 && (asked == 0 || asked > limit) => limit,
            _ => asked,
        }
    }
}

/// Checks a Service's scale annotations against the server's limits: min-scale and
/// initial-scale above what the server can ever run, or max-scale above the limit, are
/// refused rather than started (a min-scale of a million would fork until the machine
/// runs out of descriptors). The annotations are assumed to parse ([`validate_service`]).
pub fn check_scale_limits(service: &Service, limits: ScaleLimits) -> Result<(), ValidationError> {
    let prefix = "spec.template.metadata.annotations";
    let Ok(parsed) = crate::parse_autoscaling(&service.spec.template.metadata.annotations, prefix) else {
        return Ok(());
    };
    let path = |key: &str| format!("{prefix}[{key}]");
    let most = limits.per_revision();
    let mut errors = Vec::new();
    for (key, value) in
        [(crate::autoscaling::MIN_SCALE, parsed.min_scale), (crate::autoscaling::INITIAL_SCALE, parsed.initial_scale)]
    {
        if let Some(n) = value.filter(|n| *n > most) {
            errors
                .push(FieldError { field: path(key), message: format!("{n} is more than this server runs ({most})") });
        }
    }
    if let Some(n) = parsed.max_scale.filter(|n| limits.max_scale(*n) != *n) {
        let limit = limits.max_scale_limit;
        let message = format!("{n} is above the server's max-scale-limit ({limit}); give 1 to {limit}");
        errors.push(FieldError { field: path(crate::autoscaling::MAX_SCALE), message });
    }
    if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
}

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
        // `from_secs_f64` and `+` panic past Duration::MAX (about 584 billion years).
        total = Duration::try_from_secs_f64(number * seconds_per_unit)
            .ok()
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{value:?} is too long a duration"))?;
    }
    Ok(total)
}

/// Fields of `spec`, `spec.template.spec`, a container and a probe that serval knows (read,
/// or accepts and ignores), for "did you mean" hints on unknown ones.
const SERVICE_SPEC_FIELDS: &[&str] = &["template", "traffic"];
const REVISION_SPEC_FIELDS: &[&str] = &[
    "containers",
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    "serviceAccountName",
    "volumes",
    "imagePullSecrets",
];
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "envFrom",
    "workingDir",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
];
const PROBE_FIELDS: &[&str] = &[
    "httpGet",
    "tcpSocket",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
    "exec",
    "grpc",
];
/// Annotations serval reads, for hints on unknown ones under its prefixes.
const KNOWN_ANNOTATIONS: &[&str] = &[
    crate::autoscaling::CLASS,
    crate::autoscaling::METRIC,
    crate::autoscaling::TARGET,
    crate::autoscaling::TARGET_UTILIZATION,
    crate::autoscaling::WINDOW,
    crate::autoscaling::PANIC_WINDOW_PERCENTAGE,
    crate::autoscaling::PANIC_THRESHOLD_PERCENTAGE,
    crate::autoscaling::SCALE_DOWN_DELAY,
    crate::autoscaling::MIN_SCALE,
    crate::autoscaling::MAX_SCALE,
    crate::autoscaling::INITIAL_SCALE,
    crate::autoscaling::RETENTION,
    annotations::RUNTIME,
    annotations::CONFIG_DIGEST,
    annotations::SINK_BINDING,
    annotations::K_SINK,
    annotations::K_CE_OVERRIDES,
    annotations::READINESS,
    crate::KV_STORES_ANNOTATION,
    crate::ASYNC_RETRIES,
    crate::ASYNC_MAX_AGE,
    crate::ASYNC_ON_SUCCESS,
    crate::ASYNC_ON_FAILURE,
    crate::PROTOCOL,
    crate::LAMBDA_HANDLER,
    crate::LAMBDA_RUNTIME,
    crate::LAMBDA_FUNCTION,
];

/// The known name closest to `unknown` when it is close enough to be a typo.
pub fn did_you_mean<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .min()
        .filter(|(distance, _)| *distance <= 2 || *distance * 4 <= unknown.len())
        .map(|(_, k)| k)
}

fn hint(unknown: &str, known: &[&str]) -> String {
    did_you_mean(unknown, known).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default()
}

struct Checker {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
    /// Unknown fields, reported first among the errors when there are errors: a typo is
    /// usually why a required field is missing.
    unknown_fields: Vec<FieldError>,
}

impl Checker {
    fn new() -> Checker {
        Checker { errors: Vec::new(), warnings: Vec::new(), unknown_fields: Vec::new() }
    }
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
    }
    fn warn_unknown<'a>(&mut self, path: &str, keys: impl Iterator<Item = &'a String>, known: &[&str]) {
        for key in keys {
            let hint = hint(key, known);
            self.warnings.push(format!("{path}.{key}: unknown field, ignored{hint}"));
            self.unknown_fields
                .push(FieldError { field: format!("{path}.{key}"), message: format!("unknown field `{key}`{hint}") });
        }
    }
    fn finish(self) -> Result<Vec<String>, ValidationError> {
        if self.errors.is_empty() {
            return Ok(self.warnings);
        }
        let mut errors = self.unknown_fields;
        errors.extend(self.errors);
        Err(ValidationError { errors })
    }
}

/// Validates a Service as submitted by a user. Returns the warnings (fields serval ignores)
/// or every error found, each with its field path.
pub fn validate_service(service: &Service) -> Result<Vec<String>, ValidationError> {
    let mut c = Checker::new();
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
    c.warn_unknown("spec", service.spec.unknown.keys(), SERVICE_SPEC_FIELDS);

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
    c.warn_unknown("spec.template.spec", spec.unknown.keys(), REVISION_SPEC_FIELDS);
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
    if let Some(t) = spec.response_start_timeout_seconds
        && (t == 0 || t > spec.timeout_seconds())
    {
        let most = spec.timeout_seconds();
        c.error(
            "spec.template.spec.responseStartTimeoutSeconds",
            format!("must be between 1 and timeoutSeconds ({most})"),
        );
    }
    if spec.idle_timeout_seconds.is_some_and(|t| t > MAX_TIMEOUT_SECONDS) {
        c.error("spec.template.spec.idleTimeoutSeconds", format!("must be between 0 and {MAX_TIMEOUT_SECONDS}"));
    }
    check_traffic(&mut c, service);
    if let Some(raw) = service.spec.template.metadata.annotations.get(annotations::PROGRESS_DEADLINE)
        && let Err(m) = parse_duration(raw)
    {
        c.error(format!("spec.template.metadata.annotations[{}]", annotations::PROGRESS_DEADLINE), m);
    }
    c.finish()
}

/// Knative's rules for `spec.traffic`: each target names a revision or `latestRevision: true`
/// (not both), percents are 0–100 and sum to 100, tags are DNS labels and unique.
fn check_traffic(c: &mut Checker, service: &Service) {
    let traffic = &service.spec.traffic;
    if traffic.is_empty() {
        return;
    }
    let mut tags = std::collections::BTreeSet::new();
    // Wide enough for any number of u32 percents: a sum that wrapped could reach 100.
    let mut sum = 0u64;
    for (i, t) in traffic.iter().enumerate() {
        let path = format!("spec.traffic[{i}]");
        match (&t.revision_name, t.latest_revision) {
            (Some(_), Some(true)) => c.error(&path, "give either revisionName or latestRevision: true, not both"),
            (None, Some(true)) => {}
            (Some(name), _) => {
                if let Err(m) = validate_name(name, 63) {
                    c.error(format!("{path}.revisionName"), m);
                }
            }
            (None, _) => c.error(&path, "give revisionName or latestRevision: true"),
        }
        let percent = t.percent.unwrap_or(0);
        if percent > 100 {
            c.error(format!("{path}.percent"), "must be between 0 and 100");
        }
        sum += u64::from(percent);
        if let Some(tag) = &t.tag {
            if let Err(m) = validate_name(tag, 63) {
                c.error(format!("{path}.tag"), m);
            } else if !tags.insert(tag.as_str()) {
                c.error(format!("{path}.tag"), format!("tag {tag:?} is used twice"));
            }
        }
        if t.url.is_some() {
            c.warnings.push(format!("{path}.url: set by serval in status, ignored in spec"));
        }
    }
    if sum != 100 {
        c.error("spec.traffic", format!("percents must sum to 100, not {sum}"));
    }
}

fn check_probe(c: &mut Checker, probe: &crate::Probe, path: &str) {
    match (&probe.http_get, &probe.tcp_socket) {
        (Some(_), Some(_)) => c.error(path, "give one of httpGet or tcpSocket"),
        (None, None) => {
            let handler = probe.unknown.keys().next().map_or("none", String::as_str);
            c.error(path, format!("serval runs httpGet and tcpSocket probes; {handler} is not supported"));
        }
        _ => {}
    }
    if let Some(get) = &probe.http_get {
        if get.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("http")) {
            c.error(format!("{path}.httpGet.scheme"), "only HTTP is supported");
        }
        if get.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            c.error(format!("{path}.httpGet.path"), "must start with /");
        }
    }
    let port_given = probe.http_get.as_ref().and_then(|g| g.port.as_ref()).is_some()
        || probe.tcp_socket.as_ref().and_then(|t| t.port.as_ref()).is_some();
    if port_given {
        c.warnings.push(format!("{path}: probes always target the serving port; the port given is ignored"));
    }
    if probe.period_seconds.is_some_and(|p| p > 0) {
        c.warnings.push(format!(
            "{path}.periodSeconds: instances are probed until ready, not periodically afterwards; ignored"
        ));
    }
    if probe.success_threshold.is_some_and(|t| t != 1) {
        c.error(format!("{path}.successThreshold"), "must be 1");
    }
    c.warn_unknown(path, probe.unknown.keys().filter(|k| *k != "exec" && *k != "grpc"), PROBE_FIELDS);
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
    let unknown_annotation = |key: &&String| {
        (key.starts_with("autoscaling.knative.dev/") || key.starts_with("serval.dev/"))
            && !KNOWN_ANNOTATIONS.contains(&key.as_str())
    };
    for key in template.keys().filter(unknown_annotation) {
        c.warnings.push(format!("{}: unknown annotation, ignored{}", path(key), hint(key, KNOWN_ANNOTATIONS)));
    }
    for key in service.metadata.annotations.keys().filter(|k| k.starts_with("serval.dev/")).filter(unknown_annotation) {
        c.warnings
            .push(format!("metadata.annotations[{key}]: unknown annotation, ignored{}", hint(key, KNOWN_ANNOTATIONS)));
    }
    if let Err(errors) = crate::async_settings(service) {
        c.errors.extend(errors);
    }
    c.errors.extend(crate::check_lambda(service));
    if let Some(raw) = service.annotation(annotations::RUNTIME)
        && RuntimeKind::parse(raw).is_none()
    {
        c.error(path(annotations::RUNTIME), format!("{raw:?} must be one of process, oci, wasm"));
    }
    if let Some(raw) = service.annotation(annotations::READINESS)
        && !matches!(raw, "tcp" | "started")
    {
        c.error(path(annotations::READINESS), format!("{raw:?} must be tcp or started"));
    }
}

/// The variables serval sets in every instance (the Knative runtime contract). A revision
/// cannot set them (the platform's value would silently win), nor any other name starting
/// with `K_`, the contract's prefix.
const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

fn check_key_selector(c: &mut Checker, field: &str, selector: &crate::KeySelector) {
    if selector.name.is_empty() {
        c.error(format!("{field}.name"), "is required");
    }
    if selector.key.is_empty() {
        c.error(format!("{field}.key"), "is required");
    }
}

/// An environment variable name: a C identifier (`[A-Za-z_][A-Za-z0-9_]*`, what shells
/// and `$NAME` expansion accept) that serval does not set itself.
pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    let identifier = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !identifier {
        return Err(format!(
            "{name:?} is not a valid variable name: use letters, digits and '_', and do not start with a digit"
        ));
    }
    if name == "PORT" || name.starts_with("K_") {
        return Err(format!(
            "{name} is reserved: serval sets {} in every instance, and keeps every name starting with K_",
            RESERVED_ENV.join(", ")
        ));
    }
    Ok(())
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
        if let Err(m) = check_env_name(&env.name) {
            c.error(format!("{base}.env[{i}].name"), m);
        }
        let field = format!("{base}.env[{i}].valueFrom");
        if let Some(source) = &env.value_from {
            if !env.value.is_empty() {
                c.error(format!("{base}.env[{i}].value"), "may not be given with valueFrom");
            }
            match (&source.secret_key_ref, &source.config_map_key_ref) {
                (Some(selector), None) => check_key_selector(c, &format!("{field}.secretKeyRef"), selector),
                (None, Some(selector)) => check_key_selector(c, &format!("{field}.configMapKeyRef"), selector),
                _ => {
                    let other =
                        source.unknown.keys().next().map_or(String::new(), |k| format!(" ({k} is not supported)"));
                    c.error(field, format!("needs exactly one of secretKeyRef and configMapKeyRef{other}"));
                }
            }
        }
    }
    for (i, source) in container.env_from.iter().enumerate() {
        let field = format!("{base}.envFrom[{i}]");
        match (&source.secret_ref, &source.config_map_ref) {
            (Some(r), None) | (None, Some(r)) if r.name.is_empty() => {
                let which = if source.secret_ref.is_some() { "secretRef" } else { "configMapRef" };
                c.error(format!("{field}.{which}.name"), "is required");
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => c.error(field.clone(), "needs exactly one of secretRef and configMapRef"),
        }
        if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty())
            && check_env_name(prefix).is_err()
        {
            c.error(format!("{field}.prefix"), "must start a valid variable name (letters, digits, '_')");
        }
    }
    if let Some(resources) = &container.resources {
        for (key, value) in &resources.limits {
            let field = format!("{base}.resources.limits.{key}");
            match key.as_str() {
                "memory" => {
                    if let Err(m) = crate::parse_memory(value) {
                        c.error(field, m);
                    }
                }
                "cpu" => {
                    if let Err(m) = crate::parse_cpu(value) {
                        c.error(field, m);
                    }
                }
                _ => c.warnings.push(format!("{field}: only memory and cpu limits are applied; ignored")),
            }
        }
        if !resources.requests.is_empty() {
            c.warnings.push(format!("{base}.resources.requests: one machine, nothing to schedule; ignored"));
        }
        if runtime == RuntimeKind::Process && !resources.limits.is_empty() {
            c.warnings.push(format!(
                "{base}.resources.limits: the process runtime does not isolate; limits apply with the oci runtime only"
            ));
        }
    }
    if let Some(sc) = &container.security_context {
        if runtime == RuntimeKind::Process && sc.read_only_root_filesystem == Some(true) {
            c.warnings
                .push(format!("{base}.securityContext.readOnlyRootFilesystem: applies with the oci runtime only"));
        }
        c.warn_unknown(&format!("{base}.securityContext"), sc.unknown.keys(), &["readOnlyRootFilesystem"]);
    }
    if let Some(probe) = &container.readiness_probe {
        check_probe(c, probe, &format!("{base}.readinessProbe"));
    }
    if container.ports.len() > 1 {
        c.error(format!("{base}.ports"), "at most one port may be given");
    }
    if let Some(port) = container.ports.first().filter(|p| p.container_port != 0) {
        c.warnings.push(format!(
            "{base}.ports[0].containerPort: instances share the host network, so each gets its own $PORT; {} is ignored",
            port.container_port
        ));
    }
    if let Some(name) = container.ports.first().and_then(|p| p.name.as_deref())
        && name != "http1"
        && name != crate::H2C_PORT_NAME
    {
        c.error(format!("{base}.ports[0].name"), format!("must be http1 or h2c, not {name:?}"));
    }
    if container.serves_h2c() && container.readiness_probe.as_ref().is_some_and(|p| p.http_get.is_some()) {
        c.error(
            format!("{base}.readinessProbe.httpGet"),
            "probes speak HTTP/1.1 and the port is h2c: use tcpSocket (the default)",
        );
    }
    if container.ports.first().is_some_and(|p| p.container_port == 0) {
        c.error(format!("{base}.ports[0].containerPort"), "must be between 1 and 65535");
    }
    for key in container.unknown.keys() {
        if IGNORED_CONTAINER_FIELDS.contains(&key.as_str()) {
            c.warnings.push(format!("{base}.{key}: not supported yet, ignored"));
        } else {
            let known: Vec<&str> = CONTAINER_FIELDS.iter().chain(IGNORED_CONTAINER_FIELDS).copied().collect();
            c.warn_unknown(base, std::iter::once(key), &known);
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
    fn scale_annotations_beyond_the_servers_limits_are_refused() {
        let limits = ScaleLimits { max_instances: 100, max_scale_limit: 0 };
        let mut s = service(cmd("/bin/true"));
        let annotations = &mut s.spec.template.metadata.annotations;
        annotations.insert(crate::autoscaling::MIN_SCALE.into(), "100".into());
        assert_eq!(check_scale_limits(&s, limits), Ok(()));
        let annotations = &mut s.spec.template.metadata.annotations;
        annotations.insert(crate::autoscaling::MIN_SCALE.into(), "1000000".into());
        annotations.insert(crate::autoscaling::INITIAL_SCALE.into(), "101".into());
        let err = check_scale_limits(&s, limits).expect_err("too many");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.template.metadata.annotations[autoscaling.knative.dev/min-scale]",
                "spec.template.metadata.annotations[autoscaling.knative.dev/initial-scale]"
            ]
        );
        let mut s = service(cmd("/bin/true"));
        let limited = ScaleLimits { max_instances: 100, max_scale_limit: 10 };
        assert!(check_scale_limits(&s, limited).is_ok(), "no max-scale: the limit applies at run time");
        s.spec.template.metadata.annotations.insert(crate::autoscaling::MAX_SCALE.into(), "11".into());
        assert!(check_scale_limits(&s, limited).is_err());
    }

    #[test]
    fn response_start_and_idle_timeouts_are_bounded() {
        let mut s = service(cmd("/bin/true"));
        s.spec.template.spec.timeout_seconds = Some(30);
        s.spec.template.spec.response_start_timeout_seconds = Some(10);
        s.spec.template.spec.idle_timeout_seconds = Some(5);
        assert_eq!(validate_service(&s), Ok(vec![]));
        s.spec.template.spec.response_start_timeout_seconds = Some(31);
        s.spec.template.spec.idle_timeout_seconds = Some(MAX_TIMEOUT_SECONDS + 1);
        let err = validate_service(&s).expect_err("invalid");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.template.spec.responseStartTimeoutSeconds", "spec.template.spec.idleTimeoutSeconds"]
        );
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
    fn a_port_named_h2c_makes_instances_speak_http2() {
        let named = |name: &str| {
            let mut c = cmd("x");
            c.ports.push(crate::ContainerPort { name: Some(name.into()), container_port: 8080, protocol: None });
            c
        };
        assert!(named("h2c").serves_h2c());
        assert!(!named("http1").serves_h2c() && !cmd("x").serves_h2c());
        assert!(validate_service(&service(named("h2c"))).is_ok());
        let err = validate_service(&service(named("grpc"))).expect_err("unknown port name");
        assert_eq!(err.errors[0].field, "spec.template.spec.containers[0].ports[0].name");
        let mut probed = named("h2c");
        probed.readiness_probe =
            Some(crate::Probe { http_get: Some(crate::HttpGetAction::default()), ..Default::default() });
        let err = validate_service(&service(probed)).expect_err("HTTP/1.1 probe of an h2c port");
        assert_eq!(err.errors[0].field, "spec.template.spec.containers[0].readinessProbe.httpGet");
    }

    #[test]
    fn env_names_are_identifiers_the_platform_does_not_set() {
        let with_env = |names: &[&str]| {
            let mut c = cmd("x");
            c.env = names.iter().map(|n| crate::EnvVar { name: (*n).into(), ..Default::default() }).collect();
            validate_service(&service(c))
        };
        let valid = ["GREETING", "T_VERSION", "_private", "a1", "x", "port", "K", "KX_1", "k_service", "PORTS"];
        assert_eq!(with_env(&valid), Ok(vec![]));
        let invalid = [
            ("", "\"\" is not a valid variable name"),
            ("1A", "\"1A\" is not a valid variable name"),
            ("A-B", "\"A-B\" is not a valid variable name"),
            ("A.B", "\"A.B\" is not a valid variable name"),
            ("A B", "\"A B\" is not a valid variable name"),
            ("A=B", "\"A=B\" is not a valid variable name"),
            ("A\0", "\"A\\0\" is not a valid variable name"),
            ("NAÏVE", "\"NAÏVE\" is not a valid variable name"),
            ("PORT", "PORT is reserved: serval sets PORT, K_SERVICE, K_REVISION, K_CONFIGURATION in every instance"),
            ("K_SERVICE", "K_SERVICE is reserved"),
            ("K_REVISION", "K_REVISION is reserved"),
            ("K_CONFIGURATION", "K_CONFIGURATION is reserved"),
            ("K_", "K_ is reserved"),
            ("K_OTHER", "K_OTHER is reserved"),
        ];
        for (name, message) in invalid {
            // At index 2, after two valid names: the path names the entry at fault.
            let err = with_env(&["A", "B", name]).expect_err(name);
            assert_eq!(err.errors.len(), 1, "{name:?}: {err}");
            assert_eq!(err.errors[0].field, "spec.template.spec.containers[0].env[2].name", "{name:?}");
            assert!(err.errors[0].message.starts_with(message), "{name:?}: {}", err.errors[0].message);
        }
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
            "spec":{"template":{"spec":{"containers":[{"command":["x"],"livenessProbe":{},"foo":1}]}}}}"#;
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
        // Past Duration::MAX: an error, not a panic.
        let infinite = format!("1{}s", "0".repeat(400));
        for huge in ["99999999999999999999h", "10000000000000000000s10000000000000000000s", &infinite] {
            assert_eq!(parse_duration(huge), Err(format!("{huge:?} is too long a duration")));
        }
        assert_eq!(parse_duration("100000000000h"), Ok(Duration::from_secs(360_000_000_000_000)));
    }

    #[test]
    fn names() {
        assert!(validate_name("a-1", 63).is_ok());
        assert!(validate_name("1a", 63).is_err());
        assert!(validate_name("a-", 63).is_err());
        assert!(validate_name("", 63).is_err());
    }

    #[test]
    fn traffic_rules() {
        let target = |rev: Option<&str>, latest: Option<bool>, pct: u32, tag: Option<&str>| crate::TrafficTarget {
            revision_name: rev.map(Into::into),
            latest_revision: latest,
            percent: Some(pct),
            tag: tag.map(Into::into),
            url: None,
        };
        let mut s = service(cmd("x"));
        s.spec.traffic = vec![target(Some("hello-00001"), None, 90, Some("old")), target(None, Some(true), 10, None)];
        assert!(validate_service(&s).is_ok());
        s.spec.traffic[1].percent = Some(20);
        let err = validate_service(&s).expect_err("sum 110");
        assert_eq!(err.errors[0].field, "spec.traffic");
        s.spec.traffic = vec![target(Some("a-1"), Some(true), 100, None)];
        assert_eq!(validate_service(&s).expect_err("both").errors[0].field, "spec.traffic[0]");
        s.spec.traffic = vec![target(None, Some(true), 50, Some("x")), target(None, Some(true), 50, Some("x"))];
        assert_eq!(validate_service(&s).expect_err("dup tag").errors[0].field, "spec.traffic[1].tag");
        // Percents that would wrap a 32-bit sum around to 100.
        s.spec.traffic = vec![target(None, Some(true), u32::MAX, None), target(None, Some(true), 101, None)];
        let fields: Vec<_> = validate_service(&s).expect_err("huge").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.traffic[0].percent", "spec.traffic[1].percent", "spec.traffic"]);
    }

    #[test]
    fn probes_must_be_http_or_tcp() {
        let json = r#"{"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{"name":"a"},
            "spec":{"template":{"spec":{"containers":[{"command":["x"],"readinessProbe":{"exec":{"command":["true"]}}}]}}}}"#;
        let s: Service = serde_json::from_str(json).expect("decodes");
        let err = validate_service(&s).expect_err("exec unsupported");
        assert!(err.errors[0].message.contains("exec"), "{err}");
        let json = json.replace(r#"{"exec":{"command":["true"]}}"#, r#"{"httpGet":{"path":"/ready","port":8080}}"#);
        let s: Service = serde_json::from_str(&json).expect("decodes");
        let warnings = validate_service(&s).expect("valid");
        assert!(warnings[0].contains("serving port"), "{warnings:?}");
    }

    #[test]
    fn quantities() {
        assert_eq!(crate::parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(crate::parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(crate::parse_memory("500M"), Ok(500_000_000));
        assert_eq!(crate::parse_memory("1024"), Ok(1024));
        assert!(crate::parse_memory("lots").is_err());
        assert!(crate::parse_memory("0").is_err());
        assert_eq!(crate::parse_cpu("500m"), Ok(500));
        assert_eq!(crate::parse_cpu("2"), Ok(2000));
        assert_eq!(crate::parse_cpu("0.25"), Ok(250));
        assert!(crate::parse_cpu("fast").is_err());
    }
}
