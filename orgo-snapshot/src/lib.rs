//! orgo's content-addressed store: blobs, manifests, the template registry
//! and the single-flight build cache.
//!
//! ```
//! use std::sync::Arc;
//! use orgo_snapshot::{MemoryStore, Registry, Store};
//! use orgo_template::{Name, Template};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let registry = Registry::new(store);
//! let template = Template::from_yaml("api_version: orgo.ai/v1\nname: app@1.0.0\n")?;
//! let ns = Name::new("default")?;
//!
//! let published = registry.publish(ns.clone(), &template).await?;
//! assert!(published.created);
//! assert!(!registry.publish(ns, &template).await?.created); // same document: a no-op
//!
//! let found = registry.resolve(&"app@1.0.0".parse()?).await?.expect("published");
//! assert_eq!(found.digest(), template.digest());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layers
//!
//! - **Backends** implement three small async traits: [`BlobService`]
//!   (content-addressed blobs, streamed in and out, verified on read),
//!   [`RefService`] (named pointers to digests, with an atomic
//!   create-if-absent) and [`LockService`] (named shared/exclusive locks
//!   across processes). A miss is `Ok(None)`. [`LocalStore`] is the embedded
//!   default; [`MemoryStore`] serves tests. An S3-compatible store maps onto
//!   the same traits (objects, conditional `PUT` with `If-None-Match`, a lock
//!   object) and must pass the same conformance suite (feature
//!   `conformance`).
//! - **Everything else** is written once over `dyn Store`: [`Registry`]
//!   (`namespace/name@version` -> canonical template, immutable),
//!   [`BuildCache`] (template digest -> [`SnapshotManifest`], single flight,
//!   failures recorded, leases for running computers), [`gc`] and [`verify`].
//!
//! # What is stored where (ref keys)
//!
//! | ref | points at |
//! |---|---|
//! | `templates/<namespace>/<name>/<version>` | the template's canonical JSON (its blob digest *is* the template digest) |
//! | `snapshots/<template hex>` | the [`SnapshotManifest`] of its golden snapshot |
//! | `failures/<template hex>` | the [`FailureRecord`] of its last failed build |
//! | `images/<recipe hex>` | the [`ImageManifest`] of a base image |
//! | `leases/<computer id>` | the snapshot a running computer was launched from |
//!
//! Manifests are blobs too: JSON with sorted keys and a version field
//! (`"orgo_manifest": 1`), refused unparsed above [`MAX_MANIFEST_BYTES`] and
//! read by the version rule of [`versioned`], the one reader of orgo's
//! versioned JSON files.
//!
//! # Crash safety
//!
//! Every write is a temp file, fsync, atomic rename (or link, for
//! create-if-absent) and a directory fsync: `kill -9` at any moment leaves a
//! store that passes [`verify`], with no partial object under a final name.
//! The tests kill writer processes at random points to hold this.
//!
//! # The local store's root
//!
//! [`LocalStore::default_root`]: `$ORGO_HOME`, else `$XDG_DATA_HOME/orgo`,
//! else `~/.local/share/orgo`.

mod cache;
mod cached;
mod checkpoint;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod gc;
mod local;
mod manifest;
mod memory;
mod registry;
mod service;
pub mod versioned;

pub use crate::cache::{BuildCache, BuildFailure, Built, FailureRecord, SnapshotArtifacts};
pub use crate::cached::{CachedStore, Fetched};
pub use crate::checkpoint::Checkpoints;
pub use crate::error::StoreError;
pub use crate::gc::{GcReport, Problem, VerifyReport, gc, verify};
pub use crate::local::{LocalStore, Materialized};
pub use crate::manifest::{
    HardwareShape, ImageManifest, MANIFEST_VERSION, MAX_MANIFEST_BYTES, Manifest, Provenance,
    SnapshotManifest, get_manifest, put_manifest,
};
pub use crate::memory::MemoryStore;
pub use crate::registry::{Published, RESERVED_NAMESPACE, Registry};
pub use crate::service::{
    BlobInfo, BlobReader, BlobService, LockGuard, LockMode, LockService, PutMode, RefKey,
    RefService, Store,
};
pub use crate::versioned::{Version, VersionedError, VersionedFormat};
