//! The gateway's per-revision meter: time-weighted concurrency and request counts.

use std::time::Instant;

/// What happened in `[start, end]`: the integral of concurrency over time
/// (concurrency·seconds) and the number of requests that arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    pub area: f64,
    pub requests: u64,
}

/// Integrates the number of requests in the system (in flight + queued) over time.
#[derive(Debug, Clone)]
pub struct ConcurrencyMeter {
    level: u32,
    since: Instant,
    period_start: Instant,
    area: f64,
    requests: u64,
}

impl ConcurrencyMeter {
    pub fn new(now: Instant) -> ConcurrencyMeter {
        ConcurrencyMeter { level: 0, since: now, period_start: now, area: 0.0, requests: 0 }
    }

    fn accumulate(&mut self, now: Instant) {
        self.area += f64::from(self.level) * now.saturating_duration_since(self.since).as_secs_f64();
        self.since = now;
    }

    /// The number of requests in the system changed to `level` at `now`.
    pub fn set_level(&mut self, now: Instant, level: u32) {
        self.accumulate(now);
        self.level = level;
    }

    /// A request arrived.
    pub fn count_request(&mut self) {
        self.requests += 1;
    }

    pub fn level(&self) -> u32 {
        self.level
    }

    /// Everything since the last `take`, and a fresh period.
    pub fn take(&mut self, now: Instant) -> Sample {
        self.accumulate(now);
        let sample = Sample { start: self.period_start, end: now, area: self.area, requests: self.requests };
        self.period_start = now;
        self.area = 0.0;
        self.requests = 0;
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn integrates_concurrency_over_time() {
        let t0 = Instant::now();
        let mut m = ConcurrencyMeter::new(t0);
        m.set_level(t0, 2);
        m.count_request();
        m.count_request();
        m.set_level(t0 + Duration::from_millis(500), 1);
        let s = m.take(t0 + Duration::from_secs(1));
        assert!((s.area - 1.5).abs() < 1e-9, "2×0.5 s + 1×0.5 s = {}", s.area);
        assert_eq!(s.requests, 2);
        let s = m.take(t0 + Duration::from_secs(2));
        assert!((s.area - 1.0).abs() < 1e-9);
        assert_eq!(s.requests, 0);
    }
}
