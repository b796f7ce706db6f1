//! The backend traits: what a store must do, and nothing more. Everything
//! above them (registry, manifests, build cache, gc, verify) is written once
//! against these traits, so a second backend (an S3-compatible object store
//! shared by a fleet) implements only this file's three traits.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::StoreError;

/// A stored blob: its content address and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BlobInfo {
    /// SHA-256 of the bytes.
    pub digest: Digest,
    /// Length in bytes.
    pub size: u64,
}

/// How [`BlobService::put_file`] treats the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Leave the source in place.
    Copy,
    /// The source is consumed; a backend on the same filesystem renames it
    /// into place instead of copying its bytes.
    Move,
}

/// Content-addressed blobs, streamed in and out.
///
/// Implementations make every write atomic (no partial blob is ever visible
/// under its digest) and hand out readers that verify the digest.
#[async_trait]
pub trait BlobService: Send + Sync + fmt::Debug {
    /// The blob's size, or `None` if it is not stored.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// A reader over the blob's bytes that fails with [`StoreError::Corrupt`]
    /// (as an [`io::ErrorKind::InvalidData`] error) at the end if they do not
    /// hash to `digest`; `None` if it is not stored.
    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError>;

    /// Stores everything `source` yields.
    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError>;

    /// Stores a file's bytes. The default streams it through [`Self::put`].
    async fn put_file(&self, path: &Path, mode: PutMode) -> Result<BlobInfo, StoreError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(StoreError::io("open", path))?;
        let info = self.put(&mut file).await?;
        if mode == PutMode::Move {
            tokio::fs::remove_file(path)
                .await
                .map_err(StoreError::io("remove", path))?;
        }
        Ok(info)
    }

    /// Deletes a blob; `false` if it was not stored.
    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// Every stored blob.
    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError>;

    /// Removes what crashed writers left behind (temp files, abandoned
    /// uploads) and no live writer holds; returns how many. Run by gc.
    async fn remove_incomplete(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Named pointers to digests (`templates/default/app/1.0.0` -> `sha256:...`).
#[async_trait]
pub trait RefService: Send + Sync + fmt::Debug {
    /// The digest `key` points at.
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError>;

    /// Points `key` at `digest` unless `key` exists: `None` when created,
    /// else the digest it already points at (left unchanged). Atomic across
    /// processes.
    async fn create_ref(&self, key: &RefKey, digest: &Digest)
    -> Result<Option<Digest>, StoreError>;

    /// Points `key` at `digest`, replacing what it pointed at.
    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError>;

    /// Removes `key`; `false` if it did not exist.
    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError>;

    /// The key of every ref under `prefix` (the segments of `prefix` and
    /// more), sorted. Keys only, so that a caller can read each ref on its
    /// own and report an unreadable one by name (as verify does).
    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError>;
}

/// Named reader-writer locks shared by every process using the store.
#[async_trait]
pub trait LockService: Send + Sync + fmt::Debug {
    /// Waits for the lock `name` (shared or exclusive) and holds it until the
    /// guard is dropped.
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError>;
}

/// A whole store backend.
pub trait Store: BlobService + RefService + LockService {}

impl<T: BlobService + RefService + LockService> Store for T {}

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder, no shared holders.
    Exclusive,
}

