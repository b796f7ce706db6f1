//! The QEMU backend under TCG, for real: boot a golden VM with its memory in
//! a file, leave a mark in the guest, pause, snapshot, then restore two
//! clones from the snapshot, each on its own disk layer, and check that both
//! see the mark, that they diverge, and that the snapshot's files stay as
//! they were.
//!
//! Needs what `qemu_e2e` needs (root, QEMU, mmdebstrap, Debian sources);
//! shares its image cache.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use common::{image_dir, overlay, static_agent};
use orgo_agent_protocol::Exec;
use orgo_runtime::{
    Accel, AgentClient, AgentEndpoint, BaseImageRecipe, Disk, DiskFormat, KERNEL_CMDLINE, Network,
    Qemu, RestoreConfig, USER_NET_IP, Vm, VmConfig, VmState, Vmm, build_base, sha256_file,
};

const T: Duration = Duration::from_secs(60);

async fn agent(vm: &dyn Vm) -> AgentClient {
    let AgentEndpoint::Serial(path) = vm.agent_endpoint() else {
        panic!("QEMU's agent is on a serial port");
    };
    tokio::task::spawn_blocking(move || {
        AgentClient::connect_serial(&path, Duration::from_secs(300))
    })
    .await
    .unwrap()
    .unwrap()
}

async fn sh(agent: &AgentClient, script: &str) -> String {
    let out = tokio::task::block_in_place(|| agent.exec(Exec::shell(script), T)).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_snapshot_restores_into_independent_clones() {
    let agent_bin = tokio::task::spawn_blocking(static_agent).await.unwrap();
    let image = tokio::task::spawn_blocking(move || {
        let recipe = BaseImageRecipe::resolve(&agent_bin).unwrap();
        build_base(&recipe, &agent_bin, &image_dir(), &mut |s: &str| {
            eprintln!("[image] {s}")
        })
        .unwrap()
    })
    .await
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    let qemu = Qemu::new(Accel::Tcg);
    let caps = qemu.probe().await.unwrap();
    assert_eq!(
        (caps.backend, caps.accel),
        (orgo_runtime::BackendKind::Qemu(Accel::Tcg), Accel::Tcg)
    );

    // The golden VM: its own layer over the base disk, its RAM in a file.
    let golden_disk = work.path().join("golden.qcow2");
    overlay(&image.rootfs(), "raw", &golden_disk);
    let config = VmConfig {
        id: "golden".into(),
        cpus: 1,
        memory_mib: 512,
        kernel: image.vmlinuz(),
        initrd: Some(image.initrd()),
        cmdline: format!("{KERNEL_CMDLINE} {USER_NET_IP}"),
        disk: Disk {
            path: golden_disk.clone(),
            format: DiskFormat::Qcow2,
            read_only: false,
        },
        memory_file: Some(work.path().join("golden.mem")),
        network: Network::User,
        run_dir: work.path().join("golden"),
    };
    let started = Instant::now();
    let golden = qemu.boot(&config).await.unwrap();
    eprintln!("golden booted; waiting for its agent");
    let client = agent(&*golden).await;
    eprintln!("golden agent ready");
    let boot_to_ready = started.elapsed();
    sh(&client, "echo built-in > /root/mark").await;
    drop(client);

    golden.pause().await.unwrap();
    eprintln!("golden paused");
    assert_eq!(golden.info().await.unwrap().state, VmState::Paused);
    let snapshot_started = Instant::now();
    let files = golden
        .snapshot(&work.path().join("snapshot"))
        .await
        .unwrap();
    let snapshot_time = snapshot_started.elapsed();
    assert!(
        golden.resume().await.is_err(),
        "a VM whose memory went into a snapshot must not run again"
    );
    golden.shutdown().await.unwrap();
    let state_bytes = std::fs::metadata(&files["state"]).unwrap().len();
    let memory_digest = sha256_file(&files["memory"]).unwrap();
    let disk_digest = sha256_file(&golden_disk).unwrap();

    // Two clones, each on its own layer over the golden disk.
    let mut clones = Vec::new();
    let mut restore_times = Vec::new();
    for i in 0..2 {
        let disk = work.path().join(format!("clone{i}.qcow2"));
        overlay(&golden_disk, "qcow2", &disk);
        let restore = RestoreConfig {
            id: format!("clone{i}"),
            snapshot: files.clone(),
            disk: Disk {
                path: disk,
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            cpus: 1,
            memory_mib: 512,
            network: Network::User,
            run_dir: work.path().join(format!("clone{i}")),
        };
        let started = Instant::now();
        let vm = qemu.restore(&restore).await.unwrap();
        eprintln!("clone {i} restored; waiting for its agent");
        let client = agent(&*vm).await;
        restore_times.push(started.elapsed());
        assert_eq!(vm.info().await.unwrap().state, VmState::Running);
        clones.push((vm, client));
    }
    for (i, (_, client)) in clones.iter().enumerate() {
        assert_eq!(
            sh(client, "cat /root/mark").await,
            "built-in\n",
            "clone {i}"
        );
        tokio::task::block_in_place(|| {
            client.reset_identity(vec![i as u8 + 1; 64], Some(format!("clone-{i}")), T)
        })
        .unwrap();
        sh(client, &format!("echo {i} > /root/who")).await;
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for (_, client) in &clones {
            ids.push(sh(client, "cat /etc/machine-id /root/who").await);
        }
        ids
    };
    assert_ne!(
        ids[0], ids[1],
        "clones have their own identity and their own disk"
    );
    // Too much memory for this snapshot is refused, not silently ignored.
    let too_big = RestoreConfig {
        id: "too-big".into(),
        snapshot: files.clone(),
        disk: Disk {
            path: golden_disk.clone(),
            format: DiskFormat::Qcow2,
            read_only: true,
        },
        cpus: 1,
        memory_mib: 1024,
        network: Network::None,
        run_dir: work.path().join("too-big"),
    };
    assert!(qemu.restore(&too_big).await.is_err());
    for (vm, client) in clones {
        drop(client);
        vm.shutdown().await.unwrap();
    }
    // The clones wrote to their memory and disks; the snapshot did not change.
    assert_eq!(sha256_file(&files["memory"]).unwrap(), memory_digest);
    assert_eq!(sha256_file(&golden_disk).unwrap(), disk_digest);

    eprintln!(
        "boot to ready {boot_to_ready:?}; snapshot {snapshot_time:?} ({state_bytes} bytes of \
         device state); restore to agent ready {restore_times:?}"
    );
}
