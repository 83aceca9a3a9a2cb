//! The Knative Pod Autoscaler decision, per revision.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serval_model::{AutoscalingAnnotations, ScalingMetric};

use crate::{Sample, TimeBuckets};

/// Server-wide defaults (Knative's `config-autoscaler`).
#[derive(Debug, Clone)]
pub struct ClusterDefaults {
    pub stable_window: Duration,
    pub scale_to_zero_grace: Duration,
    pub target_utilization: f64,
    pub container_concurrency_target: f64,
    pub rps_target: f64,
    pub panic_window_percentage: f64,
    pub panic_threshold_percentage: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    /// How often the autoscaler decides without an event.
    pub tick: Duration,
}

impl Default for ClusterDefaults {
    fn default() -> Self {
        ClusterDefaults {
            stable_window: Duration::from_secs(60),
            scale_to_zero_grace: Duration::from_secs(30),
            target_utilization: 0.7,
            container_concurrency_target: 100.0,
            rps_target: 200.0,
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            tick: Duration::from_secs(2),
        }
    }
}

/// Everything that parameterises one revision's autoscaler.
#[derive(Debug, Clone)]
pub struct KpaSpec {
    pub metric: ScalingMetric,
    /// Per-instance target of the metric after utilization (Knative's `TargetValue`).
    pub target_value: f64,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Ratio of desired to ready instances that enters panic mode (2.0 = 200 %).
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub scale_down_delay: Duration,
    pub min_scale: u32,
    /// 0 = unbounded.
    pub max_scale: u32,
    pub initial_scale: u32,
    pub scale_to_zero_grace: Duration,
    pub retention: Duration,
}

impl KpaSpec {
    /// Knative's resolution of annotations over defaults: the concurrency target is capped by
    /// `containerConcurrency` when that is set.
    pub fn new(a: &AutoscalingAnnotations, d: &ClusterDefaults, container_concurrency: u32) -> KpaSpec {
        let metric = a.metric.unwrap_or(ScalingMetric::Concurrency);
        let mut target = a.target.unwrap_or(match metric {
            ScalingMetric::Concurrency => d.container_concurrency_target,
            ScalingMetric::Rps => d.rps_target,
        });
        if metric == ScalingMetric::Concurrency && container_concurrency > 0 {
            target = target.min(f64::from(container_concurrency));
        }
        let utilization = a.target_utilization_percentage.map_or(d.target_utilization, |p| p / 100.0);
        let stable_window = a.window.unwrap_or(d.stable_window);
        let panic_pct = a.panic_window_percentage.unwrap_or(d.panic_window_percentage);
        KpaSpec {
            metric,
            target_value: (target * utilization).max(0.01),
            stable_window,
            panic_window: stable_window.mul_f64(panic_pct / 100.0),
            panic_threshold: a.panic_threshold_percentage.unwrap_or(d.panic_threshold_percentage) / 100.0,
            max_scale_up_rate: d.max_scale_up_rate,
            max_scale_down_rate: d.max_scale_down_rate,
            scale_down_delay: a.scale_down_delay.unwrap_or(Duration::ZERO),
            min_scale: a.min_scale.unwrap_or(0),
            max_scale: a.max_scale.unwrap_or(0),
            // serval starts revisions at zero (a deploy runs nothing until called) unless
            // the annotation asks for more.
            initial_scale: a.initial_scale.unwrap_or(0),
            scale_to_zero_grace: d.scale_to_zero_grace,
            retention: a.retention.unwrap_or(Duration::ZERO),
        }
    }
}

/// One decision and what it was based on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub panic: bool,
    /// Observed metric over the stable and panic windows.
    pub stable_value: f64,
    pub panic_value: f64,
    pub observed_concurrency: f64,
    pub observed_rps: f64,
}

