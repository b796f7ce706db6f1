//! Live computers over HTTP: suspend and resume, checkpoint, fork
//! (`orgo suspend`, `resume`, `checkpoint`, `fork`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use orgo_runtime::{LaunchOptions, Vault};
use orgo_snapshot::Checkpoints;
use orgo_template::TemplateRef;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Access, Principal};
use crate::computers::Owner;
use crate::error::{ApiError, Code};
use crate::extract::{P, read_capped, read_json};
use crate::routes::computers::{ComputerView, IdPath, view};
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/computers/{id}/suspend", post(suspend))
        .route("/api/computers/{id}/resume", post(resume))
        .route("/api/computers/{id}/checkpoint", post(checkpoint))
        .route("/api/computers/{id}/fork", post(fork))
}

/// A suspended computer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Suspended {
    /// Its id.
    id: String,
    /// How long its vCPUs stood before its VM stopped, in milliseconds.
    paused_ms: u64,
}

/// A resumed computer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Resumed {
    /// Its id.
    id: String,
}

/// A stored checkpoint.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointView {
    /// Its digest.
    digest: String,
    /// The computer it captured.
    computer: String,
    /// How long the computer's vCPUs stood while it was captured, in
    /// milliseconds.
    paused_ms: u64,
    /// The bytes it added to the store.
    stored_bytes: u64,
    /// The ref it was published under, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<String>,
}

/// What a checkpoint is for (the body may be empty).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointRequest {
    /// Also publish it under this ref (`[namespace/]name@version`, the
    /// namespace the key's by default), to be launched by it as a template
    /// is (`POST /api/computers` with it as `template_ref`). Immutable: a
    /// ref taken by a template or another checkpoint is a 409
    /// `version_conflict`, and the checkpoint stays stored (its digest is
    /// `new` in the details).
    publish: Option<String>,
}

/// What a fork launches.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkRequest {
    /// How many computers (1 to 100).
    #[schema(minimum = 1, maximum = 100)]
    count: Option<u32>,
    /// Extra environment of each.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Secret values by name, for each (and looked for in the checkpoint).
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// A fork: its checkpoint and the computers launched from it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ForkView {
    /// The checkpoint.
    checkpoint: CheckpointView,
    /// The computers, in the order they were launched.
    computers: Vec<ComputerView>,
}

/// Suspend a running computer: its whole state goes to disk (its host's,
/// owner-only), its memory and vCPUs are freed; calls to it answer 409
/// until it is resumed.
#[utoipa::path(
    post, path = "/api/computers/{id}/suspend", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "suspended", body = Suspended),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 422, description = "this host cannot suspend it", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn suspend(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<Suspended>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    state.computers.disconnect(&id).await;
    let stood = state.runtime.suspend(&owner.id).await?;
    Ok(Json(Suspended {
        id,
        paused_ms: millis(stood),
    }))
}

/// Resume a suspended computer, with the same id, files, processes and
/// terminal sessions.
#[utoipa::path(
    post, path = "/api/computers/{id}/resume", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "resumed", body = Resumed),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not suspended", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<Resumed>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    state.runtime.resume(&owner.id).await?;
    Ok(Json(Resumed { id }))
}

