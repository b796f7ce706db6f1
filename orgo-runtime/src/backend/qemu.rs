//! The QEMU backend: `qemu-system-x86_64` driven over QMP.
//!
//! A golden snapshot is three files:
//!
//! - `memory`: guest RAM itself. A golden VM boots with its RAM in a file
//!   (`memory-backend-file`, `share=on`), so the RAM is already on disk when
//!   the VM pauses: nothing is copied.
//! - `state`: the device state, written by a migration to a file with the
//!   `x-ignore-shared` capability, which leaves the shared RAM out (a few
//!   hundred KB).
//! - `meta`: what a restore must match (memory size, vCPUs, accelerator,
//!   QEMU's version), as JSON.
//!
//! A restore starts QEMU with the same devices, maps the memory file
//! privately (`share=off`: copy-on-write, the file is never written, and
//! only the pages the guest touches are read) and loads the device state
//! with an incoming migration: the cost does not grow with the memory size.
//! A VM whose memory went into a snapshot cannot be resumed, since its
//! writes would land in the snapshot's file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use orgo_snapshot::{Version, VersionedFormat};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::Mutex;

use super::qmp::Qmp;
use crate::error::{RuntimeError, io, versioned};
use crate::process::process_alive;
use crate::vmm::version_output;
use crate::vmm::{
    Accel, AgentEndpoint, BackendKind, Capabilities, Disk, Network, RestoreConfig, Vm, VmConfig,
    VmInfo, VmState, Vmm,
};

/// The QEMU user-network settings the agent applies (`orgo.ip=`).
pub const USER_NET_IP: &str = "orgo.ip=10.0.2.15/24,10.0.2.2,10.0.2.3";

const BACKEND: &str = "qemu";
/// The file QEMU writes its process id to, in the VM's run directory.
const PID_FILE: &str = "qemu.pid";
/// The snapshot `meta` file's format version. 2: snapshots whose agent
/// reseeds the guest kernel's random generator when a clone gets its
/// identity (those of version 1 would hand every clone the same random
/// bytes for up to a minute). No `vmgenid` device: the guest kernel
/// (Debian's cloud flavour) has no driver for it, and its ACPI
/// notification cost a cold launch about 30 ms under TCG (p50 420 ms with
/// it, 389 ms without).
const META_VERSION: u32 = 2;
const MAX_META_BYTES: u64 = 64 * 1024;
/// The snapshot `meta` file: `orgo_qemu_snapshot` [`META_VERSION`].1
/// (1: the network it was taken with).
const META: VersionedFormat = VersionedFormat::new(
    "orgo_qemu_snapshot",
    Version::new(META_VERSION, 1),
    MAX_META_BYTES,
);
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most vCPUs a golden VM's clones can grow to (`-smp maxcpus`).
const MAX_CPUS: u32 = 16;
/// Memory a golden VM's clones can grow to (`-m maxmem`), at least: an
/// address range reserved for hot-added DIMMs, not memory.
const MAX_MEMORY_MIB: u64 = 256 * 1024;
/// DIMM slots for hot-added memory.
const MEMORY_SLOTS: u32 = 4;
/// Hot-added memory comes in whole Linux memory blocks.
const MEMORY_BLOCK_MIB: u64 = 128;
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// QEMU as a [`Vmm`].
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    accel: Accel,
    ephemeral_clones: bool,
}

impl Qemu {
    /// `qemu-system-x86_64` from `PATH`, with `accel`. KVM where it works;
    /// TCG otherwise (a host's nested, paravirtualized KVM can look usable
    /// and still fail guests, so the runtime decides, by a probe boot).
    pub fn new(accel: Accel) -> Self {
        Self::with_binary("qemu-system-x86_64", accel)
    }

    /// A given QEMU binary.
    pub fn with_binary(binary: impl Into<PathBuf>, accel: Accel) -> Self {
        Self {
            binary: binary.into(),
            accel,
            ephemeral_clones: false,
        }
    }

    /// Restored clones' disks skip the guest's flushes (`cache=unsafe`):
    /// for clones whose disk layer dies with them, so nothing is lost that
    /// would have outlived the VM anyway, and a guest's `fsync` costs
    /// nothing.
    #[must_use]
    pub fn with_ephemeral_clones(mut self) -> Self {
        self.ephemeral_clones = true;
        self
    }

