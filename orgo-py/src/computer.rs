//! `orgo.Computer`: a launched (or connected) computer, and `orgo.ExecResult`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use orgo_runtime::Bytes;
use orgo_runtime::{Computer, ComputerRecord, Exec};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use crate::errors::{self, Failure};
use crate::output::Output;
use crate::runtime::{Cancel, Interrupt, callable, wait};

/// How long a command without a timeout may run: as long as it takes.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long past its timeout a command's reply may take to arrive.
const REPLY_GRACE: Duration = Duration::from_secs(30);

const OPEN: u8 = 0;
const STOPPED: u8 = 1;
const DETACHED: u8 = 2;

/// What the handle holds.
enum State {
    Open(Box<Computer>),
    Stopped,
    Detached,
}

/// A running computer, from `orgo.launch` or `orgo.connect`.
///
/// `exec` runs commands, `write_file`/`read_file` move files, `stop()` runs
/// the template's `on_shutdown` hook, powers the computer off and removes
/// its files. As a context manager it stops on leaving the block. After
/// `stop()` or `detach()` the handle is closed: its methods raise
/// `orgo.OrgoError` (`stop()` again returns `None`). Calls from several
/// threads at once are fine; `stop()` waits for calls in flight.
#[pyclass(module = "orgo", name = "Computer", frozen)]
pub(crate) struct PyComputer {
    record: ComputerRecord,
    /// Launched by this handle: dropping it unstopped stops the computer.
    owned: bool,
    /// Mirrors `state` for readers that must not wait (`closed`, `repr`).
    status: AtomicU8,
    /// Locked only with the GIL released.
    state: tokio::sync::RwLock<State>,
}

impl PyComputer {
    pub(crate) fn new(computer: Computer, owned: bool) -> Self {
        PyComputer {
            record: computer.record().clone(),
            owned,
            status: AtomicU8::new(OPEN),
            state: tokio::sync::RwLock::new(State::Open(Box::new(computer))),
        }
    }

    fn closed_error(&self, state: &State) -> Failure {
        let id = &self.record.id;
        Failure::Closed(match state {
            State::Detached => format!(
                "computer `{id}` was detached from this handle; `orgo.connect(\"{id}\")` reaches it"
            ),
            _ => format!("computer `{id}` is stopped"),
        })
    }

    /// Runs `f` with the open computer, with the GIL released.
    pub(crate) fn with_open<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        F: AsyncFnOnce(&Computer) -> Result<T, Failure> + Send,
        T: Send,
    {
        self.with_open_cancel(py, None, f)
    }

