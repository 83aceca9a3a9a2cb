//! What the eventing benchmarks send: CloudEvents in binary mode or in batches, POSTed
//! through one keep-alive client, counting 202s.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client with `TCP_NODELAY`, up to 64 idle connections per host.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector)
}

/// One event `id` in binary mode.
pub fn binary_event(url: &str, id: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "bench")
        .header("ce-source", "/bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(r#"{{"n":"{id}"}}"#))))
        .expect("request")
}

/// Events `ids` in one `application/cloudevents-batch+json` request.
pub fn batch_of(url: &str, ids: std::ops::Range<usize>) -> Request<Full<Bytes>> {
    let events: Vec<serde_json::Value> = ids
        .map(|id| {
            serde_json::json!({"specversion": "1.0", "id": id.to_string(), "type": "bench", "source": "/bench",
                "datacontenttype": "application/json", "data": {"n": id}})
        })
        .collect();
    Request::post(url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&events).expect("json"))))
        .expect("request")
}

/// Sends a request, returns whether it was accepted (202); prints the first few failures.
pub async fn post(client: &HttpClient, req: Request<Full<Bytes>>) -> bool {
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if status != 202 {
                report_failure(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            status == 202
        }
        Err(e) => {
            report_failure(format!("{e:?}"));
            false
        }
    }
}

/// Prints the first few failed POSTs.
fn report_failure(what: String) {
    static FAILURES: AtomicU64 = AtomicU64::new(0);
    if FAILURES.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("POST failed: {what}");
    }
}
