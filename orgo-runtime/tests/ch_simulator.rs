//! The Cloud Hypervisor backend end to end against the simulator of its
//! REST API (the `ch-simulator` binary, spawned by the backend as it would
//! spawn `cloud-hypervisor --api-socket`), and the simulator's answers to
//! raw API calls.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloud_hypervisor_client::apis::{DefaultApi, Error as ApiError};
use cloud_hypervisor_client::{models, socket_based_api_client};
use orgo_runtime::ch::{roles, simulator};
use orgo_runtime::{
    AgentEndpoint, CloudHypervisor, Disk, DiskFormat, Network, RestoreConfig, RuntimeError,
    VmConfig, VmState, Vmm, VmmPool,
};
use tempfile::TempDir;

const SIMULATOR: &str = env!("CARGO_BIN_EXE_ch-simulator");

fn touch(path: &Path) -> PathBuf {
    std::fs::write(path, b"").unwrap();
    path.to_owned()
}

fn golden_config(tmp: &Path, memory_file: bool) -> VmConfig {
    VmConfig {
        id: "golden".to_owned(),
        cpus: 2,
        memory_mib: 512,
        kernel: touch(&tmp.join("vmlinux")),
        initrd: Some(touch(&tmp.join("initrd.img"))),
        cmdline: "console=ttyS0 root=/dev/vda rw".to_owned(),
        disk: Disk {
            path: touch(&tmp.join("golden.raw")),
            format: DiskFormat::Raw,
            read_only: false,
        },
        memory_file: memory_file.then(|| tmp.join("golden.mem")),
        network: Network::Tap {
            name: "orgo-tap0".to_owned(),
            mac: "52:54:00:12:34:56".to_owned(),
            netns: None,
        },
        run_dir: tmp.join("run/golden"),
    }
}

fn clone_config(tmp: &Path, id: &str, snapshot: &BTreeMap<String, PathBuf>) -> RestoreConfig {
    RestoreConfig {
        id: id.to_owned(),
        snapshot: snapshot.clone(),
        disk: Disk {
            path: touch(&tmp.join(format!("{id}.qcow2"))),
            format: DiskFormat::Qcow2,
            read_only: false,
        },
        cpus: 2,
        memory_mib: 512,
        network: Network::Tap {
            name: format!("orgo-{id}"),
            mac: "52:54:00:00:00:02".to_owned(),
            netns: None,
        },
        run_dir: tmp.join("run").join(id),
    }
}

/// The failed request's name, or a panic naming what came instead.
fn vmm_op(result: Result<impl std::fmt::Debug, RuntimeError>) -> String {
    match result {
        Err(RuntimeError::Vmm { op, backend, .. }) => {
            assert_eq!(backend, "cloud-hypervisor");
            op
        }
        other => panic!("expected a VMM error, got {other:?}"),
    }
}

async fn golden_snapshot(tmp: &Path, memory_file: bool) -> BTreeMap<String, PathBuf> {
    let backend = CloudHypervisor::new(SIMULATOR);
    let vm = backend
        .boot(&golden_config(tmp, memory_file))
        .await
        .unwrap();
    vm.pause().await.unwrap();
    let files = vm.snapshot(&tmp.join("snapshot")).await.unwrap();
    vm.shutdown().await.unwrap();
    files
}

