//! How a server is set up: [`ServerConfig`] and its [`Limits`].

use std::path::PathBuf;

/// The limits a server enforces; each is answered 413 or 429 with
/// `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest template body (the format's own cap, 4 MiB).
    pub template_bytes: usize,
    /// The largest file upload (the agent protocol's cap, 8 MiB); uploads
    /// are read as they stream in and refused as soon as they pass it.
    pub file_bytes: u64,
    /// The largest JSON request body of the other routes.
    pub json_bytes: usize,
    /// How many builds may run at once.
    pub builds: usize,
    /// How many computers a namespace may have at once (launching ones
    /// included).
    pub computers_per_namespace: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            template_bytes: orgo_template::MAX_DOCUMENT_BYTES,
            file_bytes: orgo_agent_protocol::MAX_FILE_BYTES,
            json_bytes: 1 << 20,
            builds: 2,
            computers_per_namespace: 16,
        }
    }
}

/// How a server is set up.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// The limits.
    pub limits: Limits,
    /// The one host directory whose files `file://` sources of templates
    /// arriving over HTTP may name (symlinks resolved); `None` (the
    /// default): every `file://` source is refused.
    pub allow_file_root: Option<PathBuf>,
}
