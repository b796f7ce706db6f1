//! Running a template's steps ([`crate::plan`]) through the guest agent,
//! with their output streamed to a [`BuildLog`]; every failure names the
//! step's field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgo_agent_protocol::{Exec, ExitStatus, Hook, Op, Reply, Stream};

use crate::agent::{AgentClient, AgentError};
use crate::error::{RuntimeError, StepFailure, joined};
use crate::guest::{QUICK, call};
use crate::plan::{self, Action, Content, FileStep, Step};

/// How long one build step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// How much of a step's output an error keeps (its end).
const MAX_TAIL: usize = 64 * 1024;

/// Something a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildEvent {
    /// What the build is doing (`building the base image`, `booting`, ...).
    Status(String),
    /// A step of the template started.
    Step {
        /// Its field (`build.apt`, `files[0]`, `hooks.on_first_boot`).
        field: String,
        /// Its position, from 1.
        index: usize,
        /// How many steps there are.
        total: usize,
    },
    /// Output of the running step.
    Output {
        /// stdout or stderr.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Where build events go.
pub type BuildLog<'a> = &'a mut (dyn FnMut(BuildEvent) + Send);

/// Runs one step; every failure, the agent's included, names the step's
/// field.
pub(crate) async fn run_step(
    agent: &Arc<AgentClient>,
    step: &Step,
    secrets: Option<&BTreeMap<String, String>>,
    log: BuildLog<'_>,
) -> Result<(), RuntimeError> {
    match &step.action {
        Action::Shell(script) => {
            let exec = Exec {
                timeout_ms: Some(STEP_TIMEOUT.as_millis() as u64),
                ..Exec::shell(format!("set -e\n{script}"))
            };
            let ran = stream_op(agent, Op::Exec(exec), log)
                .await
                .map_err(|e| step_error(step, "failed in the guest agent", e))?;
            ran.check(step)
        }
        Action::Hook { name, script } => {
            let hook = Hook {
                name: (*name).to_owned(),
                script: script.clone(),
                timeout_ms: None,
                env: BTreeMap::new(),
                cwd: None,
                user: None,
            };
            let ran = stream_op(agent, Op::RunHook(hook), log)
                .await
                .map_err(|e| step_error(step, "failed in the guest agent", e))?;
            ran.check(step)
        }
        Action::File(file) => write_file_step(agent, step, file, secrets, log).await,
        Action::Service(spec) => {
            let spec = spec.clone();
            call(agent, move |a| a.start_service(spec, QUICK))
                .await
                .map_err(|e| step_error(step, "did not start", e))
        }
        Action::Desktop(spec) => {
            let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(60_000)) + QUICK;
            let op = Op::StartDesktop(spec.clone());
            match call(agent, move |a| a.request(op, timeout)).await {
                Ok(Reply::Done) => Ok(()),
                Ok(other) => Err(failed(step, format!("unexpected reply {other:?}"), b"")),
                Err(e) => Err(step_error(step, "did not start", e)),
            }
        }
        Action::Terminals(sessions) => {
            let sessions = sessions.clone();
            call(agent, move |a| a.create_terminals(sessions, QUICK))
                .await
                .map_err(|e| step_error(step, "were not created", e))
        }
    }
}

