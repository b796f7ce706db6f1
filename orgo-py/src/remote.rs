//! `orgo.Client` and `orgo.RemoteComputer`: the module's calls against an
//! `orgo serve`, through `orgo-client` (HTTP in Rust; nothing of it in
//! Python). Every call blocks with the GIL released, as the local ones do.

use std::sync::atomic::{AtomicU8, Ordering};

use orgo_client::{Client, ClientError, ComputerView, ExecRequest, Launch};
use orgo_template::TemplateRef;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::computer::{CommandLine, PyExecResult, command_line, content_bytes, exec_timeout};
use crate::errors::{self, Failure};
use crate::output::Output;
use crate::runtime::{
    Cancel, Interrupt, PyBuildResult, Source, callable, forward, positive, string_map, wait,
};

const OPEN: u8 = 0;
const STOPPED: u8 = 1;
const DETACHED: u8 = 2;

/// A template as a remote call names it.
enum Remote {
    /// A document to publish first (in the key's namespace).
    Document(String),
    /// `namespace/name@version`.
    Qualified(String),
    /// `name@version`: in the key's namespace.
    Bare(String),
}

impl Remote {
    /// `template` as for `orgo.build`: a `Template` or a file is published
    /// (as canonical JSON), a ref names a published template.
    fn new(template: &Bound<'_, PyAny>) -> PyResult<Remote> {
        let bare = match template.cast::<PyString>() {
            Ok(text) => {
                let text = text.to_cow()?;
                (!text.contains('/')).then(|| text.into_owned())
            }
            Err(_) => None,
        };
        Ok(match (Source::new(template)?, bare) {
            (Source::Template(template), _) => Remote::Document(template.canonical_json()),
            (Source::Ref(_), Some(bare)) => Remote::Bare(bare),
            (Source::Ref(reference), None) => Remote::Qualified(reference.to_string()),
        })
    }

    /// The published ref: publishes a document, finds a bare ref in the
    /// key's namespace.
    async fn reference(self, client: &Client) -> Result<String, ClientError> {
        match self {
            Remote::Document(document) => Ok(client.publish(None, &document).await?.reference),
            Remote::Qualified(reference) => Ok(reference),
            Remote::Bare(reference) => client
                .templates(None)
                .await?
                .into_iter()
                .find(|t| {
                    t.reference.split_once('/').is_some_and(|(ns, rest)| {
                        ns != TemplateRef::SYSTEM_NAMESPACE && rest == reference
                    })
                })
                .map(|t| t.reference)
                .ok_or_else(|| ClientError::Api {
                    status: 404,
                    code: "not_found".into(),
                    message: format!("no template `{reference}` in the key's namespace"),
                    details: serde_json::Value::Null,
                }),
        }
    }
}

/// Builds `reference` on the server, passing its log to `on_log`; a failed
/// build is `orgo.BuildError`.
async fn build_ref(
    client: &Client,
    reference: &str,
    on_log: Option<&Py<PyAny>>,
    cancel: &Cancel,
) -> Result<PyBuildResult, Failure> {
    let mut log = forward(on_log, cancel);
    let built = client.build(reference, &mut log).await?;
    let view = built.view;
    if view.status == "ready" {
        return Ok(PyBuildResult::remote(view, built.reused));
    }
    let failure = view.error.unwrap_or(orgo_client::BuildFailure {
        message: format!("the build of `{reference}` is {}", view.status),
        field: None,
        output: None,
    });
    // A step's failure is `BuildError`; any other (cancelled, interrupted)
    // `ApiError` with code `build_failed`.
    let details = match failure.field {
        Some(field) => {
            let prefix = format!("`{field}` ");
            let reason = failure
                .message
                .strip_prefix(&prefix)
                .unwrap_or(&failure.message);
            serde_json::json!({
                "field": field,
                "reason": reason,
                "output": failure.output.unwrap_or_default(),
            })
        }
        None => serde_json::Value::Null,
    };
    Err(Failure::Client(ClientError::Api {
        status: 422,
        code: "build_failed".into(),
        message: failure.message,
        details,
    }))
}

/// A client of an `orgo serve` at `url` (`http://host:port`) with the API
/// key `api_key` (`orgo keys create`): the module's `build`, `launch` and
/// `connect` as methods, over HTTP.
///
/// Switching is one line: `orgo.launch(t)` becomes
/// `orgo.Client(url, key).launch(t)`; the computer it returns has the same
/// `exec` (with `on_stdout`/`on_stderr`), `write_file`, `read_file` and
/// `stop`, and the server's errors raise the same exception classes (by
/// their stable code; codes the local module has no class for raise
/// `orgo.ApiError`). A `Template` or a template file given to `build` or
/// `launch` is published in the key's namespace first; a ref names a
/// published template (`name@version` in the key's namespace). Calls block
/// with the GIL released; a `Client` may be shared by threads.
#[pyclass(module = "orgo", name = "Client", frozen)]
pub(crate) struct PyClient {
    client: Client,
    url: String,
}

