//! `orgo launch` killed with SIGKILL at random points of its run, against
//! real computers under QEMU TCG: what each kill leaves is listed by `orgo
//! ps` as orphaned (or running, when the launch had finished: those are
//! stopped with `orgo stop`), and `orgo store gc` removes it all: no
//! computer directory, no QEMU, no lease; the store verifies at the end.
//!
//! Needs root, QEMU and mmdebstrap. The test has its own home (the
//! assertions are about everything in it), seeded with the base image of
//! the shared test store `target/orgo-test-home` (built there once, shared
//! with the other VM tests; hard links, no copies).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

// The static agent, the test store and nonces, shared with the runtime's
// VM tests.
#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Rng, nonce, static_agent, test_home, workspace};
use orgo_runtime::{Accel, Runtime, RuntimeConfig};
use orgo_snapshot::{BuildCache, LocalStore, RefKey, RefService as _, Store};

/// How many launches are killed.
const ROUNDS: usize = 50;

/// `orgo ARGS` on the store `home`, under TCG, with the static agent.
fn orgo(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgo"));
    command
        .current_dir(workspace())
        .env("ORGO_HOME", home)
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .env_remove("ORGO_WARM_POOL");
    command
}

/// Runs `orgo ARGS` on `home` and asserts it exited 0; returns its stdout.
fn orgo_ok(home: &Path, args: &[&str]) -> String {
    let out: Output = orgo(home).args(args).output().expect("orgo runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "`orgo {}` failed; stderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Seeds the store `home` with the shared test store's base image (built
/// there first if needed): its blobs hard-linked in, under the same recipe.
fn seed_base_image(home: &Path) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let mut config = RuntimeConfig::new(test_home());
        config.agent = Some(static_agent());
        config.accel = Some(Accel::Tcg);
        let shared = Runtime::open(config).await.unwrap();
        let (_, image) = shared
            .base_image(&mut |event| eprintln!("[base image] {event:?}"))
            .await
            .unwrap();
        let store = LocalStore::open(home).await.unwrap();
        let scratch = store.scratch_dir().await.unwrap();
        let mut files = BTreeMap::new();
        for (role, blob) in &image.blobs {
            let link = scratch.join(role);
            std::fs::hard_link(shared.store().blob_path(&blob.digest), &link).unwrap();
            files.insert(role.clone(), link);
        }
        let cache = BuildCache::new(Arc::new(store) as Arc<dyn Store>);
        cache.put_base_image(&image.recipe, &files).await.unwrap();
        let _ = std::fs::remove_dir_all(scratch);
    });
}

/// Every entry of `<home>/computers` (temporary directories included).
fn computer_dirs(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("computers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes (zombies aside) whose command line names `home`.
fn processes_naming(home: &Path) -> Vec<String> {
    let marker = home.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline
                .windows(marker.len())
                .any(|w| w == marker)
                .then_some(())?;
            orgo_runtime::process_alive(pid).then(|| {
                format!(
                    "{pid}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
        })
        .collect()
}

/// The lease refs of the store `home`.
fn leases(home: &Path) -> Vec<String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let store = LocalStore::open(home).await.unwrap();
        store
            .list_refs(&RefKey::new("leases").unwrap())
            .await
            .unwrap()
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect()
    })
}

/// `orgo ps --json`: each computer's id and status.
fn ps(home: &Path) -> BTreeMap<String, String> {
    orgo_ok(home, &["ps", "--json"])
        .lines()
        .map(|line| {
            let row: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            (
                row["id"].as_str().unwrap().to_owned(),
                row["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn killed_launches_leave_orphans_that_store_gc_removes() {
    let home_dir = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let home = home_dir.path().to_path_buf();
    seed_base_image(&home);

    let template = home.join("vm-kill.yaml");
    std::fs::write(
        &template,
        format!(
            "api_version: orgo.ai/v1\nname: vm-kill@1.0.0\nenv:\n  RUN_NONCE: \"{}\"\nbuild:\n  run:\n    - echo built > /opt/built.txt\nhooks:\n  on_resume: hostname > /opt/resumed.txt\n",
            nonce()
        ),
    )
    .unwrap();
    let template = template.to_str().unwrap();
    // Published, so that gc keeps its snapshot; built once.
    orgo_ok(&home, &["publish", template, "--namespace", "kill"]);
    orgo_ok(&home, &["build", template]);

    // One launch, to its end: how long a launch takes here.
    let started = Instant::now();
    let id = orgo_ok(&home, &["launch", template]);
    let whole = started.elapsed();
    orgo_ok(&home, &["stop", id.trim()]);
    assert_eq!(computer_dirs(&home), Vec::<String>::new());
    eprintln!("one launch: {} ms", whole.as_millis());

    let span = (whole.as_micros() as u64) * 6 / 5;
    let mut rng = Rng(0x0b5e_55ed_0c0f_fee5);
    let (mut orphaned, mut running) = (0, 0);
    for round in 0..ROUNDS {
        let delay = Duration::from_micros(rng.below(span + 1));
        let mut launch = orgo(&home)
            .args(["launch", template])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // It may have ended already: then its computer runs.
        let _ = launch.kill();
        launch.wait().unwrap();

        let mut orphans = BTreeSet::new();
        for (id, status) in ps(&home) {
            match status.as_str() {
                "orphaned" => {
                    orphans.insert(id);
                }
                "running" => {
                    running += 1;
                    assert_eq!(orgo_ok(&home, &["stop", &id]), format!("{id}\n"));
                }
                other => {
                    panic!("round {round} ({delay:?}): {id} is {other} after its launcher died")
                }
            }
        }
        orphaned += orphans.len();
        let gc = orgo_ok(&home, &["store", "gc"]);
        let swept: BTreeSet<String> = gc
            .lines()
            .find_map(|l| l.strip_prefix("removed ")?.split_once("orphaned computer"))
            .map(|(_, ids)| {
                ids.trim_start_matches('s')
                    .trim_start_matches(':')
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(swept, orphans, "round {round} ({delay:?}): gc said {gc:?}");
        assert_eq!(
            computer_dirs(&home),
            Vec::<String>::new(),
            "round {round} ({delay:?})"
        );
        assert_eq!(
            processes_naming(&home),
            Vec::<String>::new(),
            "round {round} ({delay:?})"
        );
        assert_eq!(
            leases(&home),
            Vec::<String>::new(),
            "round {round} ({delay:?})"
        );
    }
    eprintln!(
        "{ROUNDS} launches killed within {} ms: {orphaned} orphaned, {running} running",
        span / 1000
    );
    assert!(
        orphaned > 0,
        "no kill left an orphan: the kills missed the launches"
    );
    orgo_ok(&home, &["store", "verify"]);
}
