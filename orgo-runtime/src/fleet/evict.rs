//! The cache's cap.
//!
//! With [`RuntimeConfig::cache_max`], this host's store is trimmed after
//! each [`Fleet::fetch`] that brought blobs in, least recently used first,
//! until its blobs' total size (their lengths) is within the cap or nothing
//! it may remove is left. A blob's last use is its access time, which a
//! fetch sets on every blob it is asked for (fetched or already here), as
//! every launch's fetch does; blobs are read-only files whose modification
//! time is left alone. Never removed:
//!
//! - what a computer recorded in this home uses, in any state (running,
//!   parked, suspended, being launched): its snapshot manifest, the
//!   manifest's blobs and kernel, its base image's, and the disk layers
//!   under each ([`backing_blob`]). A launch records its snapshot before it
//!   fetches, and a fetch asks whether a blob is here holding the eviction
//!   lock shared, so an eviction (which holds it exclusively, one host
//!   process at a time) sees the record of every launch that found its
//!   blobs here ([`bring`]);
//! - base images (the fleet's `images/...` refs) with their blobs and the
//!   layers under them: builds read them;
//! - blobs under 1 MiB (manifests, templates);
//! - blobs the shared store does not have (never uploaded: the only copy);
//! - blobs used in the last [`RECENT`] (a build or launch of another process
//!   may be about to read what it just stored or fetched), and those the
//!   fetch itself was asked for.
//!
//! A cap that cannot be met, or an eviction that fails (an unreadable
//! record, the shared store out of reach), leaves the store as it is until
//! a later fetch: the cap never fails a launch.
//!
//! [`Fleet::fetch`]: super::Fleet::fetch
//! [`RuntimeConfig::cache_max`]: crate::RuntimeConfig::cache_max

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use orgo_snapshot::{
    BlobService as _, CachedStore, Fetched, LocalStore, LockMode, LockService as _, Manifest,
    RefKey, RefService as _, get_manifest,
};
use orgo_template::Digest;

use crate::error::{RuntimeError, store_error};
use crate::home::Home;

use super::backing::backing_blob;

/// Blobs smaller than this (manifests, templates) are never evicted.
const MIN_EVICTABLE: u64 = 1 << 20;

/// Blobs used (fetched, stored, launched) this recently are never evicted.
pub(super) const RECENT: Duration = Duration::from_secs(10 * 60);

/// The lock a fetch holds shared and an eviction exclusively, in the host's
/// store.
fn evict_lock() -> RefKey {
    RefKey::new("cache/evict").expect("a valid key")
}

/// What an eviction pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Blobs removed.
    pub(crate) blobs: u64,
    /// Their total size in bytes.
    pub(crate) bytes: u64,
}

/// Brings blob `digest` into the host's store unless it is there.
///
/// Whether it is there is asked holding the eviction lock shared: a blob
/// found here was either listed by no eviction yet, or is found after one
/// ended, and the next one reads the record of the launch it is for
/// (written before this fetch). A blob fetched lands after its record
/// was written, so an eviction that lists it reads that record too.
pub(super) async fn bring(store: &CachedStore, digest: &Digest) -> Result<Fetched, RuntimeError> {
    {
        let _checking = store
            .local()
            .lock(&evict_lock(), LockMode::Shared)
            .await
            .map_err(store_error)?;
        if store
            .local()
            .stat(digest)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Ok(Fetched::Local);
        }
    }
    store.fetch(digest).await.map_err(store_error)
}

/// Sets blob `digest`'s access time to now, its last use. Best effort: a
/// blob this process may not touch (another user's) keeps the time it has.
pub(super) fn mark_used(store: &LocalStore, digest: &Digest) {
    let now = std::fs::FileTimes::new().set_accessed(SystemTime::now());
    let _ = std::fs::File::open(store.blob_path(digest)).and_then(|file| file.set_times(now));
}