#[tokio::test]
async fn boot_pause_snapshot_restore_resize_shutdown() {
    let tmp = TempDir::new().unwrap();
    let backend = CloudHypervisor::new(SIMULATOR);
    let config = golden_config(tmp.path(), true);
    let vm = backend.boot(&config).await.unwrap();

    let info = vm.info().await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.cpus, info.memory_mib), (2, 512));
    assert!(info.pid.is_some());
    // The memory file is made and sized for the VMM to map.
    let memory_file = config.memory_file.clone().unwrap();
    assert_eq!(std::fs::metadata(&memory_file).unwrap().len(), 512 << 20);
    let vsock = config.run_dir.join("vsock.sock");
    assert_eq!(
        vm.agent_endpoint(),
        AgentEndpoint::HybridVsock {
            path: vsock.clone(),
            port: orgo_agent_protocol::VSOCK_PORT
        }
    );
    assert!(vsock.exists(), "the VM binds its hybrid vsock socket");

    // Illegal transitions name their request.
    assert_eq!(vmm_op(vm.resume().await), "vm.resume");
    assert_eq!(
        vmm_op(vm.snapshot(&tmp.path().join("early")).await),
        "vm.snapshot"
    );

    vm.pause().await.unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Paused);
    assert_eq!(vmm_op(vm.pause().await), "vm.pause");

    let snapshot = vm.snapshot(&tmp.path().join("snapshot")).await.unwrap();
    let roles_found: Vec<&str> = snapshot.keys().map(String::as_str).collect();
    assert_eq!(
        roles_found,
        [roles::CONFIG, roles::MEMORY_FILE, roles::STATE],
        "guest RAM stays in the shared memory file: no memory-ranges"
    );
    assert_eq!(snapshot[roles::MEMORY_FILE], memory_file);
    // A second snapshot into the same directory is refused, as upstream
    // creates its files with `create_new`.
    assert_eq!(
        vmm_op(vm.snapshot(&tmp.path().join("snapshot")).await),
        "vm.snapshot"
    );

    vm.resume().await.unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Running);
    vm.shutdown().await.unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Shutdown);
    assert_eq!(vmm_op(vm.pause().await), "vm.pause");
    vm.shutdown().await.unwrap();

    let golden_json = std::fs::read(&snapshot[roles::CONFIG]).unwrap();

    // Clones from a pool of pre-spawned VMMs: one grown, one as snapshotted.
    let pool = VmmPool::new(SIMULATOR, tmp.path().join("pool"), 2);
    pool.fill().await.unwrap();
    assert_eq!(pool.idle(), 2);
    let backend = CloudHypervisor::new("/nonexistent/cloud-hypervisor").with_pool(pool.clone());

    let mut big = clone_config(tmp.path(), "clone1", &snapshot);
    big.cpus = 4;
    big.memory_mib = 1024;
    let small = clone_config(tmp.path(), "clone2", &snapshot);
    let (c1, c2) = tokio::join!(backend.restore(&big), backend.restore(&small));
    let (c1, c2) = (c1.unwrap(), c2.unwrap());

    let info = c1.info().await.unwrap();
    assert_eq!(info.state, VmState::Running, "restored with `resume`");
    assert_eq!(
        (info.cpus, info.memory_mib),
        (4, 1024),
        "grown by vm.resize and vm.resize-zone"
    );
    let info = c2.info().await.unwrap();
    assert_eq!((info.cpus, info.memory_mib), (2, 512));
    assert_ne!(c1.agent_endpoint(), c2.agent_endpoint());

    // Each clone restored from its own config.json; the snapshot is untouched.
    assert_eq!(
        std::fs::read(&snapshot[roles::CONFIG]).unwrap(),
        golden_json
    );
    let clone_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(big.run_dir.join("restore/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        clone_json["disks"][0]["path"],
        big.disk.path.to_str().unwrap()
    );
    assert_eq!(clone_json["disks"][0]["backing_files"], true);
    assert_eq!(
        clone_json["vsock"]["socket"],
        big.run_dir.join("vsock.sock").to_str().unwrap()
    );
    assert_eq!(clone_json["net"][0]["tap"], "orgo-clone1");
    assert_eq!(
        clone_json["memory"]["zones"][0]["shared"], false,
        "copy-on-write"
    );
    assert_eq!(
        clone_json["memory"]["zones"][0]["file"],
        memory_file.to_str().unwrap()
    );

    // A clone pauses and snapshots like any VM.
    c2.pause().await.unwrap();
    let again = c2.snapshot(&tmp.path().join("snapshot2")).await.unwrap();
    assert!(again.contains_key(roles::STATE));
    c1.shutdown().await.unwrap();
    c2.shutdown().await.unwrap();
}

#[tokio::test]
async fn anonymous_memory_is_copied_and_restored_on_demand() {
    let tmp = TempDir::new().unwrap();
    let snapshot = golden_snapshot(tmp.path(), false).await;
    assert!(snapshot.contains_key(roles::MEMORY_RANGES));
    assert!(!snapshot.contains_key(roles::MEMORY_FILE));
    let backend = CloudHypervisor::new(SIMULATOR);
    let clone = backend
        .restore(&clone_config(tmp.path(), "clone", &snapshot))
        .await
        .unwrap();
    assert_eq!(clone.info().await.unwrap().state, VmState::Running);
    clone.shutdown().await.unwrap();
}

