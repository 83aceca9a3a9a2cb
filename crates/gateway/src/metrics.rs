//! Data-plane metrics: requests by revision and status code, and request latency.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

/// Identifies a revision in metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RevisionLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
}

impl RevisionLabels {
    pub fn new(namespace: &str, service: &str, revision: &str) -> RevisionLabels {
        RevisionLabels { namespace: namespace.into(), service: service.into(), revision: revision.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    service: String,
    revision: String,
    code: u16,
}

/// Latency buckets from 0.5 ms to about 65 s (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18))
}

/// A family of latency histograms keyed by revision.
pub type LatencyFamily = Family<RevisionLabels, Histogram, fn() -> Histogram>;

pub fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(latency_histogram)
}

/// Counters and histograms the gateway updates on every request.
#[derive(Debug)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics { requests: Family::default(), latency: latency_family() }
    }
}

impl GatewayMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "serval_requests",
            "Requests answered by the gateway, by revision and status code",
            self.requests.clone(),
        );
        registry.register(
            "serval_request_duration_seconds",
            "Time from a request's arrival to its response headers, including any wait for capacity",
            self.latency.clone(),
        );
    }

    /// Handles for one revision, so the hot path neither hashes label strings nor allocates.
    pub fn for_revision(self: &Arc<Self>, labels: &RevisionLabels) -> RevisionMetrics {
        RevisionMetrics {
            family: self.clone(),
            labels: labels.clone(),
            latency: self.latency.get_or_create(labels).clone(),
            by_code: Mutex::new(Vec::new()),
        }
    }

    /// Records one answered request (`revision` empty when none was chosen).
    pub fn observe(&self, labels: &RevisionLabels, code: u16, elapsed: Duration) {
        let request = RequestLabels {
            namespace: labels.namespace.clone(),
            service: labels.service.clone(),
            revision: labels.revision.clone(),
            code,
        };
        self.requests.get_or_create(&request).inc();
        self.latency.get_or_create(labels).observe(elapsed.as_secs_f64());
    }
}

/// One revision's metric handles.
#[derive(Debug)]
pub struct RevisionMetrics {
    family: Arc<GatewayMetrics>,
    labels: RevisionLabels,
    latency: Histogram,
    /// Counters by status code, created on first use (a revision answers few codes).
    by_code: Mutex<Vec<(u16, Counter)>>,
}

impl RevisionMetrics {
    pub fn observe(&self, code: u16, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
        let mut codes = self.by_code.lock().unwrap_or_else(|p| p.into_inner());
        match codes.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let request = RequestLabels {
                    namespace: self.labels.namespace.clone(),
                    service: self.labels.service.clone(),
                    revision: self.labels.revision.clone(),
                    code,
                };
                let counter = self.family.requests.get_or_create(&request).clone();
                counter.inc();
                codes.push((code, counter));
            }
        }
    }
}
