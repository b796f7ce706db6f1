//! Pure conversions between the runtime's vocabulary and Cloud Hypervisor's
//! REST API (the upstream OpenAPI spec's `VmConfig`, `RestoreConfig`,
//! `VmInfo`, ...), and the rewriting of a snapshot's `config.json` for a
//! clone. No I/O here: the socket and process code is in the backend.

use std::path::{Path, PathBuf};

use cloud_hypervisor_client::models;
use serde_json::Value;

use super::BACKEND;
use crate::error::RuntimeError;
use crate::vmm::{Disk, DiskFormat, Network, VmConfig, VmInfo, VmState};

/// The id of the one memory zone every VM gets.
pub(crate) const MEMORY_ZONE_ID: &str = "mem0";

/// The guest's vsock context id (hybrid vsock: only the guest sees it).
pub(crate) const GUEST_CID: i64 = 3;

/// vCPUs a VM can grow to after a restore (`cpus.max_vcpus`).
pub(crate) const MAX_VCPUS: u32 = 16;

/// Memory a VM can grow by after a restore, in MiB: the zone's virtio-mem
/// `hotplug_size` (address space reserved with `MAP_NORESERVE`, not RAM).
pub(crate) const MEMORY_HOTPLUG_MIB: u64 = 16 * 1024;

/// virtio-mem's block size: hotplug sizes are multiples of it.
const VIRTIO_MEM_ALIGN_MIB: u64 = 128;

const MIB: u64 = 1 << 20;

/// The files of a VM's run directory the VMM opens: derived from the run
/// directory alone, so a clone's differ from its golden VM's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunPaths {
    /// The hybrid vsock socket (the agent's endpoint).
    pub(crate) vsock: PathBuf,
    /// The serial console's log.
    pub(crate) serial: PathBuf,
    /// The VMM's own log (stderr).
    pub(crate) log: PathBuf,
    /// The API socket of a VMM spawned for this VM (not taken from a pool).
    pub(crate) api: PathBuf,
    /// The directory a restore reads its rewritten `config.json` from.
    pub(crate) restore: PathBuf,
    /// What [`Vmm::attach`](crate::Vmm::attach) needs to find the VM's VMM
    /// again (its process and API socket), written once it runs.
    pub(crate) record: PathBuf,
}

impl RunPaths {
    pub(crate) fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            vsock: run_dir.join("vsock.sock"),
            serial: run_dir.join("serial.log"),
            log: run_dir.join("cloud-hypervisor.log"),
            api: run_dir.join("api.sock"),
            restore: run_dir.join("restore"),
            record: run_dir.join("vmm.json"),
        }
    }
}

fn path_string(path: &Path, what: &str) -> Result<String, RuntimeError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        unsupported(format!(
            "use the non-UTF-8 {what} path `{}`",
            path.display()
        ))
    })
}

fn unsupported(what: String) -> RuntimeError {
    RuntimeError::Unsupported {
        backend: BACKEND,
        what,
    }
}

fn disk_config(disk: &Disk) -> Result<models::DiskConfig, RuntimeError> {
    let mut config = models::DiskConfig::new();
    config.path = Some(path_string(&disk.path, "disk")?);
    config.readonly = Some(disk.read_only);
    match disk.format {
        DiskFormat::Raw => config.image_type = Some(models::ImageType::Raw),
        DiskFormat::Qcow2 => {
            config.image_type = Some(models::ImageType::Qcow2);
            // A clone's overlay reads the golden disk through its backing
            // file, which Cloud Hypervisor refuses unless asked.
            config.backing_files = Some(true);
        }
    }
    Ok(config)
}

fn net_config(network: &Network) -> Result<Option<Vec<models::NetConfig>>, RuntimeError> {
    match network {
        Network::None => Ok(None),
        Network::User => Err(unsupported(
            "provide user-mode networking (use `Network::Tap`)".to_owned(),
        )),
        Network::Tap { name, mac, .. } => {
            let mut net = models::NetConfig::new();
            net.tap = Some(name.clone());
            net.mac = Some(mac.clone());
            Ok(Some(vec![net]))
        }
    }
}

fn mib_to_bytes(mib: u64) -> Result<i64, RuntimeError> {
    mib.checked_mul(MIB)
        .and_then(|b| i64::try_from(b).ok())
        .ok_or_else(|| unsupported(format!("give a VM `{mib}` MiB of memory")))
}