#[tokio::test]
async fn restores_reject_bad_snapshots_and_shapes() {
    let tmp = TempDir::new().unwrap();
    let snapshot = golden_snapshot(tmp.path(), true).await;
    let backend = CloudHypervisor::new(SIMULATOR);

    // Beyond the snapshot's room to grow.
    let mut huge = clone_config(tmp.path(), "huge", &snapshot);
    huge.cpus = 64;
    assert!(matches!(
        backend.restore(&huge).await,
        Err(RuntimeError::Unsupported { .. })
    ));
    let mut odd = clone_config(tmp.path(), "odd", &snapshot);
    odd.memory_mib = 600;
    assert!(matches!(
        backend.restore(&odd).await,
        Err(RuntimeError::Unsupported { .. })
    ));
    // Less than the snapshot is raised to it.
    let mut less = clone_config(tmp.path(), "less", &snapshot);
    less.memory_mib = 128;
    let vm = backend.restore(&less).await.unwrap();
    assert_eq!(vm.info().await.unwrap().memory_mib, 512);
    vm.shutdown().await.unwrap();

    let user = RestoreConfig {
        network: Network::User,
        ..clone_config(tmp.path(), "user", &snapshot)
    };
    assert!(matches!(
        backend.restore(&user).await,
        Err(RuntimeError::Unsupported { .. })
    ));

    // A state file that is gone, then one that is not a snapshot's: the
    // VMM refuses them.
    let mut gone = snapshot.clone();
    gone.insert(roles::STATE.to_owned(), tmp.path().join("missing.json"));
    let r = backend
        .restore(&clone_config(tmp.path(), "gone", &gone))
        .await;
    assert_eq!(vmm_op(r), "vm.restore");
    let mut garbage = snapshot.clone();
    garbage.insert(roles::STATE.to_owned(), tmp.path().join("garbage.json"));
    std::fs::write(tmp.path().join("garbage.json"), b"{\"not\": \"a state\"}").unwrap();
    let r = backend
        .restore(&clone_config(tmp.path(), "garbage", &garbage))
        .await;
    assert_eq!(vmm_op(r), "vm.restore");

    // No config file at all.
    let mut empty = snapshot.clone();
    empty.insert(
        roles::CONFIG.to_owned(),
        tmp.path().join("missing-config.json"),
    );
    assert!(matches!(
        backend
            .restore(&clone_config(tmp.path(), "empty", &empty))
            .await,
        Err(RuntimeError::Io { .. })
    ));
}

