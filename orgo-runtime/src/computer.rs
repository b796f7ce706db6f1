//! [`Computer`]: the handle of a running computer, and how a computer
//! stops (`on_shutdown`, power off, the VMM, the lease, the files).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgo_agent_protocol::{ExitStatus, Hook, Op, Reply, Stream};

use crate::agent::{AgentClient, AgentError, ExecOutput};
use crate::error::{RuntimeError, StepFailure, joined};
use crate::guest::{QUICK, call};
use crate::home::ComputerRecord;
use crate::runtime::Runtime;
use crate::steps::{describe, tail};
use crate::vmm::Vm;

/// A running computer. Stop it ([`Computer::stop`]) or leave it running
/// ([`Computer::detach`]); dropped otherwise, it is killed and cleaned up.
#[derive(Debug)]
pub struct Computer {
    runtime: Runtime,
    record: ComputerRecord,
    agent: Arc<AgentClient>,
    /// The VM's handle, when this process launched it.
    vm: Option<Box<dyn Vm>>,
}

impl Computer {
    /// A computer this process launched.
    pub(crate) fn launched(
        runtime: Runtime,
        record: ComputerRecord,
        agent: Arc<AgentClient>,
        vm: Box<dyn Vm>,
    ) -> Computer {
        Computer {
            runtime,
            record,
            agent,
            vm: Some(vm),
        }
    }

    /// A computer another handle launched, connected to.
    pub(crate) fn connected(
        runtime: Runtime,
        record: ComputerRecord,
        agent: Arc<AgentClient>,
    ) -> Computer {
        Computer {
            runtime,
            record,
            agent,
            vm: None,
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Its record.
    pub fn record(&self) -> &ComputerRecord {
        &self.record
    }

    /// Runs a command and collects its output.
    pub async fn exec(
        &self,
        exec: orgo_agent_protocol::Exec,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        call(&self.agent, move |a| a.exec(exec, timeout)).await
    }

    /// Runs a command, passing its output to `on_output` as it comes.
    pub async fn exec_streaming(
        &self,
        exec: orgo_agent_protocol::Exec,
        timeout: Duration,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExitStatus, RuntimeError> {
        let agent = Arc::clone(&self.agent);
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
            Reply::Exit { status, .. } => Ok(status),
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
        call(&self.agent, move |a| {
            a.write_file(&path, &content, mode, None, None, QUICK)
        })
        .await
    }

    /// Reads a file from the guest.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let path = path.to_owned();
        call(&self.agent, move |a| {
            a.read_file(&path, QUICK).map(|(bytes, _)| bytes)
        })
        .await
    }

    /// Stops it (see [`Runtime::stop`]); returns what `on_shutdown` printed.
    pub async fn stop(mut self) -> Result<Option<String>, RuntimeError> {
        let Some(vm) = self.vm.take() else {
            // Connected, not launched here: close our channel, so the stop
            // can open its own.
            let (runtime, id) = (self.runtime.clone(), self.record.id.clone());
            drop(self);
            return runtime.stop(&id).await;
        };
        // Ours: through our own handle and channel.
        let hook = graceful_stop(&self.agent, self.record.on_shutdown.clone()).await;
        vm.shutdown().await?;
        self.runtime.cleanup(&self.record.id).await?;
        hook
    }

    /// Leaves it running after this handle and this process are gone.
    pub fn detach(mut self) {
        if let Some(vm) = self.vm.take() {
            vm.detach();
        }
    }
}

impl Drop for Computer {
    /// A computer launched here and neither stopped nor detached dies with
    /// its handle: its VM is killed (no `on_shutdown`), its lease and files
    /// go. A connected handle leaves the computer as it was.
    fn drop(&mut self) {
        if let Some(vm) = self.vm.take() {
            drop(vm);
            let id = self.record.id.clone();
            let inner = self.runtime.inner();
            crate::runtime::release_blocking(&inner.builder.cache, vec![(inner.home.dir(&id), id)]);
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
