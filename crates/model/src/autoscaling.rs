//! Knative's `autoscaling.knative.dev/*` annotations: parsing and validation with Knative's
//! ranges. Absent annotations stay `None`; the server's defaults fill them in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::validate::{FieldError, parse_duration};

pub const CLASS: &str = "autoscaling.knative.dev/class";
pub const METRIC: &str = "autoscaling.knative.dev/metric";
pub const TARGET: &str = "autoscaling.knative.dev/target";
pub const TARGET_UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
pub const WINDOW: &str = "autoscaling.knative.dev/window";
pub const PANIC_WINDOW_PERCENTAGE: &str = "autoscaling.knative.dev/panic-window-percentage";
pub const PANIC_THRESHOLD_PERCENTAGE: &str = "autoscaling.knative.dev/panic-threshold-percentage";
pub const SCALE_DOWN_DELAY: &str = "autoscaling.knative.dev/scale-down-delay";
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
pub const INITIAL_SCALE: &str = "autoscaling.knative.dev/initial-scale";
/// How long the last instance is kept after traffic stops.
pub const RETENTION: &str = "autoscaling.knative.dev/scale-to-zero-pod-retention-period";

/// The only autoscaler class serval implements.
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";

/// What the autoscaler measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalingMetric {
    Concurrency,
    Rps,
}

/// The autoscaling annotations of a revision, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoscalingAnnotations {
    pub metric: Option<ScalingMetric>,
    pub target: Option<f64>,
    pub target_utilization_percentage: Option<f64>,
    pub window: Option<Duration>,
    pub panic_window_percentage: Option<f64>,
    pub panic_threshold_percentage: Option<f64>,
    pub scale_down_delay: Option<Duration>,
    pub min_scale: Option<u32>,
    pub max_scale: Option<u32>,
    pub initial_scale: Option<u32>,
    pub retention: Option<Duration>,
}

struct Parser<'a> {
    annotations: &'a BTreeMap<String, String>,
    prefix: &'a str,
    errors: Vec<FieldError>,
}

impl Parser<'_> {
    fn fail(&mut self, key: &str, message: String) {
        self.errors.push(FieldError { field: format!("{}[{key}]", self.prefix), message });
    }

    fn number(&mut self, key: &str, min: f64, max: f64) -> Option<f64> {
        let raw = self.annotations.get(key)?;
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && (min..=max).contains(&v) => Some(v),
            _ => {
                self.fail(key, format!("{raw:?} must be a number between {min} and {max}"));
                None
            }
        }
    }

    fn count(&mut self, key: &str) -> Option<u32> {
        let raw = self.annotations.get(key)?;
        match raw.parse::<u32>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail(key, format!("{raw:?} must be a non-negative integer"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, min: Duration, max: Duration) -> Option<Duration> {
        let raw = self.annotations.get(key)?;
        match parse_duration(raw) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                self.fail(key, format!("{raw:?} must be between {min:?} and {max:?}"));
                None
            }
            Err(m) => {
                self.fail(key, m);
                None
            }
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Parses and validates the annotations (Knative's ranges: window 6s–1h, target ≥ 0.01,
/// utilization 1–100 %, panic window 1–100 %, panic threshold 110–1000 %, scale-down delay
/// 0–1h, min ≤ max). `prefix` is the field path of the annotation map, for errors.
pub fn parse_autoscaling(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
) -> Result<AutoscalingAnnotations, Vec<FieldError>> {
    let mut p = Parser { annotations, prefix, errors: Vec::new() };
    if let Some(class) = annotations.get(CLASS).filter(|c| c.as_str() != KPA_CLASS) {
        p.fail(CLASS, format!("{class:?} is not supported; serval implements {KPA_CLASS}"));
    }
    let metric = match annotations.get(METRIC).map(String::as_str) {
        None => None,
        Some("concurrency") => Some(ScalingMetric::Concurrency),
        Some("rps") => Some(ScalingMetric::Rps),
        Some(other) => {
            p.fail(METRIC, format!("{other:?} must be concurrency or rps"));
            None
        }
    };
    let parsed = AutoscalingAnnotations {
        metric,
        target: p.number(TARGET, 0.01, f64::MAX),
        target_utilization_percentage: p.number(TARGET_UTILIZATION, 1.0, 100.0),
        window: p.duration(WINDOW, Duration::from_secs(6), HOUR),
        panic_window_percentage: p.number(PANIC_WINDOW_PERCENTAGE, 1.0, 100.0),
        panic_threshold_percentage: p.number(PANIC_THRESHOLD_PERCENTAGE, 110.0, 1000.0),
        scale_down_delay: p.duration(SCALE_DOWN_DELAY, Duration::ZERO, HOUR),
        min_scale: p.count(MIN_SCALE),
        max_scale: p.count(MAX_SCALE),
        initial_scale: p.count(INITIAL_SCALE),
        retention: p.duration(RETENTION, Duration::ZERO, HOUR),
    };
    if let (Some(min), Some(max)) = (parsed.min_scale, parsed.max_scale)
        && max > 0
        && min > max
    {
        p.fail(MIN_SCALE, format!("min-scale {min} is greater than max-scale {max}"));
    }
    if p.errors.is_empty() { Ok(parsed) } else { Err(p.errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AutoscalingAnnotations, Vec<FieldError>> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_autoscaling(&map, "a")
    }

    #[test]
    fn absent_means_none() {
        assert_eq!(parse(&[]), Ok(AutoscalingAnnotations::default()));
    }

    #[test]
    fn parses_knative_values() {
        let a = parse(&[
            (METRIC, "rps"),
            (TARGET, "150"),
            (TARGET_UTILIZATION, "80"),
            (WINDOW, "2m"),
            (PANIC_WINDOW_PERCENTAGE, "20.0"),
            (PANIC_THRESHOLD_PERCENTAGE, "150"),
            (SCALE_DOWN_DELAY, "15m"),
            (MIN_SCALE, "1"),
            (MAX_SCALE, "10"),
            (INITIAL_SCALE, "2"),
        ])
        .expect("valid");
        assert_eq!(a.metric, Some(ScalingMetric::Rps));
        assert_eq!(a.window, Some(Duration::from_secs(120)));
        assert_eq!(a.scale_down_delay, Some(Duration::from_secs(900)));
        assert_eq!(a.target_utilization_percentage, Some(80.0));
    }

    #[test]
    fn rejects_out_of_range_values_naming_each_annotation() {
        let errors = parse(&[
            (WINDOW, "5s"),
            (TARGET_UTILIZATION, "0"),
            (PANIC_THRESHOLD_PERCENTAGE, "100"),
            (METRIC, "cpu"),
            (TARGET, "0"),
            (SCALE_DOWN_DELAY, "2h"),
            (CLASS, "hpa.autoscaling.knative.dev"),
        ])
        .expect_err("invalid");
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "a[autoscaling.knative.dev/class]",
                "a[autoscaling.knative.dev/metric]",
                "a[autoscaling.knative.dev/panic-threshold-percentage]",
                "a[autoscaling.knative.dev/scale-down-delay]",
                "a[autoscaling.knative.dev/target-utilization-percentage]",
                "a[autoscaling.knative.dev/target]",
                "a[autoscaling.knative.dev/window]",
            ]
        );
    }

    #[test]
    fn min_above_max_is_rejected() {
        assert!(parse(&[(MIN_SCALE, "3"), (MAX_SCALE, "2")]).is_err());
        assert!(parse(&[(MIN_SCALE, "3"), (MAX_SCALE, "0")]).is_ok(), "max 0 means unbounded");
    }
}