#[tokio::test]
async fn probe_reports_the_version_and_needs_kvm() {
    let tmp = TempDir::new().unwrap();
    let fake_kvm = touch(&tmp.path().join("kvm"));
    let caps = CloudHypervisor::new(SIMULATOR)
        .with_kvm_device(&fake_kvm)
        .probe()
        .await
        .unwrap();
    assert_eq!(caps.backend, orgo_runtime::BackendKind::CloudHypervisor);
    assert_eq!(caps.version, simulator::VERSION.trim_start_matches('v'));
    assert!(caps.lazy_restore);
    let r = CloudHypervisor::new(SIMULATOR)
        .with_kvm_device(tmp.path().join("no-kvm"))
        .probe()
        .await;
    assert!(matches!(r, Err(RuntimeError::Unsupported { .. })));
    let r = CloudHypervisor::new("/nonexistent/cloud-hypervisor")
        .with_kvm_device(&fake_kvm)
        .probe()
        .await;
    assert!(matches!(r, Err(RuntimeError::Spawn { .. })));
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error() {
    let tmp = TempDir::new().unwrap();
    let r = CloudHypervisor::new(tmp.path().join("cloud-hypervisor"))
        .boot(&golden_config(tmp.path(), false))
        .await;
    assert!(matches!(r, Err(RuntimeError::Spawn { .. })));
}

use orgo_runtime::process_alive as running;

/// Whether process `pid` is gone within a few seconds.
async fn gone(pid: u32) -> bool {
    for _ in 0..500 {
        if !running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Whether process `pid` still runs a while later (a kill, if one was
/// sent, has had time to land).
async fn still_running(pid: u32) -> bool {
    tokio::time::sleep(Duration::from_millis(200)).await;
    running(pid)
}

/// Kills process `pid` when dropped, so a failing test leaves no VMM
/// behind it.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        if running(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// The pid a VMM reports on its API socket.
async fn pinged_pid(socket: &Path) -> u32 {
    let ping = socket_based_api_client(socket)
        .vmm_ping_get()
        .await
        .unwrap();
    u32::try_from(ping.pid.unwrap()).unwrap()
}

#[tokio::test]
async fn a_detached_vm_keeps_running_and_attach_takes_it_back() {
    let tmp = TempDir::new().unwrap();
    let backend = CloudHypervisor::new(SIMULATOR);
    let config = golden_config(tmp.path(), true);
    let vm = backend.boot(&config).await.unwrap();
    let pid = vm.info().await.unwrap().pid.unwrap();
    let _reap = Reap(pid);
    let endpoint = vm.agent_endpoint();
    vm.detach();
    assert!(
        still_running(pid).await,
        "a detached VM outlives its handle"
    );
    assert!(config.run_dir.join("vsock.sock").exists(), "the VM is up");

    let vm = backend.attach("golden", &config.run_dir).await.unwrap();
    let info = vm.info().await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.cpus, info.memory_mib), (2, 512));
    assert_eq!(info.pid, Some(pid));
    assert_eq!(vm.id(), "golden");
    assert_eq!(vm.agent_endpoint(), endpoint);
    vm.pause().await.unwrap();

    // Dropping an attached handle leaves the VM as it was.
    drop(vm);
    assert!(still_running(pid).await);
    let vm = backend.attach("golden", &config.run_dir).await.unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Paused);
    // The record keeps the memory file, which a snapshot hands over.
    let snapshot = vm.snapshot(&tmp.path().join("snapshot")).await.unwrap();
    assert_eq!(
        snapshot.get(roles::MEMORY_FILE),
        config.memory_file.as_ref()
    );

    vm.shutdown().await.unwrap();
    assert!(!running(pid), "shutdown waits for the VMM to exit");
    let info = vm.info().await.unwrap();
    assert_eq!(info.state, VmState::Shutdown);
    assert_eq!((info.cpus, info.memory_mib), (2, 512));
    vm.shutdown().await.unwrap();

    // Nothing left to attach to.
    match backend.attach("golden", &config.run_dir).await {
        Err(RuntimeError::Io { path, .. }) => assert_eq!(path, config.run_dir.join("vmm.json")),
        other => panic!("expected a missing record, got {other:?}"),
    }
}

#[tokio::test]
async fn attach_without_a_vm_names_what_is_missing() {
    let tmp = TempDir::new().unwrap();
    let backend = CloudHypervisor::new(SIMULATOR);

    // An empty run directory: the error names the record it looked for.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let error = backend.attach("golden", &empty).await.unwrap_err();
    let record = empty.join("vmm.json");
    assert!(
        matches!(&error, RuntimeError::Io { path, .. } if *path == record),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("`{}`", record.display())),
        "{error}"
    );
    let missing = backend.attach("golden", &tmp.path().join("nowhere")).await;
    assert!(matches!(missing, Err(RuntimeError::Io { .. })));

    // A record that is not one.
    std::fs::write(&record, b"not json").unwrap();
    let error = backend.attach("golden", &empty).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidFile { source, .. }
            if source.to_string().contains(&format!("`{}`", record.display()))),
        "{error:?}"
    );

    // A VM whose owning handle was dropped: killed, so its record is
    // stale and the error names the API socket nothing answers on.
    let config = golden_config(tmp.path(), false);
    let vm = backend.boot(&config).await.unwrap();
    let pid = vm.info().await.unwrap().pid.unwrap();
    let _reap = Reap(pid);
    drop(vm);
    assert!(gone(pid).await, "dropping the booting handle kills the VMM");
    let error = backend.attach("golden", &config.run_dir).await.unwrap_err();
    let socket = config.run_dir.join("api.sock");
    assert!(
        matches!(&error, RuntimeError::Vmm { op, message, .. }
            if op == "vmm.ping" && message.contains(&format!("`{}`", socket.display()))),
        "{error:?}"
    );

    // A detached VM, asked for under another id.
    let vm = backend.boot(&config).await.unwrap();
    let pid = vm.info().await.unwrap().pid.unwrap();
    let _reap = Reap(pid);
    vm.detach();
    match backend.attach("other", &config.run_dir).await {
        Err(RuntimeError::Vmm { op, message, .. }) => {
            assert_eq!(op, "attach");
            assert!(message.contains("`golden`") && message.contains("`other`"));
        }
        other => panic!("expected a wrong id, got {other:?}"),
    }

    // A record naming another process than the one on the socket.
    let record = config.run_dir.join("vmm.json");
    let original = std::fs::read(&record).unwrap();
    // A record written before records had a version field still attaches.
    let mut unversioned: serde_json::Value = serde_json::from_slice(&original).unwrap();
    assert!(
        unversioned
            .as_object_mut()
            .unwrap()
            .remove("orgo_vmm_record")
            .is_some()
    );
    std::fs::write(&record, serde_json::to_vec(&unversioned).unwrap()).unwrap();
    drop(backend.attach("golden", &config.run_dir).await.unwrap());
    let mut json: serde_json::Value = serde_json::from_slice(&original).unwrap();
    json["pid"] = (pid + 1).into();
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    match backend.attach("golden", &config.run_dir).await {
        Err(RuntimeError::Vmm { op, message, .. }) => {
            assert_eq!(op, "vmm.ping");
            assert!(message.contains("not the recorded"), "{message}");
        }
        other => panic!("expected another process, got {other:?}"),
    }
    std::fs::write(&record, &original).unwrap();

    // A VMM that no longer holds a VM.
    let api = socket_based_api_client(&socket);
    api.shutdown_vm().await.unwrap();
    api.delete_vm().await.unwrap();
    assert_eq!(
        vmm_op(backend.attach("golden", &config.run_dir).await),
        "vm.info"
    );
    api.shutdown_vmm().await.unwrap();
    assert!(gone(pid).await);
}

