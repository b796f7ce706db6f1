//! The [`Vmm`] and [`Vm`] implementations: files, processes and API calls
//! around the pure conversions of [`super::convert`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloud_hypervisor_client::apis::DefaultApi;
use cloud_hypervisor_client::models;
use orgo_snapshot::{Version, VersionedFormat};
use serde::{Deserialize, Serialize};

use super::convert::{self, CloneSpec, RunPaths};
use super::pool::VmmPool;
use super::process::{VmmProcess, api_error};
use super::{BACKEND, roles};
use crate::error::{RuntimeError, io, versioned};
use crate::vmm::{
    Accel, AgentEndpoint, BackendKind, Capabilities, RestoreConfig, Vm, VmConfig, VmInfo, VmState,
    Vmm, version_output,
};

/// The Cloud Hypervisor backend: one `cloud-hypervisor --api-socket`
/// process per VM, driven over its REST API.
#[derive(Debug, Clone)]
pub struct CloudHypervisor {
    binary: PathBuf,
    kvm: PathBuf,
    pool: Option<Arc<VmmPool>>,
}

impl CloudHypervisor {
    /// The backend running `binary` (`cloud-hypervisor`, or a path), one new
    /// process per VM.
    pub fn new(binary: impl Into<PathBuf>) -> CloudHypervisor {
        CloudHypervisor {
            binary: binary.into(),
            kvm: PathBuf::from("/dev/kvm"),
            pool: None,
        }
    }

    /// Takes VMM processes from `pool` (its binary replaces this one's).
    #[must_use]
    pub fn with_pool(mut self, pool: Arc<VmmPool>) -> CloudHypervisor {
        self.binary = pool.binary().to_owned();
        self.pool = Some(pool);
        self
    }

    /// The KVM device [`Vmm::probe`] checks (`/dev/kvm`; tests against the
    /// simulator point it elsewhere).
    #[must_use]
    pub fn with_kvm_device(mut self, path: impl Into<PathBuf>) -> CloudHypervisor {
        self.kvm = path.into();
        self
    }

    /// A VMM process for a VM: one from the pool, unless the VM's network
    /// is in a namespace of its own, which its VMM must be started in.
    async fn process(
        &self,
        paths: &RunPaths,
        netns: Option<&Path>,
    ) -> Result<VmmProcess, RuntimeError> {
        match (&self.pool, netns) {
            (Some(pool), None) => pool.take().await,
            _ => VmmProcess::spawn(&self.binary, &paths.api, &paths.log, netns).await,
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("cannot remove", path)(e)),
        _ => Ok(()),
    }
}

/// How long [`Vmm::attach`] waits for each answer of the VMM.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The format of [`VmmRecord`] files: `orgo_vmm_record` 1.0, at most 64 KiB.
/// Records written before it had a version read as 1.0, so a VM started by
/// an earlier orgo can still be attached.
const RECORD: VersionedFormat =
    VersionedFormat::new("orgo_vmm_record", Version::new(1, 0), 64 << 10)
        .unversioned_as(Version::new(1, 0));

/// What [`Vmm::attach`] needs to find a VM's VMM again, kept in the VM's
/// run directory ([`RunPaths::record`]) while the VM runs, as a [`RECORD`]
/// file.
#[derive(Debug, Serialize, Deserialize)]
struct VmmRecord {
    /// The VM's id.
    id: String,
    /// The VMM process.
    pid: u32,
    /// Its API socket (in the run directory, or a pool's directory).
    api_socket: PathBuf,
    /// The VM's memory file, which its snapshots hand over.
    memory_file: Option<PathBuf>,
}

impl VmmRecord {
    /// Writes the record of VM `id` run by `process` (through a temporary
    /// file, so a reader never sees half of it).
    fn write(
        path: &Path,
        id: &str,
        process: &VmmProcess,
        memory_file: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let socket = process.socket();
        let record = VmmRecord {
            id: id.to_owned(),
            pid: process.pid(),
            api_socket: std::path::absolute(socket).map_err(io("cannot resolve", socket))?,
            memory_file: memory_file.map(Path::to_owned),
        };
        let json =
            serde_json::to_vec_pretty(&RECORD.to_value(&record)).expect("a record serializes");
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, json).map_err(io("cannot write the VMM record", &partial))?;
        std::fs::rename(&partial, path).map_err(io("cannot write the VMM record", path))
    }

    fn read(path: &Path) -> Result<VmmRecord, RuntimeError> {
        RECORD.read_file(path).map_err(versioned(
            "cannot read the VMM record",
            "Cloud Hypervisor VMM record",
        ))
    }
}

