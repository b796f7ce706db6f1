//! The one place where Rust errors become Python exceptions.
//!
//! - [`TemplateError::Invalid`] (and a Python value with no JSON form) becomes
//!   `orgo.ValidationError`, whose `errors` lists every problem as an
//!   `orgo.Diagnostic`.
//! - Any other [`TemplateError`] (a bad name, ref or digest) and text that is
//!   not UTF-8 become `orgo.OrgoError`.
//! - Reading a file raises Python's own `OSError`s (`FileNotFoundError`, ...),
//!   since Python's `open` reads it.

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
