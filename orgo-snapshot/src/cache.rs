//! The build cache: template digest -> golden snapshot, built once.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use orgo_template::Digest;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::manifest::{
    HardwareShape, ImageManifest, Manifest, SnapshotManifest, get_manifest, now_rfc3339,
    put_manifest,
};
use crate::registry::keys;
use crate::service::{BlobInfo, LockMode, PutMode, RefKey, Store, read_small};

/// What a successful build hands to the cache: files to store (moved into
/// the store, not copied, where the filesystem allows) and what describes them.
#[derive(Debug, Clone)]
pub struct SnapshotArtifacts {
    /// Files by role (`disk`, `memory`, `state`, ...). They are consumed.
    pub files: BTreeMap<String, PathBuf>,
    /// The hardware the snapshot was captured with.
    pub hardware: HardwareShape,
    /// The backend that made it.
    pub backend: String,
    /// The base image's manifest digest.
    pub base_image: Digest,
    /// The kernel blob's digest.
    pub kernel: Digest,
    /// The SHA-256 of the guest agent inside (see [`SnapshotManifest::agent`]).
    pub agent: Option<Digest>,
}

/// Why a build failed, as the builder tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFailure {
    /// One line: which step failed and how (`build.run[2] exited with 1`).
    pub message: String,
    /// The failing step's output (or the whole build log).
    pub log: String,
}

/// A recorded failure, kept until the template builds successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The failure's one-line message.
    pub message: String,
    /// The failing step's output.
    pub log: String,
    /// When it failed (RFC 3339, UTC).
    pub failed_at: String,
    /// When it failed, in nanoseconds since the Unix epoch: joins the
    /// failure to the callers that waited for it.
    pub failed_at_nanos: u128,
}

/// The largest failure record kept (logs are truncated to fit).
const MAX_FAILURE_BYTES: u64 = 1 << 20;
const MAX_LOG_BYTES: usize = 512 * 1024;

/// A snapshot found or built by [`BuildCache::get_or_build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest.
    pub manifest: SnapshotManifest,
    /// `true` if this call ran the build; `false` for a cache hit or a
    /// build another caller ran.
    pub built_here: bool,
}

/// Golden snapshots by template digest, over any [`Store`].
#[derive(Debug, Clone)]
pub struct BuildCache {
    store: Arc<dyn Store>,
}

impl BuildCache {
    /// A cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The snapshot of `template`, if built: one ref read and one manifest read.
    pub async fn get(&self, template: &Digest) -> Result<Option<Built>, StoreError> {
        let key = keys::by_digest(keys::SNAPSHOTS, template);
        let Some(digest) = self.store.get_ref(&key).await? else {
            return Ok(None);
        };
        let manifest = self.snapshot_manifest(&key, &digest).await?;
        Ok(Some(Built {
            digest,
            manifest,
            built_here: false,
        }))
    }

