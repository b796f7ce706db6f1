//! The local store against plain file copies, and the launch path's lookups.
//!
//! - `blob_write/*`: storing a 256 MiB file. `fs_copy` is `std::fs::copy` (in
//!   the kernel, no hashing, no fsync); `fs_copy_fsync_rename` adds what
//!   crash safety needs (a new file, fsync, rename over the old one); `put_file_copy` is `LocalStore::put_file(Copy)`
//!   (read, SHA-256, write, fsync, rename, directory fsync); `put_file_move`
//!   stores a file already on the store's filesystem (hash, then rename).
//!   Target: `put_file_copy` within 1.5x of `fs_copy`.
//! - `blob_read/*`: reading it back into a file. `fs_copy` again, against
//!   `verified_read` (the store's reader, hashing as it streams).
//! - `lookup/*`: `resolve_digest` (one ref read) and `resolve_and_manifest`
//!   (a ref, then the snapshot ref and manifest a launch loads). Target: under 1 ms.
//!
//! The files live in a temp directory under `target/` (the store's disk, not
//! tmpfs). Run with `cargo bench -p orgo-benches --bench store`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orgo_snapshot::{
    BlobService as _, BuildCache, HardwareShape, LocalStore, PutMode, Registry, SnapshotArtifacts,
    Store,
};
use orgo_template::{Digest, Name, Template};
use tokio::io::AsyncWriteExt as _;

const SIZE: usize = 256 << 20;

fn write_source(path: &Path) {
    // Varied bytes, so nothing below us can shortcut zeros.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(SIZE);
    while bytes.len() < SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write the source file");
}

fn bench_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).expect("target dir");
    let dir = tempfile::tempdir_in(&target).expect("a temp dir on the store's disk");
    let source = dir.path().join("source.bin");
    write_source(&source);
    let store = runtime
        .block_on(LocalStore::open(dir.path().join("store")))
        .expect("open the store");
    let copy = dir.path().join("copy.bin");

    let mut group = c.benchmark_group("blob_write");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("fs_copy", |b| {
        b.iter(|| std::fs::copy(&source, &copy).expect("copy"))
    });
    // What the store does for crash safety, without hashing: a new file,
    // copied, fsynced, renamed over the old one (whose blocks are freed).
    let fresh = dir.path().join("fresh.bin");
    group.bench_function("fs_copy_fsync_rename", |b| {
        b.iter(|| {
            std::fs::copy(&source, &fresh).expect("copy");
            std::fs::File::open(&fresh)
                .and_then(|f| f.sync_all())
                .expect("fsync");
            std::fs::rename(&fresh, &copy).expect("rename");
        })
    });
    group.bench_function("put_file_copy", |b| {
        b.iter(|| {
            runtime
                .block_on(store.put_file(&source, PutMode::Copy))
                .expect("put")
        })
    });
    group.bench_function("put_file_move", |b| {
        b.iter_batched(
            || {
                let moved = dir.path().join("store/moving.bin");
                std::fs::copy(&source, &moved).expect("copy");
                moved
            },
            |moved| {
                runtime
                    .block_on(store.put_file(&moved, PutMode::Move))
                    .expect("put")
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();

    let digest = runtime
        .block_on(store.put_file(&source, PutMode::Copy))
        .expect("put")
        .digest;
    let mut group = c.benchmark_group("blob_read");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("fs_copy", |b| {
        b.iter(|| std::fs::copy(&source, &copy).expect("copy"))
    });
    group.bench_function("verified_read", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut reader = store.open(&digest).await.expect("open").expect("stored");
                let mut out = tokio::fs::File::create(&copy).await.expect("create");
                tokio::io::copy_buf(
                    &mut tokio::io::BufReader::with_capacity(1 << 20, &mut reader),
                    &mut out,
                )
                .await
                .expect("a verified read");
                out.flush().await.expect("flush");
            })
        })
    });
    group.finish();

    // A published template with a built snapshot, as a launch finds it.
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let registry = Registry::new(shared.clone());
    let cache = BuildCache::new(shared);
    let template =
        Template::from_yaml("api_version: orgo.ai/v1\nname: app@1.0.0\n").expect("valid");
    let reference = "default/app@1.0.0".parse().expect("a ref");
    runtime.block_on(async {
        registry
            .publish(Name::new("default").expect("name"), &template)
            .await
            .expect("publish");
        let state = dir.path().join("state.bin");
        std::fs::write(&state, b"device state").expect("write");
        cache
            .get_or_build(&template.digest(), || async {
                Ok(SnapshotArtifacts {
                    files: BTreeMap::from([("state".to_owned(), state)]),
                    hardware: HardwareShape {
                        cpu: 1,
                        memory_mib: 512,
                        disk_gb: 1,
                    },
                    backend: "qemu".into(),
                    base_image: Digest::of(b"base"),
                    kernel: Digest::of(b"kernel"),
                    agent: None,
                })
            })
            .await
            .expect("build");
    });
    let mut group = c.benchmark_group("lookup");
    group.bench_function("resolve_digest", |b| {
        b.iter(|| {
            runtime
                .block_on(registry.resolve_digest(&reference))
                .expect("resolve")
        })
    });
    group.bench_function("resolve_and_manifest", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let digest = registry.resolve_digest(&reference).await.expect("resolve");
                cache
                    .get(&digest.expect("published"))
                    .await
                    .expect("get")
                    .expect("built")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
