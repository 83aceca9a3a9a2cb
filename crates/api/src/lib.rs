//! The control API of serval: JSON over HTTP under `/api/v1`, guarded by the bearer token.
//!
//! Owns: the routes (generic ones for every registered kind, plus logs, broker events,
//! images, discovery, watch streams and `/metrics`), the token check, and the one mapping
//! of errors to HTTP statuses and JSON reasons ([`ApiError`]).
//! Must not depend on: the platform's composition (it gets a [`Controller`] and the
//! [`Kinds`] registry), the SQLite store's type, or the binary's argument parsing. It
//! decodes requests and hands typed calls to the control plane; no reconciliation here.

mod error;
mod kv;
mod workflows;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

pub use error::ApiError;
use serval_control::controller::Controller;
use serval_control::kinds::{ApplyMode, Kinds, ReadQuery, Written};

type Ctl = State<Arc<Controller>>;

/// The router as a request handler for [`serval_gateway::serve_listener`].
pub fn handler(
    router: axum::Router,
) -> impl Fn(http::Request<hyper::body::Incoming>) -> futures_util::future::BoxFuture<'static, axum::response::Response>
+ Clone
+ Send
+ Sync
+ 'static {
    move |req| {
        let mut router = router.clone();
        Box::pin(async move {
            match tower_service::Service::call(&mut router, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    }
}

/// What the API needs beside the control plane.
pub struct ApiConfig {
    /// The bearer token every call under `/api/v1` must carry.
    pub token: String,
    /// Where uploads (image archives) are spooled before they are imported.
    pub scratch_dir: PathBuf,
}

pub fn router(
    config: ApiConfig,
    controller: Arc<Controller>,
    kinds: Arc<Kinds>,
    registry: Arc<prometheus_client::registry::Registry>,
) -> axum::Router {
    let state = ApiState { controller, kinds, config: Arc::new(config) };
    let api = axum::Router::new()
        .route("/api/v1", get(discovery))
        .route("/api/v1/info", get(info))
        .route("/api/v1/{plural}", get(list_everywhere))
        .route("/api/v1/namespaces/{ns}/{plural}", get(list_namespace).post(create))
        .route("/api/v1/namespaces/{ns}/{plural}/{name}", get(get_one).put(put_one).delete(delete_one))
        .route("/api/v1/namespaces/{ns}/services/{name}/logs", get(service_logs))
        .route("/api/v1/namespaces/{ns}/services/{name}/calls", get(service_calls))
        .route("/api/v1/namespaces/{ns}/brokers/{name}/events", get(broker_events))
        .route("/api/v1/images", get(list_images).delete(delete_image))
        .route("/api/v1/images/import", axum::routing::post(import_image))
        .route("/api/v1/images/pull", axum::routing::post(pull_image))
        .merge(workflows::router())
        .merge(metrics_router(registry))
        .route_layer(middleware::from_fn_with_state(state.clone(), watch_lists))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .merge(kv::router())
        .fallback(|| async {
            ApiError::from(serval_control::ControlError::NotFound {
                kind: "API path",
                namespace: String::new(),
                name: String::new(),
            })
        })
        .with_state(state)
}

/// Prometheus metrics at `/metrics`: behind the token on the API (they name every
/// service), and alone, without a token, on `--metrics-addr` for scrapers.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(
    registry: Arc<prometheus_client::registry::Registry>,
) -> axum::Router<S> {
    axum::Router::new().route(
        "/metrics",
        get(move || async move {
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(header::CONTENT_TYPE, content_type)], serval_control::metrics::render(&registry))
        }),
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WatchQuery {
    #[serde(default)]
    watch: bool,
    resource_version: Option<String>,
}

/// `GET …/{plural}?watch=true[&resourceVersion=N]`: the changes of that kind as JSON lines
/// (`{"type":"ADDED|MODIFIED|DELETED","object":…}`), those after version N first, then the
/// live ones, until the client goes away (Kubernetes' watch). Other requests pass on.
async fn watch_lists(State(api): State<ApiState>, req: Request, next: Next) -> Response {
    let query: WatchQuery = req.uri().query().and_then(watch_query).unwrap_or_default();
    if !query.watch || req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    let segments: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let (namespace, plural) = match segments.as_slice() {
        ["api", "v1", "namespaces", ns, plural] => (Some(ns.to_string()), *plural),
        ["api", "v1", plural] => (None, *plural),
        _ => return next.run(req).await,
    };
    let kind = match api.kinds.get(plural) {
        Ok(kind) if kind.info().watchable => kind.info().kind.clone(),
        Ok(_) => return ApiError::BadRequest(format!("watch is not offered for {plural}")).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let after = match query.resource_version.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return ApiError::BadRequest("resourceVersion must be a number".into()).into_response(),
    };
    let (backlog, watcher) = match api.controller.watch(&kind, namespace.as_deref(), after) {
        Ok(w) => w,
        Err(too_old) => {
            let message = format!(
                "resourceVersion {} is too old: the oldest change kept is {}; list again and watch from there",
                after.unwrap_or_default(),
                too_old.oldest
            );
            let body = json!({ "error": { "reason": "Expired", "message": message } });
            return (StatusCode::GONE, Json(body)).into_response();
        }
    };
    let line = |(change, object): serval_store::WatchEvent| {
        let mut text = json!({ "type": change.as_str(), "object": object }).to_string();
        text.push('\n');
        Ok::<_, std::io::Error>(Bytes::from(text))
    };
    let live = futures_util::stream::unfold(watcher, |mut w| async move { w.next().await.map(|e| (e, w)) });
    let stream = futures_util::stream::iter(backlog).chain(live).map(line);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

/// The query string as a [`WatchQuery`] (axum's `Query` needs the whole request).
fn watch_query(query: &str) -> Option<WatchQuery> {
    Query::<WatchQuery>::try_from_uri(&format!("/?{query}").parse().ok()?).ok().map(|q| q.0)
}

async fn require_token(State(api): Api, req: Request, next: Next) -> Response {
    let expected = format!("Bearer {}", api.config.token);
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn list<T: serde::Serialize>(items: Vec<T>) -> Json<Value> {
    Json(json!({ "apiVersion": "v1", "kind": "List", "items": items }))
}

async fn info(State(ctl): Ctl) -> Json<Value> {
    let addrs = ctl.addrs();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api": format!("http://{}", addrs.api),
        "gateway": format!("http://{}", addrs.gateway),
        "domain": ctl.config().domain,
    }))
}

