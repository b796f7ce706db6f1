//! `apps[].health.on_fail: restart_vm`: the process that launched a
//! computer restarts it while that process runs.
//!
//! **What a restart is.** The computer is restored again from its golden
//! snapshot under the same id: its VMM is stopped (without `on_shutdown`:
//! the computer is unhealthy), a new VM is restored with the same vCPUs and
//! memory on a new disk layer over the snapshot's disk, in the same network
//! (namespace, address, netd, port forwards and learning kept), then
//! personalized as a launch is (identity, environment, secrets, runtime
//! files, `on_every_boot` and `on_resume`, services, health checks,
//! triggers, telemetry, auto-stop). It comes back in its launch state:
//! files written since the launch are lost, and its event ring starts
//! empty. Its record counts the restart ([`ComputerRecord::restarts`]).
//! A restart that fails ends the watcher; if the old VMM was stopped by
//! then, the computer is recorded as exited.
//!
//! **Who restarts it.** A launch of a template with `restart_vm` starts a
//! watcher on the runtime's tokio runtime; it holds the template and the
//! launch options (the vault's secrets included) in memory only, reads the
//! computer's events every [`FOLLOW_POLL`] and restarts the computer on
//! `restart_vm_requested`. It ends when the computer is stopped
//! ([`Computer::stop`], [`Runtime::stop`]), when the launching handle is
//! dropped (which kills the computer), or when every handle of the runtime
//! is gone. A process that exits at once after its launch (`orgo launch`,
//! [`LaunchOptions::detached`]) leaves no one to act, and the secrets are
//! never stored for another process: such a launch refuses the field.
//! Computers `orgo serve` finds again after its own restart are not
//! watched.
//!
//! [`ComputerRecord::restarts`]: crate::ComputerRecord::restarts
//! [`Computer::stop`]: crate::Computer::stop
//! [`Runtime::stop`]: crate::Runtime::stop
//! [`LaunchOptions::detached`]: crate::LaunchOptions::detached

use std::sync::Arc;

use orgo_agent_protocol::{Event, Op, Reply};
use orgo_template::{OnFail, Template};

use crate::automation::FOLLOW_POLL;
use crate::error::{RuntimeError, store_error};
use crate::guest::{QUICK, call};
use crate::home::ComputerState;
use crate::home::RecordState;
use crate::launch::{LaunchOptions, Nic, personalize, restore};
use crate::live::Live;
use crate::pool::PoolKey;
use crate::shared::Shared;
use crate::steps::BuildEvent;
use crate::vmm::BackendKind;

/// Whether `template` needs a watcher: an app's health check restarts the
/// VM.
pub(crate) fn wanted(template: &Template) -> bool {
    template
        .apps()
        .iter()
        .filter_map(|a| a.health.as_ref())
        .any(|h| matches!(h.on_fail, OnFail::RestartVm))
}

/// Starts the watcher of computer `live`, launched from `template` with
/// `options` (see the module's docs).
pub(crate) fn watch(
    shared: &Arc<Shared>,
    live: &Arc<Live>,
    template: Template,
    options: LaunchOptions,
) {
    shared.lives.insert(live);
    let weak = Arc::downgrade(shared);
    let live = Arc::clone(live);
    tokio::spawn(async move {
        // The last event read, of the current VM's agent.
        let mut after = None;
        while !live.ended() {
            tokio::time::sleep(FOLLOW_POLL).await;
            if live.ended() {
                break;
            }
            // Every handle of the runtime gone: nothing is left to serve.
            let Some(shared) = weak.upgrade() else { break };
            let agent = live.agent();
            let op = Op::ReadEvents { after, max: None };
            let events = match call(&agent, move |a| a.request(op, QUICK)).await {
                Ok(Reply::Events { events, .. }) => events,
                // Not answering: busy (looked at again), or gone (stopped
                // by another process, or stopped itself: auto-stop).
                _ => match shared.home.status(live.id()) {
                    Ok(status) if status.state == ComputerState::Running => continue,
                    _ => break,
                },
            };
            if let Some(last) = events.last() {
                after = Some(last.seq);
            }
            let asked = events
                .iter()
                .any(|e| matches!(e.event, Event::RestartVmRequested { .. }));
            if !asked {
                continue;
            }
            let _restarting = live.restarting().await;
            if live.ended() {
                break;
            }
            // The new VM's events start at the start.
            after = None;
            if restart(&shared, &live, &template, &options).await.is_err() {
                // The watcher gives up: a computer whose old VMM was
                // stopped is recorded as exited (`orgo ps` shows it, a
                // stop cleans up); otherwise it runs on, unwatched.
                break;
            }
        }
        live.end();
    });
}

/// Restarts watched computer `live` (an app's health check asked for it):
/// stops its VMM, restores a new VM from the same snapshot with the same
/// shape in the same network on a new disk layer, personalizes it as its
/// launch did, and records the restart. A failure once the old VMM is
/// stopped records it as exited.
async fn restart(
    shared: &Arc<Shared>,
    live: &Live,
    template: &Template,
    options: &LaunchOptions,
) -> Result<(), RuntimeError> {
    let id = live.id();
    let prior = shared.home.status(id)?.record;
    // What the restart needs, before the old VM goes (a failure here
    // leaves it running).
    let secrets = options
        .vault
        .resolve(template)
        .map_err(RuntimeError::Vault)?;
    let built = shared
        .builder
        .cache
        .get(&template.digest())
        .await
        .map_err(store_error)?
        .ok_or_else(|| RuntimeError::NotFound {
            what: format!("the snapshot of computer `{id}`"),
        })?;
    let kind: BackendKind = built.manifest.backend.parse()?;
    let restarted = async {
        let dir = shared.home.dir(id);
        // The old VM goes, without `on_shutdown`: through this process's
        // handle, else taken back by its id.
        let old = match live.take_vm() {
            Some(vm) => Some(vm),
            None => shared
                .builder
                .backends
                .vmm(kind)?
                .attach(id, &dir)
                .await
                .ok(),
        };
        if let Some(vm) = old {
            vm.shutdown().await?;
        }
        let disk = dir.join("disk.qcow2");
        match std::fs::remove_file(&disk) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::error::io("remove", &disk)(e));
            }
            _ => {}
        }
        let key = PoolKey {
            snapshot: built.digest,
            cpus: prior.cpus,
            memory_mib: prior.memory_mib,
        };
        let nic = Nic::Keep {
            learning: prior.egress_learn,
        };
        let warm = restore(shared, id, template, &built, key, nic, Some(&prior)).await?;
        let mut log = |_: BuildEvent| {};
        let launched = personalize(
            shared,
            warm,
            template,
            options,
            secrets,
            &mut log,
            Some(&prior),
        )
        .await?;
        live.replace(launched.agent, launched.vm);
        Ok::<_, RuntimeError>(())
    }
    .await;
    match restarted {
        Ok(()) => Ok(()),
        Err(error) => {
            let mut record = prior;
            record.state = RecordState::Running;
            record.owner = None;
            record.pid = None;
            let _ = shared.home.update(&record);
            Err(error)
        }
    }
}
