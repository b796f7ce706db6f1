//! orgo's shared store for a fleet of hosts. A [`FleetStore`] is an
//! [`orgo_snapshot::Store`] whose blobs live in S3-compatible object storage
//! as deduplicated chunks ([`S3Blobs`]) and whose refs and locks live in
//! PostgreSQL ([`PgRegistry`]). Every host of a fleet opens the same two,
//! and keeps its own local store as a cache in front of them
//! ([`orgo_snapshot::CachedStore`]): a template built on one host launches
//! on another, which fetches its snapshot and builds nothing.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orgo_fleet::FleetStore;
//! use orgo_snapshot::{CachedStore, LocalStore, Registry};
//!
//! # async fn example() -> Result<(), orgo_snapshot::StoreError> {
//! // ORGO_STORE_URL=s3://bucket/prefix, ORGO_REGISTRY_URL=postgres://...,
//! // and the AWS_* variables of the object store.
//! let fleet = FleetStore::from_env().await?.expect("a fleet is configured");
//! let host = CachedStore::new(LocalStore::open("/var/lib/orgo").await?, Arc::new(fleet));
//! let registry = Registry::new(Arc::new(host));
//! # Ok(()) }
//! ```
//!
//! # Why two services
//!
//! Blobs are content-addressed, so writing one is idempotent and needs no
//! conditional request: any S3-compatible store holds them. Refs, build
//! locks and gc's marks are mutable and need a consistent store, and S3
//! conditional writes are not dependable across S3-compatible servers
//! (Garage 2.5.0 ignores `If-None-Match: *`; s3s-fs checks, then writes).
//! PostgreSQL gives create-if-absent by a unique key, and locks that end
//! with the connection of the host that held them.
//!
//! # Configuration
//!
//! | variable | what |
//! |---|---|
//! | `ORGO_STORE_URL` | `s3://bucket/prefix`: where blobs go |
//! | `ORGO_REGISTRY_URL` | `postgres://user:password@host:port/db`: refs and locks |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` | the object store's credentials and region |
//! | `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` | a self-hosted store (MinIO, Garage, Ceph, s3s-fs) |
//!
//! Both URLs or neither: one alone is refused. No error or log names a
//! password or a secret key.

mod chunks;
mod pg;
mod s3;

use std::path::Path;

use async_trait::async_trait;
use orgo_snapshot::{
    BlobInfo, BlobReader, BlobService, LockGuard, LockMode, LockService, PutMode, RefKey,
    RefService, StoreError,
};
use orgo_template::Digest;
use tokio::io::AsyncRead;

pub use crate::pg::PgRegistry;
pub use crate::s3::{PutStats, S3Blobs};

/// The variable that names the object store (`s3://bucket/prefix`).
pub const STORE_URL_VAR: &str = "ORGO_STORE_URL";
/// The variable that names the registry database (`postgres://...`).
pub const REGISTRY_URL_VAR: &str = "ORGO_REGISTRY_URL";

/// A fleet's shared store: blobs in an object store, refs and locks in a
/// database.
#[derive(Debug)]
pub struct FleetStore {
    blobs: S3Blobs,
    registry: PgRegistry,
}

impl FleetStore {
    /// The store made of `blobs` and `registry`.
    pub fn new(blobs: S3Blobs, registry: PgRegistry) -> FleetStore {
        FleetStore { blobs, registry }
    }

    /// Opens the object store at `store_url` (with the `AWS_*` variables'
    /// credentials and endpoint) and connects to the registry at
    /// `registry_url`, bringing its schema up to date.
    ///
    /// A failed request to the object store is retried 3 times within 30
    /// s (object_store's default is 10 times within 3 minutes): an outage
    /// fails a launch in seconds, saying so, rather than hang it.
    pub async fn open(store_url: &str, registry_url: &str) -> Result<FleetStore, StoreError> {
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(30),
            ..object_store::RetryConfig::default()
        };
        let builder = object_store::aws::AmazonS3Builder::from_env().with_retry(retry);
        let blobs = S3Blobs::from_builder(builder, store_url)?;
        let registry = PgRegistry::connect(registry_url).await?;
        Ok(FleetStore { blobs, registry })
    }

    /// The fleet the environment names ([`STORE_URL_VAR`] and
    /// [`REGISTRY_URL_VAR`]), opened; `None` when neither is set.
    pub async fn from_env() -> Result<Option<FleetStore>, StoreError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var(STORE_URL_VAR), var(REGISTRY_URL_VAR)) {
            (None, None) => Ok(None),
            (Some(store), Some(registry)) => Ok(Some(FleetStore::open(&store, &registry).await?)),
            (store, _) => {
                let (set, unset) = if store.is_some() {
                    (STORE_URL_VAR, REGISTRY_URL_VAR)
                } else {
                    (REGISTRY_URL_VAR, STORE_URL_VAR)
                };
                Err(StoreError::Invalid {
                    what: "fleet configuration",
                    location: set.to_owned(),
                    reason: format!(
                        "`{set}` is set but `{unset}` is not: a fleet needs both its object \
                         store and its registry database"
                    ),
                })
            }
        }
    }

    /// The blobs' store.
    pub fn blobs(&self) -> &S3Blobs {
        &self.blobs
    }

    /// The registry.
    pub fn registry(&self) -> &PgRegistry {
        &self.registry
    }
}

#[async_trait]
impl BlobService for FleetStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.blobs.stat(digest).await
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError> {
        self.blobs.open(digest).await
    }

    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError> {
        self.blobs.put(source).await
    }

    async fn put_file(&self, path: &Path, mode: PutMode) -> Result<BlobInfo, StoreError> {
        self.blobs.put_file(path, mode).await
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.blobs.delete(digest).await
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.blobs.list().await
    }

    async fn remove_incomplete(&self) -> Result<u64, StoreError> {
        self.blobs.remove_incomplete().await
    }
}

#[async_trait]
impl RefService for FleetStore {
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError> {
        self.registry.get_ref(key).await
    }

    async fn create_ref(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<Option<Digest>, StoreError> {
        self.registry.create_ref(key, digest).await
    }

    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError> {
        self.registry.set_ref(key, digest).await
    }

    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError> {
        self.registry.delete_ref(key).await
    }

    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        self.registry.list_refs(prefix).await
    }
}

#[async_trait]
impl LockService for FleetStore {
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError> {
        self.registry.lock(name, mode).await
    }
}
