//! What only the local store has: its files, its layout version, damage to
//! its files as a disk or an operator would do it, and materializing.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use orgo_snapshot::{
    BlobService as _, BuildCache, HardwareShape, LocalStore, Materialized, PutMode, RefKey,
    RefService as _, SnapshotArtifacts, Store, StoreError, gc, verify,
};
use orgo_template::Digest;

fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(path, bytes).expect("overwrite");
}

#[tokio::test]
async fn blobs_are_read_only_files_named_by_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let info = store.put(&mut &b"disk image"[..]).await.unwrap();
    let path = store.blob_path(&info.digest);
    assert!(path.starts_with(dir.path().join("blobs/sha256")));
    assert_eq!(std::fs::read(&path).unwrap(), b"disk image");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("VERSION")).unwrap(),
        "orgo-store 1\n"
    );
}

#[tokio::test]
async fn put_file_move_renames_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).await.unwrap();
    let source = dir.path().join("memory.bin");
    std::fs::write(&source, vec![7u8; 3 << 20]).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&source).unwrap());
    let info = store.put_file(&source, PutMode::Move).await.unwrap();
    assert!(!source.exists(), "the source is consumed");
    let stored = std::fs::metadata(store.blob_path(&info.digest)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&stored),
        inode,
        "same file, not a copy"
    );
    assert_eq!(info.digest, Digest::of(&vec![7u8; 3 << 20]));

    let copied = dir.path().join("disk.bin");
    std::fs::write(&copied, b"kept").unwrap();
    store.put_file(&copied, PutMode::Copy).await.unwrap();
    assert!(copied.exists(), "copy leaves the source");
}

