//! A VM's `orgo-netd`: its configuration file ([`orgo_net::NetdConfig`]),
//! its process (in the host namespace; it makes its sockets inside the
//! VM's) and its control socket ([`orgo_net::ControlClient`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use orgo_net::{ControlClient, NetError, NetdConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::error::{RuntimeError, io};

pub(crate) use orgo_net::{ForwardPort, Proto};

/// The files netd of the VM whose run directory is `run_dir` uses.
pub(crate) fn config_path(run_dir: &Path) -> PathBuf {
    run_dir.join("netd.json")
}
pub(crate) fn control_path(run_dir: &Path) -> PathBuf {
    run_dir.join("netd.sock")
}
pub(crate) fn learn_path(run_dir: &Path) -> PathBuf {
    run_dir.join("egress-learned.jsonl")
}

/// How long netd may take to say `ready`.
const READY: Duration = Duration::from_secs(10);

/// Writes `config` and starts `binary` on it, with `lock` (the VM's slot)
/// as its standard input; returns once it says `ready`.
pub(crate) async fn spawn(
    binary: &Path,
    run_dir: &Path,
    config: &NetdConfig,
    lock: File,
) -> Result<Child, RuntimeError> {
    std::fs::create_dir_all(run_dir).map_err(io("create", run_dir))?;
    let path = config_path(run_dir);
    let _ = std::fs::remove_file(&config.control);
    config
        .write(&path)
        .map_err(net_error("write netd's configuration"))?;
    let log_path = run_dir.join("netd.log");
    let log = File::create(&log_path).map_err(io("create", &log_path))?;
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::from(lock))
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own group: a Ctrl-C at the launching terminal does not reach
        // a computer meant to outlive the launch.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let ready =
        tokio::time::timeout(READY, BufReader::new(stdout.take(64)).read_line(&mut line)).await;
    match ready {
        Ok(Ok(_)) if line.trim() == "ready" => Ok(child),
        Ok(_) => {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(RuntimeError::Net {
                op: "start orgo-netd".into(),
                message: format!(
                    "it exited before it was ready: {}",
                    log.trim().chars().take(2000).collect::<String>()
                ),
            })
        }
        Err(_) => {
            let _ = child.kill().await;
            Err(RuntimeError::Timeout {
                what: "orgo-netd to be ready".into(),
                seconds: READY.as_secs(),
            })
        }
    }
}

/// A [`NetError`] as the runtime's error, saying what was being done.
pub(crate) fn net_error(op: &'static str) -> impl FnOnce(NetError) -> RuntimeError {
    move |error| RuntimeError::Net {
        op: op.to_owned(),
        message: crate::ErrorChain(&error).to_string(),
    }
}

/// Asks netd to forward `ports`; the host addresses bound, in order, or
/// which port it refused and why (none is bound then).
pub(crate) async fn forward(
    socket: &Path,
    ports: &[ForwardPort],
) -> Result<Result<Vec<std::net::SocketAddr>, (String, Option<usize>)>, RuntimeError> {
    match ControlClient::new(socket).forward(ports).await {
        Ok(bound) => Ok(Ok(bound)),
        Err(NetError::Refused { message, index, .. }) => Ok(Err((message, index))),
        Err(other) => Err(net_error("orgo-netd forward")(other)),
    }
}

/// Turns learning on.
pub(crate) async fn learn(socket: &Path) -> Result<(), RuntimeError> {
    ControlClient::new(socket)
        .learn(true)
        .await
        .map_err(net_error("orgo-netd learn"))
}
