//! Launch and build figures under QEMU (TCG here), as a bench binary: the
//! numbers are printed, not asserted.
//!
//! - launch: from the `launch` call to the first successful `exec` answer,
//!   20 sequential launches from one snapshot: p50, p95;
//! - four launches at once from one snapshot, against one;
//! - restore at 2 GiB against 512 MiB (the backend alone: the template's
//!   `ram_gb` cannot say 512 MiB);
//! - a cache-hit `build`;
//! - a build's overhead beyond the template's own steps;
//! - the host network's cost: cold and pool launch p50 with it (a network
//!   namespace, nftables and `orgo-netd` per computer; the default as root)
//!   against QEMU's user-mode network (`RuntimeConfig::user_mode_network`),
//!   each over a snapshot built with its own network, measured in turns
//!   (`ORGO_BENCH_NETWORK_ONLY=1` measures only these).
//!
//! `cargo bench -p orgo-benches --bench launch`. Needs root and QEMU; the
//! agent is the one built into orgo-runtime (`ORGO_AGENT` overrides it);
//! the store is `ORGO_BENCH_HOME`, else `target/orgo-test-home` (where the
//! tests keep the base image).

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orgo_runtime::{
    Accel, BuildEvent, Exec, KERNEL_CMDLINE, LaunchOptions, Qemu, RestoreConfig, Runtime,
    RuntimeConfig, VmConfig, Vmm as _,
};
use orgo_template::Template;

