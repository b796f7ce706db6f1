//! The static binaries this crate embeds (built by `build.rs`, or the files
//! `ORGO_AGENT_EMBED` and `ORGO_NETD_EMBED` named at build time): the guest
//! agent, whose copy on disk base images are built with, and the network
//! daemon `orgo-netd`, run beside each VM.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The static `orgo-agent`.
static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orgo-agent"));

/// Its SHA-256, lower-case hex, computed by `build.rs`.
const AGENT_SHA256: &str = env!("ORGO_AGENT_SHA256");

/// The static `orgo-netd`.
static NETD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orgo-netd"));

/// Its SHA-256, lower-case hex, computed by `build.rs`.
const NETD_SHA256: &str = env!("ORGO_NETD_SHA256");

/// The embedded static agent as a file: `<home>/agent/orgo-agent-<the first
/// 16 hex digits of its SHA-256>`, executable.
///
/// The file is written once (to a temporary file in that directory, synced,
/// then renamed, so concurrent processes are fine) and reused by later calls
/// and processes while it has the right size.
///
/// ```no_run
/// use std::path::Path;
/// use orgo_runtime::{RuntimeConfig, agent_binary};
///
/// let mut config = RuntimeConfig::new("/var/lib/orgo");
/// config.agent = Some(agent_binary(Path::new("/var/lib/orgo"))?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn agent_binary(home: &Path) -> io::Result<PathBuf> {
    embedded_agent(home)
}

/// The embedded agent's SHA-256.
pub(crate) fn embedded_agent_digest() -> orgo_template::Digest {
    format!("sha256:{AGENT_SHA256}")
        .parse()
        .expect("build.rs hands a SHA-256 in lower-case hex")
}

/// See [`agent_binary`].
pub(crate) fn embedded_agent(home: &Path) -> io::Result<PathBuf> {
    materialize(&home.join("agent"), "orgo-agent", AGENT, AGENT_SHA256)
}

/// The embedded network daemon as a file: `<home>/netd/orgo-netd-<the first
/// 16 hex digits of its SHA-256>`, executable; written once, like
/// [`agent_binary`].
///
/// ```no_run
/// use std::path::Path;
///
/// let netd = orgo_runtime::netd_binary(Path::new("/var/lib/orgo"))?;
/// std::process::Command::new(netd).arg("--config").arg("/var/lib/orgo/run/c-0123456789ab/netd.json");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn netd_binary(home: &Path) -> io::Result<PathBuf> {
    materialize(&home.join("netd"), "orgo-netd", NETD, NETD_SHA256)
}

/// Writes `bytes` to `<dir>/<name>-<the first 16 hex digits of sha256>`
/// unless that file already holds them: to a temporary file in that
/// directory, synced, then renamed, so concurrent processes are fine.
fn materialize(dir: &Path, name: &str, bytes: &[u8], sha256: &str) -> io::Result<PathBuf> {
    let name = format!("{name}-{}", &sha256[..16]);
    let path = dir.join(&name);
    if is_in_place(&path, bytes) {
        return Ok(path);
    }
    fs::create_dir_all(dir)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_executable(&temp, bytes).and_then(|()| fs::rename(&temp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename itself survives a crash once the directory is synced.
    fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Whether `path` is already `bytes`: a regular, executable file of their size.
fn is_in_place(path: &Path, bytes: &[u8]) -> bool {
    let looks_right = fs::metadata(path).is_ok_and(|meta| {
        meta.is_file() && meta.len() == bytes.len() as u64 && meta.permissions().mode() & 0o111 != 0
    });
    // The same bytes, not only the same size: the base image is built from
    // what is there.
    looks_right && fs::read(path).is_ok_and(|found| found == bytes)
}

/// Writes `bytes` to a new file at `path`, mode 0755, synced.
fn write_executable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?;
    // The umask may have taken bits off the mode `open` was given.
    file.set_permissions(fs::Permissions::from_mode(0o755))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    const PT_INTERP: u32 = 3;

    /// The `p_type` of each program header of a 64-bit little-endian ELF.
    fn program_header_types(elf: &[u8]) -> Vec<u32> {
        let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
        let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes"));
        let phoff = usize::try_from(phoff).expect("a small offset");
        let (entry_size, count) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
        (0..count)
            .map(|i| {
                let at = phoff + i * entry_size;
                u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"))
            })
            .collect()
    }

    #[test]
    fn the_embedded_binaries_are_static_x86_64_executables() {
        for (name, elf) in [("orgo-agent", AGENT), ("orgo-netd", NETD)] {
            assert_eq!(&elf[..4], b"\x7fELF", "{name}");
            assert_eq!(elf[4], 2, "{name}: 64-bit");
            assert_eq!(elf[5], 1, "{name}: little-endian");
            assert_eq!(
                u16::from_le_bytes([elf[0x12], elf[0x13]]),
                0x3e,
                "{name}: x86-64"
            );
            let types = program_header_types(elf);
            assert!(
                !types.is_empty(),
                "{name}: an executable has program headers"
            );
            assert!(
                !types.contains(&PT_INTERP),
                "{name} has a program interpreter: it is dynamically linked"
            );
        }
    }

    #[test]
    fn the_netd_is_materialized_once_executable_and_whole() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let first = netd_binary(home.path()).expect("materialized");
        assert_eq!(
            first,
            home.path()
                .join("netd")
                .join(format!("orgo-netd-{}", &NETD_SHA256[..16]))
        );
        assert_eq!(netd_binary(home.path()).expect("found"), first);
        let mode = fs::metadata(&first)
            .expect("it exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let content = fs::read(&first).expect("readable");
        assert_eq!(hex::encode(Sha256::digest(&content)), NETD_SHA256);
        fs::write(&first, b"truncated").expect("overwritten");
        assert_eq!(netd_binary(home.path()).expect("rewritten"), first);
        assert_eq!(fs::read(&first).expect("readable"), NETD);
        // The real daemon: it names its usage when given no config.
        let output = std::process::Command::new(&first)
            .output()
            .expect("the embedded netd runs");
        assert_eq!(output.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("usage: orgo-netd --config"),
            "{output:?}"
        );
    }

    #[test]
    fn the_agent_is_materialized_once_executable_and_whole() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let first = embedded_agent(home.path()).expect("materialized");
        let modified = fs::metadata(&first).expect("it exists").modified().ok();
        let second = embedded_agent(home.path()).expect("found");
        assert_eq!(first, second);
        assert_eq!(
            fs::metadata(&second).expect("it exists").modified().ok(),
            modified,
            "the second call reuses the file"
        );
        assert_eq!(
            first,
            home.path()
                .join("agent")
                .join(format!("orgo-agent-{}", &AGENT_SHA256[..16]))
        );
        let mode = fs::metadata(&first)
            .expect("it exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let content = fs::read(&first).expect("readable");
        assert_eq!(hex::encode(Sha256::digest(&content)), AGENT_SHA256);
        let leftovers: Vec<_> = fs::read_dir(home.path().join("agent"))
            .expect("the directory exists")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file is left: {leftovers:?}"
        );
    }

    #[test]
    fn a_file_of_the_wrong_size_is_replaced() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let path = embedded_agent(home.path()).expect("materialized");
        fs::write(&path, b"truncated").expect("overwritten");
        assert_eq!(embedded_agent(home.path()).expect("rewritten"), path);
        assert_eq!(fs::read(&path).expect("readable"), AGENT);
    }
}
