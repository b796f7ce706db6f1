//! Manifests: the small, versioned JSON documents that tie blobs together.

use std::collections::BTreeMap;
use std::time::SystemTime;

use orgo_template::Digest;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::service::{BlobInfo, BlobService, read_small};
use crate::versioned::{Version, VersionedFormat};

/// The manifest format's major version, written in every manifest as
/// `"orgo_manifest": "1.1"` (1.1 added [`SnapshotManifest::agent`]);
/// manifests are read by the rule of [`crate::versioned`].
pub const MANIFEST_VERSION: u32 = 1;
/// Manifests larger than this are refused before they are parsed.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The format of manifests: `orgo_manifest` [`MANIFEST_VERSION`].1, at most
/// [`MAX_MANIFEST_BYTES`].
const FORMAT: VersionedFormat = VersionedFormat::new(
    "orgo_manifest",
    Version::new(MANIFEST_VERSION, 1),
    MAX_MANIFEST_BYTES,
);

/// A stored manifest, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Manifest {
    /// A golden snapshot of a built template.
    Snapshot(SnapshotManifest),
    /// A base image (kernel, initramfs, root filesystem) built from a recipe.
    BaseImage(ImageManifest),
}

/// What restores a template's golden snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The digest of the canonical template it was built from.
    pub template: Digest,
    /// The blobs that restore it, by role (`disk`, `memory`, `state`, ...;
    /// the roles are the backend's).
    pub blobs: BTreeMap<String, BlobInfo>,
    /// The hardware it was captured with.
    pub hardware: HardwareShape,
    /// The backend that made it (`qemu`, `cloud-hypervisor`); a snapshot only
    /// restores on the backend that made it.
    pub backend: String,
    /// The digest of the base image's manifest.
    pub base_image: Digest,
    /// The digest of the kernel blob the guest runs.
    pub kernel: Digest,
    /// The SHA-256 of the guest agent the snapshot runs (format 1.1; `None`
    /// in a manifest written before). A runtime whose agent differs treats
    /// the snapshot as stale and builds the template again: a running
    /// agent speaks the protocol of its own build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Digest>,
    /// For a checkpoint of a running computer: the snapshot that computer
    /// was launched from, and the computer (format 1.1; `None` for a
    /// template's golden snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<Provenance>>,
    /// When it was captured (RFC 3339, UTC).
    pub created_at: String,
}

/// Where a checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The digest of the snapshot manifest the computer was launched from
    /// (its blobs, the disk among them, stay while the checkpoint does: the
    /// checkpoint's disk is a layer over that one).
    pub snapshot: Digest,
    /// The computer's id.
    pub computer: String,
}

/// The hardware a snapshot was captured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareShape {
    /// vCPUs.
    pub cpu: u32,
    /// Guest memory in MiB: the floor a launch can ask for.
    pub memory_mib: u64,
    /// Root disk in GiB.
    pub disk_gb: u64,
}

/// A base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// The digest of the recipe it was built from.
    pub recipe: Digest,
    /// Its blobs by role (`vmlinuz`, `vmlinux`, `initrd`, `rootfs`, ...).
    pub blobs: BTreeMap<String, BlobInfo>,
    /// When it was built (RFC 3339, UTC).
    pub created_at: String,
}

impl Manifest {
    /// Every blob the manifest names (not other manifests).
    pub fn blobs(&self) -> impl Iterator<Item = &BlobInfo> {
        match self {
            Self::Snapshot(m) => m.blobs.values(),
            Self::BaseImage(m) => m.blobs.values(),
        }
    }

    /// The canonical bytes: RFC 8785-compatible JSON (sorted keys, no
    /// whitespace) with the version field.
    pub fn to_bytes(&self) -> Vec<u8> {
        // serde_json's Map keeps insertion order here; sort for one
        // spelling per manifest, so equal manifests share a digest.
        serde_json::to_vec(&sorted(FORMAT.to_value(self)))
            .expect("JSON values serialize without fail")
    }

