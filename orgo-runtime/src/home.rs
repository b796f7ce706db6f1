//! The computers of an orgo home: `<home>/computers/<id>/`, each with its
//! record (`computer.json`), its copy-on-write disk layer and the VMM's
//! sockets and logs.
//!
//! A computer is recorded before anything is done for it: a launch first
//! creates its directory with a record in state `launching` naming the
//! process that launches it (made in a temporary directory and renamed
//! into place, so a directory never lacks its record), then leases the
//! snapshot, restores the VM, and only then marks it `running` with its
//! VMM's pid. A launcher killed half-way (`kill -9`) leaves a record whose
//! owner is dead: an *orphan*, which [`Home::statuses`] reports and
//! [`Runtime::sweep`](crate::Runtime::sweep) removes (its VMM killed, its
//! lease released, its files removed). A directory is removed by renaming it
//! away first (to a temporary name of the removing process), so a process
//! killed half-way through a removal never leaves files without their
//! record; a sweep removes such leftovers once their process is gone.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orgo_snapshot::{Version, VersionedError, VersionedFormat};
use orgo_template::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{RuntimeError, io};
use crate::process::{Owner, process_alive};
use crate::vmm::BackendKind;

/// The computer record: `"orgo_computer": "2.2"` (2: recorded before the VM
/// starts, with its state and owner; 2.1: its forwarded ports and whether
/// it learns its egress, absent from 2.0 records: none and no; 2.2: its
/// restarts, absent before: none; 2.3: when it was suspended, absent when
/// it is not; 2.4: the process that paused it for a checkpoint or a
/// suspend, absent when none did), at most 1 MiB.
const RECORD: VersionedFormat = VersionedFormat::new("orgo_computer", Version::new(2, 4), 1 << 20);
/// The record an orgo before version 2 wrote (of a computer it launched and
/// recorded once running): read and taken as `running`.
const RECORD_V1: VersionedFormat =
    VersionedFormat::new("orgo_computer", Version::new(1, 0), 1 << 20);

/// [`RECORD_V1`]'s body.
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    id: String,
    template: String,
    template_digest: Digest,
    snapshot: Digest,
    backend: String,
    cpus: u32,
    memory_mib: u64,
    pid: Option<u32>,
    created_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_shutdown: Option<String>,
}

impl RecordV1 {
    fn upgrade(self) -> Option<ComputerRecord> {
        Some(ComputerRecord {
            id: self.id,
            state: RecordState::Running,
            template: self.template,
            template_digest: self.template_digest,
            snapshot: Some(self.snapshot),
            backend: Some(self.backend.parse().ok()?),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            pid: self.pid,
            created_unix: self.created_unix,
            on_shutdown: self.on_shutdown,
            owner: None,
            ports: Vec::new(),
            egress_learn: false,
            restarts: 0,
            suspended_unix: None,
            paused_by: None,
        })
    }
}
const RECORD_FILE: &str = "computer.json";
/// The directory of a suspended computer's state, in its directory.
pub(crate) const SUSPENDED_DIR: &str = "suspended";
/// Temporary directories of launches that have not recorded yet.
const TMP_PREFIX: &str = ".tmp-";
/// A temporary directory older than this is a dead launch's.
const TMP_GRACE: Duration = Duration::from_secs(60);

/// Where a computer is in its life, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Being launched by its owner process.
    Launching,
    /// Restored ahead and parked in its owner's warm pool.
    Parked,
    /// Launched: its VMM runs on its own.
    Running,
}

