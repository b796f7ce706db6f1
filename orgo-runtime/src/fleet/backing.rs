//! Disk layers named by their place in any host's store: a golden disk names
//! its backing file (the base image's root file system, or a parent layer)
//! by a path relative to itself, `../<ab>/<hex>` ([`relative_backing`]), so
//! that it restores under any home, and fetching a disk fetches the chain of
//! blobs its headers name ([`backing_blob`]).

use std::path::{Path, PathBuf};

use orgo_snapshot::LocalStore;
use orgo_template::Digest;

use crate::error::RuntimeError;

/// The blob a stored qcow2 disk layer names as its backing file, when it
/// names one by its place in the store.
pub(super) fn backing_blob(
    store: &LocalStore,
    digest: &Digest,
) -> Result<Option<Digest>, RuntimeError> {
    use std::io::Read as _;
    let path = store.blob_path(digest);
    let mut header = Vec::with_capacity(QCOW2_HEADER_READ);
    std::fs::File::open(&path)
        .and_then(|f| f.take(QCOW2_HEADER_READ as u64).read_to_end(&mut header))
        .map_err(crate::error::io("read", &path))?;
    Ok(qcow2_backing_name(&header).and_then(|name| blob_of_relative(&name)))
}

/// How much of a file is read for its qcow2 header and backing name.
const QCOW2_HEADER_READ: usize = 64 * 1024;

/// A qcow2 file's backing file name, read from its header (`None` if it is
/// no qcow2 file, has none, or names it beyond the bytes given).
fn qcow2_backing_name(header: &[u8]) -> Option<String> {
    if header.get(..4)? != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header.get(8..16)?.try_into().ok()?);
    let size = u32::from_be_bytes(header.get(16..20)?.try_into().ok()?);
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    if offset == 0 || size == 0 {
        return None;
    }
    String::from_utf8(header.get(start..end)?.to_vec()).ok()
}

/// The digest of a relative backing name `../<ab>/<hex>` ([`relative_backing`]).
fn blob_of_relative(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("../")?;
    let (dir, hex) = rest.split_once('/')?;
    if hex.len() != 64 || hex.get(..2)? != dir {
        return None;
    }
    format!("sha256:{hex}").parse().ok()
}

/// The backing name by which a layer names blob `digest`, valid wherever
/// the layer is once stored: `../<ab>/<hex>` (blobs live in
/// `blobs/sha256/<ab>/<hex>`).
pub(crate) fn relative_backing(digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    Path::new("..").join(&hex[..2]).join(hex)
}

/// Makes `relative_backing(digest)` resolve from `layer_dir` before the layer
/// is stored: `<layer_dir>/../<ab>` links to the store's `blobs/sha256/<ab>`.
pub(crate) fn link_backing_dir(
    store: &LocalStore,
    layer_dir: &Path,
    digest: &Digest,
) -> Result<(), RuntimeError> {
    let blob = store.blob_path(digest);
    let blob_dir = blob.parent().expect("a blob path has a directory");
    let parent = layer_dir
        .parent()
        .expect("a layer's directory has a parent (the build's scratch)");
    let link = parent.join(&digest.hex()[..2]);
    match std::os::unix::fs::symlink(blob_dir, &link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(crate::error::io("link", &link)(e)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A qcow2 header naming `name` as its backing file (for the cache's
    /// tests too).
    pub(crate) fn header(name: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[8..16].copy_from_slice(&200u64.to_be_bytes());
        h[16..20].copy_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
        h[200..200 + name.len()].copy_from_slice(name);
        h
    }

    #[test]
    fn a_relative_backing_name_leads_to_its_blob() {
        let digest = Digest::of(b"rootfs");
        let name = relative_backing(&digest);
        let name = name.to_str().unwrap();
        assert_eq!(name, format!("../{}/{}", &digest.hex()[..2], digest.hex()));
        assert_eq!(
            qcow2_backing_name(&header(name.as_bytes())).as_deref(),
            Some(name)
        );
        assert_eq!(blob_of_relative(name), Some(digest));
    }

    #[test]
    fn other_names_and_files_lead_nowhere() {
        let digest = Digest::of(b"rootfs");
        let hex = digest.hex();
        for name in [
            format!("/var/lib/orgo/blobs/sha256/{}/{hex}", &hex[..2]),
            format!("../zz/{hex}"),
            format!("../{}/{}", &hex[..2], &hex[..10]),
            "../ab/../../etc/passwd".to_owned(),
        ] {
            assert_eq!(blob_of_relative(&name), None, "{name}");
        }
        assert_eq!(qcow2_backing_name(b"not a qcow2 file"), None);
        let mut no_backing = header(b"x");
        no_backing[8..16].copy_from_slice(&0u64.to_be_bytes());
        assert_eq!(qcow2_backing_name(&no_backing), None);
        let mut beyond = header(b"x");
        beyond[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(qcow2_backing_name(&beyond), None, "a name past the end");
    }
}
