//! Scaling decisions for one revision, sans-IO: every input, including `now`, is passed in,
//! so the logic runs unchanged on simulated clocks in tests.
//!
//! Owns: how many instances to start and which idle ones to stop.
//! Must not depend on: tokio, the runtime, the gateway or any IO.
//!
//! Today's policy is demand-driven: queued requests start instances (as many as
//! `containerConcurrency` requires), idle instances are stopped after the retention period,
//! `min-scale`/`max-scale` bound the count. The Knative KPA windows plug in here.

use std::time::{Duration, Instant};

/// Load of one ready instance as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLoad {
    pub id: u64,
    pub in_flight: u32,
    /// When the instance last finished a request (or became ready).
    pub last_active: Instant,
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub struct ScaleInput<'a> {
    pub now: Instant,
    /// Ready instances that take requests (draining ones excluded).
    pub ready: &'a [InstanceLoad],
    /// Instances being started.
    pub starting: u32,
    /// Requests waiting in the gateway for capacity.
    pub waiting: u32,
    /// Per-instance limit; 0 = unlimited.
    pub container_concurrency: u32,
    pub min_scale: u32,
    /// 0 = unbounded.
    pub max_scale: u32,
    /// How long an instance may sit idle before it is stopped.
    pub idle_retention: Duration,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleDecision {
    pub start: u32,
    /// Instances to drain and stop, idlest first.
    pub stop: Vec<u64>,
    /// The number of instances this decision aims at.
    pub desired: u32,
}

/// Instances needed to serve `demand` concurrent requests.
fn needed_for(demand: u32, container_concurrency: u32) -> u32 {
    match (demand, container_concurrency) {
        (0, _) => 0,
        (_, 0) => 1,
        (d, cc) => d.div_ceil(cc),
    }
}

pub fn decide(input: &ScaleInput<'_>) -> ScaleDecision {
    let in_flight: u32 = input.ready.iter().map(|i| i.in_flight).sum();
    let current = input.ready.len() as u32 + input.starting;
    let needed = needed_for(in_flight + input.waiting, input.container_concurrency);
    let cap = |n: u32| {
        if input.max_scale > 0 {
            n.min(input.max_scale)
        } else {
            n
        }
    };
    let floor = cap(needed.max(input.min_scale));

    let start = floor.saturating_sub(current);
    let mut stop = Vec::new();
    if input.waiting == 0 {
        let mut idle: Vec<&InstanceLoad> = input
            .ready
            .iter()
            .filter(|i| {
                i.in_flight == 0
                    && input.now.saturating_duration_since(i.last_active) >= input.idle_retention
            })
            .collect();
        idle.sort_by_key(|i| i.last_active);
        let removable = current.saturating_sub(floor) as usize;
        stop = idle.iter().take(removable).map(|i| i.id).collect();
    }
    let desired = current + start - stop.len() as u32;
    ScaleDecision {
        start,
        stop,
        desired,
    }
}

/// Delay before the next start after `failures` consecutive failed starts (or instances that
/// died right after starting): none before the first retry's predecessor, then 100 ms
/// doubling up to 10 s — a crash loop must not become a fork loop.
pub fn restart_backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(100u64.saturating_mul(1 << (n - 1).min(7)))
            .min(Duration::from_secs(10)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: Duration = Duration::from_secs(60);

    fn input<'a>(now: Instant, ready: &'a [InstanceLoad]) -> ScaleInput<'a> {
        ScaleInput {
            now,
            ready,
            starting: 0,
            waiting: 0,
            container_concurrency: 0,
            min_scale: 0,
            max_scale: 0,
            idle_retention: RETENTION,
        }
    }

    fn load(id: u64, in_flight: u32, last_active: Instant) -> InstanceLoad {
        InstanceLoad {
            id,
            in_flight,
            last_active,
        }
    }

    #[test]
    fn a_request_at_zero_starts_one_instance() {
        let now = Instant::now();
        let d = decide(&ScaleInput {
            waiting: 1,
            ..input(now, &[])
        });
        assert_eq!(
            d,
            ScaleDecision {
                start: 1,
                stop: vec![],
                desired: 1
            }
        );
    }

    #[test]
    fn a_starting_instance_absorbs_the_demand() {
        let now = Instant::now();
        let d = decide(&ScaleInput {
            waiting: 5,
            starting: 1,
            ..input(now, &[])
        });
        assert_eq!(d.start, 0, "unlimited concurrency: one instance serves all");
    }

    #[test]
    fn container_concurrency_sets_the_instance_count_up_to_max_scale() {
        let now = Instant::now();
        let ready = [load(1, 2, now)];
        let d = decide(&ScaleInput {
            waiting: 7,
            container_concurrency: 2,
            ..input(now, &ready)
        });
        assert_eq!(d.start, 4, "9 requests / 2 per instance = 5 instances");
        let d = decide(&ScaleInput {
            waiting: 7,
            container_concurrency: 2,
            max_scale: 3,
            ..input(now, &ready)
        });
        assert_eq!(d.start, 2);
    }

    #[test]
    fn idle_instances_stop_after_retention_and_not_before() {
        let t0 = Instant::now();
        let ready = [load(1, 0, t0)];
        assert!(
            decide(&input(t0 + RETENTION - Duration::from_millis(1), &ready))
                .stop
                .is_empty()
        );
        assert_eq!(decide(&input(t0 + RETENTION, &ready)).stop, vec![1]);
    }

    #[test]
    fn busy_instances_and_min_scale_are_kept() {
        let t0 = Instant::now();
        let later = t0 + RETENTION * 2;
        let ready = [
            load(1, 1, t0),
            load(2, 0, t0),
            load(3, 0, t0 + Duration::from_secs(1)),
        ];
        let d = decide(&input(later, &ready));
        assert_eq!(d.stop, vec![2, 3], "the busy one stays");
        let d = decide(&ScaleInput {
            min_scale: 2,
            ..input(later, &ready)
        });
        assert_eq!(d.stop, vec![2], "min-scale keeps two");
    }

    #[test]
    fn min_scale_starts_instances_without_traffic() {
        let d = decide(&ScaleInput {
            min_scale: 2,
            ..input(Instant::now(), &[])
        });
        assert_eq!(d.start, 2);
        assert_eq!(d.desired, 2);
    }

    #[test]
    fn nothing_stops_while_requests_wait() {
        let t0 = Instant::now();
        let ready = [load(1, 1, t0), load(2, 0, t0)];
        let d = decide(&ScaleInput {
            waiting: 1,
            container_concurrency: 1,
            ..input(t0 + RETENTION * 2, &ready)
        });
        assert!(d.stop.is_empty());
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
