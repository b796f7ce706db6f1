//! The `orgo` Python module: a thin translation layer over `orgo-template`
//! (templates, images) and `orgo-runtime` (build, launch, computers).
//!
//! Built with maturin (`pip install ./orgo-py`) as `orgo._orgo`, which the
//! package `python/orgo` re-exports; the Python API is described in
//! `python/orgo/__init__.pyi` and tested by `orgo-py/tests`. Every Rust error becomes a
//! Python exception in one place, the `errors` module.

mod automation;
mod computer;
mod convert;
mod desktop;
mod errors;
mod net;
mod output;
mod remote;
mod runtime;

use std::sync::OnceLock;

use orgo_template::{Digest, FieldPath, Format, Image, Name, Template};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyMapping, PyString, PyTuple};
use serde_json::Value;

use crate::errors::{OrgoError, PyDiagnostic, ValidationError};

/// A validated `orgo.ai/v1` template in canonical form.
///
/// Read one with `Template.from_yaml`, `from_json`, `from_dict` or `load`;
/// any problem raises `orgo.ValidationError` listing every problem at once.
/// A template is immutable; two are equal when their digests are.
#[pyclass(module = "orgo", name = "Template", frozen)]
struct PyTemplate {
    inner: Template,
    digest: OnceLock<Digest>,
}

impl PyTemplate {
    fn new(inner: Template) -> Self {
        Self {
            inner,
            digest: OnceLock::new(),
        }
    }

    fn digest_value(&self) -> Digest {
        *self.digest.get_or_init(|| self.inner.digest())
    }

    /// Parses text in `format` with the GIL released.
    fn parse(py: Python<'_>, text: &PyBackedStr, format: Format) -> PyResult<Self> {
        let text: &str = text;
        py.detach(|| Template::parse(text, format))
            .map(Self::new)
            .map_err(|e| errors::template_error(py, e, None))
    }
}

#[pymethods]
impl PyTemplate {
    /// Reads a template from YAML text (sugar or canonical form).
    #[staticmethod]
    fn from_yaml(py: Python<'_>, text: PyBackedStr) -> PyResult<Self> {
        Self::parse(py, &text, Format::Yaml)
    }

    /// Reads a template from JSON text (sugar or canonical form).
    #[staticmethod]
    fn from_json(py: Python<'_>, text: PyBackedStr) -> PyResult<Self> {
        Self::parse(py, &text, Format::Json)
    }

