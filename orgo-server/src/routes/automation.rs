//! `/api/computers/{id}/...`: what the guest agent's automation keeps, read
//! over HTTP: service logs and the event stream (NDJSON, optionally
//! followed), webhook triggers, metrics (the Prometheus text format) and
//! the services' states. The same calls as `orgo logs`, `orgo events`,
//! `orgo trigger` and `orgo metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{P, Q, read_capped};
use crate::routes::computers::{IdPath, running};
use crate::routes::ndjson;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/computers/{id}/logs", get(logs))
        .route("/api/computers/{id}/events", get(events))
        .route("/api/computers/{id}/webhooks", post(webhook))
        .route("/api/computers/{id}/metrics", get(metrics))
        .route("/api/computers/{id}/services", get(services))
}

/// Which logs, from when.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// One service's log (or `trigger.NAME`, a trigger's `run` output);
    /// every log when unset.
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    service: Option<String>,
    /// Only the lines of the last this many seconds.
    #[param(minimum = 1, maximum = 31_536_000)]
    since_s: Option<u64>,
    /// Keep the stream open for new lines.
    #[serde(default)]
    follow: bool,
}

/// One log line.
#[derive(Serialize, ToSchema)]
pub(crate) struct LogLineView {
    /// The log's name: its service's, or `trigger.NAME`.
    service: String,
    /// The line, without its newline.
    line: String,
}

/// Follow or not.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FollowQuery {
    /// Keep the stream open for new events.
    #[serde(default)]
    follow: bool,
}

/// A webhook's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WebhookQuery {
    /// The webhook trigger's `path` (`/deploy`).
    #[param(pattern = "^/[^\\u0000]*$", max_length = 1024)]
    path: String,
}

/// The triggers a webhook ran.
#[derive(Serialize, ToSchema)]
pub(crate) struct Fired {
    /// Their names (a firing within a trigger's `dedup` window does not
    /// run it, and is an event instead).
    triggers: Vec<String>,
}

/// A service's state.
#[derive(Serialize, ToSchema)]
pub(crate) struct ServiceView {
    /// Its name.
    name: String,
    /// `running`, `backoff`, `stopped` or `failed`.
    state: String,
    /// Its process, when running.
    pid: Option<u32>,
    /// How many times it was started again.
    restarts: u32,
    /// Its last exit: `{code}` or `{signal}`.
    #[schema(value_type = Option<Object>)]
    last_exit: Option<serde_json::Value>,
}

/// A runtime failure as the API says it; a log no service writes (the
/// agent's "no log `NAME`") is `not_found`.
fn api_error(error: orgo_runtime::RuntimeError) -> ApiError {
    match error {
        orgo_runtime::RuntimeError::Agent(orgo_runtime::AgentError::Guest {
            code: orgo_runtime::ErrorCode::NotFound,
            message,
            ..
        }) => ApiError::new(crate::error::Code::NotFound, message),
        other => ApiError::from(other),
    }
}

/// A computer's service logs (`/var/log/orgo/<service>.log` unless `log:`
/// names another file), as NDJSON `LogLineView` lines; with `follow`, the
/// stream stays open for new lines. A failure after the first line ends the
/// stream with `{"type": "error", "error": ...}`.
#[utoipa::path(
    get, path = "/api/computers/{id}/logs", tag = "computers",
    params(IdPath, LogsQuery),
    responses(
        (status = 200, description = "`application/x-ndjson`: one `LogLineView` per line", content_type = "application/x-ndjson", body = LogLineView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<LogsQuery>,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let computer = running(&state, &id).await?;
    let since = query.since_s.map(Duration::from_secs);
    let reader = computer.logs(query.service.as_deref(), since, query.follow);
    let lines = futures_util::stream::unfold(reader, |mut reader| async move {
        let line = match reader.next().await {
            Ok(Some(l)) => Ok(json!(LogLineView {
                service: l.service,
                line: l.line,
            })),
            Ok(None) => return None,
            Err(error) => Err(api_error(error)),
        };
        Some((line, reader))
    });
    Ok(ndjson::bounded(lines))
}

/// A computer's events, oldest first (the agent keeps the newest 4096), as
/// NDJSON objects with `ts` (RFC 3339), `seq`, `kind` and the event's
/// fields; with `follow`, the stream stays open for new events.
#[utoipa::path(
    get, path = "/api/computers/{id}/events", tag = "computers",
    params(IdPath, FollowQuery),
    responses(
        (status = 200, description = "`application/x-ndjson`: one event per line (`ts`, `seq`, `kind`, ...)", content_type = "application/x-ndjson", body = Object),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<FollowQuery>,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let computer = running(&state, &id).await?;
    let reader = computer.events(query.follow);
    let events = futures_util::stream::unfold(reader, |mut reader| async move {
        let event = match reader.next().await {
            Ok(Some(record)) => Ok(orgo_runtime::event_json(&record)),
            Ok(None) => return None,
            Err(error) => Err(api_error(error)),
        };
        Some((event, reader))
    });
    Ok(ndjson::bounded(events))
}

/// Fire the computer's webhook triggers of `path`, with the body (at most
/// 1 MiB) on their `run` actions' stdin.
#[utoipa::path(
    post, path = "/api/computers/{id}/webhooks", tag = "computers",
    params(IdPath, WebhookQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "the triggers that ran", body = Fired),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key), or no trigger of that path", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 413, description = "the body is over 1 MiB", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn webhook(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<WebhookQuery>,
    body: Body,
) -> Result<Json<Fired>, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    if !query.path.starts_with('/') || query.path.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "path: `{}` is not an absolute path",
            query.path
        )));
    }
    let cap = orgo_agent_protocol::MAX_WEBHOOK_BYTES as u64;
    let data = read_capped(body, cap, "the webhook body").await?;
    let computer = running(&state, &id).await?;
    let triggers = computer.trigger(&query.path, data).await?;
    Ok(Json(Fired { triggers }))
}

/// The computer's metrics now, in the Prometheus text format.
#[utoipa::path(
    get, path = "/api/computers/{id}/metrics", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "the Prometheus text format (version 0.0.4)", content_type = "text/plain", body = String),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let computer = running(&state, &id).await?;
    let text = computer.metrics().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The computer's services: state, process, restarts and last exit.
#[utoipa::path(
    get, path = "/api/computers/{id}/services", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "its services", body = Vec<ServiceView>),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn services(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let computer = running(&state, &id).await?;
    let services = computer.services().await?;
    Ok(Json(
        services
            .into_iter()
            .map(|s| ServiceView {
                name: s.name,
                state: serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                pid: s.pid,
                restarts: s.restarts,
                last_exit: s.last_exit.and_then(|e| serde_json::to_value(e).ok()),
            })
            .collect(),
    ))
}
