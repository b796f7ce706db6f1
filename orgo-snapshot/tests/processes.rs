//! Several processes on one local store: single flight across processes,
//! parallel publishers, and `kill -9` of writers at random points.
//!
//! A plain `main` (harness = false): the binary is both the test and, when
//! `ORGO_TEST_ROLE` is set, the child process it spawns.
#![allow(clippy::unwrap_used, reason = "a test binary without the test harness")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use orgo_snapshot::{
    BuildCache, BuildFailure, HardwareShape, LocalStore, PutMode, Registry, SnapshotArtifacts,
    Store, StoreError, gc, verify,
};
use orgo_template::{Digest, Name, Template};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(role) = std::env::var("ORGO_TEST_ROLE") {
        let root = PathBuf::from(std::env::var("ORGO_TEST_STORE").unwrap());
        runtime.block_on(child(&role, &root));
        return;
    }
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    type Test = fn(&tokio::runtime::Runtime);
    let tests: [(&str, Test); 3] = [
        (
            "single_flight_across_processes",
            single_flight_across_processes,
        ),
        ("parallel_publishers_across_processes", parallel_publishers),
        ("kill_9_leaves_a_sound_store", kill_9_leaves_a_sound_store),
    ];
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        eprintln!("test {name} ...");
        test(&runtime);
        eprintln!("test {name} ... ok");
    }
}

