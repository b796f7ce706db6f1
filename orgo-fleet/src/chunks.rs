//! A blob as fixed-size content-addressed chunks: the chunk index (the one
//! record naming a blob's chunks, in order) and the pure logic around it. No
//! I/O here; [`crate::s3`] stores what this describes.
//!
//! A blob of `size` bytes is cut into `ceil(size / chunk_size)` chunks, each
//! `chunk_size` bytes but the last, which may be shorter. The index names
//! each chunk by its SHA-256, or records it as `null` when all its bytes are
//! zero (such chunks are never stored: memory snapshots are mostly zeros).
//!
//! ```json
//! {"orgo_chunks":1,"size":5242883,"chunk_size":4194304,"chunks":["ab12…",null]}
//! ```

use orgo_snapshot::{Version, VersionedError, VersionedFormat};
use orgo_template::Digest;

/// The size of every chunk but a blob's last: 4 MiB.
pub(crate) const CHUNK_SIZE: usize = 4 << 20;

/// The largest chunk an index may name (a bound on what one GET holds in
/// memory): 64 MiB.
const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// The chunk index format. 64 MiB of index is about a million chunks (4 TiB
/// at 4 MiB); a larger one is refused before it is parsed.
pub(crate) const INDEX_FORMAT: VersionedFormat =
    VersionedFormat::new("orgo_chunks", Version::new(1, 0), 64 << 20);

/// A blob's chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkIndex {
    /// The blob's length in bytes.
    pub(crate) size: u64,
    /// Every chunk's length but the last's.
    pub(crate) chunk_size: u64,
    /// Each chunk's SHA-256, or `None` for a chunk of zeros.
    pub(crate) chunks: Vec<Option<Digest>>,
}

/// The index as its JSON file holds it (less the version field).
#[derive(serde::Serialize, serde::Deserialize)]
struct IndexFile {
    size: u64,
    chunk_size: u64,
    chunks: Vec<Option<String>>,
}

/// Why an index cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    /// Not a chunk index this orgo reads (too large, not JSON, another major
    /// version, a missing or unknown field).
    #[error(transparent)]
    Format(#[from] VersionedError),
    /// Well-formed but inconsistent.
    #[error("{0}")]
    Inconsistent(String),
}

impl ChunkIndex {
    /// The number of chunks a blob of `size` bytes has at `chunk_size`.
    pub(crate) fn chunk_count(size: u64, chunk_size: u64) -> u64 {
        size.div_ceil(chunk_size)
    }

    /// The length of chunk `i` (the last one may be shorter).
    pub(crate) fn chunk_len(&self, i: usize) -> u64 {
        let start = self.chunk_size * i as u64;
        self.chunk_size.min(self.size.saturating_sub(start))
    }

    /// The index as the bytes of its file.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let file = IndexFile {
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self
                .chunks
                .iter()
                .map(|chunk| chunk.map(|digest| digest.hex()))
                .collect(),
        };
        serde_json::to_vec(&INDEX_FORMAT.to_value(&file)).expect("a JSON value serializes")
    }

    /// Reads an index file; `file` names it in errors. The size is checked
    /// first, then the version, then the body, then its consistency.
    pub(crate) fn from_bytes(bytes: &[u8], file: &str) -> Result<ChunkIndex, IndexError> {
        let read: IndexFile = INDEX_FORMAT.from_slice(bytes, file)?;
        let bad = |reason: String| Err(IndexError::Inconsistent(reason));
        if read.chunk_size == 0 || read.chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "chunk size {} is not between 1 and {MAX_CHUNK_SIZE}",
                read.chunk_size
            ));
        }
        let expected = Self::chunk_count(read.size, read.chunk_size);
        if read.chunks.len() as u64 != expected {
            return bad(format!(
                "it names {} chunks; {} bytes at {} a chunk are {expected}",
                read.chunks.len(),
                read.size,
                read.chunk_size
            ));
        }
        let mut chunks = Vec::with_capacity(read.chunks.len());
        for (i, chunk) in read.chunks.iter().enumerate() {
            chunks.push(match chunk {
                None => None,
                Some(hex) => Some(parse_hex(hex).ok_or_else(|| {
                    IndexError::Inconsistent(format!(
                        "chunk {i} is `{}`, not 64 lowercase hex digits",
                        hex.chars().take(80).collect::<String>()
                    ))
                })?),
            });
        }
        Ok(ChunkIndex {
            size: read.size,
            chunk_size: read.chunk_size,
            chunks,
        })
    }
}

/// A digest from its 64 lowercase hex digits (an object's name).
pub(crate) fn parse_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0; 32];
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    Some(Digest::from_sha256(bytes))
}

