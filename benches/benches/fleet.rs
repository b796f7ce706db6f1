//! The fleet's shared store against a real S3-compatible server (s3s-fs,
//! `orgo-test-s3`) and a real PostgreSQL, both on 127.0.0.1, as a bench
//! binary: the numbers are printed (medians over rounds), not asserted.
//!
//! - **upload**: `S3Blobs::put_counted` of a 1 GiB memory-like blob (64 of
//!   its 256 4 MiB regions pseudo-random, picked at random; the other 75%
//!   zeros), into a fresh prefix each round: time and bytes sent. Then the
//!   same blob again (nothing sent), and against it the upload floor: the
//!   64 non-zero regions as 64 plain PUTs, 8 at once, no hashing.
//! - **dedup**: a second blob equal to the first but for 8 scattered 64 KiB
//!   changes (a second snapshot differing by one small file), put after the
//!   first: its `uploaded_bytes` against the blob's size. Target: under 25%.
//! - **fetch**: `CachedStore::fetch` of a 1 GiB blob of pseudo-random bytes
//!   (no zero chunk: the worst case for transfer) into an empty host cache
//!   (a fresh `LocalStore` each round, the `FleetStore` as shared store),
//!   against the floor: the same 256 chunk objects as plain GETs, 8 at once,
//!   written into a file at their offsets and fsynced, no hashing. Target:
//!   floor/fetch at least 0.8.
//! - **profile** of the fetch: `S3Blobs::open` read to a sink (GETs, each
//!   chunk's SHA-256, the whole blob's SHA-256), the floor's GETs to a sink,
//!   `LocalStore::put` of the blob from a local file (SHA-256, write, fsync),
//!   and one SHA-256 pass over 1 GiB in memory on one thread.
//! - **hashing**: SHA-256 over a 1 GiB file of 90% zeros (26 of 256 chunks
//!   pseudo-random), against only finding its zero chunks
//!   (`chunk.iter().all(|b| *b == 0)` over 4 MiB chunks, and the 64-byte
//!   OR-fold `S3Blobs` uses), and against a zero-aware digest's cost (the
//!   scan, then SHA-256 of the non-zero chunks alone). All read the file
//!   from the page cache.
//!
//! Each measurement runs interleaved with its baseline, in alternating
//! order, so that both see the same load. The servers' data and every file
//! live under `target/` (the bench sets `TMPDIR` to `target/fleet-bench-tmp`
//! for itself unless `TMPDIR` is set); about 6 GiB at the peak.
//!
//! Run with
//!
//! ```sh
//! cargo build --release -p orgo-fleet-testing --bin orgo-test-s3
//! cargo bench -p orgo-benches --bench fleet
//! ```
//!
//! The S3 server is found next to the bench (`target/release/`, where the
//! first command puts it) or at `ORGO_TEST_S3_BIN`, e.g.
//! `ORGO_TEST_S3_BIN=$PWD/target/debug/orgo-test-s3` after a plain
//! `cargo build -p orgo-fleet-testing --bin orgo-test-s3` (a debug server is
//! slower, for the floors too). PostgreSQL is Debian's (as the tests').
//! `ORGO_BENCH_ROUNDS` (default 5) rounds of each.

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt as _, PutPayload};
use orgo_fleet::{FleetStore, PgRegistry, PutStats, S3Blobs};
use orgo_fleet_testing::{Postgres, S3Server};
use orgo_snapshot::{BlobService as _, CachedStore, Fetched, LocalStore, Store};
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

const CHUNK: usize = S3Blobs::CHUNK_SIZE;
const REGIONS: usize = 256;
const SIZE: u64 = (CHUNK * REGIONS) as u64;
const PARALLEL: usize = 8;
/// The dedup blob's changes: how many, and how large each.
const CHANGES: usize = 8;
const CHANGE_LEN: usize = 64 << 10;

fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn rounds() -> usize {
    std::env::var("ORGO_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

/// xorshift64: fast pseudo-random bytes, no two 4 MiB regions alike.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            word.copy_from_slice(&self.0.to_le_bytes()[..word.len()]);
        }
    }

    fn below(&mut self, n: usize) -> usize {
        let mut word = [0; 8];
        self.fill(&mut word);
        (u64::from_le_bytes(word) % n as u64) as usize
    }
}

/// `count` distinct region numbers out of [`REGIONS`], picked at random.
fn pick(noise: &mut Noise, count: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..REGIONS).collect();
    for i in (1..REGIONS).rev() {
        order.swap(i, noise.below(i + 1));
    }
    let mut picked = vec![false; REGIONS];
    for &i in &order[..count] {
        picked[i] = true;
    }
    picked
}

/// Writes a 1 GiB file whose regions marked `true` are pseudo-random and
/// the others zeros; `patch` may change each region's bytes before.
fn write_blob(
    path: &Path,
    noisy: &[bool],
    seed: u64,
    mut patch: impl FnMut(usize, &mut [u8]),
) -> Vec<Option<Digest>> {
    let mut noise = Noise(seed);
    let mut file = std::io::BufWriter::new(File::create(path).unwrap());
    let mut buf = vec![0; CHUNK];
    let mut digests = Vec::with_capacity(REGIONS);
    for (i, &noisy) in noisy.iter().enumerate() {
        if noisy {
            noise.fill(&mut buf);
        } else {
            buf.fill(0);
        }
        patch(i, &mut buf);
        digests.push(buf.iter().any(|b| *b != 0).then(|| Digest::of(&buf)));
        file.write_all(&buf).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    digests
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// One row of the table: median, min, max, rounds, and the throughput of
/// `bytes` at the median.
fn row(what: &str, samples: &[Duration], bytes: u64) {
    let med = median(samples);
    let lo = samples.iter().min().unwrap();
    let hi = samples.iter().max().unwrap();
    let rate = if bytes == 0 {
        String::new()
    } else {
        format!(
            "{:>7.0} MiB/s",
            bytes as f64 / med.as_secs_f64() / f64::from(1 << 20)
        )
    };
    println!(
        "{what:<52} {:>8.0} ms  (min {:>6.0}, max {:>6.0}, n={})  {rate}",
        med.as_secs_f64() * 1e3,
        lo.as_secs_f64() * 1e3,
        hi.as_secs_f64() * 1e3,
        samples.len(),
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn stats_line(what: &str, stats: &PutStats) {
    println!(
        "  {what}: {} chunks, {} zero, {} uploaded, {} sent",
        stats.chunks,
        stats.zero_chunks,
        stats.uploaded_chunks,
        mib(stats.uploaded_bytes)
    );
}

/// The object store's client options for `server`.
fn builder(server: &S3Server) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(server.access_key())
        .with_secret_access_key(server.secret_key())
        .with_bucket_name(server.bucket())
}

fn blobs(server: &S3Server, prefix: &str) -> S3Blobs {
    S3Blobs::from_builder(
        builder(server),
        &format!("s3://{}/{prefix}", server.bucket()),
    )
    .unwrap()
}

async fn put(blobs: &S3Blobs, path: &Path) -> (Duration, Digest, PutStats) {
    let mut file = tokio::fs::File::open(path).await.unwrap();
    let start = Instant::now();
    let (info, stats) = blobs.put_counted(&mut file).await.unwrap();
    let took = start.elapsed();
    assert_eq!(info.size, SIZE);
    (took, info.digest, stats)
}

/// The upload floor: each region of `path` in `regions` PUT as a plain
/// object under `prefix`, [`PARALLEL`] at once, no hashing.
async fn put_floor(
    store: &Arc<AmazonS3>,
    path: &Path,
    regions: &[usize],
    prefix: &str,
) -> Duration {
    let file = Arc::new(File::open(path).unwrap());
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for &i in regions {
        if tasks.len() >= PARALLEL {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (store, file) = (Arc::clone(store), Arc::clone(&file));
        let key = Key::from(format!("{prefix}/{i}"));
        tasks.spawn(async move {
            let bytes = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; CHUNK];
                file.read_exact_at(&mut buf, (i * CHUNK) as u64).unwrap();
                buf
            })
            .await
            .unwrap();
            store.put(&key, PutPayload::from(bytes)).await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    start.elapsed()
}

/// The fetch floor: every chunk object GET, [`PARALLEL`] at once, written
/// at its offset into `dest` (then fsynced), or dropped if `dest` is `None`.
async fn get_floor(store: &Arc<AmazonS3>, keys: &[Key], dest: Option<&Path>) -> Duration {
    let start = Instant::now();
    let file = dest.map(|dest| Arc::new(File::create(dest).unwrap()));
    let mut tasks = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        if tasks.len() >= PARALLEL {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (store, file, key) = (Arc::clone(store), file.clone(), key.clone());
        tasks.spawn(async move {
            let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(bytes.len(), CHUNK);
            if let Some(file) = file {
                tokio::task::spawn_blocking(move || {
                    file.write_all_at(&bytes, (i * CHUNK) as u64).unwrap();
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    if let Some(file) = file {
        tokio::task::spawn_blocking(move || file.sync_all().unwrap())
            .await
            .unwrap();
    }
    start.elapsed()
}

/// Reads `path` in 4 MiB chunks, calling `each` on every one.
fn scan(path: &Path, mut each: impl FnMut(&[u8])) -> Duration {
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0; CHUNK];
    let start = Instant::now();
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let n = file.read(&mut buf[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        each(&buf[..filled]);
    }
    start.elapsed()
}

/// The library's zero test: 64-byte blocks ORed together.
fn is_zero_or64(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0, |acc, b| acc | b) == 0)
}

fn main() {
    // The servers keep their data in temporary directories: on the store's
    // disk, not in a /tmp that may be small.
    if std::env::var_os("TMPDIR").is_none() {
        let tmp = target().join("fleet-bench-tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("TMPDIR", &tmp)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let rounds = rounds();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    println!(
        "fleet bench: {rounds} rounds, files and servers' data under {}",
        dir.path().display()
    );
    let s3 = S3Server::start();
    let postgres = Postgres::start();
    let plain: Arc<AmazonS3> = Arc::new(builder(&s3).build().unwrap());

    // The blobs.
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let memory_regions = pick(&mut noise, REGIONS / 4);
    let memory = dir.path().join("memory.bin");
    write_blob(&memory, &memory_regions, 1, |_, _| {});
    // The dedup blob: the same bytes, 8 chunks apart a 64 KiB change each.
    let changed_at: Vec<(usize, usize)> = (0..CHANGES)
        .map(|k| {
            let region = k * (REGIONS / CHANGES) + noise.below(REGIONS / CHANGES);
            let offset = noise.below((CHUNK - CHANGE_LEN) / 4096) * 4096;
            (region, offset)
        })
        .collect();
    let in_zeros = changed_at
        .iter()
        .filter(|(region, _)| !memory_regions[*region])
        .count();
    let second = dir.path().join("memory-2.bin");
    let mut change_noise = Noise(7);
    write_blob(&second, &memory_regions, 1, |i, buf| {
        for &(region, offset) in &changed_at {
            if region == i {
                change_noise.fill(&mut buf[offset..offset + CHANGE_LEN]);
            }
        }
    });
    let full = dir.path().join("full.bin");
    let full_digests = write_blob(&full, &[true; REGIONS], 2, |_, _| {});
    let mostly_zero = dir.path().join("zeros-90.bin");
    let zero_regions = pick(&mut noise, REGIONS / 10 + 1);
    write_blob(&mostly_zero, &zero_regions, 3, |_, _| {});
    let noisy: Vec<usize> = (0..REGIONS).filter(|i| memory_regions[*i]).collect();
    println!(
        "memory-like blob: 1 GiB, {} of {REGIONS} 4 MiB regions pseudo-random, the rest zeros; \
         second blob: {CHANGES} changes of 64 KiB, {in_zeros} of them in zero regions",
        noisy.len()
    );
    println!("(a CI run of the whole project shares this machine's CPUs: numbers are under load)");
    println!();

    // Upload and dedup.
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut dedup = Vec::new();
    let mut floor_up = Vec::new();
    let mut stats = (
        PutStats::default(),
        PutStats::default(),
        PutStats::default(),
    );
    for round in 0..rounds {
        let store = blobs(&s3, &format!("upload/{round}"));
        let floor_prefix = format!("floor-upload/{round}");
        if round % 2 == 1 {
            floor_up.push(put_floor(&plain, &memory, &noisy, &floor_prefix).await);
        }
        let (took, digest, first_stats) = put(&store, &memory).await;
        first.push(took);
        if round % 2 == 0 {
            floor_up.push(put_floor(&plain, &memory, &noisy, &floor_prefix).await);
        }
        let (took, again_digest, again_stats) = put(&store, &memory).await;
        assert_eq!(again_digest, digest);
        again.push(took);
        let (took, _, second_stats) = put(&store, &second).await;
        dedup.push(took);
        stats = (first_stats, again_stats, second_stats);
    }
    let noisy_bytes = (noisy.len() * CHUNK) as u64;
    println!("upload ({rounds} rounds, medians)");
    row("put_counted 1 GiB memory-like, fresh prefix", &first, SIZE);
    row(
        "  floor: 64 plain PUTs of its non-zero 4 MiB",
        &floor_up,
        noisy_bytes,
    );
    row("put_counted same blob again", &again, SIZE);
    row("put_counted second blob (8 x 64 KiB changed)", &dedup, SIZE);
    stats_line("first", &stats.0);
    stats_line("again", &stats.1);
    stats_line("second", &stats.2);
    println!(
        "  dedup: second sent {} = {:.1}% of the blob's {} (target < 25%), {:.1}% of what the \
         first sent",
        mib(stats.2.uploaded_bytes),
        stats.2.uploaded_bytes as f64 * 100.0 / SIZE as f64,
        mib(SIZE),
        stats.2.uploaded_bytes as f64 * 100.0 / stats.0.uploaded_bytes.max(1) as f64,
    );
    println!(
        "  floor/put ratio: {:.2}",
        median(&floor_up).as_secs_f64() / median(&first).as_secs_f64()
    );
    println!();

    // Fetch.
    let fleet = FleetStore::new(
        blobs(&s3, "fetch"),
        PgRegistry::connect(&postgres.url()).await.unwrap(),
    );
    let (_, full_digest, _) = put(fleet.blobs(), &full).await;
    let fleet: Arc<dyn Store> = Arc::new(fleet);
    let opener = blobs(&s3, "fetch");
    let keys: Vec<Key> = full_digests
        .iter()
        .map(|digest| Key::from(opener.chunk_key(&digest.unwrap())))
        .collect();
    let mut fetch = Vec::new();
    let mut floor = Vec::new();
    let mut open_read = Vec::new();
    let mut gets_only = Vec::new();
    let mut local_put = Vec::new();
    let mut sha_pass = Vec::new();
    let mut full_bytes = vec![0; SIZE as usize];
    File::open(&full)
        .unwrap()
        .read_exact(&mut full_bytes)
        .unwrap();
    for round in 0..rounds {
        let floor_file = dir.path().join("floor.bin");
        let host = tempfile::tempdir_in(dir.path()).unwrap();
        let cached = CachedStore::new(
            LocalStore::open(host.path()).await.unwrap(),
            Arc::clone(&fleet),
        );
        if round % 2 == 1 {
            floor.push(get_floor(&plain, &keys, Some(&floor_file)).await);
        }
        let start = Instant::now();
        assert_eq!(
            cached.fetch(&full_digest).await.unwrap(),
            Fetched::Fetched(SIZE)
        );
        fetch.push(start.elapsed());
        if round % 2 == 0 {
            floor.push(get_floor(&plain, &keys, Some(&floor_file)).await);
        }
        drop(host);
        std::fs::remove_file(&floor_file).unwrap();

        // Where the time goes.
        let start = Instant::now();
        let mut reader = opener.open(&full_digest).await.unwrap().unwrap();
        let read = tokio::io::copy(&mut reader, &mut tokio::io::sink())
            .await
            .unwrap();
        assert_eq!(read, SIZE);
        open_read.push(start.elapsed());
        gets_only.push(get_floor(&plain, &keys, None).await);
        let host = tempfile::tempdir_in(dir.path()).unwrap();
        let local = LocalStore::open(host.path()).await.unwrap();
        let mut source = tokio::fs::File::open(&full).await.unwrap();
        let start = Instant::now();
        let info = local.put(&mut source).await.unwrap();
        local_put.push(start.elapsed());
        assert_eq!(info.digest, full_digest);
        drop(host);
        let start = Instant::now();
        let digest = Digest::from_sha256(Sha256::digest(&full_bytes).into());
        sha_pass.push(start.elapsed());
        assert_eq!(digest, full_digest);
    }
    drop(full_bytes);
    println!("fetch of 1 GiB, no zero chunk, into an empty host cache ({rounds} rounds, medians)");
    row("CachedStore::fetch (FleetStore shared)", &fetch, SIZE);
    row(
        "  floor: 256 plain GETs, 8 at once, to a file+fsync",
        &floor,
        SIZE,
    );
    println!(
        "  floor/fetch ratio: {:.2} (target >= 0.8)",
        median(&floor).as_secs_f64() / median(&fetch).as_secs_f64()
    );
    println!("profile of the fetch");
    row("  S3Blobs::open, read to a sink", &open_read, SIZE);
    row("  the floor's GETs to a sink (no file)", &gets_only, SIZE);
    row("  LocalStore::put from a local file", &local_put, SIZE);
    row("  one SHA-256 pass over 1 GiB in memory", &sha_pass, SIZE);
    println!();

    // Hashing a mostly-zero file.
    let mut sha = Vec::new();
    let mut zero_all = Vec::new();
    let mut zero_or = Vec::new();
    let mut zero_aware = Vec::new();
    let mut found = (0, 0);
    for round in 0..rounds {
        let mut measure = |which: usize| match which {
            0 => {
                let mut hasher = Sha256::new();
                let took = scan(&mostly_zero, |chunk| hasher.update(chunk));
                std::hint::black_box(hasher.finalize());
                sha.push(took);
            }
            1 => {
                let mut zeros = 0;
                zero_all.push(scan(&mostly_zero, |chunk| {
                    zeros += usize::from(chunk.iter().all(|b| *b == 0));
                }));
                found.0 = zeros;
            }
            2 => {
                let mut zeros = 0;
                zero_or.push(scan(&mostly_zero, |chunk| {
                    zeros += usize::from(is_zero_or64(chunk));
                }));
                found.1 = zeros;
            }
            _ => {
                let mut index = Sha256::new();
                let took = scan(&mostly_zero, |chunk| {
                    if is_zero_or64(chunk) {
                        index.update([0]);
                    } else {
                        index.update(Sha256::digest(chunk));
                    }
                });
                std::hint::black_box(index.finalize());
                zero_aware.push(took);
            }
        };
        // A different order each round.
        for k in 0..4 {
            measure((k + round) % 4);
        }
    }
    assert_eq!(found.0, found.1);
    println!(
        "hashing a 1 GiB file of 90% zeros ({} of {REGIONS} chunks zero), page-cached, \
         ({rounds} rounds, medians)",
        found.0
    );
    row("SHA-256 of the whole file", &sha, SIZE);
    row(
        "zero chunks found: iter().all(|b| *b == 0)",
        &zero_all,
        SIZE,
    );
    row(
        "zero chunks found: 64-byte OR-fold (S3Blobs')",
        &zero_or,
        SIZE,
    );
    row(
        "zero-aware: OR-fold scan + SHA-256 of non-zero",
        &zero_aware,
        SIZE,
    );
    println!(
        "  a zero-aware digest would take {:.0}% of the plain SHA-256's time",
        median(&zero_aware).as_secs_f64() * 100.0 / median(&sha).as_secs_f64()
    );
    drop(postgres);
    drop(s3);
}
