//! `S3Blobs` against a real S3-compatible server (`orgo-test-s3`, s3s-fs),
//! one server per test. Build the server first:
//! `cargo build -p orgo-fleet-testing --bin orgo-test-s3` (or run
//! `cargo test --workspace`, which builds it).

use std::path::PathBuf;
use std::time::Duration;

use object_store::RetryConfig;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use orgo_fleet::{PutStats, S3Blobs};
use orgo_fleet_testing::S3Server;
use orgo_snapshot::{BlobService, StoreError};
use orgo_template::Digest;
use tokio::io::AsyncReadExt as _;

const CHUNK: usize = S3Blobs::CHUNK_SIZE;
const PREFIX: &str = "fleet/test";

/// The blobs on `server` under [`PREFIX`], without retries (an outage fails
/// at once).
fn blobs(server: &S3Server) -> S3Blobs {
    let builder = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(server.access_key())
        .with_secret_access_key(server.secret_key())
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        });
    S3Blobs::from_builder(builder, &format!("s3://{}/{PREFIX}", server.bucket()))
        .expect("the store opens")
}

/// Pseudo-random bytes (splitmix64 from `seed`): no two chunks alike.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = u64::from(seed);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

async fn put(blobs: &S3Blobs, bytes: &[u8]) -> (Digest, PutStats) {
    let mut source = bytes;
    let (info, stats) = blobs.put_counted(&mut source).await.expect("put");
    assert_eq!(info.digest, Digest::of(bytes));
    assert_eq!(info.size, bytes.len() as u64);
    (info.digest, stats)
}

async fn read(blobs: &S3Blobs, digest: &Digest) -> Result<Vec<u8>, StoreError> {
    let mut reader = blobs.open(digest).await?.expect("the blob is stored");
    let mut bytes = Vec::new();
    match reader.read_to_end(&mut bytes).await {
        Ok(_) => Ok(bytes),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            let inner = e.into_inner().expect("an error with a cause");
            Err(*inner.downcast::<StoreError>().expect("a StoreError"))
        }
    }
}