    async fn spawn(
        &self,
        run_dir: &Path,
        mut args: Vec<OsString>,
        netns: Option<&Path>,
    ) -> Result<Child, RuntimeError> {
        tokio::fs::create_dir_all(run_dir)
            .await
            .map_err(io("create", run_dir))?;
        for file in ["qmp.sock", "agent.sock", PID_FILE] {
            let _ = tokio::fs::remove_file(run_dir.join(file)).await;
        }
        args.push("-pidfile".into());
        args.push(run_dir.join(PID_FILE).into());
        let stderr = std::fs::File::create(run_dir.join("qemu.log"))
            .map_err(io("create", run_dir.join("qemu.log")))?;
        // Its own process group: a Ctrl-C at the terminal that launched it
        // does not reach a VM meant to outlive the launch (`Vm::detach`).
        // Dropping a handle that was not detached kills it (`Drop`).
        crate::vmm::command_in(netns, &self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })
    }

    async fn machine(
        &self,
        id: &str,
        run_dir: &Path,
        args: Vec<OsString>,
        shape: (u32, u64),
        network: &Network,
    ) -> Result<(QemuVm, Qmp), RuntimeError> {
        // Killed if this future is dropped (cancelled) before the VM's
        // handle, whose drop kills it, exists.
        let mut child = KillOnDrop(Some(self.spawn(run_dir, args, network.netns()).await?));
        let qmp = match Qmp::connect(&run_dir.join("qmp.sock"), QMP_TIMEOUT).await {
            Ok(qmp) => qmp,
            Err(error) => {
                if let Some(mut child) = child.0.take() {
                    let _ = child.kill().await;
                }
                return Err(with_log(error, run_dir));
            }
        };
        let child = child.0.take().expect("taken only on the error path above");
        let vm = QemuVm {
            id: id.to_owned(),
            run_dir: run_dir.to_owned(),
            pid: child.id(),
            child: Mutex::new(Some(child)),
            qmp: Mutex::new(None),
            cpus: shape.0,
            memory_mib: shape.1,
            accel: self.accel,
            network: net_kind(network),
            memory_file: None,
            handed_over: AtomicBool::new(false),
            detached: AtomicBool::new(false),
        };
        Ok((vm, qmp))
    }
}

