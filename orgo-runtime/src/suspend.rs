//! Suspend and resume: a computer saved to disk, its memory and vCPUs
//! freed, and brought back under the same id with its files, processes and
//! terminal sessions.
//!
//! **Suspend.** The VM pauses; its whole state, memory included, is
//! written to `suspended/state` in the computer's directory (mode `0700`:
//! a suspended computer keeps its secrets, so the file is its owner's only
//! and is never put in the store, so never published); its VMM stops. The
//! disk layer, the network (namespace, netd, forwarded ports, policy) and
//! the snapshot lease stay. The record says since when
//! ([`ComputerRecord::suspended_unix`]); `orgo ps` shows `suspended`.
//!
//! **Resume.** A VM is restored from the computer's golden snapshot with the
//! saved state in place of the snapshot's, on the computer's own disk
//! layer, in its network; the guest's clock is set to the host's (it stood
//! still meanwhile). The saved state is then removed.
//!
//! **While suspended**, exec, file and other agent calls fail with
//! [`RuntimeError::Suspended`], which says how to resume: a call does not
//! resume the computer by itself, so that nothing starts a computer's
//! memory and vCPUs again without being asked. A stop removes it without
//! resuming it (so `on_shutdown` does not run).
//!
//! **Killed half-way** (`kill -9` while it stands): the next open of the
//! runtime runs it again, or, when the suspend was recorded (its state
//! whole), stops its VMM and leaves it suspended (`crate::pause`).
//!
//! Limits: QEMU only (Cloud Hypervisor says so); a computer launched with
//! more vCPUs or memory than its snapshot (hot-added) is refused, since the
//! saved state names devices a restore does not make.
//!
//! [`ComputerRecord::suspended_unix`]: crate::ComputerRecord::suspended_unix

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use orgo_snapshot::{Manifest, SnapshotManifest, get_manifest};

use crate::error::{RuntimeError, store_error};
use crate::guest::{self, QUICK, RESTORE_TIMEOUT, call};
use crate::home::{ComputerRecord, ComputerState, SUSPENDED_DIR};
use crate::shared::Shared;
use crate::vmm::{BackendKind, Disk, DiskFormat, RestoreConfig};
use orgo_agent_protocol::Exec;

/// Suspends running computer `id` (see the module's docs); returns how long
/// the guest's vCPUs stood before its VMM stopped.
pub(crate) async fn suspend(
    shared: &Arc<Shared>,
    id: &str,
) -> Result<std::time::Duration, RuntimeError> {
    let status = shared.home.status(id)?;
    if status.state != ComputerState::Running {
        return Err(RuntimeError::Invalid {
            what: format!(
                "suspend of computer `{id}`: it is {}",
                status.state.as_str()
            ),
        });
    }
    let mut record = status.record;
    let (kind, manifest) = snapshot_of(shared, &record).await?;
    not_grown(&record, &manifest, kind, "suspend")?;
    // A computer this process watches gives its handle; its watcher ends.
    let watched = shared.lives.get(id);
    let dir = shared.home.dir(id);
    let vm = match watched.as_ref().and_then(|live| live.take_vm()) {
        Some(vm) => vm,
        None => shared.builder.backends.vmm(kind)?.attach(id, &dir).await?,
    };
    // What the guest has buffered reaches the disk layer first.
    if let Ok(agent) = guest::connect(vm.agent_endpoint(), QUICK).await {
        let _ = call(&agent, |a| a.exec(Exec::shell("sync"), QUICK)).await;
    }
    // Held until its VMM has stopped: a process killed before then leaves
    // the computer running or suspended, never paused (crate::pause).
    crate::pause::hold(shared, &mut record)?;
    let paused = Instant::now();
    if let Err(error) = vm.pause().await {
        crate::pause::release(shared, id)?;
        return Err(error);
    }
    if let Err(error) = vm.save(&dir.join(SUSPENDED_DIR)).await {
        let _ = std::fs::remove_dir_all(dir.join(SUSPENDED_DIR));
        vm.resume().await?;
        // It runs on, as it did (a handle taken from a watcher included).
        vm.detach();
        crate::pause::release(shared, id)?;
        return Err(error);
    }
    record.suspended_unix = Some(now_unix());
    shared.home.update(&record)?;
    vm.shutdown().await?;
    let stood = paused.elapsed();
    record.pid = None;
    record.paused_by = None;
    shared.home.update(&record)?;
    if let Some(live) = watched {
        live.end();
    }
    Ok(stood)
}

