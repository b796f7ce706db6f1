//! A pool of idle `cloud-hypervisor --api-socket` processes, spawned ahead
//! so a launch skips process start and API socket set-up.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::process::VmmProcess;
use crate::error::RuntimeError;

/// Idle VMM processes (no VM yet), up to a target size. A backend
/// [`with_pool`](super::CloudHypervisor::with_pool) takes one per boot or
/// restore and refills the pool in the background; dropping the
/// pool kills the idle ones.
#[derive(Debug)]
pub struct VmmPool {
    binary: PathBuf,
    dir: PathBuf,
    target: usize,
    idle: Mutex<VecDeque<VmmProcess>>,
    /// Spawns under way, counted against the target.
    spawning: AtomicU64,
    next: AtomicU64,
}

impl VmmPool {
    /// A pool of `target` processes of `binary`, their API sockets and logs
    /// in `dir` (created if missing). Nothing is spawned before
    /// [`fill`](Self::fill) or the backend's first take.
    pub fn new(binary: impl Into<PathBuf>, dir: impl Into<PathBuf>, target: usize) -> Arc<VmmPool> {
        Arc::new(VmmPool {
            binary: binary.into(),
            dir: dir.into(),
            target,
            idle: Mutex::new(VecDeque::new()),
            spawning: AtomicU64::new(0),
            next: AtomicU64::new(0),
        })
    }

    /// The target size.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Idle processes ready now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .expect("the pool lock is never poisoned")
            .len()
    }

    /// Spawns processes until the pool holds its target.
    pub async fn fill(&self) -> Result<(), RuntimeError> {
        loop {
            let wanted = {
                let idle = self
                    .idle
                    .lock()
                    .expect("the pool lock is never poisoned")
                    .len();
                let spawning =
                    usize::try_from(self.spawning.load(Ordering::SeqCst)).unwrap_or(usize::MAX);
                idle.saturating_add(spawning) < self.target
            };
            if !wanted {
                return Ok(());
            }
            self.spawning.fetch_add(1, Ordering::SeqCst);
            let spawned = self.spawn().await;
            self.spawning.fetch_sub(1, Ordering::SeqCst);
            let process = spawned?;
            self.idle
                .lock()
                .expect("the pool lock is never poisoned")
                .push_back(process);
        }
    }

    /// An idle process (one still alive), or a new one if none is ready;
    /// then refills the pool in the background.
    pub(crate) async fn take(self: &Arc<Self>) -> Result<VmmProcess, RuntimeError> {
        let ready = loop {
            let next = self
                .idle
                .lock()
                .expect("the pool lock is never poisoned")
                .pop_front();
            match next {
                Some(mut process) => {
                    if matches!(process.exited(), Ok(None)) {
                        break Some(process);
                    }
                }
                None => break None,
            }
        };
        let process = match ready {
            Some(process) => process,
            None => self.spawn().await?,
        };
        let pool = Arc::clone(self);
        // Errors surface on a later take, which spawns in the foreground.
        tokio::spawn(async move { pool.fill().await });
        Ok(process)
    }

    async fn spawn(&self) -> Result<VmmProcess, RuntimeError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| RuntimeError::Io {
            op: "cannot create the VMM pool directory",
            path: self.dir.clone(),
            source,
        })?;
        // A name whose socket is free: a VM detached from an earlier pool
        // on this directory (of this process, or of one with the same pid)
        // may still answer on a taken one, which spawning would remove.
        let (socket, log) = loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let name = format!("vmm-{}-{n}", std::process::id());
            let socket = self.dir.join(format!("{name}.sock"));
            if matches!(
                std::fs::symlink_metadata(&socket),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            ) {
                break (socket, self.dir.join(format!("{name}.log")));
            }
        };
        VmmProcess::spawn(&self.binary, &socket, &log, None).await
    }

    /// The binary the pool spawns.
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}
