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
            port: orgo_agent::VSOCK_PORT
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
    assert_eq!(caps.backend, "cloud-hypervisor");
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
