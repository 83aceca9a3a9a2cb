//! Where a request goes: the [`Gateway`] (routing table, ingresses registered by path
//! prefix, request metrics) that both paths of the data plane ask, and the [`Ingress`]
//! trait that serves what the gateway does not forward to a revision (brokers today).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;

use crate::routes::{Forward, service_from_host};
use crate::{GatewayError, GatewayMetrics, ProxyBody, RevisionLabels, RevisionPool, RoutingTable, Target};

/// Serves requests addressed under a path prefix that the gateway answers itself rather
/// than forwarding to a revision: brokers (`/b/<namespace>/<broker>`) today; channels,
/// webhooks, the Lambda API and async invocation are meant to come the same way. The
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
}

impl Gateway {
    /// A gateway routing to services only; add ingresses with [`Gateway::ingress`].
    pub fn new(routes: Arc<RoutingTable>, metrics: Arc<GatewayMetrics>) -> Gateway {
        Gateway { routes, metrics, ingresses: Vec::new() }
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
    /// `tag` is the request's `Knative-Serving-Tag` field (Knative's tag-header routing).
    pub(crate) fn route<'p>(
        &self,
        host: Option<&str>,
        path_and_query: &'p str,
        tag: Option<&str>,
    ) -> Result<Routed<'p>, Unrouted> {
        if let Some(routed) = self.ingress_for(host, path_and_query) {
            return Ok(routed);
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

    fn routed(gateway: &Gateway, host: Option<&str>, path: &str) -> String {
        match gateway.route(host, path, None) {
            Ok(Routed::Ingress { rest, .. }) => format!("ingress {rest}"),
            Ok(Routed::Pool { service, forward, .. }) => format!("service {service} {forward:?}"),
            Err(unrouted) => format!("error {}", unrouted.0.status().as_u16()),
        }
    }

    #[test]
    fn ingresses_by_prefix_unless_the_host_names_a_service() {
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
        let gateway = Gateway::new(routes, Arc::new(GatewayMetrics::default())).ingress("/b/", Arc::new(TwoSegments));
        assert_eq!(routed(&gateway, None, "/b/ns/events"), "ingress ns/events");
        assert_eq!(routed(&gateway, Some("127.0.0.1:8080"), "/b/ns/events?x=1"), "ingress ns/events?x=1");
        assert_eq!(routed(&gateway, Some("svc.ns.localhost"), "/b/ns/events"), "service svc Unchanged");
        assert_eq!(routed(&gateway, None, "/b/ns/events/more"), "error 404", "not claimed: routed as any request");
        assert_eq!(routed(&gateway, None, "/f/ns/svc/b/ns/events"), "service svc Stripped(\"/b/ns/events\")");
        let without = Gateway::new(Arc::new(RoutingTable::new("localhost")), Arc::new(GatewayMetrics::default()));
        assert_eq!(routed(&without, None, "/b/ns/events"), "error 404");
    }
}
