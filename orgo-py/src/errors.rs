//! The one place where Rust errors become Python exceptions.
//!
//! - [`TemplateError::Invalid`] (and a Python value with no JSON form) becomes
//!   `orgo.ValidationError`, whose `errors` lists every problem as an
//!   `orgo.Diagnostic`.
//! - Any other [`TemplateError`] (a bad name, ref or digest) and text that is
//!   not UTF-8 become `orgo.OrgoError`.
//! - Reading a file raises Python's own `OSError`s (`FileNotFoundError`, ...),
//!   since Python's `open` reads it.
//! - A [`RuntimeError`] becomes `orgo.BuildError` (a failed build step, with
//!   its `field`, `reason` and `output`), `orgo.SecretError` (missing secrets
//!   or an unreadable vault, with the `missing` names), `orgo.NotFoundError`
//!   (no such computer, published template or guest file), `orgo.PortError`
//!   (a port of `apps[].ports` that could not be forwarded) or, for anything
//!   else, `orgo.OrgoError` with the whole chain of causes in its message.
//! - A server's error ([`ClientError::Api`], `orgo.Client`) becomes the
//!   same class by its stable code: `invalid_template` `ValidationError`,
//!   `not_found` `NotFoundError`, `build_failed` `BuildError`,
//!   `secret_missing` `SecretError`, `unsupported` `UnsupportedError`; any
//!   other code `orgo.ApiError`, with `code`, `status` and `details`. A
//!   server that cannot be reached, or answers nonsense, is `OrgoError`.

use orgo_client::ClientError;
use orgo_runtime::ErrorCode;
use orgo_runtime::{AgentError, ErrorChain, RuntimeError, StepFailure, VaultError};
use orgo_template::{Diagnostic, FieldPath, Location, Segment, TemplateError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

pyo3::create_exception!(
    orgo,
    OrgoError,
    PyValueError,
    "The base of every error orgo raises; a subclass of `ValueError`."
);

pyo3::create_exception!(
    orgo,
    ValidationError,
    OrgoError,
    "A template (or an image) breaks rules of the format.\n\n\
     `errors` lists every problem found, in document order, each an\n\
     `orgo.Diagnostic` with the field's `path`, a `message`, and the `line`\n\
     and `column` in the source text (`None` for a document without text,\n\
     such as a `dict` or an `Image`)."
);

pyo3::create_exception!(
    orgo,
    BuildError,
    OrgoError,
    "A step of a build failed (or a launch's runtime step, or `on_shutdown`).\n\n\
     `field` is the step's template field (`build.run[0]`, `files[1]`,\n\
     `hooks.on_shutdown`), `reason` what happened (`exited with status 2`),\n\
     `output` the end of what the step printed (stdout and stderr interleaved)."
);

pyo3::create_exception!(
    orgo,
    SecretError,
    OrgoError,
    "A launch cannot have its secrets: required secrets have no value, or the\n\
     vault file cannot be read. `missing` lists the names without a value\n\
     (empty when the vault itself failed). Raised before anything is built."
);

pyo3::create_exception!(
    orgo,
    NotFoundError,
    OrgoError,
    "Something named does not exist: a computer, a published template, a file\n\
     in the computer, or the guest agent a base image build needs."
);

pyo3::create_exception!(
    orgo,
    UnsupportedError,
    OrgoError,
    "This host cannot run the template as written: it sets fields this\n\
     runtime cannot honour here (a GPU, a region, a desktop, an egress policy,\n\
     ...). `fields` maps each field's path (`hardware.gpu`, `apps[0].ports[0]`)\n\
     to what is missing. Raised before anything is built or started."
);

pyo3::create_exception!(
    orgo,
    ApiError,
    OrgoError,
    "An `orgo serve` refused a request for a reason the local module has no\n\
     class for (the others raise `ValidationError`, `NotFoundError`, ...).\n\n\
     `code` is the server's stable code (`unauthorized`,\n\
     `namespace_scope_mismatch`, `version_conflict`, `too_many_computers`,\n\
     ...), `status` the HTTP status, `details` the code's fields (a `dict`,\n\
     or `None`): a `version_conflict` has the `existing` and `new` digests."
);

/// One problem in a template: the field it is about, what is wrong, and
/// where the field is in the source text.
#[pyclass(module = "orgo", name = "Diagnostic", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyDiagnostic(pub(crate) Diagnostic);

#[pymethods]
impl PyDiagnostic {
    /// The field's path as a list of keys (`str`) and indexes (`int`), e.g.
    /// `["apps", 0, "services", 1, "restart"]`; `[]` for the whole document.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for segment in self.0.path.segments() {
            match segment {
                Segment::Key(key) => list.append(key.as_ref())?,
                Segment::Index(index) => list.append(*index)?,
            }
        }
        Ok(list)
    }

    /// The path as the reference writes it: `apps[0].services[1].restart`,
    /// `env.NODE_ENV`, `files["/opt/x y"]`, or `(document)`.
    #[getter]
    fn path_str(&self) -> String {
        self.0.path.to_string()
    }

    /// What was found and what is allowed.
    #[getter]
    fn message(&self) -> &str {
        &self.0.message
    }

    /// The 1-based line of the field in the source text, or `None`.
    #[getter]
    fn line(&self) -> Option<u32> {
        self.0.location.map(|l| l.line)
    }

    /// The 1-based column (in characters) of the field, or `None`.
    #[getter]
    fn column(&self) -> Option<u32> {
        self.0.location.map(|l| l.column)
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let at = |n: Option<u32>| n.map_or_else(|| "None".to_owned(), |n| n.to_string());
        Ok(format!(
            "Diagnostic(path={}, message={}, line={}, column={})",
            self.path(py)?.repr()?,
            PyString::new(py, &self.0.message).repr()?,
            at(self.line()),
            at(self.column()),
        ))
    }
}