    async fn snapshot_manifest(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<SnapshotManifest, StoreError> {
        self.manifest_at(key, digest, "a snapshot", |m| match m {
            Manifest::Snapshot(m) => Some(m),
            _ => None,
        })
        .await
    }

    /// The manifest `key` points at, which must be of the kind `pick` takes.
    async fn manifest_at<T>(
        &self,
        key: &RefKey,
        digest: &Digest,
        kind: &str,
        pick: impl FnOnce(Manifest) -> Option<T>,
    ) -> Result<T, StoreError> {
        let manifest =
            get_manifest(&*self.store, digest)
                .await?
                .ok_or_else(|| StoreError::Dangling {
                    key: key.to_string(),
                    digest: *digest,
                })?;
        pick(manifest).ok_or_else(|| StoreError::Invalid {
            what: "manifest",
            location: digest.to_string(),
            reason: format!("`{key}` points at a manifest that is not {kind}"),
        })
    }

    /// Drops `template`'s snapshot from the cache if it is still `stale`
    /// (a snapshot the caller will not use, such as one whose guest agent
    /// is not the caller's), so that the next [`BuildCache::get_or_build`]
    /// builds it again. Returns whether it was dropped; a snapshot built
    /// since by another caller is kept. Computers leased to the stale
    /// snapshot keep it until they release it.
    pub async fn forget(&self, template: &Digest, stale: &Digest) -> Result<bool, StoreError> {
        let key = keys::by_digest(keys::SNAPSHOTS, template);
        let _building = self
            .store
            .lock(&keys::by_digest("builds", template), LockMode::Exclusive)
            .await?;
        if self.store.get_ref(&key).await?.as_ref() != Some(stale) {
            return Ok(false);
        }
        self.store.delete_ref(&key).await?;
        Ok(true)
    }

    /// The snapshot of `template`, building it with `build` on a miss.
    ///
    /// Single flight: concurrent callers for one digest, in this process or
    /// any other on the same store, run one build and all receive its
    /// outcome. A failed build is recorded ([`BuildCache::failure`]) and
    /// returned as [`StoreError::BuildFailed`] to every caller that waited
    /// for it; it is not cached, so a later call builds again.
    ///
    /// The snapshot of a template that is not published can be collected by
    /// [`crate::gc`] as soon as this returns; to launch from it, use
    /// [`BuildCache::lease_or_build`].
    pub async fn get_or_build<F, Fut>(
        &self,
        template: &Digest,
        build: F,
    ) -> Result<Built, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<SnapshotArtifacts, BuildFailure>> + Send,
    {
        self.get_or_build_as(template, None, build).await
    }

    /// [`BuildCache::get_or_build`], leasing the snapshot to computer `id`
    /// in the same step, so no gc can take it between the build and the
    /// lease (the snapshot of an unpublished template has no other root).
    pub async fn lease_or_build<F, Fut>(
        &self,
        id: &str,
        template: &Digest,
        build: F,
    ) -> Result<Built, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<SnapshotArtifacts, BuildFailure>> + Send,
    {
        let key = keys::root(keys::LEASES).join(id)?;
        self.get_or_build_as(template, Some(&key), build).await
    }

    async fn get_or_build_as<F, Fut>(
        &self,
        template: &Digest,
        lease: Option<&RefKey>,
        build: F,
    ) -> Result<Built, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<SnapshotArtifacts, BuildFailure>> + Send,
    {
        if let Some(hit) = self.found(template, lease).await? {
            return Ok(hit);
        }
        let waited_from = unix_nanos();
        let lock = keys::by_digest("builds", template);
        let _building = self.store.lock(&lock, LockMode::Exclusive).await?;
        // Whoever held the lock before us may have finished the work.
        if let Some(hit) = self.found(template, lease).await? {
            return Ok(hit);
        }
        if let Some(failure) = self.failure(template).await?
            && failure.failed_at_nanos >= waited_from
        {
            return Err(StoreError::BuildFailed {
                template: *template,
                message: failure.message,
            });
        }
        match build().await {
            Ok(artifacts) => {
                let (digest, manifest) = self.store_snapshot(template, artifacts, lease).await?;
                Ok(Built {
                    digest,
                    manifest,
                    built_here: true,
                })
            }
            Err(failure) => {
                self.record_failure(template, &failure).await?;
                Err(StoreError::BuildFailed {
                    template: *template,
                    message: failure.message,
                })
            }
        }
    }

    /// A cache hit, leased to `lease` (if given) under the gc lock.
    async fn found(
        &self,
        template: &Digest,
        lease: Option<&RefKey>,
    ) -> Result<Option<Built>, StoreError> {
        let Some(lease) = lease else {
            return self.get(template).await;
        };
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let Some(built) = self.get(template).await? else {
            return Ok(None);
        };
        self.store.set_ref(lease, &built.digest).await?;
        Ok(Some(built))
    }

    async fn store_snapshot(
        &self,
        template: &Digest,
        artifacts: SnapshotArtifacts,
        lease: Option<&RefKey>,
    ) -> Result<(Digest, SnapshotManifest), StoreError> {
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let mut blobs = BTreeMap::new();
        for (role, path) in &artifacts.files {
            let info = self.store.put_file(path, PutMode::Move).await?;
            blobs.insert(role.clone(), info);
        }
        let manifest = SnapshotManifest {
            template: *template,
            blobs,
            hardware: artifacts.hardware,
            backend: artifacts.backend,
            base_image: artifacts.base_image,
            kernel: artifacts.kernel,
            agent: artifacts.agent,
            parent: None,
            created_at: now_rfc3339(),
        };
        let digest = put_manifest(&*self.store, &Manifest::Snapshot(manifest.clone())).await?;
        if let Some(lease) = lease {
            self.store.set_ref(lease, &digest).await?;
        }
        self.store
            .set_ref(&keys::by_digest(keys::SNAPSHOTS, template), &digest)
            .await?;
        self.store
            .delete_ref(&keys::by_digest(keys::FAILURES, template))
            .await?;
        Ok((digest, manifest))
    }

    async fn record_failure(
        &self,
        template: &Digest,
        failure: &BuildFailure,
    ) -> Result<(), StoreError> {
        let mut log = failure.log.as_str();
        if log.len() > MAX_LOG_BYTES {
            // Keep the end: that is where the error is.
            let mut start = log.len() - MAX_LOG_BYTES;
            while !log.is_char_boundary(start) {
                start += 1;
            }
            log = &log[start..];
        }
        let record = FailureRecord {
            message: failure.message.chars().take(4096).collect(),
            log: log.to_owned(),
            failed_at: now_rfc3339(),
            failed_at_nanos: unix_nanos(),
        };
        let bytes = serde_json::to_vec(&record).expect("failure records serialize");
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let stored = self.store.put(&mut bytes.as_slice()).await?;
        self.store
            .set_ref(&keys::by_digest(keys::FAILURES, template), &stored.digest)
            .await
    }

    /// The last recorded failure of `template`'s build, if its last build failed.
    pub async fn failure(&self, template: &Digest) -> Result<Option<FailureRecord>, StoreError> {
        let key = keys::by_digest(keys::FAILURES, template);
        let Some(digest) = self.store.get_ref(&key).await? else {
            return Ok(None);
        };
        let bytes = read_small(&*self.store, &digest, MAX_FAILURE_BYTES, "failure record")
            .await?
            .ok_or_else(|| StoreError::Dangling {
                key: key.to_string(),
                digest,
            })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Invalid {
                what: "failure record",
                location: digest.to_string(),
                reason: e.to_string(),
            })
    }

