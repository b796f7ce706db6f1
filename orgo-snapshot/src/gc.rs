//! Garbage collection and verification, for every backend.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use orgo_template::Digest;
use tokio::io::AsyncReadExt as _;

use crate::error::StoreError;
use crate::manifest::{Manifest, get_manifest};
use crate::registry::keys;
use crate::service::{BlobService, LockMode, RefKey, Store, refs_under, unwrap_corrupt};

/// What [`gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs (templates, manifests, disks, memory files, ...) removed.
    pub blobs_removed: u64,
    /// Their total size in bytes.
    pub bytes_freed: u64,
    /// Snapshot and failure refs of templates no longer referenced.
    pub refs_removed: u64,
    /// Leftovers of crashed writers removed.
    pub incomplete_removed: u64,
}

/// Removes everything no root reaches.
///
/// Roots: published templates (`templates/...`), the leases of running
/// computers (`leases/...`) and base images (`images/...`). From a template,
/// its snapshot and failure record are reached; from a manifest, its blobs
/// and its base image. gc holds the store's gc lock exclusively, and every
/// writer in this crate holds it shared from its first blob to its ref, so
/// nothing a publish or a build is storing is ever collected. Refs are removed
/// before the blobs they reach, so a crash mid-gc leaves no dangling ref.
pub async fn gc(store: &dyn Store) -> Result<GcReport, StoreError> {
    let _exclusive = store.lock(&keys::gc_lock(), LockMode::Exclusive).await?;
    let mut report = GcReport {
        incomplete_removed: store.remove_incomplete().await?,
        ..GcReport::default()
    };
    let live = mark(store).await?;

    for kind in [keys::SNAPSHOTS, keys::FAILURES] {
        for key in store.list_refs(&keys::root(kind)).await? {
            let template = key
                .strip_prefix(&keys::root(kind))
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
            if template.is_none_or(|t| !live.templates.contains(&t))
                && store.delete_ref(&key).await?
            {
                report.refs_removed += 1;
            }
        }
    }
    for blob in store.list().await? {
        if !live.blobs.contains(&blob.digest) && store.delete(&blob.digest).await? {
            report.blobs_removed += 1;
            report.bytes_freed += blob.size;
        }
    }
    Ok(report)
}

#[derive(Default)]
struct Live {
    templates: HashSet<Digest>,
    blobs: HashSet<Digest>,
}

async fn mark(store: &dyn Store) -> Result<Live, StoreError> {
    let mut live = Live::default();
    let mut manifests = Vec::new();
    // An unreadable ref fails gc: what it pointed at cannot be known.
    for (_, digest) in refs_under(store, &keys::root(keys::TEMPLATES)).await? {
        live.templates.insert(digest);
    }
    for kind in [
        keys::LEASES,
        keys::IMAGES,
        keys::CHECKPOINTS,
        keys::PUBLISHED,
    ] {
        for (_, digest) in refs_under(store, &keys::root(kind)).await? {
            manifests.push(digest);
        }
    }
    // Leases name snapshots; their templates stay alive with them.
    let mut seen = HashSet::new();
    let mut templates: Vec<Digest> = live.templates.iter().copied().collect();
    loop {
        for template in templates.drain(..) {
            live.blobs.insert(template);
            if let Some(digest) = store
                .get_ref(&keys::by_digest(keys::SNAPSHOTS, &template))
                .await?
            {
                manifests.push(digest);
            }
            // A failure record is a plain blob, not a manifest.
            if let Some(digest) = store
                .get_ref(&keys::by_digest(keys::FAILURES, &template))
                .await?
            {
                live.blobs.insert(digest);
            }
        }
        let Some(digest) = manifests.pop() else { break };
        if !seen.insert(digest) {
            continue;
        }
        live.blobs.insert(digest);
        // A manifest that cannot be read (I/O, corruption, a newer format)
        // stops gc: what it references cannot be known, so nothing is safe
        // to remove. A missing one references nothing (verify reports it).
        let Some(manifest) = get_manifest(store, &digest).await? else {
            continue;
        };
        live.blobs.extend(manifest.blobs().map(|b| b.digest));
        if let Manifest::Snapshot(snapshot) = &manifest {
            live.blobs.insert(snapshot.kernel);
            manifests.push(snapshot.base_image);
            // A checkpoint's disk is a layer over its parent's.
            if let Some(parent) = &snapshot.parent {
                manifests.push(parent.snapshot);
            }
            if live.templates.insert(snapshot.template) {
                templates.push(snapshot.template);
            }
        }
    }
    Ok(live)
}

