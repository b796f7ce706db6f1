//! The secret scan of a snapshot's files before they are stored (a
//! build's, a checkpoint's): [`crate::SecretScan`] over each file, on a
//! blocking thread, as a [`RuntimeError`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{RuntimeError, joined};
use crate::secret_scan::SecretScan;

/// Fails with [`RuntimeError::SecretCaptured`] if a file of `files` (by
/// role) holds a secret `scan` looks for; every file is searched, on a
/// blocking thread, and every secret found is named.
pub(crate) async fn refuse_secrets(
    scan: SecretScan,
    files: &BTreeMap<String, PathBuf>,
) -> Result<(), RuntimeError> {
    let files = files.clone();
    let findings = joined(
        "secret scan",
        tokio::task::spawn_blocking(move || {
            let mut findings = Vec::new();
            for (role, path) in &files {
                let found = scan
                    .scan_file(path, role)
                    .map_err(|source| RuntimeError::Io {
                        op: "scan for secrets",
                        path: path.clone(),
                        source,
                    })?;
                findings.extend(found);
            }
            Ok::<_, RuntimeError>(findings)
        }),
    )
    .await??;
    if findings.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::SecretCaptured { findings })
    }
}
