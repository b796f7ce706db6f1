//! [`S3Blobs`]: orgo's blobs in S3-compatible object storage, as fixed-size
//! content-addressed chunks.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload};
use orgo_snapshot::{BlobInfo, BlobReader, BlobService, StoreError};
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::chunks::{self, CHUNK_SIZE, ChunkIndex, INDEX_FORMAT};

/// How many requests one put, read, list or cleanup keeps in flight.
const PARALLEL: usize = 8;

/// The service named in [`StoreError::Remote`].
const SERVICE: &str = "object store";

/// How old an unreferenced chunk must be before `remove_incomplete` deletes
/// it: a live upload stores its chunks before its index.
const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);

/// What a zero chunk reads as, without a request.
static ZEROS: [u8; CHUNK_SIZE] = [0; CHUNK_SIZE];

/// Blobs as deduplicated chunks in S3-compatible object storage: orgo's
/// [`BlobService`] for a fleet of hosts sharing one bucket.
///
/// # Layout
///
/// Under an optional key prefix, in one bucket:
///
/// ```text
/// chunks/<sha256 hex>   a chunk's bytes: 4 MiB, or less for a blob's last;
///                       all-zero chunks are never stored
/// blobs/<sha256 hex>    a blob's chunk index (`{"orgo_chunks":1,...}`): its
///                       size and its chunks in order, `null` for zeros
/// ```
///
/// A blob exists iff its index exists. The index is written last, after every
/// chunk it names is stored, so a writer killed mid-upload leaves only chunks
/// that no index names: nothing is visible, and
/// [`remove_incomplete`](BlobService::remove_incomplete) deletes them once
/// they are older than the grace period. Chunks are named by their SHA-256,
/// so a chunk another blob (or an earlier put) stored is not sent again.
///
/// Every chunk read is checked against its name (and its length against the
/// index); a mismatch fails the read with [`StoreError::Corrupt`] naming the
/// chunk's digest and object key. The whole blob is checked again by
/// [`BlobReader`].
///
/// # Concurrency with gc
///
/// A put that finds a chunk already stored (an orphan an abandoned upload
/// left) relies on it staying until its index is written. The grace period
/// protects the chunks a live put uploads, not such reused orphans: like
/// every writer of an orgo store, a put is to run under the gc lock held
/// shared, which [`orgo_snapshot::gc`] holds exclusive while it calls
/// `remove_incomplete`.
#[derive(Clone)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    grace: Duration,
}

/// What a put sent and what it did not need to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutStats {
    /// The blob's chunks, zero chunks included.
    pub chunks: u64,
    /// Chunks of zeros: recorded in the index, never stored.
    pub zero_chunks: u64,
    /// Chunks uploaded: the others were stored already (by an earlier put,
    /// another blob, or earlier in this one).
    pub uploaded_chunks: u64,
    /// The bytes of the uploaded chunks.
    pub uploaded_bytes: u64,
}

impl S3Blobs {
    /// The size of every chunk but a blob's last: 4 MiB.
    pub const CHUNK_SIZE: usize = CHUNK_SIZE;

