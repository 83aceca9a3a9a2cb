//! Time-bucketed sums for windowed averages (Knative's timed buckets).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Sample;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    area: f64,
    requests: f64,
}

/// Concurrency·seconds and requests per bucket of `granularity`, kept for `retain`.
#[derive(Debug, Clone)]
pub struct TimeBuckets {
    granularity: Duration,
    retain: Duration,
    origin: Instant,
    buckets: VecDeque<Bucket>,
    /// Start of the current run of data; averages never dilute over time before it.
    first_write: Option<Instant>,
}

impl TimeBuckets {
    pub fn new(origin: Instant, granularity: Duration, retain: Duration) -> TimeBuckets {
        TimeBuckets { granularity, retain, origin, buckets: VecDeque::new(), first_write: None }
    }

    fn index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / self.granularity.as_nanos().max(1)) as u64
    }

    /// The bucket holding the instant just before `t` (where an interval ending at `t` ends).
    fn index_ending(&self, t: Instant) -> u64 {
        self.index(t.checked_sub(Duration::from_nanos(1)).unwrap_or(t))
    }

    fn bucket_start(&self, index: u64) -> Instant {
        self.origin + self.granularity * index as u32
    }

    fn add(&mut self, index: u64, area: f64, requests: f64) {
        match self.buckets.back_mut() {
            Some(b) if b.index == index => {
                b.area += area;
                b.requests += requests;
            }
            Some(b) if b.index > index => {
                // A sample reaching into an older bucket: find it (rare, small deque).
                if let Some(b) = self.buckets.iter_mut().rev().find(|b| b.index == index) {
                    b.area += area;
                    b.requests += requests;
                }
            }
            _ => self.buckets.push_back(Bucket { index, area, requests }),
        }
    }

    /// Adds a sample, spreading its area over the buckets its interval covers.
    pub fn record(&mut self, sample: Sample) {
        if sample.area <= 0.0 && sample.requests == 0 {
            self.prune(sample.end);
            return;
        }
        // After a window without any data, averages start afresh (Knative resets too).
        if self.total(sample.start, self.retain) == (0.0, 0.0) {
            self.first_write = None;
        }
        self.first_write.get_or_insert(sample.start);
        let span = sample.end.saturating_duration_since(sample.start).as_secs_f64();
        let mut t = sample.start;
        while t < sample.end {
            let index = self.index(t);
            let segment_end = self.bucket_start(index + 1).min(sample.end);
            let share = segment_end.saturating_duration_since(t).as_secs_f64() / span;
            self.add(index, sample.area * share, 0.0);
            t = segment_end;
        }
        if span == 0.0 {
            self.add(self.index_ending(sample.end), sample.area, 0.0);
        }
        self.add(self.index_ending(sample.end), 0.0, sample.requests as f64);
        self.prune(sample.end);
    }

    fn prune(&mut self, now: Instant) {
        let keep_from = self.index(now).saturating_sub(self.buckets_in(self.retain));
        while self.buckets.front().is_some_and(|b| b.index < keep_from) {
            self.buckets.pop_front();
        }
    }

    fn buckets_in(&self, window: Duration) -> u64 {
        (window.as_nanos().div_ceil(self.granularity.as_nanos().max(1))) as u64
    }

    fn total(&self, now: Instant, window: Duration) -> (f64, f64) {
        let last = self.index_ending(now);
        let first = (last + 1).saturating_sub(self.buckets_in(window).max(1));
        self.buckets
            .iter()
            .filter(|b| b.index >= first && b.index <= last)
            .fold((0.0, 0.0), |(a, r), b| (a + b.area, r + b.requests))
    }

    /// Average concurrency and requests per second over the `window` ending at `now`; while
    /// the current run of data is younger than the window, over the time since it began
    /// (at least one bucket).
    pub fn average(&self, now: Instant, window: Duration) -> (f64, f64) {
        let Some(first) = self.first_write else { return (0.0, 0.0) };
        let effective = window.min(now.saturating_duration_since(first)).max(self.granularity).as_secs_f64();
        let (area, requests) = self.total(now, window);
        (area / effective, requests / effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn sample(t0: Instant, from: u64, to: u64, level: f64, requests: u64) -> Sample {
        Sample { start: t0 + SEC * from as u32, end: t0 + SEC * to as u32, area: level * (to - from) as f64, requests }
    }

    #[test]
    fn steady_level_averages_to_itself() {
        let t0 = Instant::now();
        let mut b = TimeBuckets::new(t0, SEC, Duration::from_secs(60));
        for s in 0..120 {
            b.record(sample(t0, s, s + 1, 10.0, 100));
        }
        let (c, rps) = b.average(t0 + Duration::from_secs(120), Duration::from_secs(60));
        assert!((c - 10.0).abs() < 0.2, "{c}");
        assert!((rps - 100.0).abs() < 2.0, "{rps}");
    }

    #[test]
    fn young_data_is_not_diluted_by_the_window() {
        let t0 = Instant::now();
        let mut b = TimeBuckets::new(t0, SEC, Duration::from_secs(60));
        b.record(sample(t0, 10, 12, 30.0, 0));
        let (c, _) = b.average(t0 + Duration::from_secs(12), Duration::from_secs(60));
        assert!((c - 30.0).abs() < 1e-6, "{c}");
    }

    #[test]
    fn old_data_leaves_the_window() {
        let t0 = Instant::now();
        let mut b = TimeBuckets::new(t0, SEC, Duration::from_secs(60));
        b.record(sample(t0, 0, 10, 5.0, 0));
        let (c, _) = b.average(t0 + Duration::from_secs(80), Duration::from_secs(60));
        assert_eq!(c, 0.0);
        let (c, _) = b.average(t0 + Duration::from_secs(20), Duration::from_secs(6));
        assert_eq!(c, 0.0, "panic window sees only the last 6 s");
    }
}
