//! The secret scan: before a snapshot is stored, its files (memory, device
//! state, disk layer) are searched for the values of secrets, so that no
//! secret is ever baked into a snapshot that others launch.
//!
//! Each value is looked for in the encodings a program leaves it in: as it
//! is, base64 (standard and URL-safe alphabets, at each of the three
//! alignments it can have inside a longer base64 text), hex (lower and upper
//! case), and URL-encoded (percent-encoded and form-encoded). All patterns
//! of all secrets are searched at once, in one pass over each file
//! (Aho-Corasick, with a prefilter that skips the zero pages most of a
//! memory file is).
//!
//! Limits, said plainly: a value shorter than [`MIN_SECRET_BYTES`] is not
//! looked for (it would match by chance; the scan says which it skipped);
//! a value split across two disk clusters that are not adjacent in the
//! layer file, compressed, encrypted or transformed otherwise (UTF-16,
//! hashed) is not found.

use std::fmt;
use std::io::Read;
use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Values shorter than this are not looked for.
pub const MIN_SECRET_BYTES: usize = 8;

/// How a secret's value was written where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Encoding {
    /// The bytes themselves.
    Raw,
    /// Base64 (either alphabet).
    Base64,
    /// Hexadecimal (either case).
    Hex,
    /// Percent- or form-encoded.
    Url,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Raw => "raw",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
            Encoding::Url => "url-encoded",
        })
    }
}

/// A secret found in a snapshot's file: its name (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFinding {
    /// The secret's name.
    pub secret: String,
    /// How it was written.
    pub encoding: Encoding,
    /// The snapshot file's role (`memory`, `disk`, `state`).
    pub file: String,
    /// The byte offset of the first occurrence in that file.
    pub offset: u64,
}

impl fmt::Display for SecretFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "secret `{}` ({}) in the {} at byte {}",
            self.secret, self.encoding, self.file, self.offset
        )
    }
}

/// The patterns of a set of secrets, built once, searched in many files.
///
/// ```
/// use orgo_runtime::{SecretEncoding, SecretScan};
///
/// let scan = SecretScan::new([("api_key", "sk-0123456789")]);
/// let found = scan.scan(&b"...c2stMDEyMzQ1Njc4OQ..."[..], "memory")?;
/// assert_eq!(found[0].secret, "api_key");
/// assert_eq!(found[0].encoding, SecretEncoding::Base64);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SecretScan {
    /// `None` when no secret is long enough to look for.
    searcher: Option<AhoCorasick>,
    /// For each pattern: the secret's index in `names`, and the encoding.
    origin: Vec<(usize, Encoding)>,
    names: Vec<String>,
    /// Secrets too short to look for.
    skipped: Vec<String>,
    /// The longest pattern's length.
    longest: usize,
    /// Whether no pattern holds a zero byte (see [`SecretScan::scan`]).
    skips_zeros: bool,
}

