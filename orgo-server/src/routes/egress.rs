//! `/api/computers/{id}/egress`: what a computer launched with
//! `egress_learn` reached, and the smallest `egress_policy` allowing it
//! (as `orgo egress ID` prints it).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::P;
use crate::routes::computers::IdPath;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/computers/{id}/egress", get(learned))
}

/// What a computer reached while learning.
#[derive(Serialize, ToSchema)]
pub(crate) struct EgressLearned {
    /// The names it used (TLS SNI, HTTP `Host`, DNS), sorted.
    names: Vec<String>,
    /// The addresses it reached without a name, sorted.
    addresses: Vec<String>,
    /// `egress_policy: { mode: allow, rules: [...] }` as YAML, ready to
    /// paste into the template (what `orgo egress ID` prints).
    policy: String,
}

/// What a computer launched with `egress_learn: true` has reached so far,
/// and the smallest `egress_policy` that allows exactly that.
#[utoipa::path(
    get, path = "/api/computers/{id}/egress", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "what it reached", body = EgressLearned),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such running computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it was not launched with `egress_learn`", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn learned(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<EgressLearned>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    let learned = state.runtime.egress_learned(&owner.id).await?;
    Ok(Json(EgressLearned {
        names: learned.names,
        addresses: learned.addresses.iter().map(ToString::to_string).collect(),
        policy: learned.policy,
    }))
}
