//! WebhookSource: any POST to `/s/<namespace>/<name>` on the gateway becomes a CloudEvent
//! (its body the data, its content type the event's, chosen headers as extensions, the
//! type from `spec.type` with `{header:Name}` filled in). With a secret, the request must
//! carry the body's HMAC-SHA256 (`X-Hub-Signature-256: sha256=<hex>`, GitHub's, or the
//! same in `X-Signature-256`), else 401. An accepted request is answered 202 only after
//! its event is committed to the source's inbox; the task delivers the inbox to the sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serval_eventing::{CloudEvent, Data, JsonData};
use serval_gateway::{Ingress as GatewayIngress, ProxyBody};
use serval_model::{Resource, WebhookSource};
use tokio::sync::watch;

use super::{SourceContext, SourceIngress, SourceTask, Sources};
use crate::DispatchError;
use crate::ingress::namespace_and_name;

/// The event type when `spec.type` gives none.
pub const DEFAULT_WEBHOOK_TYPE: &str = "dev.serval.webhook";
/// The largest request body taken.
const MAX_BODY: usize = 10 << 20;
/// Where the gateway hands webhook requests.
pub const PREFIX: &str = "/s/";

/// A WebhookSource made ready to run.
pub struct WebhookTask {
    event_type: String,
    /// Headers carried as extensions: (header name, extension name).
    headers: Vec<(String, String)>,
    secret: Option<Vec<u8>>,
    source: String,
}

/// Checks a WebhookSource and makes its task; `secret` is its resolved `spec.secret`.
pub fn task(source: &WebhookSource, secret: Option<Vec<u8>>) -> Result<Arc<dyn SourceTask>, DispatchError> {
    let spec = &source.spec;
    let mut headers = Vec::new();
    for (i, header) in spec.headers.iter().enumerate() {
        let extension: String =
            header.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(20).collect();
        if extension.is_empty() || http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(DispatchError::invalid_field(
                WebhookSource::KIND,
                format!("spec.headers[{i}]"),
                format!("{header:?} is not a header name"),
            ));
        }
        headers.push((header.to_ascii_lowercase(), extension));
    }
    let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
    Ok(Arc::new(WebhookTask {
        event_type: spec.event_type.clone().unwrap_or_else(|| DEFAULT_WEBHOOK_TYPE.into()),
        headers,
        secret,
        source: format!("/apis/sources.serval.dev/v1alpha1/namespaces/{namespace}/webhooksources/{name}"),
    }))
}

impl SourceTask for WebhookTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            context.health.ready();
            let inbox = context.inbox.clone();
            inbox.drain(&context, &mut stopped).await;
        })
    }

    fn ingress(self: Arc<Self>) -> Option<Arc<dyn SourceIngress>> {
        Some(self)
    }
}

