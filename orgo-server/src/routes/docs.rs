//! The documents: the template format's JSON Schema and this API's
//! OpenAPI description. Both are public (no key).

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi as _;

use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/template-schema", get(template_schema))
        .route("/api/openapi.json", get(openapi))
}

/// The JSON Schema of `orgo.ai/v1` templates (sugar and canonical forms).
#[utoipa::path(
    get, path = "/api/template-schema", tag = "documents",
    responses((status = 200, description = "the JSON Schema", body = Object)),
)]
pub(crate) async fn template_schema() -> Json<serde_json::Value> {
    Json(orgo_template::json_schema())
}

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "documents",
    responses((status = 200, description = "the OpenAPI description of this API", body = Object)),
)]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}
