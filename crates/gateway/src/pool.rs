//! Per-revision pool of instance endpoints: in-flight accounting, the concurrency limit and
//! the queue of requests waiting for capacity (including while the revision is at zero).
//!
//! Invariant: an endpoint's `in_flight` equals the number of live [`Lease`]s on it. A lease
//! handed to a waiter that has gone away is taken back without touching the count.
//! The queue holds only requests still waiting: one dropped unanswered (its client left,
//! its deadline passed) removes itself, so demand and the queue bound count live requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use serval_scaler::{ConcurrencyMeter, Sample};
use tokio::sync::{Notify, oneshot};

use crate::{GatewayBody, GatewayError, ProxyBody, RevisionLabels, RevisionMetrics};

/// Limits of one revision's pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Requests one instance may serve at once; 0 = unlimited.
    pub container_concurrency: u32,
    /// An instance's capacity when `container_concurrency` is unlimited (the autoscaling
    /// target), for sizing the queue.
    pub nominal_capacity: u32,
    /// The revision's request timeouts.
    pub timeouts: RequestTimeouts,
    /// Instances speak HTTP/2 with prior knowledge (h2c, for gRPC) instead of HTTP/1.1.
    pub h2c: bool,
    /// Instances serve in process ([`InstanceAddr::InProcess`]): requests take the hyper
    /// path, which calls their handler instead of a socket.
    pub in_process: bool,
}

/// Serves an instance's requests inside the server, without a socket (see
/// [`InstanceAddr::InProcess`]). The request comes rewritten as for any instance.
pub trait InstanceHandler: Send + Sync + 'static {
    fn call(
        &self,
        req: http::Request<ProxyBody>,
    ) -> BoxFuture<'static, Result<http::Response<GatewayBody>, GatewayError>>;
}

/// Where an instance of a pool takes requests.
#[derive(Clone)]
pub enum InstanceAddr {
    Socket(SocketAddr),
    InProcess(Arc<dyn InstanceHandler>),
}

impl From<SocketAddr> for InstanceAddr {
    fn from(addr: SocketAddr) -> InstanceAddr {
        InstanceAddr::Socket(addr)
    }
}

/// Knative's three request timeouts of a revision, all counted from the request's arrival
/// (its wait in the queue included) except the idle one.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeouts {
    /// `timeoutSeconds`: until the last byte of the response.
    pub total: Duration,
    /// `responseStartTimeoutSeconds`: until the response head (at most `total`).
    pub response_start: Duration,
    /// `idleTimeoutSeconds`: the longest time with no byte either way (`None`: no limit).
    pub idle: Option<Duration>,
}

impl RequestTimeouts {
    /// Only a total timeout, which also bounds the wait for the response head.
    pub fn total(total: Duration) -> RequestTimeouts {
        RequestTimeouts { total, response_start: total, idle: None }
    }
}

/// The smallest queue a revision gets, even at zero instances.
const MIN_QUEUE: usize = 100;
/// Queue depth per unit of capacity.
const QUEUE_PER_CAPACITY: usize = 10;

struct Endpoint {
    id: u64,
    addr: InstanceAddr,
    /// `addr` as a URI authority, built once (`localhost` in process).
    authority: http::uri::Authority,
    in_flight: u32,
    last_active: Instant,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
}

type Waiter = oneshot::Sender<Result<Lease, GatewayError>>;

struct State {
    endpoints: Vec<Endpoint>,
    waiters: VecDeque<Waiter>,
    closed: Option<GatewayError>,
    requests: u64,
    meter: ConcurrencyMeter,
}

impl State {
    /// Requests in the system: in flight plus queued (what the autoscaler scales on).
    fn level(&self) -> u32 {
        self.endpoints.iter().map(|e| e.in_flight).sum::<u32>() + self.waiters.len() as u32
    }

    fn update_meter(&mut self) {
        let level = self.level();
        if level != self.meter.level() {
            self.meter.set_level(Instant::now(), level);
        }
    }
}

/// The endpoints of one revision and the requests waiting for them.
pub struct RevisionPool {
    name: String,
    labels: RevisionLabels,
    metrics: Option<RevisionMetrics>,
    config: PoolConfig,
    state: Mutex<State>,
    demand: Notify,
}

/// Permission to send one request to one endpoint; releases its slot when dropped.
pub struct Lease {
    pool: Arc<RevisionPool>,
    endpoint: u64,
    addr: InstanceAddr,
    authority: http::uri::Authority,
    armed: bool,
}

impl Lease {
    pub fn addr(&self) -> &InstanceAddr {
        &self.addr
    }
    /// The instance's socket; `None` for one in process.
    pub fn socket(&self) -> Option<SocketAddr> {
        match &self.addr {
            InstanceAddr::Socket(addr) => Some(*addr),
            InstanceAddr::InProcess(_) => None,
        }
    }
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
    pub fn endpoint(&self) -> u64 {
        self.endpoint
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(self.endpoint);
        }
    }
}