impl TryFrom<&VmConfig> for models::VmConfig {
    type Error = RuntimeError;

    /// The `vm.create` body for a VM: one memory zone (backed by
    /// [`VmConfig::memory_file`], mapped shared, when set), room to hot-add
    /// vCPUs and memory after a restore, the disk, the network, hybrid vsock
    /// and the serial console in the run directory.
    fn try_from(config: &VmConfig) -> Result<Self, Self::Error> {
        let paths = RunPaths::new(&config.run_dir);
        if config.cpus == 0 || config.cpus > MAX_VCPUS {
            return Err(unsupported(format!(
                "boot `{}` vCPUs (1 to {MAX_VCPUS})",
                config.cpus
            )));
        }
        let mut payload = models::PayloadConfig::new();
        payload.kernel = Some(path_string(&config.kernel, "kernel")?);
        payload.initramfs = config
            .initrd
            .as_deref()
            .map(|p| path_string(p, "initramfs"))
            .transpose()?;
        payload.cmdline = Some(config.cmdline.clone());

        let mut vm = models::VmConfig::new(payload);
        let boot = i32::try_from(config.cpus).expect("at most MAX_VCPUS");
        let max = i32::try_from(MAX_VCPUS).expect("MAX_VCPUS fits");
        vm.cpus = Some(models::CpusConfig::new(boot, max));

        // User-defined zones need `size: 0` and the virtio-mem hotplug
        // method (ACPI hotplug is refused with zones).
        let mut zone = models::MemoryZoneConfig::new(
            MEMORY_ZONE_ID.to_owned(),
            mib_to_bytes(config.memory_mib)?,
        );
        if let Some(file) = &config.memory_file {
            zone.file = Some(path_string(file, "memory")?);
            // Shared: the guest's RAM is the file, so `vm.snapshot` skips it
            // (upstream's `SkipPersisted`) instead of copying it into
            // `memory-ranges`.
            zone.shared = Some(true);
        }
        zone.hotplug_size = Some(mib_to_bytes(MEMORY_HOTPLUG_MIB)?);
        let mut memory = models::MemoryConfig::new(0);
        memory.hotplug_method = Some("VirtioMem".to_owned());
        memory.zones = Some(vec![zone]);
        vm.memory = Some(memory);

        vm.disks = Some(vec![disk_config(&config.disk)?]);
        vm.net = net_config(&config.network)?;
        vm.vsock = Some(models::VsockConfig::new(
            GUEST_CID,
            path_string(&paths.vsock, "vsock socket")?,
        ));
        let mut serial = models::ConsoleConfig::new(models::ConsoleMode::File);
        serial.file = Some(path_string(&paths.serial, "serial log")?);
        vm.serial = Some(serial);
        vm.console = Some(models::ConsoleConfig::new(models::ConsoleMode::Off));
        Ok(vm)
    }
}

/// What a clone changes in its golden VM's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloneSpec<'a> {
    /// The clone's own disk.
    pub(crate) disk: &'a Disk,
    /// The clone's network.
    pub(crate) network: &'a Network,
    /// The clone's run directory paths.
    pub(crate) paths: &'a RunPaths,
    /// Where the snapshot's memory file is now (its `memory-file` role).
    pub(crate) memory_file: Option<&'a Path>,
}

/// How to restore a clone, read from the golden `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestorePlan {
    /// The clone's `config.json`.
    pub(crate) config: Value,
    /// Guest memory is a file mapped copy-on-write (no `memory-ranges` to
    /// read); otherwise it is faulted in from `memory-ranges` on demand.
    pub(crate) file_backed: bool,
    /// The snapshot's vCPUs and maximum.
    pub(crate) cpus: u32,
    pub(crate) max_cpus: u32,
    /// The snapshot's memory zone: id, size and hotplug room in MiB.
    pub(crate) zone: String,
    pub(crate) memory_mib: u64,
    pub(crate) hotplug_mib: u64,
}

fn bad_snapshot(what: &str) -> RuntimeError {
    RuntimeError::Vmm {
        backend: BACKEND,
        op: "vm.restore".to_owned(),
        message: format!("the snapshot's `config.json` {what}"),
    }
}

fn u64_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