/// Resumes suspended computer `id` (see the module's docs); its VM runs on
/// its own after this returns, as a launched one does.
pub(crate) async fn resume(shared: &Arc<Shared>, id: &str) -> Result<(), RuntimeError> {
    let status = shared.home.status(id)?;
    if status.state != ComputerState::Suspended {
        return Err(RuntimeError::Invalid {
            what: format!("resume of computer `{id}`: it is {}", status.state.as_str()),
        });
    }
    let mut record = status.record;
    let (kind, manifest) = snapshot_of(shared, &record).await?;
    shared.builder.backends.require_restore_tools(kind)?;
    let dir = shared.home.dir(id);
    let state = dir.join(SUSPENDED_DIR).join("state");
    let mut snapshot = BTreeMap::new();
    for (role, blob) in &manifest.blobs {
        if role != "disk" {
            snapshot.insert(role.clone(), shared.builder.store.blob_path(&blob.digest));
        }
    }
    snapshot.insert("state".to_owned(), state);
    let network = match shared.net.lacking() {
        None => crate::net::kept_network(id),
        Some(_) => shared.builder.backends.clone_network(kind),
    };
    let config = RestoreConfig {
        id: id.to_owned(),
        snapshot,
        disk: Disk {
            path: dir.join("disk.qcow2"),
            format: DiskFormat::Qcow2,
            read_only: false,
        },
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        network,
        run_dir: dir.clone(),
    };
    let vm = shared.builder.backends.vmm(kind)?.restore(&config).await?;
    let agent = guest::connect(vm.agent_endpoint(), RESTORE_TIMEOUT).await?;
    // The guest's clock stood still while it was saved.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    let set = format!(
        "date -u -s @{}.{:09} >/dev/null",
        now.as_secs(),
        now.subsec_nanos()
    );
    let out = call(&agent, move |a| a.exec(Exec::shell(set), QUICK)).await?;
    if !out.status.success() {
        return Err(RuntimeError::Invalid {
            what: format!(
                "clock of resumed computer `{id}`: `date -s` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    drop(agent);
    record.pid = vm.info().await?.pid;
    record.suspended_unix = None;
    shared.home.update(&record)?;
    vm.detach();
    let _ = std::fs::remove_dir_all(dir.join(SUSPENDED_DIR));
    Ok(())
}

/// Refuses to `what` computer `record` if it runs with more vCPUs or memory
/// than its snapshot `manifest` (hot-added): its saved state would name
/// devices a restore does not make.
pub(crate) fn not_grown(
    record: &ComputerRecord,
    manifest: &SnapshotManifest,
    kind: BackendKind,
    what: &str,
) -> Result<(), RuntimeError> {
    let floor = manifest.hardware;
    if record.cpus > floor.cpu || record.memory_mib > floor.memory_mib {
        return Err(RuntimeError::Unsupported {
            backend: kind.vmm(),
            what: format!(
                "{what} computer `{}`: it runs with more than its snapshot's {} vCPUs and {} MiB (hot-added)",
                record.id, floor.cpu, floor.memory_mib
            ),
        });
    }
    Ok(())
}

/// The backend and the snapshot manifest computer `record` was launched from.
pub(crate) async fn snapshot_of(
    shared: &Shared,
    record: &ComputerRecord,
) -> Result<(BackendKind, SnapshotManifest), RuntimeError> {
    let id = &record.id;
    let (Some(kind), Some(digest)) = (record.backend, record.snapshot) else {
        return Err(RuntimeError::Invalid {
            what: format!("record of computer `{id}`: it names no backend or snapshot"),
        });
    };
    match get_manifest(&shared.builder.store, &digest)
        .await
        .map_err(store_error)?
    {
        Some(Manifest::Snapshot(manifest)) => Ok((kind, manifest)),
        _ => Err(RuntimeError::NotFound {
            what: format!("the snapshot `{digest}` of computer `{id}`"),
        }),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
