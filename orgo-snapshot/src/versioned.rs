//! Versioned JSON files: one reader and one writer for every small JSON
//! file orgo writes and reads back (store manifests, base-image manifests,
//! snapshot metadata, VMM records).
//!
//! # The version rule
//!
//! - A file is a JSON object with its format's version under the format's
//!   key (`"orgo_manifest"`, `"version"`, ...). A version is `major.minor`,
//!   written as an integer when the minor is 0 (`"orgo_manifest": 1` is
//!   `1.0`, as every file written so far says) and as a string otherwise
//!   (`"orgo_manifest": "1.2"`).
//! - A minor version only adds fields; anything else is a new major.
//! - The reader checks the size against the format's bound before it reads
//!   the body, then parses the file and looks at the version field alone,
//!   and only then at the rest:
//!   - another major: refused, saying whether a newer or an older orgo
//!     wrote the file ([`VersionedError::UnsupportedMajor`]);
//!   - the same major and a newer minor (written by a newer orgo): read,
//!     ignoring the fields this orgo does not know;
//!   - the same major and the same or an older minor: read strictly, a
//!     field this orgo does not know is an error naming its path
//!     ([`VersionedError::UnknownField`]).
//! - The version field is the format's, not the data's: the type read or
//!   written does not hold it.
//!
//! Unknown fields are found by writing what was read back to JSON and
//! looking for the fields of the file the result lacks (a `null` counts as
//! absent), which sees through `#[serde(flatten)]` and internally tagged
//! enums alike. So a type read strictly must write every field it reads,
//! under the name it reads it (no `alias`, no `skip_serializing_if` other
//! than for values a file may omit or hold as `null`): a file written by
//! this orgo always reads back.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A format version: `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Changed when a file of the new version cannot be read as the old one.
    pub major: u32,
    /// Changed when fields are added.
    pub minor: u32,
}

impl Version {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// The version as a file holds it: an integer for `N.0`, else `"N.M"`.
    fn to_value(self) -> Value {
        if self.minor == 0 {
            Value::from(self.major)
        } else {
            Value::from(self.to_string())
        }
    }

