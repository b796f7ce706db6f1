//! Build and launch from Python: `orgo.build`, `orgo.launch`, `orgo.connect`.
//!
//! One tokio runtime per process runs every call; each call blocks with the
//! GIL released. A call on the main thread checks for signals every 100 ms,
//! so Ctrl-C interrupts a build or a command (the future is dropped; see
//! [`wait`]). Build events reach `on_log` with the GIL held again; an
//! exception raised there is raised when the build ends (see [`Cancel`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use orgo_runtime::{
    BuildEvent, ErrorChain, LaunchOptions, Runtime, RuntimeConfig, RuntimeError, SECRET_ENV_PREFIX,
    Stream, VAULT_FILE, Vault,
};
use orgo_snapshot::Built;
use orgo_template::{Template, TemplateRef};
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMapping, PyString};

use crate::PyTemplate;
use crate::computer::PyComputer;
use crate::errors::{self, Failure};

/// The process's tokio runtime, started on first use (and again in a child
/// after `fork`, which has none of its parent's threads).
pub(crate) fn tokio() -> PyResult<&'static tokio::runtime::Runtime> {
    static TOKIO: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let mut slot = TOKIO.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, runtime)) = *slot
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("orgo-tokio")
        .enable_all()
        .build()
        .map_err(|e| errors::orgo_error(format!("cannot start the async runtime: {e}"), None))?;
    // Never dropped: it serves the process until it exits.
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

/// What opens an orgo runtime: [`RuntimeConfig::from_env`], with the home
/// and agent given to the call over the environment's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setup {
    home: Option<PathBuf>,
    agent: Option<PathBuf>,
}

impl Setup {
    /// `home` and `agent` as given, else from the environment (see
    /// `RuntimeConfig::from_env`: `$ORGO_HOME`, `$XDG_DATA_HOME/orgo`,
    /// `~/.local/share/orgo`; `$ORGO_AGENT`, else the embedded agent;
    /// `$ORGO_ACCEL`; `$ORGO_CLOUD_HYPERVISOR`; `$ORGO_WARM_POOL`; ...).
    pub(crate) fn new(
        home: Option<&Bound<'_, PyAny>>,
        agent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Setup> {
        let path = |value: Option<&Bound<'_, PyAny>>| -> PyResult<Option<PathBuf>> {
            value
                .map(|v| crate::local_path(v).map(PathBuf::from))
                .transpose()
        };
        let setup = Setup {
            home: path(home)?,
            agent: path(agent)?,
        };
        // Refused now, not at the first build: a bad variable.
        setup
            .config()
            .map_err(|e| errors::orgo_error(ErrorChain(&e).to_string(), None))?;
        Ok(setup)
    }

    fn config(&self) -> Result<RuntimeConfig, RuntimeError> {
        let mut config = RuntimeConfig::from_env(self.home.clone())?;
        if self.agent.is_some() {
            config.agent.clone_from(&self.agent);
        }
        Ok(config)
    }

    /// The orgo runtime of this setup: one per configuration and process
    /// (the environment is read at each call, so a changed `ORGO_HOME` or
    /// `ORGO_ACCEL` opens another), opened (the store created if needed) on
    /// first use.
    pub(crate) async fn open(self) -> Result<Runtime, RuntimeError> {
        static OPEN: Mutex<Vec<(RuntimeConfig, Runtime)>> = Mutex::new(Vec::new());
        let config = self.config()?;
        let found = OPEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(open, _)| *open == config)
            .map(|(_, runtime)| runtime.clone());
        if let Some(runtime) = found {
            return Ok(runtime);
        }
        let runtime = Runtime::open(config.clone()).await?;
        OPEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((config, runtime.clone()));
        Ok(runtime)
    }
}

/// Python exceptions raised while a blocking call runs: by a signal handler
/// (Ctrl-C) or a callback. A signal's `KeyboardInterrupt` (any exception
/// that is not an `Exception`) cuts the call short; a callback's `Exception`
/// is kept and raised when the call ends. The first of each kind wins.
#[derive(Default)]
pub(crate) struct Cancel {
    interrupt: Mutex<Option<PyErr>>,
    deferred: Mutex<Option<PyErr>>,
    notify: tokio::sync::Notify,
}

