//! [`Computer`]: the handle of a running computer, and how a computer
//! stops (`on_shutdown`, power off, the VMM, the lease, the files).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgo_agent_protocol::{ExitStatus, Hook, Op, Reply, Stream};

use crate::agent::{AgentClient, AgentError, ExecOutput};
use crate::error::{RuntimeError, StepFailure, joined};
use crate::guest::{self, QUICK, call};
use crate::home::{ComputerRecord, PortMapping};
use crate::home::{ComputerState, ComputerStatus};
use crate::live::Live;
use crate::net::{Attached, EgressLearned};
use crate::shared::{Shared, release_blocking};
use crate::steps::{describe, tail};
use crate::vmm::Vm;
use crate::vmm::{AgentEndpoint, BackendKind};

/// How a streamed command ended ([`Computer::exec_streamed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecEnd {
    /// Its exit code or signal.
    pub status: ExitStatus,
    /// Whether its timeout killed it.
    pub timed_out: bool,
}

/// A running computer. Stop it ([`Computer::stop`]) or leave it running
/// ([`Computer::detach`]); dropped otherwise, it is killed and cleaned up.
///
/// A computer restarted by `on_fail: restart_vm` (see the `restart`
/// module) keeps its handles: they reach the new VM.
#[derive(Debug)]
pub struct Computer {
    shared: Arc<Shared>,
    record: ComputerRecord,
    /// Its agent channel and, when this handle launched it, its VM and
    /// host network (shared with its restart watcher, which replaces them).
    live: Arc<Live>,
    /// Launched by this handle, neither stopped nor detached: its VM dies
    /// with it.
    owns: bool,
}

impl Computer {
    /// A computer this process launched.
    pub(crate) fn launched(
        shared: Arc<Shared>,
        record: ComputerRecord,
        agent: Arc<AgentClient>,
        vm: Box<dyn Vm>,
        net: Option<Attached>,
    ) -> Computer {
        let live = Live::new(&record.id, agent, Some(vm), net);
        Computer {
            shared,
            record,
            live,
            owns: true,
        }
    }

    /// A computer another handle launched, connected to (through the
    /// parts a watched computer's handles share, if given).
    pub(crate) fn connected(
        shared: Arc<Shared>,
        record: ComputerRecord,
        live: Arc<Live>,
    ) -> Computer {
        Computer {
            shared,
            record,
            live,
            owns: false,
        }
    }