/// Holds a lock of a [`LockService`] until dropped.
pub struct LockGuard(#[allow(dead_code, reason = "held for its Drop")] Box<dyn Send + Sync>);

impl LockGuard {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(inner: impl Send + Sync + 'static) -> Self {
        Self(Box::new(inner))
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A ref's name: `/`-separated segments of `[A-Za-z0-9._+-]`, none `.` or
/// `..`, at most 255 bytes each and 1024 in all. Safe as a relative path and
/// as an object key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefKey(String);

impl RefKey {
    /// Checks `key`.
    pub fn new(key: &str) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidKey {
            key: key.chars().take(100).collect(),
            reason,
        };
        if key.is_empty() || key.len() > 1024 {
            return Err(bad("a key has 1 to 1024 bytes"));
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment.len() > 255 {
                return Err(bad("each segment has 1 to 255 bytes"));
            }
            if segment == "." || segment == ".." {
                return Err(bad("`.` and `..` are not segments"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
            {
                return Err(bad("segments hold only `A-Z a-z 0-9 . _ + -`"));
            }
        }
        Ok(Self(key.to_owned()))
    }

    /// The key joined with one more segment (or several, `/`-separated).
    pub fn join(&self, rest: &str) -> Result<Self, StoreError> {
        Self::new(&format!("{}/{rest}", self.0))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `prefix` or lies under it.
    pub fn starts_with(&self, prefix: &RefKey) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// The segments after `prefix`, if `self` lies under it.
    pub fn strip_prefix(&self, prefix: &RefKey) -> Option<&str> {
        self.0.strip_prefix(&prefix.0)?.strip_prefix('/')
    }
}

impl fmt::Display for RefKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob's bytes, checked against its digest as they stream by.
pub struct BlobReader {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    hasher: Sha256,
    digest: Digest,
    size: u64,
    seen: u64,
    location: String,
    done: bool,
    failed: Option<String>,
}

impl BlobReader {
    /// Wraps `inner`, which should yield `size` bytes hashing to `digest`;
    /// `location` names where they are stored, for the error.
    pub fn new(
        inner: impl AsyncRead + Send + 'static,
        digest: Digest,
        size: u64,
        location: String,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            hasher: Sha256::new(),
            digest,
            size,
            seen: 0,
            location,
            done: false,
            failed: None,
        }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn corrupt(&self, reason: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            StoreError::Corrupt {
                digest: self.digest,
                location: self.location.clone(),
                reason,
            },
        )
    }
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for BlobReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(reason) = &this.failed {
            // Sticky: a reader that failed never reads as a clean end.
            return Poll::Ready(Err(this.corrupt(reason.clone())));
        }
        if this.done || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(this.inner.as_mut().poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        this.hasher.update(new);
        this.seen += new.len() as u64;
        let failure = if this.seen > this.size {
            Some(format!(
                "it holds more than the {} bytes recorded",
                this.size
            ))
        } else if new.is_empty() {
            // The end: the bytes must be exactly the ones named.
            this.done = true;
            let actual = Digest::from_sha256(this.hasher.clone().finalize().into());
            if this.seen != this.size {
                Some(format!(
                    "it holds {} bytes, not the {} recorded",
                    this.seen, this.size
                ))
            } else if actual != this.digest {
                Some(format!("its bytes hash to `{actual}`"))
            } else {
                None
            }
        } else {
            None
        };
        if let Some(reason) = failure {
            let error = this.corrupt(reason.clone());
            this.failed = Some(reason);
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(()))
    }
}

/// Every ref under `prefix` with its digest; fails on an unreadable ref.
pub(crate) async fn refs_under(
    refs: &(impl RefService + ?Sized),
    prefix: &RefKey,
) -> Result<Vec<(RefKey, Digest)>, StoreError> {
    let mut out = Vec::new();
    for key in refs.list_refs(prefix).await? {
        if let Some(digest) = refs.get_ref(&key).await? {
            out.push((key, digest)); // else: deleted since the listing
        }
    }
    Ok(out)
}

/// Reads a whole blob of at most `limit` bytes into memory, verified: for the
/// store's small records (templates, manifests).
pub(crate) async fn read_small(
    blobs: &(impl BlobService + ?Sized),
    digest: &Digest,
    limit: u64,
    what: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    use tokio::io::AsyncReadExt as _;
    let Some(mut reader) = blobs.open(digest).await? else {
        return Ok(None);
    };
    if reader.size() > limit {
        return Err(StoreError::Invalid {
            what,
            location: digest.to_string(),
            reason: format!("{} bytes is over the limit of {limit}", reader.size()),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(reader.size()).unwrap_or(0));
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| unwrap_corrupt(e, digest))?;
    Ok(Some(bytes))
}

/// Turns a read error back into the [`StoreError`] it carries, if any.
pub(crate) fn unwrap_corrupt(error: io::Error, digest: &Digest) -> StoreError {
    StoreError::from_read(error, digest)
}
