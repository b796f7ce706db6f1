//! Two hosts of one fleet, as two `orgo` processes with homes of their own
//! and one shared store: a real PostgreSQL server (refs and locks) and a
//! real S3-compatible server (s3s-fs, blobs as chunks), both started here on
//! 127.0.0.1.
//!
//! 1. The base image of the shared test home is put into the fleet's store,
//!    as the host that built it would have uploaded it.
//! 2. Both hosts `orgo build` one new template at once: one builds, the
//!    other waits for that build (a lock in the registry) and finds it.
//! 3. The builder publishes it, its home is removed, and the other host
//!    `orgo launch`es `fleet/fleet@1.0.0`, fetching the snapshot and the disk
//!    layers under it, and `exec` reads what the build wrote.
//! 4. Its second launch fetches nothing.
//!
//! Needs root, QEMU, mmdebstrap (for the base image, built once into
//! `target/orgo-test-home`), PostgreSQL's server (Debian's `postgresql`) and
//! the workspace's `orgo-test-s3` (built by `cargo test --workspace`).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{nonce, static_agent, test_home, workspace};
use orgo_fleet_testing::{Fleet, seed_base_image};
use orgo_snapshot::{LocalStore, Manifest, get_manifest};
use orgo_template::Digest;

/// One host: its own home and network range, the fleet's store.
struct Host<'a> {
    home: PathBuf,
    range: &'static str,
    fleet: &'a Fleet,
}

impl Host<'_> {
    fn orgo(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orgo"))
            .args(args)
            .current_dir(workspace())
            .envs(self.fleet.env())
            .env("ORGO_HOME", &self.home)
            .env("ORGO_NET_RANGE", self.range)
            .env("ORGO_ACCEL", "tcg")
            .env("ORGO_AGENT", static_agent())
            .env_remove("ORGO_CLOUD_HYPERVISOR")
            .env_remove("ORGO_URL")
            .output()
            .expect("orgo runs")
    }

    /// The blobs in this host's own store.
    fn local_blobs(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let dir = self.home.join("blobs/sha256");
        for sub in std::fs::read_dir(&dir).into_iter().flatten() {
            for blob in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                found.insert(blob.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        found
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The base image the other VM tests use, built into the shared test home
/// if it is not there yet: its recipe's digest and its manifest's.
fn test_base_image() -> (Digest, Digest) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(["image", "build-base", "--agent"])
        .arg(static_agent())
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env_remove("ORGO_STORE_URL")
        .env_remove("ORGO_REGISTRY_URL")
        .output()
        .unwrap();
    let text = ok(&out, "orgo image build-base");
    let (recipe, manifest) = text.trim().split_once(' ').unwrap();
    (recipe.parse().unwrap(), manifest.parse().unwrap())
}

fn template(dir: &Path) -> String {
    let path = dir.join("fleet.yaml");
    std::fs::write(
        &path,
        format!(
            r#"api_version: orgo.ai/v1
name: fleet@1.0.0
env:
  RUN_NONCE: "{}"
build:
  run:
    - echo "built by one host of the fleet" > /opt/fleet.txt
"#,
            nonce()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_one_host_builds_launches_on_another_which_fetches_it_once() {
    let fleet = Fleet::start();
    let (recipe, manifest) = test_base_image();
    let local = LocalStore::open(test_home()).await.unwrap();
    seed_base_image(&fleet.open().await, &local, &recipe, &manifest).await;

    let dir = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let hosts = [
        Host {
            home: dir.path().join("a"),
            range: "10.210.0.0/24",
            fleet: &fleet,
        },
        Host {
            home: dir.path().join("b"),
            range: "10.211.0.0/24",
            fleet: &fleet,
        },
    ];
    let file = template(dir.path());

    // Both build at once: one build.
    let builds: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = hosts
            .iter()
            .map(|host| scope.spawn(|| ok(&host.orgo(&["build", &file]), "orgo build")))
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let built = builds
        .iter()
        .filter(|line| line.contains("(built in"))
        .count();
    let cached = builds
        .iter()
        .filter(|line| line.contains("(cached)"))
        .count();
    assert_eq!(
        (built, cached),
        (1, 1),
        "one host built, the other waited: {builds:?}"
    );
    let snapshot = |line: &str| line.split(' ').nth(1).unwrap().to_owned();
    assert_eq!(snapshot(&builds[0]), snapshot(&builds[1]), "one snapshot");

    // The builder publishes it; the other host launches it by its ref:
    // fetched, not built. The builder's home goes first: nothing of it may
    // be read.
    let builder = usize::from(builds[1].contains("(built in"));
    ok(
        &hosts[builder].orgo(&["publish", &file, "--namespace", "fleet"]),
        "orgo publish",
    );
    std::fs::remove_dir_all(&hosts[builder].home).unwrap();
    let other = &hosts[1 - builder];
    let before = other.local_blobs();
    let id = ok(&other.orgo(&["launch", "fleet/fleet@1.0.0"]), "orgo launch")
        .trim()
        .to_owned();
    let fetched: BTreeSet<_> = other.local_blobs().difference(&before).cloned().collect();
    let rootfs = {
        let Manifest::BaseImage(image) = get_manifest(&local, &manifest).await.unwrap().unwrap()
        else {
            unreachable!("checked when seeded")
        };
        image.blobs["rootfs.ext4"].digest.hex()
    };
    assert!(
        fetched.contains(&rootfs),
        "the disk's backing file (the base image's root file system) was fetched: {fetched:?}"
    );
    // The golden disk names its backing file by its place in any store.
    let snapshot: Digest = snapshot(&builds[0]).parse().unwrap();
    let other_store = LocalStore::open(&other.home).await.unwrap();
    let Manifest::Snapshot(golden) = get_manifest(&other_store, &snapshot)
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("`{snapshot}` names no snapshot");
    };
    let disk = other_store.blob_path(&golden.blobs["disk"].digest);
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        info["backing-filename"],
        format!("../{}/{rootfs}", &rootfs[..2]),
        "{info}"
    );
    let text = ok(
        &other.orgo(&["exec", &id, "--", "cat", "/opt/fleet.txt"]),
        "orgo exec",
    );
    assert_eq!(text, "built by one host of the fleet\n");
    ok(&other.orgo(&["stop", &id]), "orgo stop");

    // A second launch there fetches nothing.
    let before = other.local_blobs();
    let id = ok(
        &other.orgo(&["launch", "fleet/fleet@1.0.0"]),
        "second orgo launch",
    )
    .trim()
    .to_owned();
    assert_eq!(other.local_blobs(), before, "nothing was fetched again");
    ok(&other.orgo(&["stop", &id]), "orgo stop");
}
