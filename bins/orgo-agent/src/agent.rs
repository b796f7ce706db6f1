//! The agent: its state, the dispatch of requests, and the serving loop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::files::{FilePolicy, OpError, read_file, write_file};
use crate::health::HealthChecks;
use crate::process::Spawner;
use crate::protocol::{
    AgentMessage, Bytes, ErrorCode, Event, FrameError, FrameReader, Op, PROTOCOL_VERSION,
    ReadyInfo, Reply, Request, encode,
};
use crate::supervisor::Supervisor;

/// How many messages wait for the host before events are dropped.
const OUTBOX_DEPTH: usize = 4096;

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The directory the guest's paths are relative to: `/` in a guest; a
    /// scratch directory in tests. Files, `/etc/passwd`, `/etc/profile.d`,
    /// `/etc/machine-id` are found under it.
    pub root: PathBuf,
    /// Which paths the host may write and read.
    pub policy: FilePolicy,
    /// Whether the agent is PID 1 (children are reaped by one thread; see
    /// the crate docs). Only one agent per process may set this.
    pub pid1: bool,
    /// Whether [`Op::Shutdown`] and [`Op::ResetIdentity`] touch the machine
    /// (power off, the clock, the hostname). Off in tests.
    pub machine: bool,
}

impl AgentConfig {
    /// Settings for the real guest: root `/`, PID 1, machine control on.
    pub fn guest() -> Self {
        AgentConfig {
            root: PathBuf::from("/"),
            policy: FilePolicy::default(),
            pid1: true,
            machine: true,
        }
    }

    /// Settings for tests: paths under `root`, no reaping, no machine control.
    pub fn sandbox(root: impl Into<PathBuf>) -> Self {
        AgentConfig {
            root: root.into(),
            policy: FilePolicy::default(),
            pid1: false,
            machine: false,
        }
    }
}

/// Messages on their way to the host. Replies and output wait for room;
/// events are dropped (and counted) when the host does not keep up.
pub(crate) struct Outbox {
    tx: SyncSender<AgentMessage>,
    dropped: AtomicU64,
}

impl Outbox {
    pub(crate) fn reply(&self, message: AgentMessage) {
        let _ = self.tx.send(message);
    }

