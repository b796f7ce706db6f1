//! Checkpoints: snapshots of running computers, kept until removed.
//!
//! A checkpoint is a [`SnapshotManifest`] with a [`Provenance`]: the
//! snapshot its computer was launched from, and the computer. It reuses
//! that snapshot's blobs where they did not change (the memory file its
//! state is loaded over, the metadata) and adds its own (the full state,
//! a disk layer over the parent's disk). `checkpoints/<hex>` keeps it (a gc
//! root); through its provenance, its parent stays too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use orgo_template::Digest;

use crate::error::StoreError;
use crate::manifest::{
    Manifest, Provenance, SnapshotManifest, get_manifest, now_rfc3339, put_manifest,
};
use crate::registry::keys;
use crate::service::{BlobInfo, LockMode, PutMode, Store};

/// The checkpoints of a store.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    store: Arc<dyn Store>,
}

impl Checkpoints {
    /// The checkpoints of `store`.
    pub fn new(store: Arc<dyn Store>) -> Checkpoints {
        Checkpoints { store }
    }

    /// Stores a checkpoint of computer `computer`, launched from snapshot
    /// `parent` (`parent_digest`): `files` are moved into the store (by
    /// role), the other roles are the parent's blobs. Returns its digest
    /// and manifest.
    pub async fn put(
        &self,
        parent_digest: &Digest,
        parent: &SnapshotManifest,
        computer: &str,
        files: &BTreeMap<String, PathBuf>,
    ) -> Result<(Digest, SnapshotManifest), StoreError> {
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let mut blobs: BTreeMap<String, BlobInfo> = parent.blobs.clone();
        for (role, path) in files {
            let info = self.store.put_file(path, PutMode::Move).await?;
            blobs.insert(role.clone(), info);
        }
        let manifest = SnapshotManifest {
            blobs,
            parent: Some(Box::new(Provenance {
                snapshot: *parent_digest,
                computer: computer.to_owned(),
            })),
            created_at: now_rfc3339(),
            ..parent.clone()
        };
        let digest = put_manifest(&*self.store, &Manifest::Snapshot(manifest.clone())).await?;
        self.store
            .set_ref(&keys::by_digest(keys::CHECKPOINTS, &digest), &digest)
            .await?;
        Ok((digest, manifest))
    }

    /// Checkpoint `digest`, if this store keeps it.
    pub async fn get(&self, digest: &Digest) -> Result<Option<SnapshotManifest>, StoreError> {
        let key = keys::by_digest(keys::CHECKPOINTS, digest);
        if self.store.get_ref(&key).await?.is_none() {
            return Ok(None);
        }
        match get_manifest(&*self.store, digest).await? {
            Some(Manifest::Snapshot(m)) if m.parent.is_some() => Ok(Some(m)),
            Some(_) => Err(StoreError::Invalid {
                what: "manifest",
                location: digest.to_string(),
                reason: format!("`{key}` points at a manifest that is not a checkpoint"),
            }),
            None => Err(StoreError::Dangling {
                key: key.to_string(),
                digest: *digest,
            }),
        }
    }

    /// Records that computer `id` runs from checkpoint `digest` (a lease,
    /// as [`crate::BuildCache::lease`] takes on a template's snapshot);
    /// `None` if there is no such checkpoint.
    pub async fn lease(
        &self,
        id: &str,
        digest: &Digest,
    ) -> Result<Option<SnapshotManifest>, StoreError> {
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let Some(manifest) = self.get(digest).await? else {
            return Ok(None);
        };
        let key = keys::root(keys::LEASES).join(id)?;
        self.store.set_ref(&key, digest).await?;
        Ok(Some(manifest))
    }

    /// Removes checkpoint `digest` (gc then frees what nothing else uses;
    /// computers launched from it keep it through their leases). Returns
    /// whether it was kept.
    pub async fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.store
            .delete_ref(&keys::by_digest(keys::CHECKPOINTS, digest))
            .await
    }
}