/// The files under `<bucket>/<PREFIX>/<dir>`.
fn stored(server: &S3Server, dir: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(server.root().join(PREFIX).join(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

fn file_of(server: &S3Server, key: &str) -> PathBuf {
    server.root().join(key)
}

/// The error message with its causes.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn blobs_of_every_shape_round_trip() {
    let server = S3Server::start();
    // Through the URL constructor, as a host would open it.
    let blobs = S3Blobs::from_url_with(
        &format!("s3://{}/{PREFIX}", server.bucket()),
        [
            (AmazonS3ConfigKey::Endpoint, server.endpoint()),
            (
                AmazonS3ConfigKey::AccessKeyId,
                server.access_key().to_owned(),
            ),
            (
                AmazonS3ConfigKey::SecretAccessKey,
                server.secret_key().to_owned(),
            ),
            (AmazonS3ConfigKey::Region, "us-east-1".to_owned()),
            (
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                "true".to_owned(),
            ),
        ],
    )
    .expect("the store opens");
    let mut expected = Vec::new();
    for (len, chunks) in [(0, 0), (5, 1), (CHUNK, 1), (2 * CHUNK + 12_345, 3)] {
        // A seed of its own: no chunk is shared with the blobs before.
        let bytes = pattern(len, len as u32);
        let (digest, stats) = put(&blobs, &bytes).await;
        assert_eq!(
            stats,
            PutStats {
                chunks,
                zero_chunks: 0,
                uploaded_chunks: chunks,
                uploaded_bytes: len as u64,
            },
            "{len} bytes"
        );
        assert_eq!(blobs.stat(&digest).await.expect("stat"), Some(len as u64));
        assert!(
            read(&blobs, &digest).await.expect("read") == bytes,
            "{len} bytes"
        );
        expected.push(orgo_snapshot::BlobInfo {
            digest,
            size: len as u64,
        });
    }
    expected.sort_by_key(|blob| blob.digest);
    assert_eq!(blobs.list().await.expect("list"), expected);
    assert_eq!(stored(&server, "chunks").len(), 1 + 1 + 3);

    let mut fetched = Vec::new();
    let last = Digest::of(&pattern(2 * CHUNK + 12_345, (2 * CHUNK + 12_345) as u32));
    assert_eq!(
        blobs.fetch_to(&last, &mut fetched).await.expect("fetch"),
        Some(2 * CHUNK as u64 + 12_345)
    );
    assert!(fetched == pattern(2 * CHUNK + 12_345, (2 * CHUNK + 12_345) as u32));
    let missing = Digest::of(b"missing");
    assert_eq!(
        blobs.fetch_to(&missing, &mut fetched).await.expect("fetch"),
        None
    );
    assert_eq!(blobs.stat(&missing).await.expect("stat"), None);
    assert!(blobs.open(&missing).await.expect("open").is_none());
}

#[tokio::test]
async fn zero_chunks_are_not_stored_and_read_as_zeros() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    // A chunk of data, a chunk of zeros, a short last chunk of zeros.
    let mut bytes = pattern(CHUNK, 2);
    bytes.resize(2 * CHUNK + 1000, 0);
    let (digest, stats) = put(&blobs, &bytes).await;
    assert_eq!(
        stats,
        PutStats {
            chunks: 3,
            zero_chunks: 2,
            uploaded_chunks: 1,
            uploaded_bytes: CHUNK as u64,
        }
    );
    assert_eq!(
        stored(&server, "chunks"),
        vec![file_of(
            &server,
            &blobs.chunk_key(&Digest::of(&bytes[..CHUNK]))
        )]
    );
    assert!(read(&blobs, &digest).await.expect("read") == bytes);

    let zeros = vec![0; CHUNK + 1];
    let (digest, stats) = put(&blobs, &zeros).await;
    assert_eq!((stats.zero_chunks, stats.uploaded_chunks), (2, 0));
    assert!(read(&blobs, &digest).await.expect("read") == zeros);
    assert_eq!(stored(&server, "chunks").len(), 1);
}

#[tokio::test]
async fn a_second_put_uploads_nothing() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let bytes = pattern(CHUNK + 7, 3);
    let (first, stats) = put(&blobs, &bytes).await;
    assert_eq!(stats.uploaded_chunks, 2);
    let (second, stats) = put(&blobs, &bytes).await;
    assert_eq!(first, second);
    assert_eq!(
        stats,
        PutStats {
            chunks: 2,
            zero_chunks: 0,
            uploaded_chunks: 0,
            uploaded_bytes: 0,
        }
    );
    assert_eq!(blobs.list().await.expect("list").len(), 1);
}

#[tokio::test]
async fn blobs_sharing_chunks_upload_only_the_new_one() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let a = pattern(3 * CHUNK, 4);
    let mut b = a.clone();
    b[CHUNK + 17] ^= 0xff; // the second chunk differs
    put(&blobs, &a).await;
    let (digest, stats) = put(&blobs, &b).await;
    assert_eq!(
        stats,
        PutStats {
            chunks: 3,
            zero_chunks: 0,
            uploaded_chunks: 1,
            uploaded_bytes: CHUNK as u64,
        }
    );
    assert!(read(&blobs, &digest).await.expect("read") == b);
    assert_eq!(stored(&server, "chunks").len(), 4);

    // A chunk repeated within one blob is uploaded once.
    let chunk = pattern(CHUNK, 5);
    let twice = [chunk.clone(), chunk].concat();
    let (digest, stats) = put(&blobs, &twice).await;
    assert_eq!((stats.chunks, stats.uploaded_chunks), (2, 1));
    assert!(read(&blobs, &digest).await.expect("read") == twice);
}

