//! The host binaries the runtime spawns, each with the Debian package that
//! provides it, and a check that finds every missing one at once (before
//! the first VM starts, rather than a `cannot start` halfway through).
//!
//! Two groups: [`HostTool::VMS`] for running VMs at all (builds and
//! launches), [`HostTool::BASE_IMAGE`] only when a base image must be built.
//! Cloud Hypervisor, when configured, is a path the caller gives and is not
//! listed. `scripts/install-deps.sh` installs all of them as one set.

use std::ffi::OsStr;
use std::path::Path;

/// A binary the runtime spawns and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostTool {
    /// The binary, looked up on `PATH` (or a path, when it holds a `/`).
    pub binary: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

impl HostTool {
    /// What running VMs needs, for builds and launches alike: the emulator,
    /// and `qemu-img` for each computer's copy-on-write disk layer.
    pub const VMS: &'static [HostTool] = &[
        HostTool::new("qemu-system-x86_64", "qemu-system-x86"),
        HostTool::new("qemu-img", "qemu-utils"),
    ];

    /// What building a base image needs: apt for the recipe's versions and
    /// the kernel and busybox packages (`apt-cache policy`, `apt-get
    /// download`), `dpkg-deb -x` to unpack them, `mmdebstrap` for the root
    /// file system and `mkfs.ext4 -d` for its disk. (busybox comes from the
    /// downloaded `busybox-static` package, not from the host.)
    pub const BASE_IMAGE: &'static [HostTool] = &[
        HostTool::new("apt-cache", "apt"),
        HostTool::new("apt-get", "apt"),
        HostTool::new("dpkg-deb", "dpkg"),
        HostTool::new("mmdebstrap", "mmdebstrap"),
        HostTool::new("mkfs.ext4", "e2fsprogs"),
    ];

    const fn new(binary: &'static str, package: &'static str) -> Self {
        Self { binary, package }
    }
}

/// Host binaries that are not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "missing host tools: {}; install them with `scripts/install-deps.sh` or `apt-get install {}`",
    list(.missing),
    self.packages().join(" ")
)]
pub struct MissingTools {
    /// Every missing tool, in the order checked.
    pub missing: Vec<HostTool>,
}

impl MissingTools {
    /// The packages that provide the missing tools, each once, in order.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = Vec::new();
        for tool in &self.missing {
            if !packages.contains(&tool.package) {
                packages.push(tool.package);
            }
        }
        packages
    }
}

fn list(missing: &[HostTool]) -> String {
    missing
        .iter()
        .map(|t| format!("`{}` (package `{}`)", t.binary, t.package))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that each of `tools` is an executable file in a directory of
/// `path` (a `PATH` value, `:`-separated; empty entries are skipped), or at
/// its own path when the binary holds a `/`. Returns every missing one.
///
/// ```
/// use orgo_runtime::{HostTool, check_host_tools};
///
/// let path = std::env::var_os("PATH").unwrap_or_default();
/// if let Err(missing) = check_host_tools(HostTool::VMS, &path) {
///     eprintln!("{missing}");
/// }
/// ```
pub fn check_host_tools(tools: &[HostTool], path: &OsStr) -> Result<(), MissingTools> {
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .collect();
    let missing: Vec<HostTool> = tools
        .iter()
        .filter(|tool| {
            if tool.binary.contains('/') {
                !is_executable(Path::new(tool.binary))
            } else {
                !dirs.iter().any(|dir| is_executable(&dir.join(tool.binary)))
            }
        })
        .copied()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingTools { missing })
    }
}

/// A regular file (after symlinks) with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// [`check_host_tools`] against this process's `PATH`.
pub(crate) fn require(tools: &[HostTool]) -> Result<(), MissingTools> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    check_host_tools(tools, &path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn install(dir: &Path, name: &str, mode: u32) {
        let file = dir.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn path_of(dirs: &[&Path]) -> std::ffi::OsString {
        std::env::join_paths(dirs).unwrap()
    }

    #[test]
    fn every_tool_found_across_the_path_is_ok() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        install(a.path(), "qemu-system-x86_64", 0o755);
        install(b.path(), "qemu-img", 0o755);
        let path = path_of(&[a.path(), b.path()]);
        assert_eq!(check_host_tools(HostTool::VMS, &path), Ok(()));
    }

    #[test]
    fn every_missing_tool_is_named_at_once_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "mmdebstrap", 0o755);
        // Present but not executable, or a directory: missing all the same.
        install(dir.path(), "mkfs.ext4", 0o644);
        std::fs::create_dir(dir.path().join("apt-get")).unwrap();
        let path = path_of(&[dir.path()]);
        let error = check_host_tools(HostTool::BASE_IMAGE, &path).unwrap_err();
        let missing: Vec<&str> = error.missing.iter().map(|t| t.binary).collect();
        assert_eq!(missing, ["apt-cache", "apt-get", "dpkg-deb", "mkfs.ext4"]);
        assert_eq!(error.packages(), ["apt", "dpkg", "e2fsprogs"]);
        assert_eq!(
            error.to_string(),
            "missing host tools: `apt-cache` (package `apt`), `apt-get` (package `apt`), \
             `dpkg-deb` (package `dpkg`), `mkfs.ext4` (package `e2fsprogs`); install them \
             with `scripts/install-deps.sh` or `apt-get install apt dpkg e2fsprogs`"
        );
    }

    #[test]
    fn an_empty_path_finds_nothing() {
        let error = check_host_tools(HostTool::VMS, OsStr::new("")).unwrap_err();
        assert_eq!(error.missing, HostTool::VMS);
        assert_eq!(error.packages(), ["qemu-system-x86", "qemu-utils"]);
    }

    #[test]
    fn a_binary_with_a_slash_is_checked_at_its_own_path() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "qemu", 0o700);
        let binary: &'static str = Box::leak(
            dir.path()
                .join("qemu")
                .display()
                .to_string()
                .into_boxed_str(),
        );
        let tools = [HostTool {
            binary,
            package: "qemu-system-x86",
        }];
        assert_eq!(check_host_tools(&tools, OsStr::new("")), Ok(()));
        std::fs::remove_file(binary).unwrap();
        assert!(check_host_tools(&tools, OsStr::new("")).is_err());
    }
}
