//! A runtime in a fleet ([`RuntimeConfig::shared_store`]): its refs, locks
//! and blobs are the fleet's shared store's, seen through a
//! [`CachedStore`] in front of this host's own store, and what a VMM is to
//! read is fetched to this host's disk first.
//!
//! A golden disk names its backing file (the base image's root file system,
//! or a parent layer) by a path relative to itself, `../<ab>/<hex>`, which
//! is the backing blob's place in any host's store ([`relative_backing`]):
//! so a disk built on one host restores on another, and fetching a disk
//! fetches the chain of blobs under it.
//!
//! [`evict`] keeps this host's store within its cap
//! ([`RuntimeConfig::cache_max`]) and [`backing`] names and follows disk
//! layers; `crate::leases` keeps this host's computers' leases alive in the
//! fleet's registry.
//!
//! [`RuntimeConfig::shared_store`]: crate::RuntimeConfig::shared_store
//! [`RuntimeConfig::cache_max`]: crate::RuntimeConfig::cache_max

mod backing;
mod evict;

use std::collections::HashSet;
use std::time::Duration;

use orgo_snapshot::{CachedStore, Fetched};
use orgo_template::Digest;

use crate::error::RuntimeError;

use self::backing::backing_blob;
pub(crate) use self::backing::{link_backing_dir, relative_backing};
use self::evict::{RECENT, bring, evict, mark_used};

#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    store: Option<CachedStore>,
    /// [`RuntimeConfig::cache_max`](crate::RuntimeConfig::cache_max).
    cache_max: Option<u64>,
    /// Blobs used this recently are kept ([`RECENT`]; shorter in tests).
    recent: Duration,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet::new(None)
    }
}

/// The deepest chain of disk layers followed (a checkpoint of a checkpoint
/// of ...): a bound against a layer that names itself.
const MAX_CHAIN: usize = 64;

impl Fleet {
    pub(crate) fn new(store: Option<CachedStore>) -> Fleet {
        Fleet {
            store,
            cache_max: None,
            recent: RECENT,
        }
    }

    /// With this host's store capped at `cache_max` bytes
    /// ([`RuntimeConfig::cache_max`](crate::RuntimeConfig::cache_max));
    /// a cap outside a fleet is refused: the host's store is then the only
    /// copy of its blobs.
    pub(crate) fn with_cache_max(self, cache_max: Option<u64>) -> Result<Fleet, RuntimeError> {
        if cache_max.is_some() && self.store.is_none() {
            return Err(RuntimeError::Invalid {
                what: "configuration: `cache_max` is set without a `shared_store` (this host's \
                       store is then the only copy of its blobs, and a cap would remove them)"
                    .into(),
            });
        }
        Ok(Fleet { cache_max, ..self })
    }

    /// Whether the runtime is in a fleet.
    pub(crate) fn is_some(&self) -> bool {
        self.store.is_some()
    }

    /// Brings `digests` to this host's store (no-op outside a fleet), with
    /// the disk layers each names as its backing file, and marks them used;
    /// how many blobs and bytes were fetched. If that brought any in and
    /// the store is now over its cap, evicts (see the module's docs).
    pub(crate) async fn fetch(&self, digests: Vec<Digest>) -> Result<(u64, u64), RuntimeError> {
        let Some(store) = &self.store else {
            return Ok((0, 0));
        };
        let (mut blobs, mut bytes) = (0, 0);
        let mut used = HashSet::new();
        for digest in digests {
            let mut next = Some(digest);
            for _ in 0..MAX_CHAIN {
                let Some(digest) = next.take() else { break };
                match bring(store, &digest).await? {
                    Fetched::Local => {}
                    Fetched::Fetched(size) => {
                        blobs += 1;
                        bytes += size;
                    }
                    Fetched::Missing => {
                        return Err(RuntimeError::NotFound {
                            what: format!("blob `{digest}` in the fleet's shared store"),
                        });
                    }
                }
                next = backing_blob(store.local(), &digest)?;
                // After its header was read: the mark is the last access.
                mark_used(store.local(), &digest);
                used.insert(digest);
            }
        }
        if blobs > 0
            && let Some(cap) = self.cache_max
        {
            // Best effort: what is not evicted now is after a later fetch.
            let _ = evict(store, cap, &used, self.recent).await;
        }
        Ok((blobs, bytes))
    }
}