/// The exception for a [`TemplateError`]; `source` (a file name) prefixes the message.
pub(crate) fn template_error(py: Python<'_>, error: TemplateError, source: Option<&str>) -> PyErr {
    match error {
        TemplateError::Invalid(diagnostics) => {
            validation_error(py, diagnostics.iter().cloned().collect(), source)
        }
        other => orgo_error(other.to_string(), source),
    }
}

/// `orgo.ValidationError` carrying `diagnostics` (never empty).
pub(crate) fn validation_error(
    py: Python<'_>,
    diagnostics: Vec<Diagnostic>,
    source: Option<&str>,
) -> PyErr {
    let summary = match diagnostics.as_slice() {
        [one] => format!("invalid template: {one}"),
        many => {
            let lines: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!(
                "invalid template: {} problems\n{}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    let error = ValidationError::new_err(prefixed(summary, source));
    let errors: Vec<PyDiagnostic> = diagnostics.into_iter().map(PyDiagnostic).collect();
    let attached = PyList::new(py, errors).and_then(|list| error.value(py).setattr("errors", list));
    match attached {
        Ok(()) => error,
        Err(failure) => failure,
    }
}

/// `orgo.OrgoError` with `message`.
pub(crate) fn orgo_error(message: String, source: Option<&str>) -> PyErr {
    OrgoError::new_err(prefixed(message, source))
}

fn prefixed(message: String, source: Option<&str>) -> String {
    match source {
        Some(source) => format!("{source}: {message}"),
        None => message,
    }
}

/// Why a call into the runtime failed, before it becomes an exception.
pub(crate) enum Failure {
    /// The runtime failed.
    Runtime(RuntimeError),
    /// The computer handle was stopped or detached: `orgo.OrgoError`.
    Closed(String),
    /// A call to a server failed.
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Client(error)
    }
}

impl From<RuntimeError> for Failure {
    fn from(error: RuntimeError) -> Self {
        Failure::Runtime(error)
    }
}

/// The exception for a [`Failure`].
pub(crate) fn failure(py: Python<'_>, failure: Failure) -> PyErr {
    match failure {
        Failure::Runtime(error) => runtime_error(py, error),
        Failure::Closed(message) => OrgoError::new_err(message),
        Failure::Client(error) => client_error(py, error),
    }
}

/// How many lines of a failed step's output `str(BuildError)` shows (all of
/// it is in `output`).
const OUTPUT_LINES: usize = 20;

/// The exception for a [`RuntimeError`].
pub(crate) fn runtime_error(py: Python<'_>, error: RuntimeError) -> PyErr {
    match error {
        RuntimeError::Build(step) => build_error(py, step),
        error @ RuntimeError::SecretCaptured { .. } => {
            BuildError::new_err(ErrorChain(&error).to_string())
        }
        RuntimeError::Step {
            ref field,
            ref what,
            ref source,
        } => build_error(
            py,
            StepFailure::new(
                field.clone(),
                format!("{what}: {}", ErrorChain(&**source)),
                String::new(),
            ),
        ),
        RuntimeError::Unsupportable(ref problems) => {
            let exception = UnsupportedError::new_err(ErrorChain(&error).to_string());
            let fields = pyo3::types::PyDict::new(py);
            let attached = problems
                .iter()
                .try_for_each(|p| fields.set_item(&p.field, &p.missing))
                .and_then(|()| exception.value(py).setattr("fields", fields));
            match attached {
                Ok(()) => exception,
                Err(failure) => failure,
            }
        }
        RuntimeError::Vault(vault) => secret_error(py, vault),
        RuntimeError::Port {
            ref field,
            ref reason,
        } => crate::net::port_error(py, ErrorChain(&error).to_string(), field, reason),
        RuntimeError::NotFound { what } => NotFoundError::new_err(format!("no {what}")),
        RuntimeError::Agent(AgentError::Guest {
            code: ErrorCode::NotFound,
            message,
            ..
        }) => NotFoundError::new_err(message),
        other => OrgoError::new_err(ErrorChain(&other).to_string()),
    }
}

/// `orgo.BuildError` with the step's field, reason and output.
fn build_error(py: Python<'_>, step: StepFailure) -> PyErr {
    let mut message = format!("`{}` {}", step.field, step.reason);
    let lines: Vec<&str> = step.output.trim_end().lines().collect();
    if !lines.is_empty() {
        let shown = &lines[lines.len().saturating_sub(OUTPUT_LINES)..];
        let what = if shown.len() < lines.len() {
            "its output ends with (all of it is in `output`):".to_owned()
        } else {
            "its output:".to_owned()
        };
        message.push_str(&format!("; {what}\n{}", shown.join("\n")));
    }
    let error = BuildError::new_err(message);
    let value = error.value(py);
    let attached = value
        .setattr("field", &step.field)
        .and_then(|()| value.setattr("reason", &step.reason))
        .and_then(|()| value.setattr("output", &step.output));
    match attached {
        Ok(()) => error,
        Err(failure) => failure,
    }
}

/// `orgo.SecretError`, with the names of the missing secrets.
fn secret_error(py: Python<'_>, error: VaultError) -> PyErr {
    let missing: Vec<String> = match &error {
        VaultError::Missing { names } => names.iter().map(|(_, name)| name.clone()).collect(),
        _ => Vec::new(),
    };
    let mut message = ErrorChain(&error).to_string();
    if !missing.is_empty() {
        let them = if missing.len() == 1 { "it" } else { "them" };
        message.push_str(&format!(" (or pass {them} in `secrets=`)"));
    }
    let error = SecretError::new_err(message);
    let attached =
        PyList::new(py, missing).and_then(|list| error.value(py).setattr("missing", list));
    match attached {
        Ok(()) => error,
        Err(failure) => failure,
    }
}

/// The exception for a failure of `orgo.Client`: by the server's code.
pub(crate) fn client_error(py: Python<'_>, error: ClientError) -> PyErr {
    let ClientError::Api {
        status,
        code,
        message,
        details,
    } = error
    else {
        return OrgoError::new_err(ErrorChain(&error).to_string());
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match code.as_str() {
        "invalid_template" => {
            let diagnostics: Vec<Diagnostic> = details["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let at = |k: &str| e[k].as_u64().and_then(|n| u32::try_from(n).ok());
                    Diagnostic {
                        path: field_path(e["path"].as_str().unwrap_or_default()),
                        message: text(&e["message"]),
                        location: at("line")
                            .zip(at("column"))
                            .map(|(line, column)| Location { line, column }),
                    }
                })
                .collect();
            if diagnostics.is_empty() {
                return ValidationError::new_err(message);
            }
            validation_error(py, diagnostics, None)
        }
        "not_found" => NotFoundError::new_err(message),
        "build_failed" if details.is_object() => build_error(
            py,
            StepFailure::new(
                text(&details["field"]),
                text(&details["reason"]),
                text(&details["output"]),
            ),
        ),
        "secret_missing" => {
            let missing: Vec<String> = details["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| text(&s["name"]))
                .collect();
            let error = SecretError::new_err(message);
            let attached =
                PyList::new(py, missing).and_then(|list| error.value(py).setattr("missing", list));
            attached.map_or_else(|failure| failure, |()| error)
        }
        "unsupported" => {
            let error = UnsupportedError::new_err(message);
            let fields = PyDict::new(py);
            let attached = details["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .try_for_each(|f| fields.set_item(text(&f["field"]), text(&f["missing"])))
                .and_then(|()| error.value(py).setattr("fields", fields));
            attached.map_or_else(|failure| failure, |()| error)
        }
        _ => {
            let error = ApiError::new_err(message);
            let value = error.value(py);
            let attached = crate::convert::to_python(py, &details).and_then(|details| {
                value.setattr("code", code)?;
                value.setattr("status", status)?;
                value.setattr("details", details)
            });
            attached.map_or_else(|failure| failure, |()| error)
        }
    }
}

/// A field path as `FieldPath` writes it (`apps[0].services[1].restart`,
/// `files["/opt/x y"]`, `(document)`), read back; text it cannot read is
/// one key.
fn field_path(text: &str) -> FieldPath {
    let mut path = FieldPath::root();
    if text.is_empty() || text == "(document)" {
        return path;
    }
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with("[\"") {
            // A quoted key: a JSON string, then `]`.
            let mut stream = serde_json::Deserializer::from_str(&rest[1..]).into_iter::<String>();
            match stream.next() {
                Some(Ok(key)) if rest[1 + stream.byte_offset()..].starts_with(']') => {
                    rest = &rest[1 + stream.byte_offset() + 1..];
                    path = path.key(key);
                }
                _ => return FieldPath::root().key(text.to_owned()),
            }
        } else if let Some(inner) = rest.strip_prefix('[') {
            let Some((index, after)) = inner.split_once(']') else {
                return FieldPath::root().key(text.to_owned());
            };
            let Ok(index) = index.parse() else {
                return FieldPath::root().key(text.to_owned());
            };
            path = path.index(index);
            rest = after;
        } else {
            let key = rest.strip_prefix('.').unwrap_or(rest);
            let end = key.find(['.', '[']).unwrap_or(key.len());
            path = path.key(key[..end].to_owned());
            rest = &key[end..];
        }
    }
    path
}