/// Creates (or empties) the memory file and sizes it: the VMM maps it, it
/// does not create it.
fn prepare_memory_file(path: &Path, mib: u64) -> Result<(), RuntimeError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io("cannot create the memory file", path))?;
    file.set_len(mib.saturating_mul(1 << 20))
        .map_err(io("cannot size the memory file", path))
}

/// Writes the clone's restore directory: its own `config.json` beside
/// links to the snapshot's other files, which stay untouched.
fn write_restore_dir(
    dir: &Path,
    config: &serde_json::Value,
    snapshot: &BTreeMap<String, PathBuf>,
) -> Result<(), RuntimeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("cannot empty the restore directory", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io("cannot create the restore directory", dir))?;
    let json = serde_json::to_vec(config).expect("a JSON value serializes");
    let path = dir.join(super::CONFIG_FILE);
    std::fs::write(&path, json).map_err(io("cannot write the clone's config", &path))?;
    for (role, name) in [
        (roles::STATE, super::STATE_FILE),
        (roles::MEMORY_RANGES, super::MEMORY_RANGES_FILE),
    ] {
        let Some(target) = snapshot.get(role) else {
            if role == roles::STATE {
                return Err(RuntimeError::Vmm {
                    backend: BACKEND,
                    op: "vm.restore".to_owned(),
                    message: format!("the snapshot has no `{role}` file"),
                });
            }
            continue;
        };
        let target = std::path::absolute(target).map_err(io("cannot resolve", target))?;
        let link = dir.join(name);
        std::os::unix::fs::symlink(&target, &link)
            .map_err(io("cannot link the snapshot file", &link))?;
    }
    Ok(())
}

#[async_trait]
impl Vmm for CloudHypervisor {
    fn kind(&self) -> BackendKind {
        BackendKind::CloudHypervisor
    }

