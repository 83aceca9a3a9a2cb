use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{Condition, ObjectMeta, TemplateMeta};

pub const SERVING_API_VERSION: &str = "serving.knative.dev/v1";

/// Annotation names serval reads (Knative's where Knative has one).
pub mod annotations {
    pub const RUNTIME: &str = "serval.dev/runtime";
    /// A digest of the environment a template resolves from Secrets and ConfigMaps (set by
    /// the server: a changed value makes a new revision).
    pub const CONFIG_DIGEST: &str = "serval.dev/config-digest";
    /// Label on a Revision naming its Service.
    pub const SERVICE_LABEL: &str = "serving.knative.dev/service";
    /// How long a new revision may take to become ready (Knative's annotation).
    pub const PROGRESS_DEADLINE: &str = "serving.knative.dev/progress-deadline";
    pub const CONFIGURATION_LABEL: &str = "serving.knative.dev/configuration";
    pub const CONFIGURATION_GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";
    /// The SinkBinding whose sink a template's instances get (set by the server).
    pub const SINK_BINDING: &str = "serval.dev/sink-binding";
    /// `K_SINK` of the template's instances: the bound sink's URL (set by the server).
    pub const K_SINK: &str = "serval.dev/k-sink";
    /// `K_CE_OVERRIDES` of the template's instances (set by the server).
    pub const K_CE_OVERRIDES: &str = "serval.dev/k-ce-overrides";
    /// When an instance is ready: `tcp` (the default: its port accepts a connection, or its
    /// readinessProbe passes) or `started` (at once: a worker that serves no requests, such
    /// as a ContainerSource's).
    pub const READINESS: &str = "serval.dev/readiness";
}

fn default_service_kind() -> String {
    "Service".into()
}
fn default_revision_kind() -> String {
    "Revision".into()
}
fn default_api_version() -> String {
    SERVING_API_VERSION.into()
}

/// A `serving.knative.dev/v1 Service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_service_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default)]
    pub status: ServiceStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub template: RevisionTemplate,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// Fields serval does not know; reported back as warnings, never silently dropped.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: RevisionSpec,
}

/// What runs: the immutable part of a Revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Hard limit of concurrent requests per instance; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    /// The longest a request may take, from its arrival to the last byte of its response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The longest wait for the first byte of the response (default: `timeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<u64>,
    /// The longest a request may go without a byte either way; 0 (the default): no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl ServiceSpec {
    /// `spec.traffic`, or Knative's default when it is empty: 100 % to the latest ready revision.
    pub fn effective_traffic(&self) -> Vec<TrafficTarget> {
        if self.traffic.is_empty() {
            vec![TrafficTarget { latest_revision: Some(true), percent: Some(100), ..Default::default() }]
        } else {
            self.traffic.clone()
        }
    }
}

impl RevisionSpec {
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;

