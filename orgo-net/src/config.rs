//! `netd.json`: what one `orgo-netd` serves, written by the runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use orgo_snapshot::{Version, VersionedFormat};
use serde::{Deserialize, Serialize};

use crate::error::NetError;
use crate::policy::Policy;

/// The file format: `{"orgo_netd": 1, ...}`, at most 1 MiB.
const FORMAT: VersionedFormat = VersionedFormat::new("orgo_netd", Version::new(1, 0), 1 << 20);

/// The configuration of one `orgo-netd` (one per VM), as the runtime writes
/// it to `<run_dir>/netd.json`.
///
/// ```
/// use orgo_net::{NetdConfig, Policy};
///
/// let dir = tempfile::tempdir()?;
/// let config = NetdConfig {
///     netns: "/run/netns/orgo-c-0123456789ab".into(),
///     proxy_port: 3129,
///     dns: "10.0.2.3:53".parse()?,
///     dns_upstream: "127.0.0.1:5353".parse()?,
///     policy: Policy::open(),
///     denied: vec!["10.200.0.0/16".parse()?],
///     learn: false,
///     learn_file: dir.path().join("egress-learned.jsonl"),
///     control: dir.path().join("netd.sock"),
/// };
/// let path = dir.path().join("netd.json");
/// config.write(&path)?;
/// assert_eq!(NetdConfig::read(&path)?, config);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdConfig {
    /// The VM's network namespace file (`/run/netns/orgo-<id>`).
    pub netns: PathBuf,
    /// The proxy's port on `0.0.0.0` inside the namespace (TCP 80 and 443
    /// from the guest are redirected there).
    pub proxy_port: u16,
    /// The resolver's address inside the namespace (UDP and TCP), e.g.
    /// `10.0.2.3:53`.
    pub dns: SocketAddr,
    /// The resolver on the host that names are forwarded to and resolved with.
    pub dns_upstream: SocketAddr,
    /// The computer's policy: `null` for none.
    pub policy: Policy,
    /// Ranges denied beyond the always-denied set and the host's addresses
    /// (the computers' range, ...).
    pub denied: Vec<IpNet>,
    /// Whether learn mode is on from the start.
    pub learn: bool,
    /// Where learn mode appends its lines.
    pub learn_file: PathBuf,
    /// The control socket (Unix stream) the daemon listens on.
    pub control: PathBuf,
}

impl NetdConfig {
    /// Reads the file: size bound and version checked before the body.
    pub fn read(path: &Path) -> Result<NetdConfig, NetError> {
        Ok(FORMAT.read_file(path)?)
    }

    /// Writes the file atomically (a temporary file beside it, then renamed).
    pub fn write(&self, path: &Path) -> Result<(), NetError> {
        let io = |source| NetError::Io {
            what: "write",
            path: path.to_owned(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&FORMAT.to_value(self)).expect("a config serializes to JSON");
        let temp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io)
    }
}