/// A blob of this host's store, as an eviction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    digest: Digest,
    size: u64,
    last_used: SystemTime,
}

/// The blobs to remove, least recently used first, to bring `blobs`' total
/// size within `cap`: of those not `protected` and not under
/// [`MIN_EVICTABLE`] (all of them, if that is not enough; none, if the
/// total is within `cap`). Ties go by digest, so the choice is the same
/// for the same store.
fn choose_evictions(blobs: &[Cached], protected: &HashSet<Digest>, cap: u64) -> Vec<Digest> {
    let mut total = blobs.iter().fold(0u64, |sum, b| sum.saturating_add(b.size));
    let mut candidates: Vec<&Cached> = blobs
        .iter()
        .filter(|b| b.size >= MIN_EVICTABLE && !protected.contains(&b.digest))
        .collect();
    candidates.sort_by_key(|b| (b.last_used, b.digest));
    let mut chosen = Vec::new();
    for blob in candidates {
        if total <= cap {
            break;
        }
        total = total.saturating_sub(blob.size);
        chosen.push(blob.digest);
    }
    chosen
}

/// One eviction pass over `store`'s host store (see the module's docs):
/// `pinned` (what the fetch was asked for) and blobs used within `recent`
/// are kept besides the protected ones.
pub(super) async fn evict(
    store: &CachedStore,
    cap: u64,
    pinned: &HashSet<Digest>,
    recent: Duration,
) -> Result<Evicted, RuntimeError> {
    let local = store.local();
    let _evicting = local
        .lock(&evict_lock(), LockMode::Exclusive)
        .await
        .map_err(store_error)?;
    // Listed before the records are read (see `bring`).
    let blobs = cached_blobs(local).await?;
    let total = blobs.iter().fold(0u64, |sum, b| sum.saturating_add(b.size));
    if total <= cap {
        return Ok(Evicted::default());
    }
    let mut keep = protected(store, pinned).await?;
    let since = SystemTime::now()
        .checked_sub(recent)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    keep.extend(
        blobs
            .iter()
            .filter(|b| b.last_used > since)
            .map(|b| b.digest),
    );
    // What the shared store lacks is this host's only copy: kept, and the
    // choice made again without it.
    let mut shared_has = HashSet::new();
    let chosen = loop {
        let chosen = choose_evictions(&blobs, &keep, cap);
        let mut unshared = false;
        for digest in &chosen {
            if shared_has.contains(digest) {
                continue;
            }
            if store
                .shared()
                .stat(digest)
                .await
                .map_err(store_error)?
                .is_some()
            {
                shared_has.insert(*digest);
            } else {
                keep.insert(*digest);
                unshared = true;
            }
        }
        if !unshared {
            break chosen;
        }
    };
    let mut evicted = Evicted::default();
    for digest in chosen {
        if local.delete(&digest).await.map_err(store_error)? {
            evicted.blobs += 1;
            evicted.bytes += blobs
                .iter()
                .find(|b| b.digest == digest)
                .map_or(0, |b| b.size);
        }
    }
    Ok(evicted)
}

/// The blobs of the host's store with their sizes and last uses (access
/// times; modification times where a file system keeps none).
async fn cached_blobs(local: &LocalStore) -> Result<Vec<Cached>, RuntimeError> {
    let mut out = Vec::new();
    for info in local.list().await.map_err(store_error)? {
        let path = local.blob_path(&info.digest);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(crate::error::io("stat", &path)(e)),
        };
        let last_used = meta
            .accessed()
            .or_else(|_| meta.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(Cached {
            digest: info.digest,
            size: meta.len(),
            last_used,
        });
    }
    Ok(out)
}