#[tokio::test]
async fn a_damaged_chunk_fails_the_read_naming_it() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let bytes = pattern(2 * CHUNK + 3, 6);
    let (digest, _) = put(&blobs, &bytes).await;
    let chunk = Digest::of(&bytes[CHUNK..2 * CHUNK]);
    let key = blobs.chunk_key(&chunk);
    let path = file_of(&server, &key);
    let mut damaged = std::fs::read(&path).expect("the chunk's file");
    damaged[100] ^= 1;
    std::fs::write(&path, &damaged).expect("damage the chunk");
    match read(&blobs, &digest).await {
        Err(StoreError::Corrupt {
            digest: d,
            location,
            reason,
        }) => {
            assert_eq!(d, chunk);
            assert_eq!(location, key);
            assert!(reason.starts_with("its bytes hash to `sha256:"), "{reason}");
        }
        other => panic!("expected the chunk to be corrupt, got {other:?}"),
    }
    // A reader that failed stays failed, naming the chunk again.
    let mut reader = blobs.open(&digest).await.expect("open").expect("stored");
    let mut sink = Vec::new();
    for _ in 0..2 {
        let error = reader.read_to_end(&mut sink).await.expect_err("corrupt");
        let inner = error.into_inner().expect("a cause");
        assert!(
            matches!(
                inner.downcast_ref::<StoreError>(),
                Some(StoreError::Corrupt { digest: d, .. }) if *d == chunk
            ),
            "{inner:?}"
        );
    }
}

#[tokio::test]
async fn a_truncated_or_missing_chunk_fails_the_read_naming_it() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let bytes = pattern(CHUNK + 3, 7);
    let (digest, _) = put(&blobs, &bytes).await;
    let first = Digest::of(&bytes[..CHUNK]);
    let path = file_of(&server, &blobs.chunk_key(&first));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("the chunk's file");
    file.set_len(1000).expect("truncate the chunk");
    drop(file);
    match read(&blobs, &digest).await {
        Err(StoreError::Corrupt {
            digest: d,
            location,
            reason,
        }) => {
            assert_eq!((d, location.as_str()), (first, &*blobs.chunk_key(&first)));
            assert_eq!(
                reason,
                format!("it holds 1000 bytes, not the {CHUNK} the index records")
            );
        }
        other => panic!("expected the chunk to be corrupt, got {other:?}"),
    }
    // A put of the same bytes repairs it: the damaged chunk is stored again.
    let (_, stats) = put(&blobs, &bytes).await;
    assert_eq!(stats.uploaded_chunks, 1);
    assert!(read(&blobs, &digest).await.expect("read") == bytes);

    std::fs::remove_file(&path).expect("remove the chunk");
    match read(&blobs, &digest).await {
        Err(StoreError::Corrupt {
            digest: d, reason, ..
        }) => {
            assert_eq!((d, reason.as_str()), (first, "the chunk is missing"));
        }
        other => panic!("expected the chunk to be missing, got {other:?}"),
    }
}

#[tokio::test]
async fn an_abandoned_upload_is_invisible_and_cleaned_up() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let kept = pattern(2 * CHUNK, 8);
    let (kept_digest, _) = put(&blobs, &kept).await;
    // The "killed" upload shares its first chunk with the kept blob and has
    // two of its own; its index never got written (deleted here).
    let mut killed = kept[..CHUNK].to_vec();
    killed.extend(pattern(CHUNK + 5, 9));
    let (killed_digest, _) = put(&blobs, &killed).await;
    let index = file_of(&server, &blobs.index_key(&killed_digest));
    std::fs::remove_file(&index).expect("remove the index");
    assert_eq!(stored(&server, "chunks").len(), 4);

    assert_eq!(blobs.stat(&killed_digest).await.expect("stat"), None);
    assert!(blobs.open(&killed_digest).await.expect("open").is_none());
    let listed = blobs.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, kept_digest);

    // Young chunks stay: a live upload writes its index last.
    assert_eq!(blobs.remove_incomplete().await.expect("remove"), 0);
    let blobs = blobs.with_grace(Duration::ZERO);
    assert_eq!(blobs.remove_incomplete().await.expect("remove"), 2);
    let mut left = vec![
        file_of(&server, &blobs.chunk_key(&Digest::of(&kept[..CHUNK]))),
        file_of(&server, &blobs.chunk_key(&Digest::of(&kept[CHUNK..]))),
    ];
    left.sort();
    assert_eq!(stored(&server, "chunks"), left);
    assert!(read(&blobs, &kept_digest).await.expect("read") == kept);
    assert_eq!(blobs.remove_incomplete().await.expect("remove"), 0);

    // A deleted blob's chunks go the same way.
    assert!(blobs.delete(&kept_digest).await.expect("delete"));
    assert!(!blobs.delete(&kept_digest).await.expect("delete"));
    assert_eq!(blobs.remove_incomplete().await.expect("remove"), 2);
    assert!(stored(&server, "chunks").is_empty());
}

