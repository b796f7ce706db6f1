//! A fleet with real computers (QEMU TCG here), as a bench binary: the
//! numbers are printed, not asserted. Two hosts are two runtimes with homes
//! of their own over one real PostgreSQL and one real s3s-fs
//! (`orgo-fleet-testing`), the base image seeded from the test home.
//!
//! - **build**: a template built on host A (in the fleet: stored, then
//!   uploaded; the base image fetched to A by a build before) against the
//!   same template built on the test home alone (another nonce): the cost
//!   of the upload in a build.
//! - **dedup**: the bytes a second template, the first plus one small
//!   file, adds to the object store (new chunk files under the bucket),
//!   against the first's snapshot size and against what the first added.
//!   Target: under 25%.
//! - **launch**: on a host that never built it (a fresh home each round),
//!   from the `launch` call to the first `exec` answer: cold with nothing
//!   here (the second template: its snapshot and the base image's root file
//!   system under its disk are fetched), cold with the base image here (the
//!   first template: its snapshot alone is fetched), and warm (the first
//!   again): medians, and what each cold launch fetched.
//!
//! `cargo build --release -p orgo-fleet-testing --bin orgo-test-s3 &&
//! cargo bench -p orgo-benches --bench fleet_vm`. Needs root, QEMU, Debian's
//! PostgreSQL; the base image is the test home's (`target/orgo-test-home`,
//! built there if missing); `ORGO_BENCH_ROUNDS` (default 5) launch rounds.

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_fleet_testing::{Fleet, seed_base_image};
use orgo_runtime::{Accel, Exec, LaunchOptions, Runtime, RuntimeConfig, SharedStore};
use orgo_snapshot::LocalStore;
use orgo_template::Template;

fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// A runtime on `home` under TCG; in the fleet when `fleet` is given.
async fn runtime(home: &Path, fleet: Option<&Fleet>, range: &str) -> Runtime {
    let mut config = match fleet {
        Some(fleet) => RuntimeConfig::from_env_in_fleet(
            Some(home.to_owned()),
            SharedStore(Arc::new(fleet.open().await)),
        ),
        None => RuntimeConfig::from_env(Some(home.to_owned())),
    }
    .unwrap();
    config.accel = Some(Accel::Tcg);
    config.net_range = range.parse().unwrap();
    Runtime::open(config).await.unwrap()
}

fn template(name: &str, nonce: &str, extra: &str) -> Template {
    Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: {name}@1.0.0\nenv: {{ NONCE: \"{nonce}\" }}\n\
         build:\n  run: [\"echo built > /opt/built.txt\"]\n{extra}"
    ))
    .unwrap()
}

/// The bytes of the chunk files under the bucket.
fn chunk_bytes(fleet: &Fleet) -> u64 {
    let dir = fleet.s3.root().join("fleet/chunks");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// From the `launch` call to the first `exec` answer.
async fn launch(runtime: &Runtime, template: &Template) -> (Duration, orgo_runtime::Computer) {
    let started = Instant::now();
    let computer = runtime
        .launch(template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let out = computer
        .exec(
            Exec::argv(["cat", "/opt/built.txt"]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(out.status.success());
    (started.elapsed(), computer)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ORGO_BENCH_ROUNDS").map_or(5, |v| v.parse().unwrap());
    let scratch = tempfile::tempdir_in(target()).unwrap();
    let fleet = Fleet::start();
    let nonce = format!("{:?}", std::time::SystemTime::now());

    // The base image, as the host that built it uploaded it.
    let test_home = target().join("orgo-test-home");
    let alone = runtime(&test_home, None, "10.220.0.0/24").await;
    let (image, manifest) = alone.base_image(&mut |_| {}).await.unwrap();
    let local = LocalStore::open(&test_home).await.unwrap();
    seed_base_image(&fleet.open().await, &local, &manifest.recipe, &image).await;

    // Build cost with and without the upload, host A's cache holding the
    // base image (a build before fetched it).
    let a = runtime(&scratch.path().join("a"), Some(&fleet), "10.221.0.0/24").await;
    a.build(&template("fleet-bench-warm-up", &nonce, ""), &mut |_| {})
        .await
        .unwrap();
    let first = template("fleet-bench", &nonce, "");
    let before = chunk_bytes(&fleet);
    let started = Instant::now();
    let built = a.build(&first, &mut |_| {}).await.unwrap();
    let in_fleet = started.elapsed();
    let first_added = chunk_bytes(&fleet) - before;
    let snapshot_bytes: u64 = built.manifest.blobs.values().map(|b| b.size).sum();
    let started = Instant::now();
    alone
        .build(&template("fleet-bench-alone", &nonce, ""), &mut |_| {})
        .await
        .unwrap();
    let on_its_own = started.elapsed();
    println!(
        "build: in a fleet (stored and uploaded) {}, on a host alone {} (+{})",
        ms(in_fleet),
        ms(on_its_own),
        ms(in_fleet.saturating_sub(on_its_own))
    );

    // What a second template, the first plus one small file, adds.
    let second = template(
        "fleet-bench",
        &nonce,
        "files:\n  - to: /opt/small.txt\n    inline: \"one small file\\n\"\n",
    );
    let before = chunk_bytes(&fleet);
    a.build(&second, &mut |_| {}).await.unwrap();
    let second_added = chunk_bytes(&fleet) - before;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "dedup: the first snapshot is {:.0} MiB (its blobs) and added {:.0} MiB of chunks; \
         the second (one more small file) added {:.1} MiB = {:.1}% of the first's size, \
         {:.1}% of what the first added",
        mib(snapshot_bytes),
        mib(first_added),
        mib(second_added),
        100.0 * second_added as f64 / snapshot_bytes as f64,
        100.0 * second_added as f64 / first_added.max(1) as f64,
    );

    // Launches on hosts that never built them.
    let (mut bare, mut based, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_bytes, mut based_bytes) = (0, 0);
    for round in 0..rounds {
        let home = scratch.path().join(format!("b{round}"));
        let b = runtime(&home, Some(&fleet), "10.222.0.0/24").await;
        let here = || walk(&home.join("blobs")).into_iter().sum::<u64>();
        let (took, computer) = launch(&b, &second).await;
        bare.push(took);
        computer.stop().await.unwrap();
        bare_bytes = here();
        let (took, computer) = launch(&b, &first).await;
        based.push(took);
        computer.stop().await.unwrap();
        based_bytes = here() - bare_bytes;
        let (took, computer) = launch(&b, &first).await;
        warm.push(took);
        computer.stop().await.unwrap();
        drop(b);
        std::fs::remove_dir_all(&home).unwrap();
    }
    let (bare, based, warm) = (median(bare), median(based), median(warm));
    println!(
        "launch to first exec, median of {rounds}: cold with nothing here {} (fetched {:.0} MiB), \
         cold with the base image here {} (fetched {:.0} MiB), warm {}; cold/warm {:.1}x and {:.1}x",
        ms(bare),
        mib(bare_bytes),
        ms(based),
        mib(based_bytes),
        ms(warm),
        bare.as_secs_f64() / warm.as_secs_f64(),
        based.as_secs_f64() / warm.as_secs_f64()
    );
}

/// The sizes of the files under `dir`.
fn walk(dir: &Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            sizes.extend(walk(&entry.path()));
        } else {
            sizes.push(meta.len());
        }
    }
    sizes
}