#[async_trait]
impl Vmm for Qemu {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu(self.accel)
    }

    async fn probe(&self) -> Result<Capabilities, RuntimeError> {
        let text = version_output(BACKEND, &self.binary).await?;
        let version = text
            .lines()
            .next()
            .and_then(|l| l.split("version ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("unknown")
            .to_owned();
        if self.accel == Accel::Kvm {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(io("open", "/dev/kvm"))?;
        }
        Ok(Capabilities {
            backend: self.kind(),
            version,
            accel: self.accel,
            lazy_restore: true,
        })
    }

    async fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        let args = boot_args(config, self.accel)?;
        let (mut vm, qmp) = self
            .machine(
                &config.id,
                &config.run_dir,
                args,
                (config.cpus, config.memory_mib),
                &config.network,
            )
            .await?;
        vm.memory_file = config.memory_file.clone();
        *vm.qmp.get_mut() = Some(qmp);
        Ok(Box::new(vm))
    }

    async fn restore(&self, config: &RestoreConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        let file = |role: &str| {
            config
                .snapshot
                .get(role)
                .cloned()
                .ok_or_else(|| RuntimeError::Vmm {
                    backend: BACKEND,
                    op: "restore".into(),
                    message: format!("the snapshot has no `{role}` file"),
                })
        };
        let (meta_path, memory, state) = (file("meta")?, file("memory")?, file("state")?);
        let meta = Meta::read(&meta_path)?;
        if meta.accel != self.accel.to_string() {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!(
                    "restore a snapshot taken under `{}` with `{}`",
                    meta.accel, self.accel
                ),
            });
        }
        // QEMU's user-mode network migrates a state of its own, which an
        // incoming VM with a tap has no place for (and the reverse).
        if meta.network != net_kind(&config.network) {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!(
                    "restore a snapshot taken with the `{}` network onto the `{}` network (it was built with the other network, by a runtime with{} root; remove its build from the store and build it again here)",
                    meta.network,
                    net_kind(&config.network),
                    if meta.network == "user" { "out" } else { "" },
                ),
            });
        }
        let grows = config.memory_mib > meta.memory_mib || config.cpus > meta.cpus;
        if grows && !meta.hotplug {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!(
                    "grow a VM restored from a snapshot without hot-plug ({} MiB, {} vCPUs)",
                    meta.memory_mib, meta.cpus
                ),
            });
        }
        if config.cpus > MAX_CPUS || config.memory_mib > meta.memory_mib.max(MAX_MEMORY_MIB) {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!(
                    "grow a restored VM beyond {MAX_CPUS} vCPUs or {} MiB",
                    meta.memory_mib.max(MAX_MEMORY_MIB)
                ),
            });
        }
        let mut args = restore_args(config, &meta, &memory, self.accel)?;
        if self.ephemeral_clones {
            skip_flushes(&mut args);
        }
        let extra_mib = (config.memory_mib.saturating_sub(meta.memory_mib))
            .div_ceil(MEMORY_BLOCK_MIB)
            * MEMORY_BLOCK_MIB;
        let (vm, mut qmp) = self
            .machine(
                &config.id,
                &config.run_dir,
                args,
                (config.cpus.max(meta.cpus), meta.memory_mib + extra_mib),
                &config.network,
            )
            .await?;
        let loaded = async {
            qmp.execute("migrate-set-capabilities", ignore_shared())
                .await?;
            qmp.execute(
                "migrate-incoming",
                json!({ "uri": format!("exec:cat {}", shell_quote(&state)?) }),
            )
            .await?;
            wait_migration(&mut qmp, "migrate-incoming").await?;
            qmp.execute("cont", json!({})).await?;
            grow(&mut qmp, extra_mib, config.cpus.saturating_sub(meta.cpus)).await
        }
        .await;
        if let Err(error) = loaded {
            return Err(with_log(error, &config.run_dir));
        }
        *vm.qmp.lock().await = Some(qmp);
        Ok(Box::new(vm))
    }

    async fn attach(&self, id: &str, run_dir: &Path) -> Result<Box<dyn Vm>, RuntimeError> {
        let pid_file = run_dir.join(PID_FILE);
        let pid = tokio::fs::read_to_string(&pid_file)
            .await
            .map_err(io("read", &pid_file))?;
        let pid: u32 = pid.trim().parse().map_err(|_| RuntimeError::Vmm {
            backend: BACKEND,
            op: "attach".into(),
            message: format!("`{}` holds no process id", pid_file.display()),
        })?;
        let mut qmp = Qmp::connect(&run_dir.join("qmp.sock"), Duration::from_millis(500)).await?;
        let memory = qmp.execute("query-memory-size-summary", json!({})).await?;
        let memory_mib = memory
            .get("base-memory")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            >> 20;
        let cpus = qmp.execute("query-cpus-fast", json!({})).await?;
        let cpus = cpus.as_array().map_or(0, Vec::len) as u32;
        Ok(Box::new(QemuVm {
            id: id.to_owned(),
            run_dir: run_dir.to_owned(),
            pid: Some(pid),
            child: Mutex::new(None),
            qmp: Mutex::new(Some(qmp)),
            cpus,
            memory_mib,
            accel: self.accel,
            // Not known here; an attached VM is not snapshotted (its memory
            // is not in a file of ours).
            network: "none",
            memory_file: None,
            handed_over: AtomicBool::new(false),
            detached: AtomicBool::new(false),
        }))
    }
}