fn spawn(role: &str, root: &Path, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("ORGO_TEST_ROLE", role)
        .env("ORGO_TEST_STORE", root)
        .env("ORGO_TEST_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn template(version: &str, greeting: &str) -> Template {
    Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: app@{version}\nenv: {{GREETING: \"{greeting}\"}}\n"
    ))
    .unwrap()
}

async fn open(root: &Path) -> Arc<dyn Store> {
    Arc::new(LocalStore::open(root).await.unwrap())
}

/// Files for a fake build, written beside the store (same filesystem, so
/// they are moved in, as a real build's are).
/// A base image (a gc root) for the snapshots to name: (manifest, kernel).
async fn base(cache: &BuildCache, root: &Path) -> (Digest, Digest) {
    let dir = root.join("scratch");
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let kernel = dir.join(format!("{}-vmlinuz", std::process::id()));
    tokio::fs::write(&kernel, b"kernel").await.unwrap();
    let files = BTreeMap::from([("vmlinuz".to_owned(), kernel)]);
    let (image, manifest) = cache
        .put_base_image(&Digest::of(b"recipe"), &files)
        .await
        .unwrap();
    (image, manifest.blobs["vmlinuz"].digest)
}

/// Children wait here until the parent has seen all of them ready, so they
/// call into the store together.
async fn rendezvous(root: &Path) {
    let dir = root.join("rendezvous");
    tokio::fs::create_dir_all(&dir).await.unwrap();
    tokio::fs::write(dir.join(std::process::id().to_string()), b"")
        .await
        .unwrap();
    while !root.join("go").exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn release_when_ready(root: &Path, children: usize) {
    let dir = root.join("rendezvous");
    while std::fs::read_dir(&dir).map_or(0, |d| d.count()) < children {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(root.join("go"), b"").unwrap();
}

async fn artifacts(
    root: &Path,
    (base_image, kernel): (Digest, Digest),
    seed: u64,
    size: usize,
) -> SnapshotArtifacts {
    let dir = root.join("scratch");
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let mut rng = Rng(seed | 1);
    let mut files = BTreeMap::new();
    for role in ["disk", "memory", "state"] {
        let path = dir.join(format!("{}-{seed}-{role}", std::process::id()));
        tokio::fs::write(&path, rng.bytes(size)).await.unwrap();
        files.insert(role.to_owned(), path);
    }
    SnapshotArtifacts {
        files,
        hardware: HardwareShape {
            cpu: 1,
            memory_mib: 512,
            disk_gb: 1,
        },
        backend: "test".into(),
        base_image,
        kernel,
        agent: None,
    }
}

async fn child(role: &str, root: &Path) {
    let seed: u64 = std::env::var("ORGO_TEST_SEED").unwrap().parse().unwrap();
    let store = open(root).await;
    match role {
        "builder" => {
            let cache = BuildCache::new(store);
            let base = base(&cache, root).await;
            let digest = template("1.0.0", "shared").digest();
            let builds = root.join("builds.log");
            rendezvous(root).await;
            let built = cache
                .get_or_build(&digest, || async move {
                    use std::io::Write as _;
                    let mut log = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&builds)
                        .unwrap();
                    writeln!(log, "{}", std::process::id()).unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(artifacts(root, base, seed, 4096).await)
                })
                .await
                .unwrap();
            println!("{} {}", built.digest, built.built_here);
        }
        "failing-builder" => {
            let cache = BuildCache::new(store);
            let digest = template("1.0.0", "doomed").digest();
            rendezvous(root).await;
            let outcome = cache
                .get_or_build(&digest, || async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err(BuildFailure {
                        message: format!("failed in {}", std::process::id()),
                        log: String::new(),
                    })
                })
                .await;
            match outcome {
                Err(StoreError::BuildFailed { message, .. }) => println!("{message}"),
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        "publisher" => {
            let registry = Registry::new(store);
            let ns = Name::new("default").unwrap();
            match registry
                .publish(ns, &template("1.0.0", &format!("p{seed}")))
                .await
            {
                Ok(published) => println!("created {}", published.created),
                Err(StoreError::Immutable { .. }) => println!("immutable"),
                Err(e) => panic!("{e}"),
            }
        }
        "writer" => writer(store, root, seed).await,
        _ => panic!("unknown role {role}"),
    }
}

/// Writes forever, every kind of write, until killed.
async fn writer(store: Arc<dyn Store>, root: &Path, seed: u64) {
    let mut rng = Rng(seed | 1);
    let registry = Registry::new(store.clone());
    let cache = BuildCache::new(store.clone());
    let base = base(&cache, root).await;
    let ns = Name::new("default").unwrap();
    loop {
        match rng.below(6) {
            0 => {
                let len = rng.below(3 << 20) as usize;
                let bytes = rng.bytes(len);
                store.put(&mut bytes.as_slice()).await.unwrap();
            }
            1 => {
                let path = root.join(format!("scratch/{}-{}", std::process::id(), rng.next()));
                tokio::fs::create_dir_all(root.join("scratch"))
                    .await
                    .unwrap();
                let len = rng.below(2 << 20) as usize;
                tokio::fs::write(&path, rng.bytes(len)).await.unwrap();
                store.put_file(&path, PutMode::Move).await.unwrap();
            }
            2 => {
                let t = template(&format!("1.0.{}", rng.below(20)), &rng.below(3).to_string());
                match registry.publish(ns.clone(), &t).await {
                    Ok(_) | Err(StoreError::Immutable { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            3 => {
                let t = template(&format!("2.0.{}", rng.below(20)), "built");
                registry.publish(ns.clone(), &t).await.unwrap();
                let size = rng.below(1 << 20) as usize;
                let seed = rng.next();
                cache
                    .get_or_build(&t.digest(), || async move {
                        Ok(artifacts(root, base, seed, size).await)
                    })
                    .await
                    .unwrap();
            }
            4 => {
                let version = format!("1.0.{}", rng.below(20));
                let reference = format!("default/app@{version}").parse().unwrap();
                registry.delete(&reference).await.unwrap();
            }
            _ => {
                gc(&*store).await.unwrap();
            }
        }
    }
}

/// What each child printed, once it exited successfully.
fn stdout_of(children: Vec<Child>) -> Vec<String> {
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a child failed: {:?}", out.status);
            String::from_utf8(out.stdout).unwrap()
        })
        .collect()
}

fn single_flight_across_processes(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..4).map(|i| spawn("builder", dir.path(), i)).collect();
    release_when_ready(dir.path(), 4);
    let outputs = stdout_of(children);
    let builds = std::fs::read_to_string(dir.path().join("builds.log")).unwrap();
    assert_eq!(
        builds.lines().count(),
        1,
        "one build for four processes: {builds}"
    );
    let digests: Vec<&str> = outputs
        .iter()
        .map(|o| o.split(' ').next().unwrap())
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{outputs:?}");
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.trim_end().ends_with("true"))
            .count(),
        1
    );

    // A failure is everyone's outcome: the waiters get the builder's error.
    let children: Vec<Child> = (0..3)
        .map(|i| spawn("failing-builder", dir.path(), i))
        .collect();
    let messages = stdout_of(children);
    assert!(
        messages.iter().all(|m| *m == messages[0]),
        "one build failed for all: {messages:?}"
    );
    let report = runtime.block_on(async { verify(&*open(dir.path()).await).await.unwrap() });
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn parallel_publishers(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..6).map(|i| spawn("publisher", dir.path(), i)).collect();
    let outputs = stdout_of(children);
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.trim() == "created true")
            .count(),
        1,
        "{outputs:?}"
    );
    assert_eq!(
        outputs.iter().filter(|o| o.trim() == "immutable").count(),
        5,
        "{outputs:?}"
    );
    let report = runtime.block_on(async { verify(&*open(dir.path()).await).await.unwrap() });
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn kill_9_leaves_a_sound_store(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let rounds: u64 = std::env::var("ORGO_KILL_ROUNDS").map_or(40, |r| r.parse().unwrap());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut checked = 0;
    let mut interrupted = 0;
    for round in 0..rounds {
        // Two writers at once, killed at a random moment.
        let mut writers: Vec<Child> = (0..2)
            .map(|i| spawn("writer", dir.path(), round * 2 + i + 1))
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        for writer in &mut writers {
            let status = writer.try_wait().unwrap();
            assert!(
                status.is_none(),
                "round {round}: a writer died on its own: {status:?}"
            );
            writer.kill().unwrap(); // SIGKILL
            writer.wait().unwrap();
        }
        interrupted += std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let report = runtime.block_on(async { verify(&*open(dir.path()).await).await.unwrap() });
        assert!(
            report.problems.is_empty(),
            "round {round}: {}",
            report
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        checked += report.blobs;
    }
    // What the killed writers left in tmp/ is swept; the store stays sound.
    let (gc_report, report) = runtime.block_on(async {
        let store = open(dir.path()).await;
        (gc(&*store).await.unwrap(), verify(&*store).await.unwrap())
    });
    assert!(report.problems.is_empty());
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "gc sweeps every crashed writer's temp file");
    eprintln!(
        "  {rounds} rounds, {interrupted} writes cut short, {checked} blobs verified, \
         the last gc swept {}",
        gc_report.incomplete_removed
    );
}

/// xorshift64*: deterministic per seed, no dependency.
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

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
