//! Leases kept alive: in a fleet, a computer's lease in the registry is set
//! again by its host while the host's runtime is open; leases nobody set for
//! the fleet's time to live are a gone host's, which `orgo store gc`
//! removes.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{RuntimeError, store_error};
use crate::shared::Shared;

/// How often a runtime in a fleet sets the leases of its computers again
/// while it is open (a server's is open for days). A lease nobody set for
/// longer than the fleet's time to live (24 hours by default, far longer
/// than this) is a dead host's, which `orgo store gc` removes.
pub(crate) const RENEW_LEASES_EVERY: Duration = Duration::from_secs(60 * 60);

/// Sets the lease of every computer of this home again (in a fleet: see
/// [`RENEW_LEASES_EVERY`]); how many it renewed.
pub(crate) async fn renew_leases(shared: &Shared) -> Result<u64, RuntimeError> {
    let mut renewed = 0;
    for status in shared.home.statuses()? {
        if shared
            .builder
            .cache
            .renew(&status.record.id)
            .await
            .map_err(store_error)?
        {
            renewed += 1;
        }
    }
    Ok(renewed)
}

/// Renews this home's leases now and every [`RENEW_LEASES_EVERY`] while the
/// runtime is open (the task ends with it).
pub(crate) fn keep_leases(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let Some(shared) = weak.upgrade() else { break };
            // A failure (the registry down) is retried at the next round;
            // a lease outlives many missed rounds.
            let _ = renew_leases(&shared).await;
            drop(shared);
            tokio::time::sleep(RENEW_LEASES_EVERY).await;
        }
    });
}
