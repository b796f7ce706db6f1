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

use orgo_runtime::ErrorCode;
use orgo_runtime::{AgentError, ErrorChain, RuntimeError, StepFailure, VaultError};
use orgo_template::{Diagnostic, Segment, TemplateError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

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
    }
}

/// How many lines of a failed step's output `str(BuildError)` shows (all of
/// it is in `output`).
const OUTPUT_LINES: usize = 20;

/// The exception for a [`RuntimeError`].
pub(crate) fn runtime_error(py: Python<'_>, error: RuntimeError) -> PyErr {
    match error {
        RuntimeError::Build(step) => build_error(py, step),
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
