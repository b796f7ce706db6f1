//! The runtime's errors, and the one printer of an error's chain of causes
//! that the CLI and the Python bindings share.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::agent::AgentError;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A process could not be started.
    #[error("cannot start `{binary}`")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Host binaries the runtime spawns are not installed.
    #[error(transparent)]
    MissingTools(crate::host_tools::MissingTools),
    /// A file operation failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VMM refused or failed a request.
    #[error("{backend} `{op}` failed: {message}")]
    Vmm {
        /// The backend.
        backend: &'static str,
        /// The request (`vm.boot`, `migrate`, ...).
        op: String,
        /// What the VMM said.
        message: String,
    },
    /// `qemu-img` failed.
    #[error("`qemu-img {op}` failed: {message}")]
    QemuImg {
        /// The subcommand.
        op: &'static str,
        /// What it printed.
        message: String,
    },
    /// A configuration this backend cannot express.
    #[error("{backend} cannot {what}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// What was asked.
        what: String,
    },
    /// The template asks for what this host cannot give: each field, and
    /// what is missing.
    #[error("this host cannot run the template:{}", list(.0))]
    Unsupportable(Vec<crate::support::Unsupported>),
    /// Something did not happen in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// The guest agent failed.
    #[error("the guest agent failed")]
    Agent(#[source] AgentError),
    /// A step of a build (or of a launch, or `on_shutdown`) ran and failed.
    #[error("`{}` {}", .0.field, .0.reason)]
    Build(StepFailure),
    /// The computer is suspended: it answers nothing until it is resumed.
    #[error(
        "computer `{id}` is suspended; resume it first (`orgo resume {id}`, `Runtime::resume`)"
    )]
    Suspended {
        /// The computer.
        id: String,
    },
    /// A snapshot would hold the value of a secret: nothing was stored.
    #[error(
        "the snapshot holds the value of {}: nothing was stored; give secrets at launch (`secrets:` and the vault), never write them into a build",
        findings.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    SecretCaptured {
        /// Each secret found, with where (never its value).
        findings: Vec<crate::secret_scan::SecretFinding>,
    },
    /// A step of a build (or of a launch) could not be carried out.
    #[error("`{field}` {what}")]
    Step {
        /// The step's template field (`apps[0].services[1]`).
        field: String,
        /// What did not happen (`did not start`).
        what: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The host's CA certificates cannot be read, or the builder VM did not
    /// take them.
    #[error("cannot give the builder VM the CA certificates of `{}`: {reason}", path.display())]
    GuestCa {
        /// The configured file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The host network of a VM could not be set up or asked.
    #[error("host network: `{op}` failed: {message}")]
    Net {
        /// What was run or asked (`ip netns add orgo-c-...`).
        op: String,
        /// What it said.
        message: String,
    },
    /// An `apps[].ports[]` entry could not be forwarded (a taken host
    /// port, say): nothing of the launch is left.
    #[error("`{field}` cannot be forwarded: {reason}")]
    Port {
        /// The port's field (`apps[0].ports[1]`).
        field: String,
        /// Why.
        reason: String,
    },
    /// The guest did not take hot-added vCPUs or memory.
    #[error("the guest did not take the hot-added vCPUs or memory: {stderr}")]
    HotAdd {
        /// What the onlining script printed.
        stderr: String,
    },
    /// The host's random source failed.
    #[error("no entropy from the host")]
    Entropy(#[source] getrandom::Error),
    /// A worker thread of the runtime panicked or was cancelled.
    #[error("the {what} thread failed")]
    Thread {
        /// What the thread did.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A snapshot or image manifest lacks a file the runtime needs.
    #[error("the {what} manifest has no `{role}` file")]
    MissingRole {
        /// Which manifest (`snapshot`, `base image`).
        what: &'static str,
        /// The file's role.
        role: String,
    },
    /// A snapshot names a backend this runtime does not know.
    #[error("unknown backend `{0}`")]
    UnknownBackend(String),
    /// A computer's record cannot be read.
    #[error("cannot read the record of computer `{id}`")]
    Record {
        /// The computer.
        id: String,
        /// Why.
        #[source]
        source: orgo_snapshot::VersionedError,
    },
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] Box<orgo_snapshot::StoreError>),
    /// The base image could not be built.
    #[error("the base image failed")]
    Image(#[source] crate::image::ImageError),
    /// A secret is missing or the vault is unreadable.
    #[error(transparent)]
    Vault(crate::vault::VaultError),
    /// The guest agent could not be put where the base image build reads
    /// it.
    #[error("cannot install the embedded guest agent under `{}`", home.display())]
    EmbeddedAgent {
        /// The orgo home.
        home: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment configures the runtime with a value it cannot use.
    #[error("`{name}` is `{value}`; expected {expected}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// A file orgo wrote and reads back (a snapshot's metadata, a VMM
    /// record) is not one it can read: too large, not JSON, of another
    /// format version, or malformed.
    #[error("invalid {what}")]
    InvalidFile {
        /// What the file is (`QEMU snapshot metadata`, ...).
        what: &'static str,
        /// What is wrong with it; it names the file.
        #[source]
        source: orgo_snapshot::VersionedError,
    },
    /// A value given to the runtime is not one it can use.
    #[error("invalid {what}")]
    Invalid {
        /// What and why.
        what: String,
    },
    /// Something named does not exist.
    #[error("no {what}")]
    NotFound {
        /// What was looked for (`computer `c-1234``).
        what: String,
    },
    /// A computer-use action on a computer without a desktop.
    #[error(
        "computer `{id}` has no desktop: its template sets none of {fields}",
        fields = crate::desktop::DESKTOP_FIELDS
    )]
    NoDesktop {
        /// The computer.
        id: String,
    },
    /// The desktop refused an action (a point off the screen, a key that is
    /// no key).
    #[error("`{action}` refused: {message}")]
    Action {
        /// The action (`click`, `screenshot`, ...).
        action: &'static str,
        /// Why.
        message: String,
    },
}

/// A failed build step, as [`RuntimeError::Build`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepFailure {
    /// The template field of the step.
    pub field: String,
    /// What happened (`exited with status 2`).
    pub reason: String,
    /// The step's output (the tail).
    pub output: String,
}