/// A computer, as recorded in `computer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ComputerRecord {
    /// The computer's id.
    pub id: String,
    /// Where it is in its life.
    pub state: RecordState,
    /// The template's `name@version`.
    pub template: String,
    /// The template's digest.
    pub template_digest: Digest,
    /// The snapshot manifest it was restored from (once it is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Digest>,
    /// The backend that runs it (once it is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The VMM's process id, once it runs.
    pub pid: Option<u32>,
    /// When it was launched (seconds since the Unix epoch).
    pub created_unix: u64,
    /// The `on_shutdown` hook, run by [`Runtime::stop`](crate::Runtime::stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_shutdown: Option<String>,
    /// The process launching it (`launching`, `parked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<Owner>,
    /// Its forwarded `apps[].ports[]`, in the template's order (removed
    /// with the computer when it stops).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Whether it records the destinations it reaches
    /// ([`LaunchOptions::egress_learn`](crate::LaunchOptions::egress_learn)).
    #[serde(default)]
    pub egress_learn: bool,
    /// How often `apps[].health.on_fail: restart_vm` restored it again
    /// from its snapshot (each time back in its launch state).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// When it was suspended (seconds since the Unix epoch): its memory
    /// and state are saved in its directory and no VMM runs
    /// ([`Runtime::suspend`](crate::Runtime::suspend)); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_unix: Option<u64>,
    /// The process that paused its vCPUs to capture it (a checkpoint, a
    /// suspend), while it does: a pause whose process died is undone by
    /// the next [`Runtime::open`](crate::Runtime::open) (see
    /// `crate::pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paused_by: Option<Owner>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A forwarded port: the guest's `internal` port and protocol, reached at
/// a host address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PortMapping {
    /// The port inside the computer.
    pub internal: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where the host reaches it.
    pub address: std::net::SocketAddr,
}

impl std::fmt::Display for PortMapping {
    /// `8000/tcp 127.0.0.1:41234`, as `orgo ports` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.internal, self.protocol, self.address)
    }
}

impl ComputerRecord {
    /// A record of a computer about to be launched (or parked) by this
    /// process.
    pub(crate) fn launching(id: &str, template: &orgo_template::Template) -> ComputerRecord {
        let identity = template.template();
        ComputerRecord {
            id: id.to_owned(),
            state: RecordState::Launching,
            template: format!("{}@{}", identity.name, identity.version),
            template_digest: template.digest(),
            snapshot: None,
            backend: None,
            cpus: 0,
            memory_mib: 0,
            pid: None,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            on_shutdown: template.hooks().on_shutdown.clone(),
            owner: Some(Owner::current()),
            ports: Vec::new(),
            egress_learn: false,
            restarts: 0,
            suspended_unix: None,
            paused_by: None,
        }
    }
}

/// A computer listed by [`Runtime::computers`](crate::Runtime::computers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerStatus {
    /// Its record.
    pub record: ComputerRecord,
    /// What it is now.
    pub state: ComputerState,
    /// Whether its VMM process still runs.
    pub running: bool,
}

/// What a computer is now: its record, checked against the host's
/// processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComputerState {
    /// Launched, and its VMM runs.
    Running,
    /// Launched, and its VMM has exited (`stop` cleans up).
    Exited,
    /// Being launched by a live process.
    Launching,
    /// Parked in a live process's warm pool.
    Parked,
    /// Left behind by a launch whose process died: `Runtime::sweep` (the
    /// CLI's `orgo store gc`) removes it.
    Orphaned,
    /// Saved to disk, its memory and vCPUs freed: `Runtime::resume` (the
    /// CLI's `orgo resume`) brings it back.
    Suspended,
}

impl ComputerState {
    /// Its name, as `orgo ps` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Launching => "launching",
            Self::Parked => "parked",
            Self::Orphaned => "orphaned",
            Self::Suspended => "suspended",
        }
    }
}

impl ComputerStatus {
    fn of(record: ComputerRecord) -> ComputerStatus {
        // A launched computer whose VMM's pid is not known (a custom VMM's)
        // is taken to run.
        let running = record.suspended_unix.is_none()
            && match record.pid {
                Some(pid) => process_alive(pid),
                None => record.state == RecordState::Running,
            };
        let owned = record.owner.is_some_and(|o| o.alive());
        let state = match (record.state, owned) {
            (RecordState::Running, _) if record.suspended_unix.is_some() => {
                ComputerState::Suspended
            }
            (RecordState::Running, _) if running => ComputerState::Running,
            (RecordState::Running, _) => ComputerState::Exited,
            (RecordState::Launching, true) => ComputerState::Launching,
            (RecordState::Parked, true) => ComputerState::Parked,
            (_, false) => ComputerState::Orphaned,
        };
        ComputerStatus {
            record,
            state,
            running,
        }
    }
}

