//! Runs of workflows: `POST …/workflows/{name}/runs` (the body is the input; 201 with the
//! run), `GET …/workflows/{name}/runs`, `GET …/workflowruns/{id}` (with its task journal),
//! `POST …/workflowruns/{id}/cancel`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::{ApiError, ApiState};

type Api = State<ApiState>;

/// The largest input a run takes.
const MAX_INPUT: usize = 1 << 20;

pub(crate) fn router() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/namespaces/{ns}/workflows/{name}/runs", post(start).get(list))
        .route("/api/v1/namespaces/{ns}/workflowruns/{id}", get(read))
        .route("/api/v1/namespaces/{ns}/workflowruns/{id}/cancel", post(cancel))
}

async fn start(State(api): Api, Path((ns, name)): Path<(String, String)>, body: Bytes) -> Result<Response, ApiError> {
    if body.len() > MAX_INPUT {
        return Err(ApiError::BadRequest(format!("the input is {} bytes, more than {MAX_INPUT}", body.len())));
    }
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("input: not JSON: {e}")))?
    };
    let run = api.controller.run_workflow(&ns, &name, input).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

async fn list(State(api): Api, Path((ns, name)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let runs = api.controller.workflow_runs(&ns, &name)?;
    Ok(Json(json!({ "items": runs })))
}

async fn read(State(api): Api, Path((ns, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let (run, journal) = api.controller.workflow_run(&ns, &id)?;
    let mut shown = serde_json::to_value(run).unwrap_or_default();
    shown["journal"] = serde_json::to_value(journal).unwrap_or_default();
    Ok(Json(shown))
}

async fn cancel(State(api): Api, Path((ns, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let run = api.controller.cancel_workflow_run(&ns, &id).await?;
    Ok(Json(serde_json::to_value(run).unwrap_or_default()))
}