/// The state of one revision's KPA.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: KpaSpec,
    buckets: TimeBuckets,
    panic_since: Option<Instant>,
    max_panic_pods: u32,
    /// Recent desired counts, for scale-down delay.
    recent: VecDeque<(Instant, u32)>,
    /// When the decider first wanted zero in the current run of zeros.
    zero_since: Option<Instant>,
    last_activity: Option<Instant>,
    reached_initial_scale: bool,
}

impl Autoscaler {
    pub fn new(spec: KpaSpec, now: Instant) -> Autoscaler {
        // Buckets fine enough for the panic window (Knative: 1 s; short test windows need less).
        let granularity = spec.panic_window.clamp(Duration::from_millis(10), Duration::from_secs(1));
        let buckets = TimeBuckets::new(now, granularity, spec.stable_window);
        let reached_initial_scale = spec.initial_scale == 0;
        Autoscaler {
            spec,
            buckets,
            panic_since: None,
            max_panic_pods: 0,
            recent: VecDeque::new(),
            zero_since: None,
            last_activity: None,
            reached_initial_scale,
        }
    }

    pub fn spec(&self) -> &KpaSpec {
        &self.spec
    }

    /// Feeds what the gateway measured.
    pub fn record(&mut self, sample: Sample) {
        if sample.area > 0.0 || sample.requests > 0 {
            self.last_activity = Some(sample.end);
        }
        self.buckets.record(sample);
    }

    /// Desired instances at `now` with `ready` instances serving, following Knative's KPA:
    /// `ceil(observed / target)` over the stable window, or the panic window's maximum while
    /// in panic, bounded by the scale-up/down rates, held up by scale-down delay, kept at one
    /// through the scale-to-zero grace period and retention, clamped to min/max scale.
    pub fn decide(&mut self, now: Instant, ready: u32) -> Decision {
        let s = &self.spec;
        let (stable_concurrency, stable_rps) = self.buckets.average(now, s.stable_window);
        let (panic_concurrency, panic_rps) = self.buckets.average(now, s.panic_window);
        let (stable_value, panic_value) = match s.metric {
            ScalingMetric::Concurrency => (stable_concurrency, panic_concurrency),
            ScalingMetric::Rps => (stable_rps, panic_rps),
        };
        let ready_f = f64::from(ready.max(1));
        let max_up = (s.max_scale_up_rate * ready_f).ceil();
        let max_down = (ready_f / s.max_scale_down_rate).floor();
        let dspc = (stable_value / s.target_value).ceil();
        let dppc = (panic_value / s.target_value).ceil();
        let stable_pods = dspc.clamp(max_down, max_up) as u32;
        let panic_pods = dppc.clamp(max_down, max_up) as u32;

        let over_threshold = dppc / ready_f >= s.panic_threshold;
        if over_threshold {
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|t| now.saturating_duration_since(t) >= s.stable_window) {
            self.panic_since = None;
            self.max_panic_pods = 0;
        }
        let mut desired = stable_pods;
        if self.panic_since.is_some() {
            // In panic mode the count never goes down.
            self.max_panic_pods = self.max_panic_pods.max(panic_pods).max(ready);
            desired = self.max_panic_pods;
        }

        if !s.scale_down_delay.is_zero() {
            self.recent.push_back((now, desired));
            while self.recent.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > s.scale_down_delay) {
                self.recent.pop_front();
            }
            desired = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        }

        if desired == 0 {
            let since = *self.zero_since.get_or_insert(now);
            let in_grace = ready > 0 && now.saturating_duration_since(since) < s.scale_to_zero_grace;
            let retained = self.last_activity.is_some_and(|t| now.saturating_duration_since(t) < s.retention);
            if in_grace || (ready > 0 && retained) {
                desired = 1;
            }
        } else {
            self.zero_since = None;
        }