impl Cancel {
    /// Cuts the call short with `error`.
    fn interrupt(&self, error: PyErr) {
        let mut slot = self
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(error);
            // A permit is kept if no one waits yet.
            self.notify.notify_one();
        }
    }

    /// `error`, raised by a callback: `Exception`s are raised when the call
    /// ends; anything else (`KeyboardInterrupt`) cuts it short.
    pub(crate) fn raised(&self, py: Python<'_>, error: PyErr) {
        if !error.is_instance_of::<PyException>(py) {
            return self.interrupt(error);
        }
        let mut slot = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    /// Whether a callback (or a signal) raised: callbacks are not called again.
    pub(crate) fn raised_any(&self) -> bool {
        let set = |slot: &Mutex<Option<PyErr>>| {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        };
        set(&self.interrupt) || set(&self.deferred)
    }

    fn take(slot: &Mutex<Option<PyErr>>) -> Option<PyErr> {
        slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Whether a call may be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// By Ctrl-C (on the main thread) or a callback's `KeyboardInterrupt`:
    /// the work's future is dropped where it waits. For work that leaves nothing behind that the
    /// store's sweep and gc do not clean up (a build; a command, which goes
    /// on running in the computer).
    Allowed,
    /// Never: a launch (its lease and files are undone only when it returns)
    /// and a stop (its clean-up must finish).
    Never,
}

/// Runs the future `work` makes on the process's tokio runtime, with the GIL
/// released; then its error becomes a Python exception.
pub(crate) fn wait<T, F, Fut>(
    py: Python<'_>,
    cancel: Option<&Cancel>,
    interrupt: Interrupt,
    work: F,
) -> PyResult<T>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, Failure>>,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // A callback (`on_log`, `on_stdout`, ...) runs inside a call's wait.
        return Err(errors::orgo_error(
            "orgo calls cannot be made from inside a callback (`on_log`, `on_stdout`, \
             `on_stderr`) on the thread it runs on; start a thread for them"
                .into(),
            None,
        ));
    }
    let tokio = tokio()?;
    let own = Cancel::default();
    let cancel = cancel.unwrap_or(&own);
    let signals = interrupt == Interrupt::Allowed && is_main_thread(py)?;
    let outcome = py.detach(|| {
        tokio.block_on(async {
            let work = work();
            if interrupt == Interrupt::Never {
                return Some(work.await);
            }
            tokio::select! {
                biased;
                () = cancel.notify.notified() => None,
                () = watch_signals(signals, cancel) => None,
                result = work => Some(result),
            }
        })
    });
    if let Some(error) = Cancel::take(&cancel.interrupt) {
        return Err(error);
    }
    let result = match outcome {
        Some(Ok(value)) => Ok(value),
        Some(Err(failure)) => Err(errors::failure(py, failure)),
        None => Err(errors::orgo_error(
            "the call was cut short without an exception".into(),
            None,
        )),
    };
    // A callback's exception wins; the call's own error is its context.
    match (Cancel::take(&cancel.deferred), result) {
        (None, result) => result,
        (Some(raised), Ok(_)) => Err(raised),
        (Some(raised), Err(error)) => {
            raised.value(py).setattr("__context__", error.value(py))?;
            Err(raised)
        }
    }
}

/// Checks for signals every 100 ms (`watch`: on the main thread, the only
/// one Python runs signal handlers on); returns once a handler raised, with
/// the exception in `cancel`. Without `watch`, never returns.
async fn watch_signals(watch: bool, cancel: &Cancel) {
    if !watch {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if let Err(error) = Python::attach(|py| py.check_signals()) {
            cancel.interrupt(error);
            return;
        }
    }
}

fn is_main_thread(py: Python<'_>) -> PyResult<bool> {
    let threading = py.import("threading")?;
    let current = threading.call_method0("current_thread")?;
    let main = threading.call_method0("main_thread")?;
    Ok(current.is(&main))
}

/// A template as a call names it: a `Template`, a published ref, or a file.
pub(crate) enum Source {
    Template(Box<Template>),
    Ref(TemplateRef),
}

