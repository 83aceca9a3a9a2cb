//! The control API: JSON over HTTP under `/api/v1`, guarded by the bearer token.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

use crate::PlatformError;
use crate::controller::{Applied, ApplyMode, Controller};

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

pub fn router(controller: Arc<Controller>, registry: Arc<prometheus_client::registry::Registry>) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/services", get(list_all_services))
        .route("/api/v1/namespaces/{ns}/services", get(list_services).post(create_service))
        .route("/api/v1/namespaces/{ns}/services/{name}", get(get_service).put(put_service).delete(delete_service))
        .route("/api/v1/namespaces/{ns}/services/{name}/logs", get(service_logs))
        .route("/api/v1/namespaces/{ns}/configurations", get(list_configurations))
        .route("/api/v1/namespaces/{ns}/configurations/{name}", get(get_configuration))
        .route("/api/v1/namespaces/{ns}/routes", get(list_routes))
        .route("/api/v1/namespaces/{ns}/routes/{name}", get(get_route))
        .route("/api/v1/namespaces/{ns}/brokers", get(list_brokers))
        .route("/api/v1/namespaces/{ns}/brokers/{name}", get(get_broker).put(put_broker).delete(delete_broker))
        .route("/api/v1/namespaces/{ns}/brokers/{name}/events", get(broker_events))
        .route("/api/v1/namespaces/{ns}/triggers", get(list_triggers))
        .route("/api/v1/namespaces/{ns}/triggers/{name}", get(get_trigger).put(put_trigger).delete(delete_trigger))
        .route("/api/v1/namespaces/{ns}/pingsources", get(list_ping_sources))
        .route(
            "/api/v1/namespaces/{ns}/pingsources/{name}",
            get(get_ping_source).put(put_ping_source).delete(delete_ping_source),
        )
        .route("/api/v1/namespaces/{ns}/secrets", get(list_secrets))
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret).put(put_secret).delete(delete_secret))
        .route("/api/v1/namespaces/{ns}/configmaps", get(list_config_maps))
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            get(get_config_map).put(put_config_map).delete(delete_config_map),
        )
        .route("/api/v1/brokers", get(async |State(ctl): Ctl| Ok::<_, PlatformError>(list(ctl.list_brokers(None)?))))
        .route(
            "/api/v1/triggers",
            get(async |State(ctl): Ctl| {
                Ok::<_, PlatformError>(list(ctl.list_triggers(None)?.iter().map(|t| ctl.trigger_view(t)).collect()))
            }),
        )
        .route(
            "/api/v1/pingsources",
            get(async |State(ctl): Ctl| Ok::<_, PlatformError>(list(ctl.list_ping_sources(None)?))),
        )
        .route("/api/v1/secrets", get(async |State(ctl): Ctl| Ok::<_, PlatformError>(list(ctl.list_secrets(None)?))))
        .route(
            "/api/v1/configmaps",
            get(async |State(ctl): Ctl| Ok::<_, PlatformError>(list(ctl.list_config_maps(None)?))),
        )
        .route("/api/v1/images", get(list_images).delete(delete_image))
        .route("/api/v1/images/import", axum::routing::post(import_image))
        .route("/api/v1/images/pull", axum::routing::post(pull_image))
        .route("/api/v1/namespaces/{ns}/revisions", get(list_revisions))
        .route("/api/v1/namespaces/{ns}/revisions/{name}", get(get_revision))
        .merge(metrics_router(registry))
        .route_layer(middleware::from_fn_with_state(controller.clone(), watch_lists))
        .route_layer(middleware::from_fn_with_state(controller.clone(), require_token));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(|| async {
            PlatformError::NotFound { kind: "API path", namespace: String::new(), name: String::new() }
        })
        .with_state(controller)
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
            ([(header::CONTENT_TYPE, content_type)], crate::metrics::render(&registry))
        }),
    )
}

