//! Per-revision pool of instance endpoints: in-flight accounting, the concurrency limit and
//! the queue of requests waiting for capacity (including while the revision is at zero).
//!
//! Invariant: an endpoint's `in_flight` equals the number of live [`Lease`]s on it. A lease
//! handed to a waiter that has gone away is taken back without touching the count.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, oneshot};

use crate::GatewayError;

/// Limits of one revision's pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Requests one instance may serve at once; 0 = unlimited.
    pub container_concurrency: u32,
    /// Requests that may wait for capacity before new ones get 503.
    pub queue_limit: usize,
}

struct Endpoint {
    id: u64,
    addr: SocketAddr,
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
}

/// The endpoints of one revision and the requests waiting for them.
pub struct RevisionPool {
    name: String,
    config: PoolConfig,
    state: Mutex<State>,
    demand: Notify,
}

/// Permission to send one request to one endpoint; releases its slot when dropped.
pub struct Lease {
    pool: Arc<RevisionPool>,
    endpoint: u64,
    addr: SocketAddr,
    armed: bool,
}

impl Lease {
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    pub fn new(name: impl Into<String>, config: PoolConfig) -> Arc<RevisionPool> {
        Arc::new(RevisionPool {
            name: name.into(),
            config,
            state: Mutex::new(State {
                endpoints: Vec::new(),
                waiters: VecDeque::new(),
                closed: None,
                requests: 0,
            }),
            demand: Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections never panic half-way; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self, e: &Endpoint) -> bool {
        !e.draining
            && (self.config.container_concurrency == 0
                || e.in_flight < self.config.container_concurrency)
    }

    /// Picks an endpoint with room: first available when the limit is small (keeps
    /// instances warm in order), otherwise the least loaded.
    fn pick(&self, state: &mut State) -> Option<usize> {
        let candidates = state
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| self.has_room(e));
        if self.config.container_concurrency != 0 && self.config.container_concurrency <= 3 {
            candidates.map(|(i, _)| i).next()
        } else {
            candidates.min_by_key(|(_, e)| e.in_flight).map(|(i, _)| i)
        }
    }

    fn lease(self: &Arc<Self>, e: &mut Endpoint) -> Lease {
        e.in_flight += 1;
        Lease {
            pool: self.clone(),
            endpoint: e.id,
            addr: e.addr,
            armed: true,
        }
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
            if let Some(i) = self.pick(&mut state) {
                let endpoint = &mut state.endpoints[i];
                return Ok(self.lease(endpoint));
            }
            if state.waiters.len() >= self.config.queue_limit {
                return Err(GatewayError::QueueFull(self.name.clone()));
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            rx
        };
        self.demand.notify_one();
        wait.await
            .unwrap_or_else(|_| Err(GatewayError::Closed(self.name.clone())))
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
    }

    /// Adds a ready endpoint and gives it queued requests.
    pub fn add_endpoint(self: &Arc<Self>, id: u64, addr: SocketAddr) {
        let mut state = self.lock();
        state.endpoints.push(Endpoint {
            id,
            addr,
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
    }

    /// Answers every queued request with `err` (e.g. the instance could not start).
    pub fn fail_waiters(&self, err: GatewayError) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        for w in waiters {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Refuses new requests and fails queued ones; in-flight ones finish.
    pub fn close(&self, err: GatewayError) {
        self.lock().closed = Some(err.clone());
        self.fail_waiters(err);
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

    fn pool(cc: u32, queue: usize) -> Arc<RevisionPool> {
        RevisionPool::new(
            "r",
            PoolConfig {
                container_concurrency: cc,
                queue_limit: queue,
            },
        )
    }

    #[tokio::test]
    async fn queued_request_gets_the_first_endpoint() {
        let p = pool(1, 10);
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|l| l.addr()) }
        });
        tokio::time::timeout(Duration::from_secs(1), p.demanded())
            .await
            .expect("demand signalled");
        assert_eq!(p.stats().waiting, 1);
        p.add_endpoint(1, addr(1));
        assert_eq!(waiting.await.expect("join").expect("lease"), addr(1));
    }

    #[tokio::test]
    async fn concurrency_limit_queues_and_release_hands_over() {
        let p = pool(1, 10);
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
        assert_eq!(
            p.stats().in_flight,
            0,
            "the second lease was dropped after use"
        );
    }

    #[tokio::test]
    async fn overflow_is_refused() {
        let p = pool(1, 1);
        p.add_endpoint(1, addr(1));
        let _busy = p.acquire().await.expect("first");
        let _queued = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(matches!(p.acquire().await, Err(GatewayError::QueueFull(_))));
    }

    #[tokio::test]
    async fn abandoned_waiters_do_not_leak_slots() {
        let p = pool(1, 10);
        let abandoned = tokio::time::timeout(Duration::from_millis(10), p.acquire()).await;
        assert!(abandoned.is_err());
        p.add_endpoint(1, addr(1));
        assert_eq!(p.stats().in_flight, 0);
        let lease = p.acquire().await.expect("slot is free");
        assert_eq!(lease.endpoint(), 1);
    }

    #[tokio::test]
    async fn least_loaded_endpoint_wins_when_unlimited() {
        let p = pool(0, 10);
        p.add_endpoint(1, addr(1));
        p.add_endpoint(2, addr(2));
        let a = p.acquire().await.expect("a");
        let b = p.acquire().await.expect("b");
        assert_ne!(a.endpoint(), b.endpoint());
    }

    #[tokio::test]
    async fn drain_waits_for_in_flight_and_stops_new_requests() {
        let p = pool(0, 10);
        p.add_endpoint(1, addr(1));
        let lease = p.acquire().await.expect("lease");
        let drained = p.drain(1);
        let next = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|l| l.endpoint()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            p.stats().waiting,
            1,
            "draining endpoint takes no new request"
        );
        drop(lease);
        tokio::time::timeout(Duration::from_secs(1), drained)
            .await
            .expect("drained");
        p.add_endpoint(2, addr(2));
        assert_eq!(next.await.expect("join").expect("lease"), 2);
    }

    #[tokio::test]
    async fn failing_and_closing_answer_waiters() {
        let p = pool(0, 10);
        let w = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        p.fail_waiters(GatewayError::StartFailed("boom".into()));
        assert!(matches!(
            w.await.expect("join"),
            Err(GatewayError::StartFailed(_))
        ));
        p.close(GatewayError::Closed("r".into()));
        assert!(matches!(p.acquire().await, Err(GatewayError::Closed(_))));
    }
}