impl Source {
    /// `orgo.Template`, a ref `str` (`[namespace/]name@version`) or a path
    /// (`os.PathLike`: a template file, read as `Template.load` reads it).
    pub(crate) fn new(arg: &Bound<'_, PyAny>) -> PyResult<Source> {
        let py = arg.py();
        if let Ok(template) = arg.cast::<PyTemplate>() {
            return Ok(Source::Template(Box::new(template.get().inner.clone())));
        }
        if let Ok(text) = arg.cast::<PyString>() {
            let text = text.to_cow()?;
            return text.parse::<TemplateRef>().map(Source::Ref).map_err(|e| {
                errors::orgo_error(
                    format!(
                        "`{text}` is not a template ref (`[namespace/]name@version`): {e}; \
                         pass a file as a `pathlib.Path` or read it with `orgo.Template.load`"
                    ),
                    None,
                )
            });
        }
        let path_like = py.import("os")?.getattr("PathLike")?;
        if arg.is_instance(&path_like)? {
            return PyTemplate::load(py, arg).map(|t| Source::Template(Box::new(t.inner)));
        }
        Err(PyTypeError::new_err(format!(
            "template must be an `orgo.Template`, a ref `str` or a path, not `{}`",
            arg.get_type().name()?
        )))
    }

    /// The template: itself, or the published one a ref points at.
    pub(crate) async fn resolve(self, runtime: &Runtime) -> Result<Template, RuntimeError> {
        match self {
            Source::Template(template) => Ok(*template),
            Source::Ref(reference) => runtime.resolve(&reference).await,
        }
    }
}

/// Hands build events to `on_log` with the GIL held, until it raises: the
/// exception goes to `cancel` (see [`Cancel::raised`]).
pub(crate) fn forward<'a, E>(
    on_log: Option<&'a Py<PyAny>>,
    cancel: &'a Cancel,
) -> impl FnMut(E) + Send + 'a
where
    PyLogEvent: From<E>,
{
    move |event| {
        let Some(on_log) = on_log else {
            return;
        };
        if cancel.raised_any() {
            return;
        }
        Python::attach(|py| {
            let called = Py::new(py, PyLogEvent::from(event))
                .and_then(|event| on_log.bind(py).call1((event,)));
            if let Err(error) = called {
                cancel.raised(py, error);
            }
        });
    }
}

/// The callback `what` (`on_log`, `on_stdout`, ...), or `None` for none.
pub(crate) fn callable(
    what: &str,
    callback: Option<Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    match callback {
        Some(f) if !f.is_none() => {
            if !f.is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "{what} must be callable, not `{}`",
                    f.get_type().name()?
                )));
            }
            Ok(Some(f.unbind()))
        }
        _ => Ok(None),
    }
}

/// Something a build reports while it runs, as `on_log` receives it.
///
/// `kind` is `"status"` (what the build does: booting, storing, ...),
/// `"step"` (a step of the template starts: `field`, `index` from 1, `total`)
/// or `"output"` (what the running step printed: `stream` and raw `data`).
/// `text` (also `str(event)`) is the event as one line of text: the status,
/// `"[index/total] field"`, or the output decoded as UTF-8.
#[pyclass(module = "orgo", name = "LogEvent", frozen)]
pub(crate) struct PyLogEvent {
    kind: &'static str,
    text: String,
    field: Option<String>,
    index: Option<usize>,
    total: Option<usize>,
    stream: Option<&'static str>,
    data: Option<Vec<u8>>,
}

impl From<BuildEvent> for PyLogEvent {
    fn from(event: BuildEvent) -> Self {
        let mut out = PyLogEvent {
            kind: "status",
            text: String::new(),
            field: None,
            index: None,
            total: None,
            stream: None,
            data: None,
        };
        match event {
            BuildEvent::Status(text) => out.text = text,
            BuildEvent::Step {
                field,
                index,
                total,
            } => {
                out.kind = "step";
                out.text = format!("[{index}/{total}] {field}");
                out.field = Some(field);
                out.index = Some(index);
                out.total = Some(total);
            }
            BuildEvent::Output { stream, data } => {
                out.kind = "output";
                out.text = String::from_utf8_lossy(&data).into_owned();
                out.stream = Some(match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                });
                out.data = Some(data);
            }
            other => out.text = format!("{other:?}"),
        }
        out
    }
}

