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

use crate::error::RuntimeError;

/// What a backend can do on this host, from [`Vmm::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend, with its accelerator.
    pub backend: BackendKind,
    /// The VMM's version, as it reports it.
    pub version: String,
    /// Hardware virtualization (`kvm`) or software emulation (`tcg`).
    pub accel: Accel,
    /// Restores map guest memory lazily (copy-on-write or on demand)
    /// instead of reading it all first.
    pub lazy_restore: bool,
}

/// How guest instructions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Which VMM, and for QEMU which accelerator, made a snapshot and can
/// restore it. Snapshot manifests record it by [name](BackendKind::as_str)
/// (`qemu-tcg`, `qemu-kvm`, `cloud-hypervisor`), parsed here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// QEMU, with its accelerator.
    Qemu(Accel),
    /// Cloud Hypervisor.
    CloudHypervisor,
}

impl BackendKind {
    /// The name snapshots record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qemu(Accel::Tcg) => "qemu-tcg",
            Self::Qemu(Accel::Kvm) => "qemu-kvm",
            Self::CloudHypervisor => "cloud-hypervisor",
        }
    }

    /// The VMM's name, for messages (`qemu`, `cloud-hypervisor`).
    pub fn vmm(self) -> &'static str {
        match self {
            Self::Qemu(_) => "qemu",
            Self::CloudHypervisor => "cloud-hypervisor",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = RuntimeError;

    fn from_str(name: &str) -> Result<Self, RuntimeError> {
        match name {
            "qemu-tcg" => Ok(Self::Qemu(Accel::Tcg)),
            "qemu-kvm" => Ok(Self::Qemu(Accel::Kvm)),
            "cloud-hypervisor" => Ok(Self::CloudHypervisor),
            other => Err(RuntimeError::UnknownBackend(other.to_owned())),
        }
    }
}

impl serde::Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
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

impl DiskFormat {
    /// The format's name, as QEMU and `qemu-img` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network device.
    None,
    /// The VMM's own user-mode NAT (QEMU's slirp): no host setup, no root.
    User,
    /// A tap device the host set up (NAT and filtering by the host).
    Tap {
        /// The tap interface.
        name: String,
        /// The guest NIC's MAC address.
        mac: String,
        /// The network namespace the tap is in (`/run/netns/orgo-<id>`):
        /// the VMM process is started inside it. `None`: the VMM's own.
        netns: Option<PathBuf>,
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
    /// Which backend this is (for QEMU, with its accelerator).
    fn kind(&self) -> BackendKind;

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

    /// Starts the vCPUs again, abandoning a [`save`](Vm::save) or
    /// [`snapshot`](Vm::snapshot) still under way (one whose caller died).
    async fn resume(&self) -> Result<(), RuntimeError>;

    /// Writes a snapshot of the paused VM into `dir`; returns its files by
    /// role. Guest memory backed by a [`VmConfig::memory_file`] is handed
    /// over, not copied.
    async fn snapshot(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>, RuntimeError>;

    /// Writes the whole state of the paused VM, its memory included, to
    /// the file `state` in `dir` (owner-only), for a restore from the
    /// snapshot it was restored from with that state in place of the
    /// snapshot's (a suspend). Backends that cannot say so.
    async fn save(&self, dir: &Path) -> Result<PathBuf, RuntimeError> {
        let _ = dir;
        Err(RuntimeError::Unsupported {
            backend: "this VMM",
            what: "save a restored VM's memory and state (suspend)".into(),
        })
    }

    /// Stops the VM and its VMM process.
    async fn shutdown(&self) -> Result<(), RuntimeError>;

    /// Lets go of the VM, leaving it running: its VMM process outlives this
    /// handle and this process; [`Vmm::attach`] takes it back.
    fn detach(self: Box<Self>);
}

impl Network {
    /// The namespace the VMM must run in, if any.
    pub fn netns(&self) -> Option<&Path> {
        match self {
            Network::Tap {
                netns: Some(path), ..
            } => Some(path),
            _ => None,
        }
    }
}

/// A command running `binary` in network namespace `netns` when given
/// (through `nsenter --net=`; the process is `binary` itself once it runs).
pub(crate) fn command_in(netns: Option<&Path>, binary: &Path) -> tokio::process::Command {
    match netns {
        Some(netns) => {
            let mut command = tokio::process::Command::new("nsenter");
            let mut net = std::ffi::OsString::from("--net=");
            net.push(netns);
            command.arg(net).arg("--").arg(binary);
            command
        }
        None => tokio::process::Command::new(binary),
    }
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