/// Capture a running computer into a checkpoint (it runs on after a brief
/// pause), and publish it under a ref if asked. Refused (422
/// `build_failed`, naming the secret and where) when what was captured
/// holds a secret of the server's vault or environment.
#[utoipa::path(
    post, path = "/api/computers/{id}/checkpoint", tag = "computers",
    params(IdPath),
    request_body(content = Option<CheckpointRequest>, description = "optional"),
    responses(
        (status = 200, description = "stored", body = CheckpointView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key, or a ref outside its scope", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running; the ref is taken", body = crate::error::ErrorBody),
        (status = 422, description = "it holds a secret, or this host cannot capture it", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn checkpoint(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    body: Body,
) -> Result<Json<CheckpointView>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    let bytes = read_capped(
        body,
        state.config.limits.json_bytes as u64,
        "the request body",
    )
    .await?;
    let request: CheckpointRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        CheckpointRequest::default()
    } else {
        serde_json::from_slice::<Option<CheckpointRequest>>(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the JSON body: {e}")))?
            .unwrap_or_default()
    };
    // The ref is checked before the computer is paused.
    let publish = match &request.publish {
        None => None,
        Some(text) => {
            let text = if text.contains('/') {
                text.clone()
            } else {
                format!("{}/{text}", principal.namespace())
            };
            let reference: TemplateRef =
                text.parse().map_err(|e: orgo_template::TemplateError| {
                    ApiError::bad_request(format!("publish: {e}"))
                })?;
            principal.check(reference.namespace().as_str(), Access::Write)?;
            Some(reference)
        }
    };
    let given = launch_secrets(&state, &owner).await?;
    state.computers.disconnect(&id).await;
    let checkpoint = state.runtime.checkpoint(&owner.id, &given).await?;
    let mut view = checkpoint_view(&id, &checkpoint);
    if let Some(reference) = publish {
        let checkpoints = Checkpoints::new(state.runtime.shared_store());
        // A taken ref: 409 `version_conflict`, the stored checkpoint's
        // digest as `new` in the details.
        checkpoints
            .publish(&reference, &checkpoint.digest)
            .await
            .map_err(ApiError::from)?;
        view.published = Some(reference.to_string());
    }
    Ok(Json(view))
}

/// Checkpoint a running computer once and launch `count` computers from it,
/// each with its own identity, `env` and `secrets`.
#[utoipa::path(
    post, path = "/api/computers/{id}/fork", tag = "computers",
    params(IdPath),
    request_body = ForkRequest,
    responses(
        (status = 201, description = "launched", body = ForkView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 422, description = "it holds a secret, or this host cannot capture it", body = crate::error::ErrorBody),
        (status = 429, description = "the key's namespace runs its most computers", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn fork(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    body: Body,
) -> Result<(StatusCode, Json<ForkView>), ApiError> {
    state.accepting()?;
    let owner = state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    let request: ForkRequest = read_json(body, state.config.limits.json_bytes).await?;
    let count = request.count.unwrap_or(1);
    if !(1..=100).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count: `{count}` is not 1 to 100"
        )));
    }
    let mut slots = Vec::new();
    for _ in 0..count {
        slots.push(state.computers.reserve(principal.namespace())?);
    }
    let given = launch_secrets(&state, &owner).await?;
    state.computers.disconnect(&id).await;
    // One checkpoint, scanned for the secrets the computer was given (the
    // forks' own come after it), then the launches.
    let checkpoint = state.runtime.checkpoint(&owner.id, &given).await?;
    let options = LaunchOptions {
        env: request.env,
        vault: Vault::new().with(request.secrets.clone()),
        ..LaunchOptions::default()
    };
    let mut forks = Vec::new();
    for _ in 0..count {
        let computer = state
            .runtime
            .launch_checkpoint(&checkpoint.digest, options.clone(), &mut |_| {})
            .await?;
        forks.push(computer);
    }
    let statuses = state.runtime.computers()?;
    let mut computers = Vec::new();
    for computer in forks {
        let forked = Owner {
            id: computer.id().to_owned(),
            namespace: owner.namespace.clone(),
            template_ref: owner.template_ref.clone(),
        };
        state
            .computers
            .own(forked.clone())
            .map_err(|e| ApiError::internal(&e))?;
        state
            .computers
            .keep_secrets(&forked.id, request.secrets.clone());
        computer.detach();
        let status = statuses.iter().find(|s| s.record.id == forked.id);
        computers.push(view(&forked, status));
    }
    drop(slots);
    Ok((
        StatusCode::CREATED,
        Json(ForkView {
            checkpoint: checkpoint_view(&id, &checkpoint),
            computers,
        }),
    ))
}

/// The secrets computer `owner` was launched with: those this process
/// keeps; else none, if its template declares none. A computer launched
/// with secrets before this server started cannot be checked for them:
/// 409, rather than a checkpoint that might hold them.
async fn launch_secrets(state: &AppState, owner: &Owner) -> Result<Vault, ApiError> {
    if let Some(secrets) = state.computers.secrets(&owner.id) {
        return Ok(Vault::new().with(secrets));
    }
    let reference: TemplateRef = owner
        .template_ref
        .parse()
        .map_err(|e: orgo_template::TemplateError| ApiError::internal(&e))?;
    let template = match state.runtime.published_checkpoint(&reference).await? {
        Some(digest) => state.runtime.checkpoint_template(&digest).await?,
        None => state.runtime.resolve(&reference).await?,
    };
    if template.secrets().is_empty() {
        return Ok(Vault::new());
    }
    Err(ApiError::new(
        Code::Conflict,
        format!(
            "computer `{}` was launched with secrets before this server started, and the server does not keep them: a checkpoint of it cannot be checked for them",
            owner.id
        ),
    ))
}

fn checkpoint_view(id: &str, checkpoint: &orgo_runtime::Checkpoint) -> CheckpointView {
    CheckpointView {
        digest: checkpoint.digest.to_string(),
        computer: id.to_owned(),
        paused_ms: millis(checkpoint.paused),
        stored_bytes: checkpoint.stored_bytes,
        published: None,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
