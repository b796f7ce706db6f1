//! The fleet's store passes the one conformance suite every store passes
//! (the 16-way create race and the 8-caller single flight among it), against
//! a real PostgreSQL and a real S3-compatible server, one of each per store.

use std::sync::{Arc, Mutex};

use orgo_fleet_testing::Fleet;
use orgo_snapshot::conformance::{Subject, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_store() {
    // The servers live as long as the test: one pair per fresh store.
    let servers = Arc::new(Mutex::new(Vec::new()));
    run(|| {
        let servers = servers.clone();
        async move {
            let fleet = Fleet::start();
            let store = fleet.open().await;
            let chunks = fleet.s3.root().join("fleet/chunks");
            servers.lock().expect("not poisoned").push(fleet);
            Subject::new(Arc::new(store), move |digest, bytes| {
                // The suite damages one-chunk blobs, whose one chunk has
                // the blob's digest: a failing disk under the server.
                let path = chunks.join(digest.hex());
                assert!(path.exists(), "`{}` is stored", path.display());
                std::fs::write(&path, bytes).expect("the chunk is overwritten");
            })
        }
    })
    .await;
}
