//! The runtime commands as a user runs them, against real computers under
//! QEMU TCG: `orgo build` (built, then cached), `orgo launch`, `orgo exec`
//! (stdout, stderr and the exit code pass through; orgo's own failures exit
//! 125), `orgo ps` (table and JSON), `orgo stop`; and a failing build step
//! named by its field, with its output, and nothing on stdout.
//!
//! Needs root, QEMU and mmdebstrap (for the base image, built once into the
//! store `target/orgo-test-home`, shared with the other VM tests). Each run's
//! templates carry a fresh nonce, so each run really builds.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

// The static agent, the test store and nonces, shared with the runtime's
// VM tests.
#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{nonce, static_agent, test_home, workspace};

/// Runs `orgo ARGS` on the shared store, under TCG, with the static agent.
fn orgo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(args)
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .output()
        .expect("orgo runs")
}

/// Stdout as text.
fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Stderr as text (lossy: it carries the guest's output).
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `orgo` exited 0, showing its stderr if not.
fn assert_ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed; stderr:\n{}",
        stderr(out)
    );
}

/// Writes `text` to `name` in `dir`; returns its path as orgo's argument.
fn write_template(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `sha256:` and 64 lowercase hex digits.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `c-` and 12 lowercase hex digits.
fn is_computer_id(text: &str) -> bool {
    text.strip_prefix("c-").is_some_and(|hex| {
        hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Splits `orgo build`'s one line into the template digest, the snapshot
/// digest and what is in the parentheses (`built in N s` or `cached`).
fn build_line(out: &Output) -> (String, String, String) {
    let text = stdout(out);
    let line = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line ending in a newline: {text:?}"));
    assert!(!line.contains('\n'), "exactly one line: {text:?}");
    let (digests, how) = line
        .split_once(" (")
        .unwrap_or_else(|| panic!("`DIGEST DIGEST (HOW)`: {line:?}"));
    let how = how
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("ends in `)`: {line:?}"));
    let (template, snapshot) = digests
        .split_once(' ')
        .unwrap_or_else(|| panic!("two digests: {line:?}"));
    assert!(is_digest(template), "template digest: {line:?}");
    assert!(is_digest(snapshot), "snapshot digest: {line:?}");
    (template.to_owned(), snapshot.to_owned(), how.to_owned())
}

/// A launched computer, stopped with `orgo stop` when dropped unless the
/// test stopped it itself: a failing assertion leaves no VM running.
struct Launched {
    id: Option<String>,
}

impl Launched {
    /// The computer's id.
    fn id(&self) -> &str {
        self.id.as_deref().expect("not stopped yet")
    }

    /// Stops it with `orgo stop`; returns that run's output.
    fn stop(&mut self) -> Output {
        let id = self.id.take().expect("not stopped yet");
        orgo(&["stop", &id])
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let out = orgo(&["stop", &id]);
            if !out.status.success() {
                eprintln!("cleanup: `orgo stop {id}` failed: {}", stderr(&out));
            }
        }
    }
}

/// The happy path's template: one build step, one inline file, an
/// `on_resume` hook that records the hostname (the computer's id).
fn template(nonce: &str) -> String {
    format!(
        r#"api_version: orgo.ai/v1
name: vm-cli@1.0.0
env:
  RUN_NONCE: "{nonce}"
build:
  run:
    - echo built > /opt/built.txt
files:
  - to: /opt/hello.txt
    inline: "hello from orgo\n"
hooks:
  on_resume: hostname > /opt/resumed.txt
"#
    )
}

#[test]
fn build_launch_exec_ps_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_template(&dir, "vm-cli.yaml", &template(&nonce()));

    let digest = orgo(&["digest", &file]);
    assert_ok(&digest, "orgo digest");
    let digest = stdout(&digest).trim_end().to_owned();

    // First build: really built; progress on stderr, one line on stdout.
    let built = orgo(&["build", &file]);
    assert_ok(&built, "orgo build");
    let (template_digest, snapshot, how) = build_line(&built);
    assert_eq!(template_digest, digest, "the template's digest comes first");
    assert!(
        how.starts_with("built in ") && how.ends_with(" s"),
        "a fresh template is built: {how:?}"
    );
    assert!(
        stderr(&built).contains("build.run[0]"),
        "the steps are reported on stderr: {}",
        stderr(&built)
    );

    // Again: the same digests, from the cache.
    let again = orgo(&["build", &file]);
    assert_ok(&again, "orgo build (again)");
    assert_eq!(
        build_line(&again),
        (
            template_digest.clone(),
            snapshot.clone(),
            "cached".to_owned()
        )
    );

    // Launch: the id is the only line on stdout.
    let launch = orgo(&["launch", &file]);
    assert_ok(&launch, "orgo launch");
    let text = stdout(&launch);
    let id = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line: {text:?}"));
    assert!(is_computer_id(id), "stdout is only the id: {text:?}");
    let mut computer = Launched {
        id: Some(id.to_owned()),
    };
    let id = computer.id().to_owned();

    // exec: stdout and stderr pass through separately, with the exit code.
    let exec = orgo(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(exec.status.code(), Some(7), "stderr: {}", stderr(&exec));
    assert_eq!(stdout(&exec), "out\n");
    assert!(stderr(&exec).contains("err\n"), "{:?}", stderr(&exec));
    assert!(!stderr(&exec).contains("out"), "{:?}", stderr(&exec));

    // What the build baked and the launch ran is in the computer.
    let cat = orgo(&[
        "exec",
        &id,
        "--",
        "cat",
        "/opt/hello.txt",
        "/opt/built.txt",
        "/opt/resumed.txt",
    ]);
    assert_ok(&cat, "orgo exec cat");
    assert_eq!(stdout(&cat), format!("hello from orgo\nbuilt\n{id}\n"));

    // orgo's own failure in exec: 125, `error: ...` on stderr.
    let unknown = orgo(&["exec", "c-000000000000", "--", "true"]);
    assert_eq!(
        unknown.status.code(),
        Some(125),
        "stderr: {}",
        stderr(&unknown)
    );
    assert!(stdout(&unknown).is_empty());
    assert!(
        stderr(&unknown).starts_with("error: "),
        "{:?}",
        stderr(&unknown)
    );

    // ps: a header, then our computer, running.
    let ps = orgo(&["ps"]);
    assert_ok(&ps, "orgo ps");
    let table = stdout(&ps);
    let mut lines = table.lines();
    assert!(
        lines.next().is_some_and(|h| h.starts_with("ID ")),
        "a header first: {table}"
    );
    let row = lines
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("{id} is listed: {table}"));
    assert!(row.contains("running"), "{row}");
    assert!(row.contains("vm-cli@1.0.0"), "{row}");

    // ps --json: one object per line.
    let ps = orgo(&["ps", "--json"]);
    assert_ok(&ps, "orgo ps --json");
    let rows: Vec<serde_json::Value> = stdout(&ps)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let ours = rows
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is listed: {rows:?}"));
    assert_eq!(ours["status"], "running");
    assert_eq!(ours["template"], "vm-cli@1.0.0");
    assert_eq!(ours["template_digest"], template_digest.as_str());
    assert_eq!(ours["snapshot"], snapshot.as_str());

    // stop: the id on stdout; then it is gone.
    let stop = computer.stop();
    assert_ok(&stop, "orgo stop");
    assert_eq!(stdout(&stop), format!("{id}\n"));

    let ps = orgo(&["ps"]);
    assert_ok(&ps, "orgo ps (after stop)");
    assert!(
        !stdout(&ps).lines().any(|l| l.starts_with(&id)),
        "{id} is no longer listed: {}",
        stdout(&ps)
    );
    let gone = orgo(&["exec", &id, "--", "true"]);
    assert_eq!(gone.status.code(), Some(125), "stderr: {}", stderr(&gone));
    assert!(stdout(&gone).is_empty());
    assert!(stderr(&gone).starts_with("error: "), "{:?}", stderr(&gone));
}

#[test]
fn a_failing_build_step_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_template(
        &dir,
        "vm-cli-fail.yaml",
        &format!(
            r#"api_version: orgo.ai/v1
name: vm-cli-fail@1.0.0
env:
  RUN_NONCE: "{}"
build:
  run:
    - echo about to fail; exit 3
"#,
            nonce()
        ),
    );
    let out = orgo(&["build", &file]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        stdout(&out).is_empty(),
        "nothing on stdout: {:?}",
        stdout(&out)
    );
    assert!(
        err.contains("`build.run[0]` exited with status 3"),
        "the step is named by its field: {err}"
    );
    assert!(err.contains("about to fail"), "with its output: {err}");
}