impl From<orgo_client::Frame> for PyLogEvent {
    /// A frame of a server's build log: the step's index and total read
    /// back from its line (`[2/3] build.run[1]`), an output line with its
    /// newline again.
    fn from(frame: orgo_client::Frame) -> Self {
        let mut out = PyLogEvent {
            kind: "status",
            text: frame.line,
            field: None,
            index: None,
            total: None,
            stream: None,
            data: None,
        };
        match frame.phase.as_str() {
            "step" => {
                out.kind = "step";
                let counts = out
                    .text
                    .strip_prefix('[')
                    .and_then(|rest| rest.split_once(']'))
                    .and_then(|(counts, _)| counts.split_once('/'));
                if let Some((index, total)) = counts {
                    out.index = index.parse().ok();
                    out.total = total.parse().ok();
                }
                out.field = frame.field;
            }
            "output" => {
                out.kind = "output";
                out.text.push('\n');
                out.stream = Some(if frame.source == "stderr" {
                    "stderr"
                } else {
                    "stdout"
                });
                out.data = Some(out.text.as_bytes().to_vec());
            }
            _ => {}
        }
        out
    }
}

#[pymethods]
impl PyLogEvent {
    /// `"status"`, `"step"` or `"output"`.
    #[getter]
    fn kind(&self) -> &str {
        self.kind
    }

    /// The event as text: the status, `"[index/total] field"`, or the output
    /// decoded as UTF-8 (a chunk as it came: not always whole lines).
    #[getter]
    fn text(&self) -> &str {
        &self.text
    }

    /// A step's template field (`build.run[0]`, `files[1]`), else `None`.
    #[getter]
    fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// A step's position, from 1, else `None`.
    #[getter]
    fn index(&self) -> Option<usize> {
        self.index
    }

    /// How many steps the build runs (for a step), else `None`.
    #[getter]
    fn total(&self) -> Option<usize> {
        self.total
    }

    /// `"stdout"` or `"stderr"` for output, else `None`.
    #[getter]
    fn stream(&self) -> Option<&str> {
        self.stream
    }

    /// The output's raw bytes, else `None`.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.data.as_deref().map(|data| PyBytes::new(py, data))
    }

    fn __str__(&self) -> &str {
        &self.text
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "LogEvent(kind={}, text={})",
            PyString::new(py, self.kind).repr()?,
            PyString::new(py, &self.text).repr()?
        ))
    }
}

/// What `orgo.build` returns: the golden snapshot of a template.
#[pyclass(module = "orgo", name = "BuildResult", frozen, eq)]
#[derive(PartialEq)]
pub(crate) struct PyBuildResult {
    template_digest: String,
    snapshot_digest: String,
    cached: bool,
    backend: String,
}

impl From<Built> for PyBuildResult {
    fn from(built: Built) -> Self {
        PyBuildResult {
            template_digest: built.manifest.template.to_string(),
            snapshot_digest: built.digest.to_string(),
            cached: !built.built_here,
            backend: built.manifest.backend,
        }
    }
}

impl PyBuildResult {
    /// A server's build of `view` (`ready`); `reused` when it was built
    /// already. The server does not say which backend made it: `"remote"`.
    pub(crate) fn remote(view: orgo_client::BuildView, reused: bool) -> Self {
        PyBuildResult {
            template_digest: view.digest,
            snapshot_digest: view.snapshot.unwrap_or_default(),
            cached: reused,
            backend: "remote".to_owned(),
        }
    }
}

#[pymethods]
impl PyBuildResult {
    /// The digest of the template built (`Template.digest`).
    #[getter]
    fn template_digest(&self) -> &str {
        &self.template_digest
    }

    /// The digest of the snapshot's manifest in the store.
    #[getter]
    fn snapshot_digest(&self) -> &str {
        &self.snapshot_digest
    }

    /// `True` when the snapshot was already built (by an earlier call, or
    /// by another process this call waited for); `False` when this call built it.
    #[getter]
    fn cached(&self) -> bool {
        self.cached
    }