    pub fn timeout_seconds(&self) -> u64 {
        self.timeout_seconds.unwrap_or(Self::DEFAULT_TIMEOUT_SECONDS)
    }
    /// Never beyond the whole request's timeout.
    pub fn response_start_timeout_seconds(&self) -> u64 {
        self.response_start_timeout_seconds.unwrap_or(u64::MAX).min(self.timeout_seconds())
    }
    /// `None`: no idle limit.
    pub fn idle_timeout_seconds(&self) -> Option<u64> {
        self.idle_timeout_seconds.filter(|s| *s > 0)
    }
    pub fn container_concurrency(&self) -> u32 {
        self.container_concurrency.unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<crate::EnvFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `resources.limits` / `requests` with Kubernetes quantities (`64Mi`, `500m`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Parses a Kubernetes memory quantity into bytes: `64Mi`, `1Gi`, `128M`, `1e6`, `1024`.
pub fn parse_memory(q: &str) -> Result<i64, String> {
    let bad = || format!("{q:?} is not a memory quantity (examples: 64Mi, 1Gi, 500M)");
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 1.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// Parses a Kubernetes CPU quantity into millicores: `500m`, `1`, `0.5`.
pub fn parse_cpu(q: &str) -> Result<u64, String> {
    let bad = || format!("{q:?} is not a CPU quantity (examples: 500m, 1, 0.25)");
    let millis = match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map_err(|_| bad())?,
        None => q.parse::<f64>().map_err(|_| bad())? * 1000.0,
    };
    if !millis.is_finite() || millis < 1.0 {
        return Err(bad());
    }
    Ok(millis as u64)
}

/// A Kubernetes probe; serval runs `httpGet` and `tcpSocket` against the serving port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// 0 (Knative's default): probe aggressively until ready, then stop probing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpSocketAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<crate::EnvVarSource>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// The port name that makes instances speak HTTP/2 without TLS (Knative's convention; the
/// other accepted name is `http1`, the default).
pub const H2C_PORT_NAME: &str = "h2c";

impl Container {
    /// Instances serve HTTP/2 with prior knowledge (gRPC) rather than HTTP/1.1: the port is
    /// named `h2c`.
    pub fn serves_h2c(&self) -> bool {
        self.ports.first().and_then(|p| p.name.as_deref()) == Some(H2C_PORT_NAME)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// One entry of `spec.traffic` / `status.traffic`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Knative's addressable: here the path route `http://<gateway>/f/<ns>/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<crate::Addressable>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_created_revision_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_ready_revision_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// How many templates the Service has had: the number of its latest revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub configuration_generation: u64,
    /// Live instance counts of the serving revision (serval extension, filled on read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceCounts>,
}

/// Live view of a revision's instances (serval extension to Knative's status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounts {
    pub desired: u32,
    pub ready: u32,
    pub starting: u32,
    pub in_flight: u32,
    pub queued: u32,
    /// Cold starts since the server started.
    pub cold_starts: u64,
    /// Duration of the last cold start in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cold_start_ms: Option<f64>,
    /// The autoscaler is in panic mode.
    #[serde(default)]
    pub panic: bool,
    /// Average requests in the system (in flight + queued) over the stable window.
    #[serde(default)]
    pub observed_concurrency: f64,
    /// Requests per second over the stable window.
    #[serde(default)]
    pub observed_rps: f64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A `serving.knative.dev/v1 Revision`: an immutable snapshot of a Service's template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_revision_kind")]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: RevisionSpec,
    #[serde(default)]
    pub status: RevisionStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceCounts>,
}

/// Which runtime runs a revision's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Process,
    Oci,
    Wasm,
}

impl RuntimeKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(Self::Process),
            "oci" => Some(Self::Oci),
            "wasm" => Some(Self::Wasm),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Oci => "oci",
            Self::Wasm => "wasm",
        }
    }
}

/// `<service>-00001`, `<service>-00002`, … (Knative's generated revision names).
pub fn revision_name(service: &str, number: u64) -> String {
    format!("{service}-{number:05}")
}