/// The computers' directories of one home.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    computers: PathBuf,
}

impl Home {
    pub(crate) fn new(home: &Path) -> Home {
        Home {
            computers: home.join("computers"),
        }
    }

    /// The directory of computer `id` (which may not exist).
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.computers.join(id)
    }

    /// The directory of computer `id`, which must look like an id (it
    /// becomes part of a path).
    pub(crate) fn existing_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let hex = id.strip_prefix("c-").unwrap_or_default();
        if hex.len() != 12
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RuntimeError::NotFound {
                what: format!("computer `{id}` (ids look like `c-0123456789ab`)"),
            });
        }
        Ok(self.dir(id))
    }

    /// Creates computer `record.id`'s directory (owner only: its disk layer
    /// will hold the computer's secrets) with its record in it, at once.
    pub(crate) fn create(&self, record: &ComputerRecord) -> Result<PathBuf, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.computers)
            .map_err(io("create", &self.computers))?;
        let tmp = self
            .computers
            .join(format!("{TMP_PREFIX}{}-{}", record.id, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io("create", &tmp))?;
        write_record(&tmp, record)?;
        let dir = self.dir(&record.id);
        std::fs::rename(&tmp, &dir).map_err(io("rename", &dir))?;
        Ok(dir)
    }

    /// Replaces computer `record.id`'s record.
    pub(crate) fn update(&self, record: &ComputerRecord) -> Result<(), RuntimeError> {
        write_record(&self.dir(&record.id), record)
    }

    /// Computer `id` as it is now; an unreadable record is an error that
    /// says why.
    pub(crate) fn status(&self, id: &str) -> Result<ComputerStatus, RuntimeError> {
        let dir = self.existing_dir(id)?;
        read_record(&dir, id).map(ComputerStatus::of)
    }

    /// Every computer of this home whose record reads, with what it is now,
    /// oldest first (see [`Home::status`] for why one does not).
    pub(crate) fn statuses(&self) -> Result<Vec<ComputerStatus>, RuntimeError> {
        let mut out = Vec::new();
        for (id, dir) in self.entries()? {
            // A stop removing it meanwhile.
            let Ok(record) = read_record(&dir, &id) else {
                continue;
            };
            out.push(ComputerStatus::of(record));
        }
        out.sort_by(|a, b| {
            (a.record.created_unix, &a.record.id).cmp(&(b.record.created_unix, &b.record.id))
        });
        Ok(out)
    }

    /// The snapshot of every computer recorded in this home, whatever its
    /// state (what a fleet host's cache must keep: see `crate::fleet`).
    /// Unlike [`Home::statuses`], a record that is there but does not read
    /// is an error: what its computer uses cannot be known.
    pub(crate) fn recorded_snapshots(&self) -> Result<Vec<Digest>, RuntimeError> {
        let mut out = Vec::new();
        for (id, dir) in self.entries()? {
            if !dir.is_dir() {
                continue; // no computer's
            }
            match read_record(&dir, &id) {
                Ok(record) => out.extend(record.snapshot),
                // Removed meanwhile (a stop), or no computer's directory.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The ids of orphaned computers, and removes the temporary
    /// directories of processes that died before they were done with them
    /// (a launch before it recorded, a removal half-way): at once when the
    /// process their name ends with is gone, else after a grace period (its
    /// pid may be another process's by now).
    pub(crate) fn orphans(&self) -> Result<Vec<String>, RuntimeError> {
        if let Ok(entries) = std::fs::read_dir(&self.computers) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                    continue;
                };
                let dead = rest
                    .rsplit_once('-')
                    .and_then(|(_, pid)| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !process_alive(pid));
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > TMP_GRACE);
                if dead || old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(self
            .statuses()?
            .into_iter()
            .filter(|s| s.state == ComputerState::Orphaned)
            .map(|s| s.record.id)
            .collect())
    }

    /// Kills whatever VMM still runs in computer `id`'s directory (see
    /// [`kill_processes_of`]).
    pub(crate) fn kill_vmm(&self, id: &str) -> Result<(), RuntimeError> {
        kill_processes_of(&self.existing_dir(id)?);
        Ok(())
    }

    /// Removes an orphan's directory, if it is still there.
    pub(crate) fn remove_orphan(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.existing_dir(id)?;
        match remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }

    /// Removes computer `id`'s directory (see [`remove_dir`]).
    pub(crate) fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        remove_dir(&dir).map_err(io("remove", &dir))
    }

    /// Whether any directory (a computer's, or a temporary one of a live
    /// process) still belongs to computer `id`.
    pub(crate) fn has_dir(&self, id: &str) -> bool {
        if self.dir(id).exists() {
            return true;
        }
        let tmp = format!("{TMP_PREFIX}{id}-");
        std::fs::read_dir(&self.computers).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&tmp))
        })
    }

    fn entries(&self) -> Result<Vec<(String, PathBuf)>, RuntimeError> {
        let entries = match std::fs::read_dir(&self.computers) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.computers)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &self.computers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TMP_PREFIX) {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }
}

