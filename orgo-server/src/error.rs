//! The API's one error shape, `{"error": {"code", "message", "details"}}`,
//! and the mapping of the library's errors onto it.
//!
//! A [`Code`] is stable: clients (the CLI's remote mode, the Python
//! client) branch on it, never on the message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orgo_runtime::{ErrorChain, RuntimeError, VaultError};
use orgo_snapshot::StoreError;
use orgo_template::TemplateError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// 401: no `Authorization: Bearer` key, or one the server does not know.
    Unauthorized,
    /// 403: the key's namespace is not the one the request is about.
    NamespaceScopeMismatch,
    /// 403: a read-only key asked for a change.
    ReadOnlyKey,
    /// 404: no such template, ref, build or computer (for this key).
    NotFound,
    /// 400: a malformed request (query, path or JSON body).
    InvalidRequest,
    /// 405: the route has no such method.
    MethodNotAllowed,
    /// 422: the template is invalid; `details.errors` lists every problem.
    InvalidTemplate,
    /// 422: a `file://` or `s3://` source the server does not allow;
    /// `details.field` names it.
    HostFileRefused,
    /// 422: fields this host cannot honour; `details.fields` lists them.
    Unsupported,
    /// 422: required secrets have no value; `details.secrets` names them.
    SecretMissing,
    /// 422: the build failed; `details` has the step's field and output.
    BuildFailed,
    /// 409: the version is published with other content;
    /// `details.existing` and `details.new` are both digests.
    VersionConflict,
    /// 409: the template's snapshot is used by computers or other refs.
    InUse,
    /// 409: the computer is not in a state that allows this.
    Conflict,
    /// 409: a desktop action on a computer whose template has no desktop
    /// (the message names the fields that give it one).
    NoDesktop,
    /// 422: the desktop refused an action (a point off the screen, a key
    /// that is no key).
    ActionRefused,
    /// 413: the body is over its limit.
    PayloadTooLarge,
    /// 429: as many builds run as the server allows.
    TooManyBuilds,
    /// 429: the namespace has as many computers as the server allows.
    TooManyComputers,
    /// 502: the guest agent failed.
    AgentFailed,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 504: something did not happen in time.
    Timeout,
    /// 500: anything else; the message says what.
    Internal,
}

impl Code {
    /// The HTTP status of the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::NamespaceScopeMismatch | Code::ReadOnlyKey => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::InvalidTemplate
            | Code::HostFileRefused
            | Code::Unsupported
            | Code::SecretMissing
            | Code::BuildFailed
            | Code::ActionRefused => StatusCode::UNPROCESSABLE_ENTITY,
            Code::VersionConflict | Code::InUse | Code::Conflict | Code::NoDesktop => {
                StatusCode::CONFLICT
            }
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooManyBuilds | Code::TooManyComputers => StatusCode::TOO_MANY_REQUESTS,
            Code::AgentFailed => StatusCode::BAD_GATEWAY,
            Code::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Code::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::NamespaceScopeMismatch => "namespace_scope_mismatch",
            Code::ReadOnlyKey => "read_only_key",
            Code::NotFound => "not_found",
            Code::InvalidRequest => "invalid_request",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::InvalidTemplate => "invalid_template",
            Code::HostFileRefused => "host_file_refused",
            Code::Unsupported => "unsupported",
            Code::SecretMissing => "secret_missing",
            Code::BuildFailed => "build_failed",
            Code::VersionConflict => "version_conflict",
            Code::InUse => "in_use",
            Code::Conflict => "conflict",
            Code::NoDesktop => "no_desktop",
            Code::ActionRefused => "action_refused",
            Code::PayloadTooLarge => "payload_too_large",
            Code::TooManyBuilds => "too_many_builds",
            Code::TooManyComputers => "too_many_computers",
            Code::AgentFailed => "agent_failed",
            Code::ShuttingDown => "shutting_down",
            Code::Timeout => "timeout",
            Code::Internal => "internal",
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// What kind.
    pub code: Code,
    /// For people: lower-case, values in backticks.
    pub message: String,
    /// For programs: code-specific fields (an object), or `null`.
    pub details: Value,
    /// `Retry-After` in seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

/// The error body, as the OpenAPI document describes it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorObject,
}

/// The error itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorObject {
    /// A stable code.
    code: Code,
    /// What went wrong, for people.
    message: String,
    /// Code-specific fields, or `null`.
    #[schema(value_type = Object, nullable)]
    details: Value,
}