/// What an eviction must keep: `pinned`, what the computers recorded in
/// the home (the host store's root) use, the fleet's base images, each
/// with its manifests and the disk layers under its blobs.
async fn protected(
    store: &CachedStore,
    pinned: &HashSet<Digest>,
) -> Result<HashSet<Digest>, RuntimeError> {
    // The runtime's store is its home (`Runtime::open`).
    let home = Home::new(store.local().root());
    let mut manifests = home.recorded_snapshots()?;
    let images = RefKey::new("images").expect("a valid key");
    for key in store.list_refs(&images).await.map_err(store_error)? {
        manifests.extend(store.get_ref(&key).await.map_err(store_error)?);
    }
    let mut keep = pinned.clone();
    let mut seen = HashSet::new();
    while let Some(digest) = manifests.pop() {
        if !seen.insert(digest) {
            continue;
        }
        keep.insert(digest);
        // Read through the cache: one not here is fetched (manifests are
        // small). One that does not read stops the pass: what it names
        // cannot be known.
        let Some(manifest) = get_manifest(store, &digest).await.map_err(store_error)? else {
            continue;
        };
        keep.extend(manifest.blobs().map(|b| b.digest));
        if let Manifest::Snapshot(snapshot) = &manifest {
            keep.insert(snapshot.kernel);
            manifests.push(snapshot.base_image);
            if let Some(parent) = &snapshot.parent {
                manifests.push(parent.snapshot);
            }
        }
    }
    // Each blob is looked at once: a layer that names itself ends there.
    let mut layers: Vec<Digest> = keep.iter().copied().collect();
    while let Some(digest) = layers.pop() {
        if !store.local().blob_path(&digest).exists() {
            continue;
        }
        if let Some(backing) = backing_blob(store.local(), &digest)?
            && keep.insert(backing)
        {
            layers.push(backing);
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use crate::fleet::Fleet;
    use crate::fleet::backing::relative_backing;
    use crate::fleet::backing::tests::header;

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use orgo_snapshot::{
        BlobInfo, BuildCache, HardwareShape, MemoryStore, SnapshotManifest, put_manifest,
    };

    use super::*;
    use crate::home::{ComputerRecord, RecordState};

    const MIB: u64 = 1 << 20;

    fn cached(digest: Digest, size: u64, used_at: u64) -> Cached {
        Cached {
            digest,
            size,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(used_at),
        }
    }

    #[test]
    fn evictions_go_least_recently_used_first_until_within_the_cap() {
        let [a, b, c, d, small] = [&b"a"[..], b"b", b"c", b"d", b"manifest"].map(Digest::of);
        // 9 MiB and 4 KiB in all; by last use: small, b, c, a, d.
        let blobs = [
            cached(a, 2 * MIB, 30),
            cached(b, 2 * MIB, 10),
            cached(c, 2 * MIB, 20),
            cached(d, 3 * MIB, 40),
            cached(small, 4096, 0),
        ];
        let none = HashSet::new();
        for (protected, cap, expected) in [
            (&none, 20 * MIB, vec![]),
            (&none, 9 * MIB + 4096, vec![]),
            (&none, 9 * MIB, vec![b]),
            (&none, 6 * MIB, vec![b, c]),
            (&none, 5 * MIB, vec![b, c, a]),
            (&HashSet::from([b]), 6 * MIB, vec![c, a]),
            (&HashSet::from([c, a]), 6 * MIB, vec![b, d]),
            // Not enough: everything evictable goes, never a small one.
            (&none, 0, vec![b, c, a, d]),
            (&HashSet::from([a, b, c, d]), 0, vec![]),
        ] {
            assert_eq!(
                choose_evictions(&blobs, protected, cap),
                expected,
                "cap {cap}, protected {protected:?}"
            );
        }
        // Used at the same moment: by digest, whatever their order.
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        for tied in [
            [cached(a, 2 * MIB, 5), cached(b, 2 * MIB, 5)],
            [cached(b, 2 * MIB, 5), cached(a, 2 * MIB, 5)],
        ] {
            assert_eq!(choose_evictions(&tied, &none, 3 * MIB), vec![first]);
            assert_eq!(choose_evictions(&tied, &none, 0), vec![first, second]);
        }
    }

    #[test]
    fn a_cap_outside_a_fleet_is_refused() {
        let error = Fleet::new(None)
            .with_cache_max(Some(MIB))
            .expect_err("refused");
        assert!(error.to_string().contains("`cache_max`"), "{error}");
        assert!(Fleet::new(None).with_cache_max(None).is_ok());
    }

    /// A fleet whose host store (and home) is a temporary directory,
    /// capped at `cap`, that keeps nothing for being recent.
    struct Host {
        dir: tempfile::TempDir,
        store: CachedStore,
        shared: Arc<MemoryStore>,
        fleet: Fleet,
    }

    async fn host(cap: u64) -> Host {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let local = LocalStore::open(dir.path()).await.expect("a store");
        let shared = Arc::new(MemoryStore::new());
        let store = CachedStore::new(local, Arc::clone(&shared) as _);
        let fleet = Fleet {
            recent: Duration::ZERO,
            ..Fleet::new(Some(store.clone()))
                .with_cache_max(Some(cap))
                .expect("in a fleet")
        };
        Host {
            dir,
            store,
            shared,
            fleet,
        }
    }

    impl Host {
        /// Stores 2 MiB of `byte` (after `head`) in the shared store only.
        async fn shared_blob(&self, byte: u8, head: &[u8]) -> Digest {
            let mut bytes = vec![byte; 2 << 20];
            bytes[..head.len()].copy_from_slice(head);
            self.shared
                .put(&mut bytes.as_slice())
                .await
                .expect("stored")
                .digest
        }

        fn here(&self, digest: &Digest) -> bool {
            self.store.local().blob_path(digest).exists()
        }

        /// Fetches `digests`, a moment after the last fetch (so that
        /// uses are apart).
        async fn fetch(&self, digests: &[Digest]) -> (u64, u64) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.fleet.fetch(digests.to_vec()).await.expect("fetched")
        }
    }

    #[tokio::test]
    async fn a_fetch_evicts_the_least_recently_used() {
        let host = host(5 * MIB).await;
        let mut blobs = Vec::new();
        for byte in 1..=4 {
            blobs.push(host.shared_blob(byte, b"").await);
        }
        let [a, b, c, d] = blobs[..] else {
            unreachable!("four blobs")
        };
        assert_eq!(host.fetch(&[a]).await, (1, 2 * MIB));
        assert_eq!(host.fetch(&[b]).await, (1, 2 * MIB));
        // A launch of `a` again uses it: `b` is now the least recent.
        assert_eq!(host.fetch(&[a]).await, (0, 0));
        host.fetch(&[c]).await;
        assert_eq!(
            [a, b, c].map(|x| host.here(&x)),
            [true, false, true],
            "6 MiB over a 5 MiB cap: `b` went"
        );
        host.fetch(&[d]).await;
        assert_eq!([a, c, d].map(|x| host.here(&x)), [false, true, true]);
        // An evicted blob is fetched again when asked for.
        assert_eq!(host.fetch(&[b]).await, (1, 2 * MIB));
        assert_eq!([b, c, d].map(|x| host.here(&x)), [true, false, true]);
    }

    #[tokio::test]
    async fn a_blob_the_shared_store_lacks_is_never_evicted() {
        let host = host(5 * MIB).await;
        let own = host
            .store
            .local()
            .put(&mut vec![9u8; 2 << 20].as_slice())
            .await
            .expect("stored")
            .digest;
        let a = host.shared_blob(1, b"").await;
        let b = host.shared_blob(2, b"").await;
        let c = host.shared_blob(3, b"").await;
        host.fetch(&[a]).await;
        host.fetch(&[b]).await;
        assert_eq!([own, a, b].map(|x| host.here(&x)), [true, false, true]);
        host.fetch(&[c]).await;
        assert_eq!([own, b, c].map(|x| host.here(&x)), [true, false, true]);
        // Nothing evictable is left: over the cap, and the fetch is fine.
        let d = host.shared_blob(4, b"").await;
        host.fetch(&[d]).await;
        assert_eq!([own, c, d].map(|x| host.here(&x)), [true, false, true]);
    }

    #[tokio::test]
    async fn what_a_computer_uses_and_base_images_are_kept() {
        let host = host(5 * MIB).await;
        // A base image this host built (stored here and uploaded).
        let files = host.dir.path().join("image");
        std::fs::create_dir(&files).expect("created");
        std::fs::write(files.join("rootfs"), vec![7u8; 2 << 20]).expect("written");
        let cache = BuildCache::new(Arc::new(host.store.clone()));
        let (image_manifest, image) = cache
            .put_base_image(
                &Digest::of(b"recipe"),
                &BTreeMap::from([("rootfs.ext4".to_owned(), files.join("rootfs"))]),
            )
            .await
            .expect("stored");
        let rootfs = image.blobs["rootfs.ext4"].digest;
        // A snapshot built elsewhere: a disk layer over another layer,
        // and memory.
        let under = host.shared_blob(1, b"").await;
        let over = relative_backing(&under);
        let disk_header = header(over.to_str().expect("ascii").as_bytes());
        let disk = host.shared_blob(2, &disk_header).await;
        let memory = host.shared_blob(3, b"").await;
        let info = |digest| BlobInfo {
            digest,
            size: 2 * MIB,
        };
        let manifest = Manifest::Snapshot(SnapshotManifest {
            template: Digest::of(b"template"),
            blobs: BTreeMap::from([
                ("disk".to_owned(), info(disk)),
                ("memory".to_owned(), info(memory)),
            ]),
            hardware: HardwareShape {
                cpu: 1,
                memory_mib: 512,
                disk_gb: 1,
            },
            backend: "qemu".into(),
            base_image: image_manifest,
            kernel: Digest::of(b"kernel"),
            agent: None,
            parent: None,
            created_at: "2025-01-01T00:00:00Z".into(),
        });
        let snapshot = put_manifest(&*host.shared, &manifest)
            .await
            .expect("stored");
        // The computer is recorded with its snapshot before its fetch.
        let home = Home::new(host.dir.path());
        let record = ComputerRecord {
            id: "c-0123456789ab".into(),
            state: RecordState::Running,
            template: "t@1.0.0".into(),
            template_digest: Digest::of(b"template"),
            snapshot: Some(snapshot),
            backend: None,
            cpus: 1,
            memory_mib: 512,
            pid: None,
            created_unix: 0,
            on_shutdown: None,
            owner: None,
            ports: Vec::new(),
            egress_learn: false,
            restarts: 0,
            suspended_unix: None,
            paused_by: None,
        };
        home.create(&record).expect("recorded");
        assert_eq!(
            host.fetch(&[disk, memory]).await,
            (3, 6 * MIB),
            "the disk, the layer under it and the memory"
        );
        let kept = [rootfs, disk, under, memory, snapshot];
        assert!(kept.iter().all(|x| host.here(x)), "all in use, 8 MiB");
        let x = host.shared_blob(4, b"").await;
        let y = host.shared_blob(5, b"").await;
        host.fetch(&[x]).await;
        host.fetch(&[y]).await;
        assert!(!host.here(&x), "the one blob no one uses went");
        assert!(kept.iter().all(|d| host.here(d)));
        assert!(host.here(&y));
        // Once the computer is gone, its blobs are a cache's like any.
        home.remove(&record.id).expect("removed");
        let z = host.shared_blob(6, b"").await;
        host.fetch(&[z]).await;
        assert_eq!(
            [disk, under, memory, y].map(|d| host.here(&d)),
            [false; 4],
            "least recent first, until within the cap"
        );
        assert!(host.here(&rootfs), "a base image stays");
        assert!(host.here(&snapshot), "a manifest is small");
        assert!(host.here(&z));
    }
}
