//! The fleet's shared store, when the environment names one
//! (`ORGO_STORE_URL` and `ORGO_REGISTRY_URL`, see the `orgo-fleet` crate):
//! every command that reads or writes the store, `orgo serve` included,
//! then works on the fleet's, with this host's store as its cache.

use std::path::Path;
use std::sync::Arc;

use orgo_fleet::FleetStore;
use orgo_snapshot::{CachedStore, LocalStore, Store};

use crate::Failure;

/// The fleet's store, opened, if the environment names one.
pub(crate) fn shared_store(
    tokio: &tokio::runtime::Runtime,
) -> Result<Option<Arc<dyn Store>>, Failure> {
    let fleet = tokio
        .block_on(FleetStore::from_env())
        .map_err(Failure::Store)?;
    Ok(fleet.map(|f| Arc::new(f) as Arc<dyn Store>))
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