/// Rewrites a golden VM's `config.json` for a clone: its disk, its network,
/// its vsock socket and serial log, and the memory zone mapped private
/// (copy-on-write) from the snapshot's memory file. Everything else (the
/// devices, their order and ids) stays as the snapshot's `state.json`
/// expects it.
pub(crate) fn clone_config(
    golden: &Value,
    clone: &CloneSpec<'_>,
) -> Result<RestorePlan, RuntimeError> {
    let mut config = golden.clone();

    let disks = config
        .get_mut("disks")
        .and_then(Value::as_array_mut)
        .filter(|d| d.len() == 1)
        .ok_or_else(|| bad_snapshot("has not exactly one disk"))?;
    let disk = disks[0]
        .as_object_mut()
        .ok_or_else(|| bad_snapshot("has a disk that is not an object"))?;
    let new_disk = serde_json::to_value(disk_config(clone.disk)?).expect("a DiskConfig serializes");
    for (key, value) in new_disk.as_object().expect("a DiskConfig is an object") {
        disk.insert(key.clone(), value.clone());
    }
    if clone.disk.format == DiskFormat::Raw {
        disk.remove("backing_files");
    }

    match (
        config.get_mut("net").and_then(Value::as_array_mut),
        clone.network,
    ) {
        (None, Network::None) => {}
        (Some(nets), Network::None) if nets.is_empty() => {}
        (Some(nets), Network::Tap { name, mac, .. }) if nets.len() == 1 => {
            let net = nets[0]
                .as_object_mut()
                .ok_or_else(|| bad_snapshot("has a NIC that is not an object"))?;
            net.insert("tap".to_owned(), Value::from(name.as_str()));
            net.insert("mac".to_owned(), Value::from(mac.as_str()));
        }
        (_, Network::User) => net_config(clone.network).map(|_| ())?,
        _ => {
            return Err(unsupported(
                "restore a clone with other network devices than its snapshot's".to_owned(),
            ));
        }
    }

    let vsock = config
        .get_mut("vsock")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad_snapshot("has no vsock device"))?;
    vsock.insert(
        "socket".to_owned(),
        Value::from(path_string(&clone.paths.vsock, "vsock socket")?),
    );
    if let Some(serial) = config.get_mut("serial").and_then(Value::as_object_mut)
        && serial.get("file").is_some_and(|f| !f.is_null())
    {
        serial.insert(
            "file".to_owned(),
            Value::from(path_string(&clone.paths.serial, "serial log")?),
        );
    }

    let zones = config
        .pointer_mut("/memory/zones")
        .and_then(Value::as_array_mut)
        .filter(|z| z.len() == 1)
        .ok_or_else(|| bad_snapshot("has not exactly one memory zone"))?;
    let zone = zones[0]
        .as_object_mut()
        .ok_or_else(|| bad_snapshot("has a memory zone that is not an object"))?;
    let file_backed = zone.get("file").is_some_and(|f| !f.is_null());
    if file_backed {
        let file = clone
            .memory_file
            .ok_or_else(|| bad_snapshot("names a memory file the snapshot lacks"))?;
        zone.insert("file".to_owned(), Value::from(path_string(file, "memory")?));
        // Private: the clone's writes stay in its own pages, the golden file
        // is opened read-only and paged in on first touch.
        zone.insert("shared".to_owned(), Value::Bool(false));
    }
    let zone_id = zone
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_snapshot("has a memory zone without an id"))?
        .to_owned();
    let zone_bytes = zone
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_snapshot("has a memory zone without a size"))?;
    let hotplug_bytes = zone
        .get("hotplug_size")
        .and_then(Value::as_u64)
        .unwrap_or(0);

    let cpus = u64_at(&config, "/cpus/boot_vcpus")
        .ok_or_else(|| bad_snapshot("has no `cpus.boot_vcpus`"))?;
    let max_cpus = u64_at(&config, "/cpus/max_vcpus").unwrap_or(cpus);
    Ok(RestorePlan {
        file_backed,
        cpus: u32::try_from(cpus).map_err(|_| bad_snapshot("has too many vCPUs"))?,
        max_cpus: u32::try_from(max_cpus).map_err(|_| bad_snapshot("has too many vCPUs"))?,
        zone: zone_id,
        memory_mib: zone_bytes / MIB,
        hotplug_mib: hotplug_bytes / MIB,
        config,
    })
}

/// The `vm.restore` body: the clone's directory, resumed at once, guest
/// memory either mapped from the file (nothing to copy) or faulted in from
/// `memory-ranges` on demand (`OnDemand`, userfaultfd).
pub(crate) fn restore_request(
    plan: &RestorePlan,
    dir: &Path,
) -> Result<models::RestoreConfig, RuntimeError> {
    let mut request =
        models::RestoreConfig::new(format!("file://{}", path_string(dir, "snapshot")?));
    request.resume = Some(true);
    if !plan.file_backed {
        request.memory_restore_mode = Some(models::MemoryRestoreMode::OnDemand);
    }
    Ok(request)
}

