//! Where a request goes: the [`Gateway`] (routing table, ingresses registered by path
//! prefix, the async queue, request metrics) that both paths of the data plane ask, the
//! [`Ingress`] trait that serves what the gateway does not forward to a revision (brokers,
//! channels, webhooks, workflows), and the [`AsyncQueue`] trait that takes calls to be
//! answered later.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;

use crate::routes::{Forward, service_from_host};
use crate::{GatewayError, GatewayMetrics, ProxyBody, RevisionLabels, RevisionPool, RoutingTable, Target};

/// Serves requests addressed under a path prefix that the gateway answers itself rather
/// than forwarding to a revision: brokers (`/b/<namespace>/<broker>`), channels, webhook
/// sources and workflows; the Lambda API is meant to come the same way. The
/// implementation lives outside the gateway (eventing, the platform), which keeps the
/// gateway free of their dependencies.
///
/// Requests for an ingress are always served by the hyper path (the relay hands them over),
/// in full: the ingress gets the client's request as it came, with its body unread (or a
/// request from inside the server, through [`crate::LocalClient`], with its body whole).
pub trait Ingress: Send + Sync + 'static {
    /// Whether `rest` — the request's path and query after the prefix the ingress was
    /// registered under — is for this ingress. A request it does not claim is routed to
    /// services like any other.
    fn claims(&self, rest: &str) -> bool;

    /// Answers a request this ingress claimed; `rest` as in [`Ingress::claims`].
    fn handle(&self, rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>>;
}

/// Takes requests for a service that ask to be answered later — `Prefer: respond-async`
/// (Knative's async convention) or a path under [`ASYNC_PREFIX`] (OpenFaaS's) — and queues
/// them durably: the answer is `202` with the call's id once the request is stored. The
/// queue lives outside the gateway (dispatch), which replays each call through the data
/// plane later. Only requests for a service that exists get here (others answer 404).
pub trait AsyncQueue: Send + Sync + 'static {
    /// Queues `req` (origin-form target as the service's route takes it, its `Host` field
    /// as the client sent it) for `namespace/service`.
    fn enqueue(
        &self,
        namespace: String,
        service: String,
        req: Request<ProxyBody>,
    ) -> BoxFuture<'static, Response<Full<Bytes>>>;
}

/// OpenFaaS's async path: `/async-function/<service>[.<namespace>][/path]` queues a call to
/// the service (namespace `default` when not named) for `/path`.
pub const ASYNC_PREFIX: &str = "/async-function/";

/// Whether a `Prefer` field's value asks for `respond-async` (RFC 7240: a list of
/// preferences, each a token maybe with `=value` and `;` parameters).
pub fn prefers_async(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|preference| {
        let token = preference.split(|b| matches!(b, b'=' | b';')).next().unwrap_or_default();
        token.trim_ascii().eq_ignore_ascii_case(b"respond-async")
    })
}

/// What a request was routed to, for its metrics.
pub(crate) enum Chosen {
    Pool(Arc<RevisionPool>),
    /// A service with nothing to serve it.
    Service(RevisionLabels),
}

