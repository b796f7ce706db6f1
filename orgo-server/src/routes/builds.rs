//! `/api/templates/{ns}/{name}/{version}/build`: start, watch and cancel
//! builds (asynchronous; one per digest).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use orgo_runtime::SYSTEM_NAMESPACE;
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use crate::auth::{Access, Principal};
use crate::builds::{BuildStatus, BuildView};
use crate::error::ApiError;
use crate::extract::P;
use crate::routes::templates::{RefPath, resolve};
use crate::safety::check_sources;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/templates/{ns}/{name}/{version}/build",
            get(status).post(start).delete(cancel),
        )
        .route(
            "/api/templates/{ns}/{name}/{version}/build/events",
            get(events),
        )
}

/// A build started or joined.
#[derive(Serialize, ToSchema)]
pub(crate) struct BuildStarted {
    /// The template's digest.
    digest: String,
    /// `building`, `ready` (built already) or `failed`.
    status: BuildStatus,
    /// `true` when this request joined a build that ran, or found the
    /// snapshot built.
    reused: bool,
}

/// Who may start (or cancel) a build of a ref: a key that may write its
/// namespace, and, for the curated `system` templates, which every key
/// reads, any key that is not read-only.
fn may_build(
    principal: &Principal,
    reference: &orgo_template::TemplateRef,
) -> Result<(), ApiError> {
    if reference.namespace().as_str() == SYSTEM_NAMESPACE {
        principal.writer()
    } else {
        principal.check(reference.namespace().as_str(), Access::Write)
    }
}

/// Start the build (or join the one running for the same digest).
#[utoipa::path(
    post, path = "/api/templates/{ns}/{name}/{version}/build", tag = "builds",
    params(RefPath),
    responses(
        (status = 202, description = "building, or built already", body = BuildStarted),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
        (status = 422, description = "fields this host cannot honour, or a refused source", body = crate::error::ErrorBody),
        (status = 429, description = "too many builds run (`Retry-After`)", body = crate::error::ErrorBody),
        (status = 503, description = "the server is shutting down", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<(StatusCode, Json<BuildStarted>), ApiError> {
    state.accepting()?;
    let reference = path.reference()?;
    let template = resolve(&state, &principal, &reference).await?;
    may_build(&principal, &reference)?;
    check_sources(&template, state.config.allow_file_root.as_deref())?;
    state.runtime.check(&template)?;
    let digest = template.digest();
    let (job, reused) = state
        .builds
        .start(&state.runtime, template, reference.to_string())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildStarted {
            digest: digest.to_string(),
            status: job.view().status,
            reused,
        }),
    ))
}

/// The build's status, time and error.
#[utoipa::path(
    get, path = "/api/templates/{ns}/{name}/{version}/build", tag = "builds",
    params(RefPath),
    responses(
        (status = 200, description = "the build", body = BuildView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<Json<BuildView>, ApiError> {
    let reference = path.reference()?;
    let template = resolve(&state, &principal, &reference).await?;
    Ok(Json(
        state
            .builds
            .status(&state.runtime, &template.digest())
            .await?,
    ))
}

/// Cancel the build; answers the build's final state.
#[utoipa::path(
    delete, path = "/api/templates/{ns}/{name}/{version}/build", tag = "builds",
    params(RefPath),
    responses(
        (status = 200, description = "the build's state after the cancel", body = BuildView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<Json<BuildView>, ApiError> {
    let reference = path.reference()?;
    let template = resolve(&state, &principal, &reference).await?;
    may_build(&principal, &reference)?;
    let digest = template.digest();
    if let Some(job) = state.builds.job(&digest)
        && job.view().status == BuildStatus::Building
    {
        job.cancel();
        return Ok(Json(job.finished().await));
    }
    Ok(Json(state.builds.status(&state.runtime, &digest).await?))
}

/// The build's log as Server-Sent Events: `log` events (a [`Frame`](crate::builds::Frame)
/// each: every one so far, then the live ones), then one `end` event with
/// the final state (a `BuildView`), and the stream ends.
#[utoipa::path(
    get, path = "/api/templates/{ns}/{name}/{version}/build/events", tag = "builds",
    params(RefPath),
    responses(
        (status = 200, description = "`text/event-stream`: `log` events (data: a `Frame`), then an `end` event (data: a `BuildView`)", content_type = "text/event-stream", body = String),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let reference = path.reference()?;
    let template = resolve(&state, &principal, &reference).await?;
    let digest = template.digest();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let json = |value: &dyn erased::Json| Event::default().data(value.to_json());
    match state.builds.job(&digest) {
        Some(job) => {
            tokio::spawn(async move {
                let mut changed = job.watch();
                let mut next = 0;
                loop {
                    changed.borrow_and_update();
                    let (frames, done) = job.frames_since(next);
                    next += frames.len();
                    for frame in &frames {
                        if tx.send(Ok(json(frame).event("log"))).await.is_err() {
                            return;
                        }
                    }
                    if let Some((dropped, view)) = done {
                        if dropped > 0 {
                            let note = crate::builds::Frame {
                                ts: 0,
                                level: "info",
                                phase: "status",
                                source: "orgo",
                                field: None,
                                line: format!("{dropped} more lines were not kept"),
                            };
                            let _ = tx.send(Ok(json(&note).event("log"))).await;
                        }
                        let _ = tx.send(Ok(json(&view).event("end"))).await;
                        return;
                    }
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        None => {
            let view = state.builds.status(&state.runtime, &digest).await?;
            tx.send(Ok(json(&view).event("end")))
                .await
                .expect("the receiver is held here");
        }
    }
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Serialization behind a `dyn`, for the one closure above.
mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("API types serialize")
        }
    }
}