/// 201 for a created object, 200 for an updated one, with the stored object and its
/// warnings as `Warning` fields (RFC 7234 warn-code 299, as Kubernetes sends them).
fn written(written: Written) -> Response {
    let mut headers = HeaderMap::new();
    for w in &written.warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            headers.append(header::WARNING, v);
        }
    }
    let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
    (status, headers, Json(written.object)).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

/// Plain text, one line per captured line; with `follow=true` the response stays open and
/// streams new lines as they are written.
async fn service_logs(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    ctl.get_service(&ns, &name)?;
    let (backlog, live) = ctl.logs().read(&ns, &name, q.tail.unwrap_or(usize::MAX));
    let text: String = backlog.iter().map(|e| e.render()).collect();
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((content_type, text).into_response());
    }
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let rest = BroadcastStream::new(live).filter_map(|item| async move {
        // A lagging reader skips what it missed rather than failing.
        item.ok().map(|e| Ok(Bytes::from(e.render())))
    });
    Ok((content_type, Body::from_stream(first.chain(rest))).into_response())
}

#[derive(serde::Deserialize)]
struct CallsQuery {
    /// The most calls listed (default 100).
    limit: Option<usize>,
}

/// A service's async calls, newest first: queued, being tried, and recent outcomes.
async fn service_calls(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<CallsQuery>,
) -> Result<Json<Value>, ApiError> {
    let calls = ctl.service_calls(&ns, &name, q.limit.unwrap_or(100))?;
    Ok(list(calls.iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect()))
}

fn image_json(i: &serval_runtime::oci::ImageSummary) -> Value {
    json!({ "name": i.name, "digest": i.digest, "size": i.size, "created": i.created })
}

async fn list_images(State(ctl): Ctl) -> Result<Json<Value>, ApiError> {
    Ok(list(ctl.images().list()?.iter().map(image_json).collect()))
}

fn progress_json(p: &serval_runtime::oci::PullProgress) -> Value {
    use serval_runtime::oci::PullProgress;
    match p {
        PullProgress::Resolved { digest, layers } => json!({ "manifest": digest, "layers": layers.len() }),
        PullProgress::Layer { digest, downloaded, total } => {
            json!({ "layer": digest, "done": downloaded, "total": total })
        }
        PullProgress::LayerDone { digest, size, cached } => {
            json!({ "layer": digest, "done": size, "total": size, "cached": cached })
        }
    }
}