/// Removes a computer's directory, never leaving part of it without its
/// record (which `ps` and sweeps go by): it is renamed first to a temporary
/// name of this process, which a sweep removes once this process is gone
/// if it is killed before the removal ends.
pub(crate) fn remove_dir(dir: &Path) -> std::io::Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let doomed = dir.with_file_name(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&doomed);
    std::fs::rename(dir, &doomed)?;
    std::fs::remove_dir_all(&doomed)
}

/// Kills the VMM of the VM whose run directory is `dir`: a process started
/// with an argument that is exactly `<dir>/qemu.pid` (QEMU's `-pidfile`) or
/// `<dir>/vmm` (the convention for a custom VMM) or `<dir>/netd.json` (the
/// VM's `orgo-netd`), or that starts with
/// `path=<dir>/` (Cloud Hypervisor's `--api-socket`). Waits a moment for it
/// to go.
fn kill_processes_of(dir: &Path) {
    let dir = dir.as_os_str().as_encoded_bytes();
    let path = |suffix: &str| [dir, suffix.as_bytes()].concat();
    let markers = [path("/qemu.pid"), path("/vmm"), path("/netd.json")];
    let prefixes = [[b"path=".as_slice(), dir, b"/"].concat()];
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut killed = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if crate::process::kill_if_started_with(pid, &markers, &prefixes) {
            killed.push(pid);
        }
    }
    for _ in 0..200 {
        if !killed.iter().any(|&pid| process_alive(pid)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write_record(dir: &Path, record: &ComputerRecord) -> Result<(), RuntimeError> {
    let path = dir.join(RECORD_FILE);
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(&RECORD.to_value(record)).expect("a record serializes");
    // Synced before the rename: a crash leaves the old record or the new,
    // never an empty one.
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()
    });
    written.map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

fn read_record(dir: &Path, id: &str) -> Result<ComputerRecord, RuntimeError> {
    let path = dir.join(RECORD_FILE);
    let read = match RECORD.read_file(&path) {
        Err(VersionedError::UnsupportedMajor { found, .. }) if found.major == 1 => RECORD_V1
            .read_file::<RecordV1>(&path)
            .map(RecordV1::upgrade),
        Ok(record) => Ok(Some(record)),
        Err(error) => Err(error),
    };
    let record = read.map_err(|error| match error {
        VersionedError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            RuntimeError::NotFound {
                what: format!("computer `{id}`"),
            }
        }
        VersionedError::Io { path, source } => RuntimeError::Io {
            op: "read",
            path,
            source,
        },
        source => RuntimeError::Record {
            id: id.to_owned(),
            source,
        },
    })?;
    // A record is its directory's: one naming another computer (or a
    // version-1 record naming an unknown backend) is not taken.
    record
        .filter(|r| r.id == id)
        .ok_or_else(|| RuntimeError::Invalid {
            what: format!(
                "record of computer `{id}`: it names another computer or an unknown backend"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has now.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("`true` runs");
        child.wait().expect("the child is reaped");
        child.id()
    }

    #[test]
    fn a_sweep_removes_the_temporary_directories_of_dead_processes_at_once() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let homes = Home::new(home.path());
        let computers = home.path().join("computers");
        // A removal killed half-way: the record went first.
        let dead = computers.join(format!("{TMP_PREFIX}c-000000000001-{}", dead_pid()));
        std::fs::create_dir_all(dead.join("root/etc")).expect("mkdir");
        std::fs::write(dead.join("disk.qcow2"), b"layer").expect("write");
        // This process's own, young: it may be about to rename it.
        let ours = computers.join(format!("{TMP_PREFIX}c-000000000002-{}", std::process::id()));
        std::fs::create_dir_all(&ours).expect("mkdir");
        assert_eq!(homes.orphans().expect("a sweep"), Vec::<String>::new());
        assert!(!dead.exists(), "a dead process's temporary directory goes");
        assert!(ours.exists(), "a live process's young one stays");
    }

    #[test]
    fn a_removed_directory_leaves_nothing() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let dir = home.path().join("c-000000000003");
        std::fs::create_dir_all(dir.join("root/etc")).expect("mkdir");
        std::fs::write(dir.join(RECORD_FILE), b"{}").expect("write");
        remove_dir(&dir).expect("removed");
        let left: Vec<_> = std::fs::read_dir(home.path())
            .expect("readable")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            remove_dir(&dir).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn records_read_by_version_and_only_in_their_own_directory() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let homes = Home::new(home.path());
        let digest = format!("sha256:{}", "ab".repeat(32));
        let write = |id: &str, json: String| {
            let dir = homes.dir(id);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join(RECORD_FILE), json).expect("write");
        };
        let v1 = |id: &str| {
            format!(
                r#"{{"orgo_computer":1,"id":"{id}","template":"t@1.0.0","template_digest":"{digest}","snapshot":"{digest}","backend":"qemu-tcg","cpus":1,"memory_mib":1024,"pid":null,"created_unix":1}}"#
            )
        };
        // Written by the orgo before: a running computer.
        write("c-000000000001", v1("c-000000000001"));
        let old = homes
            .status("c-000000000001")
            .expect("a version-1 record reads");
        assert_eq!(old.record.state, RecordState::Running);
        assert_eq!(
            old.record.backend,
            Some(BackendKind::Qemu(crate::Accel::Tcg))
        );
        // One naming another computer is refused, not taken for it.
        write("c-000000000002", v1("c-000000000003"));
        let other = homes
            .status("c-000000000002")
            .expect_err("another computer's record");
        assert!(
            other.to_string().contains("names another computer"),
            "{other}"
        );
        // A newer major says so, naming the computer.
        write(
            "c-000000000004",
            r#"{"orgo_computer":3,"id":"c-000000000004"}"#.into(),
        );
        let newer = homes.status("c-000000000004").expect_err("a newer record");
        assert!(matches!(newer, RuntimeError::Record { .. }), "{newer:?}");
        assert!(
            crate::ErrorChain(&newer).to_string().contains("newer orgo"),
            "{}",
            crate::ErrorChain(&newer)
        );
        // The list shows what reads.
        let listed: Vec<String> = homes
            .statuses()
            .expect("a list")
            .into_iter()
            .map(|s| s.record.id)
            .collect();
        assert_eq!(listed, ["c-000000000001"]);
    }
}