impl PyClient {
    fn call<T, F>(&self, py: Python<'_>, cancel: Option<&Cancel>, work: F) -> PyResult<T>
    where
        F: AsyncFnOnce(&Client) -> Result<T, Failure> + Send,
        T: Send,
    {
        let client = &self.client;
        wait(py, cancel, Interrupt::Allowed, || async move {
            work(client).await
        })
    }
}

/// A publish's or a listing's `{"ref", "digest"}` (and `"published"`).
fn summary<'py>(
    py: Python<'py>,
    reference: &str,
    digest: &str,
    published: Option<bool>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("ref", reference)?;
    out.set_item("digest", digest)?;
    if let Some(published) = published {
        out.set_item("published", published)?;
    }
    Ok(out)
}

#[pymethods]
impl PyClient {
    #[new]
    fn new(url: &str, api_key: &str) -> PyResult<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(errors::orgo_error(
                format!("url must be `http://HOST:PORT` or `https://...`, not `{url}`"),
                None,
            ));
        }
        let client = Client::new(url, api_key)
            .map_err(|e| errors::orgo_error(orgo_runtime::ErrorChain(&e).to_string(), None))?;
        Ok(PyClient {
            client,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The server's URL.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Publishes a template: an `orgo.Template` (its canonical JSON), a
    /// template file (`os.PathLike`, sent as written) or the text of one
    /// (`str`, YAML or JSON), in `namespace` (default: the key's). Returns
    /// `{"ref": "ns/name@version", "digest": "sha256:...", "published":
    /// bool}` (`False` when the same document was published already). An
    /// invalid document raises `orgo.ValidationError` with the server's
    /// diagnostics; a version published with other content `orgo.ApiError`
    /// with code `version_conflict`.
    #[pyo3(signature = (template, *, namespace = None))]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        template: &Bound<'py, PyAny>,
        namespace: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let document = if let Ok(text) = template.cast::<PyString>() {
            text.to_cow()?.into_owned()
        } else if let Ok(t) = template.cast::<crate::PyTemplate>() {
            t.get().inner.canonical_json()
        } else if template.is_instance(&py.import("os")?.getattr("PathLike")?)? {
            py.import("pathlib")?
                .getattr("Path")?
                .call1((template,))?
                .call_method1("read_text", ("utf-8",))?
                .extract()?
        } else {
            return Err(PyTypeError::new_err(format!(
                "template must be an `orgo.Template`, a path or document text, not `{}`",
                template.get_type().name()?
            )));
        };
        let published = self.call(py, None, async |client| {
            Ok(client.publish(namespace.as_deref(), &document).await?)
        })?;
        summary(
            py,
            &published.reference,
            &published.digest,
            Some(published.published),
        )
    }

    /// The published templates of `namespace`, else of the key's namespace
    /// and `system`: a list of `{"ref", "digest"}`.
    #[pyo3(signature = (namespace = None))]
    fn templates<'py>(
        &self,
        py: Python<'py>,
        namespace: Option<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let listed = self.call(py, None, async |client| {
            Ok(client.templates(namespace.as_deref()).await?)
        })?;
        let list = PyList::empty(py);
        for t in &listed {
            list.append(summary(py, &t.reference, &t.digest, None)?)?;
        }
        Ok(list)
    }

    /// Builds a template's golden snapshot on the server, or finds it
    /// built, as `orgo.build` does. `on_log` receives the build's
    /// `orgo.LogEvent`s (output a line at a time) as the server streams
    /// them, with the semantics of `orgo.build`. The result's `backend` is
    /// `"remote"`.
    #[pyo3(signature = (template, *, on_log = None))]
    fn build(
        &self,
        py: Python<'_>,
        template: &Bound<'_, PyAny>,
        on_log: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyBuildResult> {
        let source = Remote::new(template)?;
        let on_log = callable("on_log", on_log)?;
        let cancel = Cancel::default();
        let (on_log, shared) = (on_log.as_ref(), &cancel);
        self.call(py, Some(&cancel), async move |client| {
            let reference = source.reference(client).await?;
            build_ref(client, &reference, on_log, shared).await
        })
    }

    /// Launches a computer on the server, building its template first if
    /// needed, as `orgo.launch` does; returns an `orgo.RemoteComputer`.
    /// `secrets` are sent with the request (the server's own vault fills
    /// the rest); `ORGO_SECRET_*` variables of this process are not read.
    #[pyo3(signature = (
        template, *, ram_gb = None, cpu = None, env = None, secrets = None, on_log = None
    ))]
    #[allow(clippy::too_many_arguments, reason = "a Python method with keywords")]
    fn launch(
        &self,
        py: Python<'_>,
        template: &Bound<'_, PyAny>,
        ram_gb: Option<i64>,
        cpu: Option<i64>,
        env: Option<&Bound<'_, PyAny>>,
        secrets: Option<&Bound<'_, PyAny>>,
        on_log: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyRemoteComputer> {
        let source = Remote::new(template)?;
        let ram_gb = positive(ram_gb, "ram_gb")?;
        let cpu = positive(cpu, "cpu")?;
        let env = string_map(env, "env")?;
        let secrets = string_map(secrets, "secrets")?;
        let on_log = callable("on_log", on_log)?;
        let cancel = Cancel::default();
        let (on_log, shared) = (on_log.as_ref(), &cancel);
        let reference = self.call(py, Some(&cancel), async move |client| {
            let reference = source.reference(client).await?;
            build_ref(client, &reference, on_log, shared).await?;
            Ok(reference)
        })?;
        // The launch itself is not cut short: a computer must not be left
        // running without a handle.
        let client = self.client.clone();
        let view = wait(py, None, Interrupt::Never, || async move {
            let mut launch = Launch::new(&reference);
            launch.ram_gb = ram_gb;
            launch.cpu = cpu;
            launch.env = env;
            launch.secrets = secrets;
            Ok(client.launch(&launch).await?)
        })?;
        Ok(PyRemoteComputer::new(self.client.clone(), view, true))
    }

    /// Connects to a running computer of the key's namespace by id. Dropping
    /// the handle leaves it running; `stop()` stops it. Raises
    /// `orgo.NotFoundError` for an unknown computer.
    fn connect(&self, py: Python<'_>, id: String) -> PyResult<PyRemoteComputer> {
        let view = self.call(py, None, async move |client| {
            Ok(client.computer(&id).await?)
        })?;
        Ok(PyRemoteComputer::new(self.client.clone(), view, false))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Client(url={})",
            PyString::new(py, &self.url).repr()?
        ))
    }
}

