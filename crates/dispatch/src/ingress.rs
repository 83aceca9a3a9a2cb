//! The durable HTTP ingress of brokers (`/b/<namespace>/<broker>` on the gateway) and
//! channels (`/c/<namespace>/<channel>`): an accepted event is answered 202 only after the
//! group commit that stores it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, header};
use serval_eventing::CloudEvent;
use serval_gateway::{Ingress as GatewayIngress, ProxyBody};

use crate::DispatchError;
use crate::delivery::{Dispatchers, LogRef, Ttl};

/// Largest request body the ingress reads.
const MAX_BODY: usize = 10 << 20;

/// Which logs an ingress takes events for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Broker,
    Channel,
}

impl LogKind {
    /// Where the gateway hands its requests: `/b/` or `/c/`, then `<namespace>/<name>`.
    pub fn prefix(self) -> &'static str {
        match self {
            LogKind::Broker => "/b/",
            LogKind::Channel => "/c/",
        }
    }

    fn log(self, namespace: &str, name: &str) -> LogRef {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        match self {
            LogKind::Broker => LogRef::Broker { namespace, name },
            LogKind::Channel => LogRef::Channel { namespace, name },
        }
    }
}

/// The ingress of brokers or of channels.
pub struct Ingress {
    dispatchers: Arc<Dispatchers>,
    kind: LogKind,
}

impl Ingress {
    pub fn new(dispatchers: Arc<Dispatchers>, kind: LogKind) -> Arc<Ingress> {
        Arc::new(Ingress { dispatchers, kind })
    }
}

/// An answer of one of the gateway's ingresses (brokers, channels, webhooks, workflows):
/// `status`, the methods it takes in `Allow`, and, with a message, Kubernetes-style JSON
/// (`{"error": {"code", "reason", "message"}}`).
pub fn answer_with(status: StatusCode, allow: &'static str, message: &str) -> Response<Full<Bytes>> {
    let body = if message.is_empty() {
        Bytes::new()
    } else {
        let reason = status.canonical_reason().unwrap_or("");
        Bytes::from(
            serde_json::json!({ "error": { "code": status.as_u16(), "reason": reason, "message": message } })
                .to_string(),
        )
    };
    let mut builder = Response::builder().status(status).header(header::ALLOW, allow);
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(body)).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn answer(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    answer_with(status, "POST, OPTIONS", message)
}

impl Ingress {
    async fn accept(&self, log: LogRef, req: Request<ProxyBody>) -> Response<Full<Bytes>> {
        match *req.method() {
            Method::POST => {}
            // CloudEvents' webhook validation handshake.
            Method::OPTIONS => {
                let mut ok = answer(StatusCode::OK, "");
                ok.headers_mut().insert("webhook-allowed-origin", header::HeaderValue::from_static("*"));
                return ok;
            }
            _ => return answer(StatusCode::METHOD_NOT_ALLOWED, "send events with POST"),
        }
        let events = match events_of(req, "POST, OPTIONS").await {
            Ok(events) => events,
            Err(refused) => return refused,
        };
        match self.dispatchers.append_to(&log, events, Ttl::KeepOrDefault).await {
            Ok(()) => answer(StatusCode::ACCEPTED, ""),
            Err(DispatchError::BadEvent(why)) => answer(StatusCode::BAD_REQUEST, &why),
            Err(e @ DispatchError::NotFound { .. }) => answer(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &format!("the event was not stored: {e}")),
        }
    }
}

/// The CloudEvents of a request (binary, structured or batched mode; body up to
/// [`MAX_BODY`]), or the answer that refuses it (413, 400) with `allow` in `Allow`.
pub async fn events_of(req: Request<ProxyBody>, allow: &'static str) -> Result<Vec<CloudEvent>, Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let why = format!("the body could not be read ({e}); limit {MAX_BODY} bytes");
            return Err(answer_with(StatusCode::PAYLOAD_TOO_LARGE, allow, &why));
        }
    };
    serval_eventing::decode_request(&parts.headers, bytes)
        .map_err(|e| answer_with(StatusCode::BAD_REQUEST, allow, &e.to_string()))
}

/// `<namespace>/<name>` (a trailing `/` and a query allowed), the path after an
/// ingress's prefix → namespace and name.
pub fn namespace_and_name(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (namespace, name) = rest.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

impl GatewayIngress for Ingress {
    fn claims(&self, rest: &str) -> bool {
        namespace_and_name(rest).is_some()
    }

    fn handle(&self, rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let ingress = Ingress { dispatchers: self.dispatchers.clone(), kind: self.kind };
        async move {
            match namespace_and_name(&rest) {
                Some((namespace, name)) => ingress.accept(ingress.kind.log(namespace, name), req).await,
                None => answer(StatusCode::NOT_FOUND, "not the address of a broker or channel"),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_and_name;

    #[test]
    fn log_paths() {
        assert_eq!(namespace_and_name("default/events"), Some(("default", "events")));
        assert_eq!(namespace_and_name("default/events/?x=1"), Some(("default", "events")));
        assert_eq!(namespace_and_name("default/events/more"), None);
        assert_eq!(namespace_and_name("default"), None);
        assert_eq!(namespace_and_name("/default/events"), None);
    }
}