impl ApiError {
    /// An error of `code` with `message` and no details.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// With `details`.
    pub fn details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    /// With `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, format!("no {}", what.into()))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidRequest, message)
    }

    pub(crate) fn internal(error: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError::new(Code::Internal, ErrorChain(error).to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits are a header value"),
            );
        }
        response
    }
}

/// The diagnostics of an invalid template, unchanged:
/// `{errors: [{path, line, column, message}]}`.
pub(crate) fn invalid_template(error: &TemplateError) -> ApiError {
    let errors: Vec<Value> = error
        .diagnostics()
        .iter()
        .map(|d| {
            json!({
                "path": d.path.to_string(),
                "line": d.location.map(|l| l.line),
                "column": d.location.map(|l| l.column),
                "message": d.message,
            })
        })
        .collect();
    let errors = if errors.is_empty() {
        vec![json!({"path": "", "line": null, "column": null, "message": error.to_string()})]
    } else {
        errors
    };
    let count = errors.len();
    ApiError::new(
        Code::InvalidTemplate,
        format!(
            "invalid template, {count} problem{}",
            if count == 1 { "" } else { "s" }
        ),
    )
    .details(json!({ "errors": errors }))
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match &error {
            StoreError::Immutable {
                reference,
                existing,
                new,
            } => ApiError::new(Code::VersionConflict, error.to_string()).details(json!({
                "reference": reference.to_string(),
                "existing": existing.to_string(),
                "new": new.to_string(),
            })),
            StoreError::Reserved { .. } => {
                ApiError::new(Code::NamespaceScopeMismatch, error.to_string())
            }
            _ => ApiError::internal(&error),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> ApiError {
        let message = ErrorChain(&error).to_string();
        match error {
            RuntimeError::NotFound { what } => ApiError::not_found(what),
            RuntimeError::Unsupportable(fields) => {
                let fields: Vec<Value> = fields
                    .iter()
                    .map(|u| json!({"field": u.field, "missing": u.missing}))
                    .collect();
                ApiError::new(Code::Unsupported, message).details(json!({ "fields": fields }))
            }
            RuntimeError::Vault(VaultError::Missing { names }) => {
                let secrets: Vec<Value> = names
                    .iter()
                    .map(|(field, name)| json!({"field": field, "name": name}))
                    .collect();
                ApiError::new(Code::SecretMissing, message).details(json!({ "secrets": secrets }))
            }
            RuntimeError::Build(step) => ApiError::new(Code::BuildFailed, message).details(json!({
                "field": step.field, "reason": step.reason, "output": step.output,
            })),
            RuntimeError::SecretCaptured { findings } => {
                let secrets: Vec<Value> = findings
                    .iter()
                    .map(|f| {
                        json!({
                            "name": f.secret,
                            "encoding": f.encoding.to_string(),
                            "file": f.file,
                            "offset": f.offset,
                        })
                    })
                    .collect();
                ApiError::new(Code::BuildFailed, message).details(json!({ "secrets": secrets }))
            }
            RuntimeError::Invalid { .. } => ApiError::new(Code::Conflict, message),
            RuntimeError::Suspended { id } => ApiError::new(Code::Conflict, message)
                .details(json!({ "id": id, "state": "suspended" })),
            RuntimeError::Timeout { .. } => ApiError::new(Code::Timeout, message),
            RuntimeError::Agent(_) => ApiError::new(Code::AgentFailed, message),
            RuntimeError::NoDesktop { id } => {
                ApiError::new(Code::NoDesktop, message).details(json!({ "id": id }))
            }
            RuntimeError::Action { action, .. } => {
                ApiError::new(Code::ActionRefused, message).details(json!({ "action": action }))
            }
            RuntimeError::Store(store) => match *store {
                StoreError::BuildFailed { .. } => ApiError::new(Code::BuildFailed, message),
                other => ApiError::from(other),
            },
            _ => ApiError::new(Code::Internal, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_wire_name_and_a_status() {
        for code in [
            Code::Unauthorized,
            Code::NamespaceScopeMismatch,
            Code::ReadOnlyKey,
            Code::NotFound,
            Code::InvalidRequest,
            Code::MethodNotAllowed,
            Code::InvalidTemplate,
            Code::HostFileRefused,
            Code::Unsupported,
            Code::SecretMissing,
            Code::BuildFailed,
            Code::VersionConflict,
            Code::InUse,
            Code::Conflict,
            Code::NoDesktop,
            Code::ActionRefused,
            Code::PayloadTooLarge,
            Code::TooManyBuilds,
            Code::TooManyComputers,
            Code::AgentFailed,
            Code::ShuttingDown,
            Code::Timeout,
            Code::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                Value::from(code.as_str())
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
