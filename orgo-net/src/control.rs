//! The daemon's control socket: one JSON request per line, one JSON reply
//! per line, and the runtime's client of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::error::NetError;

/// The longest request or reply line (64 KiB).
pub const MAX_CONTROL_LINE: usize = 64 << 10;

/// The most ports one `forward` request binds.
pub const MAX_FORWARDS: usize = 256;

/// How long the client waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One port to forward: a host listener relayed to the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardPort {
    /// The guest's port (on [`crate::GUEST_ADDR`]).
    pub internal: u16,
    /// TCP or UDP.
    pub protocol: Proto,
    /// The host address to listen on (port 0: any free port).
    pub bind: SocketAddr,
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum ControlRequest {
    /// Bind each port's host listener (all or none) and relay it to the guest.
    Forward {
        /// The ports.
        ports: Vec<ForwardPort>,
    },
    /// Turn learn mode on or off.
    Learn {
        /// On or off.
        on: bool,
    },
    /// Whether the daemon answers.
    Ping,
}

/// A control reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// For `forward`: the bound host addresses, in the request's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Vec<SocketAddr>>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failing item of a request with several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ControlReply {
    /// `{"ok":true}`.
    pub fn ok() -> ControlReply {
        ControlReply {
            ok: true,
            bound: None,
            error: None,
            index: None,
        }
    }

    /// `{"ok":false,"error":...}`.
    pub fn error(message: impl Into<String>, index: Option<usize>) -> ControlReply {
        ControlReply {
            ok: false,
            bound: None,
            error: Some(message.into()),
            index,
        }
    }
}

/// The runtime's client of one daemon's control socket. Each call is one
/// connection, one request and one reply, within 10 seconds.
///
/// ```no_run
/// use orgo_net::{ControlClient, ForwardPort, Proto};
///
/// # async fn f() -> Result<(), orgo_net::NetError> {
/// let netd = ControlClient::new("/var/lib/orgo/run/c-0123456789ab/netd.sock");
/// netd.ping().await?;
/// let bound = netd
///     .forward(&[ForwardPort { internal: 8000, protocol: Proto::Tcp, bind: "127.0.0.1:0".parse().unwrap() }])
///     .await?;
/// println!("8000/tcp {}", bound[0]);
/// netd.learn(true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// A client of the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ControlClient {
        ControlClient { path: path.into() }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the daemon answers.
    pub async fn ping(&self) -> Result<(), NetError> {
        self.call("ping", &ControlRequest::Ping).await.map(drop)
    }

    /// Turns learn mode on or off.
    pub async fn learn(&self, on: bool) -> Result<(), NetError> {
        self.call("learn", &ControlRequest::Learn { on })
            .await
            .map(drop)
    }

    /// Forwards each port (all or none); returns the bound host addresses in
    /// order. A port that cannot be bound is [`NetError::Refused`] with its index.
    pub async fn forward(&self, ports: &[ForwardPort]) -> Result<Vec<SocketAddr>, NetError> {
        let request = ControlRequest::Forward {
            ports: ports.to_vec(),
        };
        let reply = self.call("forward", &request).await?;
        let bound = reply.bound.ok_or_else(|| NetError::BadReply {
            op: "forward",
            message: "no `bound` in the reply".into(),
        })?;
        if bound.len() != ports.len() {
            return Err(NetError::BadReply {
                op: "forward",
                message: format!("`{}` addresses for `{}` ports", bound.len(), ports.len()),
            });
        }
        Ok(bound)
    }

    async fn call(
        &self,
        op: &'static str,
        request: &ControlRequest,
    ) -> Result<ControlReply, NetError> {
        let io = |source| NetError::Io {
            what: "talk to netd at",
            path: self.path.clone(),
            source,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&self.path).await?;
            let mut line = serde_json::to_vec(request).expect("a request serializes");
            line.push(b'\n');
            stream.write_all(&line).await?;
            let mut reader = BufReader::new(stream).take(MAX_CONTROL_LINE as u64);
            let mut reply = String::new();
            reader.read_line(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        let reply: ControlReply =
            serde_json::from_str(reply.trim_end()).map_err(|e| NetError::BadReply {
                op,
                message: e.to_string(),
            })?;
        if !reply.ok {
            return Err(NetError::Refused {
                op,
                message: reply.error.unwrap_or_default(),
                index: reply.index,
            });
        }
        Ok(reply)
    }
}

/// Reads a request line (without its newline).
pub(crate) fn parse_request(line: &str) -> Result<ControlRequest, String> {
    let request: ControlRequest =
        serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    if let ControlRequest::Forward { ports } = &request
        && ports.len() > MAX_FORWARDS
    {
        return Err(format!("at most `{MAX_FORWARDS}` ports in one request"));
    }
    Ok(request)
}
