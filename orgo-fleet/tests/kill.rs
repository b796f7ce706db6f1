//! Hosts killed mid-upload (`kill -9`, at random points) leave a fleet's
//! store that `verify` passes, with a real PostgreSQL and a real s3s-fs;
//! gc then removes what the killed uploads left.
//!
//! A plain `main` (harness = false): the binary is both the test and, when
//! `ORGO_TEST_ROLE` is set, the writer process it spawns and kills.
#![allow(clippy::unwrap_used, reason = "a test binary without the test harness")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use orgo_fleet::{FleetStore, PgRegistry, S3Blobs};
use orgo_fleet_testing::{Postgres, S3Server, s3_blobs};
use orgo_snapshot::{BuildCache, HardwareShape, SnapshotArtifacts, Store, gc, verify};
use orgo_template::{Digest, Template};

/// What a writer needs to reach the fleet (given to it by the parent).
struct Target {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    registry: String,
}

impl Target {
    fn from_env() -> Target {
        let var = |name: &str| std::env::var(name).unwrap();
        Target {
            endpoint: var("ORGO_TEST_ENDPOINT"),
            bucket: var("ORGO_TEST_BUCKET"),
            access_key: var("ORGO_TEST_ACCESS_KEY"),
            secret_key: var("ORGO_TEST_SECRET_KEY"),
            registry: var("ORGO_TEST_REGISTRY"),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        let blobs = s3_blobs(
            &self.endpoint,
            &format!("s3://{}/fleet", self.bucket),
            &self.access_key,
            &self.secret_key,
        );
        let registry = PgRegistry::connect(&self.registry).await.unwrap();
        Arc::new(FleetStore::new(blobs, registry))
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("ORGO_TEST_ROLE").is_ok() {
        let seed: u64 = std::env::var("ORGO_TEST_SEED").unwrap().parse().unwrap();
        runtime.block_on(writer(Target::from_env(), seed));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("killed_uploads_leave_a_sound_store: test");
        return;
    }
    eprintln!("test killed_uploads_leave_a_sound_store ...");
    runtime.block_on(killed_uploads_leave_a_sound_store());
    eprintln!("test killed_uploads_leave_a_sound_store ... ok");
}

fn spawn(postgres: &Postgres, s3: &S3Server, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("ORGO_TEST_ROLE", "writer")
        .env("ORGO_TEST_SEED", seed.to_string())
        .env("ORGO_TEST_ENDPOINT", s3.endpoint())
        .env("ORGO_TEST_BUCKET", s3.bucket())
        .env("ORGO_TEST_ACCESS_KEY", s3.access_key())
        .env("ORGO_TEST_SECRET_KEY", s3.secret_key())
        .env("ORGO_TEST_REGISTRY", postgres.url())
        .spawn()
        .unwrap()
}

async fn killed_uploads_leave_a_sound_store() {
    let (postgres, s3) = (Postgres::start(), S3Server::start());
    let target = Target {
        endpoint: s3.endpoint(),
        bucket: s3.bucket().to_owned(),
        access_key: s3.access_key().to_owned(),
        secret_key: s3.secret_key().to_owned(),
        registry: postgres.url(),
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..5 {
        // Two hosts write at once; both are killed at a random moment.
        let mut children = [
            spawn(&postgres, &s3, rng.next()),
            spawn(&postgres, &s3, rng.next()),
        ];
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        for child in &mut children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let store = target.open().await;
        let report = verify(&*store).await.unwrap();
        assert!(
            report.problems.is_empty(),
            "round {round}: verify found {:?}",
            report.problems
        );
        eprintln!(
            "round {round}: {} blobs and {} refs verified",
            report.blobs, report.refs
        );
    }
    // What the killed uploads left (chunks no index names) goes with gc
    // once past its grace period; the store stays sound.
    let store = target.open().await;
    gc(&*store).await.unwrap();
    let report = verify(&*store).await.unwrap();
    assert!(
        report.problems.is_empty(),
        "after gc: {:?}",
        report.problems
    );
}

/// Builds templates forever (each a snapshot of three multi-chunk files,
/// through the build cache, as a host's builds are stored), until killed.
async fn writer(target: Target, seed: u64) {
    let store = target.open().await;
    let cache = BuildCache::new(store);
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let (base_image, image) = cache
        .put_base_image(
            &Digest::of(b"recipe"),
            &BTreeMap::from([("vmlinuz".to_owned(), kernel)]),
        )
        .await
        .unwrap();
    let kernel = image.blobs["vmlinuz"].digest;
    let mut rng = Rng(seed | 1);
    for build in 0.. {
        let template = Template::from_yaml(&format!(
            "api_version: orgo.ai/v1\nname: app@1.0.{build}\nenv: {{SEED: \"{seed}\"}}\n"
        ))
        .unwrap();
        let files = write_files(dir.path(), &mut rng, build);
        cache
            .get_or_build(&template.digest(), || async move {
                Ok(SnapshotArtifacts {
                    files,
                    hardware: HardwareShape {
                        cpu: 1,
                        memory_mib: 256,
                        disk_gb: 1,
                    },
                    backend: "test".into(),
                    base_image,
                    kernel,
                    agent: None,
                })
            })
            .await
            .unwrap();
    }
}

/// A snapshot's files: up to 2 chunks each, a quarter of their chunks zeros.
fn write_files(dir: &Path, rng: &mut Rng, build: u64) -> BTreeMap<String, std::path::PathBuf> {
    let mut files = BTreeMap::new();
    for role in ["disk", "memory", "state"] {
        let size = 1 + rng.below(2 * S3Blobs::CHUNK_SIZE as u64) as usize;
        let mut bytes = vec![0u8; size];
        for (i, chunk) in bytes.chunks_mut(S3Blobs::CHUNK_SIZE).enumerate() {
            if i % 4 != 3 {
                chunk.iter_mut().for_each(|b| *b = rng.next() as u8);
            }
        }
        let path = dir.join(format!("{build}-{role}"));
        std::fs::write(&path, bytes).unwrap();
        files.insert(role.to_owned(), path);
    }
    files
}

/// xorshift64*: reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
