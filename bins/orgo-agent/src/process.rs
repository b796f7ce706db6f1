//! Starting processes and learning how they ended, as PID 1 or not.
//!
//! As PID 1 the agent must reap every orphan that the kernel re-parents to it,
//! which means calling `wait` for any child, and that would steal the status
//! of children other threads wait for. So all children start through
//! [`Spawner`]: in PID-1 mode one reaper thread waits for any child and hands
//! each status to the callback registered for that pid (orphans' statuses are
//! dropped); otherwise each child gets a thread that waits for it alone, so
//! tests in an ordinary process never reap what is not theirs.
//!
//! The registry lock is held from `fork` until the pid is registered, and the
//! reaper takes it before looking a pid up, so a child that exits at once is
//! never mistaken for an orphan. Children get their own process group, so a
//! signal reaches what they started too.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use orgo_agent_protocol::ExitStatus;
use rustix::process::{Pid, Signal, WaitOptions};

type OnExit = Box<dyn FnOnce(ExitStatus) + Send>;

/// The callbacks by pid, and a condition the reaper sleeps on while the
/// agent has no children at all (signalled by each spawn).
type Registry = Arc<(Mutex<HashMap<i32, OnExit>>, Condvar)>;

/// Starts children and delivers their exit statuses.
#[derive(Clone)]
pub(crate) struct Spawner {
    reaper: Option<Registry>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("pid1", &self.reaper.is_some())
            .finish()
    }
}

impl Spawner {
    /// A spawner that waits for each of its children on its own thread.
    pub(crate) fn per_child() -> Self {
        Spawner { reaper: None }
    }

    /// A spawner for PID 1 (or a subreaper): starts the thread that reaps
    /// every child of this process. Create at most one per process.
    pub(crate) fn reaping() -> Self {
        let registry: Registry = Arc::default();
        let reg = Arc::clone(&registry);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&reg))
            .expect("the reaper thread starts");
        Spawner {
            reaper: Some(registry),
        }
    }

    /// Starts `command` in a new process group; `on_exit` runs once, on
    /// another thread, with how it ended.
    pub(crate) fn spawn(
        &self,
        command: &mut Command,
        on_exit: impl FnOnce(ExitStatus) + Send + 'static,
    ) -> io::Result<Child> {
        command.process_group(0);
        match &self.reaper {
            None => {
                let child = command.spawn()?;
                let pid = child.id();
                std::thread::Builder::new()
                    .name(format!("wait-{pid}"))
                    .spawn(move || {
                        let status = rustix::process::waitpid(
                            Pid::from_raw(pid as i32),
                            WaitOptions::empty(),
                        );
                        on_exit(match status {
                            Ok(Some((_, s))) => ExitStatus {
                                code: s.exit_status(),
                                signal: s.terminating_signal(),
                            },
                            _ => ExitStatus {
                                code: None,
                                signal: None,
                            },
                        });
                    })?;
                Ok(child)
            }
            Some(registry) => {
                let (lock, started) = &**registry;
                let mut map = lock.lock().unwrap_or_else(|e| e.into_inner());
                // std waits for a child whose exec failed, racing the reaper;
                // if the reaper won, std panics: keep that from ending PID 1.
                let spawned =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| command.spawn()))
                        .unwrap_or_else(|_| Err(io::Error::other("the child failed to start")))?;
                map.insert(spawned.id() as i32, Box::new(on_exit));
                started.notify_one();
                Ok(spawned)
            }
        }
    }

    /// Starts `command` and returns a handle to wait for it.
    pub(crate) fn start(&self, command: &mut Command) -> io::Result<(Child, Waiter)> {
        let (tx, rx) = mpsc::channel();
        let child = self.spawn(command, move |status| {
            let _ = tx.send(status);
        })?;
        let pid = child.id();
        Ok((child, Waiter { pid, rx }))
    }
}

/// Waits for one child started by [`Spawner::start`].
#[derive(Debug)]
pub(crate) struct Waiter {
    pid: u32,
    rx: Receiver<ExitStatus>,
}

impl Waiter {
    /// Waits until it ends.
    pub(crate) fn wait(&self) -> ExitStatus {
        self.rx.recv().unwrap_or(ExitStatus {
            code: None,
            signal: None,
        })
    }

    /// Waits at most `timeout`; `None` if it still runs.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        match self.rx.recv_timeout(timeout) {
            Ok(status) => Some(status),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(ExitStatus {
                code: None,
                signal: None,
            }),
        }
    }

    /// Sends `signal` to its process group.
    pub(crate) fn signal_group(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }

    /// Waits at most `timeout`, then kills the group and waits for the end.
    /// Returns the status and whether it was killed.
    pub(crate) fn wait_or_kill(&self, timeout: Option<Duration>) -> (ExitStatus, bool) {
        let Some(timeout) = timeout else {
            return (self.wait(), false);
        };
        if let Some(status) = self.wait_timeout(timeout) {
            return (status, false);
        }
        self.signal_group(Signal::KILL);
        (self.wait(), true)
    }
}

/// Sends `signal` to the process group `pgid`, ignoring a group that is gone.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// A signal by the name a template uses (`TERM`, `SIGTERM`, ...).
pub(crate) fn signal_by_name(name: &str) -> Option<Signal> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "HUP" => Signal::HUP,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        _ => return None,
    })
}

fn reap_forever(registry: &(Mutex<HashMap<i32, OnExit>>, Condvar)) {
    let (lock, started) = registry;
    let deliver = |status: rustix::process::WaitStatus, callback: Option<OnExit>| {
        if let Some(callback) = callback {
            let status = std::process::ExitStatus::from_raw(status.as_raw());
            callback(ExitStatus {
                code: status.code(),
                signal: status.signal(),
            });
        }
    };
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) => {
                let callback = lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&pid.as_raw_nonzero().get());
                deliver(status, callback);
            }
            // No children at all. Check again under the lock (a spawn holds
            // it from fork to registration), then sleep until a spawn
            // signals: a child that exits is reaped at once, not after a
            // polling interval.
            _ => {
                let map = lock.lock().unwrap_or_else(|e| e.into_inner());
                match rustix::process::wait(WaitOptions::NOHANG) {
                    Ok(Some((pid, status))) => {
                        let mut map = map;
                        let callback = map.remove(&pid.as_raw_nonzero().get());
                        drop(map);
                        deliver(status, callback);
                    }
                    // Children exist now: back to the blocking wait.
                    Ok(None) => {}
                    Err(_) => {
                        let _ = started
                            .wait_timeout(map, Duration::from_secs(1))
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        }
    }
}
