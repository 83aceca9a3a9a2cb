//! One revision's instances: a task that feeds the gateway's measurements to the revision's
//! KPA and starts, replaces, drains and stops instances on its decisions — on every tick
//! (scale up and down) and at once when requests queue or an instance event happens (scale
//! up only).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use serval_dispatch::sources::apiserver::{InstanceEvent, Lifecycle, PlatformEvents};
use serval_gateway::{GatewayError, PoolConfig, RequestTimeouts, RevisionLabels, RevisionPool};
use serval_model::{Condition, ConditionStatus, InstanceCounts};
use serval_runtime::{Instance, InstanceSpec, Readiness, Runtime, RuntimeError, Workload};
use serval_scaler::{Autoscaler, Decision, InstanceLoad, KpaSpec, capacity_floor, choose_victims, restart_backoff};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::logs::LogBook;
use crate::metrics::PlatformMetrics;

/// An instance that dies sooner than this after becoming ready counts as a failed start.
const MIN_HEALTHY_LIFETIME: Duration = Duration::from_secs(5);

/// What a runner runs and the limits it keeps.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub workload: Workload,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub container_concurrency: u32,
    pub autoscaling: KpaSpec,
    /// How often the autoscaler decides without an event.
    pub tick: Duration,
    pub timeouts: RequestTimeouts,
    /// Instances serve h2c (their port is named so), not HTTP/1.1.
    pub h2c: bool,
    pub grace_period: Duration,
    pub startup_timeout: Duration,
    pub readiness: Readiness,
}

impl RunnerSpec {
    /// What the runtime gets to start one instance.
    pub fn instance_spec(&self, instance_id: String) -> InstanceSpec {
        InstanceSpec {
            instance_id,
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            revision: self.revision.clone(),
            configuration: self.service.clone(),
            workload: self.workload.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
            startup_timeout: self.startup_timeout,
            readiness: self.readiness.clone(),
        }
    }
}

/// How the first start of a revision went: `Err((reason, message))` with a Knative-style
/// reason for the revision's `Ready` condition.
pub type FirstStart = Option<Result<(), (&'static str, String)>>;

fn failure_reason(err: &RuntimeError) -> &'static str {
    match err {
        RuntimeError::ExitedBeforeReady { exit, .. } if exit.oom_killed => "OOMKilled",
        RuntimeError::ExitedBeforeReady { .. } => "ExitCode",
        RuntimeError::ImageNotFound(_) => "ImageNotFound",
        RuntimeError::PullFailed { .. } => "ImagePullFailed",
        RuntimeError::UnpackRejected(_) => "ImageUnpackRejected",
        RuntimeError::Image(_) => "ImageInvalid",
        RuntimeError::StartTimeout { .. } => "ProgressDeadlineExceeded",
        RuntimeError::Spawn { .. } => "ContainerMissing",
        _ => "StartFailed",
    }
}

struct State {
    autoscaler: Autoscaler,
    last_decision: Option<Decision>,
    /// Live instances: each with when it became ready, and its slot of the server-wide
    /// instance limit (freed with the entry).
    instances: HashMap<u64, (Arc<Instance>, Instant, OwnedSemaphorePermit)>,
    stopping: HashSet<u64>,
    starting: u32,
    failures: u32,
    not_before: Option<Instant>,
    last_error: Option<String>,
    /// The last failure was an instance that never became ready: queued requests are
    /// answered with it at once instead of waiting out the backoff.
    last_start_failed: bool,
    health: Option<Condition>,
    cold_starts: u64,
    last_cold_start: Option<Duration>,
    desired: u32,
    /// The last decision wanted more instances than the server-wide limit left.
    at_limit: bool,
}

impl State {
    fn new(autoscaler: Autoscaler) -> State {
        State {
            autoscaler,
            last_decision: None,
            instances: HashMap::new(),
            stopping: HashSet::new(),
            starting: 0,
            failures: 0,
            not_before: None,
            last_error: None,
            last_start_failed: false,
            health: None,
            cold_starts: 0,
            last_cold_start: None,
            desired: 0,
            at_limit: false,
        }
    }
}

/// The server-wide instance limit (`--max-instances`): one permit per instance running or
/// starting, shared by every runner.
pub type InstanceSlots = Arc<Semaphore>;

pub struct RevisionRunner {
    spec: RunnerSpec,
    pool: Arc<RevisionPool>,
    slots: InstanceSlots,
    runtime: Arc<dyn Runtime>,
    logs: LogBook,
    ids: Arc<AtomicU64>,
    metrics: Arc<PlatformMetrics>,
    platform: Arc<PlatformEvents>,
    state: Mutex<State>,
    wake: Notify,
    stop: watch::Sender<bool>,
    first_start: watch::Sender<FirstStart>,
}