    /// Reads a version field: an integer `N` (`N.0`) or a string `"N.M"`.
    fn from_value(value: &Value) -> Option<Version> {
        match value {
            Value::Number(n) => Some(Version::new(u32::try_from(n.as_u64()?).ok()?, 0)),
            Value::String(s) => {
                let (major, minor) = s.split_once('.')?;
                let number = |part: &str| {
                    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    part.parse::<u32>().ok()
                };
                Some(Version::new(number(major)?, number(minor)?))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A versioned JSON file format: the key of its version field, the version
/// this orgo writes, and the largest file it reads. See the
/// [module](self) for the rule it reads by.
///
/// ```
/// use orgo_snapshot::{Version, VersionedFormat};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Meta {
///     cpus: u32,
/// }
///
/// const META: VersionedFormat = VersionedFormat::new("orgo_meta", Version::new(1, 0), 64 << 10);
///
/// let bytes = serde_json::to_vec(&META.to_value(&Meta { cpus: 2 }))?;
/// assert_eq!(bytes, br#"{"orgo_meta":1,"cpus":2}"#);
/// assert_eq!(META.from_slice::<Meta>(&bytes, "meta.json")?, Meta { cpus: 2 });
///
/// let newer = META.from_slice::<Meta>(br#"{"orgo_meta": 2, "cpus": 2}"#, "meta.json");
/// assert_eq!(
///     newer.unwrap_err().to_string(),
///     "`meta.json` has format version `2.0`, written by a newer orgo; \
///      this orgo reads major version `1` (it writes `1.0`)",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionedFormat {
    key: &'static str,
    version: Version,
    max_bytes: u64,
    unversioned: Option<Version>,
}

impl VersionedFormat {
    /// A format whose files hold `version` under `key` and are at most
    /// `max_bytes` long.
    pub const fn new(key: &'static str, version: Version, max_bytes: u64) -> VersionedFormat {
        VersionedFormat {
            key,
            version,
            max_bytes,
            unversioned: None,
        }
    }

    /// The same format, reading a file without the version field as
    /// `version`: for a format whose first files had none.
    #[must_use]
    pub const fn unversioned_as(self, version: Version) -> VersionedFormat {
        VersionedFormat {
            unversioned: Some(version),
            ..self
        }
    }

    /// The key of the version field.
    pub const fn key(&self) -> &'static str {
        self.key
    }

    /// The version this orgo writes (and the newest it reads strictly).
    pub const fn version(&self) -> Version {
        self.version
    }

    /// The largest file read, in bytes.
    pub const fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// `value` as a file of this format: a JSON object with the version
    /// field first, then `value`'s fields.
    ///
    /// # Panics
    ///
    /// If `value` does not serialize to a JSON object, or holds a field
    /// under the version's key: the types of versioned files are structs
    /// (or tagged enums of structs) without one.
    pub fn to_value<T: Serialize + ?Sized>(&self, value: &T) -> Value {
        let fields = match serde_json::to_value(value) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => panic!("a versioned file's type serializes to a JSON object"),
            Err(e) => panic!("a versioned file's type serializes to JSON: {e}"),
        };
        assert!(
            !fields.contains_key(self.key),
            "a versioned file's type holds no field `{}`: the version is written for it",
            self.key
        );
        let mut object = Map::with_capacity(fields.len() + 1);
        object.insert(self.key.to_owned(), self.version.to_value());
        object.extend(fields);
        Value::Object(object)
    }

    /// Reads the file at `path`: its size is checked before it is read.
    pub fn read_file<T: DeserializeOwned + Serialize>(
        &self,
        path: &Path,
    ) -> Result<T, VersionedError> {
        let io = |source| VersionedError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let file_name = || path.display().to_string();
        if size > self.max_bytes {
            return Err(self.too_large(file_name(), size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // A file that grew since its size was read is still cut at the bound.
        file.take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        self.from_slice(&bytes, &file_name())
    }

    /// Reads a file's bytes; `file` names it in errors (a path, or where a
    /// store keeps it).
    pub fn from_slice<T: DeserializeOwned + Serialize>(
        &self,
        bytes: &[u8],
        file: &str,
    ) -> Result<T, VersionedError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(self.too_large(file.to_owned(), size));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|source| VersionedError::NotJson {
                file: file.to_owned(),
                source,
            })?;
        let Value::Object(mut object) = value else {
            return Err(VersionedError::NotAnObject {
                file: file.to_owned(),
            });
        };
        let version = match object.remove(self.key) {
            Some(field) => {
                Version::from_value(&field).ok_or_else(|| VersionedError::BadVersion {
                    file: file.to_owned(),
                    key: self.key,
                    found: field.to_string(),
                })?
            }
            None => self
                .unversioned
                .ok_or_else(|| VersionedError::MissingVersion {
                    file: file.to_owned(),
                    key: self.key,
                })?,
        };
        if version.major != self.version.major {
            return Err(VersionedError::UnsupportedMajor {
                file: file.to_owned(),
                found: version,
                supported: self.version,
                newer: version.major > self.version.major,
            });
        }
        let body = Value::Object(object);
        let read = T::deserialize(&body).map_err(|source| VersionedError::Invalid {
            file: file.to_owned(),
            version,
            source,
        })?;
        if version.minor <= self.version.minor {
            let written =
                serde_json::to_value(&read).map_err(|source| VersionedError::Invalid {
                    file: file.to_owned(),
                    version,
                    source,
                })?;
            if let Some(field) = unknown_field(&body, &written, "") {
                return Err(VersionedError::UnknownField {
                    file: file.to_owned(),
                    version,
                    field,
                });
            }
        }
        Ok(read)
    }

    fn too_large(&self, file: String, size: u64) -> VersionedError {
        VersionedError::TooLarge {
            file,
            size,
            max: self.max_bytes,
        }
    }
}

/// The path of the first field of `read` (in file order) that `written`
/// lacks; a `null` counts as absent.
fn unknown_field(read: &Value, written: &Value, path: &str) -> Option<String> {
    match (read, written) {
        (Value::Object(read), Value::Object(written)) => read.iter().find_map(|(key, value)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match written.get(key) {
                None if value.is_null() => None,
                None => Some(path),
                Some(written) => unknown_field(value, written, &path),
            }
        }),
        (Value::Array(read), Value::Array(written)) => read
            .iter()
            .zip(written)
            .enumerate()
            .find_map(|(i, (read, written))| unknown_field(read, written, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// A versioned file that cannot be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionedError {
    /// The file cannot be opened or read.
    #[error("cannot read `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than its format allows; it was not read.
    #[error("`{file}` is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The format's limit.
        max: u64,
    },
    /// The file is not JSON.
    #[error("`{file}` is not JSON")]
    NotJson {
        /// The file.
        file: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is JSON but not an object.
    #[error("`{file}` is not a JSON object")]
    NotAnObject {
        /// The file.
        file: String,
    },
    /// The file has no version field.
    #[error("`{file}` has no `{key}` version field")]
    MissingVersion {
        /// The file.
        file: String,
        /// The key of the version field.
        key: &'static str,
    },
    /// The version field holds no version.
    #[error("`{file}` has `{key}` of `{found}`, not a version (`1` or `\"1.2\"`)")]
    BadVersion {
        /// The file.
        file: String,
        /// The key of the version field.
        key: &'static str,
        /// What it holds, as JSON.
        found: String,
    },
    /// The file's major version is not the one this orgo reads.
    #[error(
        "`{file}` has format version `{found}`, written by {} orgo; this orgo reads major version \
         `{}` (it writes `{supported}`)",
        if *newer { "a newer" } else { "an older" },
        supported.major
    )]
    UnsupportedMajor {
        /// The file.
        file: String,
        /// Its version.
        found: Version,
        /// The version this orgo writes.
        supported: Version,
        /// Whether the file's major is the newer one.
        newer: bool,
    },
    /// A file of this orgo's minor version or an older one has a field
    /// this orgo does not know.
    #[error("`{file}` has an unknown field `{field}` (format version `{version}`)")]
    UnknownField {
        /// The file.
        file: String,
        /// Its version.
        version: Version,
        /// The field's path (`blobs.disk.size`, `items[2].name`).
        field: String,
    },
    /// The file's fields are not those of its version: one is missing or of
    /// the wrong type.
    #[error("`{file}` is not a valid file of format version `{version}`")]
    Invalid {
        /// The file.
        file: String,
        /// Its version.
        version: Version,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        name: String,
        size: u64,
        #[serde(default)]
        parts: BTreeMap<String, Part>,
        #[serde(default)]
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Part {
        offset: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Tagged {
        Small(Part),
    }

    /// This orgo writes 2.3 and reads major 2.
    const FORMAT: VersionedFormat = VersionedFormat::new("orgo_test", Version::new(2, 3), 256);

    fn record() -> Record {
        Record {
            name: "a".into(),
            size: 1,
            parts: BTreeMap::new(),
            note: None,
        }
    }

    /// Every case: the input, and what it reads as (the record or the error).
    #[test]
    fn reads_by_the_version_rule() {
        let cases: &[(&str, &str)] = &[
            (
                "exact version",
                r#"{"orgo_test": "2.3", "name": "a", "size": 1}"#,
            ),
            (
                "older minor",
                r#"{"orgo_test": "2.1", "name": "a", "size": 1}"#,
            ),
            (
                "integer, minor 0",
                r#"{"orgo_test": 2, "name": "a", "size": 1}"#,
            ),
            (
                "version field last",
                r#"{"name": "a", "size": 1, "orgo_test": "2.3"}"#,
            ),
            (
                "unknown field holding null (as absent)",
                r#"{"orgo_test": "2.3", "name": "a", "size": 1, "x": null}"#,
            ),
            (
                "newer minor, extra field",
                r#"{"orgo_test": "2.4", "name": "a", "size": 1, "extra": true}"#,
            ),
            (
                "newer minor, nested extra field",
                r#"{"orgo_test": "2.9", "name": "a", "size": 1, "parts": {"p": {"offset": 0, "len": 4}}}"#,
            ),
            (
                "same minor, extra field",
                r#"{"orgo_test": "2.3", "name": "a", "size": 1, "extra": true}"#,
            ),
            (
                "older minor, nested extra field",
                r#"{"orgo_test": 2, "name": "a", "size": 1, "parts": {"p": {"offset": 0, "len": 4}}}"#,
            ),
            ("newer major", r#"{"orgo_test": 3, "name": "a", "size": 1}"#),
            (
                "older major",
                r#"{"orgo_test": "1.7", "name": "a", "size": 1}"#,
            ),
            (
                "newer major, other body",
                r#"{"orgo_test": 3, "renamed": []}"#,
            ),
            ("missing version", r#"{"name": "a", "size": 1}"#),
            (
                "version not a number",
                r#"{"orgo_test": "two", "name": "a", "size": 1}"#,
            ),
            (
                "version with a sign",
                r#"{"orgo_test": "+2.3", "name": "a", "size": 1}"#,
            ),
            (
                "version negative",
                r#"{"orgo_test": -2, "name": "a", "size": 1}"#,
            ),
            (
                "version a float",
                r#"{"orgo_test": 2.3, "name": "a", "size": 1}"#,
            ),
            (
                "wrong type in body",
                r#"{"orgo_test": "2.3", "name": "a", "size": "1"}"#,
            ),
            ("missing field", r#"{"orgo_test": "2.3", "name": "a"}"#),
            ("not JSON", r#"{"orgo_test": 2, "name": "#),
            ("not an object", r#"[2, "a", 1]"#),
            (
                "too large",
                &format!(
                    r#"{{"orgo_test": 2, "name": "{}", "size": 1}}"#,
                    "a".repeat(256)
                ),
            ),
        ];
        let mut out = String::new();
        for (name, text) in cases {
            let result = FORMAT.from_slice::<Record>(text.as_bytes(), "dir/file.json");
            let outcome = match result {
                Ok(read) => format!("{read:?}"),
                Err(e) => {
                    let mut text = format!("error: {e}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        write!(text, "\n    caused by: {cause}").expect("a String takes writes");
                        source = cause.source();
                    }
                    text
                }
            };
            writeln!(out, "{name}: {outcome}").expect("a String takes writes");
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn what_is_read_is_what_was_written() {
        let mut record = record();
        record.parts.insert("p".into(), Part { offset: 7 });
        record.note = Some("n".into());
        let bytes = serde_json::to_vec(&FORMAT.to_value(&record)).expect("JSON");
        assert!(
            bytes.starts_with(br#"{"orgo_test":"2.3","name""#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            FORMAT.from_slice::<Record>(&bytes, "f").expect("reads"),
            record
        );

        let v1 = VersionedFormat::new("v", Version::new(1, 0), 256);
        assert_eq!(
            v1.to_value(&Part { offset: 1 }),
            serde_json::json!({"v": 1, "offset": 1})
        );
    }

    /// Unknown fields are found under internally tagged enums and
    /// flattened structs too, where serde reads from a buffer.
    #[test]
    fn unknown_fields_are_found_through_buffered_types() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Outer {
            id: u32,
            #[serde(flatten)]
            inner: Part,
        }
        let tagged = FORMAT.from_slice::<Tagged>(
            br#"{"orgo_test": 2, "kind": "small", "offset": 1, "len": 2}"#,
            "t",
        );
        assert!(
            matches!(&tagged, Err(VersionedError::UnknownField { field, .. }) if field == "len"),
            "{tagged:?}"
        );
        let flat =
            FORMAT.from_slice::<Outer>(br#"{"orgo_test": 2, "id": 1, "offset": 1, "len": 2}"#, "f");
        assert!(
            matches!(&flat, Err(VersionedError::UnknownField { field, .. }) if field == "len"),
            "{flat:?}"
        );
        let newer = FORMAT.from_slice::<Tagged>(
            br#"{"orgo_test": "2.4", "kind": "small", "offset": 1, "len": 2}"#,
            "t",
        );
        assert_eq!(
            newer.expect("a newer minor reads"),
            Tagged::Small(Part { offset: 1 })
        );
    }

    #[test]
    fn unversioned_files_read_as_the_version_given() {
        let format = FORMAT.unversioned_as(Version::new(2, 0));
        let read: Record = format
            .from_slice(br#"{"name": "a", "size": 1}"#, "f")
            .expect("reads as 2.0");
        assert_eq!(read, record());
        let strict = format.from_slice::<Record>(br#"{"name": "a", "size": 1, "x": 1}"#, "f");
        assert!(
            matches!(strict, Err(VersionedError::UnknownField { .. })),
            "{strict:?}"
        );
    }

    #[test]
    fn files_are_read_within_the_bound() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("file.json");
        std::fs::write(&path, br#"{"orgo_test": 2, "name": "a", "size": 1}"#).expect("written");
        assert_eq!(FORMAT.read_file::<Record>(&path).expect("reads"), record());

        std::fs::write(&path, vec![b' '; 257]).expect("written");
        let large = FORMAT.read_file::<Record>(&path);
        assert!(
            matches!(
                large,
                Err(VersionedError::TooLarge {
                    size: 257,
                    max: 256,
                    ..
                })
            ),
            "{large:?}"
        );

        let missing = FORMAT.read_file::<Record>(&dir.path().join("missing.json"));
        match missing {
            Err(VersionedError::Io { path: p, source }) => {
                assert_eq!(p, dir.path().join("missing.json"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn versions_read_and_write_one_spelling() {
        for (value, version) in [
            (serde_json::json!(1), Some(Version::new(1, 0))),
            (serde_json::json!("1.0"), Some(Version::new(1, 0))),
            (serde_json::json!("1.12"), Some(Version::new(1, 12))),
            (serde_json::json!("1"), None),
            (serde_json::json!("1.2.3"), None),
            (serde_json::json!("1."), None),
            (serde_json::json!(" 1.2"), None),
            (serde_json::json!(4_294_967_296_u64), None),
            (serde_json::json!(null), None),
        ] {
            assert_eq!(Version::from_value(&value), version, "{value}");
        }
        assert_eq!(Version::new(1, 0).to_value(), serde_json::json!(1));
        assert_eq!(Version::new(1, 2).to_value(), serde_json::json!("1.2"));
    }
}