/// The hot-adds after a restore: `vm.resize` for vCPUs, `vm.resize-zone`
/// for memory (`vm.resize`'s `desired_ram` is refused with memory zones).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Growth {
    pub(crate) vcpus: Option<models::VmResize>,
    pub(crate) memory: Option<models::VmResizeZone>,
    /// The clone's shape once grown.
    pub(crate) cpus: u32,
    pub(crate) memory_mib: u64,
}

/// What to hot-add to reach `cpus` and `memory_mib`; the snapshot's shape
/// is the floor (less is raised to it).
pub(crate) fn growth(
    plan: &RestorePlan,
    cpus: u32,
    memory_mib: u64,
) -> Result<Growth, RuntimeError> {
    let cpus = cpus.max(plan.cpus);
    let memory_mib = memory_mib.max(plan.memory_mib);
    if cpus > plan.max_cpus {
        return Err(unsupported(format!(
            "grow a clone to `{cpus}` vCPUs (its snapshot allows `{}`)",
            plan.max_cpus
        )));
    }
    let extra = memory_mib - plan.memory_mib;
    if extra > plan.hotplug_mib {
        return Err(unsupported(format!(
            "grow a clone by `{extra}` MiB of memory (its snapshot allows `{}`)",
            plan.hotplug_mib
        )));
    }
    if !extra.is_multiple_of(VIRTIO_MEM_ALIGN_MIB) {
        return Err(unsupported(format!(
            "grow a clone by `{extra}` MiB of memory (virtio-mem adds multiples of {VIRTIO_MEM_ALIGN_MIB} MiB)"
        )));
    }
    let vcpus = (cpus > plan.cpus).then(|| {
        let mut resize = models::VmResize::new();
        resize.desired_vcpus = Some(i32::try_from(cpus).expect("at most max_vcpus"));
        resize
    });
    let memory = (extra > 0)
        .then(|| -> Result<_, RuntimeError> {
            let mut resize = models::VmResizeZone::new();
            resize.id = Some(plan.zone.clone());
            resize.desired_ram = Some(mib_to_bytes(memory_mib)?);
            Ok(resize)
        })
        .transpose()?;
    Ok(Growth {
        vcpus,
        memory,
        cpus,
        memory_mib,
    })
}

