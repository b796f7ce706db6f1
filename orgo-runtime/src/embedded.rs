//! Placeholder until the embedded agent lands.
use std::path::{Path, PathBuf};

pub(crate) fn embedded_agent(_home: &Path) -> std::io::Result<PathBuf> {
    Err(std::io::Error::other("no agent embedded"))
}
