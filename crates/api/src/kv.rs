//! The key-value endpoint functions reach at `SERVAL_KV_URL` (`/kv/<namespace>`), with
//! `SERVAL_KV_TOKEN` (or the API's own token):
//!
//! - `GET /kv/{ns}/{store}/{key}`: 200 with the value and its `ETag`, 404;
//! - `PUT`: 201 created or 200; `If-Match: <etag>` and `If-None-Match: *` (412 when they do
//!   not hold), `X-Serval-TTL: <seconds>`;
//! - `DELETE`: 204 (also when absent), `If-Match` honoured;
//! - `POST /kv/{ns}/{store}/{key}:increment`: the body is the delta (1 when empty); answers
//!   the new value;
//! - `GET /kv/{ns}/{store}?prefix=p&limit=n&after=k`: `{"keys": […], "next": k}`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serval_kv::{KvError, Precondition};

use crate::{ApiError, ApiState, constant_time_eq};

type Api = State<ApiState>;

pub(crate) fn router() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/kv/{ns}/{store}", get(list))
        .route("/kv/{ns}/{store}/{*key}", get(read).put(write).delete(remove).post(increment))
}

/// Checks the caller may open `namespace/store` (the API token may open every store), and
/// that the store exists.
fn authorize(api: &ApiState, headers: &HeaderMap, namespace: &str, store: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| KvError::Unauthorized("give SERVAL_KV_TOKEN as Authorization: Bearer <token>".into()))?;
    if !constant_time_eq(given.as_bytes(), api.config.token.as_bytes()) {
        api.controller.kv_tokens().verify(given)?.allows(namespace, store)?;
    }
    Ok(api.controller.kv_store_exists(namespace, store)?)
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` names (quoted or not).
fn version_of(value: &HeaderValue) -> Result<i64, KvError> {
    let text = value.to_str().unwrap_or_default().trim().trim_start_matches("W/").trim_matches('"');
    text.parse()
        .map_err(|_| KvError::Invalid { field: "If-Match", message: format!("{text:?} is not an ETag of this store") })
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, KvError> {
    match (headers.get(header::IF_MATCH), headers.get(header::IF_NONE_MATCH)) {
        (Some(_), Some(_)) => {
            Err(KvError::Invalid { field: "If-Match", message: "give If-Match or If-None-Match, not both".into() })
        }
        (Some(v), None) => Ok(Precondition::IfMatch(version_of(v)?)),
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Precondition::IfAbsent),
        (None, Some(_)) => Err(KvError::Invalid { field: "If-None-Match", message: "only * is taken".into() }),
        (None, None) => Ok(Precondition::None),
    }
}

fn ttl(headers: &HeaderMap) -> Result<Option<Duration>, KvError> {
    let Some(value) = headers.get("x-serval-ttl") else { return Ok(None) };
    let seconds: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).filter(|s| *s > 0).ok_or_else(|| {
        KvError::Invalid { field: "X-Serval-TTL", message: "must be a whole number of seconds above 0".into() }
    })?;
    Ok(Some(Duration::from_secs(seconds)))
}

/// A request body up to the value limit (413 beyond).
async fn body(request: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), serval_kv::MAX_VALUE).await.map_err(|_| {
        ApiError::Kv(KvError::TooLarge { field: "value", message: format!("more than {} bytes", serval_kv::MAX_VALUE) })
    })
}

async fn read(State(api): Api, Path((ns, store, key)): Path<(String, String, String)>, headers: HeaderMap) -> Response {
    let answer = async {
        authorize(&api, &headers, &ns, &store)?;
        let entry = api.controller.kv().get(&ns, &store, &key)?;
        let mut response = Response::new(Body::from(entry.value));
        response.headers_mut().insert(header::ETAG, etag(entry.version));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        Ok::<_, ApiError>(response)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn write(State(api): Api, Path((ns, store, key)): Path<(String, String, String)>, request: Request) -> Response {
    let answer = async {
        let headers = request.headers().clone();
        authorize(&api, &headers, &ns, &store)?;
        let (condition, ttl) = (precondition(&headers)?, ttl(&headers)?);
        let value = body(request).await?;
        let written = api.controller.kv().put(&ns, &store, &key, value.to_vec(), condition, ttl).await?;
        let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
        let body = axum::Json(serde_json::json!({ "key": key, "version": written.version.to_string() }));
        Ok::<_, ApiError>((status, [(header::ETAG, etag(written.version))], body).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn remove(
    State(api): Api,
    Path((ns, store, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        authorize(&api, &headers, &ns, &store)?;
        api.controller.kv().delete(&ns, &store, &key, precondition(&headers)?).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn increment(
    State(api): Api,
    Path((ns, store, key)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let answer = async {
        let Some(key) = key.strip_suffix(":increment") else {
            return Err(ApiError::Kv(KvError::Invalid {
                field: "key",
                message: "POST takes KEY:increment; write a value with PUT".into(),
            }));
        };
        authorize(&api, request.headers(), &ns, &store)?;
        let text = body(request).await?;
        let text = std::str::from_utf8(&text).unwrap_or_default().trim();
        let delta = if text.is_empty() {
            1
        } else {
            text.parse()
                .map_err(|_| KvError::Invalid { field: "delta", message: format!("{text:?} is not an integer") })?
        };
        let value = api.controller.kv().increment(&ns, &store, key, delta).await?;
        Ok::<_, ApiError>(value.to_string().into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: String,
    limit: Option<usize>,
}

async fn list(
    State(api): Api,
    Path((ns, store)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        authorize(&api, &headers, &ns, &store)?;
        let keys = api.controller.kv().keys(&ns, &store, &query.prefix, &query.after, query.limit.unwrap_or(100))?;
        Ok::<_, ApiError>(axum::Json(serde_json::json!({ "keys": keys.keys, "next": keys.next })).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}