async fn write_file_step(
    agent: &Arc<AgentClient>,
    step: &Step,
    file: &FileStep,
    secrets: Option<&BTreeMap<String, String>>,
    log: BuildLog<'_>,
) -> Result<(), RuntimeError> {
    let content = match &file.source {
        Content::Inline(text) => text.clone().into_bytes(),
        Content::HostFile(path) => std::fs::read(path).map_err(|source| {
            step_error(
                step,
                "cannot be read on the host",
                RuntimeError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                },
            )
        })?,
        Content::Secret(name) => match secrets.and_then(|s| s.get(name)) {
            Some(value) => value.clone().into_bytes(),
            None => return Err(failed(step, format!("secret `{name}` has no value"), b"")),
        },
        Content::Http(_) | Content::Git(_) => {
            let script = plan::fetch_script(file).expect("http and git sources have a script");
            let ran = stream_op(agent, Op::Exec(Exec::shell(script)), log)
                .await
                .map_err(|e| step_error(step, "failed in the guest agent", e))?;
            return ran.check(step);
        }
        Content::Unsupported(url) => {
            return Err(failed(
                step,
                format!(
                    "`{url}` cannot be fetched by the local runtime (http, https, git, file and secret can)"
                ),
                b"",
            ));
        }
    };
    let (path, mode, owner, group) = (
        file.path.clone(),
        file.mode,
        file.owner.clone(),
        file.group.clone(),
    );
    call(agent, move |a| {
        a.write_file(
            &path,
            &content,
            mode,
            owner.as_deref(),
            group.as_deref(),
            QUICK,
        )
    })
    .await
    .map_err(|e| step_error(step, &format!("cannot write `{}`", file.path), e))
}

/// `step` ran and failed, for `reason`, after printing `output`.
fn failed(step: &Step, reason: String, output: &[u8]) -> RuntimeError {
    RuntimeError::Build(StepFailure {
        field: step.field.clone(),
        reason,
        output: tail(output),
    })
}

/// `step` could not be carried out, because of `source`.
fn step_error(step: &Step, what: &str, source: RuntimeError) -> RuntimeError {
    RuntimeError::Step {
        field: step.field.clone(),
        what: what.to_owned(),
        source: Box::new(source),
    }
}

/// How a streamed exec or hook ended, and its output (the tail).
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) timed_out: bool,
    pub(crate) output: Vec<u8>,
}

impl Ran {
    /// `Ok` if it succeeded; else the step's failure with its output.
    fn check(&self, step: &Step) -> Result<(), RuntimeError> {
        if self.status.success() && !self.timed_out {
            return Ok(());
        }
        Err(failed(
            step,
            describe(&self.status, self.timed_out),
            &self.output,
        ))
    }
}

/// Sends an exec or a hook, streaming its output to `log` as it comes.
/// The host waits a minute longer than the guest's own timeout, so the
/// guest's answer (killed, timed out) is what is reported.
async fn stream_op(
    agent: &Arc<AgentClient>,
    op: Op,
    log: BuildLog<'_>,
) -> Result<Ran, RuntimeError> {
    let agent = Arc::clone(agent);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wait = STEP_TIMEOUT + Duration::from_secs(60);
    let job = tokio::task::spawn_blocking(move || {
        agent.request_streaming(op, wait, |stream, data| {
            let _ = tx.send((stream, data.to_vec()));
        })
    });
    let mut output = Vec::new();
    while let Some((stream, data)) = rx.recv().await {
        output.extend_from_slice(&data);
        if output.len() > 2 * MAX_TAIL {
            output.drain(..output.len() - MAX_TAIL);
        }
        log(BuildEvent::Output { stream, data });
    }
    match joined("agent", job).await?.map_err(RuntimeError::Agent)? {
        Reply::Exit { status, timed_out } => Ok(Ran {
            status,
            timed_out,
            output,
        }),
        // The hook's reply repeats its output, which was streamed already.
        Reply::Hook {
            status, timed_out, ..
        } => Ok(Ran {
            status,
            timed_out,
            output,
        }),
        other => Err(RuntimeError::Agent(AgentError::Unexpected {
            op: "exec",
            reply: format!("{other:?}"),
        })),
    }
}

/// The end of a step's output, as text.
pub(crate) fn tail(output: &[u8]) -> String {
    let start = output.len().saturating_sub(MAX_TAIL);
    String::from_utf8_lossy(&output[start..]).into_owned()
}

/// How a process ended, in words (`exited with status 2`).
pub(crate) fn describe(status: &ExitStatus, timed_out: bool) -> String {
    if timed_out {
        return "timed out".into();
    }
    match (status.code, status.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".into(),
    }
}
