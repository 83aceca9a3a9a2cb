//! The brokers' durable HTTP ingress (`/b/<namespace>/<broker>` on the gateway): an
//! accepted event is answered 202 only after the group commit that stores it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, header};
use serval_gateway::{Ingress as GatewayIngress, ProxyBody};

use crate::DispatchError;
use crate::delivery::{Dispatchers, Ttl};

/// Largest request body the ingress reads.
const MAX_BODY: usize = 10 << 20;

/// The broker ingress.
pub struct Ingress {
    dispatchers: Arc<Dispatchers>,
}

impl Ingress {
    pub fn new(dispatchers: Arc<Dispatchers>) -> Arc<Ingress> {
        Arc::new(Ingress { dispatchers })
    }
}

fn answer(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = if message.is_empty() {
        Bytes::new()
    } else {
        let reason = status.canonical_reason().unwrap_or("");
        Bytes::from(
            serde_json::json!({ "error": { "code": status.as_u16(), "reason": reason, "message": message } })
                .to_string(),
        )
    };
    let mut builder = Response::builder().status(status).header(header::ALLOW, "POST, OPTIONS");
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(body)).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

impl Ingress {
    async fn accept(&self, namespace: String, broker: String, req: Request<ProxyBody>) -> Response<Full<Bytes>> {
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
        let (parts, body) = req.into_parts();
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body could not be read ({e}); limit {MAX_BODY} bytes"),
                );
            }
        };
        let events = match serval_eventing::decode_request(&parts.headers, bytes) {
            Ok(events) => events,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match self.dispatchers.append(&namespace, &broker, events, Ttl::KeepOrDefault).await {
            Ok(()) => answer(StatusCode::ACCEPTED, ""),
            Err(DispatchError::BadEvent(why)) => answer(StatusCode::BAD_REQUEST, &why),
            Err(e @ DispatchError::NotFound { .. }) => answer(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &format!("the event was not stored: {e}")),
        }
    }
}

/// Where the gateway hands broker requests: `/b/<namespace>/<broker>`.
pub const PREFIX: &str = "/b/";

/// `<namespace>/<broker>` (a trailing `/` and a query allowed), the path after [`PREFIX`]
/// → namespace and broker.
fn broker_from_rest(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (namespace, broker) = rest.split_once('/')?;
    (!namespace.is_empty() && !broker.is_empty() && !broker.contains('/')).then_some((namespace, broker))
}

impl GatewayIngress for Ingress {
    fn claims(&self, rest: &str) -> bool {
        broker_from_rest(rest).is_some()
    }

    fn handle(&self, rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let ingress = Ingress { dispatchers: self.dispatchers.clone() };
        async move {
            match broker_from_rest(&rest) {
                Some((namespace, broker)) => ingress.accept(namespace.to_string(), broker.to_string(), req).await,
                None => answer(StatusCode::NOT_FOUND, "not a broker's address"),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::broker_from_rest;

    #[test]
    fn broker_paths() {
        assert_eq!(broker_from_rest("default/events"), Some(("default", "events")));
        assert_eq!(broker_from_rest("default/events/?x=1"), Some(("default", "events")));
        assert_eq!(broker_from_rest("default/events/more"), None);
        assert_eq!(broker_from_rest("default"), None);
        assert_eq!(broker_from_rest("/default/events"), None);
    }
}