impl WebhookTask {
    /// Whether the body's signature (when a secret is set) is right.
    fn verify(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
        let Some(secret) = &self.secret else { return Ok(()) };
        let given = ["x-hub-signature-256", "x-signature-256"]
            .iter()
            .find_map(|h| headers.get(*h))
            .ok_or("the request is not signed (X-Hub-Signature-256: sha256=<hex>)")?;
        let hex = given
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix("sha256="))
            .ok_or("the signature is not sha256=<hex>")?;
        let tag = decode_hex(hex).ok_or("the signature is not hexadecimal")?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        aws_lc_rs::hmac::verify(&key, body, &tag).map_err(|_| "the signature does not match the body".to_string())
    }

    /// `{header:Name}` in the type filled in from the request.
    fn event_type(&self, headers: &http::HeaderMap) -> String {
        let mut out = String::new();
        let mut rest = self.event_type.as_str();
        while let Some(start) = rest.find("{header:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{header:".len()..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let value = headers.get(&after[..end]).and_then(|v| v.to_str().ok()).unwrap_or("");
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

impl SourceIngress for WebhookTask {
    fn accept(&self, headers: &http::HeaderMap, body: Bytes) -> Result<CloudEvent, (u16, String)> {
        self.verify(headers, &body).map_err(|why| (401, why))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = ["x-github-delivery", "x-request-id"]
            .iter()
            .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
                format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
            });
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let mut builder = CloudEvent::builder()
            .id(id)
            .source(self.source.clone())
            .event_type(self.event_type(headers))
            .time(humantime::format_rfc3339_micros(SystemTime::now()).to_string());
        for (header, extension) in &self.headers {
            if let Some(value) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) {
                builder = builder.extension(extension.clone(), value.to_string());
            }
        }
        if !body.is_empty() {
            let json = content_type.is_some_and(|t| t.starts_with("application/json") || t.contains("+json"));
            let data = match json.then(|| JsonData::parse_bytes(&body)) {
                Some(Ok(value)) => Data::Json(value),
                _ => Data::Binary(body),
            };
            builder = builder.datacontenttype(content_type.unwrap_or("application/octet-stream")).data(data);
        }
        builder.build().map_err(|e| (400, e.to_string()))
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The gateway's `/s/<namespace>/<name>`: webhooks of running WebhookSources.
pub struct WebhookIngress {
    sources: Arc<Sources>,
}

impl WebhookIngress {
    pub fn new(sources: Arc<Sources>) -> Arc<WebhookIngress> {
        Arc::new(WebhookIngress { sources })
    }
}

fn answer(status: u16, message: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::ingress::answer_with(status, "POST", message)
}

impl GatewayIngress for WebhookIngress {
    fn claims(&self, rest: &str) -> bool {
        namespace_and_name(rest).is_some()
    }

    fn handle(&self, rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let sources = self.sources.clone();
        async move {
            let Some((namespace, name)) = namespace_and_name(&rest) else {
                return answer(404, "not the address of a webhook source");
            };
            if req.method() != Method::POST {
                return answer(405, "send webhooks with POST");
            }
            let Some((ingress, inbox)) = sources.ingress(WebhookSource::KIND, namespace, name) else {
                return answer(404, &format!("webhook source {namespace}/{name} not found (or not running)"));
            };
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => return answer(413, &format!("the body could not be read ({e}); limit {MAX_BODY} bytes")),
            };
            let event = match ingress.accept(&parts.headers, body) {
                Ok(event) => event,
                Err((status, why)) => return answer(status, &why),
            };
            match inbox.append(&[event]).await {
                Ok(()) => answer(202, ""),
                Err(e) => answer(500, &format!("the event was not stored: {e}")),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(secret: Option<&[u8]>, event_type: Option<&str>) -> WebhookTask {
        WebhookTask {
            event_type: event_type.unwrap_or(DEFAULT_WEBHOOK_TYPE).into(),
            headers: vec![("x-github-event".into(), "xgithubevent".into())],
            secret: secret.map(<[u8]>::to_vec),
            source: "/s".into(),
        }
    }

    #[test]
    fn signatures_are_checked_and_types_filled_in() {
        let task = webhook(Some(b"It's a Secret to Everybody"), Some("com.github.{header:X-GitHub-Event}"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-github-event", "push".parse().expect("value"));
        headers.insert("content-type", "application/json".parse().expect("value"));
        let body = Bytes::from_static(b"Hello, World!");
        assert_eq!(task.accept(&headers, body.clone()).expect_err("unsigned").0, 401);
        // GitHub's documented example of this secret and payload.
        headers.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".parse().expect("value"),
        );
        let event = task.accept(&headers, body.clone()).expect("signed");
        assert_eq!(event.event_type(), "com.github.push");
        assert_eq!(event.extension("xgithubevent").and_then(|v| v.as_str()), Some("push"));
        headers.insert("x-hub-signature-256", "sha256=00".parse().expect("value"));
        assert_eq!(task.accept(&headers, body).expect_err("wrong").0, 401);
        assert_eq!(namespace_and_name("ns/hook/?x=1"), Some(("ns", "hook")));
        assert_eq!(namespace_and_name("ns/hook/more"), None);
    }
}