fn home() -> PathBuf {
    std::env::var_os("ORGO_BENCH_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/orgo-test-home"),
        PathBuf::from,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn launch_and_exec(
    runtime: &Runtime,
    template: &Template,
) -> (Duration, orgo_runtime::Computer) {
    let started = Instant::now();
    let verbose = std::env::var_os("ORGO_BENCH_VERBOSE").is_some();
    let computer = runtime
        .launch(template, LaunchOptions::default(), &mut |event| {
            if let (true, BuildEvent::Status(text)) = (verbose, event) {
                eprintln!("  {text}");
            }
        })
        .await
        .unwrap();
    let out = computer
        .exec(Exec::argv(["true"]), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(out.status.success());
    (started.elapsed(), computer)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut config = RuntimeConfig::from_env(Some(home())).unwrap();
    config.accel = Some(Accel::Tcg);
    let runtime = Runtime::open(config).await.unwrap();

    // A build with one step of the user's, timed from the events.
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let template = Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: bench@1.0.0\nenv: {{ NONCE: \"{nonce}\" }}\n\
         build:\n  run: [\"sleep 2; echo step\"]\nhooks:\n  on_resume: echo resumed\n"
    ))
    .unwrap();
    let started = Instant::now();
    let mut step_started = None;
    let mut step_time = Duration::ZERO;
    let mut log = |event: BuildEvent| {
        if let BuildEvent::Step { .. } = event {
            step_started = Some(Instant::now());
        }
        if let (BuildEvent::Status(text), Some(at)) = (&event, step_started)
            && text.starts_with("capturing")
        {
            step_time = at.elapsed();
            step_started = None;
        }
    };
    let built = runtime.build(&template, &mut log).await.unwrap();
    let total = started.elapsed();
    assert!(built.built_here);
    println!(
        "build (base image cached): total {}, the user's step {} (of which `sleep 2`), overhead {}",
        ms(total),
        ms(step_time),
        ms(total.saturating_sub(step_time))
    );

    let mut hits = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let again = runtime.build(&template, &mut |_| {}).await.unwrap();
        hits.push(t.elapsed());
        assert!(!again.built_here);
    }
    hits.sort();
    println!(
        "cache-hit build: p50 {}, p95 {}",
        ms(percentile(&hits, 50.0)),
        ms(percentile(&hits, 95.0))
    );

    // Warm-up (page cache), then 20 launches that restore on the spot.
    let (_, warm) = launch_and_exec(&runtime, &template).await;
    warm.stop().await.unwrap();
    if std::env::var_os("ORGO_BENCH_NETWORK_ONLY").is_some() {
        network_cost(&runtime, &template, &nonce).await;
        return;
    }
    let cold = launches(&runtime, &template, None).await;
    report("cold (restore at launch)", &cold);
    // 20 launches, each taking a computer the pool restored and parked.
    let pooled = launches(&runtime, &template, Some(1)).await;
    report("from the warm pool", &pooled);

    for (name, pool, one) in [
        ("cold", None, percentile(&cold, 50.0)),
        ("from the warm pool", Some(4), percentile(&pooled, 50.0)),
    ] {
        let mut rounds = Vec::new();
        for _ in 0..3 {
            if let Some(n) = pool {
                runtime.prewarm(&template, n).await.unwrap();
            }
            let started = Instant::now();
            let launched = futures_join4(&runtime, &template).await;
            rounds.push(started.elapsed());
            for computer in launched {
                computer.stop().await.unwrap();
            }
        }
        rounds.sort();
        let four = rounds[1];
        println!(
            "four launches at once, {name} (all answered exec): median of 3 rounds {} = {:.2}x one launch",
            ms(four),
            four.as_secs_f64() / one.as_secs_f64()
        );
    }
    runtime.drain().await;

    network_cost(&runtime, &template, &nonce).await;

    if std::env::var_os("ORGO_BENCH_LAUNCHES").is_none() {
        memory_ratio(&runtime).await;
    }
}

/// Cold and pool launch p50 with the host network (`runtime`, `template`)
/// against the user-mode network (a runtime of its own on the same home, a
/// template of its own: a snapshot restores only onto the network it was
/// taken with), the two measured in turns so that the host's load weighs on
/// both alike.
async fn network_cost(runtime: &Runtime, template: &Template, nonce: &str) {
    let mut config = RuntimeConfig::from_env(Some(home())).unwrap();
    config.accel = Some(Accel::Tcg);
    config.user_mode_network = true;
    let user = Runtime::open(config).await.unwrap();
    let user_template = Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: bench-user-net@1.0.0\nenv: {{ NONCE: \"{nonce}\" }}\n\
         build:\n  run: [\"sleep 2; echo step\"]\nhooks:\n  on_resume: echo resumed\n"
    ))
    .unwrap();
    user.build(&user_template, &mut |_| {}).await.unwrap();
    let (_, warm) = launch_and_exec(&user, &user_template).await;
    warm.stop().await.unwrap();
    let n: usize = std::env::var("ORGO_BENCH_LAUNCHES").map_or(20, |v| v.parse().unwrap());
    for (name, pool) in [("cold", None), ("from the warm pool", Some(1))] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..n {
            for (rt, t, times) in [
                (runtime, template, &mut with),
                (&user, &user_template, &mut without),
            ] {
                if let Some(count) = pool {
                    rt.prewarm(t, count).await.unwrap();
                }
                let (took, computer) = launch_and_exec(rt, t).await;
                times.push(took);
                computer.stop().await.unwrap();
            }
        }
        with.sort();
        without.sort();
        let (a, b) = (percentile(&with, 50.0), percentile(&without, 50.0));
        println!(
            "launch p50 {name}, {n} each in turns: host network {} (p95 {}), user-mode network {} (p95 {}), {:+.1}%",
            ms(a),
            ms(percentile(&with, 95.0)),
            ms(b),
            ms(percentile(&without, 95.0)),
            (a.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
        );
    }
    user.drain().await;
}

/// 20 launches, one at a time, each from a pool of `pool` parked
/// computers filled beforehand (untimed), or with no pool.
async fn launches(runtime: &Runtime, template: &Template, pool: Option<usize>) -> Vec<Duration> {
    let mut times = Vec::new();
    let n: usize = std::env::var("ORGO_BENCH_LAUNCHES").map_or(20, |v| v.parse().unwrap());
    for _ in 0..n {
        if let Some(n) = pool {
            runtime.prewarm(template, n).await.unwrap();
        }
        let (took, computer) = launch_and_exec(runtime, template).await;
        times.push(took);
        computer.stop().await.unwrap();
    }
    times.sort();
    times
}

fn report(name: &str, times: &[Duration]) {
    println!(
        "launch -> first exec, 20 launches {name}: p50 {}, p95 {}, min {}, max {}",
        ms(percentile(times, 50.0)),
        ms(percentile(times, 95.0)),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
}

async fn futures_join4(runtime: &Runtime, template: &Template) -> Vec<orgo_runtime::Computer> {
    let (a, b, c, d) = tokio::join!(
        launch_and_exec(runtime, template),
        launch_and_exec(runtime, template),
        launch_and_exec(runtime, template),
        launch_and_exec(runtime, template),
    );
    vec![a.1, b.1, c.1, d.1]
}

/// Restore to agent-ready at 512 MiB and 2 GiB, through the backend.
async fn memory_ratio(runtime: &Runtime) {
    let (_, image) = runtime.base_image(&mut |_| {}).await.unwrap();
    let path = |role: &str| runtime.store().blob_path(&image.blobs[role].digest);
    let work = tempfile::tempdir().unwrap();
    let qemu = Qemu::new(Accel::Tcg);
    let mut medians = BTreeMap::new();
    for mib in [512u64, 2048] {
        let dir = work.path().join(format!("{mib}"));
        std::fs::create_dir_all(&dir).unwrap();
        let golden = dir.join("golden.qcow2");
        qemu_img_overlay(&path("rootfs.ext4"), "raw", &golden);
        let config = VmConfig {
            id: format!("golden-{mib}"),
            cpus: 1,
            memory_mib: mib,
            kernel: path("vmlinuz"),
            initrd: Some(path("initrd.cpio")),
            cmdline: KERNEL_CMDLINE.into(),
            disk: orgo_runtime::Disk {
                path: golden.clone(),
                format: orgo_runtime::DiskFormat::Qcow2,
                read_only: false,
            },
            memory_file: Some(dir.join("memory")),
            network: orgo_runtime::Network::None,
            run_dir: dir.join("golden-run"),
        };
        let vm = qemu.boot(&config).await.unwrap();
        agent_ready(vm.agent_endpoint()).await;
        vm.pause().await.unwrap();
        let snapshot = vm.snapshot(&dir.join("snapshot")).await.unwrap();
        vm.shutdown().await.unwrap();
        let mut times = Vec::new();
        for i in 0..10 {
            let disk = dir.join(format!("clone-{i}.qcow2"));
            qemu_img_overlay(&golden, "qcow2", &disk);
            let started = Instant::now();
            let clone = qemu
                .restore(&RestoreConfig {
                    id: format!("clone-{mib}-{i}"),
                    snapshot: snapshot.clone(),
                    disk: orgo_runtime::Disk {
                        path: disk,
                        format: orgo_runtime::DiskFormat::Qcow2,
                        read_only: false,
                    },
                    cpus: 1,
                    memory_mib: mib,
                    network: orgo_runtime::Network::None,
                    run_dir: dir.join(format!("clone-run-{i}")),
                })
                .await
                .unwrap();
            agent_ready(clone.agent_endpoint()).await;
            times.push(started.elapsed());
            clone.shutdown().await.unwrap();
        }
        times.sort();
        medians.insert(mib, percentile(&times, 50.0));
    }
    println!(
        "restore -> agent ready: 512 MiB {}, 2 GiB {}, ratio {:.2}",
        ms(medians[&512]),
        ms(medians[&2048]),
        medians[&2048].as_secs_f64() / medians[&512].as_secs_f64()
    );
}

async fn agent_ready(endpoint: orgo_runtime::AgentEndpoint) {
    let orgo_runtime::AgentEndpoint::Serial(path) = endpoint else {
        panic!("QEMU's agent is on a serial port");
    };
    tokio::task::spawn_blocking(move || {
        orgo_runtime::AgentClient::connect_serial(&path, Duration::from_secs(120)).unwrap()
    })
    .await
    .unwrap();
}

fn qemu_img_overlay(backing: &std::path::Path, format: &str, path: &std::path::Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(backing)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}