    /// [`PyComputer::with_open`], with callbacks' exceptions going to `cancel`.
    fn with_open_cancel<T, F>(&self, py: Python<'_>, cancel: Option<&Cancel>, f: F) -> PyResult<T>
    where
        F: AsyncFnOnce(&Computer) -> Result<T, Failure> + Send,
        T: Send,
    {
        wait(py, cancel, Interrupt::Allowed, || async move {
            let state = self.state.read().await;
            match &*state {
                State::Open(computer) => f(computer).await,
                closed => Err(self.closed_error(closed)),
            }
        })
    }
}

/// `exec`'s timeout: how long the command may run, or `None`.
pub(crate) fn exec_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    let Some(seconds) = timeout else {
        return Ok(None);
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds < FOREVER.as_secs_f64()) {
        return Err(errors::orgo_error(
            format!("timeout must be a positive number of seconds, not {seconds}"),
            None,
        ));
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// Content for `write_file`: `str` (written as UTF-8), `bytes`, `bytearray`
/// or `memoryview`.
pub(crate) fn content_bytes(content: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(text) = content.cast::<PyString>() {
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(bytes) = content.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(bytes) = content.cast::<PyByteArray>() {
        return Ok(bytes.to_vec());
    }
    if content.cast::<PyMemoryView>().is_ok() {
        let bytes = content.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "content must be str or bytes, not `{}`",
        content.get_type().name()?
    )))
}

/// The command of `exec`, as Python gives it.
pub(crate) enum CommandLine {
    /// A `str`: bash runs it.
    Shell(String),
    /// A list of `str`: an argv (never empty).
    Argv(Vec<String>),
}

/// The command of `exec` for the local runtime.
fn command(cmd: &Bound<'_, PyAny>) -> PyResult<Exec> {
    Ok(match command_line(cmd)? {
        CommandLine::Shell(script) => Exec::shell(script),
        CommandLine::Argv(argv) => Exec::argv(argv),
    })
}

/// The command of `exec`: a `str` runs in bash; a list of `str` is an argv.
pub(crate) fn command_line(cmd: &Bound<'_, PyAny>) -> PyResult<CommandLine> {
    if let Ok(script) = cmd.cast::<PyString>() {
        return Ok(CommandLine::Shell(script.to_cow()?.into_owned()));
    }
    let not_argv = || {
        PyTypeError::new_err(format!(
            "cmd must be a str (a shell command) or a list of str (an argv), not `{}`",
            crate::convert::type_name(cmd)
        ))
    };
    if cmd.cast::<PyBytes>().is_ok() {
        return Err(not_argv());
    }
    let mut argv = Vec::new();
    for item in cmd.try_iter().map_err(|_| not_argv())? {
        let item = item?;
        let word = item.cast::<PyString>().map_err(|_| not_argv())?;
        argv.push(word.to_cow()?.into_owned());
    }
    if argv.is_empty() {
        return Err(errors::orgo_error("cmd is an empty argv".into(), None));
    }
    Ok(CommandLine::Argv(argv))
}

#[pymethods]
impl PyComputer {
    /// The computer's id (`c-` and 12 hex digits); its hostname too.
    #[getter]
    fn id(&self) -> &str {
        &self.record.id
    }

    /// The template it was launched from, as `name@version`.
    #[getter]
    fn template(&self) -> &str {
        &self.record.template
    }

    /// The digest of the template it was launched from.
    #[getter]
    fn template_digest(&self) -> String {
        self.record.template_digest.to_string()
    }

    /// The digest of the golden snapshot it was restored from.
    #[getter]
    fn snapshot_digest(&self) -> String {
        // A launched computer's record always names its snapshot.
        self.record
            .snapshot
            .map_or_else(String::new, |d| d.to_string())
    }

    /// Its vCPUs.
    #[getter]
    fn cpu(&self) -> u32 {
        self.record.cpus
    }

    /// Its memory in MiB.
    #[getter]
    fn memory_mib(&self) -> u64 {
        self.record.memory_mib
    }

    /// Its forwarded `apps[].ports`, one `dict` per port in the template's
    /// order: `{"internal": 8000, "protocol": "tcp", "host": "127.0.0.1",
    /// "port": 41234}` (public ports on the publish address, the others on
    /// `127.0.0.1`). Empty for a computer without ports.
    #[getter]
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        crate::net::ports(py, &self.record.ports)
    }

