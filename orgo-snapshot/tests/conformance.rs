//! Every backend passes the one conformance suite.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use orgo_snapshot::conformance::{Subject, run};
use orgo_snapshot::{CachedStore, LocalStore, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store() {
    run(|| async {
        let store = MemoryStore::new();
        let handle = store.clone();
        Subject::new(Arc::new(store), move |digest, bytes| {
            assert!(handle.corrupt(digest, bytes));
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store() {
    // The directories live as long as the test.
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    run(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(dir.path()).await.unwrap();
            dirs.lock().unwrap().push(dir);
            let handle = store.clone();
            Subject::new(Arc::new(store), move |digest, bytes| {
                let path = handle.blob_path(digest);
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
                std::fs::write(&path, bytes).unwrap();
            })
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_store() {
    // A host's local store in front of a shared one (here in memory): the
    // fleet's layering passes the suite as a whole.
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    run(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let local = LocalStore::open(dir.path()).await.unwrap();
            dirs.lock().unwrap().push(dir);
            let shared = MemoryStore::new();
            let store = CachedStore::new(local.clone(), Arc::new(shared.clone()));
            Subject::new(Arc::new(store), move |digest, bytes| {
                // A failing disk on the host, and in the shared store.
                let path = local.blob_path(digest);
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
                std::fs::write(&path, &bytes).unwrap();
                assert!(shared.corrupt(digest, bytes));
            })
        }
    })
    .await;
}
