//! The computers of this server: who owns each, and the one agent
//! connection the server holds to each (QEMU serves one at a time; the
//! agent client multiplexes requests over it).
//!
//! A computer launched over HTTP is detached at once (it runs on its own,
//! as the CLI's do) and owned by the launching key's namespace, recorded
//! in `<home>/server/computers/<id>.json`. A server that starts again finds
//! its computers from these files and the runtime's records, and connects
//! to each when it is first used; the files of computers that are gone are
//! removed. Computers of the home that the server did not launch (the
//! CLI's) are not served.
//!
//! While the server runs, the runtime restarts the computers it launched
//! whose health checks ask for it (`on_fail: restart_vm`; their handles
//! here follow). Computers found again after the server's own restart are
//! not restarted: the launch's secrets were never stored, so nothing can
//! personalize them again; their `restart_vm_requested` events stay
//! unanswered (`orgo events` shows them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orgo_runtime::{Computer, ComputerState, Runtime, RuntimeError};
use orgo_snapshot::{Version, VersionedFormat};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Code};

const OWNER: VersionedFormat =
    VersionedFormat::new("orgo_server_computer", Version::new(1, 0), 64 * 1024);

/// Who owns a computer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) id: String,
    pub(crate) namespace: String,
    /// The ref it was launched from (`ns/name@version`).
    pub(crate) template_ref: String,
}

#[derive(Debug)]
pub(crate) struct Computers {
    dir: PathBuf,
    owners: Mutex<HashMap<String, Owner>>,
    /// Launches under way, per namespace.
    launching: Mutex<HashMap<String, usize>>,
    handles: tokio::sync::Mutex<HashMap<String, Arc<Computer>>>,
    /// The secrets each computer this process launched was given, in
    /// memory only (never written): a checkpoint is scanned for them.
    secrets: Mutex<HashMap<String, BTreeMap<String, String>>>,
    limit: usize,
}

/// A place in a namespace's quota, held while a launch runs.
pub(crate) struct Slot<'a> {
    computers: &'a Computers,
    namespace: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut launching = self.computers.lock_launching();
        if let Some(n) = launching.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Computers {
    pub(crate) fn new(home: &Path, limit: usize) -> Computers {
        Computers {
            dir: home.join("server/computers"),
            owners: Mutex::new(HashMap::new()),
            launching: Mutex::new(HashMap::new()),
            handles: tokio::sync::Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            limit,
        }
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_launching(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.launching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// At start: the owners recorded, less the computers that are gone.
    pub(crate) fn recover(&self, runtime: &Runtime) -> Result<usize, RuntimeError> {
        let live: HashMap<String, ComputerState> = runtime
            .computers()?
            .into_iter()
            .map(|c| (c.record.id, c.state))
            .collect();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(RuntimeError::Io {
                    op: "read",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut owners = self.lock_owners();
        for entry in entries.flatten() {
            let path = entry.path();
            let owner = match OWNER.read_file::<Owner>(&path) {
                Ok(owner) if path.extension().is_some_and(|x| x == "json") => owner,
                _ => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            match live.get(&owner.id) {
                Some(ComputerState::Running | ComputerState::Exited | ComputerState::Suspended) => {
                    owners.insert(owner.id.clone(), owner);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(owners.len())
    }

    /// Reserves a place for a launch in `namespace`, or says when to retry.
    pub(crate) fn reserve(&self, namespace: &str) -> Result<Slot<'_>, ApiError> {
        let owned = self
            .lock_owners()
            .values()
            .filter(|o| o.namespace == namespace)
            .count();
        let mut launching = self.lock_launching();
        let pending = launching.entry(namespace.to_owned()).or_default();
        if owned + *pending >= self.limit {
            return Err(ApiError::new(
                Code::TooManyComputers,
                format!(
                    "namespace `{namespace}` has {} computers, the most this server allows",
                    owned + *pending
                ),
            )
            .retry_after(10));
        }
        *pending += 1;
        Ok(Slot {
            computers: self,
            namespace: namespace.to_owned(),
        })
    }

    /// Records that `owner.namespace` owns `owner.id`.
    pub(crate) fn own(&self, owner: Owner) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&owner.id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&OWNER.to_value(&owner)).expect("an owner serializes");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        self.lock_owners().insert(owner.id.clone(), owner);
        Ok(())
    }

    /// Keeps the secrets `id` was launched with, in memory.
    pub(crate) fn keep_secrets(&self, id: &str, secrets: BTreeMap<String, String>) {
        self.lock_secrets().insert(id.to_owned(), secrets);
    }

    /// The secrets `id` was launched with, if this process launched it.
    pub(crate) fn secrets(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.lock_secrets().get(id).cloned()
    }

    fn lock_secrets(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, String>>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `id` (stopped).
    pub(crate) async fn forget(&self, id: &str) {
        self.lock_secrets().remove(id);
        self.handles.lock().await.remove(id);
        self.lock_owners().remove(id);
        let _ = std::fs::remove_file(self.path(id));
    }

    /// The owner of `id` if `namespace` owns it (else it does not exist for
    /// that namespace: 404).
    pub(crate) fn owner(&self, namespace: &str, id: &str) -> Result<Owner, ApiError> {
        self.lock_owners()
            .get(id)
            .filter(|o| o.namespace == namespace)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("computer `{id}`")))
    }

    /// The computers `namespace` owns.
    pub(crate) fn owned(&self, namespace: &str) -> Vec<Owner> {
        let mut owned: Vec<Owner> = self
            .lock_owners()
            .values()
            .filter(|o| o.namespace == namespace)
            .cloned()
            .collect();
        owned.sort_by(|a, b| a.id.cmp(&b.id));
        owned
    }

    /// A handle of `id` (connected on first use).
    pub(crate) async fn handle(
        &self,
        runtime: &Runtime,
        id: &str,
    ) -> Result<Arc<Computer>, ApiError> {
        let mut handles = self.handles.lock().await;
        if let Some(handle) = handles.get(id) {
            return Ok(Arc::clone(handle));
        }
        let computer = Arc::new(runtime.connect(id).await?);
        handles.insert(id.to_owned(), Arc::clone(&computer));
        Ok(computer)
    }

    /// Drops the handle of `id` (its agent connection failed, or it stops).
    pub(crate) async fn disconnect(&self, id: &str) {
        self.handles.lock().await.remove(id);
    }
}