    /// What a computer launched with `egress_learn=True` has reached so far
    /// and the smallest `egress_policy` allowing exactly that: a `dict` with
    /// `names` (from TLS SNI, HTTP `Host` and DNS), `addresses` (reached
    /// without a name) and `policy` (YAML to paste into the template).
    fn egress_learned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let learned = self.with_open(py, async |c| Ok(c.egress_learned().await?))?;
        crate::net::learned(py, &learned)
    }

    /// `True` once `stop()` or `detach()` was called on this handle.
    #[getter]
    fn closed(&self) -> bool {
        self.status.load(Ordering::SeqCst) != OPEN
    }

    /// Runs a command in the computer and waits for it to end.
    ///
    /// `cmd` is a `str`, run by bash (`bash -c`), or a list of `str`, run as
    /// an argv (looked up in `PATH`). `timeout` (seconds) kills the command
    /// (its whole process group) when it runs longer; the result then has
    /// `timed_out` set. `user` runs it as that user (default root), `cwd` in
    /// that directory (default the user's home), with `env` over the
    /// computer's environment and `input` (`str` or `bytes`) on stdin. On
    /// the main thread, Ctrl-C stops the wait (the command goes on running).
    ///
    /// `on_stdout` and `on_stderr`, if given, are called with the output as
    /// it comes: `str` chunks (UTF-8, invalid bytes replaced; a character
    /// is never split across two calls; not always whole lines), on the
    /// calling thread with the GIL held, in order. Their concatenation is
    /// the result's `stdout`/`stderr`. Once a callback raises an
    /// `Exception`, neither is called again; the command runs to its end
    /// and the exception is raised then (an error of the call is its
    /// `__context__`). A `KeyboardInterrupt` stops the wait at once.
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
        let mut exec = command(cmd)?;
        let limit = exec_timeout(timeout)?;
        let wait_for = limit.map_or(FOREVER, |limit| limit + REPLY_GRACE);
        exec.timeout_ms = limit.map(|limit| limit.as_millis().max(1) as u64);
        exec.user = user;
        exec.cwd = cwd;
        exec.env = crate::runtime::string_map(env, "env")?;
        exec.stdin = input
            .filter(|i| !i.is_none())
            .map(content_bytes)
            .transpose()?
            .map(Bytes);
        let on_stdout = callable("on_stdout", on_stdout)?;
        let on_stderr = callable("on_stderr", on_stderr)?;
        if on_stdout.is_none() && on_stderr.is_none() {
            let out = self.with_open(py, async move |computer| {
                Ok(computer.exec(exec, wait_for).await?)
            })?;
            let (status, timed_out) = (out.status, out.timed_out);
            return Ok(PyExecResult::new(
                &out.stdout,
                &out.stderr,
                status.code,
                status.signal,
                timed_out,
            ));
        }
        let cancel = Cancel::default();
        let mut output = Output::new(on_stdout, on_stderr, &cancel);
        let sink = &mut output;
        let end = self.with_open_cancel(py, Some(&cancel), async move |computer| {
            let mut take = |stream: orgo_runtime::Stream, data: &[u8]| match stream {
                orgo_runtime::Stream::Stdout => sink.take(false, data),
                orgo_runtime::Stream::Stderr => sink.take(true, data),
            };
            Ok(computer.exec_streamed(exec, wait_for, &mut take).await?)
        })?;
        Ok(output.finish(end.status.code, end.status.signal, end.timed_out))
    }

    /// Writes `content` (`str` as UTF-8, or `bytes`) to the file `path` in
    /// the computer, atomically, creating its directory; `mode` (e.g.
    /// `0o600`) sets its permissions. At most 8 MiB.
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
        self.with_open(py, async move |computer| {
            Ok(computer.write_file(&path, content, mode).await?)
        })
    }

    /// The content of the file `path` in the computer (at most 8 MiB).
    /// Raises `orgo.NotFoundError` when there is no such file.
    fn read_file<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with_open(py, async move |computer| {
            Ok(computer.read_file(&path).await?)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Its service logs, line by line, as `(service, line)` pairs: one
    /// service's (or `trigger.NAME`'s, a trigger's `run` output), else every
    /// log; `since` (seconds) only the last while; `follow` waits for new
    /// lines (Ctrl-C on the main thread ends the wait).
    #[pyo3(signature = (service = None, *, since = None, follow = false))]
    fn logs(
        &self,
        py: Python<'_>,
        service: Option<String>,
        since: Option<f64>,
        follow: bool,
    ) -> PyResult<crate::automation::PyLogLines> {
        let since = since
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    errors::orgo_error(format!("since `{s}` is not a number of seconds"), None)
                })
            })
            .transpose()?;
        self.with_open(py, async move |computer| {
            Ok(crate::automation::PyLogLines::new(computer.logs(
                service.as_deref(),
                since,
                follow,
            )))
        })
    }

    /// Its events, oldest first, as dicts with `ts`, `seq`, `kind` and the
    /// event's fields; `follow` waits for new ones.
    #[pyo3(signature = (*, follow = false))]
    fn events(&self, py: Python<'_>, follow: bool) -> PyResult<crate::automation::PyEvents> {
        self.with_open(py, async move |computer| {
            Ok(crate::automation::PyEvents::new(computer.events(follow)))
        })
    }

    /// Fires the webhook triggers of `path` with `data` (`str` or `bytes`,
    /// their `run` actions' stdin); returns the triggers that ran. Raises
    /// `orgo.NotFoundError` when no trigger has that path.
    #[pyo3(signature = (path, data = None))]
    fn trigger(
        &self,
        py: Python<'_>,
        path: String,
        data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let data = data.map(content_bytes).transpose()?.unwrap_or_default();
        self.with_open(py, async move |computer| {
            Ok(computer.trigger(&path, data).await?)
        })
    }

    /// Its metrics now, in the Prometheus text format.
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        self.with_open(py, async move |computer| Ok(computer.metrics().await?))
    }

    /// Its services: dicts with `name`, `state`, `pid`, `restarts` and
    /// `last_exit` (`{"code": N}` or `{"signal": N}`).
    fn services<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let services = self.with_open(py, async move |computer| Ok(computer.services().await?))?;
        services
            .iter()
            .map(|s| {
                let value = serde_json::to_value(s).map_err(|e| {
                    errors::orgo_error(format!("a service status as JSON: {e}"), None)
                })?;
                crate::convert::to_python(py, &value)
            })
            .collect()
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

    /// A PNG of the screen, or of `region` `(x, y, width, height)`, as
    /// bytes. A computer without a desktop raises `orgo.OrgoError` naming
    /// the fields that give a template one (so do the methods below); a
    /// point or region off the screen raises it too.
    #[pyo3(signature = (region = None))]
    fn screenshot<'py>(
        &self,
        py: Python<'py>,
        region: Option<(u32, u32, u32, u32)>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        crate::desktop::screenshot(self, py, region)
    }

    /// Moves the pointer to (`x`, `y`).
    #[pyo3(name = "move")]
    fn move_to(&self, py: Python<'_>, x: u32, y: u32) -> PyResult<()> {
        crate::desktop::move_to(self, py, x, y)
    }

    /// Clicks `button` (`left`, `middle`, `right`) at (`x`, `y`); twice with `double`.
    #[pyo3(signature = (x, y, button = "left", double = false))]
    fn click(&self, py: Python<'_>, x: u32, y: u32, button: &str, double: bool) -> PyResult<()> {
        crate::desktop::click(self, py, x, y, button, double)
    }

    /// Presses `button` at `start` `(x, y)`, moves to `end`, releases.
    #[pyo3(signature = (start, end, button = "left"))]
    fn drag(
        &self,
        py: Python<'_>,
        start: (u32, u32),
        end: (u32, u32),
        button: &str,
    ) -> PyResult<()> {
        crate::desktop::drag(self, py, start, end, button)
    }

    /// Types `text` (any UTF-8).
    #[pyo3(name = "type")]
    fn type_text(&self, py: Python<'_>, text: String) -> PyResult<()> {
        crate::desktop::type_text(self, py, text)
    }

    /// Presses a key combination in xdotool syntax (`"ctrl+shift+t"`, `"Return"`).
    fn key(&self, py: Python<'_>, combo: String) -> PyResult<()> {
        crate::desktop::key(self, py, combo)
    }

    /// Turns the wheel `amount` notches `direction` (`up`, `down`, `left`,
    /// `right`), at (`x`, `y`) if given.
    #[pyo3(signature = (direction, amount = 1, x = None, y = None))]
    fn scroll(
        &self,
        py: Python<'_>,
        direction: &str,
        amount: u32,
        x: Option<u32>,
        y: Option<u32>,
    ) -> PyResult<()> {
        crate::desktop::scroll(self, py, direction, amount, x, y)
    }

    /// Where the pointer is: `(x, y)`.
    fn cursor(&self, py: Python<'_>) -> PyResult<(u32, u32)> {
        crate::desktop::cursor(self, py)
    }

    /// Starts streaming to the template's stream `name`; a secret key is
    /// read from `secrets`, else `ORGO_SECRET_<NAME>`.
    #[pyo3(signature = (name, secrets = None))]
    fn stream_start(
        &self,
        py: Python<'_>,
        name: String,
        secrets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        crate::desktop::stream_start(self, py, name, secrets)
    }

    /// Stops stream `name`.
    fn stream_stop(&self, py: Python<'_>, name: String) -> PyResult<()> {
        crate::desktop::stream_stop(self, py, name)
    }

    /// Stream `name`'s status: `{"name", "state"` (`streaming`, `retrying`,
    /// `stopped`, `failed`), `"restarts", "last_exit_code"}`.
    fn stream_status<'py>(
        &self,
        py: Python<'py>,
        name: String,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        crate::desktop::stream_status(self, py, name)
    }

    /// Stops the computer: runs the template's `on_shutdown` hook, powers
    /// the guest off, stops its VM and removes its files. Returns what the
    /// hook printed (`None` without a hook). A failing hook does not keep the
    /// computer running: it is stopped, then `orgo.BuildError` is raised for
    /// `hooks.on_shutdown`. Waits for calls in flight on this handle;
    /// calling it again returns `None`.
    fn stop(&self, py: Python<'_>) -> PyResult<Option<String>> {
        wait(py, None, Interrupt::Never, || async {
            let mut state = self.state.write().await;
            match std::mem::replace(&mut *state, State::Stopped) {
                State::Open(computer) => {
                    self.status.store(STOPPED, Ordering::SeqCst);
                    Ok(computer.stop().await?)
                }
                State::Stopped => Ok(None),
                State::Detached => {
                    *state = State::Detached;
                    Err(self.closed_error(&state))
                }
            }
        })
    }

    /// Lets go of the computer and leaves it running after this handle and
    /// this process are gone; `orgo.connect(id)` reaches it again.
    fn detach(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, None, Interrupt::Never, || async {
            let mut state = self.state.write().await;
            match std::mem::replace(&mut *state, State::Detached) {
                State::Open(computer) => {
                    self.status.store(DETACHED, Ordering::SeqCst);
                    computer.detach();
                    Ok(())
                }
                State::Detached => Ok(()),
                State::Stopped => {
                    *state = State::Stopped;
                    Err(self.closed_error(&state))
                }
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
            "Computer(id='{}', template='{}', status='{status}')",
            self.record.id, self.record.template
        )
    }
}

