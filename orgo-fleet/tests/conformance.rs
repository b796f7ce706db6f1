//! The fleet's store passes the one conformance suite every store passes
//! (the 16-way create race and the 8-caller single flight among it), against
//! a real PostgreSQL and a real S3-compatible server: each fresh store is a
//! database and a key prefix of its own on the same two servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orgo_fleet::{FleetStore, PgRegistry};
use orgo_fleet_testing::{Fleet, s3_blobs};
use orgo_snapshot::conformance::{Subject, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_store() {
    let fleet = Arc::new(Fleet::start());
    let stores = Arc::new(AtomicUsize::new(0));
    run(|| {
        let (fleet, stores) = (fleet.clone(), stores.clone());
        async move {
            let n = stores.fetch_add(1, Ordering::SeqCst);
            let prefix = format!("store{n}");
            let blobs = s3_blobs(
                &fleet.s3.endpoint(),
                &format!("s3://{}/{prefix}", fleet.s3.bucket()),
                fleet.s3.access_key(),
                fleet.s3.secret_key(),
            );
            let database = fleet.postgres.database(&prefix);
            let registry = PgRegistry::connect(&database)
                .await
                .expect("the registry connects");
            let chunks = fleet.s3.root().join(&prefix).join("chunks");
            Subject::new(
                Arc::new(FleetStore::new(blobs, registry)),
                move |digest, bytes| {
                    // The suite damages one-chunk blobs, whose one chunk has
                    // the blob's digest: a failing disk under the server.
                    let path = chunks.join(digest.hex());
                    assert!(path.exists(), "`{}` is stored", path.display());
                    std::fs::write(&path, bytes).expect("the chunk is overwritten");
                },
            )
        }
    })
    .await;
}