/// A computer running on an `orgo serve`, from `Client.launch` or
/// `Client.connect`: `orgo.Computer`'s `exec` (with `on_stdout` and
/// `on_stderr`), `write_file`, `read_file`, `read_text`, `stop`, `detach`
/// and context manager, over HTTP.
///
/// Differences: `exec`'s `timeout` is rounded up to whole seconds and
/// `input` is not offered (the HTTP API has no stdin); the template,
/// snapshot and desktop calls are not offered yet. A computer this handle
/// launched and nobody stopped or detached is stopped when the handle is
/// collected.
#[pyclass(module = "orgo", name = "RemoteComputer", frozen)]
pub(crate) struct PyRemoteComputer {
    client: Client,
    view: ComputerView,
    owned: bool,
    /// Mirrors `state` for readers that must not wait.
    status: AtomicU8,
    /// `OPEN`, `STOPPED` or `DETACHED`; locked only with the GIL released.
    state: tokio::sync::RwLock<u8>,
}

impl PyRemoteComputer {
    fn new(client: Client, view: ComputerView, owned: bool) -> Self {
        PyRemoteComputer {
            client,
            view,
            owned,
            status: AtomicU8::new(OPEN),
            state: tokio::sync::RwLock::new(OPEN),
        }
    }

    fn closed_error(&self, state: u8) -> Failure {
        let id = &self.view.id;
        Failure::Closed(if state == DETACHED {
            format!(
                "computer `{id}` was detached from this handle; `Client.connect(\"{id}\")` reaches it"
            )
        } else {
            format!("computer `{id}` is stopped")
        })
    }

    /// Runs `f` while the handle is open, with the GIL released.
    fn with_open<T, F>(&self, py: Python<'_>, cancel: Option<&Cancel>, f: F) -> PyResult<T>
    where
        F: AsyncFnOnce(&Client, &str) -> Result<T, Failure> + Send,
        T: Send,
    {
        wait(py, cancel, Interrupt::Allowed, || async move {
            let state = self.state.read().await;
            if *state != OPEN {
                return Err(self.closed_error(*state));
            }
            f(&self.client, &self.view.id).await
        })
    }
}

#[pymethods]
impl PyRemoteComputer {
    /// The computer's id (`c-` and 12 hex digits); its hostname too.
    #[getter]
    fn id(&self) -> &str {
        &self.view.id
    }