    /// Blobs in `store` under `prefix` (`/`-separated; empty for the bucket's
    /// root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> S3Blobs {
        S3Blobs {
            store,
            prefix: prefix.split('/').filter(|part| !part.is_empty()).collect(),
            grace: DEFAULT_GRACE,
        }
    }

    /// The blobs at `url` (`s3://bucket/prefix`), with the endpoint,
    /// region and credentials of the environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` (or
    /// `AWS_ENDPOINT`), `AWS_ALLOW_HTTP` and the other `AWS_*` settings
    /// object_store reads.
    pub fn from_url(url: &str) -> Result<S3Blobs, StoreError> {
        S3Blobs::from_builder(AmazonS3Builder::from_env(), url)
    }

    /// As [`Self::from_url`], with `options` set over the environment's
    /// (an endpoint and credentials given explicitly, as tests do).
    pub fn from_url_with(
        url: &str,
        options: impl IntoIterator<Item = (AmazonS3ConfigKey, String)>,
    ) -> Result<S3Blobs, StoreError> {
        let builder = options
            .into_iter()
            .fold(AmazonS3Builder::from_env(), |builder, (key, value)| {
                builder.with_config(key, value)
            });
        S3Blobs::from_builder(builder, url)
    }

    /// The blobs at `url` (`s3://bucket/prefix`) of a store `builder`
    /// configures otherwise (retries, timeouts); the URL's bucket overrides
    /// the builder's.
    pub fn from_builder(builder: AmazonS3Builder, url: &str) -> Result<S3Blobs, StoreError> {
        let invalid = |reason: String| StoreError::Invalid {
            what: "object store URL",
            location: redact(url),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "s3" | "s3a") {
            return Err(invalid("the URL is `s3://bucket/prefix`".to_owned()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL names no bucket".to_owned()));
        }
        let prefix = Path::from_url_path(parsed.path()).map_err(|e| invalid(e.to_string()))?;
        let store = builder
            .with_url(url)
            .build()
            .map_err(|e| invalid(error_chain(&e)))?;
        let mut blobs = S3Blobs::new(Arc::new(store), "");
        blobs.prefix = prefix;
        Ok(blobs)
    }

    /// The same store, deleting unreferenced chunks in
    /// [`remove_incomplete`](BlobService::remove_incomplete) once they are
    /// `grace` old (1 hour unless set).
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> S3Blobs {
        self.grace = grace;
        self
    }

    /// The object key of a blob's index.
    pub fn index_key(&self, digest: &Digest) -> String {
        self.index_path(digest).to_string()
    }

    /// The object key of a chunk.
    pub fn chunk_key(&self, digest: &Digest) -> String {
        chunk_path(&self.prefix, digest).to_string()
    }

    fn index_path(&self, digest: &Digest) -> Path {
        self.prefix.clone().join("blobs").join(digest.hex())
    }

    /// Stores everything `source` yields, as [`BlobService::put`], and says
    /// how much was sent.
    pub async fn put_counted(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(BlobInfo, PutStats), StoreError> {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let mut uploads: JoinSet<Result<(usize, Stored), StoreError>> = JoinSet::new();
        let mut chunks: Vec<Option<Digest>> = Vec::new();
        let mut stats = PutStats::default();
        let mut size = 0_u64;
        // The whole blob's hash runs beside the reading of the next chunk.
        let mut hashing: Option<JoinHandle<Sha256>> = None;
        loop {
            let chunk = read_chunk(source).await.map_err(|source| StoreError::Io {
                op: "read",
                path: "<source>".into(),
                source,
            })?;
            if chunk.is_empty() {
                break;
            }
            let full = chunk.len() == CHUNK_SIZE;
            size += chunk.len() as u64;
            let mut hasher = match hashing.take() {
                Some(task) => task.await.map_err(StoreError::Task)?,
                None => Sha256::new(),
            };
            let bytes = chunk.clone();
            hashing = Some(tokio::task::spawn_blocking(move || {
                hasher.update(&bytes);
                hasher
            }));
            while uploads.len() >= PARALLEL {
                let done = uploads.join_next().await.expect("the set is not empty");
                record(done, &mut chunks, &mut stats)?;
            }
            uploads.spawn(store_chunk(
                Arc::clone(&self.store),
                self.prefix.clone(),
                chunks.len(),
                chunk,
                Arc::clone(&seen),
            ));
            chunks.push(None);
            if !full {
                break;
            }
        }
        while let Some(done) = uploads.join_next().await {
            record(done, &mut chunks, &mut stats)?;
        }
        let hasher = match hashing {
            Some(task) => task.await.map_err(StoreError::Task)?,
            None => Sha256::new(),
        };
        let digest = Digest::from_sha256(hasher.finalize().into());
        stats.chunks = chunks.len() as u64;
        let index = ChunkIndex {
            size,
            chunk_size: CHUNK_SIZE as u64,
            chunks,
        };
        let key = self.index_path(&digest);
        match self.store.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                self.store
                    .put(&key, PutPayload::from(index.to_bytes()))
                    .await
                    .map_err(remote("put", &key))?;
            }
            Err(e) => return Err(remote("head", &key)(e)),
        }
        Ok((BlobInfo { digest, size }, stats))
    }

    /// Writes a blob's bytes to `dest` (and flushes it), fetching its chunks
    /// in parallel and checking them; the number of bytes written, or `None`
    /// if the blob is not stored.
    pub async fn fetch_to(
        &self,
        digest: &Digest,
        dest: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<Option<u64>, StoreError> {
        let Some(mut reader) = self.open(digest).await? else {
            return Ok(None);
        };
        let write_error = |source| StoreError::Io {
            op: "write blob",
            path: digest.to_string().into(),
            source,
        };
        let mut buffer = vec![0; 1 << 20];
        let mut written = 0_u64;
        loop {
            let n = reader
                .read(&mut buffer)
                .await
                .map_err(|e| StoreError::from_read(e, digest))?;
            if n == 0 {
                break;
            }
            dest.write_all(&buffer[..n]).await.map_err(write_error)?;
            written += n as u64;
        }
        dest.flush().await.map_err(write_error)?;
        Ok(Some(written))
    }

    /// A blob's index; `None` if it is not stored.
    async fn read_index(&self, digest: &Digest) -> Result<Option<ChunkIndex>, StoreError> {
        let key = self.index_path(digest);
        let got = match self.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(remote("get", &key)(e)),
        };
        let invalid = |reason| StoreError::Invalid {
            what: "chunk index",
            location: key.to_string(),
            reason,
        };
        if got.meta.size > INDEX_FORMAT.max_bytes() {
            return Err(invalid(format!(
                "{} bytes is over the limit of {}",
                got.meta.size,
                INDEX_FORMAT.max_bytes()
            )));
        }
        let bytes = match got.bytes().await {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(remote("get", &key)(e)),
        };
        ChunkIndex::from_bytes(&bytes, key.as_ref())
            .map(Some)
            .map_err(|e| invalid(error_chain(&e)))
    }

    /// The digest of every blob whose index is stored; fails on an object
    /// under `blobs/` that is not named by a digest.
    async fn list_digests(&self) -> Result<Vec<Digest>, StoreError> {
        let base = self.prefix.clone().join("blobs");
        let listed: Vec<ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(remote("list", &base))?;
        listed
            .iter()
            .map(|meta| {
                let name: Vec<_> = meta
                    .location
                    .prefix_match(&base)
                    .map(Iterator::collect)
                    .unwrap_or_default();
                match name.as_slice() {
                    [name] => chunks::parse_hex(name.as_ref()),
                    _ => None,
                }
                .ok_or_else(|| StoreError::Invalid {
                    what: "chunk index",
                    location: meta.location.to_string(),
                    reason: "its name is not a SHA-256 in 64 lowercase hex digits".to_owned(),
                })
            })
            .collect()
    }

    /// Every stored index, up to [`PARALLEL`] read at once.
    fn indexes(
        &self,
        digests: Vec<Digest>,
    ) -> impl Stream<Item = Result<(Digest, ChunkIndex), StoreError>> + '_ {
        stream::iter(digests)
            .map(move |digest| async move {
                Ok(self.read_index(&digest).await?.map(|index| (digest, index)))
            })
            .buffer_unordered(PARALLEL)
            // An index deleted since the listing is no longer a blob.
            .try_filter_map(|found| async move { Ok(found) })
    }
}