/// A request waiting in the queue. Dropped unanswered (its client left, its deadline
/// passed), it leaves the queue at once, so that it neither counts as demand nor takes a
/// place in the bounded queue.
struct Queued<'p> {
    pool: &'p RevisionPool,
    answer: oneshot::Receiver<Result<Lease, GatewayError>>,
    answered: bool,
}

impl Future for Queued<'_> {
    type Output = Result<Lease, GatewayError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let answer = std::task::ready!(std::pin::Pin::new(&mut self.answer).poll(cx));
        self.answered = true;
        std::task::Poll::Ready(answer.unwrap_or_else(|_| Err(GatewayError::Closed(self.pool.name.clone()))))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.answer.close();
        // A lease handed over in the meantime is given back (its drop takes the lock).
        drop(self.answer.try_recv());
        let mut state = self.pool.lock();
        state.waiters.retain(|waiter| !waiter.is_closed());
        state.update_meter();
    }
}

/// Load of one endpoint, for scaling decisions.
#[derive(Debug, Clone, Copy)]
pub struct EndpointLoad {
    pub id: u64,
    pub in_flight: u32,
    pub last_active: Instant,
    pub draining: bool,
}

/// A snapshot of a pool.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    pub endpoints: Vec<EndpointLoad>,
    pub waiting: u32,
    pub in_flight: u32,
    pub requests: u64,
}

impl RevisionPool {
    pub fn new(labels: RevisionLabels, config: PoolConfig) -> Arc<RevisionPool> {
        RevisionPool::with_metrics(labels, config, None)
    }

