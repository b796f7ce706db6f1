//! What the VM tests share: the static agent, the base image cache, the
//! test store, fresh nonces, the desktop's windows ([`desktop`]). (Also compiled into `bins/orgo/tests/vm_cli.rs`
//! by path; not every test binary uses every helper.)

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

pub(crate) mod desktop;

use std::path::{Path, PathBuf};

/// The workspace's root (the test crates live one or two levels down).
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// The static agent built into orgo-runtime (as every user gets it),
/// written out once under the test home.
pub(crate) fn static_agent() -> PathBuf {
    orgo_runtime::agent_binary(&test_home()).expect("the embedded agent is written out")
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

/// A runtime on the test home, as the VM tests use it: the embedded agent,
/// TCG, the host's CA certificates for builder VMs when it has any.
pub(crate) async fn test_runtime() -> orgo_runtime::Runtime {
    let agent = tokio::task::spawn_blocking(static_agent)
        .await
        .expect("the agent is written out");
    let mut config = orgo_runtime::RuntimeConfig::new(test_home());
    config.agent = Some(agent);
    config.accel = Some(orgo_runtime::Accel::Tcg);
    config.guest_ca_certs = guest_ca_certs();
    orgo_runtime::Runtime::open(config)
        .await
        .expect("the test home opens")
}

/// A qcow2 copy-on-write layer at `path` over `backing` (of `format`).
pub(crate) fn overlay(backing: &Path, format: &str, path: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(backing)
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small deterministic generator (xorshift64*), for seeded random delays.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}