impl fmt::Debug for S3Blobs {
    // By hand: the store's own Debug holds its configuration; its Display
    // names the bucket only. No credential is ever printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Blobs")
            .field("store", &format_args!("{}", self.store))
            .field("prefix", &self.prefix.as_ref())
            .field("grace", &self.grace)
            .finish()
    }
}

#[async_trait]
impl BlobService for S3Blobs {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.read_index(digest).await?.map(|index| index.size))
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError> {
        let Some(index) = self.read_index(digest).await? else {
            return Ok(None);
        };
        let size = index.size;
        let chunks = chunk_stream(
            Arc::clone(&self.store),
            self.prefix.clone(),
            index,
            tokio::runtime::Handle::current(),
        );
        Ok(Some(BlobReader::new(
            ChunkReader {
                chunks,
                current: Bytes::new(),
                failed: None,
            },
            *digest,
            size,
            self.index_key(digest),
        )))
    }

    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError> {
        Ok(self.put_counted(source).await?.0)
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        // S3 deletes say nothing of what was there: ask first.
        let key = self.index_path(digest);
        match self.store.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(remote("head", &key)(e)),
        }
        self.store
            .delete(&key)
            .await
            .map_err(remote("delete", &key))?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let digests = self.list_digests().await?;
        let mut blobs: Vec<BlobInfo> = self
            .indexes(digests)
            .map_ok(|(digest, index)| BlobInfo {
                digest,
                size: index.size,
            })
            .try_collect()
            .await?;
        blobs.sort_by_key(|blob| blob.digest);
        Ok(blobs)
    }

    async fn remove_incomplete(&self) -> Result<u64, StoreError> {
        // The chunks first: a chunk stored after this listing is not looked
        // at, and one listed here that an index written since names is
        // younger than the grace period (or gc's lock keeps that put out).
        let base = self.prefix.clone().join("chunks");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let grace = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        let listed: Vec<ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(remote("list", &base))?;
        let old: Vec<(Digest, Path)> = listed
            .into_iter()
            .filter(|meta| now.saturating_sub(meta.last_modified.timestamp_millis()) >= grace)
            .filter_map(|meta| {
                // Only what this store names; anything else is left alone.
                let digest = chunks::parse_hex(meta.location.filename()?)?;
                (chunk_path(&self.prefix, &digest) == meta.location)
                    .then_some((digest, meta.location))
            })
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let digests = self.list_digests().await?;
        let referenced: HashSet<Digest> = self
            .indexes(digests)
            .try_fold(HashSet::new(), |mut referenced, (_, index)| async move {
                referenced.extend(index.chunks.into_iter().flatten());
                Ok(referenced)
            })
            .await?;
        stream::iter(old)
            .filter(|(digest, _)| std::future::ready(!referenced.contains(digest)))
            .map(|(_, key)| async move {
                self.store
                    .delete(&key)
                    .await
                    .map_err(remote("delete", &key))
            })
            .buffer_unordered(PARALLEL)
            .try_fold(0, |deleted, ()| async move { Ok(deleted + 1) })
            .await
    }
}