/// One problem [`verify`] found.
#[derive(Debug)]
pub struct Problem {
    /// What it is about: a blob's digest or a ref's key.
    pub subject: String,
    /// What is wrong.
    pub error: StoreError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.error)?;
        let mut source = std::error::Error::source(&self.error);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// What [`verify`] checked and found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Refs checked.
    pub refs: u64,
    /// Every problem found; empty for a sound store.
    pub problems: Vec<Problem>,
}

/// Checks the whole store: every blob re-hashed against its name, every ref
/// parsed and pointing at a stored object, every manifest parsed with its
/// blobs present at their recorded sizes. Reports every problem, fixes none.
pub async fn verify(store: &dyn Store) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut sizes = std::collections::HashMap::new();
    for blob in store.list().await? {
        report.blobs += 1;
        report.bytes += blob.size;
        sizes.insert(blob.digest, blob.size);
        if let Err(error) = rehash(store, &blob.digest).await {
            report.problems.push(Problem {
                subject: blob.digest.to_string(),
                error,
            });
        }
    }
    for key in list_all_refs(store).await? {
        report.refs += 1;
        let digest = match store.get_ref(&key).await {
            Ok(Some(digest)) => digest,
            Ok(None) => continue, // deleted since the listing
            Err(error) => {
                report.problems.push(Problem {
                    subject: key.to_string(),
                    error,
                });
                continue;
            }
        };
        if !sizes.contains_key(&digest) {
            report.problems.push(Problem {
                subject: key.to_string(),
                error: StoreError::Dangling {
                    key: key.to_string(),
                    digest,
                },
            });
            continue;
        }
        let kind = key.as_str().split('/').next().unwrap_or_default();
        if ![
            keys::SNAPSHOTS,
            keys::LEASES,
            keys::IMAGES,
            keys::CHECKPOINTS,
            keys::PUBLISHED,
        ]
        .contains(&kind)
        {
            continue;
        }
        match get_manifest(store, &digest).await {
            Ok(Some(manifest)) => {
                for blob in manifest.blobs() {
                    let problem = match sizes.get(&blob.digest) {
                        None => Some(StoreError::Dangling {
                            key: format!("{key} -> {digest}"),
                            digest: blob.digest,
                        }),
                        Some(&size) if size != blob.size => Some(StoreError::Corrupt {
                            digest: blob.digest,
                            location: format!("{key} -> {digest}"),
                            reason: format!(
                                "{size} bytes stored, the manifest records {}",
                                blob.size
                            ),
                        }),
                        Some(_) => None,
                    };
                    if let Some(error) = problem {
                        report.problems.push(Problem {
                            subject: key.to_string(),
                            error,
                        });
                    }
                }
                // A snapshot restores only with its base image and kernel,
                // a checkpoint only with its parent too.
                if let Manifest::Snapshot(snapshot) = &manifest {
                    let parent = snapshot.parent.as_ref().map(|p| p.snapshot);
                    for needed in [snapshot.base_image, snapshot.kernel]
                        .into_iter()
                        .chain(parent)
                    {
                        if !sizes.contains_key(&needed) {
                            report.problems.push(Problem {
                                subject: key.to_string(),
                                error: StoreError::Dangling {
                                    key: format!("{key} -> {digest}"),
                                    digest: needed,
                                },
                            });
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(error) => report.problems.push(Problem {
                subject: key.to_string(),
                error,
            }),
        }
    }
    Ok(report)
}

async fn list_all_refs(store: &dyn Store) -> Result<Vec<RefKey>, StoreError> {
    let mut all = Vec::new();
    let kinds: BTreeSet<&str> = [
        keys::TEMPLATES,
        keys::SNAPSHOTS,
        keys::FAILURES,
        keys::IMAGES,
        keys::LEASES,
        keys::CHECKPOINTS,
        keys::PUBLISHED,
    ]
    .into();
    for kind in kinds {
        all.extend(store.list_refs(&keys::root(kind)).await?);
    }
    Ok(all)
}

async fn rehash(blobs: &dyn BlobService, digest: &Digest) -> Result<(), StoreError> {
    let Some(mut reader) = blobs.open(digest).await? else {
        return Ok(()); // removed meanwhile
    };
    let mut buf = vec![0; 1 << 20];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(unwrap_corrupt(e, digest)),
        }
    }
}