    /// What its handles share with its restart watcher.
    pub(crate) fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Its record, as it was when this handle got it (a restart changes
    /// its VMM's `pid` and `restarts`: [`Runtime::computers`](crate::Runtime::computers)
    /// reads them now).
    pub fn record(&self) -> &ComputerRecord {
        &self.record
    }

    /// Its forwarded `apps[].ports[]`: each internal port and protocol with
    /// the host address that reaches it, in the template's order.
    pub fn ports(&self) -> &[PortMapping] {
        &self.record.ports
    }

    /// What it reached since it launched, and the smallest `egress_policy`
    /// that allows exactly that; for a computer launched with
    /// [`LaunchOptions::egress_learn`](crate::LaunchOptions::egress_learn).
    pub async fn egress_learned(&self) -> Result<EgressLearned, RuntimeError> {
        egress_learned(&self.shared, self.id()).await
    }

    /// Its directory under the home.
    pub(crate) fn dir(&self) -> std::path::PathBuf {
        self.shared.home.dir(&self.record.id)
    }

    /// Its agent's channel (the desktop's and the automation's calls use
    /// it): the current VM's.
    pub(crate) fn agent(&self) -> Arc<AgentClient> {
        self.live.agent()
    }

    /// Runs a command and collects its output.
    pub async fn exec(
        &self,
        exec: orgo_agent_protocol::Exec,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        call(&self.agent(), move |a| a.exec(exec, timeout)).await
    }

    /// Runs a command, passing its output to `on_output` as it comes.
    pub async fn exec_streaming(
        &self,
        exec: orgo_agent_protocol::Exec,
        timeout: Duration,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExitStatus, RuntimeError> {
        Ok(self.exec_streamed(exec, timeout, on_output).await?.status)
    }

    /// As [`Computer::exec_streaming`], and whether the command's timeout
    /// killed it.
    pub async fn exec_streamed(
        &self,
        exec: orgo_agent_protocol::Exec,
        timeout: Duration,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExecEnd, RuntimeError> {
        let agent = self.agent();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let job = tokio::task::spawn_blocking(move || {
            agent.request_streaming(Op::Exec(exec), timeout, |stream, data| {
                let _ = tx.send((stream, data.to_vec()));
            })
        });
        while let Some((stream, data)) = rx.recv().await {
            on_output(stream, &data);
        }
        match joined("agent", job).await?.map_err(RuntimeError::Agent)? {
            Reply::Exit { status, timed_out } => Ok(ExecEnd { status, timed_out }),
            other => Err(RuntimeError::Agent(AgentError::Unexpected {
                op: "exec",
                reply: format!("{other:?}"),
            })),
        }
    }

    /// Writes a file in the guest (atomically).
    pub async fn write_file(
        &self,
        path: &str,
        content: Vec<u8>,
        mode: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let path = path.to_owned();
        call(&self.agent(), move |a| {
            a.write_file(&path, &content, mode, None, None, QUICK)
        })
        .await
    }

    /// Reads a file from the guest.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let path = path.to_owned();
        call(&self.agent(), move |a| {
            a.read_file(&path, QUICK).map(|(bytes, _)| bytes)
        })
        .await
    }

    /// Stops it (see [`Runtime::stop`](crate::Runtime::stop)); returns what `on_shutdown` printed.
    pub async fn stop(mut self) -> Result<Option<String>, RuntimeError> {
        // Its watcher ends first (after a restart under way): nothing
        // restarts a computer being stopped.
        self.live.settle().await;
        let vm = if self.owns { self.live.take_vm() } else { None };
        let Some(vm) = vm else {
            // Connected, not launched here: close our channel, so the stop
            // can open its own (or use the watched computer's).
            self.owns = false;
            let (shared, id) = (Arc::clone(&self.shared), self.record.id.clone());
            drop(self);
            return stop(&shared, &id).await;
        };
        // Ours: through our own handle and channel.
        self.owns = false;
        let hook = graceful_stop(&self.agent(), self.record.on_shutdown.clone()).await;
        vm.shutdown().await?;
        if let Some(net) = self.live.take_net() {
            net.teardown().await;
        }
        self.shared.cleanup(&self.record.id).await?;
        hook
    }

    /// Leaves it running after this handle and this process are gone.
    pub fn detach(mut self) {
        if self.owns {
            self.owns = false;
            self.live.detach();
        }
    }
}

impl Drop for Computer {
    /// A computer launched here and neither stopped nor detached dies with
    /// its handle: its VM is killed (no `on_shutdown`), its lease and files
    /// go, its restart watcher ends. A connected handle leaves the
    /// computer as it was.
    fn drop(&mut self) {
        if !self.owns {
            return;
        }
        self.live.end();
        if let Some(vm) = self.live.take_vm() {
            drop(vm);
            // Its namespace and netd go (blocking, in its drop).
            drop(self.live.take_net());
            let id = self.record.id.clone();
            let shared = &self.shared;
            release_blocking(&shared.builder.cache, vec![(shared.home.dir(&id), id)]);
        }
    }
}

/// Runs `on_shutdown`, then asks the guest to stop its services and power
/// off (also when the hook failed: the failure is returned after). Returns
/// the hook's output.
pub(crate) async fn graceful_stop(
    agent: &Arc<AgentClient>,
    hook: Option<String>,
) -> Result<Option<String>, RuntimeError> {
    let ran = match hook {
        Some(script) => Some(
            call(agent, move |a| {
                a.run_hook(
                    Hook {
                        name: "on_shutdown".into(),
                        script,
                        timeout_ms: None,
                        env: BTreeMap::new(),
                        cwd: None,
                        user: None,
                    },
                    Duration::from_secs(660),
                    |_, _| {},
                )
            })
            .await,
        ),
        None => None,
    };
    // The guest powers off: the reply may or may not make it out first.
    let _ = call(agent, |a| a.shutdown(QUICK)).await;
    match ran {
        None => Ok(None),
        Some(Ok(out)) if out.status.success() => {
            Ok(Some(String::from_utf8_lossy(&out.output).into_owned()))
        }
        Some(Ok(out)) => Err(RuntimeError::Build(StepFailure {
            field: "hooks.on_shutdown".into(),
            reason: describe(&out.status, out.timed_out),
            output: tail(&out.output),
        })),
        Some(Err(e)) => Err(e),
    }
}

/// Connects to running computer `id` (see
/// [`Runtime::connect`](crate::Runtime::connect)).
pub(crate) async fn connect(shared: &Arc<Shared>, id: &str) -> Result<Computer, RuntimeError> {
    let status = status_of(shared, id)?;
    let backend = match (status.state, status.record.backend) {
        (ComputerState::Running, Some(backend)) => backend,
        (ComputerState::Suspended, _) => {
            return Err(RuntimeError::Suspended { id: id.to_owned() });
        }
        (ComputerState::Exited, _) => {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "running computer `{id}` (it has exited; `orgo stop {id}` cleans up)"
                ),
            });
        }
        (state, _) => {
            return Err(RuntimeError::NotFound {
                what: format!("running computer `{id}` (it is {})", state.as_str()),
            });
        }
    };
    // A computer this process watches: its watcher's channel (QEMU serves
    // one at a time), which follows its restarts.
    if let Some(live) = shared.lives.get(id) {
        return Ok(Computer::connected(Arc::clone(shared), status.record, live));
    }
    let endpoint = agent_endpoint(shared, id, backend).await?;
    let agent = guest::connect(endpoint, QUICK).await?;
    let live = Live::new(id, agent, None, None);
    Ok(Computer::connected(Arc::clone(shared), status.record, live))
}

