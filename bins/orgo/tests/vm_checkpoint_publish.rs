//! `orgo checkpoint ID --publish REF` under QEMU TCG: the checkpoint is
//! listed by `orgo templates` and launched by its ref like a template, with
//! what the computer had; the ref is immutable and is not a template to
//! build.
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

use common::{nonce, static_agent, test_home, workspace};

/// `orgo ARGS` on the shared store, under TCG, with the static agent.
fn orgo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(args)
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .env_remove("ORGO_WARM_POOL")
        .output()
        .expect("orgo runs")
}

/// Runs `orgo ARGS`, asserts it exited 0, returns its stdout.
fn orgo_ok(args: &[&str]) -> String {
    let out = orgo(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "`orgo {}` failed; stderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Computers stopped when dropped.
struct Stopped(Vec<String>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = orgo(&["stop", id]);
        }
    }
}

#[test]
fn a_published_checkpoint_launches_by_its_ref_with_what_the_computer_had() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.yaml");
    // The same template as `vm_pause_kill`'s: one build for both.
    std::fs::write(&file, "api_version: orgo.ai/v1\nname: pause-kill@1.0.0\n").unwrap();
    let mut computers = Stopped(Vec::new());
    let id = orgo_ok(&["launch", file.to_str().unwrap()])
        .trim()
        .to_owned();
    computers.0.push(id.clone());
    let mark = nonce();
    orgo_ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        &format!("echo {mark} > /root/branch && sync"),
    ]);

    let namespace = format!("t{}", &nonce().replace('-', "")[..12]);
    let reference = format!("{namespace}/branch@1.0.0");
    let digest = orgo_ok(&["checkpoint", &id, "--publish", &reference]);
    let digest = digest.strip_suffix('\n').unwrap();
    assert!(
        digest.starts_with("sha256:"),
        "the digest alone: {digest:?}"
    );

    let listed = orgo_ok(&["templates", &namespace]);
    assert_eq!(listed, format!("{reference} {digest} (checkpoint)\n"));

    // Launched by its ref: the file is there, in a computer of its own.
    let fork = orgo_ok(&["launch", &reference]).trim().to_owned();
    computers.0.push(fork.clone());
    assert_ne!(fork, id);
    assert_eq!(
        orgo_ok(&["exec", &fork, "--", "cat", "/root/branch"]),
        format!("{mark}\n")
    );
    assert_eq!(
        orgo_ok(&["exec", &fork, "--", "hostname"]),
        format!("{fork}\n"),
        "an identity of its own"
    );

    // Immutable: another checkpoint is refused the ref (and says it is
    // stored, not published); stdout stays empty.
    let again = orgo(&["checkpoint", &id, "--publish", &reference]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_ne!(again.status.code(), Some(0), "{err}");
    assert!(again.stdout.is_empty());
    assert!(err.contains("is stored, not published"), "{err}");
    assert!(
        err.contains(&format!("`{reference}` is already published as `{digest}`")),
        "{err}"
    );

    // Not a template: building it says what it is.
    let build = orgo(&["build", &reference]);
    let err = String::from_utf8_lossy(&build.stderr);
    assert_ne!(build.status.code(), Some(0), "{err}");
    assert!(err.contains("it is a published checkpoint"), "{err}");

    // A bad ref is refused before anything is paused.
    let bad = orgo(&["checkpoint", &id, "--publish", "not a ref"]);
    assert_eq!(bad.status.code(), Some(2), "{:?}", bad);

    orgo_ok(&["store", "verify"]);
}
