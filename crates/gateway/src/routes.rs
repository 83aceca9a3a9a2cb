//! The routing table and the pure functions that map a request's host and path to a service.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

use crate::RevisionPool;

/// A service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub namespace: String,
    pub service: String,
}

/// Where a request goes once its revision is chosen.
#[derive(Clone)]
pub enum Target {
    Pool(Arc<RevisionPool>),
    /// Nothing can serve it; requests get 503 with this reason.
    Unavailable(String),
}

/// A service's routing: revisions weighted by percent (summing to 100), plus tags that each
/// name one revision.
#[derive(Clone)]
pub struct Route {
    pub weighted: Vec<(u32, Target)>,
    pub tags: HashMap<String, Target>,
}

impl Route {
    /// All traffic to one target.
    pub fn single(target: Target) -> Route {
        Route { weighted: vec![(100, target)], tags: HashMap::new() }
    }

    /// Picks a target by weight; `roll` is uniform in `0..100`.
    pub fn pick(&self, roll: u32) -> Option<&Target> {
        let mut cumulative = 0;
        for (percent, target) in &self.weighted {
            cumulative += percent;
            if roll < cumulative {
                return Some(target);
            }
        }
        self.weighted.last().map(|(_, t)| t)
    }
}

/// Routes by namespace, then service name (lookups by `&str`, no allocation).
type Routes = HashMap<String, HashMap<String, Route>>;

/// Routes by service, swapped atomically as a whole so that lookups never lock.
pub struct RoutingTable {
    domain: String,
    routes: ArcSwap<Routes>,
}

impl RoutingTable {
    pub fn new(domain: impl Into<String>) -> RoutingTable {
        RoutingTable { domain: domain.into().to_ascii_lowercase(), routes: ArcSwap::from_pointee(HashMap::new()) }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Sets or (with `None`) removes the route of one service.
    pub fn set(&self, key: RouteKey, route: Option<Route>) {
        self.routes.rcu(|current| {
            let mut next = Routes::clone(current);
            match &route {
                Some(r) => {
                    next.entry(key.namespace.clone()).or_default().insert(key.service.clone(), r.clone());
                }
                None => {
                    if let Some(services) = next.get_mut(&key.namespace) {
                        services.remove(&key.service);
                        if services.is_empty() {
                            next.remove(&key.namespace);
                        }
                    }
                }
            }
            next
        });
    }

    pub fn get(&self, key: &RouteKey) -> Option<Route> {
        self.routes.load().get(&key.namespace).and_then(|s| s.get(&key.service)).cloned()
    }

    /// The target for a request to `name` in `namespace`: the service of that name (its
    /// revision tagged `tag` when the request asked for one with `Knative-Serving-Tag` and
    /// the tag exists, else a revision picked by weight), else a tag route `<tag>-<service>`.
    pub fn target(&self, namespace: &str, name: &str, tag: Option<&str>) -> Option<Target> {
        let routes = self.routes.load();
        let services = routes.get(namespace)?;
        if let Some(route) = services.get(name) {
            if let Some(tagged) = tag.and_then(|t| route.tags.get(t.trim())) {
                return Some(tagged.clone());
            }
            return route.pick(fastrand::u32(..100)).cloned();
        }
        name.match_indices('-').find_map(|(i, _)| {
            let (tag, service) = (&name[..i], &name[i + 1..]);
            services.get(service).and_then(|r| r.tags.get(tag)).cloned()
        })
    }

    /// Finds the service a request is for: by host first (a host naming a service always
    /// wins), then by the `/f/<namespace>/<service>/…` path. Returns the path to forward.
    pub fn resolve<'a>(&self, host: Option<&str>, path: &'a str) -> Option<(RouteKey, Forward<'a>)> {
        if let Some(key) = host.and_then(|h| service_from_host(h, &self.domain)) {
            return Some((key, Forward::Unchanged));
        }
        service_from_path(path).map(|(key, rest)| (key, Forward::Stripped(rest)))
    }
}

/// The path to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward<'a> {
    Unchanged,
    /// The routing prefix is removed; the rest (possibly empty, meaning `/`) is forwarded.
    Stripped(&'a str),
}

/// `<service>.<namespace>.<domain>[:port]` → key.
pub fn service_from_host(host: &str, domain: &str) -> Option<RouteKey> {
    let host =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (service, namespace) = labels.split_once('.')?;
    if service.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some(RouteKey { namespace: namespace.into(), service: service.into() })
}

