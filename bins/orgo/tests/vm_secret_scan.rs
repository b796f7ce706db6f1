//! The positive control of the secret scan: a build whose step writes the
//! value of a secret of the `ORGO_SECRET_*` environment (here base64-encoded,
//! as a program writing a token to a config file does) fails before
//! anything is stored, naming the secret, the encoding and the file, never
//! the value.
//!
//! Needs root, QEMU and the base image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use orgo_snapshot::{BuildCache, LocalStore, Store};

use common::{nonce, static_agent, test_home, workspace};

fn orgo(args: &[&str], canary: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(args)
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env("ORGO_SECRET_BUILD_CANARY", canary)
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .output()
        .expect("orgo runs")
}

#[test]
fn a_build_that_writes_a_vault_secret_fails_naming_it_and_stores_nothing() {
    let canary = format!("canary-{}", nonce());
    let (head, tail) = canary.split_at(10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canary.yaml");
    // The step joins the value from two halves, so that only what it
    // writes holds it whole.
    std::fs::write(
        &file,
        format!(
            "api_version: orgo.ai/v1\nname: secret-scan@1.0.0\nbuild:\n  run:\n    - printf '%s%s' '{head}' '{tail}' | base64 > /root/token && sync\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let digest = {
        let out = orgo(&["digest", file], &canary);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };

    let out = orgo(&["build", file], &canary);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        err.contains("the snapshot holds the value of secret `build_canary` (base64) in the "),
        "the secret is named, with its encoding and file: {err}"
    );
    assert!(err.contains("nothing was stored"), "{err}");
    let encoded = {
        use std::io::Write as _;
        let mut child = Command::new("base64")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(canary.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    assert!(
        !err.contains(&canary) && !err.contains(encoded.trim()),
        "never the value: {err}"
    );
    let digest: orgo_template::Digest = digest.parse().unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let store = LocalStore::open(test_home()).await.unwrap();
        let cache = BuildCache::new(Arc::new(store) as Arc<dyn Store>);
        assert!(
            cache.get(&digest).await.unwrap().is_none(),
            "no snapshot is stored"
        );
        let record = cache
            .failure(&digest)
            .await
            .unwrap()
            .expect("the failure is recorded");
        assert!(
            record.message.contains("`build_canary`"),
            "{}",
            record.message
        );
        assert!(
            !record.message.contains(&canary) && !record.log.contains(&canary),
            "the record never holds the value"
        );
    });
}