    /// Reads a template from a `dict` (or any mapping) of JSON values:
    /// `str`, `int`, `float`, `bool`, `None`, `list`/`tuple` and mappings
    /// with `str` keys. Problems carry paths but no line or column.
    #[staticmethod]
    fn from_dict(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        if !data.is_instance_of::<PyDict>() && data.cast::<PyMapping>().is_err() {
            let kind = data.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "Template.from_dict takes a dict, not `{kind}`"
            )));
        }
        let mut problems = Vec::new();
        let value = convert::from_python(data, &FieldPath::root(), &mut problems)?;
        if !problems.is_empty() {
            return Err(errors::validation_error(py, problems, None));
        }
        py.detach(|| Template::from_value(&value))
            .map(Self::new)
            .map_err(|e| errors::template_error(py, e, None))
    }

    /// Reads a template file: JSON for `.json`, YAML for `.yaml` and `.yml`,
    /// otherwise JSON when the text starts with `{`, else YAML. Errors name
    /// the file; a missing file raises `FileNotFoundError`.
    #[staticmethod]
    fn load(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<Self> {
        let os = py.import("os")?;
        let name: String = os.call_method1("fsdecode", (path,))?.extract()?;
        let bytes: Vec<u8> = py
            .import("pathlib")?
            .getattr("Path")?
            .call1((&name,))?
            .call_method0("read_bytes")?
            .extract()?;
        let text = String::from_utf8(bytes).map_err(|e| {
            errors::orgo_error(
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
                Some(&name),
            )
        })?;
        let result = py.detach(|| Template::parse_detected(Some(&name), &text));
        result
            .map(Self::new)
            .map_err(|e| errors::template_error(py, e, Some(&name)))
    }

    /// The canonical form as a `dict`, fields in the reference's order:
    /// sugar folded, `${...}` resolved, defaults written out. Strings are
    /// spelled as in a document (a literal `${var.` is written `$${var.`), so
    /// `Template.from_dict(t.normalize())` is `t` again.
    fn normalize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::to_python(py, &self.inner.to_value())
    }

    /// `"sha256:"` and the hex SHA-256 of the canonical JSON (RFC 8785):
    /// equal for templates that mean the same, whatever their spelling.
    #[getter]
    fn digest(&self) -> String {
        self.digest_value().to_string()
    }

    /// The template's name (`template.name`).
    #[getter]
    fn name(&self) -> &str {
        self.inner.template().name.as_str()
    }

    /// The template's version (`template.version`), as semver text.
    #[getter]
    fn version(&self) -> String {
        self.inner.template().version.to_string()
    }

    /// The canonical form as YAML, fields in the reference's order.
    fn to_yaml(&self) -> String {
        self.inner.to_yaml()
    }

    /// The canonical form as indented JSON, fields in the reference's order;
    /// with `canonical=True`, the exact RFC 8785 bytes the digest hashes.
    #[pyo3(signature = (*, canonical = false))]
    fn to_json(&self, canonical: bool) -> String {
        if canonical {
            self.inner.canonical_json()
        } else {
            self.inner.to_json_pretty()
        }
    }

    /// The template's ref in `namespace`: `"namespace/name@version"`.
    fn reference(&self, namespace: &str) -> PyResult<String> {
        let namespace: Name = namespace
            .parse()
            .map_err(|e| errors::orgo_error(format!("{e}"), None))?;
        Ok(self.inner.reference(namespace).to_string())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyTemplate>()
            .is_ok_and(|other| other.get().digest_value() == self.digest_value())
    }

    fn __hash__(&self) -> u64 {
        let bytes = self.digest_value();
        u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let quoted = |text: &str| PyString::new(py, text).repr().map(|r| r.to_string());
        Ok(format!(
            "Template(name={}, version={}, digest={})",
            quoted(self.name())?,
            quoted(&self.version())?,
            quoted(&self.digest())?
        ))
    }

    /// Pickles as the canonical JSON.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let from_json = slf.get_type().getattr("from_json")?;
        let args = PyTuple::new(slf.py(), [slf.get().inner.canonical_json()])?;
        Ok((from_json, args))
    }
}

/// A fluent, immutable image builder: what a computer is made of, step by
/// step, on top of orgo's base Linux image. Every method returns a new
/// `Image` and leaves the one it was called on as it was.
///
/// `to_template(name, version, **hardware)` writes the steps onto a
/// template's `build`, `env` and `files`; `cache_key()` hashes those
/// sections (not the name, hardware or build memory).
#[pyclass(module = "orgo", name = "Image", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
struct PyImage {
    inner: Image,
}

impl PyImage {
    fn wrap(inner: Image) -> Self {
        Self { inner }
    }
}

/// `str` items of `value`: one `str` is one item; otherwise any iterable of `str`.
fn strings(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    let iter = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a list of str, not `{}`",
            crate::convert::type_name(value)
        ))
    })?;
    iter.map(|item| {
        let item = item?;
        item.cast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "{what} must be str, not `{}`",
                    crate::convert::type_name(&item)
                ))
            })
            .and_then(|s| Ok(s.to_cow()?.into_owned()))
    })
    .collect()
}

/// An absolute local path: `local` (`str` or path-like) resolved against the
/// current directory, as Python's `open` would.
fn local_path(local: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = local.py();
    let os_path = py.import("os.path")?;
    let absolute = os_path.call_method1("abspath", (local,))?;
    py.import("os")?
        .call_method1("fsdecode", (absolute,))?
        .extract()
}

#[pymethods]
impl PyImage {
    /// orgo's base Linux image, with nothing added.
    #[staticmethod]
    fn base() -> Self {
        Self::wrap(Image::base())
    }