/// Whether every byte is zero. ORs 64-byte blocks (which vectorizes) and
/// stops at the first block that is not all zeros.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0, |acc, b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(size: u64, chunks: Vec<Option<Digest>>) -> ChunkIndex {
        ChunkIndex {
            size,
            chunk_size: CHUNK_SIZE as u64,
            chunks,
        }
    }

    #[test]
    fn an_index_reads_back_as_written() {
        let a = Digest::of(b"a");
        let written = index(2 * CHUNK_SIZE as u64 + 5, vec![Some(a), None, Some(a)]);
        let bytes = written.to_bytes();
        let text = String::from_utf8(bytes.clone()).expect("JSON is UTF-8");
        assert_eq!(
            text,
            format!(
                r#"{{"orgo_chunks":1,"size":{},"chunk_size":4194304,"chunks":["{}",null,"{}"]}}"#,
                2 * CHUNK_SIZE + 5,
                a.hex(),
                a.hex()
            )
        );
        assert_eq!(
            ChunkIndex::from_bytes(&bytes, "blobs/x").expect("reads"),
            written
        );
        let empty = index(0, vec![]);
        assert_eq!(
            ChunkIndex::from_bytes(&empty.to_bytes(), "e").expect("reads"),
            empty
        );
    }

    #[test]
    fn chunk_lengths_and_counts() {
        let size = CHUNK_SIZE as u64;
        assert_eq!(ChunkIndex::chunk_count(0, size), 0);
        assert_eq!(ChunkIndex::chunk_count(1, size), 1);
        assert_eq!(ChunkIndex::chunk_count(size, size), 1);
        assert_eq!(ChunkIndex::chunk_count(size + 1, size), 2);
        let two = index(size + 3, vec![None, None]);
        assert_eq!(two.chunk_len(0), size);
        assert_eq!(two.chunk_len(1), 3);
        let exact = index(size, vec![None]);
        assert_eq!(exact.chunk_len(0), size);
    }

    #[test]
    fn a_newer_version_is_refused_before_the_body() {
        // The body is not an index at all: only the version is looked at.
        let error = ChunkIndex::from_bytes(br#"{"orgo_chunks": 2, "pieces": {}}"#, "blobs/x")
            .expect_err("a newer major is refused");
        assert!(
            matches!(
                &error,
                IndexError::Format(VersionedError::UnsupportedMajor { newer: true, .. })
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "`blobs/x` has format version `2.0`, written by a newer orgo; this orgo reads \
             major version `1` (it writes `1.0`)"
        );
        let missing = ChunkIndex::from_bytes(br#"{"size": 0, "chunk_size": 1, "chunks": []}"#, "f");
        assert!(
            matches!(
                missing,
                Err(IndexError::Format(VersionedError::MissingVersion { .. }))
            ),
            "{missing:?}"
        );
    }

    #[test]
    fn an_index_over_the_bound_is_not_parsed() {
        let mut bytes = br#"{"orgo_chunks": 1, "size": 0, "chunk_size": 1, "chunks": []}"#.to_vec();
        bytes.resize(INDEX_FORMAT.max_bytes() as usize + 1, b' ');
        let error = ChunkIndex::from_bytes(&bytes, "f").expect_err("too large");
        assert!(
            matches!(error, IndexError::Format(VersionedError::TooLarge { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn an_inconsistent_index_is_refused() {
        let a = Digest::of(b"a").hex();
        for (text, reason) in [
            (
                format!(r#"{{"orgo_chunks":1,"size":5,"chunk_size":4,"chunks":["{a}"]}}"#),
                "it names 1 chunks; 5 bytes at 4 a chunk are 2",
            ),
            (
                r#"{"orgo_chunks":1,"size":0,"chunk_size":4,"chunks":[null]}"#.to_owned(),
                "it names 1 chunks; 0 bytes at 4 a chunk are 0",
            ),
            (
                r#"{"orgo_chunks":1,"size":5,"chunk_size":0,"chunks":[]}"#.to_owned(),
                "chunk size 0 is not between 1 and 67108864",
            ),
            (
                r#"{"orgo_chunks":1,"size":1,"chunk_size":4,"chunks":["AB"]}"#.to_owned(),
                "chunk 0 is `AB`, not 64 lowercase hex digits",
            ),
            (
                format!(
                    r#"{{"orgo_chunks":1,"size":1,"chunk_size":4,"chunks":["{}"]}}"#,
                    a.to_uppercase()
                ),
                &format!(
                    "chunk 0 is `{}`, not 64 lowercase hex digits",
                    a.to_uppercase()
                ),
            ),
        ] {
            let error = ChunkIndex::from_bytes(text.as_bytes(), "f").expect_err(&text);
            assert!(
                matches!(&error, IndexError::Inconsistent(r) if r == reason),
                "{text}: {error:?}"
            );
        }
        let unknown = ChunkIndex::from_bytes(
            br#"{"orgo_chunks":1,"size":0,"chunk_size":4,"chunks":[],"extra":1}"#,
            "f",
        );
        assert!(
            matches!(
                unknown,
                Err(IndexError::Format(VersionedError::UnknownField { .. }))
            ),
            "{unknown:?}"
        );
    }

    #[test]
    fn zeros_are_found_anywhere() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0; CHUNK_SIZE]));
        assert!(is_zero(&[0; 100]));
        for len in [1, 63, 64, 65, 1000, CHUNK_SIZE] {
            for at in [0, len / 2, len - 1] {
                let mut bytes = vec![0; len];
                bytes[at] = 1;
                assert!(!is_zero(&bytes), "{len} bytes, a one at {at}");
            }
        }
    }

    #[test]
    fn names_are_lowercase_hex() {
        let a = Digest::of(b"a");
        assert_eq!(parse_hex(&a.hex()), Some(a));
        assert_eq!(parse_hex(&a.hex().to_uppercase()), None);
        assert_eq!(parse_hex(&a.hex()[1..]), None);
        assert_eq!(parse_hex(&format!("{}g", &a.hex()[1..])), None);
    }
}