    async fn probe(&self) -> Result<Capabilities, RuntimeError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.kvm)
            .map_err(|_| RuntimeError::Unsupported {
                backend: BACKEND,
                what: format!("run without a usable `{}`", self.kvm.display()),
            })?;
        let text = version_output(BACKEND, &self.binary).await?;
        let version = text.split_whitespace().last().unwrap_or_default();
        Ok(Capabilities {
            backend: BackendKind::CloudHypervisor,
            version: version.trim_start_matches('v').to_owned(),
            accel: Accel::Kvm,
            lazy_restore: true,
        })
    }

    async fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        let body = models::VmConfig::try_from(config)?;
        let paths = RunPaths::new(&config.run_dir);
        std::fs::create_dir_all(&config.run_dir)
            .map_err(io("cannot create the run directory", &config.run_dir))?;
        remove_if_present(&paths.vsock)?;
        remove_if_present(&paths.record)?;
        if let Some(file) = &config.memory_file {
            prepare_memory_file(file, config.memory_mib)?;
        }
        let process = self.process(&paths, config.network.netns()).await?;
        let client = process.client();
        client
            .create_vm(body)
            .await
            .map_err(|e| api_error("vm.create", e))?;
        client
            .boot_vm()
            .await
            .map_err(|e| api_error("vm.boot", e))?;
        VmmRecord::write(
            &paths.record,
            &config.id,
            &process,
            config.memory_file.as_deref(),
        )?;
        Ok(Box::new(ChVm {
            id: config.id.clone(),
            vsock: paths.vsock,
            record: paths.record,
            memory_file: config.memory_file.clone(),
            process: tokio::sync::Mutex::new(process),
            last: Mutex::new((config.cpus, config.memory_mib)),
            shut_down: Mutex::new(false),
        }))
    }

    async fn restore(&self, config: &RestoreConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        let golden_path = config
            .snapshot
            .get(roles::CONFIG)
            .ok_or_else(|| RuntimeError::Vmm {
                backend: BACKEND,
                op: "vm.restore".to_owned(),
                message: format!("the snapshot has no `{}` file", roles::CONFIG),
            })?;
        let bytes = std::fs::read(golden_path)
            .map_err(io("cannot read the snapshot's config", golden_path))?;
        let golden: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Vmm {
                backend: BACKEND,
                op: "vm.restore".to_owned(),
                message: format!("the snapshot's `config.json` is not JSON: {e}"),
            })?;
        let paths = RunPaths::new(&config.run_dir);
        let memory_file = config
            .snapshot
            .get(roles::MEMORY_FILE)
            .map(|p| std::path::absolute(p).map_err(io("cannot resolve", p)))
            .transpose()?;
        let plan = convert::clone_config(
            &golden,
            &CloneSpec {
                disk: &config.disk,
                network: &config.network,
                paths: &paths,
                memory_file: memory_file.as_deref(),
            },
        )?;
        let growth = convert::growth(&plan, config.cpus, config.memory_mib)?;
        let request = convert::restore_request(&plan, &paths.restore)?;

        std::fs::create_dir_all(&config.run_dir)
            .map_err(io("cannot create the run directory", &config.run_dir))?;
        remove_if_present(&paths.vsock)?;
        remove_if_present(&paths.record)?;
        write_restore_dir(&paths.restore, &plan.config, &config.snapshot)?;

        let process = self.process(&paths, config.network.netns()).await?;
        let client = process.client();
        client
            .vm_restore_put(request)
            .await
            .map_err(|e| api_error("vm.restore", e))?;
        if let Some(resize) = growth.vcpus {
            client
                .vm_resize_put(resize)
                .await
                .map_err(|e| api_error("vm.resize", e))?;
        }
        if let Some(resize) = growth.memory {
            client
                .vm_resize_zone_put(resize)
                .await
                .map_err(|e| api_error("vm.resize-zone", e))?;
        }
        VmmRecord::write(&paths.record, &config.id, &process, memory_file.as_deref())?;
        Ok(Box::new(ChVm {
            id: config.id.clone(),
            vsock: paths.vsock,
            record: paths.record,
            memory_file,
            process: tokio::sync::Mutex::new(process),
            last: Mutex::new((growth.cpus, growth.memory_mib)),
            shut_down: Mutex::new(false),
        }))
    }

    async fn attach(&self, id: &str, run_dir: &Path) -> Result<Box<dyn Vm>, RuntimeError> {
        let paths = RunPaths::new(run_dir);
        let record = VmmRecord::read(&paths.record)?;
        if record.id != id {
            return Err(RuntimeError::Vmm {
                backend: BACKEND,
                op: "attach".to_owned(),
                message: format!(
                    "`{}` records the VM `{}`, not `{id}`",
                    paths.record.display(),
                    record.id
                ),
            });
        }
        let process = VmmProcess::attach(record.pid, &record.api_socket, ATTACH_TIMEOUT).await?;
        let info = tokio::time::timeout(ATTACH_TIMEOUT, process.client().vm_info_get())
            .await
            .map_err(|_| RuntimeError::Timeout {
                what: format!("`vm.info` on `{}`", record.api_socket.display()),
                seconds: ATTACH_TIMEOUT.as_secs(),
            })?
            .map_err(|e| api_error("vm.info", e))?;
        let info = convert::vm_info(&info, Some(process.pid()));
        Ok(Box::new(ChVm {
            id: id.to_owned(),
            vsock: paths.vsock,
            record: paths.record,
            memory_file: record.memory_file,
            process: tokio::sync::Mutex::new(process),
            last: Mutex::new((info.cpus, info.memory_mib)),
            shut_down: Mutex::new(false),
        }))
    }
}

/// A VM in its own Cloud Hypervisor process. Dropping the handle that
/// booted or restored it kills the process, unless it was
/// [detached](Vm::detach); dropping an [attached](Vmm::attach) one leaves
/// it running.
#[derive(Debug)]
pub struct ChVm {
    id: String,
    vsock: PathBuf,
    /// The run directory's [`VmmRecord`], removed at shutdown.
    record: PathBuf,
    memory_file: Option<PathBuf>,
    process: tokio::sync::Mutex<VmmProcess>,
    /// The last known vCPUs and memory (MiB), reported after shutdown.
    last: Mutex<(u32, u64)>,
    shut_down: Mutex<bool>,
}