    /// The template it was launched from, as `namespace/name@version`.
    #[getter]
    fn template(&self) -> &str {
        &self.view.template_ref
    }

    /// Its vCPUs.
    #[getter]
    fn cpu(&self) -> u32 {
        self.view.cpu
    }

    /// Its memory in MiB.
    #[getter]
    fn memory_mib(&self) -> u64 {
        self.view.memory_mib
    }

    /// Its forwarded ports as `Computer.ports` gives them: `{"internal",
    /// "protocol", "host", "port"}`, the host and port on the server's side.
    #[getter]
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for p in &self.view.ports {
            let (host, port) = p.address.rsplit_once(':').unwrap_or((&p.address, "0"));
            let item = PyDict::new(py);
            item.set_item("internal", p.internal)?;
            item.set_item("protocol", &p.protocol)?;
            item.set_item("host", host.trim_start_matches('[').trim_end_matches(']'))?;
            item.set_item("port", port.parse::<u16>().unwrap_or(0))?;
            list.append(item)?;
        }
        Ok(list)
    }

    /// `True` once `stop()` or `detach()` was called on this handle.
    #[getter]
    fn closed(&self) -> bool {
        self.status.load(Ordering::SeqCst) != OPEN
    }

    /// Runs a command and waits for it to end, as `Computer.exec` does
    /// (`on_stdout`/`on_stderr` with the same semantics), the output
    /// streamed from the server as it comes. `timeout` is rounded up to
    /// whole seconds; `input` is refused (no stdin over HTTP yet).
    #[pyo3(signature = (
        cmd, *, timeout = None, user = None, cwd = None, env = None, input = None,
        on_stdout = None, on_stderr = None
    ))]
    #[allow(clippy::too_many_arguments, reason = "a Python method with keywords")]
    fn exec(
        &self,
        py: Python<'_>,
        cmd: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        user: Option<String>,
        cwd: Option<String>,
        env: Option<&Bound<'_, PyAny>>,
        input: Option<&Bound<'_, PyAny>>,
        on_stdout: Option<Bound<'_, PyAny>>,
        on_stderr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyExecResult> {
        let mut exec = match command_line(cmd)? {
            CommandLine::Shell(line) => ExecRequest::shell(&line),
            CommandLine::Argv(argv) => ExecRequest::argv(argv),
        };
        if input.is_some_and(|i| !i.is_none()) {
            return Err(errors::orgo_error(
                "input is not offered by the HTTP API yet; write a file and redirect it".into(),
                None,
            ));
        }
        exec.timeout_s = exec_timeout(timeout)?.map(|limit| limit.as_secs_f64().ceil() as u64);
        exec.user = user;
        exec.cwd = cwd;
        exec.env = string_map(env, "env")?;
        let on_stdout = callable("on_stdout", on_stdout)?;
        let on_stderr = callable("on_stderr", on_stderr)?;
        let cancel = Cancel::default();
        let mut output = Output::new(on_stdout, on_stderr, &cancel);
        let sink = &mut output;
        let end = self.with_open(py, Some(&cancel), async move |client, id| {
            let mut take = |stream: orgo_client::Stream, data: &[u8]| {
                sink.take(stream == orgo_client::Stream::Stderr, data);
            };
            Ok(client.exec(id, &exec, &mut take).await?)
        })?;
        Ok(output.finish(end.code, end.signal, end.timed_out))
    }

    /// Writes `content` (`str` as UTF-8, or `bytes`) to the file `path` in
    /// the computer; `mode` (e.g. `0o600`) sets its permissions.
    #[pyo3(signature = (path, content, mode = None))]
    fn write_file(
        &self,
        py: Python<'_>,
        path: String,
        content: &Bound<'_, PyAny>,
        mode: Option<u32>,
    ) -> PyResult<()> {
        if let Some(mode) = mode.filter(|m| *m > 0o7777) {
            return Err(errors::orgo_error(
                format!("mode must be 0 to 0o7777, not {mode:#o}"),
                None,
            ));
        }
        let content = content_bytes(content)?;
        self.with_open(py, None, async move |client, id| {
            Ok(client.write_file(id, &path, content, mode).await?)
        })
    }

    /// The content of the file `path` in the computer. Raises
    /// `orgo.NotFoundError` when there is no such file.
    fn read_file<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with_open(py, None, async move |client, id| {
            Ok(client.read_file(id, &path).await?)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The content of the file `path` in the computer, decoded (UTF-8 by default).
    #[pyo3(signature = (path, encoding = "utf-8", errors = "strict"))]
    fn read_text<'py>(
        &self,
        py: Python<'py>,
        path: String,
        encoding: &str,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.read_file(py, path)?
            .call_method1("decode", (encoding, errors))
    }

    /// Its service logs as `(service, line)` pairs: one service's (or
    /// `trigger.NAME`'s), else every log; `since` (seconds) only the last
    /// while. The lines there are now (the CLI's `orgo logs -f` follows).
    #[pyo3(signature = (service = None, *, since = None))]
    fn logs<'py>(
        &self,
        py: Python<'py>,
        service: Option<String>,
        since: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let since = since.map(|s| s.max(1.0).ceil() as u64);
        let lines = self.with_open(py, None, async move |client, id| {
            let mut lines = Vec::new();
            let mut take = |service: &str, line: &str| {
                lines.push((service.to_owned(), line.to_owned()));
            };
            client
                .logs(id, service.as_deref(), since, false, &mut take)
                .await?;
            Ok(lines)
        })?;
        PyList::new(py, lines)
    }

    /// Its events now, oldest first, as dicts with `ts`, `seq`, `kind` and
    /// the event's fields (the CLI's `orgo events -f` follows).
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.with_open(py, None, async move |client, id| {
            let mut events = Vec::new();
            client
                .events(id, false, &mut |event| events.push(event))
                .await?;
            Ok(events)
        })?;
        let list = PyList::empty(py);
        for event in &events {
            list.append(crate::convert::to_python(py, event)?)?;
        }
        Ok(list)
    }

    /// Fires the webhook triggers of `path` with `data` (`str` or `bytes`);
    /// returns the triggers that ran. Raises `orgo.NotFoundError` when no
    /// trigger has that path.
    #[pyo3(signature = (path, data = None))]
    fn trigger(
        &self,
        py: Python<'_>,
        path: String,
        data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let data = data.map(content_bytes).transpose()?.unwrap_or_default();
        self.with_open(py, None, async move |client, id| {
            Ok(client.trigger(id, &path, data).await?)
        })
    }

    /// Its metrics now, in the Prometheus text format.
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        self.with_open(py, None, async move |client, id| {
            Ok(client.metrics(id).await?)
        })
    }

    /// Stops the computer on the server (its `on_shutdown` runs) and returns
    /// what the hook printed (`None` without a hook). Waits for calls in
    /// flight on this handle; calling it again returns `None`.
    fn stop(&self, py: Python<'_>) -> PyResult<Option<String>> {
        wait(py, None, Interrupt::Never, || async {
            let mut state = self.state.write().await;
            match *state {
                OPEN => {
                    *state = STOPPED;
                    self.status.store(STOPPED, Ordering::SeqCst);
                    Ok(self.client.stop(&self.view.id).await?)
                }
                STOPPED => Ok(None),
                closed => Err(self.closed_error(closed)),
            }
        })
    }

    /// Lets go of the computer and leaves it running on the server;
    /// `Client.connect(id)` reaches it again.
    fn detach(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, None, Interrupt::Never, || async {
            let mut state = self.state.write().await;
            match *state {
                OPEN | DETACHED => {
                    *state = DETACHED;
                    self.status.store(DETACHED, Ordering::SeqCst);
                    Ok(())
                }
                closed => Err(self.closed_error(closed)),
            }
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops the computer, unless it was detached.
    #[pyo3(signature = (_exc_type, _exc_value, _traceback, /))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc_value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if self.status.load(Ordering::SeqCst) != DETACHED {
            self.stop(py)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let status = match self.status.load(Ordering::SeqCst) {
            OPEN => "running",
            STOPPED => "stopped",
            _ => "detached",
        };
        format!(
            "RemoteComputer(id='{}', template='{}', status='{status}')",
            self.view.id, self.view.template_ref
        )
    }
}

impl Drop for PyRemoteComputer {
    /// A computer this handle launched and nobody stopped or detached is
    /// stopped: with the GIL released, or in the background when the drop
    /// happens inside the runtime.
    fn drop(&mut self) {
        if !self.owned || *self.state.get_mut() != OPEN {
            return;
        }
        let (client, id) = (self.client.clone(), self.view.id.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client.stop(&id).await;
            });
            return;
        }
        let Ok(tokio) = crate::runtime::tokio() else {
            return;
        };
        Python::attach(|py| {
            py.detach(|| {
                let _ = tokio.block_on(client.stop(&id));
            });
        });
    }
}
