//! Checkpoints: snapshots of running computers, kept until removed.
//!
//! A checkpoint is a [`SnapshotManifest`] with a [`Provenance`]: the
//! snapshot its computer was launched from, and the computer. It reuses
//! that snapshot's blobs where they did not change (the memory file its
//! state is loaded over, the metadata) and adds its own (the full state,
//! a disk layer over the parent's disk). `checkpoints/<hex>` keeps it (a gc
//! root); through its provenance, its parent stays too.
//!
//! A checkpoint can be published under a ref (`published/<ns>/<name>/<version>`,
//! a gc root too), immutable as a template's: a ref names a template or a
//! checkpoint, never both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use orgo_template::{Digest, Name, TemplateRef};

use crate::error::StoreError;
use crate::manifest::{
    Manifest, Provenance, SnapshotManifest, get_manifest, now_rfc3339, put_manifest,
};
use crate::registry::{RESERVED_NAMESPACE, keys};
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

    /// Publishes checkpoint `digest` under `reference`, to be launched by
    /// it. Publishing it there again is a no-op (`false`); a ref already
    /// given to another checkpoint or to a template is
    /// [`StoreError::Immutable`]; the reserved namespace is
    /// [`StoreError::Reserved`].
    pub async fn publish(
        &self,
        reference: &TemplateRef,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if reference.namespace().as_str() == RESERVED_NAMESPACE {
            return Err(StoreError::Reserved {
                namespace: reference.namespace().to_string(),
            });
        }
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        if self.get(digest).await?.is_none() {
            return Err(StoreError::Dangling {
                key: keys::by_digest(keys::CHECKPOINTS, digest).to_string(),
                digest: *digest,
            });
        }
        let _naming = self
            .store
            .lock(&keys::publishing(reference), LockMode::Exclusive)
            .await?;
        let taken = match self.store.get_ref(&keys::template(reference)).await? {
            Some(template) => Some(template),
            None => {
                self.store
                    .create_ref(&keys::published(reference), digest)
                    .await?
            }
        };
        match taken {
            None => Ok(true),
            Some(existing) if existing == *digest => Ok(false),
            Some(existing) => Err(StoreError::Immutable {
                reference: Box::new(reference.clone()),
                existing,
                new: *digest,
            }),
        }
    }

    /// The checkpoint published under `reference`, if one is.
    pub async fn resolve(&self, reference: &TemplateRef) -> Result<Option<Digest>, StoreError> {
        self.store.get_ref(&keys::published(reference)).await
    }

    /// Every published checkpoint in `namespace` (every namespace if
    /// `None`), sorted, with its digest.
    pub async fn list_published(
        &self,
        namespace: Option<&Name>,
    ) -> Result<Vec<(TemplateRef, Digest)>, StoreError> {
        crate::registry::refs_by_reference(&*self.store, keys::PUBLISHED, namespace).await
    }

    /// Unpublishes `reference`; `false` if no checkpoint was published
    /// there. The checkpoint stays while `checkpoints/` or a lease keeps it.
    pub async fn unpublish(&self, reference: &TemplateRef) -> Result<bool, StoreError> {
        self.store.delete_ref(&keys::published(reference)).await
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