/// What became of one chunk of a put.
enum Stored {
    /// All zeros: not stored.
    Zero,
    /// Stored already (or earlier in the same put).
    Present(Digest),
    /// Uploaded now, with its length.
    Uploaded(Digest, u64),
}

/// Records a finished chunk upload in the index being built.
fn record(
    done: Result<Result<(usize, Stored), StoreError>, JoinError>,
    chunks: &mut [Option<Digest>],
    stats: &mut PutStats,
) -> Result<(), StoreError> {
    let (i, stored) = done.map_err(StoreError::Task)??;
    chunks[i] = match stored {
        Stored::Zero => {
            stats.zero_chunks += 1;
            None
        }
        Stored::Present(digest) => Some(digest),
        Stored::Uploaded(digest, len) => {
            stats.uploaded_chunks += 1;
            stats.uploaded_bytes += len;
            Some(digest)
        }
    };
    Ok(())
}

/// Up to [`CHUNK_SIZE`] bytes of `source`: fewer only at its end.
async fn read_chunk(source: &mut (dyn AsyncRead + Send + Unpin)) -> io::Result<Bytes> {
    let mut buffer = vec![0; CHUNK_SIZE];
    let mut filled = 0;
    while filled < CHUNK_SIZE {
        let n = source.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buffer.truncate(filled);
    Ok(Bytes::from(buffer))
}

/// Hashes chunk `i` and stores it unless it is zeros or stored already.
async fn store_chunk(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    i: usize,
    chunk: Bytes,
    seen: Arc<Mutex<HashSet<Digest>>>,
) -> Result<(usize, Stored), StoreError> {
    let (chunk, digest) = tokio::task::spawn_blocking(move || {
        let digest = (!chunks::is_zero(&chunk)).then(|| Digest::of(&chunk));
        (chunk, digest)
    })
    .await
    .map_err(StoreError::Task)?;
    let Some(digest) = digest else {
        return Ok((i, Stored::Zero));
    };
    if !seen
        .lock()
        .expect("the set of chunks is only inserted into")
        .insert(digest)
    {
        return Ok((i, Stored::Present(digest)));
    }
    let key = chunk_path(&prefix, &digest);
    let len = chunk.len() as u64;
    match store.head(&key).await {
        Ok(meta) if meta.size == len => return Ok((i, Stored::Present(digest))),
        // One of another length is damaged: stored again.
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(remote("head", &key)(e)),
    }
    store
        .put(&key, PutPayload::from(chunk))
        .await
        .map_err(remote("put", &key))?;
    Ok((i, Stored::Uploaded(digest, len)))
}

/// The chunks of `index` in order, up to [`PARALLEL`] fetched at once (on
/// tasks of `runtime`, so that they download and hash while the reader
/// consumes the previous ones).
fn chunk_stream(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    index: ChunkIndex,
    runtime: tokio::runtime::Handle,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    let chunks: Vec<(Option<Digest>, usize)> = (0..index.chunks.len())
        .map(|i| {
            let len = usize::try_from(index.chunk_len(i)).expect("a chunk is at most 64 MiB");
            (index.chunks[i], len)
        })
        .collect();
    stream::iter(chunks)
        .map(move |(chunk, len)| {
            let fetch = chunk.map(|digest| {
                AbortOnDrop(runtime.spawn(fetch_chunk(
                    Arc::clone(&store),
                    chunk_path(&prefix, &digest),
                    digest,
                    len,
                )))
            });
            async move {
                match fetch {
                    Some(task) => task.await.map_err(StoreError::Task)?,
                    None => Ok(zeros(len)),
                }
            }
        })
        .buffered(PARALLEL)
        .boxed()
}

/// `len` zeros, without allocating.
fn zeros(len: usize) -> Bytes {
    if len <= CHUNK_SIZE {
        Bytes::from_static(&ZEROS[..len])
    } else {
        Bytes::from(vec![0; len])
    }
}

/// GETs one chunk and checks its length and hash.
async fn fetch_chunk(
    store: Arc<dyn ObjectStore>,
    key: Path,
    digest: Digest,
    len: usize,
) -> Result<Bytes, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        digest,
        location: key.to_string(),
        reason,
    };
    let wrong_length =
        |found: u64| format!("it holds {found} bytes, not the {len} the index records");
    let got = match store.get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(corrupt("the chunk is missing".to_owned()));
        }
        Err(e) => return Err(remote("get", &key)(e)),
    };
    if got.meta.size != len as u64 {
        return Err(corrupt(wrong_length(got.meta.size)));
    }
    let bytes = got.bytes().await.map_err(remote("get", &key))?;
    if bytes.len() != len {
        return Err(corrupt(wrong_length(bytes.len() as u64)));
    }
    let (bytes, actual) = tokio::task::spawn_blocking(move || {
        let actual = Digest::of(&bytes);
        (bytes, actual)
    })
    .await
    .map_err(StoreError::Task)?;
    if actual != digest {
        return Err(corrupt(format!("its bytes hash to `{actual}`")));
    }
    Ok(bytes)
}

