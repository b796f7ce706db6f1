//! Embeds the static guest agent: builds `orgo-agent` for
//! `x86_64-unknown-linux-gnu` with `+crt-static` (a nested cargo, in a target
//! directory of its own shared by every profile of the outer build), or takes
//! the file `ORGO_AGENT_EMBED` names, copies it to `$OUT_DIR/orgo-agent` for
//! `include_bytes!`, and hands its SHA-256 to the crate as
//! `ORGO_AGENT_SHA256`.

use std::ffi::OsString;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

/// The guest's target: the agent runs in x86-64 Linux VMs, whatever the host.
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The escape hatch for packagers: a static agent to embed instead of building one.
const EMBED_ENV: &str = "ORGO_AGENT_EMBED";

/// Variables of the outer build that must not reach the nested one: its
/// flags and wrappers (`cargo clippy` sets `RUSTC_WORKSPACE_WRAPPER`, which
/// would lint the agent instead of building it), its target directory, and
/// the inputs cargo gives this build script. `RUSTC`, `CARGO_HOME`, the
/// jobserver (`CARGO_MAKEFLAGS`) and the user's `CARGO_NET_*`,
/// `CARGO_REGISTRIES_*`, `CARGO_TARGET_<TRIPLE>_LINKER` settings stay.
const CLEARED: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
];

/// Prefixes of such variables: `CARGO_BUILD_*` and `CARGO_PROFILE_*`
/// (config by environment: target, target dir, wrappers, profiles) and the
/// build script's inputs.
const CLEARED_PREFIXES: &[&str] = &[
    "CARGO_BUILD_",
    "CARGO_PROFILE_",
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-env-changed={EMBED_ENV}");
    let agent = match std::env::var_os(EMBED_ENV) {
        Some(given) => given_agent(given),
        None => build_agent(&out_dir),
    };
    let bytes = std::fs::read(&agent)
        .unwrap_or_else(|e| fail(&format!("cannot read the agent `{}`: {e}", agent.display())));
    if let Err(why) = check_static_elf(&bytes) {
        fail(&format!(
            "`{}` is not a static x86-64 executable: {why}",
            agent.display()
        ));
    }
    let embedded = out_dir.join("orgo-agent");
    std::fs::write(&embedded, &bytes)
        .unwrap_or_else(|e| fail(&format!("cannot write `{}`: {e}", embedded.display())));
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo::rustc-env=ORGO_AGENT_SHA256={sha256}");
}

/// The file `ORGO_AGENT_EMBED` names (an absolute path: a build script does
/// not know where cargo was started).
fn given_agent(given: OsString) -> PathBuf {
    let path = PathBuf::from(given);
    if !path.is_absolute() {
        fail(&format!(
            "`{EMBED_ENV}` must be an absolute path, got `{}`",
            path.display()
        ));
    }
    println!("cargo::rerun-if-changed={}", path.display());
    path
}

/// Builds the static agent from the workspace this crate lives in and
/// returns the binary's path.
fn build_agent(out_dir: &Path) -> PathBuf {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = manifest_dir
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf();
    if !workspace.join("bins/orgo-agent/Cargo.toml").is_file() {
        fail(&format!(
            "the agent's sources are not in `{}` (built outside the orgo workspace)",
            workspace.display()
        ));
    }
    for input in [
        "bins/orgo-agent/src",
        "bins/orgo-agent/Cargo.toml",
        "orgo-agent-protocol/src",
        "orgo-agent-protocol/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(input).display()
        );
    }

    let target_dir = shared_target_dir(out_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "-p", "orgo-agent"])
        .args(["--target", AGENT_TARGET, "--target-dir"])
        .arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if CLEARED.contains(&key) || CLEARED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            command.env_remove(key);
        }
    }
    command.env("RUSTFLAGS", "-C target-feature=+crt-static");
    // Cargo reads this script's stdout for instructions: the nested build's
    // goes to stderr, shown when the build fails.
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .unwrap_or_else(|e| fail(&format!("cannot duplicate stderr: {e}")));
    command.stdout(Stdio::from(stderr));
    let described = format!(
        "`{} build --release --locked -p orgo-agent --target {AGENT_TARGET} --target-dir {}` \
         with RUSTFLAGS=\"-C target-feature=+crt-static\" in `{}`",
        Path::new(&cargo).display(),
        target_dir.display(),
        workspace.display()
    );
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the static guest agent failed with `{status}`: {described}"
        )),
        Err(e) => fail(&format!(
            "cannot run cargo to build the static guest agent: {e}: {described}"
        )),
    }
    target_dir.join(AGENT_TARGET).join("release/orgo-agent")
}

/// `<target dir>/agent-embed`, so that every profile of the outer build
/// (check, clippy, doc, test, release) shares one agent build. `OUT_DIR` is
/// `<target dir>/[<triple>/]<profile>/build/<pkg>-<hash>/out` (the triple
/// when cargo was given `--target`, which is then `TARGET`). Any other shape
/// gets a directory under `OUT_DIR`: correct, but built once per profile.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    let in_build = out_dir
        .ancestors()
        .nth(2)
        .is_some_and(|dir| dir.ends_with("build"));
    let profile = out_dir.ancestors().nth(3).filter(|_| in_build);
    let Some(mut target_dir) = profile.and_then(Path::parent) else {
        return out_dir.join("agent-embed");
    };
    if let Some(triple) = std::env::var_os("TARGET")
        && target_dir.file_name() == Some(triple.as_os_str())
    {
        target_dir = target_dir.parent().unwrap_or(target_dir);
    }
    target_dir.join("agent-embed")
}

/// Whether `bytes` are a 64-bit little-endian x86-64 ELF executable without
/// a program interpreter (`PT_INTERP`): statically linked.
fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("no ELF magic".into());
    }
    if bytes.get(4..6) != Some([2, 1].as_slice()) || u16_at(0x12) != Some(0x3e) {
        return Err("not a 64-bit little-endian x86-64 ELF".into());
    }
    let phoff = bytes
        .get(0x20..0x28)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("truncated ELF header")?;
    let (entry_size, count) = u16_at(0x36)
        .zip(u16_at(0x38))
        .ok_or("truncated ELF header")?;
    for i in 0..u64::from(count) {
        let kind = (u64::from(entry_size) * i)
            .checked_add(phoff)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| bytes.get(at..)?.get(..4))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or("truncated program headers")?;
        if kind == PT_INTERP {
            return Err("it is dynamically linked (it has a program interpreter)".into());
        }
    }
    Ok(())
}

/// Stops the build with what failed and the escape hatch.
fn fail(message: &str) -> ! {
    eprintln!(
        "error: {message}\n\
         help: {EMBED_ENV}=/path/to/orgo-agent at build time embeds that static agent instead \
         of building one (build it with RUSTFLAGS=\"-C target-feature=+crt-static\" \
         cargo build --release -p orgo-agent --target {AGENT_TARGET})"
    );
    std::process::exit(1)
}
