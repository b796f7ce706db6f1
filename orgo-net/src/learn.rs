//! Learn mode: the destinations a computer reached, one JSON line each in
//! its learn file, and the smallest `egress_policy` that allows them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::NetError;
use crate::name::normalize_name;

/// The largest learn file read (4 MiB).
pub const MAX_LEARN_FILE: u64 = 4 << 20;

/// The most destinations one daemon records.
pub const MAX_LEARNED: usize = 10_000;

/// How a name was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A TLS ClientHello's server name.
    Sni,
    /// An HTTP `Host`.
    Host,
    /// A DNS question.
    Dns,
}

/// One line of the learn file.
///
/// ```
/// use orgo_net::{LearnEntry, Via};
///
/// let name = LearnEntry::Name { name: "api.github.com".into(), port: Some(443), via: Via::Sni };
/// assert_eq!(
///     serde_json::to_string(&name)?,
///     r#"{"kind":"name","name":"api.github.com","port":443,"via":"sni"}"#,
/// );
/// let addr = LearnEntry::Addr { addr: "192.0.2.7".parse()?, port: 80 };
/// assert_eq!(serde_json::to_string(&addr)?, r#"{"kind":"addr","addr":"192.0.2.7","port":80}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LearnEntry {
    /// A name the computer used.
    Name {
        /// Lower case, without the final dot.
        name: String,
        /// The port it connected to (none for a DNS question).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Where the name was read.
        via: Via,
    },
    /// An address the computer reached without a name.
    Addr {
        /// The address.
        addr: IpAddr,
        /// The port.
        port: u16,
    },
}

/// What a computer reached, deduplicated: names and bare addresses.
///
/// ```
/// use orgo_net::Learned;
///
/// let mut learned = Learned::parse(concat!(
///     r#"{"kind":"name","name":"pypi.org","port":443,"via":"sni"}"#, "\n",
///     r#"{"kind":"name","name":"pypi.org","via":"dns"}"#, "\n",
///     r#"{"kind":"addr","addr":"192.0.2.7","port":5432}"#, "\n",
/// ))?;
/// learned.add_addr("198.51.100.1".parse()?);
/// assert_eq!(learned.minimal_policy(), "\
/// egress_policy:
///   mode: allow
///   rules:
///     - \"pypi.org\"
///     - \"192.0.2.7\"
///     - \"198.51.100.1\"
/// ");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    names: BTreeSet<String>,
    addrs: BTreeSet<IpAddr>,
}

impl Learned {
    /// Nothing learned.
    pub fn new() -> Learned {
        Learned::default()
    }

    /// Reads a learn file (at most [`MAX_LEARN_FILE`] bytes). A missing file
    /// is nothing learned.
    pub fn read(path: &Path) -> Result<Learned, NetError> {
        let io = |source| NetError::Io {
            what: "read the learn file",
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Learned::new()),
            Err(e) => return Err(io(e)),
        };
        let mut text = String::new();
        file.take(MAX_LEARN_FILE + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_LEARN_FILE {
            return Err(NetError::TooLarge {
                path: path.to_owned(),
                limit: MAX_LEARN_FILE,
            });
        }
        Learned::parse(&text).map_err(|e| match e {
            NetError::LearnLine { line, message, .. } => NetError::LearnLine {
                path: path.to_owned(),
                line,
                message,
            },
            other => other,
        })
    }

    /// Reads the lines of a learn file. A last line without its newline (a
    /// write cut short) is ignored; any other bad line is an error naming it.
    pub fn parse(text: &str) -> Result<Learned, NetError> {
        let mut learned = Learned::new();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for (i, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: LearnEntry =
                serde_json::from_str(line).map_err(|e| NetError::LearnLine {
                    path: Default::default(),
                    line: i + 1,
                    message: e.to_string(),
                })?;
            learned.add(&entry);
        }
        Ok(learned)
    }

    /// Adds what an entry names.
    pub fn add(&mut self, entry: &LearnEntry) {
        match entry {
            LearnEntry::Name { name, .. } => self.add_name(name),
            LearnEntry::Addr { addr, .. } => self.add_addr(*addr),
        }
    }

    /// Adds a name (an address literal counts as an address; a text that is
    /// neither is ignored).
    pub fn add_name(&mut self, name: &str) {
        if let Ok(addr) = name.parse::<IpAddr>() {
            self.add_addr(addr);
        } else if let Some(name) = normalize_name(name) {
            self.names.insert(name);
        }
    }

    /// Adds an address (IPv4-mapped IPv6 addresses as the IPv4 address).
    pub fn add_addr(&mut self, addr: IpAddr) {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            IpAddr::V4(_) => addr,
        };
        self.addrs.insert(addr);
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The addresses, sorted.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().copied()
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.addrs.is_empty()
    }

    /// The smallest `egress_policy` that allows exactly what was learned, as
    /// YAML to paste into a template: `mode: allow` with each name as an
    /// exact domain, then each address; sorted, deduplicated.
    pub fn minimal_policy(&self) -> String {
        let mut out = String::from("egress_policy:\n  mode: allow\n");
        if self.is_empty() {
            out.push_str("  rules: []\n");
            return out;
        }
        out.push_str("  rules:\n");
        for name in &self.names {
            let _ = writeln!(out, "    - \"{name}\"");
        }
        for addr in &self.addrs {
            let _ = writeln!(out, "    - \"{addr}\"");
        }
        out
    }
}