/// Bytes read and searched at a time.
const BLOCK: usize = 8 << 20;
/// The unit of zero skipping: a guest page.
const PAGE: usize = 4096;

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl fmt::Debug for SecretScan {
    /// Names only: the patterns are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretScan")
            .field("names", &self.names)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl SecretScan {
    /// The patterns of `secrets` (name, value).
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> SecretScan {
        let (mut names, mut skipped) = (Vec::new(), Vec::new());
        let (mut patterns, mut origin) = (Vec::<Vec<u8>>::new(), Vec::new());
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_BYTES {
                skipped.push(name.to_owned());
                continue;
            }
            let index = names.len();
            names.push(name.to_owned());
            for (encoding, pattern) in encodings(value.as_bytes()) {
                if !patterns.contains(&pattern) {
                    patterns.push(pattern);
                    origin.push((index, encoding));
                }
            }
        }
        let searcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::DFA))
                .prefilter(false)
                .build(&patterns)
                .expect("patterns of at most a few KiB each build")
        });
        SecretScan {
            searcher,
            origin,
            names,
            skipped,
            longest: patterns.iter().map(Vec::len).max().unwrap_or(1),
            skips_zeros: !patterns.iter().any(|p| p.contains(&0)),
        }
    }

    /// The secrets too short to look for.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Every secret found in `reader` (the file of role `file`), each with
    /// its first occurrence, in the order of the secrets.
    ///
    /// The file is read in blocks; in each, pages of zeros are skipped
    /// without a search when no pattern holds a zero byte (so no match can
    /// touch them), which is most of a memory image. A block starts with
    /// the previous block's last bytes, so a value across two is found.
    pub fn scan(&self, mut reader: impl Read, file: &str) -> std::io::Result<Vec<SecretFinding>> {
        let Some(searcher) = &self.searcher else {
            return Ok(Vec::new());
        };
        let mut first: Vec<Option<(u64, Encoding)>> = vec![None; self.names.len()];
        let keep = self.longest - 1;
        let mut block = vec![0u8; keep + BLOCK];
        // `block[..kept]` are the previous block's last bytes, which start
        // at `base` in the file.
        let (mut kept, mut base) = (0usize, 0u64);
        loop {
            let read = read_full(&mut reader, &mut block[kept..])?;
            if read == 0 {
                break;
            }
            let filled = kept + read;
            let mut runs = Vec::new();
            if self.skips_zeros {
                let mut start = None;
                for (i, page) in block[..filled].chunks(PAGE).enumerate() {
                    let zero = page.iter().all(|&b| b == 0);
                    match (zero, start) {
                        (false, None) => start = Some(i * PAGE),
                        (true, Some(s)) => {
                            runs.push(s..i * PAGE);
                            start = None;
                        }
                        _ => {}
                    }
                }
                if let Some(s) = start {
                    runs.push(s..filled);
                }
            } else {
                runs.push(0..filled);
            }
            for run in runs {
                for found in searcher.find_iter(&block[run.clone()]) {
                    let (secret, encoding) = self.origin[found.pattern().as_usize()];
                    if first[secret].is_none() {
                        first[secret] = Some((base + (run.start + found.start()) as u64, encoding));
                    }
                }
            }
            if first.iter().all(Option::is_some) {
                break;
            }
            let next = filled.saturating_sub(keep);
            block.copy_within(next..filled, 0);
            base += next as u64;
            kept = filled - next;
        }
        Ok(first
            .into_iter()
            .enumerate()
            .filter_map(|(i, at)| {
                at.map(|(offset, encoding)| SecretFinding {
                    secret: self.names[i].clone(),
                    encoding,
                    file: file.to_owned(),
                    offset,
                })
            })
            .collect())
    }

    /// [`SecretScan::scan`] of the file at `path`.
    pub fn scan_file(&self, path: &Path, file: &str) -> std::io::Result<Vec<SecretFinding>> {
        self.scan(std::fs::File::open(path)?, file)
    }
}

/// The forms of `value` to look for.
fn encodings(value: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let mut out = vec![(Encoding::Raw, value.to_vec())];
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            out.push((Encoding::Base64, base64_at(&engine, value, shift)));
        }
    }
    let lower = hex::encode(value);
    out.push((Encoding::Hex, lower.to_uppercase().into_bytes()));
    out.push((Encoding::Hex, lower.into_bytes()));
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let percent = percent_encoding::percent_encode(value, COMPONENT).to_string();
    let form: String = url::form_urlencoded::byte_serialize(value).collect();
    for encoded in [percent, form] {
        if encoded.as_bytes() != value {
            out.push((Encoding::Url, encoded.into_bytes()));
        }
    }
    out
}

