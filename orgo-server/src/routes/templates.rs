//! `/api/templates`: publish, list, read and delete templates.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orgo_runtime::{SYSTEM_NAMESPACE, system_templates};
use orgo_snapshot::Registry;
use orgo_template::{Name, Template, TemplateRef};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Principal};
use crate::builds::BuildView;
use crate::error::{ApiError, Code, invalid_template};
use crate::extract::{P, Q, read_capped};
use crate::safety::check_sources;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/templates", post(publish).get(list))
        .route(
            "/api/templates/{ns}/{name}/{version}",
            get(read).delete(delete),
        )
}

/// `?namespace=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NamespaceQuery {
    /// The namespace (default: the key's).
    #[param(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 1, max_length = 64)]
    namespace: Option<String>,
}

/// A template's place: `{ns}/{name}/{version}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RefPath {
    /// Namespace.
    #[param(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub(crate) ns: String,
    /// Name.
    #[param(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub(crate) name: String,
    /// Version (semver).
    #[param(
        pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$",
        max_length = 64
    )]
    pub(crate) version: String,
}

impl RefPath {
    pub(crate) fn reference(&self) -> Result<TemplateRef, ApiError> {
        format!("{}/{}@{}", self.ns, self.name, self.version)
            .parse()
            .map_err(|e: orgo_template::TemplateError| ApiError::bad_request(e.to_string()))
    }
}

/// A publish's outcome.
#[derive(Serialize, ToSchema)]
pub(crate) struct Published {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    reference: String,
    /// The template's digest.
    digest: String,
    /// `false` when the identical document was published already.
    published: bool,
}

/// A listed template.
#[derive(Serialize, ToSchema)]
pub(crate) struct TemplateSummary {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    reference: String,
    /// Its digest.
    digest: String,
}

/// Templates.
#[derive(Serialize, ToSchema)]
pub(crate) struct TemplateList {
    /// Sorted by namespace, name and version.
    templates: Vec<TemplateSummary>,
}

/// A template.
#[derive(Serialize, ToSchema)]
pub(crate) struct TemplateDetail {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    reference: String,
    /// Its digest.
    digest: String,
    /// The canonical document.
    #[schema(value_type = Object)]
    document: serde_json::Value,
    /// Its build.
    build: BuildView,
}

/// A deleted ref.
#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// The ref.
    #[serde(rename = "ref")]
    reference: String,
}

fn namespace(text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))
}

pub(crate) fn registry(state: &AppState) -> Registry {
    Registry::new(state.runtime.shared_store())
}

/// The template `reference` names, if `principal` may read it.
pub(crate) async fn resolve(
    state: &AppState,
    principal: &Principal,
    reference: &TemplateRef,
) -> Result<Template, ApiError> {
    principal.check(reference.namespace().as_str(), Access::Read)?;
    Ok(state.runtime.resolve(reference).await?)
}

/// Publish a template (YAML or JSON).
#[utoipa::path(
    post, path = "/api/templates", tag = "templates",
    params(NamespaceQuery),
    request_body(content = String, content_type = "application/yaml", description = "an `orgo.ai/v1` document, YAML or JSON, at most 4 MiB"),
    responses(
        (status = 201, description = "published", body = Published),
        (status = 200, description = "the same document was published already", body = Published),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 409, description = "the version is published with other content (`version_conflict`)", body = crate::error::ErrorBody),
        (status = 413, description = "over 4 MiB", body = crate::error::ErrorBody),
        (status = 422, description = "an invalid template (`invalid_template`, with `details.errors`), or a refused source", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn publish(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Q(query): Q<NamespaceQuery>,
    body: Body,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let ns = namespace(query.namespace.as_deref().unwrap_or(principal.namespace()))?;
    principal.check(ns.as_str(), Access::Write)?;
    let bytes = read_capped(
        body,
        state.config.limits.template_bytes as u64,
        "the template",
    )
    .await?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ApiError::new(
            Code::InvalidTemplate,
            format!(
                "the template is not UTF-8 text (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let template = Template::parse_detected(None, &text).map_err(|e| invalid_template(&e))?;
    check_sources(&template, state.config.allow_file_root.as_deref())?;
    let published = registry(&state).publish(ns, &template).await?;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Published {
            reference: published.reference.to_string(),
            digest: published.digest.to_string(),
            published: published.created,
        }),
    ))
}