/// The kind a list path's plural names, for watches.
fn watched_kind(plural: &str) -> Option<serval_store::Kind> {
    use serval_store::Kind;
    Some(match plural {
        "services" => Kind::Service,
        "revisions" => Kind::Revision,
        "brokers" => Kind::Broker,
        "triggers" => Kind::Trigger,
        "pingsources" => Kind::PingSource,
        "configmaps" => Kind::ConfigMap,
        _ => return None,
    })
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
async fn watch_lists(State(ctl): Ctl, req: Request, next: Next) -> Response {
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
    let Some(kind) = watched_kind(plural) else {
        let why = format!("watch is not offered for {plural}");
        return PlatformError::BadRequest(why).into_response();
    };
    let after = match query.resource_version.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return PlatformError::BadRequest("resourceVersion must be a number".into()).into_response(),
    };
    let (backlog, watcher) = match ctl.watch(kind, namespace.as_deref(), after) {
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

async fn require_token(State(ctl): Ctl, req: Request, next: Next) -> Response {
    let expected = format!("Bearer {}", ctl.config().token);
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(req).await
    } else {
        PlatformError::Unauthorized.into_response()
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

async fn list_all_services(State(ctl): Ctl) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_services(None)?))
}

async fn list_services(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_services(Some(&ns))?))
}

async fn get_service(State(ctl): Ctl, Path((ns, name)): Path<(String, String)>) -> Result<Response, PlatformError> {
    Ok(Json(ctl.get_service(&ns, &name)?).into_response())
}

/// 201 for a created object, 200 for an updated one, with the stored object.
fn written<T: serde::Serialize>(created: bool, object: T) -> Response {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(object)).into_response()
}

/// The answer to a successful DELETE of a namespaced object.
fn deleted(namespace: &str, name: &str) -> Json<Value> {
    Json(json!({ "kind": "Status", "status": "Success", "details": { "name": name, "namespace": namespace } }))
}

fn applied_response(applied: Applied) -> Response {
    let mut headers = HeaderMap::new();
    for w in &applied.warnings {
        // RFC 7234 warn-code 299 ("miscellaneous persistent warning"), as Kubernetes does.
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
            headers.append(header::WARNING, v);
        }
    }
    (headers, written(applied.created, applied.service)).into_response()
}

async fn create_service(State(ctl): Ctl, Path(ns): Path<String>, body: Bytes) -> Result<Response, PlatformError> {
    Ok(applied_response(ctl.apply_service(&ns, None, &body, ApplyMode::Create).await?))
}

async fn put_service(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    Ok(applied_response(ctl.apply_service(&ns, Some(&name), &body, ApplyMode::CreateOrUpdate).await?))
}

async fn delete_service(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_service(&ns, &name).await?;
    Ok(deleted(&ns, &name))
}

async fn list_configurations(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_services(Some(&ns))?.iter().map(|s| s.configuration_view()).collect()))
}

async fn get_configuration(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    Ok(Json(ctl.get_service(&ns, &name)?.configuration_view()))
}

async fn list_routes(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_services(Some(&ns))?.iter().map(|s| s.route_view()).collect()))
}

async fn get_route(State(ctl): Ctl, Path((ns, name)): Path<(String, String)>) -> Result<Json<Value>, PlatformError> {
    Ok(Json(ctl.get_service(&ns, &name)?.route_view()))
}

#[derive(Deserialize)]
struct RevisionQuery {
    service: Option<String>,
}

async fn list_revisions(
    State(ctl): Ctl,
    Path(ns): Path<String>,
    Query(q): Query<RevisionQuery>,
) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_revisions(&ns, q.service.as_deref())?))
}

async fn get_revision(State(ctl): Ctl, Path((ns, name)): Path<(String, String)>) -> Result<Response, PlatformError> {
    Ok(Json(ctl.get_revision(&ns, &name)?).into_response())
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
) -> Result<Response, PlatformError> {
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

fn image_json(i: &serval_runtime::oci::ImageSummary) -> Value {
    json!({ "name": i.name, "digest": i.digest, "size": i.size, "created": i.created })
}

async fn list_images(State(ctl): Ctl) -> Result<Json<Value>, PlatformError> {
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

async fn delete_image(State(ctl): Ctl, Query(q): Query<ImageQuery>) -> Result<Json<Value>, PlatformError> {
    ctl.remove_image(&q.reference)?;
    Ok(Json(json!({ "kind": "Status", "status": "Success", "details": { "reference": q.reference } })))
}

/// Body: a `docker save` archive or an OCI image-layout tar, streamed to a temporary file
/// and imported from there.
async fn import_image(State(ctl): Ctl, body: Body) -> Result<Json<Value>, PlatformError> {
    let tmp = tempfile::NamedTempFile::new_in(&ctl.config().data_dir)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen()?);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PlatformError::BadRequest(format!("upload broke off: {e}")))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    let images = ctl.images().clone();
    let imported = tokio::task::spawn_blocking(move || images.import(tmp.path()))
        .await
        .map_err(|e| PlatformError::Io(std::io::Error::other(e)))??;
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
        let auth = match (req.username, req.password, req.token) {
            (Some(username), Some(password), _) => serval_runtime::oci::RegistryAuth::Basic { username, password },
            (_, _, Some(token)) => serval_runtime::oci::RegistryAuth::Bearer(token),
            _ => serval_runtime::oci::RegistryAuth::Anonymous,
        };
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

async fn list_brokers(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_brokers(Some(&ns))?))
}