    /// What made the snapshot and restores it: `"qemu-kvm"` or `"qemu-tcg"`;
    /// `"remote"` for a server's build (`Client.build`).
    #[getter]
    fn backend(&self) -> &str {
        &self.backend
    }

    fn __repr__(&self) -> String {
        format!(
            "BuildResult(template_digest='{}', snapshot_digest='{}', cached={}, backend='{}')",
            self.template_digest,
            self.snapshot_digest,
            if self.cached { "True" } else { "False" },
            self.backend
        )
    }
}

/// Builds a template's golden snapshot, or finds the one already built.
///
/// `template` is an `orgo.Template`, a published ref (`"[namespace/]name@version"`)
/// or a template file (`os.PathLike`). `on_log`, if given, is called with
/// each `orgo.LogEvent` on the calling thread, with the GIL held; once it
/// raises an `Exception` it is not called again, and the exception is raised
/// when the build ends (a build error is its `__context__`). Ctrl-C (on the
/// main thread, also inside `on_log`) stops the build at once.
/// `home` is the orgo home (default `$ORGO_HOME`, else
/// `$XDG_DATA_HOME/orgo`, else `~/.local/share/orgo`); `agent` the static
/// `orgo-agent` the base image is built with when the home has none
/// (default `$ORGO_AGENT`, else the one built into this package). The
/// environment configures the rest as for the CLI (`$ORGO_ACCEL`,
/// `$ORGO_CLOUD_HYPERVISOR`, `$ORGO_WARM_POOL`, `$ORGO_REGION`, ...).
#[pyfunction]
#[pyo3(signature = (template, *, on_log = None, home = None, agent = None))]
pub(crate) fn build(
    py: Python<'_>,
    template: &Bound<'_, PyAny>,
    on_log: Option<Bound<'_, PyAny>>,
    home: Option<&Bound<'_, PyAny>>,
    agent: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyBuildResult> {
    let source = Source::new(template)?;
    let setup = Setup::new(home, agent)?;
    let on_log = callable("on_log", on_log)?;
    let cancel = Cancel::default();
    let (on_log, shared) = (on_log.as_ref(), &cancel);
    let built = wait(py, Some(&cancel), Interrupt::Allowed, move || async move {
        let runtime = setup.open().await?;
        let template = source.resolve(&runtime).await?;
        let mut log = forward(on_log, shared);
        Ok(runtime.build(&template, &mut log).await?)
    })?;
    Ok(built.into())
}

/// A `dict` (any mapping) of `str` to `str`.
pub(crate) fn string_map(
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(out);
    };
    let mapping = value.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a dict of str to str, not `{}`",
            crate::convert::type_name(value)
        ))
    })?;
    for pair in mapping.items()?.iter() {
        let (name, item): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
        let (Ok(name), Ok(item)) = (name.cast::<PyString>(), item.cast::<PyString>()) else {
            return Err(PyTypeError::new_err(format!(
                "{what} names and values must be str, not {} = {}",
                name.repr()?,
                item.repr()?
            )));
        };
        out.insert(name.to_cow()?.into_owned(), item.to_cow()?.into_owned());
    }
    Ok(out)
}

/// A positive count that fits a `u32`, or `OrgoError` naming `what`.
pub(crate) fn positive(value: Option<i64>, what: &str) -> PyResult<Option<u32>> {
    value
        .map(|n| {
            u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                errors::orgo_error(format!("{what} must be 1 to {}, not {n}", u32::MAX), None)
            })
        })
        .transpose()
}

/// The vault a launch reads: the home's vault file under the
/// `ORGO_SECRET_*` environment, under `given`.
fn vault(home: &Path, given: BTreeMap<String, String>) -> Result<Vault, RuntimeError> {
    let env = std::env::vars_os().filter_map(|(k, v)| {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
        k.starts_with(SECRET_ENV_PREFIX).then_some((k, v))
    });
    Vault::load(&home.join(VAULT_FILE), env)
        .map(|vault| vault.with(given))
        .map_err(RuntimeError::Vault)
}

