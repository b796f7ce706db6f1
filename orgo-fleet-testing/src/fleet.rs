//! [`Fleet`]: a PostgreSQL server and an S3-compatible server, the two
//! services of a fleet's store, and the ways tests reach them.

use object_store::RetryConfig;
use object_store::aws::AmazonS3Builder;
use orgo_fleet::{FleetStore, PgRegistry, S3Blobs};
use orgo_snapshot::{LocalStore, Manifest, PutMode, RefKey, Store, get_manifest};
use orgo_template::Digest;

use crate::{Postgres, S3Server};

/// The key prefix of a test fleet's objects in its bucket.
const PREFIX: &str = "fleet";

/// A fleet's two servers, each its own process, stopped on drop.
#[derive(Debug)]
pub struct Fleet {
    /// The registry database.
    pub postgres: Postgres,
    /// The object store.
    pub s3: S3Server,
}

impl Fleet {
    /// Starts both servers.
    ///
    /// # Panics
    ///
    /// As [`Postgres::start`] and [`S3Server::start`] do.
    pub fn start() -> Fleet {
        Fleet {
            postgres: Postgres::start(),
            s3: S3Server::start(),
        }
    }

    /// `ORGO_STORE_URL`: `s3://<bucket>/fleet`.
    pub fn store_url(&self) -> String {
        format!("s3://{}/{PREFIX}", self.s3.bucket())
    }

    /// The variables a host of this fleet is given (`orgo`'s environment).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ORGO_STORE_URL", self.store_url()),
            ("ORGO_REGISTRY_URL", self.postgres.url()),
            ("AWS_ENDPOINT_URL", self.s3.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.s3.access_key().into()),
            ("AWS_SECRET_ACCESS_KEY", self.s3.secret_key().into()),
        ]
    }

    /// The fleet's blobs, as [`s3_blobs`] opens them.
    pub fn blobs(&self) -> S3Blobs {
        s3_blobs(
            &self.s3.endpoint(),
            &self.store_url(),
            self.s3.access_key(),
            self.s3.secret_key(),
        )
    }

    /// The fleet's store, opened as a host opens it.
    ///
    /// # Panics
    ///
    /// If the registry cannot be reached.
    pub async fn open(&self) -> FleetStore {
        let registry = PgRegistry::connect(&self.postgres.url())
            .await
            .expect("the registry connects");
        FleetStore::new(self.blobs(), registry)
    }
}

/// The blobs at `url` (`s3://bucket/prefix`) on the server at `endpoint`,
/// over plain HTTP and without retries: an outage fails at once.
///
/// # Panics
///
/// If `url` is not an `s3://` URL.
pub fn s3_blobs(endpoint: &str, url: &str, access_key: &str, secret_key: &str) -> S3Blobs {
    let builder = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        });
    S3Blobs::from_builder(builder, url).expect("the object store opens")
}

/// Puts base image `manifest` (the ref `images/<recipe hex>` of `local`)
/// into `fleet`, as the host that built it would have uploaded it: its
/// files, its manifest, then its ref.
///
/// # Panics
///
/// If `manifest` is not a base image's stored in `local`, or a store fails.
pub async fn seed_base_image(
    fleet: &dyn Store,
    local: &LocalStore,
    recipe: &Digest,
    manifest: &Digest,
) {
    let Some(Manifest::BaseImage(image)) = get_manifest(local, manifest)
        .await
        .expect("the manifest reads")
    else {
        panic!("`{manifest}` is no base image's manifest");
    };
    for blob in image.blobs.values() {
        fleet
            .put_file(&local.blob_path(&blob.digest), PutMode::Copy)
            .await
            .expect("the image's file is uploaded");
    }
    fleet
        .put_file(&local.blob_path(manifest), PutMode::Copy)
        .await
        .expect("the manifest is uploaded");
    let key = RefKey::new(&format!("images/{}", recipe.hex())).expect("a valid key");
    fleet
        .set_ref(&key, manifest)
        .await
        .expect("the image's ref is set");
}