#[tokio::test]
async fn dropping_the_handle_that_restored_a_vm_kills_it() {
    let tmp = TempDir::new().unwrap();
    let snapshot = golden_snapshot(tmp.path(), true).await;
    let backend = CloudHypervisor::new(SIMULATOR);
    let clone = backend
        .restore(&clone_config(tmp.path(), "clone", &snapshot))
        .await
        .unwrap();
    let pid = clone.info().await.unwrap().pid.unwrap();
    let _reap = Reap(pid);
    assert!(running(pid));
    drop(clone);
    assert!(gone(pid).await);
}

#[tokio::test]
async fn a_pooled_vm_detaches_and_the_pool_kills_only_its_idle_processes() {
    let tmp = TempDir::new().unwrap();
    let pool_dir = tmp.path().join("pool");
    let pool = VmmPool::new(SIMULATOR, &pool_dir, 2);
    pool.fill().await.unwrap();
    let backend = CloudHypervisor::new("/nonexistent/cloud-hypervisor").with_pool(pool.clone());
    let config = golden_config(tmp.path(), false);
    let vm = backend.boot(&config).await.unwrap();
    let pid = vm.info().await.unwrap().pid.unwrap();
    let _reap = Reap(pid);
    vm.detach();
    drop(backend);

    // The pool refills in the background; then it holds two idle VMMs.
    for _ in 0..500 {
        if pool.idle() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.idle(), 2);
    let mut idle = Vec::new();
    for entry in std::fs::read_dir(&pool_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sock") {
            let other = pinged_pid(&path).await;
            if other != pid {
                idle.push(other);
            }
        }
    }
    assert_eq!(idle.len(), 2, "{idle:?}");
    let _reap_idle: Vec<Reap> = idle.iter().copied().map(Reap).collect();

    // The last reference (the refill task may hold one a moment longer).
    let mut pool = pool;
    for _ in 0..500 {
        match Arc::try_unwrap(pool) {
            Ok(last) => {
                drop(last);
                break;
            }
            Err(shared) => pool = shared,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for other in idle {
        assert!(gone(other).await, "the pool's idle VMM `{other}` is killed");
    }
    assert!(running(pid), "the detached VM is no longer the pool's");

    // A new pool on the same directory leaves the detached VM's socket be.
    let again = VmmPool::new(SIMULATOR, &pool_dir, 2);
    again.fill().await.unwrap();

    // Its record leads to the pool's socket.
    let vm = CloudHypervisor::new(SIMULATOR)
        .attach("golden", &config.run_dir)
        .await
        .unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Running);
    vm.shutdown().await.unwrap();
    assert!(!running(pid));
    drop(again);
}

