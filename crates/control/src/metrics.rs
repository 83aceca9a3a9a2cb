//! Prometheus metrics of the platform, served at `/metrics` on the API port: the gateway's
//! request counters and latencies, cold starts, and per-revision gauges read at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serval_gateway::{GatewayMetrics, LatencyFamily, RevisionLabels, latency_family};

use crate::controller::Controller;

/// Counters and histograms updated as things happen.
#[derive(Debug)]
pub struct PlatformMetrics {
    pub gateway: Arc<GatewayMetrics>,
    cold_starts: Family<RevisionLabels, Counter>,
    cold_start_seconds: LatencyFamily,
}

impl Default for PlatformMetrics {
    fn default() -> Self {
        PlatformMetrics {
            gateway: Arc::default(),
            cold_starts: Family::default(),
            cold_start_seconds: latency_family(),
        }
    }
}

impl PlatformMetrics {
    /// An instance started while its revision had none ready; `took` is start to ready.
    pub fn cold_start(&self, labels: &RevisionLabels, took: Duration) {
        self.cold_starts.get_or_create(labels).inc();
        self.cold_start_seconds.get_or_create(labels).observe(took.as_secs_f64());
    }

    /// The registry to scrape: these metrics plus live gauges of the controller's revisions.
    pub fn registry(&self, controller: Weak<Controller>) -> Registry {
        let mut registry = Registry::default();
        self.gateway.register(&mut registry);
        registry.register(
            "serval_cold_starts",
            "Instances started while their revision had none ready",
            self.cold_starts.clone(),
        );
        registry.register(
            "serval_cold_start_duration_seconds",
            "Time from starting an instance at zero to its first accepted connection",
            self.cold_start_seconds.clone(),
        );
        registry.register_collector(Box::new(RevisionGauges(controller)));
        registry
    }
}

/// Renders the registry in the OpenMetrics text format (which Prometheus reads).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        let _ = writeln!(text, "# encoding failed");
    }
    text
}

/// A gauge: name, help, and how to read it from a revision's counts.
type GaugeOf<T> = (&'static str, &'static str, fn(&serval_model::InstanceCounts) -> T);

/// Instances, in-flight requests, queue depth and autoscaler state per serving revision.
struct RevisionGauges(Weak<Controller>);

impl std::fmt::Debug for RevisionGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevisionGauges")
    }
}

impl Collector for RevisionGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(controller) = self.0.upgrade() else { return Ok(()) };
        let revisions = controller.runner_counts();
        let int_gauges: [GaugeOf<i64>; 6] = [
            ("serval_instances_desired", "Instances the autoscaler wants", |c| i64::from(c.desired)),
            ("serval_instances_ready", "Instances serving requests", |c| i64::from(c.ready)),
            ("serval_instances_starting", "Instances being started", |c| i64::from(c.starting)),
            ("serval_requests_in_flight", "Requests being served by instances", |c| i64::from(c.in_flight)),
            ("serval_queue_depth", "Requests waiting in the gateway for capacity", |c| i64::from(c.queued)),
            ("serval_autoscaler_panic", "1 while the autoscaler is in panic mode", |c| i64::from(c.panic)),
        ];
        for (name, help, value) in int_gauges {
            let family = Family::<RevisionLabels, Gauge>::default();
            for (labels, counts) in &revisions {
                family.get_or_create(labels).set(value(counts));
            }
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        let float_gauges: [GaugeOf<f64>; 2] = [
            ("serval_observed_concurrency", "Average requests in the system over the stable window", |c| {
                c.observed_concurrency
            }),
            ("serval_observed_rps", "Requests per second over the stable window", |c| c.observed_rps),
        ];
        for (name, help, value) in float_gauges {
            let family = Family::<RevisionLabels, Gauge<f64, AtomicU64>>::default();
            for (labels, counts) in &revisions {
                family.get_or_create(labels).set(value(counts));
            }
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        Ok(())
    }
}
