//! `serval-kv-counter`: counts visits in serval's key-value store with compare-and-set —
//! the Rust twin of `examples/kv-counter-python/app.py` (tokio + hyper; `percent-encoding`
//! for keys in URLs).
//!
//! Every `GET` (any path) adds one to the key `visits`, or to the key `?key=K` names, and
//! answers the new count as text. The update reads the value and its `ETag`, then writes
//! value + 1 with `If-Match: <etag>` (or `If-None-Match: *` when the key is new); a 412
//! means another request or instance wrote first, so it reads again and retries. Other
//! methods answer 405; a failure answers 500 with a one-line reason.
//!
//! serval gives every instance `SERVAL_KV_URL` (`http://<api>/kv/<namespace>`) and
//! `SERVAL_KV_TOKEN` (sent as `Authorization: Bearer <token>`); `KV_STORE` names the store
//! (default `default`) and `PORT` the port to listen on, on 127.0.0.1 (default 8080).

use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::net::TcpListener;

const DEFAULT_KEY: &str = "visits";
const DEFAULT_STORE: &str = "default";
const DEFAULT_PORT: u16 = 8080;
/// How long one call to the key-value store may take.
const KV_TIMEOUT: Duration = Duration::from_secs(10);
/// Every 412 means some other write succeeded, so this is only reached under a storm.
const MAX_ATTEMPTS: usize = 1000;
/// What a key escapes in the URL: everything but `A-Za-z0-9-._~/` (like Python's `quote`).
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            log(&reason);
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let url = std::env::var("SERVAL_KV_URL").map_err(|_| "SERVAL_KV_URL is not set".to_string())?;
    let token = std::env::var("SERVAL_KV_TOKEN").map_err(|_| "SERVAL_KV_TOKEN is not set".to_string())?;
    let store = std::env::var("KV_STORE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_STORE.into());
    let port = match std::env::var("PORT") {
        Ok(port) => port.trim().parse().map_err(|_| format!("PORT={port:?} is not a port number"))?,
        Err(_) => DEFAULT_PORT,
    };
    let kv = Arc::new(Kv::new(&url, &store, &token)?);

    let listener =
        TcpListener::bind(("127.0.0.1", port)).await.map_err(|err| format!("cannot bind 127.0.0.1:{port}: {err}"))?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                log(&format!("accept failed: {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let kv = Arc::clone(&kv);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&kv), request));
            // Errors (client resets, malformed requests) only concern this connection.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(kv: Arc<Kv>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET counts a visit".into()));
    }
    let key = requested_key(request.uri().query());
    Ok(match kv.count_visit(&key).await {
        Ok(count) => text(StatusCode::OK, count.to_string()),
        Err(reason) => {
            log(&reason);
            text(StatusCode::INTERNAL_SERVER_ERROR, reason)
        }
    })
}

/// The first non-empty `key=` of the query string, decoded; `visits` when there is none.
fn requested_key(query: Option<&str>) -> String {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, value)| *name == "key" && !value.is_empty())
        .map_or_else(
            || DEFAULT_KEY.to_string(),
            |(_, value)| percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned(),
        )
}

/// A `text/plain` answer; the body gets a final newline.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A line on stderr (the instance's log); a closed stderr is not worth a panic.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "serval-kv-counter: {line}");
}

/// One store of serval's key-value stores, over HTTP.
struct Kv {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `{SERVAL_KV_URL}/{store}`.
    base: String,
    authorization: HeaderValue,
}

/// What the store answered: status, `ETag`, body.
type Answer = (StatusCode, Option<HeaderValue>, Bytes);

impl Kv {
    fn new(url: &str, store: &str, token: &str) -> Result<Kv, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "SERVAL_KV_TOKEN is not a valid header value".to_string())?;
        authorization.set_sensitive(true);
        let store = utf8_percent_encode(store, KEY_ESCAPES);
        Ok(Kv {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("{}/{store}", url.trim_end_matches('/')),
            authorization,
        })
    }

    /// Adds one to `key` with compare-and-set and returns the new count.
    async fn count_visit(&self, key: &str) -> Result<i64, String> {
        for _ in 0..MAX_ATTEMPTS {
            let (status, etag, body) = self.call(Method::GET, key, None, Bytes::new()).await?;
            let (current, condition) = match status {
                StatusCode::NOT_FOUND => (0, (IF_NONE_MATCH, HeaderValue::from_static("*"))),
                StatusCode::OK => {
                    let etag = etag.ok_or_else(|| format!("reading {key:?}: the answer has no ETag"))?;
                    (parse_count(key, &body)?, (IF_MATCH, etag))
                }
                other => return Err(format!("reading {key:?}: {other} {}", one_line(&body))),
            };
            let next = current.checked_add(1).ok_or_else(|| format!("{key:?} cannot count past {current}"))?;
            let (status, _, body) = self.call(Method::PUT, key, Some(condition), Bytes::from(next.to_string())).await?;
            match status {
                StatusCode::OK | StatusCode::CREATED => return Ok(next),
                // Someone else wrote first: read again.
                StatusCode::PRECONDITION_FAILED => {}
                other => return Err(format!("writing {key:?}: {other} {}", one_line(&body))),
            }
        }
        Err(format!("writing {key:?}: still conflicting after {MAX_ATTEMPTS} attempts"))
    }

    /// One request to `{base}/{key}`, with an optional condition header.
    async fn call(
        &self,
        method: Method,
        key: &str,
        condition: Option<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        let url = format!("{}/{}", self.base, utf8_percent_encode(key, KEY_ESCAPES));
        let mut request =
            Request::builder().method(method.clone()).uri(&url).header(AUTHORIZATION, &self.authorization);
        if let Some((name, value)) = condition {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|err| format!("{method} {url}: {err}"))?;
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|err| format!("{method} {url}: {}", causes(&err)))?;
            let status = response.status();
            let etag = response.headers().get(ETAG).cloned();
            let body = response.into_body().collect().await.map_err(|err| format!("{method} {url}: {err}"))?;
            Ok((status, etag, body.to_bytes()))
        };
        tokio::time::timeout(KV_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{method} {url}: no answer within {}s", KV_TIMEOUT.as_secs()))?
    }
}

/// The integer a stored value holds.
fn parse_count(key: &str, value: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("{key:?} holds {:?}, not a count", one_line(value)))
}

/// An error and its sources, `: `-separated (the client's own message is terse).
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A body as one line of text, for error messages.
fn one_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" ")
}
