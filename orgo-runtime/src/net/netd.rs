//! A VM's `orgo-netd`: its configuration file, its process (in the host
//! namespace; it makes its sockets inside the VM's), and its control socket.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use orgo_template::EgressPolicy;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::error::{RuntimeError, io};

/// netd's configuration, `{"orgo_netd": 1, ...}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NetdConfig {
    pub(crate) orgo_netd: u32,
    pub(crate) netns: PathBuf,
    pub(crate) proxy_port: u16,
    pub(crate) dns: SocketAddr,
    pub(crate) dns_upstream: SocketAddr,
    pub(crate) policy: Option<PolicyJson>,
    pub(crate) denied: Vec<String>,
    pub(crate) learn: bool,
    pub(crate) learn_file: PathBuf,
    pub(crate) control: PathBuf,
}

/// A policy as netd reads it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PolicyJson {
    pub(crate) mode: &'static str,
    pub(crate) rules: Vec<String>,
}

impl PolicyJson {
    pub(crate) fn of(policy: &EgressPolicy) -> PolicyJson {
        PolicyJson {
            mode: match policy.mode {
                orgo_template::EgressMode::Allow => "allow",
                _ => "block",
            },
            rules: policy.rules.iter().map(ToString::to_string).collect(),
        }
    }
}

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

/// How long netd may take to say `ready`, and a control call to answer.
const READY: Duration = Duration::from_secs(10);
const CALL: Duration = Duration::from_secs(10);
/// A control reply is at most this long.
const MAX_REPLY: u64 = 64 * 1024;

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
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(config).expect("netd's config serializes"),
    )
    .map_err(io("write", &path))?;
    let log = File::create(run_dir.join("netd.log")).map_err(io("create", run_dir))?;
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
    let mut lines = BufReader::new(stdout.take(4096)).lines();
    let ready = tokio::time::timeout(READY, lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line.trim() == "ready" => Ok(child),
        Ok(_) => {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(run_dir.join("netd.log")).unwrap_or_default();
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

/// A port to forward, as netd's `forward` takes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForwardPort {
    pub(crate) internal: u16,
    pub(crate) protocol: String,
    pub(crate) bind: SocketAddr,
}

#[derive(Debug, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    bound: Vec<SocketAddr>,
}

/// A refused control request: netd's reason, and which port it was about.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: String,
    pub(crate) index: Option<usize>,
}

/// Sends one request to the netd listening on `socket`.
async fn call(
    socket: &Path,
    request: serde_json::Value,
) -> Result<Result<Reply, Refused>, RuntimeError> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        let mut line = serde_json::to_vec(&request).expect("a request serializes");
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reply = String::new();
        BufReader::new(stream.take(MAX_REPLY))
            .read_line(&mut reply)
            .await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(CALL, exchange)
        .await
        .map_err(|_| RuntimeError::Timeout {
            what: "orgo-netd's control socket".into(),
            seconds: CALL.as_secs(),
        })?
        .map_err(io("talk to", socket))?;
    let reply: Reply = serde_json::from_str(&reply).map_err(|e| RuntimeError::Net {
        op: "orgo-netd control".into(),
        message: format!("an unreadable reply: {e}"),
    })?;
    if reply.ok {
        Ok(Ok(reply))
    } else {
        Ok(Err(Refused {
            error: reply.error.unwrap_or_default(),
            index: reply.index,
        }))
    }
}

/// Asks netd to forward `ports`; the host addresses bound, in order, or
/// which port it refused and why (none is bound then).
pub(crate) async fn forward(
    socket: &Path,
    ports: &[ForwardPort],
) -> Result<Result<Vec<SocketAddr>, Refused>, RuntimeError> {
    let request = serde_json::json!({"op": "forward", "ports": ports});
    Ok(call(socket, request).await?.map(|r| r.bound))
}

/// Turns learning on.
pub(crate) async fn learn(socket: &Path) -> Result<(), RuntimeError> {
    match call(socket, serde_json::json!({"op": "learn", "on": true})).await? {
        Ok(_) => Ok(()),
        Err(refused) => Err(RuntimeError::Net {
            op: "orgo-netd learn".into(),
            message: refused.error,
        }),
    }
}
