//! The store's one error type.

use std::io;
use std::path::PathBuf;

use orgo_template::{Digest, TemplateRef};

/// Everything that can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A namespace nobody publishes into (`system`: orgo's curated
    /// templates, which ship with orgo).
    #[error("the `{namespace}` namespace is reserved: nothing is published into it")]
    Reserved {
        /// The namespace.
        namespace: String,
    },
    /// An I/O operation on a path failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done (`read`, `write`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes do not hash to their name: the object is corrupt.
    #[error("object `{digest}` at `{location}` is corrupt: {reason}")]
    Corrupt {
        /// The digest the object is stored under.
        digest: Digest,
        /// Where it is stored (a path for the local store).
        location: String,
        /// What was found instead.
        reason: String,
    },
    /// A published version was published again with different content.
    #[error(
        "`{reference}` is already published as `{existing}`; versions are immutable, so \
         `{new}` needs a new version"
    )]
    Immutable {
        /// The template ref.
        reference: Box<TemplateRef>,
        /// The digest it is published under.
        existing: Digest,
        /// The digest that was refused.
        new: Digest,
    },
    /// A stored record (ref, failure record) is malformed.
    #[error("invalid {what} at `{location}`: {reason}")]
    Invalid {
        /// `manifest`, `ref`, `store layout`, ...
        what: &'static str,
        /// Where it is stored.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored manifest cannot be read: too large, not JSON, of another
    /// format version, or malformed.
    #[error("invalid manifest")]
    Manifest(#[source] crate::versioned::VersionedError),
    /// A ref points at a template, manifest or blob that is not in the store.
    #[error("`{key}` points at `{digest}`, which is not in the store")]
    Dangling {
        /// The ref.
        key: String,
        /// The missing object.
        digest: Digest,
    },
    /// A ref key is not made of `[A-Za-z0-9._+-]` segments.
    #[error("invalid ref key `{key}`: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The build of a template failed (now, or in the single flight this call joined).
    #[error("the build of `{template}` failed: {message}")]
    BuildFailed {
        /// The template's digest.
        template: Digest,
        /// The build's own error message.
        message: String,
    },
    /// A shared store's service (the object store, the registry database)
    /// failed or could not be reached. The message names the service and
    /// what was asked of it, never a credential.
    #[error("{service}: {op}")]
    Remote {
        /// `object store` or `registry database`.
        service: &'static str,
        /// What was asked, with the object or key (`get \`blobs/ab..\``).
        op: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A background task of the store panicked or was cancelled.
    #[error("a store task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// The error a failed read of blob `digest` carries: the
    /// [`StoreError`] inside it when there is one (a [`BlobReader`]'s
    /// [`Corrupt`](Self::Corrupt), naming the blob or chunk), else the I/O
    /// error itself.
    ///
    /// [`BlobReader`]: crate::BlobReader
    pub fn from_read(error: io::Error, digest: &Digest) -> StoreError {
        Self::carried(error).unwrap_or_else(|error| StoreError::Io {
            op: "read blob",
            path: digest.to_string().into(),
            source: error,
        })
    }

    /// The [`StoreError`] inside `error`, or `error` when it carries none.
    pub(crate) fn carried(error: io::Error) -> Result<StoreError, io::Error> {
        if !error.get_ref().is_some_and(|e| e.is::<StoreError>()) {
            return Err(error);
        }
        let inner = error.into_inner().expect("checked: it has an inner error");
        Ok(*inner
            .downcast::<StoreError>()
            .expect("checked: the inner error is a StoreError"))
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