#[tokio::test]
async fn an_outage_is_a_remote_error_without_the_secret() {
    let mut server = S3Server::start();
    let blobs = blobs(&server);
    let (digest, _) = put(&blobs, b"before the outage").await;
    server.stop();
    let secret = server.secret_key().to_owned();
    let errors = [
        blobs.stat(&digest).await.expect_err("stat in an outage"),
        blobs
            .put(&mut &b"during the outage"[..])
            .await
            .expect_err("put in an outage"),
        blobs.list().await.expect_err("list in an outage"),
    ];
    for error in &errors {
        match error {
            StoreError::Remote { service, op, .. } => {
                assert_eq!(*service, "object store");
                assert!(op.contains('`'), "{op}");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        let message = chain(error);
        assert!(message.starts_with("object store: "), "{message}");
        assert!(!message.contains(&secret), "{message}");
        assert!(!format!("{error:?}").contains(&secret), "{error:?}");
    }
    assert_eq!(
        errors[0].to_string(),
        format!("object store: get `{}`", blobs.index_key(&digest))
    );
    assert!(!format!("{blobs:?}").contains(&secret), "{blobs:?}");

    server.restart();
    assert_eq!(blobs.stat(&digest).await.expect("stat"), Some(17));
    assert!(read(&blobs, &digest).await.expect("read") == b"before the outage");
}

#[tokio::test]
async fn an_index_of_a_newer_format_is_refused() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    let (digest, _) = put(&blobs, b"indexed").await;
    let key = blobs.index_key(&digest);
    std::fs::write(
        file_of(&server, &key),
        br#"{"orgo_chunks": 2, "extents": [[0, 7]]}"#,
    )
    .expect("rewrite the index");
    let error = blobs.stat(&digest).await.expect_err("a newer index");
    assert_eq!(
        error.to_string(),
        format!(
            "invalid chunk index at `{key}`: `{key}` has format version `2.0`, written by a \
             newer orgo; this orgo reads major version `1` (it writes `1.0`)"
        )
    );
    assert!(blobs.open(&digest).await.is_err());
    assert!(blobs.list().await.is_err(), "list reports it too");

    std::fs::write(
        file_of(&server, &key),
        br#"{"orgo_chunks": 1, "size": 9, "chunk_size": 4194304, "chunks": []}"#,
    )
    .expect("rewrite the index");
    let error = blobs
        .stat(&digest)
        .await
        .expect_err("an inconsistent index");
    assert!(
        error
            .to_string()
            .ends_with(": it names 0 chunks; 9 bytes at 4194304 a chunk are 1"),
        "{error}"
    );
}

#[tokio::test]
async fn a_stray_object_among_the_indexes_is_reported() {
    let server = S3Server::start();
    let blobs = blobs(&server);
    put(&blobs, b"fine").await;
    let stray = server
        .root()
        .join(PREFIX)
        .join("blobs")
        .join("not-a-digest");
    std::fs::write(&stray, b"{}").expect("a stray object");
    let error = blobs.list().await.expect_err("a stray index");
    assert_eq!(
        error.to_string(),
        format!(
            "invalid chunk index at `{PREFIX}/blobs/not-a-digest`: its name is not a SHA-256 \
             in 64 lowercase hex digits"
        )
    );
}