/// A chunk's object key.
fn chunk_path(prefix: &Path, digest: &Digest) -> Path {
    prefix.clone().join("chunks").join(digest.hex())
}

/// Wraps an object store error as [`StoreError::Remote`], naming the request.
fn remote(op: &'static str, key: &Path) -> impl FnOnce(object_store::Error) -> StoreError {
    let op = format!("{op} `{key}`");
    move |error| StoreError::Remote {
        service: SERVICE,
        op,
        source: Box::new(error),
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A URL without its user name and password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Setting these fails only for URLs without a host.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// A task aborted when its handle is dropped (a reader dropped half-way
/// stops its fetches).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// The bytes of a stream of chunks, as an [`AsyncRead`]. A failure is
/// sticky: every later read fails too.
struct ChunkReader {
    chunks: BoxStream<'static, Result<Bytes, StoreError>>,
    current: Bytes,
    failed: Option<StoreError>,
}

impl ChunkReader {
    /// The io::Error carrying `error` (InvalidData for corrupt data, as
    /// [`BlobReader`] does).
    fn io_error(error: StoreError) -> io::Error {
        let kind = match error {
            StoreError::Corrupt { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }

    /// A copy of `error` for the next reads (a source is kept as its text).
    fn replay(error: &StoreError) -> StoreError {
        match error {
            StoreError::Corrupt {
                digest,
                location,
                reason,
            } => StoreError::Corrupt {
                digest: *digest,
                location: location.clone(),
                reason: reason.clone(),
            },
            StoreError::Remote {
                service,
                op,
                source,
            } => StoreError::Remote {
                service,
                op: op.clone(),
                source: error_chain(&**source).into(),
            },
            other => StoreError::Remote {
                service: SERVICE,
                op: "read blob".to_owned(),
                source: error_chain(other).into(),
            },
        }
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = &this.failed {
                return Poll::Ready(Err(Self::io_error(Self::replay(error))));
            }
            match std::task::ready!(this.chunks.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => this.current = chunk,
                Some(Err(error)) => {
                    this.failed = Some(Self::replay(&error));
                    return Poll::Ready(Err(Self::io_error(error)));
                }
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}