#[tokio::test]
async fn materialize_never_copies() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).await.unwrap();
    let info = store.put(&mut &b"golden disk"[..]).await.unwrap();
    let dest = dir.path().join("vm1-disk");
    let made = store
        .materialize(&info.digest, &dest)
        .await
        .unwrap()
        .unwrap();
    match &made {
        // A reflink-capable filesystem (btrfs, xfs): a private clone.
        Materialized::Cloned(path) => {
            assert_eq!(path, &dest);
            assert_eq!(std::fs::read(path).unwrap(), b"golden disk");
        }
        // ext4, tmpfs: the store's own read-only file, for an overlay.
        Materialized::Shared(path) => {
            assert_eq!(path, &store.blob_path(&info.digest));
            assert!(!dest.exists(), "nothing is left at the destination");
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o222, 0, "shared files are read-only");
        }
    }
    let missing = Digest::of(b"absent");
    assert!(
        store
            .materialize(&missing, &dir.path().join("x"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn verify_names_every_damaged_object_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(dir.path()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let good = store.put(&mut &b"good"[..]).await.unwrap();
    let flipped = store.put(&mut &b"flipped"[..]).await.unwrap();
    let truncated = store.put(&mut &b"truncated"[..]).await.unwrap();
    overwrite(&local.blob_path(&flipped.digest), b"flopped");
    overwrite(&local.blob_path(&truncated.digest), b"trunc");
    let garbage = RefKey::new("templates/default/app/1.0.0").unwrap();
    store.set_ref(&garbage, &good.digest).await.unwrap();
    std::fs::write(
        dir.path().join("refs/templates/default/app/1.0.0"),
        "sha256:zz\n",
    )
    .unwrap();
    let dangling = RefKey::new("templates/default/app/2.0.0").unwrap();
    store
        .set_ref(&dangling, &Digest::of(b"never stored"))
        .await
        .unwrap();

    let report = verify(&*store).await.unwrap();
    let text: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(report.problems.len(), 4, "{text:#?}");
    for (digest, path) in [
        (flipped.digest, local.blob_path(&flipped.digest)),
        (truncated.digest, local.blob_path(&truncated.digest)),
    ] {
        let line = text.iter().find(|t| t.contains(&digest.hex())).unwrap();
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains("corrupt"), "{line}");
    }
}

#[tokio::test]
async fn a_garbage_ref_is_an_error_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let key = RefKey::new("templates/default/app/1.0.0").unwrap();
    store.set_ref(&key, &Digest::of(b"x")).await.unwrap();
    std::fs::write(
        dir.path().join("refs/templates/default/app/1.0.0"),
        "sha256:zz\n",
    )
    .unwrap();
    match store.get_ref(&key).await {
        Err(StoreError::Invalid { what, location, .. }) => {
            assert_eq!(what, "ref");
            assert!(
                location.ends_with("refs/templates/default/app/1.0.0"),
                "{location}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A store with a base image and one built (unpublished, leased) snapshot.
async fn built_store(dir: &Path) -> (LocalStore, Arc<dyn Store>, orgo_snapshot::Built) {
    let local = LocalStore::open(dir.join("store")).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let cache = BuildCache::new(store.clone());
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let (image, manifest) = cache
        .put_base_image(
            &Digest::of(b"recipe"),
            &BTreeMap::from([("vmlinuz".to_owned(), kernel)]),
        )
        .await
        .unwrap();
    let memory = dir.join("memory");
    std::fs::write(&memory, b"guest ram").unwrap();
    let built = cache
        .lease_or_build("vm-1", &Digest::of(b"template"), || async {
            Ok(SnapshotArtifacts {
                files: BTreeMap::from([("memory".to_owned(), memory)]),
                hardware: HardwareShape {
                    cpu: 1,
                    memory_mib: 512,
                    disk_gb: 1,
                },
                backend: "qemu".into(),
                base_image: image,
                kernel: manifest.blobs["vmlinuz"].digest,
                agent: None,
            })
        })
        .await
        .unwrap();
    (local, store, built)
}

#[tokio::test]
async fn a_snapshot_with_a_missing_blob_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store, built) = built_store(dir.path()).await;
    assert!(verify(&*store).await.unwrap().problems.is_empty());
    let blob = built.manifest.blobs["memory"].digest;
    std::fs::remove_file(local.blob_path(&blob)).unwrap();
    let report = verify(&*store).await.unwrap();
    // The snapshot's ref and the lease on it both name the missing blob.
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.to_string().contains(&blob.to_string()))
    );

    // A snapshot without its kernel cannot restore either.
    std::fs::remove_file(local.blob_path(&built.manifest.kernel)).unwrap();
    let report = verify(&*store).await.unwrap();
    let kernel = built.manifest.kernel.to_string();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains(&kernel)),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn gc_refuses_to_guess_past_an_unreadable_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store, built) = built_store(dir.path()).await;
    let before = store.list().await.unwrap().len();
    overwrite(&local.blob_path(&built.digest), b"{\"orgo_manifest\": 2}");
    let err = gc(&*store).await.unwrap_err();
    assert!(err.to_string().contains(&built.digest.hex()), "{err}");
    assert_eq!(
        store.list().await.unwrap().len(),
        before,
        "nothing was removed"
    );
}

#[tokio::test]
async fn gc_sweeps_what_dead_writers_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    // A temp file and a scratch directory of a process that is gone (pid
    // 4194304 is above Linux's pid_max), and one of this live process.
    std::fs::write(dir.path().join("tmp/4194304-0-0"), b"partial").unwrap();
    std::fs::create_dir_all(dir.path().join("scratch/4194304-0/build")).unwrap();
    let mine = store.scratch_dir().await.unwrap();
    let removed = gc(&store).await.unwrap().incomplete_removed;
    assert_eq!(removed, 2);
    assert!(mine.exists(), "a live writer's scratch stays");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn an_unknown_layout_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    LocalStore::open(dir.path()).await.unwrap();
    std::fs::write(dir.path().join("VERSION"), "orgo-store 9\n").unwrap();
    let err = LocalStore::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("`orgo-store 9`"), "{err}");
}
