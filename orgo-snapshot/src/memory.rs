//! An in-memory backend: for tests, and the proof that everything above the
//! traits is independent of the filesystem.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::RwLock;

use crate::error::StoreError;
use crate::service::{
    BlobInfo, BlobReader, BlobService, LockGuard, LockMode, LockService, RefKey, RefService,
};

/// A store held in memory, shared by its clones; gone with the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<Digest, Arc<Vec<u8>>>,
    refs: BTreeMap<RefKey, Digest>,
    locks: HashMap<RefKey, Arc<RwLock<()>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the memory store's mutex is never held across a panic")
    }

    /// Replaces a stored blob's bytes without changing its name, as a
    /// failing disk would: for corruption tests.
    pub fn corrupt(&self, digest: &Digest, bytes: Vec<u8>) -> bool {
        self.inner()
            .blobs
            .get_mut(digest)
            .map(|b| *b = Arc::new(bytes))
            .is_some()
    }
}

#[async_trait]
impl BlobService for MemoryStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.inner().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError> {
        let Some(bytes) = self.inner().blobs.get(digest).cloned() else {
            return Ok(None);
        };
        let size = bytes.len() as u64;
        let cursor = std::io::Cursor::new(OwnedBytes(bytes));
        Ok(Some(BlobReader::new(
            cursor,
            *digest,
            size,
            format!("memory:{digest}"),
        )))
    }

    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError> {
        let mut bytes = Vec::new();
        source
            .read_to_end(&mut bytes)
            .await
            .map_err(StoreError::io("read", "<source>"))?;
        let digest = Digest::from_sha256(Sha256::digest(&bytes).into());
        let size = bytes.len() as u64;
        self.inner().blobs.insert(digest, Arc::new(bytes));
        Ok(BlobInfo { digest, size })
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.inner().blobs.remove(digest).is_some())
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let mut out: Vec<BlobInfo> = self
            .inner()
            .blobs
            .iter()
            .map(|(digest, bytes)| BlobInfo {
                digest: *digest,
                size: bytes.len() as u64,
            })
            .collect();
        out.sort_by_key(|b| b.digest);
        Ok(out)
    }
}

#[async_trait]
impl RefService for MemoryStore {
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError> {
        Ok(self.inner().refs.get(key).copied())
    }

    async fn create_ref(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<Option<Digest>, StoreError> {
        let mut inner = self.inner();
        if let Some(existing) = inner.refs.get(key) {
            return Ok(Some(*existing));
        }
        inner.refs.insert(key.clone(), *digest);
        Ok(None)
    }

    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError> {
        self.inner().refs.insert(key.clone(), *digest);
        Ok(())
    }

    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError> {
        Ok(self.inner().refs.remove(key).is_some())
    }

    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        Ok(self
            .inner()
            .refs
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl LockService for MemoryStore {
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError> {
        let lock = self.inner().locks.entry(name.clone()).or_default().clone();
        Ok(match mode {
            LockMode::Shared => LockGuard::new(lock.read_owned().await),
            LockMode::Exclusive => LockGuard::new(lock.write_owned().await),
        })
    }
}

struct OwnedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for OwnedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
