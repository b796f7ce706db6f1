//! Builder VMs a killed process left behind: a build's QEMU runs in the
//! store's scratch directory of the process that builds
//! (`<home>/scratch/<pid>-<n>/`), in its own process group, so a server
//! killed with `kill -9` mid-build leaves it running. A server that starts
//! kills those of dead processes (only a process whose command line names
//! that directory) and removes their directories.
//!
//! (The runtime's own sweep, `Runtime::sweep`, covers computers, not
//! builder VMs; this belongs there in time.)

use std::path::{Path, PathBuf};

/// Kills the builder VMs of dead processes under `home`, removes their
/// scratch directories; returns the directories removed.
pub(crate) fn builders(home: &Path) -> Vec<PathBuf> {
    let scratch = home.join("scratch");
    let Ok(entries) = std::fs::read_dir(&scratch) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = entry
            .file_name()
            .to_str()
            .and_then(|name| name.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(owner) = owner else { continue };
        if owner == std::process::id() || orgo_runtime::process_alive(owner) {
            continue;
        }
        for pid_file in pid_files(&dir) {
            kill_if_named(&pid_file, &dir);
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// `qemu.pid` files up to two levels down.
fn pid_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut walk = vec![(dir.to_path_buf(), 0)];
    while let Some((at, depth)) = walk.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && depth < 2 {
                walk.push((path, depth + 1));
            } else if path.file_name().is_some_and(|n| n == "qemu.pid") {
                found.push(path);
            }
        }
    }
    found
}

/// Kills the process of `pid_file` if its command line names `dir`.
fn kill_if_named(pid_file: &Path, dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    if !cmdline.windows(needle.len()).any(|w| w == needle) {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
