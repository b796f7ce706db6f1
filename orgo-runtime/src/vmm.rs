//! The VMM backend traits: what the runtime asks of Cloud Hypervisor and of
//! QEMU, in one vocabulary.
//!
//! A [`Vmm`] boots a VM from a [`VmConfig`] or restores one from a golden
//! snapshot with a [`RestoreConfig`]; the [`Vm`] it returns is paused,
//! resumed, snapshotted and shut down. The backend-specific work (the
//! VMM's own configuration format, its API socket, its process) lives in
//! each backend's module; conversions from these types to a VMM's own are
//! pure functions, apart from the I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::agent::AgentError;

/// What a backend can do on this host, from [`Vmm::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name (`qemu`, `cloud-hypervisor`).
    pub backend: &'static str,
    /// The VMM's version, as it reports it.
    pub version: String,
    /// Hardware virtualization (`kvm`) or software emulation (`tcg`).
    pub accel: Accel,
    /// Restores map guest memory lazily (copy-on-write or on demand)
    /// instead of reading it all first.
    pub lazy_restore: bool,
}

/// How guest instructions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        })
    }
}

/// A disk image and how to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Open it read-only (a golden disk is never written).
    pub read_only: bool,
}

/// A disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// A plain image.
    Raw,
    /// A qcow2 image, usually a copy-on-write overlay over a raw golden disk.
    Qcow2,
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network device.
    None,
    /// The VMM's own user-mode NAT (QEMU's slirp): no host setup, no root.
    User,
    /// A tap device the host set up (Cloud Hypervisor; NAT by the host).
    Tap {
        /// The tap interface.
        name: String,
        /// The guest NIC's MAC address.
        mac: String,
    },
}

/// A VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// A name for the VM, unique on the host (sockets and logs use it).
    pub id: String,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The kernel: `vmlinuz` for QEMU, the ELF `vmlinux` for Cloud Hypervisor.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// The root disk.
    pub disk: Disk,
    /// Back guest memory with this file, shared with the VMM's mapping, so a
    /// snapshot can hand it over without copying (golden VMs). `None`: the
    /// VMM's anonymous memory.
    pub memory_file: Option<PathBuf>,
    /// The network.
    pub network: Network,
    /// A directory of the VM's own for sockets, logs and state.
    pub run_dir: PathBuf,
}

/// A VM to restore from a golden snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreConfig {
    /// A name for the VM, unique on the host.
    pub id: String,
    /// The snapshot's files by role, as [`Vm::snapshot`] returned them
    /// (read-only: restores map them copy-on-write).
    pub snapshot: BTreeMap<String, PathBuf>,
    /// The clone's own root disk (a copy-on-write layer over the golden disk).
    pub disk: Disk,
    /// vCPUs: at least the snapshot's; more are hot-added after the restore
    /// where the backend can (else [`RuntimeError::Unsupported`]).
    pub cpus: u32,
    /// Guest memory in MiB: at least the snapshot's (the floor); more is
    /// hot-added after the restore where the backend can.
    pub memory_mib: u64,
    /// The network.
    pub network: Network,
    /// A directory of the VM's own for sockets, logs and state.
    pub run_dir: PathBuf,
}

/// Where the host reaches the guest agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A virtio-serial port behind a Unix socket (QEMU).
    Serial(PathBuf),
    /// Cloud Hypervisor's hybrid vsock: a Unix socket, `CONNECT <port>`.
    HybridVsock {
        /// The socket.
        path: PathBuf,
        /// The agent's vsock port.
        port: u32,
    },
}

/// A VM's state, as the VMM reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Created, not booted.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Shut down.
    Shutdown,
}

/// What [`Vm::info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    /// The state.
    pub state: VmState,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The VMM process.
    pub pid: Option<u32>,
}

/// A VMM backend.
#[async_trait]
pub trait Vmm: Send + Sync + fmt::Debug {
    /// The backend's name.
    fn name(&self) -> &'static str;

    /// What the backend can do here; an error if it cannot run at all.
    async fn probe(&self) -> Result<Capabilities, RuntimeError>;

    /// Creates and boots a VM.
    async fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, RuntimeError>;

    /// Restores a VM from a snapshot this backend made, and resumes it.
    async fn restore(&self, config: &RestoreConfig) -> Result<Box<dyn Vm>, RuntimeError>;

    /// Takes control again of VM `id`, which a handle of this backend left
    /// running in `run_dir` with [`Vm::detach`] (in this process or another).
    async fn attach(&self, id: &str, run_dir: &Path) -> Result<Box<dyn Vm>, RuntimeError>;
}

/// A running (or paused) VM of some backend. Dropping the handle that
/// booted or restored the VM kills it, unless it was
/// [detached](Vm::detach); dropping an [attached](Vmm::attach) handle leaves
/// the VM as it was.
#[async_trait]
pub trait Vm: Send + Sync + fmt::Debug {
    /// The VM's id.
    fn id(&self) -> &str;

    /// Where its agent listens.
    fn agent_endpoint(&self) -> AgentEndpoint;

    /// Its state and shape.
    async fn info(&self) -> Result<VmInfo, RuntimeError>;

    /// Stops the vCPUs.
    async fn pause(&self) -> Result<(), RuntimeError>;

    /// Starts the vCPUs again.
    async fn resume(&self) -> Result<(), RuntimeError>;

    /// Writes a snapshot of the paused VM into `dir`; returns its files by
    /// role. Guest memory backed by a [`VmConfig::memory_file`] is handed
    /// over, not copied.
    async fn snapshot(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>, RuntimeError>;

    /// Stops the VM and its VMM process.
    async fn shutdown(&self) -> Result<(), RuntimeError>;

    /// Lets go of the VM, leaving it running: its VMM process outlives this
    /// handle and this process; [`Vmm::attach`] takes it back.
    fn detach(self: Box<Self>);
}

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A VMM process could not be started.
    #[error("cannot start `{binary}`")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    /// A configuration this backend cannot express.
    #[error("{backend} cannot {what}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// What was asked.
        what: String,
    },
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
    /// A step of a build (or of a launch, or `on_shutdown`) failed.
    #[error("`{}` {}", .0.field, .0.reason)]
    Build(crate::runtime::StepFailure),
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] Box<orgo_snapshot::StoreError>),
    /// The base image could not be built.
    #[error("the base image failed")]
    Image(#[source] crate::image::ImageError),
    /// A secret is missing or the vault is unreadable.
    #[error(transparent)]
    Vault(crate::vault::VaultError),
    /// A build needs the base image, and no guest agent was given to build
    /// it with.
    #[error(
        "no guest agent to build the base image with: give a static `orgo-agent` \
         (`RuntimeConfig::agent`; the CLI's `--agent` or `ORGO_AGENT`; Python's `agent=`)"
    )]
    MissingAgent,
    /// Host binaries the runtime spawns are not installed.
    #[error(transparent)]
    MissingTools(crate::host_tools::MissingTools),
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
}

/// What `binary --version` prints; an error if it cannot run or fails.
pub(crate) async fn version_output(
    backend: &'static str,
    binary: &Path,
) -> Result<String, RuntimeError> {
    let out = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .map_err(|source| RuntimeError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(RuntimeError::Vmm {
            backend,
            op: "--version".to_owned(),
            message: format!("exited with `{}` printing `{text}`", out.status),
        });
    }
    Ok(text)
}

/// Whether process `pid` runs (exists and is not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
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
