//! A pause that outlives nothing: a computer paused to be captured (a
//! checkpoint, a suspend) runs on, or ends suspended, even when the
//! process that paused it is killed half-way (`kill -9`, a crash).
//!
//! **Holding.** Before its VM pauses, the capturing process records itself
//! in the computer's record ([`ComputerRecord::paused_by`], with its start
//! time, so a reused pid is not taken for it); it clears that once the VM
//! runs again (a checkpoint) or its VMM has stopped (a suspend).
//!
//! **Recovering.** [`recover`] (run by every
//! [`Runtime::open`](crate::Runtime::open), so by every CLI command and
//! every `orgo serve` start, and by [`Runtime::sweep`](crate::Runtime::sweep))
//! finds records held by a dead process:
//! - not yet recorded suspended: the capture did not finish, so it is
//!   undone. A save still under way is cancelled, the vCPUs run again, a
//!   partial `suspended/` state is removed. A checkpoint stored nothing
//!   (its files were in the store's scratch, which gc clears).
//! - recorded suspended: the state was whole before the record said so; a
//!   VMM still up (killed before it stopped) is stopped, and the computer
//!   stays suspended, to be resumed.
//!
//! [`ComputerRecord::paused_by`]: crate::ComputerRecord

use std::sync::Arc;

use crate::error::RuntimeError;
use crate::home::{ComputerRecord, ComputerState};
use crate::process::Owner;
use crate::shared::Shared;

/// Records this process as pausing computer `record.id`, before it pauses.
pub(crate) fn hold(shared: &Shared, record: &mut ComputerRecord) -> Result<(), RuntimeError> {
    record.paused_by = Some(Owner::current());
    shared.home.update(record)
}

/// Clears the pause [`hold`] recorded, on the record as it is now.
pub(crate) fn release(shared: &Shared, id: &str) -> Result<(), RuntimeError> {
    let mut record = shared.home.status(id)?.record;
    if record.paused_by.take().is_some() {
        shared.home.update(&record)?;
    }
    Ok(())
}

/// Undoes or finishes every pause whose process died (see the module's
/// docs); returns the ids recovered. One that fails is left held, for the
/// next call, and its error returned after the others were tried.
pub(crate) async fn recover(shared: &Arc<Shared>) -> Result<Vec<String>, RuntimeError> {
    let mut recovered = Vec::new();
    let mut failed = None;
    for status in shared.home.statuses()? {
        let Some(owner) = status.record.paused_by else {
            continue;
        };
        if owner.alive() {
            continue;
        }
        let id = status.record.id.clone();
        match recover_one(shared, status.record, status.state).await {
            Ok(()) => recovered.push(id),
            Err(error) => failed = Some(error),
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(recovered),
    }
}

async fn recover_one(
    shared: &Arc<Shared>,
    mut record: ComputerRecord,
    state: ComputerState,
) -> Result<(), RuntimeError> {
    let id = record.id.clone();
    let dir = shared.home.dir(&id);
    match (state, record.backend) {
        (ComputerState::Suspended, Some(kind)) => {
            // Killed between the record and the VMM's end: end it (its
            // network stays, as a suspend leaves it).
            if record.pid.is_some_and(crate::process::process_alive)
                && let Ok(vm) = shared.builder.backends.vmm(kind)?.attach(&id, &dir).await
            {
                vm.shutdown().await?;
            }
            record.pid = None;
        }
        (ComputerState::Running, Some(kind)) => {
            let vm = shared.builder.backends.vmm(kind)?.attach(&id, &dir).await?;
            // Cancels a save still under way (QEMU), then runs.
            vm.resume().await?;
            vm.detach();
            let _ = std::fs::remove_dir_all(dir.join(crate::home::SUSPENDED_DIR));
        }
        // Its VMM is gone (or never ran): nothing is paused any more.
        _ => {}
    }
    record.paused_by = None;
    shared.home.update(&record)
}
