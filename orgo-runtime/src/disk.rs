//! Disk layers: `qemu-img` makes a copy-on-write layer over a golden disk.

use std::path::Path;

use crate::error::RuntimeError;
use crate::vmm::DiskFormat;

/// The largest disk a computer gets (64 TiB).
const MAX_DISK_GB: u64 = 64 * 1024;

/// Creates a qcow2 copy-on-write layer over `backing` (`qemu-img create`,
/// without opening the backing file: the size is given, or the backing
/// file's own).
pub(crate) async fn create_overlay(
    backing: &Path,
    backing_format: DiskFormat,
    path: &Path,
    size: Option<u64>,
) -> Result<(), RuntimeError> {
    let mut command = tokio::process::Command::new("qemu-img");
    command
        .args(["create", "-q", "-f", "qcow2", "-F", backing_format.as_str()])
        .arg("-b")
        .arg(backing)
        .arg(path);
    if let Some(bytes) = size {
        command.arg("-u").arg(bytes.to_string());
    }
    let out = command
        .output()
        .await
        .map_err(|source| RuntimeError::Spawn {
            binary: "qemu-img".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(RuntimeError::QemuImg {
            op: "create",
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// `hardware.disk_gb` in bytes, if it is a size a disk can have.
pub(crate) fn disk_bytes(gb: u64) -> Result<u64, RuntimeError> {
    if gb > MAX_DISK_GB {
        return Err(RuntimeError::Invalid {
            what: format!("`hardware.disk_gb` of `{gb}` is over the largest disk, `{MAX_DISK_GB}`"),
        });
    }
    Ok(gb << 30)
}