    /// Parses stored bytes by the rule of [`crate::versioned`]: the size
    /// cap, then the version, then the body.
    pub fn from_bytes(bytes: &[u8], location: &str) -> Result<Self, StoreError> {
        FORMAT
            .from_slice(bytes, location)
            .map_err(StoreError::Manifest)
    }
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Stores a manifest as a blob; its digest is the manifest's address.
pub async fn put_manifest(
    blobs: &(impl BlobService + ?Sized),
    manifest: &Manifest,
) -> Result<Digest, StoreError> {
    let bytes = manifest.to_bytes();
    Ok(blobs.put(&mut bytes.as_slice()).await?.digest)
}

/// Loads and checks a manifest; `None` if it is not stored.
pub async fn get_manifest(
    blobs: &(impl BlobService + ?Sized),
    digest: &Digest,
) -> Result<Option<Manifest>, StoreError> {
    let Some(bytes) = read_small(blobs, digest, MAX_MANIFEST_BYTES, "manifest").await? else {
        return Ok(None);
    };
    Manifest::from_bytes(&bytes, &digest.to_string()).map(Some)
}

/// Now, as RFC 3339 UTC with seconds.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(text: &[u8]) -> BlobInfo {
        BlobInfo {
            digest: Digest::of(text),
            size: text.len() as u64,
        }
    }

    fn samples() -> [Manifest; 2] {
        [
            Manifest::Snapshot(SnapshotManifest {
                template: Digest::of(b"template"),
                blobs: BTreeMap::from([
                    ("memory".to_owned(), blob(b"memory")),
                    ("disk".to_owned(), blob(b"disk")),
                ]),
                hardware: HardwareShape {
                    cpu: 2,
                    memory_mib: 1024,
                    disk_gb: 8,
                },
                backend: "qemu".to_owned(),
                base_image: Digest::of(b"base"),
                kernel: Digest::of(b"kernel"),
                agent: Some(Digest::of(b"agent")),
                parent: None,
                created_at: "2025-01-02T03:04:05Z".to_owned(),
            }),
            Manifest::BaseImage(ImageManifest {
                recipe: Digest::of(b"recipe"),
                blobs: BTreeMap::from([("rootfs".to_owned(), blob(b"rootfs"))]),
                created_at: "2025-01-02T03:04:05Z".to_owned(),
            }),
        ]
    }

    /// The bytes, and so the digests, of manifests are one spelling per
    /// manifest: stores keep them by digest.
    #[test]
    fn manifest_bytes_are_stable() {
        let written = samples().map(|m| String::from_utf8(m.to_bytes()).expect("JSON is UTF-8"));
        assert_eq!(
            written,
            [
                concat!(
                    r#"{"agent":"sha256:d4f0bc5a29de06b510f9aa428f1eedba926012b591fef7a518e776a7c9bd1824","backend":"qemu","base_image":"sha256:cae662172fd450bb0cd710a769079c05bfc5d8e35efa6576edc7d0377afdd4a2","#,
                    r#""blobs":{"disk":{"digest":"sha256:1044dec7206e8d7c9fbb4ae8f766668406d2567fc7fc1a160a9d4700fcf8f8e9","size":4},"#,
                    r#""memory":{"digest":"sha256:c064fbca9d9de8dd9bb0624984403b28d0da807a69365d4f7fb09123ecb0c405","size":6}},"#,
                    r#""created_at":"2025-01-02T03:04:05Z","hardware":{"cpu":2,"disk_gb":8,"memory_mib":1024},"#,
                    r#""kernel":"sha256:6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c","kind":"snapshot","#,
                    r#""orgo_manifest":"1.1","template":"sha256:5cde0f1298f41f7d1c8b907a36992a7a513225a2615bd6e307bf1a9149b06b40"}"#,
                ),
                concat!(
                    r#"{"blobs":{"rootfs":{"digest":"sha256:3c47ef972d531d524daa15fa33dd885dd23de6221bbd10a29eb42ecfcf2ef422","size":6}},"#,
                    r#""created_at":"2025-01-02T03:04:05Z","kind":"base_image","orgo_manifest":"1.1","#,
                    r#""recipe":"sha256:e1d8e552330911f9f779f85b6f2c00a15e790dcc3fbb3b28f5da1d660a30c5b8"}"#,
                ),
            ]
        );
        for manifest in samples() {
            let bytes = manifest.to_bytes();
            assert_eq!(
                Manifest::from_bytes(&bytes, "sample").expect("reads back"),
                manifest
            );
        }
    }

    /// Manifests are read by the versioned rule: a field this orgo does not
    /// know is an error in a manifest of its version, and ignored in one of
    /// a newer minor; another major is refused before its body is read.
    #[test]
    fn manifests_are_read_by_the_version_rule() {
        use crate::versioned::VersionedError;

        let [snapshot, _] = samples();
        let mut value: serde_json::Value =
            serde_json::from_slice(&snapshot.to_bytes()).expect("JSON");
        value["hardware"]["gpus"] = 1.into();
        let extra = serde_json::to_vec(&value).expect("JSON");
        match Manifest::from_bytes(&extra, "m") {
            Err(StoreError::Manifest(VersionedError::UnknownField { field, .. })) => {
                assert_eq!(field, "hardware.gpus");
            }
            other => panic!("expected an unknown field, got {other:?}"),
        }
        value["orgo_manifest"] = "1.2".into();
        let newer_minor = serde_json::to_vec(&value).expect("JSON");
        assert_eq!(
            Manifest::from_bytes(&newer_minor, "m").expect("a newer minor reads"),
            snapshot
        );
        // A 1.0 manifest (before `agent`) reads, without an agent.
        let mut old = value.clone();
        old["orgo_manifest"] = 1.into();
        old["hardware"]
            .as_object_mut()
            .expect("an object")
            .remove("gpus");
        old.as_object_mut().expect("an object").remove("agent");
        let old = Manifest::from_bytes(&serde_json::to_vec(&old).expect("JSON"), "m")
            .expect("a 1.0 manifest reads");
        let Manifest::Snapshot(old) = old else {
            panic!("a snapshot manifest")
        };
        assert_eq!(old.agent, None);
        let newer_major = br#"{"orgo_manifest": 2, "kind": "snapshot_v2"}"#;
        assert!(matches!(
            Manifest::from_bytes(newer_major, "m"),
            Err(StoreError::Manifest(VersionedError::UnsupportedMajor {
                newer: true,
                ..
            }))
        ));
    }
}
