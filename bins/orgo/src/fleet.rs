//! The fleet's shared store, when the environment names one
//! (`ORGO_STORE_URL` and `ORGO_REGISTRY_URL`, see the `orgo-fleet` crate):
//! every command that reads or writes the store, `orgo serve` included,
//! then works on the fleet's, with this host's store as its cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orgo_fleet::FleetStore;
use orgo_snapshot::{CachedStore, LocalStore, RefKey, Store};

use crate::Failure;

/// How long a computer's lease in the fleet's registry lasts without its
/// host setting it again (every open runtime does, hourly): longer, and the
/// host is taken for gone. `ORGO_LEASE_TTL` (`36h`, `90m`, ...) sets it.
const LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The fleet the environment names, opened.
pub(crate) fn fleet(tokio: &tokio::runtime::Runtime) -> Result<Option<Arc<FleetStore>>, Failure> {
    let fleet = tokio
        .block_on(FleetStore::from_env())
        .map_err(Failure::Store)?;
    Ok(fleet.map(Arc::new))
}

/// The fleet's store, opened, if the environment names one.
pub(crate) fn shared_store(
    tokio: &tokio::runtime::Runtime,
) -> Result<Option<Arc<dyn Store>>, Failure> {
    Ok(fleet(tokio)?.map(|f| f as Arc<dyn Store>))
}

/// The store the commands work on: the local store at `root`, in front of
/// the fleet's when there is one.
pub(crate) fn store(
    tokio: &tokio::runtime::Runtime,
    root: &Path,
) -> Result<Arc<dyn Store>, Failure> {
    let local = tokio
        .block_on(LocalStore::open(root))
        .map_err(Failure::Store)?;
    Ok(match shared_store(tokio)? {
        Some(shared) => Arc::new(CachedStore::new(local, shared)),
        None => Arc::new(local),
    })
}

/// In a fleet, removes the leases no host set within the lease's time to
/// live (see [`LEASE_TTL`]): those of hosts that are gone. How many.
pub(crate) fn expire_leases(tokio: &tokio::runtime::Runtime) -> Result<usize, Failure> {
    let Some(fleet) = fleet(tokio)? else {
        return Ok(0);
    };
    let ttl = match std::env::var("ORGO_LEASE_TTL") {
        Ok(text) if !text.is_empty() => humantime::parse_duration(&text).map_err(|e| {
            Failure::Input(format!(
                "`ORGO_LEASE_TTL` is `{text}`; expected a duration (`24h`, `90m`): {e}"
            ))
        })?,
        _ => LEASE_TTL,
    };
    let leases = RefKey::new("leases").expect("`leases` is a valid key");
    let expired = tokio
        .block_on(fleet.registry().expire_refs(&leases, ttl))
        .map_err(Failure::Store)?;
    Ok(expired.len())
}