/// Launches a computer from a template's golden snapshot, building it first
/// if needed, and returns it when it answers.
///
/// `template`, `on_log`, `home` and `agent` are as for `orgo.build`.
/// `ram_gb` and `cpu` raise the memory and vCPUs over the snapshot's (never
/// under them). `env` is extra environment over the template's. `secrets`
/// gives secret values by name, over `ORGO_SECRET_<NAME>` variables and the
/// vault file `<home>/secrets.json`; a required secret without a value
/// raises `orgo.SecretError` before anything is built. `egress_learn`
/// records every destination the computer reaches, for
/// `Computer.egress_learned()` (it needs a host with root or
/// `CAP_NET_ADMIN`). A port of `apps[].ports` that cannot be forwarded
/// raises `orgo.PortError`. Use the computer as
/// a context manager, or call `stop()`; one garbage-collected unstopped is
/// stopped then.
#[pyfunction]
#[pyo3(signature = (
    template, *, ram_gb = None, cpu = None, env = None, secrets = None, on_log = None,
    home = None, agent = None, egress_learn = false
))]
#[allow(clippy::too_many_arguments, reason = "a Python function with keywords")]
pub(crate) fn launch(
    py: Python<'_>,
    template: &Bound<'_, PyAny>,
    ram_gb: Option<i64>,
    cpu: Option<i64>,
    env: Option<&Bound<'_, PyAny>>,
    secrets: Option<&Bound<'_, PyAny>>,
    on_log: Option<Bound<'_, PyAny>>,
    home: Option<&Bound<'_, PyAny>>,
    agent: Option<&Bound<'_, PyAny>>,
    egress_learn: bool,
) -> PyResult<PyComputer> {
    let source = Source::new(template)?;
    let setup = Setup::new(home, agent)?;
    let memory_mib = positive(ram_gb, "ram_gb")?.map(|gb| u64::from(gb) * 1024);
    let cpus = positive(cpu, "cpu")?;
    let env = string_map(env, "env")?;
    let secrets = string_map(secrets, "secrets")?;
    let on_log = callable("on_log", on_log)?;
    let cancel = Cancel::default();
    let (on_log, shared) = (on_log.as_ref(), &cancel);
    // The secrets, then the build: interruptible. A ref may name a
    // published checkpoint: launched from it, with no build.
    let (runtime, template, checkpoint, vault) =
        wait(py, Some(&cancel), Interrupt::Allowed, move || async move {
            let runtime = setup.open().await?;
            let checkpoint = match &source {
                Source::Ref(reference) => runtime.published_checkpoint(reference).await?,
                Source::Template(_) => None,
            };
            let template = match &checkpoint {
                Some(digest) => runtime.checkpoint_template(digest).await?,
                None => source.resolve(&runtime).await?,
            };
            let vault = vault(runtime.store().root(), secrets)?;
            vault.resolve(&template).map_err(RuntimeError::Vault)?;
            if checkpoint.is_none() {
                let mut log = forward(on_log, shared);
                runtime.build(&template, &mut log).await?;
            }
            Ok((runtime, template, checkpoint, vault))
        })?;
    // The restore: a cache hit now, and not interruptible.
    let options = LaunchOptions {
        cpus,
        memory_mib,
        env,
        vault,
        egress_learn,
        ..LaunchOptions::default()
    };
    let computer = wait(py, None, Interrupt::Never, move || async move {
        Ok(match checkpoint {
            Some(digest) => {
                runtime
                    .launch_checkpoint(&digest, options, &mut |_| {})
                    .await?
            }
            None => runtime.launch(&template, options, &mut |_| {}).await?,
        })
    })?;
    Ok(PyComputer::new(computer, true))
}