/// `/f/<namespace>/<service>[/rest]` → key and `/rest` (query included).
pub fn service_from_path(path: &str) -> Option<(RouteKey, &str)> {
    let rest = path.strip_prefix("/f/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (service, rest) = rest.split_at(end);
    if namespace.is_empty() || service.is_empty() {
        return None;
    }
    Some((RouteKey { namespace: namespace.into(), service: service.into() }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, s: &str) -> RouteKey {
        RouteKey { namespace: ns.into(), service: s.into() }
    }

    #[test]
    fn hosts() {
        assert_eq!(service_from_host("hello.default.localhost", "localhost"), Some(key("default", "hello")));
        assert_eq!(service_from_host("Hello.Default.localhost:8080", "localhost"), Some(key("default", "hello")));
        assert_eq!(service_from_host("hello.default.example.com.", "example.com"), Some(key("default", "hello")));
        assert_eq!(service_from_host("localhost:8080", "localhost"), None);
        assert_eq!(service_from_host("127.0.0.1:8080", "localhost"), None);
        assert_eq!(service_from_host("a.b.c.localhost", "localhost"), None);
        assert_eq!(service_from_host("hello.defaultlocalhost", "localhost"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(service_from_path("/f/default/hello"), Some((key("default", "hello"), "")));
        assert_eq!(service_from_path("/f/default/hello/a/b?x=1"), Some((key("default", "hello"), "/a/b?x=1")));
        assert_eq!(service_from_path("/f/default/hello?x=1"), Some((key("default", "hello"), "?x=1")));
        assert_eq!(service_from_path("/f/default/"), None);
        assert_eq!(service_from_path("/g/default/hello"), None);
    }

    #[test]
    fn weights_and_tags() {
        let t = RoutingTable::new("localhost");
        let pool = |rev: &str| {
            crate::RevisionPool::new(
                crate::RevisionLabels::new("ns", "svc", rev),
                crate::PoolConfig {
                    container_concurrency: 0,
                    nominal_capacity: 100,
                    timeouts: crate::RequestTimeouts::total(std::time::Duration::from_secs(1)),
                    h2c: false,
                    in_process: false,
                },
            )
        };
        let (old, new) = (pool("svc-1"), pool("svc-2"));
        let mut route = Route {
            weighted: vec![(90, Target::Pool(old.clone())), (10, Target::Pool(new.clone()))],
            tags: HashMap::new(),
        };
        route.tags.insert("canary".into(), Target::Pool(new.clone()));
        let name = |target: Option<&Target>| match target {
            Some(Target::Pool(p)) => p.name().to_string(),
            _ => String::new(),
        };
        assert_eq!(name(route.pick(0)), "svc-1");
        assert_eq!(name(route.pick(89)), "svc-1");
        assert_eq!(name(route.pick(90)), "svc-2");
        assert_eq!(name(route.pick(99)), "svc-2");
        t.set(key("ns", "svc"), Some(route));
        assert_eq!(name(t.target("ns", "canary-svc", None).as_ref()), "svc-2");
        assert!(t.target("ns", "nope-svc", None).is_none());
        assert!(t.target("other", "svc", None).is_none());
        // Knative-Serving-Tag: the tagged revision every time; an unknown tag routes by weight.
        assert!((0..100).all(|_| name(t.target("ns", "svc", Some("canary")).as_ref()) == "svc-2"));
        let by_weight = (0..1_000).filter(|_| name(t.target("ns", "svc", Some("nope")).as_ref()) == "svc-1").count();
        assert!(by_weight > 0);
        let to_new = (0..10_000).filter(|_| name(t.target("ns", "svc", None).as_ref()) == "svc-2").count();
        assert!((800..1200).contains(&to_new), "about 10 %: {to_new}");
    }

    #[test]
    fn host_wins_over_path() {
        let t = RoutingTable::new("localhost");
        let (k, f) = t.resolve(Some("a.ns.localhost"), "/f/other/b").expect("route");
        assert_eq!((k, f), (key("ns", "a"), Forward::Unchanged));
        let (k, f) = t.resolve(Some("127.0.0.1:1"), "/f/other/b/x").expect("route");
        assert_eq!((k, f), (key("other", "b"), Forward::Stripped("/x")));
    }
}