    pub(crate) fn event(&self, event: Event) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0
            && self
                .tx
                .try_send(AgentMessage::Event {
                    event: Event::Dropped { count: dropped },
                })
                .is_err()
        {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        match self.tx.try_send(AgentMessage::Event { event }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The guest agent.
pub struct Agent {
    config: AgentConfig,
    spawner: Spawner,
    env: Mutex<BTreeMap<String, String>>,
    outbox: Outbox,
    supervisor: Supervisor,
    health: HealthChecks,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent, and the stream of messages it has for the host (give it to
    /// [`Server::new`], or read it directly in tests).
    pub fn new(config: AgentConfig) -> (Arc<Agent>, Receiver<AgentMessage>) {
        let (tx, rx) = mpsc::sync_channel(OUTBOX_DEPTH);
        let spawner = if config.pid1 {
            Spawner::reaping()
        } else {
            Spawner::per_child()
        };
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
        env.insert("LANG".to_string(), "C.UTF-8".to_string());
        env.insert("HOME".to_string(), "/root".to_string());
        env.insert("TERM".to_string(), "xterm-256color".to_string());
        let agent = Agent {
            config,
            spawner,
            env: Mutex::new(env),
            outbox: Outbox {
                tx,
                dropped: AtomicU64::new(0),
            },
            supervisor: Supervisor::default(),
            health: HealthChecks::default(),
        };
        (Arc::new(agent), rx)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.config.root
    }

    pub(crate) fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub(crate) fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The environment every process starts with.
    pub(crate) fn base_env(&self) -> BTreeMap<String, String> {
        self.env.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_base_env(&self, env: &BTreeMap<String, String>, previous: &[String]) {
        let mut base = self.env.lock().unwrap_or_else(|e| e.into_inner());
        for name in previous {
            base.remove(name);
        }
        base.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// What the agent tells the host about itself.
    pub fn ready_info(&self) -> ReadyInfo {
        let uptime_ms = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map(|secs| (secs * 1000.0) as u64);
        ReadyInfo {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            uptime_ms,
            pid1: self.config.pid1,
        }
    }

    /// Queues an event for the host.
    pub fn event(&self, event: Event) {
        self.outbox.event(event);
    }

    /// Handles one frame's payload (or the error reading it): the reply goes
    /// to the outbox. Long operations run on their own thread, so this
    /// returns at once. Nothing the host sends makes it panic.
    pub fn handle_frame(self: &Arc<Self>, frame: Result<Vec<u8>, FrameError>) {
        let payload = match frame {
            Ok(payload) => payload,
            Err(e) => return self.error(0, e.code(), e.to_string()),
        };
        let value: serde_json::Value = match serde_json::from_slice(&payload) {
            Ok(v) => v,
            Err(e) => return self.error(0, ErrorCode::BadRequest, format!("malformed JSON: {e}")),
        };
        let id = value
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        match serde_json::from_value::<Request>(value) {
            Ok(request) => self.handle(request),
            Err(e) => self.error(id, ErrorCode::BadRequest, format!("bad request: {e}")),
        }
    }

    fn error(&self, id: u64, code: ErrorCode, message: String) {
        self.outbox.reply(AgentMessage::Response {
            id,
            reply: Reply::Error { code, message },
        });
    }

    /// Handles one request; the reply goes to the outbox.
    pub fn handle(self: &Arc<Self>, request: Request) {
        let Request { id, op } = request;
        let quick = matches!(
            op,
            Op::Hello { .. } | Op::Ping | Op::ServiceStatus | Op::ReadFile { .. }
        );
        let agent = Arc::clone(self);
        let work = move || {
            let reply = agent.dispatch(id, op).unwrap_or_else(|e| Reply::Error {
                code: e.code,
                message: e.message,
            });
            agent.outbox.reply(AgentMessage::Response { id, reply });
        };
        if quick {
            work();
        } else if let Err(e) = std::thread::Builder::new()
            .name(format!("req-{id}"))
            .spawn(work)
        {
            self.error(id, ErrorCode::Io, format!("cannot start a thread: {e}"));
        }
    }

    fn dispatch(self: &Arc<Self>, id: u64, op: Op) -> Result<Reply, OpError> {
        let root = self.config.root.clone();
        let policy = &self.config.policy;
        match op {
            Op::Hello { protocol } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(OpError::new(
                        ErrorCode::UnsupportedVersion,
                        format!("host speaks protocol `{protocol}`, agent `{PROTOCOL_VERSION}`"),
                    ));
                }
                Ok(Reply::Ready(self.ready_info()))
            }
            Op::Ping => Ok(Reply::Done),
            Op::Exec(exec) => {
                let (status, timed_out) = crate::exec::exec(self, id, exec)?;
                Ok(Reply::Exit { status, timed_out })
            }
            Op::WriteFile {
                path,
                content,
                mode,
                owner,
                group,
            } => {
                write_file(
                    &root,
                    policy,
                    &path,
                    &content.0,
                    mode,
                    owner.as_deref(),
                    group.as_deref(),
                )?;
                Ok(Reply::Done)
            }
            Op::ReadFile { path } => {
                let (content, mode) = read_file(&root, policy, &path)?;
                Ok(Reply::File {
                    content: Bytes(content),
                    mode,
                })
            }
            Op::RunHook(hook) => {
                let outcome = crate::exec::hook(self, id, hook)?;
                Ok(Reply::Hook {
                    status: outcome.status,
                    timed_out: outcome.timed_out,
                    output: Bytes(outcome.output),
                })
            }
            Op::StartService(spec) => {
                self.supervisor.start(self, spec)?;
                Ok(Reply::Done)
            }
            Op::StopService { name } => {
                self.supervisor.stop(&name)?;
                Ok(Reply::Done)
            }
            Op::RestartService { name } => {
                self.supervisor.restart(&name)?;
                Ok(Reply::Done)
            }
            Op::ServiceStatus => Ok(Reply::Services {
                services: self.supervisor.status(),
            }),
            Op::SetHealthChecks { checks } => {
                self.health.set(self, checks);
                Ok(Reply::Done)
            }
            Op::CreateTerminals { sessions } => {
                crate::machine::create_terminals(self, &sessions)?;
                Ok(Reply::Done)
            }
            Op::SetEnv { env } => {
                crate::machine::set_env(self, &env)?;
                Ok(Reply::Done)
            }
            Op::ResetIdentity(identity) => {
                crate::machine::reset_identity(self, &identity)?;
                Ok(Reply::Done)
            }
            Op::Shutdown { reboot } => {
                self.health.clear();
                self.supervisor.stop_all();
                if self.config.machine {
                    let agent = Arc::clone(self);
                    std::thread::spawn(move || {
                        // Let the reply reach the host first.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        crate::machine::power_off(&agent, reboot);
                    });
                }
                Ok(Reply::Done)
            }
        }
    }
}

/// Writes the agent's messages to whichever host connection is current.
pub struct Server {
    agent: Arc<Agent>,
    current: Arc<Mutex<Option<Box<dyn Write + Send>>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the writer thread for `messages` (from [`Agent::new`]).
    pub fn new(agent: Arc<Agent>, messages: Receiver<AgentMessage>) -> Self {
        let current: Arc<Mutex<Option<Box<dyn Write + Send>>>> = Arc::default();
        let out = Arc::clone(&current);
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                for message in messages {
                    let frame = encode(&message);
                    let mut slot = out.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(w) = slot.as_mut()
                        && w.write_all(&frame).and_then(|()| w.flush()).is_err()
                    {
                        *slot = None;
                    }
                }
            })
            .expect("the writer thread starts");
        Server { agent, current }
    }

    /// The agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// Serves one host connection until it ends: `writer` becomes the
    /// current connection, [`Event::Ready`] is sent if `announce`, then every
    /// frame read is handled. Returns at the end of the stream or on an
    /// unrecoverable read error.
    pub fn serve<R: Read>(&self, reader: R, writer: Box<dyn Write + Send>, announce: bool) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        if announce {
            self.agent.event(Event::Ready(self.agent.ready_info()));
        }
        let mut frames = FrameReader::new(reader);
        loop {
            match frames.read_payload() {
                Ok(None) => return,
                Ok(Some(payload)) => self.agent.handle_frame(Ok(payload)),
                Err(e) if e.recoverable() => self.agent.handle_frame(Err(e)),
                Err(_) => return,
            }
        }
    }
}
