//! Checkpoints and forks: a running computer captured into a new snapshot,
//! and computers launched from it.
//!
//! **Checkpoint.** The VM pauses; its whole state, memory included, is
//! written to a file, and its disk layer (the copy-on-write file over its
//! snapshot's disk) is copied; the VM runs on. What was captured is
//! scanned for secrets ([`crate::SecretScan`]): those of the vault file,
//! of the `ORGO_SECRET_*` environment, and the ones the caller gave the
//! computer. A secret found refuses the checkpoint, naming it and where,
//! and nothing is stored. Otherwise the checkpoint is stored
//! ([`orgo_snapshot::Checkpoints`]): the new state and the disk layer as
//! its own blobs, the parent's memory file and metadata reused, its
//! provenance recorded (the parent snapshot and the computer).
//!
//! **Launch from it.** As from a template's snapshot: a restore on a new
//! disk layer over the checkpoint's, then the launch's personalization (an
//! identity of its own: entropy, clock, machine-id, hostname; the
//! environment and secrets; `on_every_boot` and `on_resume`), with the
//! hardware floor of the parent snapshot. A fork is one checkpoint and
//! `count` such launches.
//!
//! **Killed half-way** (`kill -9` while it stands): the next open of the
//! runtime runs it again and nothing is stored (`crate::pause`).
//!
//! A launch from a checkpoint of a desktop starts the desktop's window
//! manager, wallpaper and autostart entries again, as it does the
//! template's services; other windows stay as they were
//! (`tests/desktop_fork_e2e.rs`).
//!
//! Limits: QEMU only; not a computer launched with more vCPUs or memory
//! than its snapshot (hot-added), nor one watched for `restart_vm` by this
//! process; a launch handle of the computer held by this process must be
//! detached first (QEMU serves one control connection). The secrets given
//! to a launch directly are known only to the caller that gives them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_agent_protocol::Exec;
use orgo_snapshot::{BlobService as _, Checkpoints};
use orgo_template::{Digest, Template};

use crate::error::{RuntimeError, store_error};
use crate::guest::{self, QUICK, call};
use crate::home::ComputerState;
use crate::shared::Shared;
use crate::vault::Vault;

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its snapshot manifest's digest: what
    /// [`Runtime::launch_checkpoint`](crate::Runtime::launch_checkpoint)
    /// takes.
    pub digest: Digest,
    /// How long the computer's vCPUs stood while it was captured.
    pub paused: Duration,
    /// The bytes it added to the store (its state and disk layer; the rest
    /// is its parent's).
    pub stored_bytes: u64,
}