/// A child process killed when dropped.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A running QEMU.
#[derive(Debug)]
struct QemuVm {
    id: String,
    run_dir: PathBuf,
    pid: Option<u32>,
    /// The process, if this handle started it (not for an attached VM).
    child: Mutex<Option<Child>>,
    qmp: Mutex<Option<Qmp>>,
    cpus: u32,
    memory_mib: u64,
    accel: Accel,
    /// Its network's kind ([`net_kind`]), which its snapshots record.
    network: &'static str,
    memory_file: Option<PathBuf>,
    /// Its memory file went into a snapshot: it must not run again.
    handed_over: AtomicBool,
    /// Left running on purpose: dropping the handle must not kill it.
    detached: AtomicBool,
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if self.detached.load(Ordering::SeqCst) {
            return;
        }
        // An attached VM has no child here: it stays up, as it was.
        if let Some(child) = self.child.get_mut().as_mut() {
            let _ = child.start_kill();
        }
    }
}

impl QemuVm {
    /// Migrates the paused VM into the file `state` (its owner's only),
    /// leaving out RAM that is shared with a file (`x-ignore-shared`, as
    /// restores set it): a golden VM's, whose file is the snapshot's.
    async fn migrate_to(&self, state: &Path) -> Result<(), RuntimeError> {
        self.execute("migrate-set-capabilities", ignore_shared())
            .await?;
        self.execute(
            "migrate",
            json!({ "uri": format!("exec:umask 077 && cat > {}", shell_quote(state)?) }),
        )
        .await?;
        let mut qmp = self.qmp.lock().await;
        let qmp = qmp.as_mut().expect("checked by the commands above");
        wait_migration(qmp, "migrate").await
    }

    async fn execute(&self, command: &str, arguments: Value) -> Result<Value, RuntimeError> {
        let mut qmp = self.qmp.lock().await;
        let qmp = qmp.as_mut().ok_or_else(|| RuntimeError::Vmm {
            backend: BACKEND,
            op: command.to_owned(),
            message: "the VM is shut down".into(),
        })?;
        qmp.execute(command, arguments).await
    }

    async fn status(&self) -> Result<String, RuntimeError> {
        let status = self.execute("query-status", json!({})).await?;
        Ok(status
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }
}

#[async_trait]
impl Vm for QemuVm {
    fn id(&self) -> &str {
        &self.id
    }

    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::Serial(self.run_dir.join("agent.sock"))
    }

    async fn info(&self) -> Result<VmInfo, RuntimeError> {
        // Not in the match: the guard would live through it, and status()
        // takes the same lock.
        let alive = self.qmp.lock().await.is_some();
        let state = match alive {
            false => VmState::Shutdown,
            true => match self.status().await?.as_str() {
                "running" => VmState::Running,
                "prelaunch" | "inmigrate" => VmState::Created,
                "shutdown" => VmState::Shutdown,
                _ => VmState::Paused,
            },
        };
        Ok(VmInfo {
            state,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            pid: self.pid,
        })
    }

    async fn pause(&self) -> Result<(), RuntimeError> {
        self.execute("stop", json!({})).await.map(drop)
    }

