//! Embeds the static guest agent and the static network daemon: builds
//! `orgo-agent` and `orgo-netd` for `x86_64-unknown-linux-gnu` with
//! `+crt-static` (one nested cargo, in a target directory of its own shared
//! by every profile of the outer build), or takes the files
//! `ORGO_AGENT_EMBED` and `ORGO_NETD_EMBED` name, copies them to
//! `$OUT_DIR/orgo-agent` and `$OUT_DIR/orgo-netd` for `include_bytes!`, and
//! hands their SHA-256 to the crate as `ORGO_AGENT_SHA256` and
//! `ORGO_NETD_SHA256`.

use std::ffi::OsString;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

/// The guest's target: the agent runs in x86-64 Linux VMs, whatever the host.
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// A static binary this crate embeds.
struct Embedded {
    /// The package and binary name.
    name: &'static str,
    /// The escape hatch for packagers: a static binary to embed instead of
    /// building one.
    env: &'static str,
    /// The variable the crate reads its SHA-256 from.
    sha_env: &'static str,
}

const EMBEDDED: &[Embedded] = &[
    Embedded {
        name: "orgo-agent",
        env: "ORGO_AGENT_EMBED",
        sha_env: "ORGO_AGENT_SHA256",
    },
    Embedded {
        name: "orgo-netd",
        env: "ORGO_NETD_EMBED",
        sha_env: "ORGO_NETD_SHA256",
    },
];

/// What the nested build compiles, for `rerun-if-changed`: the two binaries
/// and every workspace crate they depend on.
const INPUTS: &[&str] = &[
    "bins/orgo-agent/src",
    "bins/orgo-agent/Cargo.toml",
    "orgo-agent-protocol/src",
    "orgo-agent-protocol/Cargo.toml",
    "bins/orgo-netd/src",
    "bins/orgo-netd/Cargo.toml",
    "orgo-net/src",
    "orgo-net/Cargo.toml",
    "orgo-template/src",
    "orgo-template/Cargo.toml",
    "orgo-snapshot/src",
    "orgo-snapshot/Cargo.toml",
    "Cargo.toml",
    "Cargo.lock",
];

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
    let mut to_build = Vec::new();
    let mut paths = Vec::new();
    for binary in EMBEDDED {
        println!("cargo::rerun-if-env-changed={}", binary.env);
        match std::env::var_os(binary.env) {
            Some(given) => paths.push(Some(given_binary(binary, given))),
            None => {
                to_build.push(binary);
                paths.push(None);
            }
        }
    }
    let built = if to_build.is_empty() {
        None
    } else {
        Some(build_static(&out_dir, &to_build))
    };
    for (binary, given) in EMBEDDED.iter().zip(paths) {
        let path = given.unwrap_or_else(|| {
            built
                .as_ref()
                .expect("a binary not given is built")
                .join(binary.name)
        });
        embed(&out_dir, binary, &path);
    }
}

/// Checks the static binary at `path`, copies it to `$OUT_DIR/<name>` and
/// hands its SHA-256 to the crate.
fn embed(out_dir: &Path, binary: &Embedded, path: &Path) {
    let name = binary.name;
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| fail(&format!("cannot read the {name} `{}`: {e}", path.display())));
    if let Err(why) = check_static_elf(&bytes) {
        fail(&format!(
            "`{}` is not a static x86-64 executable: {why}",
            path.display()
        ));
    }
    let embedded = out_dir.join(name);
    std::fs::write(&embedded, &bytes)
        .unwrap_or_else(|e| fail(&format!("cannot write `{}`: {e}", embedded.display())));
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo::rustc-env={}={sha256}", binary.sha_env);
}

/// The file `ORGO_AGENT_EMBED` or `ORGO_NETD_EMBED` names (an absolute
/// path: a build script does not know where cargo was started).
fn given_binary(binary: &Embedded, given: OsString) -> PathBuf {
    let path = PathBuf::from(given);
    if !path.is_absolute() {
        fail(&format!(
            "`{}` must be an absolute path, got `{}`",
            binary.env,
            path.display()
        ));
    }
    println!("cargo::rerun-if-changed={}", path.display());
    path
}

/// Builds the static binaries from the workspace this crate lives in (one
/// nested cargo) and returns the directory that holds them.
fn build_static(out_dir: &Path, binaries: &[&Embedded]) -> PathBuf {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = manifest_dir
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf();
    for binary in binaries {
        let manifest = format!("bins/{}/Cargo.toml", binary.name);
        if !workspace.join(&manifest).is_file() {
            fail(&format!(
                "the sources of {} are not in `{}` (built outside the orgo workspace)",
                binary.name,
                workspace.display()
            ));
        }
    }
    for input in INPUTS {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(input).display()
        );
    }

    let target_dir = shared_target_dir(out_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let packages: Vec<&str> = binaries.iter().flat_map(|b| ["-p", b.name]).collect();
    let mut command = Command::new(&cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--locked"])
        .args(&packages)
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
        "`{} build --release --locked {} --target {AGENT_TARGET} --target-dir {}` \
         with RUSTFLAGS=\"-C target-feature=+crt-static\" in `{}`",
        Path::new(&cargo).display(),
        packages.join(" "),
        target_dir.display(),
        workspace.display()
    );
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the static binaries failed with `{status}`: {described}"
        )),
        Err(e) => fail(&format!(
            "cannot run cargo to build the static binaries: {e}: {described}"
        )),
    }
    target_dir.join(AGENT_TARGET).join("release")
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

/// Stops the build with what failed and the escape hatches.
fn fail(message: &str) -> ! {
    eprintln!(
        "error: {message}\n\
         help: ORGO_AGENT_EMBED=/path/to/orgo-agent and ORGO_NETD_EMBED=/path/to/orgo-netd at \
         build time embed those static binaries instead of building them (build them with \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p orgo-agent \
         -p orgo-netd --target {AGENT_TARGET})"
    );
    std::process::exit(1)
}
