//! Building commands (user, env, cwd) and running them with streamed output.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orgo_agent_protocol::{
    Command, ErrorCode, Exec, ExitStatus, Hook, MAX_HOOK_OUTPUT_BYTES, Stream,
};

use crate::agent::{Agent, Responder};
use crate::files::{OpError, lookup_user};

/// The shell that runs command lines: bash where there is one.
pub(crate) fn shell(root: &Path) -> &'static str {
    if root.join("bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// A process to start: what, as whom, where, with which environment.
pub(crate) struct Prepared {
    pub(crate) command: std::process::Command,
}

/// Prepares `command` with the agent's environment, then `env`, as `user`, in `cwd`.
///
/// An argv runs through `sh -c 'exec "$@"'`, so that a missing program is
/// the child's exit status 127 rather than a failed spawn (see
/// [`crate::process`] on why PID 1 avoids failed spawns).
pub(crate) fn prepare(
    agent: &Agent,
    command: &Command,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    user: Option<&str>,
) -> Result<Prepared, OpError> {
    let root = agent.root();
    let mut cmd = match command {
        Command::Argv(argv) => {
            if argv.is_empty() {
                return Err(OpError::new(ErrorCode::BadRequest, "`argv` is empty"));
            }
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.args(["-c", "exec \"$@\"", "orgo-exec"]).args(argv);
            cmd
        }
        Command::Shell(script) => {
            let mut cmd = std::process::Command::new(shell(root));
            cmd.args(["-c", script]);
            cmd
        }
    };
    cmd.env_clear();
    cmd.envs(agent.base_env());
    let account = user.map(|u| lookup_user(root, u)).transpose()?;
    if let Some(account) = &account {
        cmd.env("HOME", &account.home)
            .env("USER", &account.name)
            .env("LOGNAME", &account.name)
            .env("SHELL", &account.shell);
        if rustix::process::geteuid().as_raw() != account.uid {
            cmd.uid(account.uid).gid(account.gid);
        }
    }
    cmd.envs(env);
    let dir = match cwd {
        Some(dir) => {
            if !Path::new(dir).is_dir() {
                return Err(OpError::new(
                    ErrorCode::NotFound,
                    format!("working directory `{dir}` is not a directory"),
                ));
            }
            dir.to_string()
        }
        None => account
            .as_ref()
            .map(|a| a.home.clone())
            .filter(|h| Path::new(h).is_dir())
            .unwrap_or_else(|| "/".to_string()),
    };
    cmd.current_dir(dir);
    Ok(Prepared { command: cmd })
}

/// The outcome of [`run`].
pub(crate) struct RunOutcome {
    pub(crate) status: ExitStatus,
    pub(crate) timed_out: bool,
    /// stdout and stderr interleaved, the last `capture` bytes (when asked).
    pub(crate) output: Vec<u8>,
}

/// Runs a prepared command, streaming its output as output of the request
/// `responder` answers, and keeping the last `capture` bytes of it. Output
/// that comes after the response (from a background process that kept the
/// pipes open past the grace period) is dropped, and its pipe closed.
pub(crate) fn run(
    agent: &Arc<Agent>,
    responder: &Arc<Responder>,
    mut prepared: Prepared,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    capture: usize,
) -> Result<RunOutcome, OpError> {
    let cmd = &mut prepared.command;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let (mut child, waiter) = agent
        .spawner()
        .start(cmd)
        .map_err(|e| OpError::io("cannot start the process", &e))?;
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), stdin) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let captured = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let pipes: [(Stream, Option<Box<dyn Read + Send>>); 2] = [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ];
    let mut readers = 0;
    for (stream, pipe) in pipes {
        let Some(mut pipe) = pipe else { continue };
        readers += 1;
        let responder = Arc::clone(responder);
        let captured = Arc::clone(&captured);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if capture > 0 {
                            let mut c = captured.lock().unwrap_or_else(|e| e.into_inner());
                            c.extend_from_slice(&buf[..n]);
                            if c.len() > capture {
                                let excess = c.len() - capture;
                                c.drain(..excess);
                            }
                        }
                        if !responder.output(stream, &buf[..n]) {
                            break;
                        }
                    }
                }
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let (status, timed_out) = waiter.wait_or_kill(timeout);
    // Output written before the exit is in the pipes; a background process
    // that keeps them open is not waited for beyond a grace period.
    for _ in 0..readers {
        if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    let output = std::mem::take(&mut *captured.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(RunOutcome {
        status,
        timed_out,
        output,
    })
}

/// [`Op::Exec`](orgo_agent_protocol::Op::Exec).
pub(crate) fn exec(
    agent: &Arc<Agent>,
    responder: &Arc<Responder>,
    req: Exec,
) -> Result<(ExitStatus, bool), OpError> {
    let prepared = prepare(
        agent,
        &req.command,
        &req.env,
        req.cwd.as_deref(),
        req.user.as_deref(),
    )?;
    let outcome = run(
        agent,
        responder,
        prepared,
        req.stdin.map(|b| b.0),
        req.timeout_ms.map(Duration::from_millis),
        0,
    )?;
    Ok((outcome.status, outcome.timed_out))
}

/// [`Op::RunHook`](orgo_agent_protocol::Op::RunHook): the script under `set -e`, output
/// captured.
pub(crate) fn hook(
    agent: &Arc<Agent>,
    responder: &Arc<Responder>,
    hook: Hook,
) -> Result<RunOutcome, OpError> {
    let script = format!("set -e\n{}", hook.script);
    let prepared = prepare(
        agent,
        &Command::Shell(script),
        &hook.env,
        hook.cwd.as_deref(),
        hook.user.as_deref(),
    )?;
    let timeout = hook
        .timeout_ms
        .unwrap_or(orgo_agent_protocol::DEFAULT_HOOK_TIMEOUT_MS);
    run(
        agent,
        responder,
        prepared,
        None,
        Some(Duration::from_millis(timeout)),
        MAX_HOOK_OUTPUT_BYTES,
    )
}