impl Drop for PyComputer {
    /// A computer this handle launched and nobody stopped or detached is
    /// stopped: with the GIL released, or in the background when the drop
    /// happens inside the runtime (a garbage collection during a callback).
    fn drop(&mut self) {
        let state = std::mem::replace(self.state.get_mut(), State::Stopped);
        let State::Open(computer) = state else {
            return;
        };
        if !self.owned {
            // A connected handle: the computer stays up.
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = computer.stop().await;
            });
            return;
        }
        let Ok(tokio) = crate::runtime::tokio() else {
            // Without a runtime, dropping the handle kills the VM.
            return;
        };
        Python::attach(|py| {
            py.detach(|| {
                let _ = tokio.block_on(computer.stop());
            });
        });
    }
}

/// What a command printed and how it ended, from `Computer.exec`.
#[pyclass(module = "orgo", name = "ExecResult", frozen, eq)]
#[derive(PartialEq)]
pub(crate) struct PyExecResult {
    stdout: String,
    stderr: String,
    exit_code: i32,
    timed_out: bool,
}

impl PyExecResult {
    /// The result of a command that printed `stdout` and `stderr` and ended
    /// with `code` or `signal`.
    pub(crate) fn new(
        stdout: &[u8],
        stderr: &[u8],
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    ) -> Self {
        PyExecResult {
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            exit_code: code.or(signal.map(|signal| -signal)).unwrap_or(-1),
            timed_out,
        }
    }
}

#[pymethods]
impl PyExecResult {
    /// Its standard output, decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn stdout(&self) -> &str {
        &self.stdout
    }

    /// Its standard error, decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Its exit status; `-N` when signal `N` killed it (as `subprocess` reports).
    #[getter]
    fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// `True` when its `timeout` killed it.
    #[getter]
    fn timed_out(&self) -> bool {
        self.timed_out
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ExecResult(exit_code={}, stdout={}, stderr={}{})",
            self.exit_code,
            PyString::new(py, &self.stdout).repr()?,
            PyString::new(py, &self.stderr).repr()?,
            if self.timed_out {
                ", timed_out=True"
            } else {
                ""
            }
        ))
    }
}