/// List templates: the key's namespace and `system`, or one namespace.
#[utoipa::path(
    get, path = "/api/templates", tag = "templates",
    params(NamespaceQuery),
    responses(
        (status = 200, description = "templates", body = TemplateList),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Q(query): Q<NamespaceQuery>,
) -> Result<Json<TemplateList>, ApiError> {
    let namespaces: Vec<String> = match query.namespace {
        Some(ns) => {
            let ns = namespace(&ns)?;
            principal.check(ns.as_str(), Access::Read)?;
            vec![ns.as_str().to_owned()]
        }
        None => vec![
            SYSTEM_NAMESPACE.to_owned(),
            principal.namespace().to_owned(),
        ],
    };
    let mut templates = Vec::new();
    for ns in namespaces {
        if ns == SYSTEM_NAMESPACE {
            templates.extend(system_templates().into_iter().map(|t| TemplateSummary {
                reference: t.reference().to_string(),
                digest: t.template.digest().to_string(),
            }));
            continue;
        }
        let ns = namespace(&ns)?;
        for (reference, digest) in registry(&state).list(Some(&ns)).await? {
            templates.push(TemplateSummary {
                reference: reference.to_string(),
                digest: digest.to_string(),
            });
        }
    }
    templates.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(Json(TemplateList { templates }))
}

/// A template: its canonical document, digest and build status.
#[utoipa::path(
    get, path = "/api/templates/{ns}/{name}/{version}", tag = "templates",
    params(RefPath),
    responses(
        (status = 200, description = "the template", body = TemplateDetail),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<Json<TemplateDetail>, ApiError> {
    let reference = path.reference()?;
    let template = resolve(&state, &principal, &reference).await?;
    let digest = template.digest();
    let build = state.builds.status(&state.runtime, &digest).await?;
    Ok(Json(TemplateDetail {
        reference: reference.to_string(),
        digest: digest.to_string(),
        document: template.to_value(),
        build,
    }))
}

/// Unpublish a ref; refused (409 `in_use`) while computers or other refs
/// use its snapshot.
#[utoipa::path(
    delete, path = "/api/templates/{ns}/{name}/{version}", tag = "templates",
    params(RefPath),
    responses(
        (status = 200, description = "unpublished", body = Deleted),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "not published", body = crate::error::ErrorBody),
        (status = 409, description = "in use (`in_use`)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(path): P<RefPath>,
) -> Result<Json<Deleted>, ApiError> {
    let reference = path.reference()?;
    principal.check(reference.namespace().as_str(), Access::Write)?;
    let registry = registry(&state);
    let digest = registry
        .resolve_digest(&reference)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template `{reference}`")))?;
    let refs: Vec<String> = registry
        .list(None)
        .await?
        .into_iter()
        .filter(|(r, d)| *d == digest && *r != reference)
        .map(|(r, _)| r.to_string())
        .collect();
    let computers: Vec<String> = state
        .runtime
        .computers()?
        .into_iter()
        .filter(|c| c.record.template_digest == digest)
        .map(|c| c.record.id)
        .collect();
    if !refs.is_empty() || !computers.is_empty() {
        return Err(ApiError::new(
            Code::InUse,
            format!(
                "`{reference}` is in use by {} computers and {} other refs",
                computers.len(),
                refs.len()
            ),
        )
        // Counts only: the users of a snapshot may be other namespaces'.
        .details(serde_json::json!({ "computers": computers.len(), "refs": refs.len() })));
    }
    registry.delete(&reference).await?;
    Ok(Json(Deleted {
        reference: reference.to_string(),
    }))
}