impl Service {
    pub fn new(namespace: &str, name: &str, template: RevisionTemplate) -> Self {
        Service {
            api_version: default_api_version(),
            kind: default_service_kind(),
            metadata: ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() },
            spec: ServiceSpec { template, ..Default::default() },
            status: ServiceStatus::default(),
        }
    }

    /// Knative's `Configuration` view of this Service (read-only): its template and the
    /// revisions it produced.
    pub fn configuration_view(&self) -> Value {
        let ready = self.condition_as_ready("ConfigurationsReady");
        serde_json::json!({
            "apiVersion": SERVING_API_VERSION,
            "kind": "Configuration",
            "metadata": self.child_metadata(self.status.configuration_generation),
            "spec": { "template": self.spec.template },
            "status": {
                "observedGeneration": self.status.configuration_generation,
                "latestCreatedRevisionName": self.status.latest_created_revision_name,
                "latestReadyRevisionName": self.status.latest_ready_revision_name,
                "conditions": ready.into_iter().collect::<Vec<_>>(),
            }
        })
    }

    /// Knative's `Route` view of this Service (read-only): its traffic and URLs.
    pub fn route_view(&self) -> Value {
        let ready = self.condition_as_ready("RoutesReady");
        let spec_traffic = self.spec.effective_traffic();
        serde_json::json!({
            "apiVersion": SERVING_API_VERSION,
            "kind": "Route",
            "metadata": self.child_metadata(self.metadata.generation),
            "spec": { "traffic": spec_traffic },
            "status": {
                "observedGeneration": self.status.observed_generation,
                "url": self.status.url,
                "address": { "url": self.status.url },
                "traffic": self.status.traffic,
                "conditions": ready.into_iter().collect::<Vec<_>>(),
            }
        })
    }

    /// One of the Service's conditions renamed `Ready`, as the child view's own condition.
    fn condition_as_ready(&self, kind: &str) -> Option<Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind).map(|c| Condition { kind: "Ready".into(), ..c.clone() })
    }

    fn child_metadata(&self, generation: u64) -> Value {
        serde_json::json!({
            "name": self.metadata.name,
            "namespace": self.metadata.namespace,
            "generation": generation,
            "creationTimestamp": self.metadata.creation_timestamp,
            "labels": { annotations::SERVICE_LABEL: self.metadata.name },
        })
    }

    /// The annotation value from the template, falling back to the Service's own metadata.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        annotation_of(&self.spec.template.metadata.annotations, &self.metadata.annotations, key)
    }
}

fn annotation_of<'a>(
    first: &'a BTreeMap<String, String>,
    second: &'a BTreeMap<String, String>,
    key: &str,
) -> Option<&'a str> {
    first.get(key).or_else(|| second.get(key)).map(String::as_str)
}

impl Revision {
    /// Builds the revision a Service's current template produces.
    /// `number` is the configuration generation: how many templates the Service has had.
    pub fn from_service(service: &Service, name: String, number: u64, created: &str) -> Revision {
        let mut labels = service.spec.template.metadata.labels.clone();
        labels.insert(annotations::SERVICE_LABEL.into(), service.metadata.name.clone());
        labels.insert(annotations::CONFIGURATION_LABEL.into(), service.metadata.name.clone());
        labels.insert(annotations::CONFIGURATION_GENERATION_LABEL.into(), number.to_string());
        // Service-level serval annotations apply to every revision unless the template overrides.
        let mut revision_annotations: BTreeMap<String, String> = service
            .metadata
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with("serval.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        revision_annotations.extend(service.spec.template.metadata.annotations.clone());
        Revision {
            api_version: default_api_version(),
            kind: default_revision_kind(),
            metadata: ObjectMeta {
                name,
                namespace: service.metadata.namespace.clone(),
                uid: String::new(),
                resource_version: String::new(),
                generation: 1,
                creation_timestamp: created.into(),
                labels,
                annotations: revision_annotations,
                owner_references: Vec::new(),
            },
            spec: service.spec.template.spec.clone(),
            status: RevisionStatus::default(),
        }
    }

    pub fn service_name(&self) -> &str {
        self.metadata.labels.get(annotations::SERVICE_LABEL).map(String::as_str).unwrap_or_default()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }

    /// The runtime this revision runs on: the `serval.dev/runtime` annotation when present,
    /// otherwise `oci` for a container with an image and `process` for a plain command.
    pub fn runtime_kind(&self) -> RuntimeKind {
        if let Some(kind) = self.annotation(annotations::RUNTIME).and_then(RuntimeKind::parse) {
            return kind;
        }
        match self.spec.containers.first() {
            Some(c) if c.image.is_some() => RuntimeKind::Oci,
            _ => RuntimeKind::Process,
        }
    }

    /// The revision's autoscaling annotations (validated when the Service was accepted;
    /// anything unparsable here falls back to the defaults).
    pub fn autoscaling(&self) -> crate::AutoscalingAnnotations {
        crate::parse_autoscaling(&self.metadata.annotations, "metadata.annotations").unwrap_or_default()
    }
}
