//! What the VM tests share: the static agent, the base image cache, the
//! test store, fresh nonces. (Also compiled into `bins/orgo/tests/vm_cli.rs`
//! by path; not every test binary uses every helper.)

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root (the test crates live one or two levels down).
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// Builds the static agent once per test binary (its own target
/// directory: no lock on ours).
pub(crate) fn static_agent() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT.get_or_init(build_static_agent).clone()
}

fn build_static_agent() -> PathBuf {
    let target_dir = workspace().join("target/agent-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "-q", "--locked", "-p", "orgo-agent", "--release"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static agent failed");
    target_dir.join("x86_64-unknown-linux-gnu/release/orgo-agent")
}

/// Where base images are cached: `$ORGO_HOME/images`, else `target/orgo-images`.
pub(crate) fn image_dir() -> PathBuf {
    match std::env::var_os("ORGO_HOME") {
        Some(home) => PathBuf::from(home).join("images"),
        None => workspace().join("target/orgo-images"),
    }
}

/// The store the runtime's VM tests share (the base image is built there
/// once): `target/orgo-test-home`.
pub(crate) fn test_home() -> PathBuf {
    workspace().join("target/orgo-test-home")
}

/// A value no earlier run has used: templates that carry it have fresh
/// digests, so each run really builds.
pub(crate) fn nonce() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970")
            .as_nanos()
    )
}

/// The host's locally added CA certificates (Debian's
/// `/usr/local/share/ca-certificates`), if it has any: a host behind a
/// TLS-intercepting proxy trusts the proxy's CA there, and builder VMs,
/// whose HTTPS goes out through the host, must trust it too
/// (`RuntimeConfig::guest_ca_certs`).
pub(crate) fn guest_ca_certs() -> Option<PathBuf> {
    let dir = PathBuf::from("/usr/local/share/ca-certificates");
    let any = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "crt"));
    any.then_some(dir)
}
