//! The Cloud Hypervisor backend against the real binary, on a host with
//! KVM. Ignored unless asked for (`cargo test -p orgo-runtime --test ch_real
//! -- --ignored`); then it needs `CLOUD_HYPERVISOR_BIN` (the binary),
//! `ORGO_CH_KERNEL` (an ELF `vmlinux`), `ORGO_CH_DISK` (a raw root disk
//! whose init is `orgo-agent`), and optionally `ORGO_CH_INITRD` and
//! `ORGO_CH_CMDLINE` (default: the base image's command line).
//!
//! It boots a golden VM with a memory file, waits for the agent over hybrid
//! vsock, pauses, snapshots, shuts it down, restores a clone with its own
//! disk copy and one more vCPU, and waits for the clone's agent; then
//! detaches the clone, attaches to it again and asks its agent once more.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use orgo_runtime::ch::roles;
use orgo_runtime::{
    AgentClient, AgentEndpoint, CloudHypervisor, Disk, DiskFormat, KERNEL_CMDLINE, Network,
    RestoreConfig, Vm, VmConfig, VmState, Vmm,
};

const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("`{name}` must be set")))
}

async fn agent_exec(vm: &dyn Vm) -> String {
    let AgentEndpoint::HybridVsock { path, port } = vm.agent_endpoint() else {
        panic!("Cloud Hypervisor's agent is on hybrid vsock");
    };
    tokio::task::spawn_blocking(move || {
        let agent = AgentClient::connect_hybrid_vsock(&path, port, AGENT_TIMEOUT).unwrap();
        let out = agent
            .exec(
                orgo_agent_protocol::Exec::argv(["uname", "-r"]),
                Duration::from_secs(30),
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
    .await
    .unwrap()
}

fn raw_copy(from: &Path, to: &Path) -> Disk {
    std::fs::copy(from, to).unwrap();
    Disk {
        path: to.to_owned(),
        format: DiskFormat::Raw,
        read_only: false,
    }
}

#[tokio::test]
#[ignore = "needs Cloud Hypervisor and KVM: set CLOUD_HYPERVISOR_BIN, ORGO_CH_KERNEL and ORGO_CH_DISK, run with --ignored"]
async fn boot_snapshot_restore_with_the_real_binary() {
    let binary = env_path("CLOUD_HYPERVISOR_BIN");
    let tmp = tempfile::TempDir::new().unwrap();
    let backend = CloudHypervisor::new(binary);
    let caps = backend.probe().await.unwrap();
    eprintln!("cloud-hypervisor {}", caps.version);

    let golden = VmConfig {
        id: "golden".to_owned(),
        cpus: 1,
        memory_mib: 512,
        kernel: env_path("ORGO_CH_KERNEL"),
        initrd: std::env::var_os("ORGO_CH_INITRD").map(PathBuf::from),
        cmdline: std::env::var("ORGO_CH_CMDLINE").unwrap_or_else(|_| KERNEL_CMDLINE.to_owned()),
        disk: raw_copy(&env_path("ORGO_CH_DISK"), &tmp.path().join("golden.raw")),
        memory_file: Some(tmp.path().join("golden.mem")),
        network: Network::None,
        run_dir: tmp.path().join("run/golden"),
    };
    let vm = backend.boot(&golden).await.unwrap();
    let release = agent_exec(vm.as_ref()).await;
    assert!(!release.is_empty());
    vm.pause().await.unwrap();
    let snapshot = vm.snapshot(&tmp.path().join("snapshot")).await.unwrap();
    assert!(snapshot.contains_key(roles::CONFIG) && snapshot.contains_key(roles::STATE));
    assert_eq!(
        snapshot.get(roles::MEMORY_FILE),
        golden.memory_file.as_ref()
    );
    vm.shutdown().await.unwrap();

    let clone = RestoreConfig {
        id: "clone".to_owned(),
        snapshot,
        disk: raw_copy(&golden.disk.path, &tmp.path().join("clone.raw")),
        cpus: 2,
        memory_mib: 512,
        network: Network::None,
        run_dir: tmp.path().join("run/clone"),
    };
    let vm = backend.restore(&clone).await.unwrap();
    let info = vm.info().await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.cpus, 2);
    assert_eq!(agent_exec(vm.as_ref()).await, release);

    // Detached, the clone keeps running; attach takes it back.
    vm.detach();
    let vm = backend.attach("clone", &clone.run_dir).await.unwrap();
    let attached = vm.info().await.unwrap();
    assert_eq!(attached.state, VmState::Running);
    assert_eq!((attached.cpus, attached.pid), (2, info.pid));
    assert_eq!(agent_exec(vm.as_ref()).await, release);
    vm.shutdown().await.unwrap();
    assert_eq!(vm.info().await.unwrap().state, VmState::Shutdown);
}