impl RevisionRunner {
    /// Creates the runner and starts its task.
    pub fn spawn(
        spec: RunnerSpec,
        runtime: Arc<dyn Runtime>,
        logs: LogBook,
        ids: Arc<AtomicU64>,
        metrics: Arc<PlatformMetrics>,
        slots: InstanceSlots,
        platform: Arc<PlatformEvents>,
    ) -> Arc<RevisionRunner> {
        let nominal_capacity = spec.autoscaling.target_value.ceil() as u32;
        let labels = RevisionLabels::new(&spec.namespace, &spec.service, &spec.revision);
        let revision_metrics = metrics.gateway.for_revision(&labels);
        let pool = RevisionPool::with_metrics(
            labels,
            PoolConfig {
                container_concurrency: spec.container_concurrency,
                nominal_capacity,
                timeouts: spec.timeouts,
                h2c: spec.h2c,
                in_process: runtime.serves_in_process(),
            },
            Some(revision_metrics),
        );
        let autoscaler = Autoscaler::new(spec.autoscaling.clone(), Instant::now());
        let runner = Arc::new(RevisionRunner {
            spec,
            pool,
            slots,
            runtime,
            logs,
            ids,
            metrics,
            platform,
            state: Mutex::new(State::new(autoscaler)),
            wake: Notify::new(),
            stop: watch::channel(false).0,
            first_start: watch::channel(None).0,
        });
        tokio::spawn(runner.clone().run());
        runner
    }

    pub fn pool(&self) -> &Arc<RevisionPool> {
        &self.pool
    }

    pub fn spec(&self) -> &RunnerSpec {
        &self.spec
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, instance: &str, text: String) {
        self.logs.platform(&self.spec.namespace, &self.spec.service, instance, text);
    }