impl ChVm {
    fn is_shut_down(&self) -> bool {
        *self
            .shut_down
            .lock()
            .expect("the flag's lock is never poisoned")
    }

    fn gone(&self, op: &str) -> RuntimeError {
        RuntimeError::Vmm {
            backend: BACKEND,
            op: op.to_owned(),
            message: format!("the VM `{}` is shut down", self.id),
        }
    }
}

#[async_trait]
impl Vm for ChVm {
    fn id(&self) -> &str {
        &self.id
    }

    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::HybridVsock {
            path: self.vsock.clone(),
            port: orgo_agent_protocol::VSOCK_PORT,
        }
    }

    async fn info(&self) -> Result<VmInfo, RuntimeError> {
        let process = self.process.lock().await;
        if self.is_shut_down() {
            let (cpus, memory_mib) = *self
                .last
                .lock()
                .expect("the shape's lock is never poisoned");
            return Ok(VmInfo {
                state: VmState::Shutdown,
                cpus,
                memory_mib,
                pid: None,
            });
        }
        let info = process
            .client()
            .vm_info_get()
            .await
            .map_err(|e| api_error("vm.info", e))?;
        let info = convert::vm_info(&info, Some(process.pid()));
        *self
            .last
            .lock()
            .expect("the shape's lock is never poisoned") = (info.cpus, info.memory_mib);
        Ok(info)
    }

    async fn pause(&self) -> Result<(), RuntimeError> {
        let process = self.process.lock().await;
        if self.is_shut_down() {
            return Err(self.gone("vm.pause"));
        }
        process
            .client()
            .pause_vm()
            .await
            .map_err(|e| api_error("vm.pause", e))
    }

    async fn resume(&self) -> Result<(), RuntimeError> {
        let process = self.process.lock().await;
        if self.is_shut_down() {
            return Err(self.gone("vm.resume"));
        }
        process
            .client()
            .resume_vm()
            .await
            .map_err(|e| api_error("vm.resume", e))
    }

    async fn snapshot(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>, RuntimeError> {
        let process = self.process.lock().await;
        if self.is_shut_down() {
            return Err(self.gone("vm.snapshot"));
        }
        std::fs::create_dir_all(dir).map_err(io("cannot create the snapshot directory", dir))?;
        let dir = std::path::absolute(dir).map_err(io("cannot resolve", dir))?;
        let url = dir.to_str().ok_or_else(|| RuntimeError::Unsupported {
            backend: BACKEND,
            what: format!("snapshot into the non-UTF-8 path `{}`", dir.display()),
        })?;
        let mut request = models::VmSnapshotConfig::new();
        request.destination_url = Some(format!("file://{url}"));
        process
            .client()
            .vm_snapshot_put(request)
            .await
            .map_err(|e| api_error("vm.snapshot", e))?;
        let mut files = BTreeMap::new();
        for (role, name) in [
            (roles::CONFIG, super::CONFIG_FILE),
            (roles::STATE, super::STATE_FILE),
            (roles::MEMORY_RANGES, super::MEMORY_RANGES_FILE),
        ] {
            let path = dir.join(name);
            if path.exists() {
                files.insert(role.to_owned(), path);
            }
        }
        if let Some(file) = &self.memory_file {
            files.insert(roles::MEMORY_FILE.to_owned(), file.clone());
        }
        Ok(files)
    }

    async fn shutdown(&self) -> Result<(), RuntimeError> {
        let mut process = self.process.lock().await;
        if self.is_shut_down() {
            return Ok(());
        }
        // The guest may already be down (vm.shutdown then answers an
        // error); vmm.shutdown stops the VMM either way.
        let _ = process.client().shutdown_vm().await;
        *self
            .shut_down
            .lock()
            .expect("the flag's lock is never poisoned") = true;
        let stopped = process.shutdown().await;
        // An attached VMM that did not exit in time may still run: its
        // record stays for another attach, and another shutdown tries again.
        if matches!(stopped, Err(RuntimeError::Timeout { .. })) {
            *self
                .shut_down
                .lock()
                .expect("the flag's lock is never poisoned") = false;
            return stopped;
        }
        let removed = remove_if_present(&self.record);
        stopped.and(removed)
    }

    fn detach(self: Box<Self>) {
        // The record in the run directory is what `attach` reads back.
        self.process.into_inner().detach();
    }
}