/// Checkpoints running computer `id` (see the module's docs); `secrets`
/// are looked for beside the vault's and the environment's.
pub(crate) async fn checkpoint(
    shared: &Arc<Shared>,
    id: &str,
    secrets: &Vault,
) -> Result<Checkpoint, RuntimeError> {
    if shared.builder.fleet.is_some() {
        // A checkpoint's disk layer names the computer's golden disk by a
        // path of this host; stored in the fleet it would not restore
        // elsewhere. Refused rather than stored half-shared.
        return Err(RuntimeError::Unsupported {
            backend: "a runtime in a fleet",
            what: format!(
                "checkpoint computer `{id}` yet: checkpoints are not shared through a fleet's \
                 store (run without `ORGO_STORE_URL` to checkpoint on this host)"
            ),
        });
    }
    let status = shared.home.status(id)?;
    if status.state != ComputerState::Running {
        return Err(RuntimeError::Invalid {
            what: format!(
                "checkpoint of computer `{id}`: it is {}",
                status.state.as_str()
            ),
        });
    }
    if shared.lives.get(id).is_some() {
        return Err(RuntimeError::Invalid {
            what: format!(
                "checkpoint of computer `{id}`: this process watches it for `restart_vm`"
            ),
        });
    }
    let record = status.record;
    let (kind, parent) = crate::suspend::snapshot_of(shared, &record).await?;
    crate::suspend::not_grown(&record, &parent, kind, "checkpoint")?;
    let parent_digest = record.snapshot.expect("snapshot_of checked it");
    let template = kept_template(shared, id, &record.template_digest)?;
    let dir = shared.home.dir(id);
    let store = &shared.builder.store;
    let scratch = store.scratch_dir().await.map_err(store_error)?;
    let captured = async {
        let vm = shared.builder.backends.vmm(kind)?.attach(id, &dir).await?;
        // What the guest has buffered reaches the disk layer first.
        if let Ok(agent) = guest::connect(vm.agent_endpoint(), QUICK).await {
            let _ = call(&agent, |a| a.exec(Exec::shell("sync"), QUICK)).await;
        }
        // Held while it stands: a process killed meanwhile leaves it
        // running again at the next open (crate::pause).
        crate::pause::hold(shared, &mut record.clone())?;
        let paused = Instant::now();
        if let Err(error) = vm.pause().await {
            crate::pause::release(shared, id)?;
            return Err(error);
        }
        let copied = async {
            let state = vm.save(&scratch.join("state")).await?;
            let disk = scratch.join("disk.qcow2");
            copy_layer(&dir.join("disk.qcow2"), &disk).await?;
            Ok::<_, RuntimeError>(BTreeMap::from([
                ("state".to_owned(), state),
                ("disk".to_owned(), disk),
            ]))
        }
        .await;
        let resumed = vm.resume().await;
        let paused = paused.elapsed();
        vm.detach();
        // Still held when it could not run again: the next open retries.
        resumed?;
        crate::pause::release(shared, id)?;
        let files = copied?;
        Ok::<_, RuntimeError>((files, paused))
    }
    .await;
    let stored = async {
        let (files, paused) = captured?;
        scan(shared, &files, secrets).await?;
        let template_json = template.canonical_json().into_bytes();
        let _ = store
            .put(&mut template_json.as_slice())
            .await
            .map_err(store_error)?;
        let checkpoints = Checkpoints::new(Arc::clone(&shared.store));
        let (digest, manifest) = checkpoints
            .put(&parent_digest, &parent, id, &files)
            .await
            .map_err(store_error)?;
        let stored_bytes = ["state", "disk"]
            .iter()
            .filter_map(|role| manifest.blobs.get(*role))
            .map(|b| b.size)
            .sum();
        Ok(Checkpoint {
            digest,
            paused,
            stored_bytes,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    stored
}

/// The template computer `id` was launched from, as kept beside its
/// record (it must be the one the record names).
pub(crate) fn kept_template(
    shared: &Shared,
    id: &str,
    digest: &Digest,
) -> Result<Template, RuntimeError> {
    let path = shared.home.dir(id).join(crate::streams::TEMPLATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(crate::error::io("read", &path))?;
    let template = Template::from_json(&text).map_err(|e| RuntimeError::Invalid {
        what: format!("template kept at `{}`: {e}", path.display()),
    })?;
    if template.digest() != *digest {
        return Err(RuntimeError::Invalid {
            what: format!(
                "template kept at `{}`: it is not the computer's (`{digest}`)",
                path.display()
            ),
        });
    }
    Ok(template)
}

/// Copies a disk layer (sparse, by reflink where the filesystem can).
async fn copy_layer(from: &std::path::Path, to: &std::path::Path) -> Result<(), RuntimeError> {
    let out = tokio::process::Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(from)
        .arg(to)
        .output()
        .await
        .map_err(crate::error::io("run `cp` on", from))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Invalid {
            what: format!(
                "copy of the disk layer `{}`: {}",
                from.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Fails if a captured file holds a secret: of the vault file, of the
/// environment, or of `given`.
async fn scan(
    shared: &Shared,
    files: &BTreeMap<String, std::path::PathBuf>,
    given: &Vault,
) -> Result<(), RuntimeError> {
    let vault_file = shared.builder.store.root().join(crate::VAULT_FILE);
    let vault = Vault::load_here(&vault_file).map_err(RuntimeError::Vault)?;
    let scan = crate::SecretScan::new(vault.entries().chain(given.entries()));
    crate::snapshot_scan::refuse_secrets(scan, files).await
}

/// The template of checkpoint `digest` (stored with it).
pub(crate) async fn template_of(
    shared: &Shared,
    digest: &Digest,
) -> Result<Template, RuntimeError> {
    use tokio::io::AsyncReadExt as _;
    let store = Arc::clone(&shared.store);
    let manifest = Checkpoints::new(Arc::clone(&store))
        .get(digest)
        .await
        .map_err(store_error)?
        .ok_or_else(|| RuntimeError::NotFound {
            what: format!("checkpoint `{digest}`"),
        })?;
    let missing = || RuntimeError::NotFound {
        what: format!(
            "the template `{}` of checkpoint `{digest}`",
            manifest.template
        ),
    };
    let reader = store
        .open(&manifest.template)
        .await
        .map_err(store_error)?
        .ok_or_else(missing)?;
    let mut text = String::new();
    reader
        .take(1 << 20)
        .read_to_string(&mut text)
        .await
        .map_err(|_| missing())?;
    Template::from_json(&text).map_err(|e| RuntimeError::Invalid {
        what: format!("the template of checkpoint `{digest}`: {e}"),
    })
}
