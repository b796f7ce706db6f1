//! The fleet's store passes the one conformance suite every store passes
//! (the 16-way create race and the 8-caller single flight among it), against
//! a real PostgreSQL and a real S3-compatible server, one of each per store.

use std::sync::{Arc, Mutex};

use object_store::RetryConfig;
use object_store::aws::AmazonS3Builder;
use orgo_fleet::{FleetStore, PgRegistry, S3Blobs};
use orgo_fleet_testing::{Postgres, S3Server};
use orgo_snapshot::conformance::{Subject, run};

const PREFIX: &str = "fleet/conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_store() {
    // The servers live as long as the test: one pair per fresh store.
    let servers = Arc::new(Mutex::new(Vec::new()));
    run(|| {
        let servers = servers.clone();
        async move {
            let (postgres, s3) = (Postgres::start(), S3Server::start());
            let builder = AmazonS3Builder::new()
                .with_endpoint(s3.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id(s3.access_key())
                .with_secret_access_key(s3.secret_key())
                .with_retry(RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                });
            let blobs = S3Blobs::from_builder(builder, &format!("s3://{}/{PREFIX}", s3.bucket()))
                .expect("the object store opens");
            let registry = PgRegistry::connect(&postgres.url())
                .await
                .expect("the registry connects");
            let chunks = s3.root().join(PREFIX).join("chunks");
            servers.lock().expect("not poisoned").push((postgres, s3));
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
