//! [`CachedStore`]: what a host fetches from the fleet's shared store, and
//! what it refuses to keep.

use std::sync::Arc;

use orgo_snapshot::{
    BlobService as _, CachedStore, Fetched, LocalStore, MemoryStore, RefKey, RefService as _,
    StoreError,
};
use orgo_template::Digest;
use tokio::io::AsyncReadExt as _;

struct Host {
    store: CachedStore,
    _dir: tempfile::TempDir,
}

async fn host(shared: &MemoryStore) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalStore::open(dir.path()).await.expect("open");
    Host {
        store: CachedStore::new(local, Arc::new(shared.clone())),
        _dir: dir,
    }
}

#[tokio::test]
async fn a_blob_one_host_stored_is_fetched_once_by_another() {
    let shared = MemoryStore::new();
    let (a, b) = (host(&shared).await, host(&shared).await);
    let bytes = vec![7u8; 3 << 20];
    let info = a.store.put(&mut bytes.as_slice()).await.expect("put");
    assert_eq!(
        shared.stat(&info.digest).await.expect("stat"),
        Some(3 << 20),
        "uploaded"
    );

    assert_eq!(
        b.store.local().stat(&info.digest).await.expect("stat"),
        None
    );
    assert_eq!(
        b.store.fetch(&info.digest).await.expect("fetch"),
        Fetched::Fetched(3 << 20)
    );
    assert_eq!(
        b.store.fetch(&info.digest).await.expect("fetch"),
        Fetched::Local
    );
    let mut read = Vec::new();
    let mut reader = b
        .store
        .open(&info.digest)
        .await
        .expect("open")
        .expect("stored");
    reader.read_to_end(&mut read).await.expect("read");
    assert!(read == bytes);
    assert_eq!(
        b.store.fetch(&Digest::of(b"nobody")).await.expect("fetch"),
        Fetched::Missing
    );
}

#[tokio::test]
async fn refs_are_the_shared_stores_alone() {
    let shared = MemoryStore::new();
    let (a, b) = (host(&shared).await, host(&shared).await);
    let key = RefKey::new("templates/default/app/1.0.0").expect("key");
    let digest = Digest::of(b"template");
    assert_eq!(
        a.store.create_ref(&key, &digest).await.expect("create"),
        None
    );
    assert_eq!(b.store.get_ref(&key).await.expect("get"), Some(digest));
    assert_eq!(
        a.store.local().get_ref(&key).await.expect("get"),
        None,
        "nothing is written to the host's own refs"
    );
}

#[tokio::test]
async fn a_corrupt_shared_blob_fails_the_fetch_and_is_not_kept() {
    let shared = MemoryStore::new();
    let (a, b) = (host(&shared).await, host(&shared).await);
    let info = a
        .store
        .put(&mut b"golden bytes".as_slice())
        .await
        .expect("put");
    assert!(shared.corrupt(&info.digest, b"golden bytez".to_vec()));

    let error = b.store.fetch(&info.digest).await.expect_err("corrupt");
    match error {
        StoreError::Corrupt { digest, .. } => assert_eq!(digest, info.digest),
        other => panic!("expected StoreError::Corrupt, got {other:?}"),
    }
    assert_eq!(
        b.store.local().stat(&info.digest).await.expect("stat"),
        None,
        "a blob that failed its check is not cached"
    );
}