    /// Records that a running computer (`id`) uses `template`'s snapshot, so
    /// gc keeps it while the computer runs; returns the snapshot.
    pub async fn lease(&self, id: &str, template: &Digest) -> Result<Built, StoreError> {
        let key = keys::root(keys::LEASES).join(id)?;
        self.found(template, Some(&key))
            .await?
            .ok_or_else(|| StoreError::Dangling {
                key: key.to_string(),
                digest: *template,
            })
    }

    /// Sets computer `id`'s lease again, unchanged, if it holds one (in a
    /// fleet's registry this says its host is alive: leases nobody renews
    /// expire); `false` if it holds none.
    pub async fn renew(&self, id: &str) -> Result<bool, StoreError> {
        let key = keys::root(keys::LEASES).join(id)?;
        match self.store.get_ref(&key).await? {
            Some(digest) => {
                self.store.set_ref(&key, &digest).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends the lease of computer `id`; `false` if it held none.
    pub async fn release(&self, id: &str) -> Result<bool, StoreError> {
        let key = keys::root(keys::LEASES).join(id)?;
        self.store.delete_ref(&key).await
    }

    /// The computers that hold a lease.
    pub async fn leases(&self) -> Result<Vec<String>, StoreError> {
        let root = keys::root(keys::LEASES);
        let prefix = format!("{}/", root.as_str());
        Ok(self
            .store
            .list_refs(&root)
            .await?
            .iter()
            .filter_map(|key| key.as_str().strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Stores a base image built from `recipe` (files by role, consumed) and
    /// makes it the image for that recipe; a gc root until replaced.
    pub async fn put_base_image(
        &self,
        recipe: &Digest,
        files: &BTreeMap<String, PathBuf>,
    ) -> Result<(Digest, ImageManifest), StoreError> {
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let mut blobs: BTreeMap<String, BlobInfo> = BTreeMap::new();
        for (role, path) in files {
            blobs.insert(
                role.clone(),
                self.store.put_file(path, PutMode::Move).await?,
            );
        }
        let manifest = ImageManifest {
            recipe: *recipe,
            blobs,
            created_at: now_rfc3339(),
        };
        let digest = put_manifest(&*self.store, &Manifest::BaseImage(manifest.clone())).await?;
        self.store
            .set_ref(&keys::by_digest(keys::IMAGES, recipe), &digest)
            .await?;
        Ok((digest, manifest))
    }

    /// The base image built from `recipe`, if stored.
    pub async fn base_image(
        &self,
        recipe: &Digest,
    ) -> Result<Option<(Digest, ImageManifest)>, StoreError> {
        let key = keys::by_digest(keys::IMAGES, recipe);
        let Some(digest) = self.store.get_ref(&key).await? else {
            return Ok(None);
        };
        let manifest = self
            .manifest_at(&key, &digest, "a base image", |m| match m {
                Manifest::BaseImage(m) => Some(m),
                _ => None,
            })
            .await?;
        Ok(Some((digest, manifest)))
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
