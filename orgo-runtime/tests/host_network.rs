//! The host network without a VM: launches over the fake VMM (`fake/mod.rs`)
//! get real namespaces, veths, nftables and netd processes; 100 launch and
//! stop cycles leave none of them behind. The rootless fallback (forced by
//! `RuntimeConfig::user_mode_network`) refuses the network fields, naming
//! each and what the host lacks.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;
mod fake;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fake::{FakeVmm, fake_snapshot, processes_naming};
use orgo_runtime::{
    Accel, Backend, BackendKind, LaunchOptions, Runtime, RuntimeConfig, RuntimeError,
};
use orgo_template::Template;

const QEMU: BackendKind = BackendKind::Qemu(Accel::Tcg);

/// Namespaces, host links and slots of the computers of `home`, as the
/// host has them now: `(namespaces, links, held slots)`.
fn network_of(home: &Path, ids: &[String]) -> (Vec<String>, Vec<String>, Vec<PathBuf>) {
    let namespaces = ids
        .iter()
        .map(|id| format!("orgo-{id}"))
        .filter(|n| Path::new("/run/netns").join(n).exists())
        .collect();
    let links = ids
        .iter()
        .map(|id| format!("vo-{}", &id[2..]))
        .filter(|l| Path::new("/sys/class/net").join(l).exists())
        .collect();
    let computers = home.join("computers");
    let slots = std::fs::read_dir("/run/orgo/net")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| {
                        t.lines()
                            .nth(1)
                            .is_some_and(|l| l.starts_with(computers.to_str().unwrap()))
                    }) && held(&e.path())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    (namespaces, links, slots)
}

/// Whether someone holds the `flock` of `path`.
fn held(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    let free =
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
    !free
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_launch_and_stop_cycles_leave_no_namespace_link_slot_or_netd() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the host network needs root (network namespaces, nftables)"
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let vmm = FakeVmm::new(QEMU);
    let mut config = RuntimeConfig::new(&home);
    config.backend = Backend::Custom(Arc::clone(&vmm) as Arc<dyn orgo_runtime::Vmm>);
    let runtime = Runtime::open(config).await.unwrap();
    let template = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: cycles@1.0.0\negress_policy: { mode: allow, rules: ['10.99.0.0/24'] }\nhardware: { bandwidth_mbps: 50 }\n",
    )
    .unwrap();
    fake_snapshot(&runtime, &template, QEMU).await;
    let mut ids = Vec::new();
    for cycle in 0..100 {
        let computer = runtime
            .launch(&template, LaunchOptions::default(), &mut |_| {})
            .await
            .unwrap();
        let id = computer.id().to_owned();
        if cycle == 0 {
            // Real: the namespace, the host link, the slot and netd.
            let (namespaces, links, slots) = network_of(&home, std::slice::from_ref(&id));
            assert_eq!(
                (namespaces.len(), links.len(), slots.len()),
                (1, 1, 1),
                "{id}"
            );
            assert_eq!(
                processes_naming(&home.join("computers").join(&id).join("netd.json")).len(),
                1
            );
        }
        ids.push(id);
        computer.stop().await.unwrap();
    }
    let (namespaces, links, slots) = network_of(&home, &ids);
    assert_eq!(namespaces, Vec::<String>::new());
    assert_eq!(links, Vec::<String>::new());
    assert_eq!(slots, Vec::<PathBuf>::new());
    assert_eq!(processes_naming(&home), Vec::<u32>::new(), "no netd left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_host_network_the_network_fields_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.user_mode_network = true;
    let runtime = Runtime::open(config).await.unwrap();
    let template = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: net@1.0.0\n\
         egress_policy: { mode: allow, rules: [api.github.com] }\n\
         hardware: { bandwidth_mbps: 10 }\n\
         apps: [{ name: web, ports: [{ internal: 8000, public: true }, { internal: 9000 }] }]\n",
    )
    .unwrap();
    let Err(RuntimeError::Unsupportable(problems)) = runtime.check(&template) else {
        panic!("the network fields are refused");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "hardware.bandwidth_mbps",
            "apps[0].ports[0]",
            "apps[0].ports[1]",
            "egress_policy"
        ]
    );
    for p in &problems {
        assert!(p.missing.contains("user-mode network"), "{p}");
    }
    let error = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Unsupportable(_)), "{error:?}");
    // Learning needs the host network too: refused before anything starts.
    let plain = Template::from_yaml("api_version: orgo.ai/v1\nname: plain@1.0.0\n").unwrap();
    runtime.check(&plain).unwrap();
    let learning = LaunchOptions {
        egress_learn: true,
        ..LaunchOptions::default()
    };
    let error = runtime
        .launch(&plain, learning, &mut |_| {})
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("egress_learn") && text.contains("user-mode network"),
        "{text}"
    );
}