    async fn resume(&self) -> Result<(), RuntimeError> {
        if self.handed_over.load(Ordering::SeqCst) {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "cont".into(),
                message: "its memory file belongs to a snapshot now; restore a clone instead"
                    .into(),
            });
        }
        // A save still under way (its process was killed half-way) is
        // abandoned: the VM runs instead.
        let migration = self.execute("query-migrate", json!({})).await?;
        let status = migration.get("status").and_then(Value::as_str);
        if !matches!(
            status,
            None | Some("none" | "completed" | "failed" | "cancelled")
        ) {
            self.execute("migrate_cancel", json!({})).await?;
            let mut qmp = self.qmp.lock().await;
            let qmp = qmp.as_mut().expect("checked by the commands above");
            // Cancelled (or, at its very end, completed): either way it is over.
            let _ = wait_migration(qmp, "migrate").await;
        }
        self.execute("cont", json!({})).await.map(drop)
    }

    async fn snapshot(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>, RuntimeError> {
        let status = self.status().await?;
        if status == "running" {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "snapshot".into(),
                message: "the VM is running; pause it first".into(),
            });
        }
        let memory = self
            .memory_file
            .clone()
            .ok_or_else(|| RuntimeError::Unsupported {
                backend: BACKEND,
                what: "snapshot a VM booted without a memory file".into(),
            })?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("create", dir))?;
        let state = dir.join("state");
        self.migrate_to(&state).await?;
        self.handed_over.store(true, Ordering::SeqCst);
        let meta = Meta {
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            accel: self.accel.to_string(),
            hotplug: true,
            network: self.network.to_owned(),
        };
        let meta_path = dir.join("meta.json");
        tokio::fs::write(
            &meta_path,
            serde_json::to_vec(&META.to_value(&meta)).expect("meta serializes"),
        )
        .await
        .map_err(io("write", &meta_path))?;
        Ok(BTreeMap::from([
            ("memory".to_owned(), memory),
            ("state".to_owned(), state),
            ("meta".to_owned(), meta_path),
        ]))
    }

    async fn save(&self, dir: &Path) -> Result<PathBuf, RuntimeError> {
        if self.status().await? == "running" {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "save".into(),
                message: "the VM is running; pause it first".into(),
            });
        }
        if self.memory_file.is_some() {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: "save a VM whose memory is a snapshot's file (a golden VM)".into(),
            });
        }
        create_private_dir(dir)?;
        // The memory is mapped privately (`share=off`), so the migration
        // carries all of it.
        let state = dir.join("state");
        self.migrate_to(&state).await?;
        Ok(state)
    }

    async fn shutdown(&self) -> Result<(), RuntimeError> {
        if let Some(mut qmp) = self.qmp.lock().await.take() {
            let _ = qmp.execute("quit", json!({})).await; // QEMU may close first
        }
        let mut child = self.child.lock().await;
        match child.as_mut() {
            Some(child) => {
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            // Attached: not our child, so wait for its /proc entry to go.
            None => {
                if let Some(pid) = self.pid {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while process_alive(pid) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if process_alive(pid) {
                        return Err(RuntimeError::Timeout {
                            what: format!("QEMU (pid {pid}) to quit"),
                            seconds: 10,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn detach(self: Box<Self>) {
        self.detached.store(true, Ordering::SeqCst);
    }
}

/// What a restore must match, written beside the device state (as a
/// [`META`] file).
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    memory_mib: u64,
    cpus: u32,
    accel: String,
    /// Booted with room to hot-add vCPUs and memory (`maxcpus`, `maxmem`).
    #[serde(default)]
    hotplug: bool,
    /// The network it was booted with (see [`net_kind`]; 2.0 metas were
    /// all taken with the user-mode network or none).
    #[serde(default = "user_net")]
    network: String,
}

fn user_net() -> String {
    "user".to_owned()
}

/// A network's kind as a snapshot records it: `user`, `tap` or `none`.
/// A snapshot restores only onto a network of its own kind.
fn net_kind(network: &Network) -> &'static str {
    match network {
        Network::None => "none",
        Network::User => "user",
        Network::Tap { .. } => "tap",
    }
}

impl Meta {
    /// Reads `meta.json` (at most [`MAX_META_BYTES`], a small blocking read).
    fn read(path: &Path) -> Result<Self, RuntimeError> {
        META.read_file(path)
            .map_err(versioned("read", "QEMU snapshot metadata"))
    }
}

/// Hot-adds `extra_mib` of memory (one DIMM; the guest onlines it, booted
/// with `memhp_default_state=online`) and `extra_cpus` vCPUs (present in
/// the guest; something there must online them, as a udev rule would).
async fn grow(qmp: &mut Qmp, extra_mib: u64, extra_cpus: u32) -> Result<(), RuntimeError> {
    if extra_mib > 0 {
        qmp.execute(
            "object-add",
            json!({ "qom-type": "memory-backend-ram", "id": "hotmem0", "size": extra_mib << 20 }),
        )
        .await?;
        qmp.execute(
            "device_add",
            json!({ "driver": "pc-dimm", "id": "hotdimm0", "memdev": "hotmem0" }),
        )
        .await?;
    }
    if extra_cpus > 0 {
        let slots = qmp.execute("query-hotpluggable-cpus", json!({})).await?;
        let free: Vec<&Value> = slots
            .as_array()
            .map(|a| a.iter().filter(|s| s.get("qom-path").is_none()).collect())
            .unwrap_or_default();
        if free.len() < extra_cpus as usize {
            return Err(RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!("hot-add {extra_cpus} vCPUs ({} slots free)", free.len()),
            });
        }
        // The lowest ids first: the guest numbers CPUs in that order.
        let mut free = free;
        free.reverse();
        for (i, slot) in free.into_iter().take(extra_cpus as usize).enumerate() {
            let mut device = slot.get("props").cloned().unwrap_or_else(|| json!({}));
            device["driver"] = slot.get("type").cloned().unwrap_or(Value::Null);
            device["id"] = json!(format!("hotcpu{i}"));
            qmp.execute("device_add", device).await?;
        }
    }
    Ok(())
}

fn ignore_shared() -> Value {
    json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })
}

async fn wait_migration(qmp: &mut Qmp, op: &str) -> Result<(), RuntimeError> {
    let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let info = qmp.execute("query-migrate", json!({})).await?;
        match info.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some(status @ ("failed" | "cancelled")) => {
                let why = info
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                return Err(RuntimeError::Vmm {
                    backend: BACKEND,
                    op: op.to_owned(),
                    message: format!("migration {status}: {why}"),
                });
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(RuntimeError::Timeout {
                    what: format!("`{op}` to complete"),
                    seconds: MIGRATION_TIMEOUT.as_secs(),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// The arguments shared by a boot and a restore: the machine, its devices
/// and the host sockets. A restore must present exactly the devices the
/// snapshot was taken with.
/// vCPUs and memory at start, and whether there is room to hot-add more.
struct Shape {
    cpus: u32,
    memory_mib: u64,
    hotplug: bool,
}

fn machine_args(
    accel: Accel,
    Shape {
        cpus,
        memory_mib,
        hotplug,
    }: Shape,
    memory: Option<(&Path, bool)>,
    disk: &Disk,
    network: &Network,
    run_dir: &Path,
) -> Result<Vec<OsString>, RuntimeError> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    let mut machine = format!("pc,accel={accel}");
    if memory.is_some() {
        machine.push_str(",memory-backend=mem0");
    }
    push(&["-machine", &machine]);
    if hotplug {
        push(&[
            "-m",
            &format!(
                "{memory_mib}M,slots={MEMORY_SLOTS},maxmem={}M",
                memory_mib.max(MAX_MEMORY_MIB)
            ),
            "-smp",
            &format!("{cpus},maxcpus={}", cpus.max(MAX_CPUS)),
        ]);
    } else {
        push(&["-m", &format!("{memory_mib}M"), "-smp", &cpus.to_string()]);
    }
    if let Some((path, shared)) = memory {
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=mem0,size={memory_mib}M,mem-path={},share={}",
                option_value(path)?,
                if shared { "on" } else { "off" }
            ),
        ]);
    }
    let format = disk.format.as_str();
    push(&[
        "-drive",
        &format!(
            "file={},format={format},if=virtio,id=disk0,readonly={}",
            option_value(&disk.path)?,
            if disk.read_only { "on" } else { "off" }
        ),
    ]);
    push(&[
        "-device",
        "virtio-serial-pci",
        "-chardev",
        &format!(
            "socket,path={},server=on,wait=off,id=agent",
            option_value(&run_dir.join("agent.sock"))?
        ),
        "-device",
        &format!(
            "virtserialport,chardev=agent,name={}",
            orgo_agent_protocol::SERIAL_PORT_NAME
        ),
        "-device",
        "virtio-rng-pci",
        "-serial",
        &format!("file:{}", option_value(&run_dir.join("console.log"))?),
        "-qmp",
        &format!(
            "unix:{},server=on,wait=off",
            option_value(&run_dir.join("qmp.sock"))?
        ),
    ]);
    match network {
        Network::None => {}
        Network::User => push(&[
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]),
        Network::Tap { name, mac, .. } => push(&[
            "-netdev",
            &format!("tap,id=net0,ifname={name},script=no,downscript=no"),
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={mac}"),
        ]),
    }
    Ok(args)
}

/// The command line of a boot (pure).
fn boot_args(config: &VmConfig, accel: Accel) -> Result<Vec<OsString>, RuntimeError> {
    // A golden VM (RAM in a file, to be snapshotted) leaves room for its
    // clones to grow.
    let mut args = machine_args(
        accel,
        Shape {
            cpus: config.cpus,
            memory_mib: config.memory_mib,
            hotplug: config.memory_file.is_some(),
        },
        config.memory_file.as_deref().map(|p| (p, true)),
        &config.disk,
        &config.network,
        &config.run_dir,
    )?;
    args.push("-kernel".into());
    args.push(config.kernel.clone().into());
    if let Some(initrd) = &config.initrd {
        args.push("-initrd".into());
        args.push(initrd.clone().into());
    }
    args.push("-append".into());
    args.push(config.cmdline.clone().into());
    Ok(args)
}

/// The command line of a restore (pure): the snapshot's machine, its
/// memory file mapped privately, and an incoming migration to come.
fn restore_args(
    config: &RestoreConfig,
    meta: &Meta,
    memory: &Path,
    accel: Accel,
) -> Result<Vec<OsString>, RuntimeError> {
    let mut args = machine_args(
        accel,
        Shape {
            cpus: meta.cpus,
            memory_mib: meta.memory_mib,
            hotplug: meta.hotplug,
        },
        Some((memory, false)),
        &config.disk,
        &config.network,
        &config.run_dir,
    )?;
    args.push("-incoming".into());
    args.push("defer".into());
    Ok(args)
}

/// Adds `cache=unsafe` to the root disk's `-drive`.
fn skip_flushes(args: &mut [OsString]) {
    for arg in args.iter_mut() {
        if arg.to_str().is_some_and(|a| a.contains(",id=disk0,")) {
            arg.push(",cache=unsafe");
        }
    }
}

/// Creates `dir` readable by its owner only (a suspended VM's memory holds
/// its secrets).
fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io("create", dir)(e)),
        _ => {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("restrict", dir))
        }
    }
}

