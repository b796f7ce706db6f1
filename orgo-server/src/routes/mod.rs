//! The routes, one module per resource. A capability the library gains
//! gets its module here and one `merge` line in [`router`] (and its paths
//! in [`crate::openapi::ApiDoc`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;

use crate::error::{ApiError, Code};
use crate::state::AppState;

pub(crate) mod automation;
pub(crate) mod builds;
pub(crate) mod computers;
pub(crate) mod desktop;
pub(crate) mod docs;
pub(crate) mod egress;
pub(crate) mod live;
pub(crate) mod ndjson;
pub(crate) mod templates;

/// Every route of the API.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(templates::routes())
        .merge(builds::routes())
        .merge(computers::routes())
        .merge(automation::routes())
        .merge(egress::routes())
        .merge(live::routes())
        .merge(desktop::routes())
        .merge(docs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        // Bodies are read with their own caps (`extract::read_capped`).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("route `{}`", uri.path()))
}

async fn not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("`{method}` is not a method of `{}`", uri.path()),
    )
}