    /// Publishes an instance lifecycle event (for ApiServerSources watching `v1 Event`).
    fn announce(&self, lifecycle: Lifecycle, instance: &str, detail: Value) {
        let detail = match detail {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.platform.publish(InstanceEvent {
            lifecycle,
            namespace: self.spec.namespace.clone(),
            service: self.spec.service.clone(),
            revision: self.spec.revision.clone(),
            instance: instance.to_string(),
            detail,
            time: std::time::SystemTime::now(),
        });
    }

    /// Live counts for `status`.
    pub fn counts(&self) -> InstanceCounts {
        let stats = self.pool.stats();
        let state = self.lock();
        InstanceCounts {
            desired: state.desired,
            ready: stats.endpoints.iter().filter(|e| !e.draining).count() as u32,
            starting: state.starting,
            in_flight: stats.in_flight,
            queued: stats.waiting,
            cold_starts: state.cold_starts,
            last_cold_start_ms: state.last_cold_start.map(|d| d.as_secs_f64() * 1000.0),
            panic: state.last_decision.is_some_and(|d| d.panic),
            observed_concurrency: state.last_decision.map_or(0.0, |d| d.observed_concurrency),
            observed_rps: state.last_decision.map_or(0.0, |d| d.observed_rps),
        }
    }

    /// `ContainerHealthy` when an instance failed, for the revision's status.
    pub fn health(&self) -> Option<Condition> {
        self.lock().health.clone()
    }

    /// `ContainerHealthy=False` while instances keep failing (a crash loop, starts that
    /// fail), until one lives long enough or starts again.
    pub fn failing(&self) -> Option<Condition> {
        let state = self.lock();
        (state.failures > 0 || state.last_start_failed).then(|| state.health.clone()).flatten()
    }

    /// Resolves with the outcome of the revision's first instance start.
    pub fn first_start(&self) -> watch::Receiver<FirstStart> {
        self.first_start.subscribe()
    }

    /// Retires a runner the routing table no longer points at: requests already queued
    /// here are still served (up to the request timeout), then everything stops.
    pub async fn retire(&self) {
        let deadline = tokio::time::Instant::now() + self.spec.timeouts.total;
        while self.pool.stats().waiting > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop().await;
        // It will not start again: what the runtime prepared for it goes.
        self.runtime.release(&self.spec.namespace, &self.spec.revision);
    }

    /// Stops the runner: no new requests, in-flight ones finish, every instance stops.
    /// Resolves when all instances are gone.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        self.pool.close(GatewayError::Closed(self.spec.revision.clone()));
        loop {
            let (to_stop, starting) = {
                let mut state = self.lock();
                let ids: Vec<u64> = state.instances.keys().copied().filter(|id| !state.stopping.contains(id)).collect();
                let list: Vec<(u64, Arc<Instance>)> = ids
                    .into_iter()
                    .filter_map(|id| {
                        state.stopping.insert(id);
                        state.instances.get(&id).map(|(i, ..)| (id, i.clone()))
                    })
                    .collect();
                (list, state.starting)
            };
            let stops = to_stop.into_iter().map(|(id, instance)| self.stop_instance(id, instance, "revision stopped"));
            futures_util::future::join_all(stops).await;
            if starting == 0 && self.lock().instances.is_empty() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.wake.notified()).await;
        }
    }

    async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut next_tick = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let full_tick = now >= next_tick;
            if full_tick {
                next_tick = (next_tick + self.spec.tick).max(now);
            }
            // At zero with nothing to do, the runner sleeps until a request or an event comes
            // (ticks are for scaling down and for windows that still hold load): a thousand
            // idle revisions cost nothing.
            let idle = self.step(full_tick);
            tokio::select! {
                () = self.pool.demanded() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(next_tick), if !idle => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }

    /// Feeds the latest measurements to the autoscaler and acts on its decision without
    /// waiting. Scale-down happens only on ticks; events between ticks may only add.
    /// Returns whether the revision is idle at zero: no instance, none starting, no request,
    /// and the decision is zero (then only a request or an event needs a new step).
    fn step(self: &Arc<Self>, full_tick: bool) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        // Pool stats are read under the runner lock so a concurrently finishing start is
        // seen either as starting or as ready, never as neither.
        let sample = self.pool.take_sample(now);
        state.autoscaler.record(sample);
        let stats = self.pool.stats();
        let ready: Vec<InstanceLoad> = stats
            .endpoints
            .iter()
            .filter(|e| !e.draining && !state.stopping.contains(&e.id))
            .map(|e| InstanceLoad { id: e.id, in_flight: e.in_flight, last_active: e.last_active })
            .collect();
        let decision = state.autoscaler.decide(now, ready.len() as u32);
        // Requests already queued need capacity now, whatever the windows say (the
        // activator's view: a revision at zero with a request starts at once).
        let mut floor = if stats.waiting > 0 {
            capacity_floor(stats.in_flight + stats.waiting, self.spec.container_concurrency)
        } else {
            0
        };
        if self.spec.autoscaling.max_scale > 0 {
            floor = floor.min(self.spec.autoscaling.max_scale);
        }
        let desired = decision.desired.max(floor);
        state.last_decision = Some(decision);
        state.desired = desired;

        let current = ready.len() as u32 + state.starting;
        let backing_off = state.not_before.is_some_and(|t| now < t);
        if backing_off {
            if state.last_start_failed && stats.waiting > 0 && ready.is_empty() && state.starting == 0 {
                let reason = state.last_error.clone().unwrap_or_else(|| "instance keeps failing".into());
                self.pool.fail_waiters(GatewayError::StartFailed(reason));
            }
        } else {
            // After a failed start, one start at a time until one succeeds (a revision that
            // cannot start must not fork hundreds of failing processes at once).
            let wanted = desired.saturating_sub(current);
            let wanted = if state.last_start_failed { wanted.min(1).saturating_sub(state.starting) } else { wanted };
            let mut started = 0;
            while started < wanted {
                let Ok(slot) = self.slots.clone().try_acquire_owned() else { break };
                state.starting += 1;
                started += 1;
                tokio::spawn(self.clone().start_instance(ready.is_empty(), slot));
            }
            let at_limit = started < wanted;
            if at_limit && !state.at_limit {
                self.log(
                    "",
                    format!(
                        "the server's instance limit is reached: {} of {desired} instances run; \
                         the rest wait for other revisions' instances to stop",
                        current + started
                    ),
                );
                tracing::warn!(
                    "{}/{}: the server's instance limit is reached",
                    self.spec.namespace,
                    self.spec.revision
                );
            }
            state.at_limit = at_limit;
        }
        if full_tick && desired < current {
            let surplus = ((current - desired) as usize).min(ready.len());
            for id in choose_victims(&ready, surplus) {
                if let Some(instance) = state.instances.get(&id).map(|(i, ..)| i.clone()) {
                    state.stopping.insert(id);
                    let runner = self.clone();
                    tokio::spawn(async move { runner.stop_instance(id, instance, "scaled down").await });
                }
            }
        }
        desired == 0
            && state.instances.is_empty()
            && state.starting == 0
            && stats.waiting == 0
            && stats.in_flight == 0
            && !backing_off
    }

    async fn start_instance(self: Arc<Self>, cold: bool, slot: OwnedSemaphorePermit) {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let instance_id = format!("{}-{id}", self.spec.revision);
        let spec = self.spec.instance_spec(instance_id.clone());
        let sink = self.logs.sink(&self.spec.namespace, &self.spec.service);
        self.announce(Lifecycle::Started, &instance_id, json!({"coldStart": cold}));
        let result = self.runtime.start(spec, sink).await;
        let stopped = *self.stop.borrow();
        match result {
            Ok(instance) => {
                let instance = Arc::new(instance);
                let startup = instance.startup;
                {
                    let mut state = self.lock();
                    state.starting -= 1;
                    state.not_before = None;
                    state.last_start_failed = false;
                    if cold {
                        state.cold_starts += 1;
                        state.last_cold_start = Some(startup);
                        self.metrics.cold_start(self.pool.labels(), startup);
                    }
                    state.instances.insert(id, (instance.clone(), Instant::now(), slot));
                    if stopped {
                        state.stopping.insert(id);
                    } else {
                        self.pool.add_endpoint(id, crate::in_process::instance_addr(&instance.endpoint));
                    }
                }
                self.first_start.send_if_modified(|v| v.is_none() && v.replace(Ok(())).is_none());
                let startup_ms = startup.as_secs_f64() * 1e3;
                self.announce(Lifecycle::Ready, &instance_id, json!({"coldStart": cold, "startupMs": startup_ms}));
                let kind = if cold { "cold start" } else { "started" };
                self.log(
                    &instance_id,
                    format!("{kind}: ready on {} in {:.2} ms", instance.endpoint, startup.as_secs_f64() * 1e3),
                );
                tokio::spawn(self.clone().watch_instance(id, instance_id, instance.clone()));
                if stopped {
                    self.stop_instance(id, instance, "revision stopped").await;
                }
            }
            Err(err) => {
                let message = err.to_string();
                let reason = failure_reason(&err);
                self.first_start
                    .send_if_modified(|v| v.is_none() && v.replace(Err((reason, message.clone()))).is_none());
                self.log(&instance_id, format!("failed to start: {message}"));
                self.announce(Lifecycle::Failed, &instance_id, json!({"reason": reason, "message": message}));
                let mut state = self.lock();
                state.starting -= 1;
                self.record_failure(&mut state, "StartFailed", message.clone());
                state.last_start_failed = true;
                if state.instances.is_empty() && state.starting == 0 {
                    self.pool.fail_waiters(GatewayError::StartFailed(message));
                }
            }
        }
        self.wake.notify_one();
    }

    fn record_failure(&self, state: &mut State, reason: &str, message: String) {
        state.failures += 1;
        state.not_before = Some(Instant::now() + restart_backoff(state.failures));
        state.health = Some(Condition::new("ContainerHealthy", ConditionStatus::False, reason, message.clone()));
        state.last_error = Some(message);
    }

    /// Notices instances that die on their own: takes them out of the pool, reports the
    /// exit, and has them replaced.
    async fn watch_instance(self: Arc<Self>, id: u64, instance_id: String, instance: Arc<Instance>) {
        let exit = instance.exited().await;
        let unexpected = {
            let mut state = self.lock();
            let lived = state.instances.remove(&id).map(|(_, since, _)| since.elapsed());
            let requested = state.stopping.remove(&id);
            if !requested {
                let message = format!("instance {instance_id} {exit}");
                let reason = if exit.oom_killed { "OOMKilled" } else { "ExitCode" };
                if lived.is_some_and(|l| l < MIN_HEALTHY_LIFETIME) {
                    self.record_failure(&mut state, reason, message);
                } else {
                    state.failures = 0;
                    state.health = Some(Condition::new("ContainerHealthy", ConditionStatus::False, reason, message));
                }
            }
            !requested
        };
        if unexpected {
            self.pool.remove_endpoint(id);
            self.log(&instance_id, format!("exited unexpectedly ({exit}); replacing it"));
            let lifecycle = if exit.oom_killed { Lifecycle::OomKilled } else { Lifecycle::Crashed };
            self.announce(lifecycle, &instance_id, exit_detail(&exit, None));
        }
        self.wake.notify_one();
    }

    /// Drains an instance (no new requests; in-flight ones finish up to the request
    /// timeout), then stops it with the grace period.
    async fn stop_instance(&self, id: u64, instance: Arc<Instance>, why: &str) {
        let instance_id = format!("{}-{id}", self.spec.revision);
        let _ = tokio::time::timeout(self.spec.timeouts.total, self.pool.drain(id)).await;
        let exit = instance.stop(self.spec.grace_period).await;
        self.log(&instance_id, format!("stopped ({why}): {exit}"));
        self.announce(Lifecycle::Stopped, &instance_id, exit_detail(&exit, Some(why)));
    }
}

/// How an instance exited, as lifecycle event data.
fn exit_detail(exit: &serval_runtime::ExitInfo, why: Option<&str>) -> Value {
    let mut detail = json!({"exit": exit.to_string(), "oomKilled": exit.oom_killed});
    if let Some(code) = exit.code {
        detail["exitCode"] = code.into();
    }
    if let Some(signal) = exit.signal {
        detail["signal"] = signal.into();
    }
    if let Some(why) = why {
        detail["reason"] = why.into();
    }
    detail
}