/// The runtime's view of `vm.info`.
pub(crate) fn vm_info(info: &models::VmInfo, pid: Option<u32>) -> VmInfo {
    let state = match info.state {
        models::VmState::Created => VmState::Created,
        models::VmState::Running => VmState::Running,
        models::VmState::Paused => VmState::Paused,
        models::VmState::Shutdown => VmState::Shutdown,
    };
    let cpus = info
        .config
        .cpus
        .as_ref()
        .and_then(|c| u32::try_from(c.boot_vcpus).ok())
        .unwrap_or(1);
    let configured = info.config.memory.as_ref().map_or(0, |m| {
        let zones: i64 = m
            .zones
            .iter()
            .flatten()
            .map(|z| z.size + z.hotplugged_size.unwrap_or(0))
            .sum();
        m.size + m.hotplugged_size.unwrap_or(0) + zones
    });
    let bytes = info.memory_actual_size.unwrap_or(configured);
    VmInfo {
        state,
        cpus,
        memory_mib: u64::try_from(bytes).unwrap_or(0) / MIB,
        pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(memory_file: bool) -> VmConfig {
        VmConfig {
            id: "vm".to_owned(),
            cpus: 2,
            memory_mib: 512,
            kernel: "/k/vmlinux".into(),
            initrd: Some("/k/initrd".into()),
            cmdline: "console=ttyS0".to_owned(),
            disk: Disk {
                path: "/d/golden.raw".into(),
                format: DiskFormat::Raw,
                read_only: false,
            },
            memory_file: memory_file.then(|| "/m/golden.mem".into()),
            network: Network::Tap {
                name: "tap0".to_owned(),
                mac: "52:54:00:00:00:01".to_owned(),
                netns: None,
            },
            run_dir: "/run/vm".into(),
        }
    }

    #[test]
    fn a_golden_vm_maps_its_memory_file_shared_in_one_zone() {
        let vm = models::VmConfig::try_from(&config(true)).expect("converts");
        let json = serde_json::to_value(&vm).expect("serializes");
        assert_eq!(
            json,
            json!({
                "cpus": {"boot_vcpus": 2, "max_vcpus": MAX_VCPUS},
                "memory": {
                    "size": 0,
                    "hotplug_method": "VirtioMem",
                    "zones": [{
                        "id": "mem0",
                        "size": 512 << 20,
                        "file": "/m/golden.mem",
                        "shared": true,
                        "hotplug_size": MEMORY_HOTPLUG_MIB << 20,
                    }],
                },
                "payload": {"kernel": "/k/vmlinux", "cmdline": "console=ttyS0", "initramfs": "/k/initrd"},
                "disks": [{"path": "/d/golden.raw", "readonly": false, "image_type": "Raw"}],
                "net": [{"tap": "tap0", "mac": "52:54:00:00:00:01"}],
                "serial": {"file": "/run/vm/serial.log", "mode": "File"},
                "console": {"mode": "Off"},
                "vsock": {"cid": GUEST_CID, "socket": "/run/vm/vsock.sock"},
            })
        );
    }

    #[test]
    fn anonymous_memory_has_no_file_and_qcow2_reads_its_backing_file() {
        let mut c = config(false);
        c.disk.format = DiskFormat::Qcow2;
        c.network = Network::None;
        let vm = models::VmConfig::try_from(&c).expect("converts");
        let zone = &vm.memory.expect("memory").zones.expect("zones")[0];
        assert_eq!((zone.file.as_deref(), zone.shared), (None, None));
        let disk = &vm.disks.expect("disks")[0];
        assert_eq!(disk.image_type, Some(models::ImageType::Qcow2));
        assert_eq!(disk.backing_files, Some(true));
        assert_eq!(vm.net, None);
    }

    #[test]
    fn user_networking_and_bad_shapes_are_unsupported() {
        let mut c = config(false);
        c.network = Network::User;
        assert!(matches!(
            models::VmConfig::try_from(&c),
            Err(RuntimeError::Unsupported { .. })
        ));
        let mut c = config(false);
        c.cpus = 0;
        assert!(models::VmConfig::try_from(&c).is_err());
        c.cpus = MAX_VCPUS + 1;
        assert!(models::VmConfig::try_from(&c).is_err());
    }

    fn golden_json() -> Value {
        serde_json::to_value(models::VmConfig::try_from(&config(true)).expect("converts"))
            .expect("serializes")
    }

    #[test]
    fn a_clone_gets_its_own_paths_and_a_private_mapping() {
        let disk = Disk {
            path: "/c/clone.qcow2".into(),
            format: DiskFormat::Qcow2,
            read_only: false,
        };
        let network = Network::Tap {
            name: "tap9".to_owned(),
            mac: "52:54:00:00:00:09".to_owned(),
            netns: None,
        };
        let paths = RunPaths::new(Path::new("/run/clone"));
        let mut golden = golden_json();
        // Fields this crate does not model survive the rewrite.
        golden["disks"][0]["lock_granularity"] = json!("ByteRange");
        golden["platform"] = json!({"num_pci_segments": 1});
        let plan = clone_config(
            &golden,
            &CloneSpec {
                disk: &disk,
                network: &network,
                paths: &paths,
                memory_file: Some(Path::new("/store/memory")),
            },
        )
        .expect("rewrites");
        let c = &plan.config;
        assert_eq!(c["disks"][0]["path"], "/c/clone.qcow2");
        assert_eq!(c["disks"][0]["image_type"], "Qcow2");
        assert_eq!(c["disks"][0]["backing_files"], true);
        assert_eq!(c["disks"][0]["lock_granularity"], "ByteRange");
        assert_eq!(
            c["net"][0],
            json!({"tap": "tap9", "mac": "52:54:00:00:00:09"})
        );
        assert_eq!(c["vsock"]["socket"], "/run/clone/vsock.sock");
        assert_eq!(c["serial"]["file"], "/run/clone/serial.log");
        assert_eq!(c["memory"]["zones"][0]["file"], "/store/memory");
        assert_eq!(c["memory"]["zones"][0]["shared"], false);
        assert_eq!(c["platform"], golden["platform"]);
        assert_eq!(c["payload"], golden["payload"]);
        assert!(plan.file_backed);
        assert_eq!((plan.cpus, plan.max_cpus), (2, MAX_VCPUS));
        assert_eq!(
            (plan.memory_mib, plan.hotplug_mib),
            (512, MEMORY_HOTPLUG_MIB)
        );
        assert_eq!(plan.zone, MEMORY_ZONE_ID);

        let request = restore_request(&plan, &paths.restore).expect("converts");
        assert_eq!(request.source_url, "file:///run/clone/restore");
        assert_eq!(request.resume, Some(true));
        assert_eq!(request.memory_restore_mode, None, "nothing to copy");

        // A network the snapshot lacks cannot be added by a restore.
        let none = Network::None;
        let r = clone_config(
            &golden,
            &CloneSpec {
                disk: &disk,
                network: &none,
                paths: &paths,
                memory_file: Some(Path::new("/store/memory")),
            },
        );
        assert!(matches!(r, Err(RuntimeError::Unsupported { .. })));
        // A file-backed snapshot without its memory file is refused.
        let r = clone_config(
            &golden,
            &CloneSpec {
                disk: &disk,
                network: &network,
                paths: &paths,
                memory_file: None,
            },
        );
        assert!(matches!(r, Err(RuntimeError::Vmm { .. })));
    }

    #[test]
    fn anonymous_snapshots_restore_on_demand() {
        let golden =
            serde_json::to_value(models::VmConfig::try_from(&config(false)).expect("converts"))
                .expect("serializes");
        let paths = RunPaths::new(Path::new("/run/clone"));
        let network = config(false).network;
        let plan = clone_config(
            &golden,
            &CloneSpec {
                disk: &config(false).disk,
                network: &network,
                paths: &paths,
                memory_file: None,
            },
        )
        .expect("rewrites");
        assert!(!plan.file_backed);
        assert_eq!(plan.config["memory"]["zones"][0].get("file"), None);
        let request = restore_request(&plan, &paths.restore).expect("converts");
        assert_eq!(
            request.memory_restore_mode,
            Some(models::MemoryRestoreMode::OnDemand)
        );
    }

    #[test]
    fn growth_hot_adds_above_the_snapshot_floor() {
        let plan = RestorePlan {
            config: Value::Null,
            file_backed: true,
            cpus: 2,
            max_cpus: 8,
            zone: "mem0".to_owned(),
            memory_mib: 512,
            hotplug_mib: 1024,
        };
        let same = growth(&plan, 1, 256).expect("the floor");
        assert_eq!(
            (same.vcpus, same.memory, same.cpus, same.memory_mib),
            (None, None, 2, 512)
        );
        let more = growth(&plan, 4, 1536).expect("grows");
        assert_eq!(more.vcpus.expect("vcpus").desired_vcpus, Some(4));
        let zone = more.memory.expect("memory");
        assert_eq!(
            (zone.id.as_deref(), zone.desired_ram),
            (Some("mem0"), Some(1536 << 20))
        );
        assert!(growth(&plan, 9, 512).is_err(), "above max_vcpus");
        assert!(growth(&plan, 2, 2048).is_err(), "above hotplug_size");
        assert!(growth(&plan, 2, 600).is_err(), "not a virtio-mem block");
    }

    #[test]
    fn info_reports_the_zone_and_its_hotplugged_memory() {
        let mut vm = models::VmConfig::try_from(&config(true)).expect("converts");
        let memory = vm.memory.as_mut().expect("memory");
        memory.zones.as_mut().expect("zones")[0].hotplugged_size = Some(512 << 20);
        let info = models::VmInfo::new(vm, models::VmState::Paused);
        let ours = vm_info(&info, Some(7));
        assert_eq!(
            ours,
            VmInfo {
                state: VmState::Paused,
                cpus: 2,
                memory_mib: 1024,
                pid: Some(7)
            }
        );
    }

    #[test]
    fn snapshots_without_a_disk_or_zone_are_refused() {
        let paths = RunPaths::new(Path::new("/run/clone"));
        let c = config(true);
        let spec = CloneSpec {
            disk: &c.disk,
            network: &c.network,
            paths: &paths,
            memory_file: Some(Path::new("/m")),
        };
        for pointer in ["/disks", "/vsock", "/memory/zones"] {
            let mut golden = golden_json();
            *golden.pointer_mut(pointer).expect("present") = Value::Null;
            assert!(
                matches!(clone_config(&golden, &spec), Err(RuntimeError::Vmm { .. })),
                "{pointer}"
            );
        }
    }
}
