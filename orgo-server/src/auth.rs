//! Who is asking: the key behind `Authorization: Bearer <key>`, and what
//! its scope lets it do.
//!
//! A key may read and write its own namespace (a read-only key only
//! read it), and read `system`, which nobody writes over HTTP. Anything
//! else is 403 `namespace_scope_mismatch`; a change asked with a
//! read-only key is 403 `read_only_key`. A computer belongs to the
//! namespace of the key that launched it: to any other key it does not
//! exist (404).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use orgo_runtime::SYSTEM_NAMESPACE;

use crate::error::{ApiError, Code};
use crate::keys::KeyInfo;
use crate::state::AppState;

/// The authenticated key of a request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) key: KeyInfo,
}

/// What a request does to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Principal {
    pub(crate) fn namespace(&self) -> &str {
        &self.key.namespace
    }

    /// Whether this key may do `access` in `namespace`.
    pub(crate) fn check(&self, namespace: &str, access: Access) -> Result<(), ApiError> {
        if access == Access::Write && self.key.read_only {
            return Err(ApiError::new(
                Code::ReadOnlyKey,
                format!("key `{}` is read-only", self.key.id),
            ));
        }
        let allowed = namespace == self.key.namespace
            || (namespace == SYSTEM_NAMESPACE && access == Access::Read);
        if allowed {
            return Ok(());
        }
        let message = if namespace == SYSTEM_NAMESPACE {
            format!("the `{SYSTEM_NAMESPACE}` namespace is read-only over HTTP")
        } else {
            format!(
                "key `{}` is scoped to namespace `{}`, not `{namespace}`",
                self.key.id, self.key.namespace
            )
        };
        Err(
            ApiError::new(Code::NamespaceScopeMismatch, message).details(serde_json::json!({
                "key_namespace": self.key.namespace, "namespace": namespace,
            })),
        )
    }

    /// A change in this key's own namespace (launching, driving its
    /// computers): only a read-only key is refused.
    pub(crate) fn writer(&self) -> Result<(), ApiError> {
        self.check(&self.key.namespace.clone(), Access::Write)
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |why: &str| ApiError::new(Code::Unauthorized, why.to_owned());
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("no `Authorization: Bearer <key>` header"))?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("the `Authorization` header is not `Bearer <key>`"))?;
        let keys = Arc::clone(&state.keys);
        let presented = presented.to_owned();
        let found = tokio::task::spawn_blocking(move || keys.authenticate(&presented))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::internal(&e))?;
        match found {
            Some(key) => Ok(Principal { key }),
            None => Err(unauthorized("unknown or revoked key")),
        }
    }
}