impl StepFailure {
    /// A failure of step `field`, for `reason`, after printing `output`.
    pub fn new(field: String, reason: String, output: String) -> StepFailure {
        StepFailure {
            field,
            reason,
            output,
        }
    }
}

fn list(items: &[crate::support::Unsupported]) -> String {
    items.iter().map(|u| format!("\n  {u}")).collect()
}

/// An error and its causes, for people: `{}` writes them on one line
/// (`the guest agent failed: agent channel i/o failed: Broken pipe`),
/// `{:#}` one per line (`...` then `  caused by: ...`). A cause whose text
/// its parent already ends with is not repeated.
///
/// ```
/// let error = std::io::Error::other("disk full");
/// let wrapped = orgo_runtime::RuntimeError::Io {
///     op: "write",
///     path: "/tmp/x".into(),
///     source: error,
/// };
/// let chain = orgo_runtime::ErrorChain(&wrapped);
/// assert_eq!(chain.to_string(), "write `/tmp/x`: disk full");
/// assert_eq!(format!("{chain:#}"), "write `/tmp/x`\n  caused by: disk full");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !said.ends_with(&text) {
                if f.alternate() {
                    write!(f, "\n  caused by: {text}")?;
                } else {
                    write!(f, ": {text}")?;
                }
            }
            said = text;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A failed file operation as [`RuntimeError::Io`], for `map_err`.
pub(crate) fn io(
    op: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.as_ref().to_owned();
    move |source| RuntimeError::Io { op, path, source }
}

/// The error of reading a versioned file ([`orgo_snapshot::VersionedFormat`]):
/// an I/O error is [`RuntimeError::Io`] (`op` says what was being done), any
/// other [`RuntimeError::InvalidFile`] of `what`.
pub(crate) fn versioned(
    op: &'static str,
    what: &'static str,
) -> impl FnOnce(orgo_snapshot::VersionedError) -> RuntimeError {
    move |error| match error {
        orgo_snapshot::VersionedError::Io { path, source } => RuntimeError::Io { op, path, source },
        source => RuntimeError::InvalidFile { what, source },
    }
}

/// A store failure.
pub(crate) fn store_error(error: orgo_snapshot::StoreError) -> RuntimeError {
    RuntimeError::Store(Box::new(error))
}

/// The result of a worker thread.
pub(crate) async fn joined<T>(
    what: &'static str,
    job: tokio::task::JoinHandle<T>,
) -> Result<T, RuntimeError> {
    job.await
        .map_err(|source| RuntimeError::Thread { what, source })
}