        if ready >= s.initial_scale {
            self.reached_initial_scale = true;
        }
        if !self.reached_initial_scale {
            desired = desired.max(s.initial_scale);
        }
        desired = desired.max(s.min_scale);
        if s.max_scale > 0 {
            desired = desired.min(s.max_scale);
        }
        Decision {
            desired,
            panic: self.panic_since.is_some(),
            stable_value,
            panic_value,
            observed_concurrency: stable_concurrency,
            observed_rps: stable_rps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A simulated revision: a clock, the autoscaler, and instances that appear as decided.
    struct Sim {
        t0: Instant,
        now: Instant,
        ready: u32,
        kpa: Autoscaler,
    }

    impl Sim {
        fn new(a: AutoscalingAnnotations, cc: u32) -> Sim {
            let t0 = Instant::now();
            let spec = KpaSpec::new(&a, &ClusterDefaults::default(), cc);
            Sim { t0, now: t0, ready: 0, kpa: Autoscaler::new(spec, t0) }
        }

        /// Runs `seconds` of load at `concurrency` (and `rps`), deciding every 2 s tick and
        /// letting instances become ready at once. Returns the decisions.
        fn run(&mut self, seconds: u64, concurrency: f64, rps: u64) -> Vec<Decision> {
            let mut out = Vec::new();
            for _ in 0..seconds {
                let start = self.now;
                self.now += SEC;
                self.kpa.record(Sample { start, end: self.now, area: concurrency, requests: rps });
                if (self.now - self.t0).as_secs().is_multiple_of(2) {
                    let d = self.kpa.decide(self.now, self.ready);
                    self.ready = d.desired;
                    out.push(d);
                }
            }
            out
        }
    }

    fn last(d: &[Decision]) -> Decision {
        *d.last().expect("a decision")
    }

    #[test]
    fn defaults_follow_knative() {
        let spec = KpaSpec::new(&AutoscalingAnnotations::default(), &ClusterDefaults::default(), 0);
        assert_eq!(spec.target_value, 70.0, "100 × 70 %");
        assert_eq!(spec.stable_window, Duration::from_secs(60));
        assert_eq!(spec.panic_window, Duration::from_secs(6));
        assert_eq!(spec.panic_threshold, 2.0);
        let capped = KpaSpec::new(&AutoscalingAnnotations::default(), &ClusterDefaults::default(), 10);
        assert_eq!(capped.target_value, 7.0, "containerConcurrency caps the target");
    }

    #[test]
    fn steady_load_settles_at_ceil_of_load_over_target() {
        let mut sim = Sim::new(AutoscalingAnnotations::default(), 10); // target 7 per instance
        let d = sim.run(120, 50.0, 0);
        assert_eq!(last(&d).desired, 8, "ceil(50 / 7)");
        assert!(!last(&d).panic);
    }

    #[test]
    fn ten_x_burst_enters_panic_and_scales_at_once() {
        let mut sim = Sim::new(AutoscalingAnnotations::default(), 10);
        sim.run(120, 14.0, 0);
        assert_eq!(sim.ready, 2);
        let d = sim.run(2, 140.0, 0);
        assert!(last(&d).panic, "within one tick, 10× the load is over the 200 % panic threshold");
        assert!(last(&d).desired >= 6, "panic window (6 s) reacts at once: {:?}", last(&d));
        let d = sim.run(4, 140.0, 0);
        assert_eq!(last(&d).desired, 20, "panic window full of the burst: ceil(140 / 7)");
    }

    #[test]
    fn panic_holds_the_maximum_and_exits_after_a_stable_window() {
        let mut sim = Sim::new(AutoscalingAnnotations::default(), 10);
        sim.run(120, 14.0, 0);
        sim.run(10, 140.0, 0);
        let peak = sim.ready;
        // The burst ends: still in panic, the count does not drop.
        let d = sim.run(30, 14.0, 0);
        assert!(d.iter().all(|d| d.panic && d.desired == peak), "{d:?}");
        // A full stable window after the last over-threshold tick, panic ends and the
        // count steps down at most by half per decision.
        let d = sim.run(40, 14.0, 0);
        let exit = d.iter().position(|d| !d.panic).expect("panic ended");
        assert!(d[exit].desired >= peak / 2);
        let d = sim.run(60, 14.0, 0);
        assert_eq!(last(&d).desired, 2);
    }

    #[test]
    fn scale_down_is_rate_limited_to_half_per_decision() {
        let mut sim = Sim::new(AutoscalingAnnotations::default(), 1); // target 0.7
        sim.run(120, 14.0, 0);
        assert_eq!(sim.ready, 20);
        let d = sim.run(130, 0.0, 0);
        let counts: Vec<u32> = d.iter().map(|d| d.desired).collect();
        for pair in counts.windows(2) {
            assert!(pair[1] >= pair[0] / 2, "never below half: {counts:?}");
        }
        assert_eq!(*counts.last().expect("decisions"), 0);
    }

    #[test]
    fn scale_down_delay_holds_the_count() {
        let first_drop = |delay: Option<Duration>| {
            let a = AutoscalingAnnotations { scale_down_delay: delay, ..Default::default() };
            let mut sim = Sim::new(a, 10);
            sim.run(120, 70.0, 0);
            assert_eq!(sim.ready, 10);
            let d = sim.run(120, 0.0, 0);
            (d.iter().position(|d| d.desired < 10).expect("eventually drops") + 1) * 2
        };
        assert!(first_drop(None) <= 8, "without delay the stable window drops it within seconds");
        let delayed = first_drop(Some(Duration::from_secs(30)));
        assert!((30..=40).contains(&delayed), "held for the 30 s delay, dropped at {delayed} s");
    }

    #[test]
    fn zero_only_after_the_grace_period() {
        let mut sim = Sim::new(AutoscalingAnnotations::default(), 0);
        sim.run(60, 1.0, 10);
        assert_eq!(sim.ready, 1);
        // No traffic: after the stable window the decider wants zero, then 30 s of grace.
        let d = sim.run(200, 0.0, 0);
        let zero_at = d.iter().position(|d| d.desired == 0).expect("reaches zero") as u64 * 2 + 2;
        assert!((90..=94).contains(&zero_at), "60 s window + 30 s grace, got {zero_at} s");
    }

    #[test]
    fn retention_keeps_the_last_instance() {
        let a = AutoscalingAnnotations { retention: Some(Duration::from_secs(300)), ..Default::default() };
        let mut sim = Sim::new(a, 0);
        sim.run(60, 1.0, 10);
        let d = sim.run(200, 0.0, 0);
        assert!(d.iter().all(|d| d.desired == 1), "kept for 5 minutes after the last request");
        let d = sim.run(200, 0.0, 0);
        assert_eq!(last(&d).desired, 0);
    }

    #[test]
    fn max_scale_caps_and_min_scale_floors() {
        let a = AutoscalingAnnotations { max_scale: Some(3), ..Default::default() };
        let mut sim = Sim::new(a, 1);
        let d = sim.run(20, 100.0, 0);
        assert_eq!(last(&d).desired, 3);
        let a = AutoscalingAnnotations { min_scale: Some(2), ..Default::default() };
        let mut sim = Sim::new(a, 0);
        let d = sim.run(200, 0.0, 0);
        assert!(d.iter().all(|d| d.desired == 2));
    }

    #[test]
    fn initial_scale_holds_until_reached() {
        let a = AutoscalingAnnotations { initial_scale: Some(3), ..Default::default() };
        let mut sim = Sim::new(a, 0);
        assert_eq!(sim.kpa.decide(sim.now, 0).desired, 3);
        assert_eq!(sim.kpa.decide(sim.now, 3).desired, 1, "reached: normal scaling, half per step, grace keeps one");
        let d = sim.run(200, 0.0, 0);
        assert_eq!(last(&d).desired, 0);
    }

    #[test]
    fn rps_metric_uses_requests_per_second() {
        let a = AutoscalingAnnotations { metric: Some(ScalingMetric::Rps), target: Some(100.0), ..Default::default() };
        let mut sim = Sim::new(a, 0);
        let d = sim.run(120, 1.0, 700);
        assert_eq!(last(&d).desired, 10, "ceil(700 / (100 × 0.7))");
    }
}