/// Set by [`a_detached_vm_outlives_the_process_that_booted_it`] for the
/// child process it runs [`child_boots_and_detaches`] in.
const CHILD_DIR: &str = "ORGO_CH_TEST_DETACH_CHILD_DIR";

#[tokio::test]
#[ignore = "a helper: a_detached_vm_outlives_the_process_that_booted_it runs it in a child process"]
async fn child_boots_and_detaches() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let vm = CloudHypervisor::new(SIMULATOR)
        .boot(&golden_config(Path::new(&dir), false))
        .await
        .unwrap();
    vm.detach();
}

#[tokio::test]
async fn a_detached_vm_outlives_the_process_that_booted_it() {
    let tmp = TempDir::new().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_boots_and_detaches", "--ignored"])
        .env(CHILD_DIR, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = golden_config(tmp.path(), false);
    let vm = CloudHypervisor::new(SIMULATOR)
        .attach("golden", &config.run_dir)
        .await
        .unwrap();
    let info = vm.info().await.unwrap();
    let pid = info.pid.unwrap();
    let _reap = Reap(pid);
    assert_eq!(info.state, VmState::Running);
    assert!(running(pid));
    vm.shutdown().await.unwrap();
    assert!(!running(pid));
}

/// The status of a failed raw call.
fn status<T: std::fmt::Debug>(result: Result<T, ApiError>) -> u16 {
    match result {
        Err(ApiError::Api(e)) => {
            let messages: Vec<String> = serde_json::from_str(&e.body).unwrap();
            assert!(!messages.is_empty());
            e.code.as_u16()
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The simulator's own answers, as upstream's HTTP server gives them.
#[tokio::test]
async fn raw_api_status_codes() {
    let tmp = TempDir::new().unwrap();
    let socket = tmp.path().join("api.sock");
    let server = tokio::spawn({
        let socket = socket.clone();
        async move { simulator::serve(&socket).await }
    });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let api = socket_based_api_client(&socket);

    let ping = api.vmm_ping_get().await.unwrap();
    assert_eq!(ping.version, simulator::VERSION);
    assert_eq!(status(api.vm_info_get().await), 404, "not created");
    assert_eq!(status(api.boot_vm().await), 404, "boot before create");
    assert_eq!(status(api.pause_vm().await), 500, "pause when not running");
    assert_eq!(
        status(api.shutdown_vm().await),
        500,
        "shutdown when not running"
    );
    let mut resize = models::VmResize::new();
    resize.desired_vcpus = Some(2);
    assert_eq!(
        status(api.vm_resize_put(resize).await),
        404,
        "resize before create"
    );

    let golden = golden_config(tmp.path(), true);
    std::fs::create_dir_all(&golden.run_dir).unwrap();
    let config = models::VmConfig::try_from(&golden).unwrap();
    std::fs::write(tmp.path().join("golden.mem"), b"").unwrap();
    api.create_vm(config.clone()).await.unwrap();
    assert_eq!(
        status(api.create_vm(config.clone()).await),
        500,
        "create twice"
    );
    let info = api.vm_info_get().await.unwrap();
    assert_eq!(info.state, models::VmState::Created);
    assert_eq!(status(api.pause_vm().await), 500, "pause before boot");
    assert_eq!(
        status(api.boot_vm().await),
        500,
        "the memory file is too small"
    );
    std::fs::File::create(tmp.path().join("golden.mem"))
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    api.boot_vm().await.unwrap();
    assert_eq!(status(api.boot_vm().await), 500, "boot twice");
    let snapshot = |dir: &Path| {
        let mut c = models::VmSnapshotConfig::new();
        c.destination_url = Some(format!("file://{}", dir.display()));
        c
    };
    std::fs::create_dir(tmp.path().join("snap")).unwrap();
    assert_eq!(
        status(
            api.vm_snapshot_put(snapshot(&tmp.path().join("snap")))
                .await
        ),
        500,
        "snapshot while running"
    );
    api.pause_vm().await.unwrap();
    assert_eq!(
        status(
            api.vm_snapshot_put(snapshot(&tmp.path().join("nodir")))
                .await
        ),
        500,
        "no such directory"
    );
    api.vm_snapshot_put(snapshot(&tmp.path().join("snap")))
        .await
        .unwrap();
    let restore =
        models::RestoreConfig::new(format!("file://{}", tmp.path().join("snap").display()));
    assert_eq!(
        status(api.vm_restore_put(restore.clone()).await),
        500,
        "restore over a VM"
    );
    let mut desired = models::VmResize::new();
    desired.desired_ram = Some(1 << 30);
    assert_eq!(
        status(api.vm_resize_put(desired).await),
        500,
        "vm.resize with memory zones"
    );
    api.resume_vm().await.unwrap();
    api.shutdown_vm().await.unwrap();
    assert_eq!(
        api.vm_info_get().await.unwrap().state,
        models::VmState::Created
    );
    api.delete_vm().await.unwrap();
    assert_eq!(status(api.vm_info_get().await), 404);

    // Restoring needs a directory with a snapshot in it.
    let missing =
        models::RestoreConfig::new(format!("file://{}", tmp.path().join("nodir").display()));
    assert_eq!(status(api.vm_restore_put(missing).await), 500);
    std::fs::create_dir(tmp.path().join("emptydir")).unwrap();
    let empty =
        models::RestoreConfig::new(format!("file://{}", tmp.path().join("emptydir").display()));
    assert_eq!(status(api.vm_restore_put(empty).await), 500);
    let mut bad = restore.clone();
    bad.prefault = Some(true);
    bad.memory_restore_mode = Some(models::MemoryRestoreMode::OnDemand);
    assert_eq!(status(api.vm_restore_put(bad).await), 400);
    // The golden VM's vsock socket is free again, so the snapshot restores.
    api.vm_restore_put(restore).await.unwrap();
    assert_eq!(
        api.vm_info_get().await.unwrap().state,
        models::VmState::Paused
    );

    api.shutdown_vmm().await.unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists());
}

/// Requests the client cannot make: a wrong method, an unknown path, a body
/// that is not JSON.
#[tokio::test]
async fn raw_http_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = TempDir::new().unwrap();
    let socket = tmp.path().join("api.sock");
    tokio::spawn({
        let socket = socket.clone();
        async move { simulator::serve(&socket).await }
    });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (request, expected) in [
        (
            "GET /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "400",
        ),
        (
            "PUT /api/v1/vm.nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (
            "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{x}",
            "400",
        ),
        (
            "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            "400",
        ),
    ] {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected} ")),
            "{request:?} answered {answer:?}"
        );
    }
}