#[derive(Deserialize)]
struct ImageQuery {
    reference: String,
}

async fn delete_image(State(ctl): Ctl, Query(q): Query<ImageQuery>) -> Result<Json<Value>, ApiError> {
    ctl.remove_image(&q.reference)?;
    Ok(Json(json!({ "kind": "Status", "status": "Success", "details": { "reference": q.reference } })))
}

/// Body: a `docker save` archive or an OCI image-layout tar, streamed to a temporary file
/// and imported from there.
async fn import_image(State(api): Api, body: Body) -> Result<Json<Value>, ApiError> {
    let ctl = &api.controller;
    let tmp = tempfile::NamedTempFile::new_in(&api.config.scratch_dir)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen()?);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("upload broke off: {e}")))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    let images = ctl.images().clone();
    let imported = tokio::task::spawn_blocking(move || images.import(tmp.path()))
        .await
        .map_err(|e| ApiError::Io(std::io::Error::other(e)))??;
    Ok(list(imported.iter().map(image_json).collect()))
}

#[derive(Deserialize)]
struct PullRequest {
    reference: String,
    username: Option<String>,
    password: Option<String>,
    /// A registry bearer token, sent as is.
    token: Option<String>,
}

/// Streams progress as JSON lines (`{"layer", "done", "total"}`), then a last line with
/// `{"image": …}` or `{"error": "…"}`.
async fn pull_image(State(ctl): Ctl, Json(req): Json<PullRequest>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let images = ctl.images().clone();
    tokio::spawn(async move {
        let auth = serval_runtime::oci::RegistryAuth::from_credentials(req.username, req.password, req.token);
        let progress_tx = tx.clone();
        let progress = move |p: serval_runtime::oci::PullProgress| {
            let _ = progress_tx.send(format!("{}\n", progress_json(&p)));
        };
        let last = match images.pull(&req.reference, auth, progress).await {
            Ok(summary) => json!({ "image": image_json(&summary) }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let _ = tx.send(format!("{last}\n"));
    });
    let stream =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|line| Ok::<_, std::io::Error>(Bytes::from(line)));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

/// The broker's accepted events after a log position: `{"items": [{"seq", "event"}]}`.
async fn broker_events(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let events = ctl.broker_events(&ns, &name, q.after, q.limit.unwrap_or(100).min(1000))?;
    let items: Vec<Value> = events
        .into_iter()
        .map(|e| json!({ "seq": e.seq, "event": serde_json::from_str::<Value>(&e.body).unwrap_or(Value::Null) }))
        .collect();
    Ok(list(items))
}

#[derive(Clone)]
struct ApiState {
    controller: Arc<Controller>,
    kinds: Arc<Kinds>,
    config: Arc<ApiConfig>,
}

impl FromRef<ApiState> for Arc<Controller> {
    fn from_ref(state: &ApiState) -> Arc<Controller> {
        state.controller.clone()
    }
}

type Api = State<ApiState>;

/// `GET /api/v1`: the kinds served, as the CLI learns them (Kubernetes' APIResourceList).
async fn discovery(State(api): Api) -> Json<Value> {
    Json(json!({ "kind": "APIResourceList", "groupVersion": "v1", "resources": api.kinds.infos() }))
}

async fn list_everywhere(
    State(api): Api,
    Path(plural): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(api.kinds.get(&plural)?.list(None, &query)?))
}

async fn list_namespace(
    State(api): Api,
    Path((ns, plural)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(api.kinds.get(&plural)?.list(Some(&ns), &query)?))
}

async fn get_one(
    State(api): Api,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(api.kinds.get(&plural)?.get(&ns, &name, &query)?))
}

async fn create(
    State(api): Api,
    Path((ns, plural)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(written(api.kinds.get(&plural)?.apply(&ns, None, &body, ApplyMode::Create).await?))
}

async fn put_one(
    State(api): Api,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(written(api.kinds.get(&plural)?.apply(&ns, Some(&name), &body, ApplyMode::CreateOrUpdate).await?))
}

async fn delete_one(
    State(api): Api,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    api.kinds.get(&plural)?.delete(&ns, &name).await?;
    Ok(Json(json!({ "kind": "Status", "status": "Success", "details": { "name": name, "namespace": ns } })))
}