    /// Installs Debian packages (`build.apt`).
    fn apt_install(&self, packages: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self::wrap(
            self.inner.apt_install(strings(packages, "packages")?),
        ))
    }

    /// Installs Python packages (`build.pip`).
    fn pip_install(&self, packages: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self::wrap(
            self.inner.pip_install(strings(packages, "packages")?),
        ))
    }

    /// Installs npm packages (`build.npm`).
    fn npm_install(&self, packages: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self::wrap(
            self.inner.npm_install(strings(packages, "packages")?),
        ))
    }

    /// Runs shell commands during the build, in order (`build.run`); each
    /// argument is a command or a list of commands. After `workdir(dir)`,
    /// commands run in `dir`.
    #[pyo3(signature = (*commands))]
    fn run_commands(&self, commands: &Bound<'_, PyTuple>) -> PyResult<Self> {
        let mut all = Vec::new();
        for command in commands.iter() {
            all.extend(strings(&command, "commands")?);
        }
        Ok(Self::wrap(self.inner.run_commands(all)))
    }

    /// Sets environment variables (`env`) from a mapping and/or keywords;
    /// a later value for a name replaces an earlier one.
    #[pyo3(signature = (vars = None, **more))]
    fn env(
        &self,
        vars: Option<&Bound<'_, PyAny>>,
        more: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut take = |mapping: &Bound<'_, PyAny>| -> PyResult<()> {
            let mapping = mapping.cast::<PyMapping>().map_err(|_| {
                PyTypeError::new_err(
                    "env takes a mapping of str to str, e.g. {\"NAME\": \"value\"}",
                )
            })?;
            for pair in mapping.items()?.iter() {
                let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>())
                else {
                    return Err(PyTypeError::new_err(format!(
                        "env names and values must be str, not {} = {}",
                        name.repr()?,
                        value.repr()?
                    )));
                };
                pairs.push((name.to_cow()?.into_owned(), value.to_cow()?.into_owned()));
            }
            Ok(())
        };
        if let Some(vars) = vars {
            take(vars)?;
        }
        if let Some(more) = more {
            take(more.as_any())?;
        }
        Ok(Self::wrap(self.inner.env(pairs)))
    }

    /// Creates the directory `path` (absolute, in the computer) and runs
    /// every later command in it: `mkdir -p DIR`, then `cd DIR && COMMAND`.
    fn workdir(&self, path: &str) -> Self {
        Self::wrap(self.inner.workdir(path))
    }

    /// Writes a file with the given text at `path` in the computer.
    fn add_file(&self, path: &str, content: &str) -> Self {
        Self::wrap(self.inner.add_file(path, content))
    }

    /// Copies the local file `local` (resolved against the current
    /// directory) to `remote`, as a `file://` source the build reads.
    fn add_local_file(&self, local: &Bound<'_, PyAny>, remote: &str) -> PyResult<Self> {
        Ok(Self::wrap(
            self.inner.add_local_file(local_path(local)?, remote),
        ))
    }

    /// Copies the tree of the local directory `local` (resolved against the
    /// current directory) to the directory `remote`.
    fn add_local_dir(&self, local: &Bound<'_, PyAny>, remote: &str) -> PyResult<Self> {
        Ok(Self::wrap(
            self.inner.add_local_dir(local_path(local)?, remote),
        ))
    }

    /// Sets the RAM of the build in MiB (default 4096). It changes neither
    /// the template nor the cache key.
    fn builder_memory(&self, mb: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mb: i128 = mb.extract()?;
        let mb = u32::try_from(mb).ok().filter(|mb| *mb > 0).ok_or_else(|| {
            OrgoError::new_err(format!(
                "builder memory must be 1 to {} MiB, not {mb}",
                u32::MAX
            ))
        })?;
        Ok(Self::wrap(self.inner.builder_memory(mb)))
    }

    /// The RAM of the build in MiB: the last `builder_memory(mb)`, or 4096.
    #[getter]
    fn builder_memory_mb(&self) -> u32 {
        self.inner.builder_memory_mb()
    }

    /// The directory of the last `workdir(path)`, where later commands run, or `None`.
    #[getter]
    fn working_dir(&self) -> Option<&str> {
        self.inner.working_dir()
    }

    /// `"sha256:"` and the hex SHA-256 of the image's content: the `build`,
    /// `env` and `files` sections it writes, as RFC 8785 JSON. Equal images
    /// share it; the build memory never changes it.
    fn cache_key(&self) -> String {
        self.inner.cache_key().to_string()
    }

    /// The sections the image writes (`build`, `env`, `files`), as a `dict`:
    /// what `cache_key()` hashes.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::to_python(py, &self.inner.to_value())
    }

    /// The template of this image, named `name` at `version`, with the
    /// `hardware` fields given as keywords (`cpu=2, ram_gb=4`). Raises
    /// `orgo.ValidationError` with every problem at its path in the template.
    #[pyo3(signature = (name, version, **hardware))]
    fn to_template(
        &self,
        py: Python<'_>,
        name: &str,
        version: &str,
        hardware: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyTemplate> {
        let hardware = match hardware {
            Some(fields) if !fields.is_empty() => {
                let mut problems = Vec::new();
                let value = convert::from_python(
                    fields.as_any(),
                    &FieldPath::root().key("hardware"),
                    &mut problems,
                )?;
                if !problems.is_empty() {
                    return Err(errors::validation_error(py, problems, None));
                }
                value
            }
            _ => Value::Null,
        };
        self.inner
            .to_template(name, version, &hardware)
            .map(PyTemplate::new)
            .map_err(|e| errors::template_error(py, e, None))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        if let Value::Object(sections) = self.inner.to_value() {
            for (name, value) in &sections {
                parts.push(format!("{name}={}", convert::to_python(py, value)?.repr()?));
            }
        }
        if let Some(dir) = self.inner.working_dir() {
            parts.push(format!("working_dir={}", PyString::new(py, dir).repr()?));
        }
        if self.inner.builder_memory_mb() != Image::base().builder_memory_mb() {
            parts.push(format!(
                "builder_memory_mb={}",
                self.inner.builder_memory_mb()
            ));
        }
        Ok(format!("Image({})", parts.join(", ")))
    }
}

