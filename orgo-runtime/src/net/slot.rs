//! Slots of the computers' range, claimed with `flock` on
//! `/run/orgo/net/slot-N.lock` (host-wide: namespaces, link names and the
//! range are the host's, whatever orgo home a runtime uses). The lock file
//! becomes netd's standard input, so the slot stays claimed exactly as long
//! as the VM's netd runs; the file holds the namespace's name and the VM's
//! run directory (a line each), for a sweep.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::plan::Slot;
use crate::error::{RuntimeError, io};

/// Where the slot locks live.
pub(crate) const LOCK_DIR: &str = "/run/orgo/net";

/// A claimed slot: its number and its locked file.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) slot: Slot,
    pub(crate) file: File,
}

fn lock_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("slot-{n}.lock"))
}

/// What a slot's file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) netns: String,
    pub(crate) run_dir: PathBuf,
}

impl Holder {
    fn to_text(&self) -> String {
        format!("{}\n{}\n", self.netns, self.run_dir.display())
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut lines = text.lines();
        Some(Holder {
            netns: lines.next()?.to_owned(),
            run_dir: PathBuf::from(lines.next()?),
        })
    }
}

/// Claims the first free slot of `count`, recording `holder` in it.
pub(crate) fn claim(count: u32, holder: &Holder) -> Result<Claimed, RuntimeError> {
    claim_in(Path::new(LOCK_DIR), count, holder)
}

pub(crate) fn claim_in(dir: &Path, count: u32, holder: &Holder) -> Result<Claimed, RuntimeError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // Start at a random slot: concurrent claims rarely contend.
    let mut seed = [0u8; 4];
    getrandom::fill(&mut seed).map_err(RuntimeError::Entropy)?;
    let start = u32::from_le_bytes(seed) % count.max(1);
    for i in 0..count {
        let n = (start + i) % count;
        let path = lock_path(dir, n);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        file.set_len(0).map_err(io("write", &path))?;
        file.rewind().map_err(io("write", &path))?;
        file.write_all(holder.to_text().as_bytes())
            .map_err(io("write", &path))?;
        return Ok(Claimed {
            slot: Slot(n),
            file,
        });
    }
    Err(RuntimeError::Net {
        op: "claim a network slot".into(),
        message: format!("all {count} slots of the computers' range are taken"),
    })
}

/// What slots nobody holds record: what dead VMs left. Each such slot is
/// emptied (and stays free).
pub(crate) fn abandoned() -> Vec<Holder> {
    abandoned_in(Path::new(LOCK_DIR))
}

/// What the held slots record.
pub(crate) fn held() -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(LOCK_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let mut text = String::new();
            File::open(e.path())
                .ok()?
                .take(8192)
                .read_to_string(&mut text)
                .ok()?;
            Holder::parse(&text)
        })
        .collect()
}

pub(crate) fn abandoned_in(dir: &Path) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(entry.path()) else {
            continue;
        };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let mut text = String::new();
        let _ = (&mut file).take(8192).read_to_string(&mut text);
        if let Some(holder) = Holder::parse(&text) {
            out.push(holder);
        }
        if !text.is_empty() {
            let _ = file.set_len(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_is_skipped_and_a_dropped_one_abandoned() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let holder = |n: &str| Holder {
            netns: n.to_owned(),
            run_dir: PathBuf::from("/h/computers").join(n),
        };
        let a = claim_in(dir.path(), 2, &holder("orgo-a")).expect("a free slot");
        let b = claim_in(dir.path(), 2, &holder("orgo-b")).expect("another free slot");
        assert_ne!(a.slot, b.slot);
        assert!(
            claim_in(dir.path(), 2, &holder("orgo-c")).is_err(),
            "both taken"
        );
        assert!(abandoned_in(dir.path()).is_empty(), "both held");
        drop(a);
        assert_eq!(abandoned_in(dir.path()), [holder("orgo-a")]);
        assert!(abandoned_in(dir.path()).is_empty(), "emptied");
        drop(b);
    }
}
