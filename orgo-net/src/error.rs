//! The errors of this crate.

use std::path::PathBuf;

/// A failure of the network daemon's files, sockets or control channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A file or socket operation failed.
    #[error("cannot {what} `{}`", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file, socket or namespace.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file over its bound.
    #[error("`{}` is larger than `{limit}` bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
    /// A learn file line that is not a learn entry.
    #[error("`{}` line `{line}` is not a learn entry: {message}", path.display())]
    LearnLine {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The daemon's config file cannot be read.
    #[error("cannot read the netd config")]
    Config(#[from] orgo_snapshot::VersionedError),
    /// A socket could not be created or bound.
    #[error("cannot {what} `{addr}`")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered a control request with an error.
    #[error("netd refused `{op}`: {message}")]
    Refused {
        /// The request.
        op: &'static str,
        /// Its message.
        message: String,
        /// The failing item, when the request had several.
        index: Option<usize>,
    },
    /// The daemon's control reply could not be read.
    #[error("a bad reply from netd to `{op}`: {message}")]
    BadReply {
        /// The request.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
}
