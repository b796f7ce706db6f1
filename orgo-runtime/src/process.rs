//! Host processes: whether one runs, and who owns a computer being
//! launched (a process that may die without cleaning up after itself).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The fields of `/proc/PID/stat` after the command name: the state, then
/// the rest.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: the name may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether process `pid` runs: it has a `/proc` entry and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|fields| fields.into_iter().next())
        .is_some_and(|state| !matches!(state.as_str(), "Z" | "X" | "x"))
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`
/// field 22): with the pid, it names a process even after the pid is
/// reused.
fn start_ticks(pid: u32) -> Option<u64> {
    // Field 22 overall is the 20th after the command name.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// A process, named so that a reused pid is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

impl Owner {
    /// This process.
    pub(crate) fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether it still runs. An owner whose start could not be read (no
    /// `/proc` where it ran) counts as alive: nothing is swept on a guess.
    pub(crate) fn alive(&self) -> bool {
        if self.start_ticks == 0 || !Path::new("/proc/self/stat").exists() {
            return true;
        }
        process_alive(self.pid) && start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Kills process `pid` if one of its arguments is exactly one of
/// `markers` or starts with one of `prefixes` (arguments that name paths in
/// a VM's own run directory, which only its VMM is started with): a pid
/// seen in `/proc` may belong to anything, and a process that merely
/// mentions the directory (`tail -f` of a log in it) is not the VMM.
pub(crate) fn kill_if_started_with(pid: u32, markers: &[Vec<u8>], prefixes: &[Vec<u8>]) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let ours = cmdline.split(|&b| b == 0).any(|arg| {
        markers.iter().any(|m| arg == m.as_slice()) || prefixes.iter().any(|p| arg.starts_with(p))
    });
    if !ours || !process_alive(pid) {
        return false;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_its_owner_too() {
        assert!(process_alive(std::process::id()));
        let me = Owner::current();
        assert_ne!(me.start_ticks, 0);
        assert!(me.alive());
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.alive(), "another start time is another process");
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("`true` runs");
        let pid = child.id();
        // Not waited for yet: a zombie once it exits.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "a zombie does not run");
        child.wait().expect("the child is reaped");
        assert!(!process_alive(pid));
    }

    #[test]
    fn kill_takes_only_a_process_started_with_the_marker() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("`sleep` runs");
        // Until it execs, the child's command line is its parent's.
        while !std::fs::read(format!("/proc/{}/cmdline", child.id()))
            .is_ok_and(|c| c.starts_with(b"sleep"))
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let marker = |m: &str| vec![m.as_bytes().to_vec()];
        assert!(!kill_if_started_with(
            child.id(),
            &marker("/no/such/run-dir"),
            &[]
        ));
        assert!(
            !kill_if_started_with(child.id(), &marker("3"), &[]),
            "a part of an argument is not the argument"
        );
        assert!(!kill_if_started_with(child.id(), &[], &marker("4")));
        assert!(kill_if_started_with(child.id(), &[], &marker("3")));
        let status = child.wait().expect("the child is reaped");
        assert!(!status.success());
    }
}
