//! The static guest agent this crate embeds (built by `build.rs`, or the
//! file `ORGO_AGENT_EMBED` named at build time), and its copy on disk that
//! base images are built with.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The static `orgo-agent`.
static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orgo-agent"));

/// Its SHA-256, lower-case hex, computed by `build.rs`.
const AGENT_SHA256: &str = env!("ORGO_AGENT_SHA256");

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

/// See [`agent_binary`].
pub(crate) fn embedded_agent(home: &Path) -> io::Result<PathBuf> {
    let dir = home.join("agent");
    let name = format!("orgo-agent-{}", &AGENT_SHA256[..16]);
    let path = dir.join(&name);
    if is_in_place(&path) {
        return Ok(path);
    }
    fs::create_dir_all(&dir)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_executable(&temp).and_then(|()| fs::rename(&temp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename itself survives a crash once the directory is synced.
    fs::File::open(&dir)?.sync_all()?;
    Ok(path)
}

/// Whether `path` is already the agent: a regular, executable file of its size.
fn is_in_place(path: &Path) -> bool {
    let looks_right = fs::metadata(path).is_ok_and(|meta| {
        meta.is_file() && meta.len() == AGENT.len() as u64 && meta.permissions().mode() & 0o111 != 0
    });
    // The same bytes, not only the same size: the base image is built from
    // what is there.
    looks_right && fs::read(path).is_ok_and(|bytes| bytes == AGENT)
}

/// Writes the agent to a new file at `path`, mode 0755, synced.
fn write_executable(path: &Path) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?;
    // The umask may have taken bits off the mode `open` was given.
    file.set_permissions(fs::Permissions::from_mode(0o755))?;
    file.write_all(AGENT)?;
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
    fn the_embedded_agent_is_a_static_x86_64_executable() {
        assert_eq!(&AGENT[..4], b"\x7fELF");
        assert_eq!(AGENT[4], 2, "64-bit");
        assert_eq!(AGENT[5], 1, "little-endian");
        assert_eq!(
            u16::from_le_bytes([AGENT[0x12], AGENT[0x13]]),
            0x3e,
            "x86-64"
        );
        let types = program_header_types(AGENT);
        assert!(!types.is_empty(), "an executable has program headers");
        assert!(
            !types.contains(&PT_INTERP),
            "the agent has a program interpreter: it is dynamically linked"
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