/// The base64 characters that `value` alone decides when it starts `shift`
/// bytes into a longer base64 text (those its neighbours share are cut).
fn base64_at(engine: &base64::engine::GeneralPurpose, value: &[u8], shift: usize) -> Vec<u8> {
    let mut padded = vec![0; shift];
    padded.extend_from_slice(value);
    let text = engine.encode(&padded).into_bytes();
    let first = (shift * 8).div_ceil(6);
    let end = ((shift + value.len()) * 8) / 6;
    text[first..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "canary-7f3c9a1e+/ x";

    fn found(haystack: &[u8]) -> Vec<(String, Encoding, u64)> {
        SecretScan::new([("canary", VALUE), ("short", "abc")])
            .scan(haystack, "memory")
            .expect("reads from memory")
            .into_iter()
            .map(|f| (f.secret, f.encoding, f.offset))
            .collect()
    }

    /// `text` at offset 5 of a haystack of other bytes.
    fn inside(text: &[u8]) -> Vec<u8> {
        let mut haystack = b"12345".to_vec();
        haystack.extend_from_slice(text);
        haystack.extend_from_slice(b"67890");
        haystack
    }

    #[test]
    fn each_encoding_is_found_at_its_offset() {
        let b64 = |prefix: &str, engine: &base64::engine::GeneralPurpose| {
            engine.encode(format!("{prefix}{VALUE}")).into_bytes()
        };
        let cases: Vec<(&str, Vec<u8>, Encoding)> = vec![
            ("raw", VALUE.as_bytes().to_vec(), Encoding::Raw),
            ("hex", hex::encode(VALUE).into_bytes(), Encoding::Hex),
            ("HEX", hex::encode_upper(VALUE).into_bytes(), Encoding::Hex),
            ("base64", b64("", &STANDARD_NO_PAD), Encoding::Base64),
            ("base64 +1", b64("k", &STANDARD_NO_PAD), Encoding::Base64),
            ("base64 +2", b64("ke", &STANDARD_NO_PAD), Encoding::Base64),
            ("base64url +1", b64("k", &URL_SAFE_NO_PAD), Encoding::Base64),
            (
                "a token of json with it",
                STANDARD_NO_PAD
                    .encode(format!(r#"{{"token":"{VALUE}"}}"#))
                    .into_bytes(),
                Encoding::Base64,
            ),
            (
                "percent",
                b"canary-7f3c9a1e%2B%2F%20x".to_vec(),
                Encoding::Url,
            ),
            ("form", b"canary-7f3c9a1e%2B%2F+x".to_vec(), Encoding::Url),
        ];
        for (what, text, encoding) in cases {
            // Where a shifted base64 text starts, its first characters are
            // its neighbours' too: the match begins a character or two in.
            let offset = (!what.contains('+') && !what.contains("json")).then_some(5);
            let got = found(&inside(&text));
            assert_eq!(got.len(), 1, "{what}: {got:?}");
            assert_eq!(got[0].0, "canary", "{what}");
            assert_eq!(got[0].1, encoding, "{what}");
            if let Some(offset) = offset {
                assert_eq!(got[0].2, offset, "{what}");
            }
        }
    }

    #[test]
    fn other_bytes_and_short_secrets_find_nothing() {
        assert!(found(&inside(b"canary-7f3c9a1e+/ y")).is_empty());
        assert!(found(&[0; 1 << 16]).is_empty());
        assert!(found(b"abc abc abc").is_empty(), "too short to look for");
        let needles = SecretScan::new([("short", "abc")]);
        assert_eq!(needles.skipped(), ["short".to_owned()]);
        assert!(needles.scan(&b"abc"[..], "disk").expect("reads").is_empty());
    }

    #[test]
    fn a_value_across_two_pages_and_one_with_a_zero_byte_are_found() {
        let mut haystack = vec![1u8; PAGE - 3];
        haystack.extend_from_slice(VALUE.as_bytes());
        haystack.extend_from_slice(&[0; PAGE]);
        haystack.extend_from_slice(b"nul\0in-it-too");
        let scan = SecretScan::new([("canary", VALUE), ("nul", "nul\0in-it-too")]);
        let got: Vec<_> = scan
            .scan(&haystack[..], "memory")
            .expect("reads")
            .into_iter()
            .map(|f| (f.secret, f.offset))
            .collect();
        assert_eq!(
            got,
            [
                ("canary".to_owned(), (PAGE - 3) as u64),
                ("nul".to_owned(), (2 * PAGE - 3 + VALUE.len()) as u64)
            ]
        );
    }

    #[test]
    fn a_value_across_read_buffers_and_every_secret_is_found() {
        // Across a block's end, and just after a page of zeros.
        let mut haystack = vec![0u8; BLOCK - 7];
        haystack.extend_from_slice(VALUE.as_bytes());
        haystack.extend_from_slice(&[0; 100]);
        haystack.extend_from_slice(hex::encode("another-secret").as_bytes());
        let needles = SecretScan::new([("canary", VALUE), ("other", "another-secret")]);
        let got = needles
            .scan(
                std::io::BufReader::with_capacity(4096, &haystack[..]),
                "disk",
            )
            .expect("reads");
        assert_eq!(
            got,
            [
                SecretFinding {
                    secret: "canary".into(),
                    encoding: Encoding::Raw,
                    file: "disk".into(),
                    offset: (BLOCK - 7) as u64,
                },
                SecretFinding {
                    secret: "other".into(),
                    encoding: Encoding::Hex,
                    file: "disk".into(),
                    offset: (BLOCK - 7 + VALUE.len() + 100) as u64,
                },
            ]
        );
        assert_eq!(
            got[0].to_string(),
            format!("secret `canary` (raw) in the disk at byte {}", BLOCK - 7)
        );
    }
}