    /// A pool whose answered requests are counted in `metrics`.
    pub fn with_metrics(
        labels: RevisionLabels,
        config: PoolConfig,
        metrics: Option<RevisionMetrics>,
    ) -> Arc<RevisionPool> {
        Arc::new(RevisionPool {
            name: labels.revision.clone(),
            labels,
            metrics,
            config,
            state: Mutex::new(State {
                endpoints: Vec::new(),
                waiters: VecDeque::new(),
                closed: None,
                requests: 0,
                meter: ConcurrencyMeter::new(Instant::now()),
            }),
            demand: Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timeouts(&self) -> RequestTimeouts {
        self.config.timeouts
    }

    /// Whether instances are spoken to in HTTP/2 (h2c).
    pub fn h2c(&self) -> bool {
        self.config.h2c
    }

    /// Whether instances serve in process (see [`PoolConfig::in_process`]).
    pub fn in_process(&self) -> bool {
        self.config.in_process
    }

    /// Where this revision's requests are counted.
    pub fn metrics(&self) -> Option<&RevisionMetrics> {
        self.metrics.as_ref()
    }

    /// Metric labels of this revision.
    pub fn labels(&self) -> &RevisionLabels {
        &self.labels
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections never panic half-way; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self, e: &Endpoint) -> bool {
        !e.draining && (self.config.container_concurrency == 0 || e.in_flight < self.config.container_concurrency)
    }

    /// Picks an endpoint with room: first available when the limit is small (≤ 3: keeps
    /// requests packed on few instances), the least loaded for larger limits, and the
    /// better of two random choices when unlimited (no herd on one instance, O(1)).
    fn pick(&self, state: &mut State) -> Option<usize> {
        let cc = self.config.container_concurrency;
        let candidates = state.endpoints.iter().enumerate().filter(|(_, e)| self.has_room(e));
        match cc {
            1..=3 => candidates.map(|(i, _)| i).next(),
            0 => {
                let open: Vec<usize> = candidates.map(|(i, _)| i).collect();
                match open.len() {
                    0 => None,
                    1 => Some(open[0]),
                    n => {
                        // Two distinct random candidates.
                        let first = fastrand::usize(..n);
                        let a = open[first];
                        let b = open[(first + 1 + fastrand::usize(..n - 1)) % n];
                        Some(if state.endpoints[b].in_flight < state.endpoints[a].in_flight { b } else { a })
                    }
                }
            }
            _ => candidates.min_by_key(|(_, e)| e.in_flight).map(|(i, _)| i),
        }
    }

    /// 10 × the capacity of the ready instances (at least one), never below 100.
    fn queue_limit(&self, state: &State) -> usize {
        let per_instance = match self.config.container_concurrency {
            0 => self.config.nominal_capacity.max(1),
            cc => cc,
        } as usize;
        let instances = state.endpoints.iter().filter(|e| !e.draining).count().max(1);
        (QUEUE_PER_CAPACITY * per_instance * instances).max(MIN_QUEUE)
    }

    fn lease(self: &Arc<Self>, e: &mut Endpoint) -> Lease {
        e.in_flight += 1;
        Lease { pool: self.clone(), endpoint: e.id, addr: e.addr.clone(), authority: e.authority.clone(), armed: true }
    }

    /// Waits for a slot on an endpoint. When none is free the request queues (bounded) and
    /// the pool signals demand, which wakes whoever scales this revision.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, GatewayError> {
        let wait = {
            let mut state = self.lock();
            if let Some(err) = &state.closed {
                return Err(err.clone());
            }
            state.requests += 1;
            state.meter.count_request();
            if let Some(i) = self.pick(&mut state) {
                let lease = self.lease(&mut state.endpoints[i]);
                state.update_meter();
                return Ok(lease);
            }
            if state.waiters.len() >= self.queue_limit(&state) {
                return Err(GatewayError::QueueFull(self.name.clone()));
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            state.update_meter();
            rx
        };
        self.demand.notify_one();
        Queued { pool: self, answer: wait, answered: false }.await
    }

    /// Resolves when requests are waiting for capacity (or were, since the last call).
    pub async fn demanded(&self) {
        self.demand.notified().await
    }

    /// Hands queued requests to endpoints with room, in arrival order.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        while !state.waiters.is_empty() {
            let Some(i) = self.pick(state) else { return };
            let Some(waiter) = state.waiters.pop_front() else {
                return;
            };
            let lease = self.lease(&mut state.endpoints[i]);
            if let Err(Ok(mut unclaimed)) = waiter.send(Ok(lease)) {
                // The request gave up (timeout, client gone): take the slot back here,
                // without re-entering the lock through Drop.
                unclaimed.armed = false;
                state.endpoints[i].in_flight -= 1;
            }
        }
        state.update_meter();
    }

    fn release(self: &Arc<Self>, endpoint: u64) {
        let mut state = self.lock();
        let Some(i) = state.endpoints.iter().position(|e| e.id == endpoint) else {
            return;
        };
        let e = &mut state.endpoints[i];
        e.in_flight -= 1;
        e.last_active = Instant::now();
        if e.draining {
            if e.in_flight == 0 {
                for done in std::mem::take(&mut e.drained) {
                    let _ = done.send(());
                }
                state.endpoints.remove(i);
            }
        } else {
            self.dispatch(&mut state);
        }
        state.update_meter();
    }

    /// Adds a ready endpoint and gives it queued requests.
    pub fn add_endpoint(self: &Arc<Self>, id: u64, addr: impl Into<InstanceAddr>) {
        let addr = addr.into();
        let authority = match &addr {
            InstanceAddr::Socket(socket) => http::uri::Authority::try_from(socket.to_string().as_str())
                .expect("a socket address is a valid URI authority"),
            InstanceAddr::InProcess(_) => http::uri::Authority::from_static("localhost"),
        };
        let mut state = self.lock();
        state.endpoints.push(Endpoint {
            id,
            addr,
            authority,
            in_flight: 0,
            last_active: Instant::now(),
            draining: false,
            drained: Vec::new(),
        });
        self.dispatch(&mut state);
    }

    /// Stops routing new requests to an endpoint; resolves once its in-flight ones finished.
    pub fn drain(&self, id: u64) -> impl Future<Output = ()> + use<> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            match state.endpoints.iter().position(|e| e.id == id) {
                Some(i) if state.endpoints[i].in_flight > 0 => {
                    state.endpoints[i].draining = true;
                    state.endpoints[i].drained.push(tx);
                }
                Some(i) => {
                    state.endpoints.remove(i);
                    let _ = tx.send(());
                }
                None => {
                    let _ = tx.send(());
                }
            }
        }
        async move {
            let _ = rx.await;
        }
    }

    /// Forgets an endpoint at once (its instance died); its leases release into nothing.
    pub fn remove_endpoint(&self, id: u64) {
        let mut state = self.lock();
        if let Some(i) = state.endpoints.iter().position(|e| e.id == id) {
            let e = state.endpoints.remove(i);
            for done in e.drained {
                let _ = done.send(());
            }
        }
        state.update_meter();
    }

    /// Answers every queued request with `err` (e.g. the instance could not start).
    pub fn fail_waiters(&self, err: GatewayError) {
        let waiters = {
            let mut state = self.lock();
            let waiters = std::mem::take(&mut state.waiters);
            state.update_meter();
            waiters
        };
        for w in waiters {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Refuses new requests and fails queued ones; in-flight ones finish.
    pub fn close(&self, err: GatewayError) {
        self.lock().closed = Some(err.clone());
        self.fail_waiters(err);
    }

    /// What the meter measured since the last call (for the autoscaler).
    pub fn take_sample(&self, now: Instant) -> Sample {
        self.lock().meter.take(now)
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            endpoints: state
                .endpoints
                .iter()
                .map(|e| EndpointLoad {
                    id: e.id,
                    in_flight: e.in_flight,
                    last_active: e.last_active,
                    draining: e.draining,
                })
                .collect(),
            waiting: state.waiters.len() as u32,
            in_flight: state.endpoints.iter().map(|e| e.in_flight).sum(),
            requests: state.requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool(cc: u32) -> Arc<RevisionPool> {
        RevisionPool::new(
            RevisionLabels::new("ns", "svc", "r"),
            PoolConfig {
                container_concurrency: cc,
                nominal_capacity: 100,
                timeouts: RequestTimeouts::total(Duration::from_secs(5)),
                h2c: false,
                in_process: false,
            },
        )
    }

    #[tokio::test]
    async fn queued_request_gets_the_first_endpoint() {
        let p = pool(1);
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|l| l.socket()) }
        });
        tokio::time::timeout(Duration::from_secs(1), p.demanded()).await.expect("demand signalled");
        assert_eq!(p.stats().waiting, 1);
        p.add_endpoint(1, addr(1));
        assert_eq!(waiting.await.expect("join").expect("lease"), Some(addr(1)));
    }

    #[tokio::test]
    async fn concurrency_limit_queues_and_release_hands_over() {
        let p = pool(1);
        p.add_endpoint(1, addr(1));
        let first = p.acquire().await.expect("first");
        let second = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|l| l.endpoint()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(p.stats().waiting, 1);
        assert_eq!(p.stats().in_flight, 1);
        drop(first);
        assert_eq!(second.await.expect("join").expect("lease"), 1);
        assert_eq!(p.stats().in_flight, 0, "the second lease was dropped after use");
    }

    #[tokio::test]
    async fn overflow_beyond_ten_times_capacity_is_refused() {
        let p = pool(1);
        p.add_endpoint(1, addr(1));
        let _busy = p.acquire().await.expect("first");
        let mut queued = Vec::new();
        for _ in 0..100 {
            let p = p.clone();
            queued.push(tokio::spawn(async move { p.acquire().await.map(|_| ()) }));
        }
        while p.stats().waiting < 100 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(p.acquire().await, Err(GatewayError::QueueFull(_))), "minimum depth is 100");
    }

    #[tokio::test]
    async fn the_meter_counts_queued_and_in_flight_requests() {
        let p = pool(1);
        let start = Instant::now();
        p.add_endpoint(1, addr(1));
        let lease = p.acquire().await.expect("lease");
        let queued = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|_| ()) }
        });
        while p.stats().waiting < 1 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sample = p.take_sample(Instant::now());
        let seconds = sample.end.duration_since(start).as_secs_f64();
        assert_eq!(sample.requests, 2);
        assert!(sample.area > 0.05 && sample.area <= 2.0 * seconds, "about 2 in the system: {sample:?}");
        drop(lease);
        queued.await.expect("join").expect("served");
    }

    #[tokio::test]
    async fn abandoned_waiters_do_not_leak_slots() {
        let p = pool(1);
        let abandoned = tokio::time::timeout(Duration::from_millis(10), p.acquire()).await;
        assert!(abandoned.is_err());
        assert_eq!(p.stats().waiting, 0, "a request that gave up leaves the queue (and the demand) at once");
        p.add_endpoint(1, addr(1));
        assert_eq!(p.stats().in_flight, 0);
        let lease = p.acquire().await.expect("slot is free");
        assert_eq!(lease.endpoint(), 1);
    }

    #[tokio::test]
    async fn the_less_loaded_of_two_wins_when_unlimited() {
        let p = pool(0);
        p.add_endpoint(1, addr(1));
        p.add_endpoint(2, addr(2));
        let a = p.acquire().await.expect("a");
        let b = p.acquire().await.expect("b");
        assert_ne!(a.endpoint(), b.endpoint());
    }

    #[tokio::test]
    async fn drain_waits_for_in_flight_and_stops_new_requests() {
        let p = pool(0);
        p.add_endpoint(1, addr(1));
        let lease = p.acquire().await.expect("lease");
        let drained = p.drain(1);
        let next = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|l| l.endpoint()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(p.stats().waiting, 1, "draining endpoint takes no new request");
        drop(lease);
        tokio::time::timeout(Duration::from_secs(1), drained).await.expect("drained");
        p.add_endpoint(2, addr(2));
        assert_eq!(next.await.expect("join").expect("lease"), 2);
    }

    #[tokio::test]
    async fn failing_and_closing_answer_waiters() {
        let p = pool(0);
        let w = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        p.fail_waiters(GatewayError::StartFailed("boom".into()));
        assert!(matches!(w.await.expect("join"), Err(GatewayError::StartFailed(_))));
        p.close(GatewayError::Closed("r".into()));
        assert!(matches!(p.acquire().await, Err(GatewayError::Closed(_))));
    }
}
