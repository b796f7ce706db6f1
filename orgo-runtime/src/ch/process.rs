//! A `cloud-hypervisor --api-socket` process and its API client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cloud_hypervisor_client::apis::{DefaultApi, Error as ApiError};
use cloud_hypervisor_client::{SocketBasedApiClient, socket_based_api_client};
use tokio::process::{Child, Command};

use super::BACKEND;
use crate::vmm::RuntimeError;

/// How long a new VMM process may take to answer `vmm.ping`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `vmm.shutdown` may take before the process is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A VMM process answering on its API socket. Dropping it kills it.
pub(crate) struct VmmProcess {
    child: Child,
    pid: Option<u32>,
    socket: PathBuf,
    client: SocketBasedApiClient,
}

impl fmt::Debug for VmmProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmmProcess")
            .field("pid", &self.pid)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// A failed API call as a [`RuntimeError::Vmm`] naming the request: the
/// status and the VMM's error chain (a JSON array of messages).
pub(crate) fn api_error(op: &str, error: ApiError) -> RuntimeError {
    let message = match error {
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
    };
    RuntimeError::Vmm {
        backend: BACKEND,
        op: op.to_owned(),
        message,
    }
}

impl VmmProcess {
    /// Starts `binary --api-socket path=<socket>` with its output in `log`
    /// and waits until it answers `vmm.ping`.
    pub(crate) async fn spawn(
        binary: &Path,
        socket: &Path,
        log: &Path,
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
        let child = Command::new(binary)
            .arg("--api-socket")
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let mut process = VmmProcess {
            pid: child.id(),
            child,
            socket: socket.to_owned(),
            client: socket_based_api_client(socket),
        };
        process.wait_ready(READY_TIMEOUT).await?;
        Ok(process)
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

    /// The process's exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Result<Option<std::process::ExitStatus>, RuntimeError> {
        self.child.try_wait().map_err(|source| RuntimeError::Io {
            op: "cannot wait for the VMM",
            path: self.socket.clone(),
            source,
        })
    }

    pub(crate) fn client(&self) -> &SocketBasedApiClient {
        &self.client
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// `vmm.shutdown`, then waits for the process to exit (killing it if it
    /// does not in time).
    pub(crate) async fn shutdown(&mut self) -> Result<(), RuntimeError> {
        let asked = self.client.shutdown_vmm().await;
        let exited = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await;
        if !matches!(exited, Ok(Ok(_))) {
            // Best effort: the process is gone either way.
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(&self.socket);
        asked.map_err(|e| api_error("vmm.shutdown", e))
    }
}