async fn get_broker(State(ctl): Ctl, Path((ns, name)): Path<(String, String)>) -> Result<Json<Value>, PlatformError> {
    Ok(Json(serde_json::to_value(ctl.get_broker(&ns, &name)?).unwrap_or_default()))
}

async fn put_broker(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    let (broker, created) = ctl.apply_broker(&ns, &name, &body).await?;
    Ok(written(created, broker))
}

async fn delete_broker(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_broker(&ns, &name).await?;
    Ok(deleted(&ns, &name))
}

async fn list_secrets(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_secrets(Some(&ns))?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretQuery {
    /// Show the values instead of `<redacted>`.
    #[serde(default)]
    show_secrets: bool,
}

async fn get_secret(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<SecretQuery>,
) -> Result<Json<Value>, PlatformError> {
    Ok(Json(serde_json::to_value(ctl.get_secret(&ns, &name, q.show_secrets)?).unwrap_or_default()))
}

async fn put_secret(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    let (secret, created) = ctl.apply_secret(&ns, &name, &body).await?;
    Ok(written(created, secret))
}

async fn delete_secret(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_secret(&ns, &name).await?;
    Ok(deleted(&ns, &name))
}

async fn list_config_maps(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_config_maps(Some(&ns))?))
}

async fn get_config_map(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    Ok(Json(serde_json::to_value(ctl.get_config_map(&ns, &name)?).unwrap_or_default()))
}

async fn put_config_map(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    let (config_map, created) = ctl.apply_config_map(&ns, &name, &body).await?;
    Ok(written(created, config_map))
}

async fn delete_config_map(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_config_map(&ns, &name).await?;
    Ok(deleted(&ns, &name))
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
) -> Result<Json<Value>, PlatformError> {
    let events = ctl.broker_events(&ns, &name, q.after, q.limit.unwrap_or(100).min(1000))?;
    let items: Vec<Value> = events
        .into_iter()
        .map(|e| json!({ "seq": e.seq, "event": serde_json::from_str::<Value>(&e.body).unwrap_or(Value::Null) }))
        .collect();
    Ok(list(items))
}

async fn list_triggers(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_triggers(Some(&ns))?.iter().map(|t| ctl.trigger_view(t)).collect()))
}

async fn get_trigger(State(ctl): Ctl, Path((ns, name)): Path<(String, String)>) -> Result<Json<Value>, PlatformError> {
    Ok(Json(ctl.trigger_view(&ctl.get_trigger(&ns, &name)?)))
}

async fn put_trigger(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    let (trigger, created) = ctl.apply_trigger(&ns, &name, &body).await?;
    Ok(written(created, trigger))
}

async fn delete_trigger(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_trigger(&ns, &name).await?;
    Ok(deleted(&ns, &name))
}

async fn list_ping_sources(State(ctl): Ctl, Path(ns): Path<String>) -> Result<Json<Value>, PlatformError> {
    Ok(list(ctl.list_ping_sources(Some(&ns))?))
}

async fn get_ping_source(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    Ok(Json(serde_json::to_value(ctl.get_ping_source(&ns, &name)?).unwrap_or_default()))
}

async fn put_ping_source(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PlatformError> {
    let (source, created) = ctl.apply_ping_source(&ns, &name, &body).await?;
    Ok(written(created, source))
}

async fn delete_ping_source(
    State(ctl): Ctl,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, PlatformError> {
    ctl.delete_ping_source(&ns, &name).await?;
    Ok(deleted(&ns, &name))
}