/// Stops computer `id` (see [`Runtime::stop`](crate::Runtime::stop)).
pub(crate) async fn stop(shared: &Arc<Shared>, id: &str) -> Result<Option<String>, RuntimeError> {
    // Watched here: its watcher ends first (after a restart under way), and
    // its channel and handles are used (QEMU serves one channel at a time).
    let watched = shared.lives.get(id);
    if let Some(live) = &watched {
        live.settle().await;
    }
    let status = status_of(shared, id)?;
    match status.state {
        ComputerState::Running => {}
        // A suspended one is removed as it is: no VMM runs (`on_shutdown`
        // does not run either).
        ComputerState::Exited | ComputerState::Suspended => {
            shared.cleanup(id).await?;
            return Ok(None);
        }
        ComputerState::Orphaned => {
            remove_orphan(shared, id).await?;
            return Ok(None);
        }
        state @ (ComputerState::Launching | ComputerState::Parked) => {
            return Err(RuntimeError::Invalid {
                what: format!(
                    "stop of computer `{id}`: it is {} by another process",
                    match state {
                        ComputerState::Parked => "parked",
                        _ => "being launched",
                    }
                ),
            });
        }
    }
    let record = status.record;
    let backend = record.backend.ok_or_else(|| RuntimeError::Invalid {
        what: format!("record of computer `{id}`: running, and it names no backend"),
    })?;
    let dir = shared.home.dir(id);
    let alive = || record.pid.is_some_and(crate::process::process_alive);
    let mut hook = Ok(None);
    let vm = match watched.as_ref().and_then(|live| live.take_vm()) {
        Some(vm) => Some(vm),
        None => match shared.builder.backends.vmm(backend)?.attach(id, &dir).await {
            Ok(vm) => Some(vm),
            // It exited meanwhile: only the cleanup is left to do.
            Err(_) if !alive() => None,
            Err(error) => return Err(error),
        },
    };
    if let Some(vm) = vm {
        // An agent that does not answer does not keep the VM up.
        let agent = match &watched {
            Some(live) => Ok(live.agent()),
            None => guest::connect(vm.agent_endpoint(), QUICK).await,
        };
        if let Ok(agent) = agent {
            hook = graceful_stop(&agent, record.on_shutdown.clone()).await;
        }
        vm.shutdown().await?;
    }
    if let Some(net) = watched.as_ref().and_then(|live| live.take_net()) {
        net.teardown().await;
    }
    shared.cleanup(id).await?;
    hook
}

/// Removes orphan `id`: kills its VMM, releases its lease, then removes
/// its files (the record last: a sweep killed half-way leaves something
/// the next sweep finds).
pub(crate) async fn remove_orphan(shared: &Shared, id: &str) -> Result<(), RuntimeError> {
    shared.home.kill_vmm(id)?;
    shared.net.teardown(id, &shared.home.dir(id)).await;
    shared
        .builder
        .cache
        .release(id)
        .await
        .map_err(crate::error::store_error)?;
    shared.home.remove_orphan(id)
}

/// See [`Runtime::egress_learned`](crate::Runtime::egress_learned).
pub(crate) async fn egress_learned(
    shared: &Shared,
    id: &str,
) -> Result<EgressLearned, RuntimeError> {
    let status = status_of(shared, id)?;
    if !matches!(
        status.state,
        ComputerState::Running | ComputerState::Suspended
    ) {
        return Err(RuntimeError::NotFound {
            what: format!("running computer `{id}` (it is {})", status.state.as_str()),
        });
    }
    if !status.record.egress_learn {
        return Err(RuntimeError::Invalid {
            what: format!(
                "egress of computer `{id}`: it was not launched to learn it (`orgo launch --egress-learn`, `LaunchOptions::egress_learn`)"
            ),
        });
    }
    crate::net::learned(id, &shared.home.dir(id)).await
}

/// Computer `id` as it is now.
fn status_of(shared: &Shared, id: &str) -> Result<ComputerStatus, RuntimeError> {
    shared.home.status(id)
}

/// Where computer `id`'s agent listens: QEMU's is a socket in its
/// directory; another backend's is asked of the VMM.
async fn agent_endpoint(
    shared: &Shared,
    id: &str,
    backend: BackendKind,
) -> Result<AgentEndpoint, RuntimeError> {
    let dir = shared.home.dir(id);
    if let BackendKind::Qemu(_) = backend {
        return Ok(AgentEndpoint::Serial(dir.join("agent.sock")));
    }
    let vm = shared
        .builder
        .backends
        .vmm(backend)?
        .attach(id, &dir)
        .await?;
    Ok(vm.agent_endpoint())
}