/// Connects to a running computer by id (one launched by another process,
/// or left running with `Computer.detach()`), from the orgo home `home`.
/// Dropping the handle leaves the computer running; `stop()` (or leaving a
/// `with` block) stops it. Raises `orgo.NotFoundError` for an unknown or
/// exited computer.
#[pyfunction]
#[pyo3(signature = (id, *, home = None))]
pub(crate) fn connect(
    py: Python<'_>,
    id: String,
    home: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyComputer> {
    let setup = Setup::new(home, None)?;
    let computer = wait(py, None, Interrupt::Allowed, move || async move {
        let runtime = setup.open().await?;
        Ok(runtime.connect(&id).await?)
    })?;
    Ok(PyComputer::new(computer, false))
}

/// Suspends a running computer by id: its whole state, memory included, is
/// saved in its directory of the orgo home `home` (its owner's only), and
/// its VM stops, freeing its memory and vCPUs. Calls to it raise
/// `orgo.OrgoError` ("is suspended") until `orgo.resume(id)`. Returns how
/// long its vCPUs stood, in seconds.
#[pyfunction]
#[pyo3(signature = (id, *, home = None))]
pub(crate) fn suspend(
    py: Python<'_>,
    id: String,
    home: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let setup = Setup::new(home, None)?;
    let stood = wait(py, None, Interrupt::Never, move || async move {
        let runtime = setup.open().await?;
        Ok(runtime.suspend(&id).await?)
    })?;
    Ok(stood.as_secs_f64())
}

/// Resumes a suspended computer by id, with the same files, processes and
/// terminal sessions; `orgo.connect(id)` reaches it then.
#[pyfunction]
#[pyo3(signature = (id, *, home = None))]
pub(crate) fn resume(py: Python<'_>, id: String, home: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let setup = Setup::new(home, None)?;
    wait(py, None, Interrupt::Never, move || async move {
        let runtime = setup.open().await?;
        Ok(runtime.resume(&id).await?)
    })
}

/// Captures a running computer by id into a checkpoint (it runs on after a
/// brief pause); returns the checkpoint's digest. What was captured is
/// scanned for the values of the vault's and the environment's secrets and
/// of `secrets` (give the ones given to its launch): one found raises
/// `orgo.BuildError` naming it and where, and nothing is stored. With
/// `publish` (`namespace/name@version`), it is also published under that
/// ref, which `orgo.launch` then launches; a ref already taken raises
/// `orgo.OrgoError` naming both digests (the checkpoint stays stored).
#[pyfunction]
#[pyo3(signature = (id, *, secrets = None, publish = None, home = None))]
pub(crate) fn checkpoint(
    py: Python<'_>,
    id: String,
    secrets: Option<&Bound<'_, PyAny>>,
    publish: Option<String>,
    home: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let setup = Setup::new(home, None)?;
    let secrets = string_map(secrets, "secrets")?;
    // A bad ref is refused before the computer is paused.
    let publish = publish
        .map(|text| {
            text.parse::<TemplateRef>().map_err(|e| {
                errors::orgo_error(
                    format!("publish: `{text}` is not a ref (`[namespace/]name@version`): {e}"),
                    None,
                )
            })
        })
        .transpose()?;
    let digest = wait(py, None, Interrupt::Never, move || async move {
        let runtime = setup.open().await?;
        let vault = vault(runtime.store().root(), secrets)?;
        let digest = runtime.checkpoint(&id, &vault).await?.digest;
        if let Some(reference) = publish {
            runtime.publish_checkpoint(&reference, &digest).await?;
        }
        Ok(digest)
    })?;
    Ok(digest.to_string())
}

/// Checkpoints a running computer by id once and launches `count` computers
/// from it (each with its own identity, `env` and `secrets`, and
/// `on_resume` run); returns them. The checkpoint is scanned as
/// `orgo.checkpoint` does, for `secrets` too.
#[pyfunction]
#[pyo3(signature = (id, *, count = 1, env = None, secrets = None, home = None))]
pub(crate) fn fork(
    py: Python<'_>,
    id: String,
    count: i64,
    env: Option<&Bound<'_, PyAny>>,
    secrets: Option<&Bound<'_, PyAny>>,
    home: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyComputer>> {
    let count = positive(Some(count), "count")?.expect("given");
    let setup = Setup::new(home, None)?;
    let env = string_map(env, "env")?;
    let secrets = string_map(secrets, "secrets")?;
    let forks = wait(py, None, Interrupt::Never, move || async move {
        let runtime = setup.open().await?;
        let options = LaunchOptions {
            env,
            vault: vault(runtime.store().root(), secrets)?,
            ..LaunchOptions::default()
        };
        let (_, forks) = runtime.fork(&id, count as usize, options).await?;
        Ok(forks)
    })?;
    Ok(forks
        .into_iter()
        .map(|c| PyComputer::new(c, true))
        .collect())
}