/// A path as a QEMU option value: a `,` would start a new option.
fn option_value(path: &Path) -> Result<String, RuntimeError> {
    let text = path.to_str().ok_or_else(|| unsupported_path(path))?;
    if text.contains(',') {
        return Err(unsupported_path(path));
    }
    Ok(text.to_owned())
}

/// A path quoted for the `sh -c` of QEMU's `exec:` migration URI.
fn shell_quote(path: &Path) -> Result<String, RuntimeError> {
    let text = path.to_str().ok_or_else(|| unsupported_path(path))?;
    if text.contains('\'') {
        return Err(unsupported_path(path));
    }
    Ok(format!("'{text}'"))
}

fn unsupported_path(path: &Path) -> RuntimeError {
    RuntimeError::Unsupported {
        backend: BACKEND,
        what: format!(
            "use the path `{}` (non-UTF-8, or holding `,` or `'`)",
            path.display()
        ),
    }
}

/// Adds QEMU's own last words (its stderr log) to an error.
fn with_log(error: RuntimeError, run_dir: &Path) -> RuntimeError {
    let log = std::fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default();
    let log = log.trim();
    if log.is_empty() {
        return error;
    }
    RuntimeError::Vmm {
        backend: BACKEND,
        op: "start".into(),
        message: format!("{error}; QEMU said: {}", log.lines().last().unwrap_or(log)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::DiskFormat;

    fn config() -> VmConfig {
        VmConfig {
            id: "vm1".into(),
            cpus: 2,
            memory_mib: 512,
            kernel: "/img/vmlinuz".into(),
            initrd: Some("/img/initrd".into()),
            cmdline: "console=ttyS0".into(),
            disk: Disk {
                path: "/run/vm1/disk.qcow2".into(),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            memory_file: Some("/run/vm1/memory".into()),
            network: Network::User,
            run_dir: "/run/vm1".into(),
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_golden_boot_shares_its_memory_file() {
        let args = text(&boot_args(&config(), Accel::Tcg).expect("valid"));
        assert!(
            args.contains("-machine pc,accel=tcg,memory-backend=mem0"),
            "{args}"
        );
        assert!(
            args.contains(
                "memory-backend-file,id=mem0,size=512M,mem-path=/run/vm1/memory,share=on"
            ),
            "{args}"
        );
        assert!(
            args.contains("file=/run/vm1/disk.qcow2,format=qcow2,if=virtio"),
            "{args}"
        );
        assert!(args.contains("-kernel /img/vmlinuz -initrd /img/initrd -append console=ttyS0"));
        assert!(args.contains("socket,path=/run/vm1/agent.sock,server=on,wait=off,id=agent"));
        assert!(args.contains("-netdev user,id=net0"));
    }

    #[test]
    fn a_restore_maps_the_memory_privately_and_waits_for_its_state() {
        let restore = RestoreConfig {
            id: "vm2".into(),
            snapshot: BTreeMap::new(),
            disk: Disk {
                path: "/run/vm2/disk.qcow2".into(),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            cpus: 2,
            memory_mib: 512,
            network: Network::None,
            run_dir: "/run/vm2".into(),
        };
        let meta = Meta {
            memory_mib: 512,
            cpus: 2,
            accel: "tcg".into(),
            hotplug: true,
            network: "none".into(),
        };
        let args = text(
            &restore_args(&restore, &meta, Path::new("/store/mem"), Accel::Tcg).expect("valid"),
        );
        assert!(args.contains("mem-path=/store/mem,share=off"), "{args}");
        assert!(!args.contains("cache=unsafe"), "{args}");
        let mut ephemeral =
            restore_args(&restore, &meta, Path::new("/store/mem"), Accel::Tcg).expect("valid");
        skip_flushes(&mut ephemeral);
        let ephemeral = text(&ephemeral);
        assert!(
            ephemeral.contains("id=disk0,readonly=off,cache=unsafe"),
            "{ephemeral}"
        );
        assert!(args.ends_with("-incoming defer"), "{args}");
        assert!(
            !args.contains("-kernel"),
            "the kernel is in the restored memory"
        );
        assert!(!args.contains("-netdev"));
    }

    #[test]
    fn paths_that_would_break_the_command_line_are_refused() {
        let mut bad = config();
        bad.disk.path = "/run/a,b/disk".into();
        assert!(matches!(
            boot_args(&bad, Accel::Tcg),
            Err(RuntimeError::Unsupported { .. })
        ));
        assert!(shell_quote(Path::new("/tmp/it's")).is_err());
        assert_eq!(shell_quote(Path::new("/tmp/x")).expect("plain"), "'/tmp/x'");
    }

    /// `meta.json` is read by the versioned rule: this version reads and
    /// writes back the same bytes; a snapshot of version 1 (an agent that
    /// does not reseed) is refused as older, one of version 3 as newer.
    #[test]
    fn snapshot_meta_is_read_by_the_version_rule() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().join("meta.json");
        let current = r#"{"orgo_qemu_snapshot":"2.1","memory_mib":512,"cpus":2,"accel":"kvm","hotplug":true,"network":"tap"}"#;
        std::fs::write(&path, current).expect("written");
        let meta = Meta::read(&path).expect("reads");
        assert_eq!((meta.memory_mib, meta.cpus, meta.hotplug), (512, 2, true));
        assert_eq!(meta.network, "tap");
        let written = serde_json::to_string(&META.to_value(&meta)).expect("JSON");
        assert_eq!(written, current, "written as read");
        // A 2.0 meta (before the network was recorded): the user-mode one.
        let older =
            r#"{"orgo_qemu_snapshot":2,"memory_mib":512,"cpus":2,"accel":"kvm","hotplug":true}"#;
        std::fs::write(&path, older).expect("written");
        assert_eq!(Meta::read(&path).expect("reads").network, "user");

        for (version, said) in [
            (1, "written by an older orgo"),
            (3, "written by a newer orgo"),
        ] {
            let file = format!(r#"{{"orgo_qemu_snapshot":{version},"memory":"512M"}}"#);
            std::fs::write(&path, file).expect("written");
            match Meta::read(&path) {
                Err(RuntimeError::InvalidFile { source, .. }) => {
                    assert!(source.to_string().contains(said), "{source}")
                }
                other => panic!("expected an invalid file, got {other:?}"),
            }
        }
        let missing = Meta::read(&dir.path().join("missing.json"));
        assert!(
            matches!(missing, Err(RuntimeError::Io { .. })),
            "{missing:?}"
        );
    }
}
