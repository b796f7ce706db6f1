//! [`Shared`]: what every handle of one runtime shares (the [`Runtime`]
//! front door, each [`Computer`], the pool's background fills): its
//! configuration, the registry, the [`Builder`], the [`Home`] of computer
//! records and the warm [`Pool`].
//!
//! [`Runtime`]: crate::Runtime
//! [`Computer`]: crate::Computer

use std::path::PathBuf;

use orgo_snapshot::{BuildCache, Registry};

use crate::builder::Builder;
use crate::config::RuntimeConfig;
use crate::error::{RuntimeError, store_error};
use crate::home::Home;
use crate::net::Net;
use crate::pool::Pool;

/// What a runtime owns.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    pub(crate) registry: Registry,
    /// What the registry and the build cache are over (see
    /// [`crate::Runtime::shared_store`]).
    pub(crate) store: std::sync::Arc<dyn orgo_snapshot::Store>,
    pub(crate) builder: Builder,
    pub(crate) home: Home,
    pub(crate) pool: Pool,
    /// How VMs get their network (also the builder's).
    pub(crate) net: std::sync::Arc<Net>,
    /// The computers whose restart watchers run in this process (see
    /// the `restart` module).
    pub(crate) lives: crate::live::Watched,
}

impl Shared {
    /// Ends computer `id`'s lease and removes its network and files (its
    /// VMM is gone).
    pub(crate) async fn cleanup(&self, id: &str) -> Result<(), RuntimeError> {
        self.net.teardown(id, &self.home.dir(id)).await;
        self.builder.cache.release(id).await.map_err(store_error)?;
        self.home.remove(id)
    }
}

impl Drop for Shared {
    /// Parked computers die with their handles; their leases and files
    /// are removed here (on a thread of its own: this may run inside an
    /// async runtime, which cannot block on another).
    fn drop(&mut self) {
        let parked = self.pool.drain_owned();
        if parked.is_empty() {
            return;
        }
        let ids: Vec<String> = parked.iter().map(|w| w.id.clone()).collect();
        drop(parked);
        release_blocking(
            &self.builder.cache,
            ids.into_iter().map(|id| (self.home.dir(&id), id)).collect(),
        );
    }
}

/// Frees the leases and removes the directories of computers that never
/// launched, from synchronous code (a `Drop`): on a thread of its own, as
/// this may run inside an async runtime, which cannot block on another.
pub(crate) fn release_blocking(cache: &BuildCache, computers: Vec<(PathBuf, String)>) {
    let cache = cache.clone();
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        for (dir, id) in computers {
            let _ = rt.block_on(cache.release(&id));
            let _ = crate::home::remove_dir(&dir);
        }
    });
    let _ = cleanup.join();
}
