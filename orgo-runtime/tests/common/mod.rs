//! What the VM tests share: the static agent and the base image cache.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// Builds the static agent (its own target directory: no lock on ours).
pub(crate) fn static_agent() -> PathBuf {
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

#[allow(dead_code, reason = "not every VM test binary builds its own image")]
/// Where base images are cached: `$ORGO_HOME/images`, else `target/orgo-images`.
pub(crate) fn image_dir() -> PathBuf {
    match std::env::var_os("ORGO_HOME") {
        Some(home) => PathBuf::from(home).join("images"),
        None => workspace().join("target/orgo-images"),
    }
}