/// The JSON Schema (draft 2020-12) of the `orgo.ai/v1` format, as a `dict`:
/// it accepts the canonical form, the sugar form and any mix of the two.
#[pyfunction]
fn template_schema(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    convert::to_python(py, &orgo_template::json_schema())
}

/// orgo: declarative Linux computer templates (`orgo.ai/v1`), built into
/// golden snapshots and launched as computers.
///
/// `Template` reads, validates and digests templates; `Image` builds one
/// step by step; `ValidationError` lists every problem of a template.
/// `build` makes a template's golden snapshot; `launch` starts a `Computer`
/// from it (`exec`, `write_file`, `read_file`, `stop`); `connect` reaches a
/// running one again.
#[pymodule(name = "_orgo")]
mod orgo {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::runtime::{
        PyBuildResult, PyLogEvent, build, checkpoint, connect, fork, launch, resume, suspend,
    };

    #[pymodule_export]
    use crate::computer::{PyComputer, PyExecResult};

    #[pymodule_export]
    use crate::automation::{PyEvents, PyLogLines};

    #[pymodule_export]
    use crate::errors::{BuildError, NotFoundError, SecretError, UnsupportedError};

    #[pymodule_export]
    use crate::net::PortError;

    #[pymodule_export]
    use crate::remote::{PyClient, PyRemoteComputer};

    #[pymodule_export]
    use crate::errors::ApiError;

    #[pymodule_export]
    use super::PyTemplate;

    #[pymodule_export]
    use super::PyImage;

    #[pymodule_export]
    use super::PyDiagnostic;

    #[pymodule_export]
    use super::OrgoError;

    #[pymodule_export]
    use super::ValidationError;

    #[pymodule_export]
    use super::template_schema;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // `orgo/__init__.py` re-exports `__all__` from the extension, so
        // `__version__` is listed to reach the package.
        m.add(
            "__all__",
            [
                "__version__",
                "ApiError",
                "BuildError",
                "BuildResult",
                "Client",
                "Computer",
                "Diagnostic",
                "Events",
                "ExecResult",
                "Image",
                "LogEvent",
                "LogLines",
                "NotFoundError",
                "OrgoError",
                "PortError",
                "RemoteComputer",
                "SecretError",
                "Template",
                "UnsupportedError",
                "ValidationError",
                "build",
                "checkpoint",
                "connect",
                "fork",
                "launch",
                "resume",
                "suspend",
                "template_schema",
            ],
        )?;
        Ok(())
    }
}
