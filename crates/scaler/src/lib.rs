//! Autoscaling for one revision with Knative's KPA semantics, sans-IO: every input,
//! including `now`, is passed in, so the logic runs unchanged on simulated clocks in tests.
//!
//! Owns: the concurrency meter the gateway feeds, the time-bucketed windows, the KPA
//! decision (stable/panic windows, target utilization, rate limits, scale-down delay,
//! scale-to-zero grace and retention, min/max/initial scale), victim choice and restart
//! backoff.
//! Must not depend on: tokio, the runtime, the gateway or any IO.

mod kpa;
mod meter;
mod window;

use std::time::{Duration, Instant};

pub use kpa::{Autoscaler, ClusterDefaults, Decision, KpaSpec};
pub use meter::{ConcurrencyMeter, Sample};
pub use window::TimeBuckets;

/// Load of one ready instance as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLoad {
    pub id: u64,
    pub in_flight: u32,
    /// When the instance last finished a request (or became ready).
    pub last_active: Instant,
}

/// The `count` instances to remove on scale-down: the least busy, then the longest idle.
pub fn choose_victims(ready: &[InstanceLoad], count: usize) -> Vec<u64> {
    let mut order: Vec<&InstanceLoad> = ready.iter().collect();
    order.sort_by_key(|i| (i.in_flight, i.last_active));
    order.iter().take(count).map(|i| i.id).collect()
}

/// Instances needed right now to hold `demand` concurrent requests with `container_concurrency`
/// per instance (0 = unlimited): the floor while requests are queued in the gateway.
pub fn capacity_floor(demand: u32, container_concurrency: u32) -> u32 {
    match (demand, container_concurrency) {
        (0, _) => 0,
        (_, 0) => 1,
        (d, cc) => d.div_ceil(cc),
    }
}

/// Delay before the next start after `failures` consecutive failed starts (or instances that
/// died right after starting): 100 ms doubling up to 10 s — a crash loop must not become a
/// fork loop.
pub fn restart_backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(100u64.saturating_mul(1 << (n - 1).min(7))).min(Duration::from_secs(10)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_are_the_idlest() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let ready = [
            InstanceLoad { id: 1, in_flight: 2, last_active: t0 },
            InstanceLoad { id: 2, in_flight: 0, last_active: later },
            InstanceLoad { id: 3, in_flight: 0, last_active: t0 },
        ];
        assert_eq!(choose_victims(&ready, 2), vec![3, 2]);
        assert_eq!(choose_victims(&ready, 5), vec![3, 2, 1]);
    }

    #[test]
    fn floor_follows_container_concurrency() {
        assert_eq!(capacity_floor(0, 1), 0);
        assert_eq!(capacity_floor(5, 0), 1);
        assert_eq!(capacity_floor(9, 2), 5);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(restart_backoff(0), Duration::ZERO);
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(2), Duration::from_millis(200));
        assert_eq!(restart_backoff(8), Duration::from_secs(10));
        assert_eq!(restart_backoff(50), Duration::from_secs(10));
    }
}
