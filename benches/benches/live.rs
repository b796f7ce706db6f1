//! Live-computer figures under QEMU (TCG here), as a bench binary: the
//! numbers are printed (medians), not asserted.
//!
//! - checkpoint of a 1 GiB and of a 4 GiB computer: how long its vCPUs
//!   stood, and the whole call (the capture, the secret scan, the store);
//! - fork of 1 and of 4: from the call to the first `exec` answer of each
//!   fork (the forks are launched one after the other);
//! - suspend (the call, and how long the vCPUs stood) and resume to the
//!   first `exec` answer.
//!
//! `cargo bench -p orgo-benches --bench live`; `ORGO_BENCH_ROUNDS` (default
//! 5) rounds of each. Needs root and QEMU; the store is `ORGO_BENCH_HOME`,
//! else `target/orgo-test-home` (where the tests keep the base image).
//! The checkpoints it stores are removed at the end (`orgo store gc` then
//! frees their blobs).

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_runtime::{Accel, Exec, LaunchOptions, Runtime, RuntimeConfig, Vault};
use orgo_snapshot::{Checkpoints, Store};
use orgo_template::Template;

fn home() -> PathBuf {
    std::env::var_os("ORGO_BENCH_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/orgo-test-home"),
        PathBuf::from,
    )
}

fn rounds() -> usize {
    std::env::var("ORGO_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn summary(what: &str, samples: Vec<Duration>) {
    let (lo, hi) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    println!(
        "{what}: median {} (min {}, max {}, n={})",
        ms(median(samples.clone())),
        ms(lo),
        ms(hi),
        samples.len()
    );
}

async fn answers(runtime: &Runtime, id: &str) {
    let computer = runtime.connect(id).await.unwrap();
    let out = computer
        .exec(Exec::argv(["true"]), Duration::from_secs(120))
        .await
        .unwrap();
    assert!(out.status.success());
    computer.detach();
}

/// A running computer of `template`, left to run on its own (a checkpoint
/// attaches to it), with a little state of its own written.
async fn running(runtime: &Runtime, template: &Template) -> String {
    let computer = runtime
        .launch(template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let out = computer
        .exec(
            Exec::shell("head -c 10000000 /dev/urandom > /root/ten-mb && sync"),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert!(out.status.success());
    let id = computer.id().to_owned();
    computer.detach();
    id
}

#[tokio::main]
async fn main() {
    let mut config = RuntimeConfig::new(home());
    config.accel = Some(Accel::Tcg);
    if let Some(agent) = std::env::var_os("ORGO_AGENT") {
        config.agent = Some(agent.into());
    }
    let runtime = Runtime::open(config).await.unwrap();
    let checkpoints = Checkpoints::new(Arc::new(runtime.store().clone()) as Arc<dyn Store>);
    let one = Template::from_yaml("api_version: orgo.ai/v1\nname: bench-live@1.0.0\n").unwrap();
    let four = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: bench-live-4g@1.0.0\nhardware: { ram_gb: 4 }\n",
    )
    .unwrap();
    for t in [&one, &four] {
        runtime.build(t, &mut |_| {}).await.unwrap();
    }
    let n = rounds();
    let mut stored = Vec::new();

    for (label, template) in [("1 GiB", &one), ("4 GiB", &four)] {
        let id = running(&runtime, template).await;
        let (mut paused, mut total) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let started = Instant::now();
            let checkpoint = runtime.checkpoint(&id, &Vault::new()).await.unwrap();
            total.push(started.elapsed());
            paused.push(checkpoint.paused);
            stored.push(checkpoint.digest);
            answers(&runtime, &id).await;
        }
        summary(&format!("checkpoint {label}: vCPUs stood"), paused);
        summary(&format!("checkpoint {label}: whole call"), total);
        runtime.stop(&id).await.unwrap();
    }

    let id = running(&runtime, &one).await;
    for count in [1, 4] {
        let mut first = Vec::new();
        let mut last = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            let (checkpoint, forks) = runtime
                .fork(&id, count, LaunchOptions::default())
                .await
                .unwrap();
            stored.push(checkpoint.digest);
            let mut times = Vec::new();
            for fork in forks {
                let out = fork
                    .exec(Exec::argv(["true"]), Duration::from_secs(120))
                    .await
                    .unwrap();
                assert!(out.status.success());
                times.push(started.elapsed());
                fork.stop().await.unwrap();
            }
            first.push(times[0]);
            last.push(*times.last().unwrap());
        }
        summary(&format!("fork of {count}: to the first fork's exec"), first);
        summary(&format!("fork of {count}: to the last fork's exec"), last);
    }

    let (mut suspend, mut stood, mut resume) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let started = Instant::now();
        stood.push(runtime.suspend(&id).await.unwrap());
        suspend.push(started.elapsed());
        let started = Instant::now();
        runtime.resume(&id).await.unwrap();
        answers(&runtime, &id).await;
        resume.push(started.elapsed());
    }
    summary("suspend 1 GiB: whole call", suspend);
    summary("suspend 1 GiB: vCPUs stood", stood);
    summary("resume 1 GiB: to the first exec", resume);
    runtime.stop(&id).await.unwrap();

    // Its checkpoints go; `orgo store gc` frees their blobs (not run here:
    // it would also drop the store's unpublished builds).
    for digest in &stored {
        checkpoints.remove(digest).await.unwrap();
    }
}
