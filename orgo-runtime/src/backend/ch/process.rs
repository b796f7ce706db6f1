//! A `cloud-hypervisor --api-socket` process and its API client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cloud_hypervisor_client::apis::{DefaultApi, Error as ApiError};
use cloud_hypervisor_client::{SocketBasedApiClient, socket_based_api_client};
use tokio::process::Child;

use super::BACKEND;
use crate::error::RuntimeError;
use crate::process::process_alive;

/// How long a new VMM process may take to answer `vmm.ping`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `vmm.shutdown` may take before the process is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A VMM process answering on its API socket: one this process spawned,
/// or one it [attached](Self::attach) to. Dropping a spawned one kills it
/// unless it was [detached](Self::detach); dropping an attached one leaves
/// it running.
pub(crate) struct VmmProcess {
    /// The process, if this process spawned it (`None` when attached).
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    client: SocketBasedApiClient,
    /// Left running on purpose: dropping must not kill it.
    detached: bool,
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            // Best effort; an exited child refuses the kill. Tokio reaps
            // the dropped child in the background.
            let _ = child.start_kill();
        }
    }
}

impl fmt::Debug for VmmProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmmProcess")
            .field("pid", &self.pid)
            .field("socket", &self.socket)
            .field("attached", &self.child.is_none())
            .field("detached", &self.detached)
            .finish_non_exhaustive()
    }
}

/// A failed API call as a [`RuntimeError::Vmm`] naming the request: the
/// status and the VMM's error chain (a JSON array of messages).
pub(crate) fn api_error(op: &str, error: ApiError) -> RuntimeError {
    RuntimeError::Vmm {
        backend: BACKEND,
        op: op.to_owned(),
        message: api_message(error),
    }
}

/// A failed API call's status and the VMM's error chain, or the transport
/// error.
fn api_message(error: ApiError) -> String {
    match error {
        ApiError::Api(api) => {
            let chain = serde_json::from_str::<Vec<String>>(&api.body)
                .map(|messages| messages.join(": "))
                .unwrap_or(api.body);
            if chain.is_empty() {
                format!("status `{}`", api.code)
            } else {
                format!("status `{}`: {chain}", api.code)
            }
        }
        other => other.to_string(),
    }
}

impl VmmProcess {
    /// Starts `binary --api-socket path=<socket>` with its output in `log`
    /// and waits until it answers `vmm.ping`.
    pub(crate) async fn spawn(
        binary: &Path,
        socket: &Path,
        log: &Path,
        netns: Option<&Path>,
    ) -> Result<VmmProcess, RuntimeError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| RuntimeError::Io { op, path, source }
        };
        // A stale socket would make the VMM refuse to start.
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("cannot remove the stale API socket", socket)(e));
            }
            _ => {}
        }
        let out = std::fs::File::create(log).map_err(io("cannot create the VMM log", log))?;
        let err = out
            .try_clone()
            .map_err(io("cannot create the VMM log", log))?;
        let mut arg = std::ffi::OsString::from("path=");
        arg.push(socket);
        // Its own process group, so a Ctrl-C at the terminal that launched
        // it does not reach a VM meant to outlive the launch, and no
        // `kill_on_drop`: `Drop` kills it unless it was detached.
        let child = crate::vmm::command_in(netns, binary)
            .arg("--api-socket")
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        // From here on, dropping `process` (an error, a cancelled future)
        // kills the child.
        let mut process = VmmProcess {
            pid: child
                .id()
                .expect("a child that was never waited for has its pid"),
            child: Some(child),
            socket: socket.to_owned(),
            client: socket_based_api_client(socket),
            detached: false,
        };
        process.wait_ready(READY_TIMEOUT).await?;
        Ok(process)
    }

    /// Takes control again of the VMM process `pid`, left running with a VM
    /// on `socket` by a [detached](Self::detach) handle: checks that it
    /// answers `vmm.ping` within `timeout` and that it is that process.
    pub(crate) async fn attach(
        pid: u32,
        socket: &Path,
        timeout: Duration,
    ) -> Result<VmmProcess, RuntimeError> {
        std::fs::metadata(socket).map_err(|source| RuntimeError::Io {
            op: "cannot find the VMM's API socket",
            path: socket.to_owned(),
            source,
        })?;
        let process = VmmProcess {
            child: None,
            pid,
            socket: socket.to_owned(),
            client: socket_based_api_client(socket),
            detached: false,
        };
        let ping = tokio::time::timeout(timeout, process.client.vmm_ping_get())
            .await
            .map_err(|_| RuntimeError::Timeout {
                what: format!("the VMM's API socket `{}` to answer", socket.display()),
                seconds: timeout.as_secs(),
            })?
            .map_err(|e| RuntimeError::Vmm {
                backend: BACKEND,
                op: "vmm.ping".to_owned(),
                message: format!(
                    "no VMM answers on `{}`: {}",
                    socket.display(),
                    api_message(e)
                ),
            })?;
        // Upstream reports its pid (the simulator too): a socket served by
        // another process than the recorded one is not this VM's.
        if let Some(answered) = ping.pid
            && answered != i64::from(pid)
        {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "vmm.ping".to_owned(),
                message: format!(
                    "the VMM on `{}` is process `{answered}`, not the recorded `{pid}`",
                    socket.display()
                ),
            });
        }
        if !process_alive(pid) {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "vmm.ping".to_owned(),
                message: format!(
                    "the recorded VMM process `{pid}` of `{}` is not running",
                    socket.display()
                ),
            });
        }
        Ok(process)
    }

    /// Lets go of the process, leaving it running.
    pub(crate) fn detach(mut self) {
        self.detached = true;
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Err(RuntimeError::Vmm {
                    backend: BACKEND,
                    op: "vmm.ping".to_owned(),
                    message: format!("the VMM exited with `{status}` before answering"),
                });
            }
            if self.socket.exists() && self.client.vmm_ping_get().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    what: format!("the VMM's API socket `{}`", self.socket.display()),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The exit status of a spawned process, if it has exited (`None`
    /// for an attached one: it is not this process's child).
    pub(crate) fn exited(&mut self) -> Result<Option<std::process::ExitStatus>, RuntimeError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        child.try_wait().map_err(|source| RuntimeError::Io {
            op: "cannot wait for the VMM",
            path: self.socket.clone(),
            source,
        })
    }

    pub(crate) fn client(&self) -> &SocketBasedApiClient {
        &self.client
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The API socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// `vmm.shutdown`, then waits for the process to exit: a spawned one
    /// is killed if it does not in time; for an attached one, which is not
    /// this process's child, that is a [`RuntimeError::Timeout`].
    pub(crate) async fn shutdown(&mut self) -> Result<(), RuntimeError> {
        let asked = self.client.shutdown_vmm().await;
        match self.child.as_mut() {
            Some(child) => {
                let exited = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
                if !matches!(exited, Ok(Ok(_))) {
                    // Best effort: the process is gone either way.
                    let _ = child.kill().await;
                }
            }
            None => self.wait_gone(EXIT_TIMEOUT).await?,
        }
        let _ = std::fs::remove_file(&self.socket);
        asked.map_err(|e| api_error("vmm.shutdown", e))
    }

    /// Waits for the attached process to be gone.
    async fn wait_gone(&self, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while process_alive(self.pid) {
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    what: format!("the VMM process `{}` to exit", self.pid),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
