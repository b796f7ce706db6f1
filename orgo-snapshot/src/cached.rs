//! [`CachedStore`]: one host's view of a store shared by a fleet of hosts.
//! Refs and locks are the shared store's alone; blobs are written to both
//! and read from the host's [`LocalStore`], which fetches what it lacks.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use orgo_template::Digest;
use tokio::io::AsyncRead;

use crate::error::StoreError;
use crate::local::LocalStore;
use crate::service::{
    BlobInfo, BlobReader, BlobService, LockGuard, LockMode, LockService, PutMode, RefKey,
    RefService, Store,
};

/// A host's local store in front of a fleet's shared one.
///
/// - **Refs and locks** go to the shared store only: the registry, the
///   build cache's single flight, leases and gc are the fleet's, not the
///   host's.
/// - **Blobs** are written to the local store, then uploaded unless the
///   shared store has them. They are read from the local store, which
///   fetches a blob it lacks first ([`CachedStore::fetch`]): what a host
///   launches is on its own disk, where the VMM reads it.
/// - A fetched blob is verified as it arrives (the shared store checks each
///   chunk, the local store the whole), and one that fails is not kept.
#[derive(Debug, Clone)]
pub struct CachedStore {
    local: LocalStore,
    shared: Arc<dyn Store>,
}

/// What [`CachedStore::fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The local store had the blob.
    Local,
    /// It was fetched: this many bytes.
    Fetched(u64),
    /// Neither store has it.
    Missing,
}

impl CachedStore {
    /// `local` in front of `shared`.
    pub fn new(local: LocalStore, shared: Arc<dyn Store>) -> Self {
        Self { local, shared }
    }

    /// The host's local store.
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// The fleet's shared store.
    pub fn shared(&self) -> &Arc<dyn Store> {
        &self.shared
    }

    /// Brings `digest` into the local store unless it is there. Concurrent
    /// fetches of one blob on one host (by any process) fetch it once.
    pub async fn fetch(&self, digest: &Digest) -> Result<Fetched, StoreError> {
        if self.local.stat(digest).await?.is_some() {
            return Ok(Fetched::Local);
        }
        let name = RefKey::new(&format!("fetch/{}", digest.hex()))?;
        let _fetching = self.local.lock(&name, LockMode::Exclusive).await?;
        if self.local.stat(digest).await?.is_some() {
            return Ok(Fetched::Local); // another process fetched it
        }
        let Some(mut reader) = self.shared.open(digest).await? else {
            return Ok(Fetched::Missing);
        };
        let info = self.local.put(&mut reader).await.map_err(corrupt_cause)?;
        if info.digest != *digest {
            // The reader checks the digest, so this is a bug, not bad bytes:
            // either way the blob is not kept under a wrong name.
            self.local.delete(&info.digest).await?;
            return Err(StoreError::Corrupt {
                digest: *digest,
                location: "the shared store".into(),
                reason: format!("its bytes hash to `{}`", info.digest),
            });
        }
        Ok(Fetched::Fetched(info.size))
    }

    /// Uploads a blob the local store holds, unless the shared store has it.
    async fn upload(&self, info: BlobInfo) -> Result<BlobInfo, StoreError> {
        if self.shared.stat(&info.digest).await?.is_none() {
            let path = self.local.blob_path(&info.digest);
            let uploaded = self.shared.put_file(&path, PutMode::Copy).await?;
            if uploaded != info {
                return Err(StoreError::Corrupt {
                    digest: info.digest,
                    location: path.display().to_string(),
                    reason: format!(
                        "it changed while it was uploaded (now `{}`, {} bytes)",
                        uploaded.digest, uploaded.size
                    ),
                });
            }
        }
        Ok(info)
    }
}

/// A fetch that failed on bad bytes fails with the corruption itself (which
/// names the chunk or blob), not with the local write it interrupted.
fn corrupt_cause(error: StoreError) -> StoreError {
    match error {
        StoreError::Io { op, path, source } => {
            StoreError::carried(source).unwrap_or_else(|source| StoreError::Io { op, path, source })
        }
        other => other,
    }
}

#[async_trait]
impl BlobService for CachedStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.local.stat(digest).await? {
            Some(size) => Ok(Some(size)),
            None => self.shared.stat(digest).await,
        }
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError> {
        if self.fetch(digest).await? == Fetched::Missing {
            return Ok(None);
        }
        self.local.open(digest).await
    }

    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError> {
        let info = self.local.put(source).await?;
        self.upload(info).await
    }

    async fn put_file(&self, path: &Path, mode: PutMode) -> Result<BlobInfo, StoreError> {
        let info = self.local.put_file(path, mode).await?;
        self.upload(info).await
    }

    /// Deletes the blob from both stores; `true` if either had it.
    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let shared = self.shared.delete(digest).await?;
        let local = self.local.delete(digest).await?;
        Ok(shared || local)
    }

    /// The shared store's blobs: what the fleet has.
    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.shared.list().await
    }

    async fn remove_incomplete(&self) -> Result<u64, StoreError> {
        Ok(self.local.remove_incomplete().await? + self.shared.remove_incomplete().await?)
    }
}

#[async_trait]
impl RefService for CachedStore {
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError> {
        self.shared.get_ref(key).await
    }

    async fn create_ref(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<Option<Digest>, StoreError> {
        self.shared.create_ref(key, digest).await
    }

    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError> {
        self.shared.set_ref(key, digest).await
    }

    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError> {
        self.shared.delete_ref(key).await
    }

    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        self.shared.list_refs(prefix).await
    }
}

#[async_trait]
impl LockService for CachedStore {
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError> {
        self.shared.lock(name, mode).await
    }
}