/// Where a request goes (see [`Gateway::route`]).
pub(crate) enum Routed<'p> {
    /// An ingress; `rest` is the path and query after its prefix.
    Ingress { ingress: Arc<dyn Ingress>, rest: &'p str },
    /// A revision's pool; `forward` is the path to send.
    Pool { pool: Arc<RevisionPool>, service: String, forward: Forward<'p> },
    /// The async queue, for a call to a service; `target`: the path the call is for when
    /// it is not the request's own (an [`ASYNC_PREFIX`] path, rewritten to the service's
    /// `/f/` route).
    Async { queue: Arc<dyn AsyncQueue>, namespace: String, service: String, target: Option<String> },
}

/// Why a request cannot be routed, and whose metrics count it (boxed: the rare path).
pub(crate) type Unrouted = Box<(GatewayError, Option<Chosen>)>;

/// Knative's tag-header routing: a request carrying a tag of the service's traffic block
/// goes to that tag's revision.
pub(crate) const TAG_HEADER: &str = "knative-serving-tag";

/// The data plane's routing: the routing table, the ingresses by path prefix and the
/// request metrics, shared by all gateway threads (see [`crate::serve`]).
pub struct Gateway {
    routes: Arc<RoutingTable>,
    metrics: Arc<GatewayMetrics>,
    /// By prefix, in the order registered.
    ingresses: Vec<(String, Arc<dyn Ingress>)>,
    /// Where calls that ask to be answered later go (none: such requests are served as any).
    async_queue: Option<Arc<dyn AsyncQueue>>,
}

impl Gateway {
    /// A gateway routing to services only; add ingresses with [`Gateway::ingress`].
    pub fn new(routes: Arc<RoutingTable>, metrics: Arc<GatewayMetrics>) -> Gateway {
        Gateway { routes, metrics, ingresses: Vec::new(), async_queue: None }
    }

    /// Queues async calls to services (`Prefer: respond-async`, [`ASYNC_PREFIX`]) in `queue`.
    pub fn async_queue(mut self, queue: Arc<dyn AsyncQueue>) -> Gateway {
        self.async_queue = Some(queue);
        self
    }

    /// Hands requests whose path starts with `prefix` (which starts and ends with `/`, like
    /// `/b/`) to `ingress` when it claims them, unless their host names a service (the
    /// service gets them, as any request by host). Ingress prefixes come before path
    /// routing (`/f/…`); the first one registered that claims a request gets it.
    pub fn ingress(mut self, prefix: impl Into<String>, ingress: Arc<dyn Ingress>) -> Gateway {
        let prefix = prefix.into();
        debug_assert!(
            prefix.starts_with('/') && prefix.ends_with('/'),
            "an ingress prefix is a path segment: {prefix}"
        );
        self.ingresses.push((prefix, ingress));
        self
    }

    /// Where a request for `host` and `path_and_query` goes: an ingress (unless the host
    /// names a service, then the service gets it), else the service named by host or path.
    /// `tag` is the request's `Knative-Serving-Tag` field (Knative's tag-header routing);
    /// `respond_async`: the request prefers `respond-async` (it goes to the async queue when
    /// there is one, as do [`ASYNC_PREFIX`] paths).
    pub(crate) fn route<'p>(
        &self,
        host: Option<&str>,
        path_and_query: &'p str,
        tag: Option<&str>,
        respond_async: bool,
    ) -> Result<Routed<'p>, Unrouted> {
        if let Some(routed) = self.ingress_for(host, path_and_query) {
            return Ok(routed);
        }
        if let Some(queue) = &self.async_queue
            && let Some(call) = path_and_query.strip_prefix(ASYNC_PREFIX)
            && host.is_none_or(|h| service_from_host(h, self.routes.domain()).is_none())
        {
            let end = call.find(['/', '?']).unwrap_or(call.len());
            let (function, rest) = call.split_at(end);
            let (service, namespace) = function.split_once('.').unwrap_or((function, "default"));
            let target = format!("/f/{namespace}/{service}{rest}");
            return self.to_queue(queue, namespace, service, Some(target));
        }
        if respond_async
            && let Some(queue) = &self.async_queue
            && let Some((key, _)) = self.routes.resolve(host, path_and_query)
        {
            return self.to_queue(queue, &key.namespace, &key.service, None);
        }
        let no_route = || {
            let path = path_and_query.to_string();
            Box::new((GatewayError::NoRoute { host: host.unwrap_or_default().to_string(), path }, None))
        };
        let (key, forward) = self.routes.resolve(host, path_and_query).ok_or_else(no_route)?;
        match self.routes.target(&key.namespace, &key.service, tag).ok_or_else(no_route)? {
            Target::Pool(pool) => Ok(Routed::Pool { pool, service: key.service, forward }),
            Target::Unavailable(reason) => {
                let labels = RevisionLabels::new(&key.namespace, &key.service, "");
                Err(Box::new((GatewayError::NotReady(key.service, reason), Some(Chosen::Service(labels)))))
            }
        }
    }

    /// An async call to a service that can take it: the queue; one that does not exist: 404.
    fn to_queue<'p>(
        &self,
        queue: &Arc<dyn AsyncQueue>,
        namespace: &str,
        service: &str,
        target: Option<String>,
    ) -> Result<Routed<'p>, Unrouted> {
        match self.routes.target(namespace, service, None) {
            Some(Target::Pool(_)) => Ok(Routed::Async {
                queue: queue.clone(),
                namespace: namespace.to_string(),
                service: service.to_string(),
                target,
            }),
            Some(Target::Unavailable(reason)) => {
                let labels = RevisionLabels::new(namespace, service, "");
                Err(Box::new((GatewayError::NotReady(service.to_string(), reason), Some(Chosen::Service(labels)))))
            }
            None => {
                let path = format!("{ASYNC_PREFIX}{service}.{namespace}");
                Err(Box::new((GatewayError::NoRoute { host: String::new(), path }, None)))
            }
        }
    }

    /// The ingress that claims a request, if any (a prefix compare per ingress; nothing
    /// more unless one matches).
    fn ingress_for<'p>(&self, host: Option<&str>, path_and_query: &'p str) -> Option<Routed<'p>> {
        let (ingress, rest) = self.ingresses.iter().find_map(|(prefix, ingress)| {
            let rest = path_and_query.strip_prefix(prefix.as_str())?;
            ingress.claims(rest).then_some((ingress, rest))
        })?;
        host.is_none_or(|h| service_from_host(h, self.routes.domain()).is_none())
            .then(|| Routed::Ingress { ingress: ingress.clone(), rest })
    }

    /// Counts an answered request in the metrics of what it was routed to.
    pub(crate) fn observe(&self, chosen: Option<&Chosen>, code: u16, elapsed: std::time::Duration) {
        match chosen {
            Some(Chosen::Pool(pool)) => {
                if let Some(m) = pool.metrics() {
                    m.observe(code, elapsed);
                }
            }
            Some(Chosen::Service(labels)) => self.metrics.observe(labels, code, elapsed),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims `<a>/<b>` (what brokers claim), answers 202.
    struct TwoSegments;

    impl Ingress for TwoSegments {
        fn claims(&self, rest: &str) -> bool {
            rest.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
        }
        fn handle(&self, _: String, _: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
            Box::pin(async { Response::new(Full::default()) })
        }
    }

    /// Answers 202 to every call.
    struct Accepting;

    impl AsyncQueue for Accepting {
        fn enqueue(&self, _: String, _: String, _: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
            Box::pin(async { Response::new(Full::default()) })
        }
    }

    fn routed_as(gateway: &Gateway, host: Option<&str>, path: &str, respond_async: bool) -> String {
        match gateway.route(host, path, None, respond_async) {
            Ok(Routed::Ingress { rest, .. }) => format!("ingress {rest}"),
            Ok(Routed::Pool { service, forward, .. }) => format!("service {service} {forward:?}"),
            Ok(Routed::Async { namespace, service, target, .. }) => format!("queue {namespace}/{service} {target:?}"),
            Err(unrouted) => format!("error {}", unrouted.0.status().as_u16()),
        }
    }

    fn routed(gateway: &Gateway, host: Option<&str>, path: &str) -> String {
        routed_as(gateway, host, path, false)
    }

    fn one_service() -> Arc<RoutingTable> {
        let routes = Arc::new(RoutingTable::new("localhost"));
        let pool = RevisionPool::new(
            RevisionLabels::new("ns", "svc", "svc-1"),
            crate::PoolConfig {
                container_concurrency: 0,
                nominal_capacity: 100,
                timeouts: crate::RequestTimeouts::total(std::time::Duration::from_secs(1)),
                h2c: false,
                in_process: false,
            },
        );
        let key = crate::RouteKey { namespace: "ns".into(), service: "svc".into() };
        routes.set(key, Some(crate::Route::single(Target::Pool(pool))));
        routes
    }

    #[test]
    fn prefer_respond_async_is_found_among_preferences() {
        assert!(prefers_async(b"respond-async"));
        assert!(prefers_async(b"return=minimal, Respond-Async ; x=1"));
        assert!(prefers_async(b"respond-async, wait=10"));
        assert!(!prefers_async(b"reply"));
        assert!(!prefers_async(b"respond-asynchronously"));
    }

    #[test]
    fn async_calls_go_to_the_queue_only_for_services_that_exist() {
        let gateway = Gateway::new(one_service(), Arc::new(GatewayMetrics::default())).async_queue(Arc::new(Accepting));
        assert_eq!(routed_as(&gateway, None, "/f/ns/svc/x", true), "queue ns/svc None");
        assert_eq!(routed_as(&gateway, Some("svc.ns.localhost"), "/x", true), "queue ns/svc None");
        assert_eq!(routed(&gateway, None, "/f/ns/svc/x"), "service svc Stripped(\"/x\")", "without Prefer: served");
        assert_eq!(
            routed(&gateway, None, "/async-function/svc.ns/hook?a=1"),
            "queue ns/svc Some(\"/f/ns/svc/hook?a=1\")"
        );
        assert_eq!(routed(&gateway, None, "/async-function/other"), "error 404", "no such service: at once");
        assert_eq!(routed_as(&gateway, None, "/f/ns/other/", true), "error 404");
        let without = Gateway::new(one_service(), Arc::new(GatewayMetrics::default()));
        assert_eq!(routed_as(&without, None, "/f/ns/svc/x", true), "service svc Stripped(\"/x\")", "no queue");
    }

    #[test]
    fn ingresses_by_prefix_unless_the_host_names_a_service() {
        let gateway =
            Gateway::new(one_service(), Arc::new(GatewayMetrics::default())).ingress("/b/", Arc::new(TwoSegments));
        assert_eq!(routed(&gateway, None, "/b/ns/events"), "ingress ns/events");
        assert_eq!(routed(&gateway, Some("127.0.0.1:8080"), "/b/ns/events?x=1"), "ingress ns/events?x=1");
        assert_eq!(routed(&gateway, Some("svc.ns.localhost"), "/b/ns/events"), "service svc Unchanged");
        assert_eq!(routed(&gateway, None, "/b/ns/events/more"), "error 404", "not claimed: routed as any request");
        assert_eq!(routed(&gateway, None, "/f/ns/svc/b/ns/events"), "service svc Stripped(\"/b/ns/events\")");
        let without = Gateway::new(Arc::new(RoutingTable::new("localhost")), Arc::new(GatewayMetrics::default()));
        assert_eq!(routed(&without, None, "/b/ns/events"), "error 404");
    }
}
