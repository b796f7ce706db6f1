//! `orgo checkpoint` and `orgo suspend` killed with SIGKILL while the
//! computer stands paused, against real computers under QEMU TCG: the next
//! orgo command finds the pause's process dead and undoes it (or finishes
//! it: a suspend recorded before the kill stays suspended). The computer
//! runs on with its files (or resumes), and the store verifies.
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
use std::time::{Duration, Instant};

use common::{static_agent, test_home, workspace};

/// `orgo ARGS` on the shared store, under TCG, with the static agent.
fn orgo(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgo"));
    command
        .args(args)
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .env_remove("ORGO_WARM_POOL");
    command
}

/// Runs `orgo ARGS`, asserts it exited 0, returns its stdout.
fn orgo_ok(args: &[&str]) -> String {
    let out: Output = orgo(args).output().expect("orgo runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "`orgo {}` failed; stderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// A computer launched from a template with nothing in it (cached across
/// runs), with `/root/before` written and synced; stopped when dropped.
struct Launched(String);

impl Launched {
    fn new() -> Launched {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pause-kill.yaml");
        std::fs::write(&file, "api_version: orgo.ai/v1\nname: pause-kill@1.0.0\n").unwrap();
        let id = orgo_ok(&["launch", file.to_str().unwrap()])
            .trim()
            .to_owned();
        let launched = Launched(id);
        orgo_ok(&[
            "exec",
            &launched.0,
            "--",
            "sh",
            "-c",
            "echo before > /root/before && sync",
        ]);
        launched
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = orgo(&["stop", &self.0]).output();
    }
}

/// The computer's record as JSON text.
fn record(id: &str) -> String {
    std::fs::read_to_string(test_home().join("computers").join(id).join("computer.json"))
        .unwrap_or_default()
}

/// Starts `orgo ARGS` and kills it with SIGKILL once the record says it
/// paused the computer; panics if it never does.
fn kill_while_paused(id: &str, args: &[&str]) {
    let mut child = orgo(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("orgo starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if record(id).contains("\"paused_by\"") {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "`orgo {}` ended ({status}) before it was seen paused",
                args.join(" ")
            );
        }
        assert!(Instant::now() < deadline, "no pause within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The computer's status as `orgo ps --json` shows it.
fn state(id: &str) -> String {
    let ps = orgo_ok(&["ps", "--json"]);
    let row = ps
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("`{id}` in `orgo ps --json`:\n{ps}"));
    row["status"].as_str().unwrap().to_owned()
}

#[test]
fn a_checkpoint_killed_while_the_computer_stands_leaves_it_running_and_the_store_sound() {
    let computer = Launched::new();
    let id = computer.0.as_str();

    kill_while_paused(id, &["checkpoint", id]);

    // The next command (`ps` opens the runtime) runs it again.
    assert_eq!(state(id), "running");
    assert!(!record(id).contains("\"paused_by\""), "{}", record(id));
    let out = orgo_ok(&[
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "cat /root/before; echo after > /root/after; cat /root/after",
    ]);
    assert_eq!(out, "before\nafter\n");
    orgo_ok(&["store", "verify"]);
}

#[test]
fn a_suspend_killed_while_the_computer_stands_leaves_it_running_or_resumable() {
    let computer = Launched::new();
    let id = computer.0.as_str();

    kill_while_paused(id, &["suspend", id]);

    // Killed before the state was whole: running again. After: suspended,
    // its VMM ended, and it resumes.
    let now = state(id);
    assert!(!record(id).contains("\"paused_by\""), "{}", record(id));
    match now.as_str() {
        "running" => eprintln!("killed before the suspend was recorded: running again"),
        "suspended" => {
            eprintln!("killed after the suspend was recorded: resuming it");
            orgo_ok(&["resume", id]);
        }
        other => panic!("`{id}` is {other}"),
    }
    let out = orgo_ok(&["exec", id, "--", "cat", "/root/before"]);
    assert_eq!(out, "before\n");
    orgo_ok(&["store", "verify"]);
}