/// The host network's shape under Cloud Hypervisor: each clone's NIC is the
/// tap `tap0` of a network namespace of its own, and its VMM is started in
/// that namespace (as root: the test makes two namespaces), even with a
/// pool of VMMs spawned ahead (which run in the host's).
#[tokio::test]
async fn a_clone_gets_the_tap_of_its_namespace_and_its_vmm_runs_there() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test makes network namespaces: run it as root"
    );
    let tmp = TempDir::new().unwrap();
    let snapshot = golden_snapshot(tmp.path(), true).await;
    let pool = VmmPool::new(SIMULATOR, tmp.path().join("pool"), 1);
    pool.fill().await.unwrap();
    let backend = CloudHypervisor::new(SIMULATOR).with_pool(pool.clone());
    let mut clones = Vec::new();
    for name in ["orgotest-ch-a", "orgotest-ch-b"] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
        let made = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(made.success());
        let netns = Path::new("/run/netns").join(name);
        let mut config = clone_config(tmp.path(), name, &snapshot);
        config.network = Network::Tap {
            name: "tap0".to_owned(),
            mac: "52:54:00:12:34:56".to_owned(),
            netns: Some(netns.clone()),
        };
        let vm = backend.restore(&config).await.unwrap();
        let pid = vm.info().await.unwrap().pid.unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(config.run_dir.join("restore/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["net"][0]["tap"], "tap0", "{name}");
        assert_eq!(json["net"][0]["mac"], "52:54:00:12:34:56", "{name}");
        let inode =
            |path: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
        assert_eq!(
            inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))),
            inode(&netns),
            "{name}'s VMM runs in its namespace"
        );
        clones.push((vm, name));
    }
    assert_eq!(pool.idle(), 1, "a VM with a namespace takes no pooled VMM");
    for (vm, name) in clones {
        vm.shutdown().await.unwrap();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
    }
}
