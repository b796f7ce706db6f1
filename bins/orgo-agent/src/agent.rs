//! The agent: its state, the dispatch of requests, and the serving loop.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use orgo_agent_protocol::{
    AgentMessage, Bytes, ErrorCode, Event, FrameError, FrameReader, Op, PROTOCOL_VERSION,
    ReadyInfo, Reply, Request, Stream, encode,
};

use crate::desktop::Desktop;
use crate::files::{FilePolicy, OpError, read_file, write_file};
use crate::health::HealthChecks;
use crate::process::Spawner;
use crate::supervisor::Supervisor;

/// How many frames wait for one host connection: past this (or
/// [`QUEUED_BYTES`]) replies and output wait for room and events are dropped.
const QUEUED_FRAMES: usize = 4096;

/// How many bytes of frames wait for one host connection.
const QUEUED_BYTES: usize = 16 << 20;

/// How many events wait while no host is connected.
const PARKED_EVENTS: usize = 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// A host connection, as [`Server::serve`] numbers them.
pub(crate) type ConnId = u64;

/// One host connection's frames, written in order by its own writer thread,
/// so a writer blocked on a stalled or dead channel holds no lock and holds
/// up no other connection.
struct Connection {
    queue: Mutex<Queue>,
    changed: Condvar,
}

struct Queue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Cleared when the connection ends (its reader ended, or a write
    /// failed): frames for it are then dropped.
    open: bool,
    /// The channel, until the first frame starts the writer thread.
    writer: Option<Box<dyn Write + Send>>,
}

impl Connection {
    fn new(writer: Box<dyn Write + Send>) -> Arc<Connection> {
        Arc::new(Connection {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                open: true,
                writer: Some(writer),
            }),
            changed: Condvar::new(),
        })
    }

    /// Queues a frame; with `wait`, waits for room (replies and output),
    /// else drops it when the queue is full (events). `false` if dropped,
    /// or the connection has ended.
    fn push(self: &Arc<Self>, frame: Vec<u8>, wait: bool) -> bool {
        let mut queue = lock(&self.queue);
        loop {
            if !queue.open {
                return false;
            }
            let full = queue.frames.len() >= QUEUED_FRAMES || queue.bytes >= QUEUED_BYTES;
            if !full || queue.frames.is_empty() {
                break;
            }
            if !wait {
                return false;
            }
            queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.bytes += frame.len();
        queue.frames.push_back(frame);
        let writer = queue.writer.take();
        drop(queue);
        self.changed.notify_all();
        if let Some(writer) = writer {
            let conn = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("writer".into())
                .spawn(move || conn.write_all(writer));
            if started.is_err() {
                self.close();
                return false;
            }
        }
        true
    }

    /// The writer thread: writes frames until the connection ends. A write
    /// that fails ends the connection.
    fn write_all(&self, mut writer: Box<dyn Write + Send>) {
        while let Some(frame) = self.pop() {
            if writer
                .write_all(&frame)
                .and_then(|()| writer.flush())
                .is_err()
            {
                self.close();
                return;
            }
        }
    }

    /// The next frame, waiting for one; `None` once the connection ended.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut queue = lock(&self.queue);
        loop {
            if !queue.open {
                return None;
            }
            if let Some(frame) = queue.frames.pop_front() {
                queue.bytes -= frame.len();
                drop(queue);
                self.changed.notify_all();
                return Some(frame);
            }
            queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends the connection: what is queued is dropped, and so is all that
    /// follows; whoever waits for room is released.
    fn close(&self) {
        let mut queue = lock(&self.queue);
        queue.open = false;
        queue.frames.clear();
        queue.bytes = 0;
        queue.writer = None;
        drop(queue);
        self.changed.notify_all();
    }
}

/// The open connections, and which one events go to.
#[derive(Default)]
struct Routes {
    next: ConnId,
    open: BTreeMap<ConnId, Arc<Connection>>,
    /// The newest open connection: events go there.
    current: Option<ConnId>,
    /// Events while no host is connected, for the next one.
    parked: VecDeque<Vec<u8>>,
}

/// Messages on their way to the host. A reply, and the output of a request,
/// go to the connection the request came on, and are dropped if it has
/// ended; they wait for room there. Events go to the newest connection, and
/// are dropped (and counted) when it does not keep up.
pub(crate) struct Outbox {
    routes: Mutex<Routes>,
    dropped: AtomicU64,
    /// Every event, for [`Op::ReadEvents`].
    ring: crate::events::EventRing,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            routes: Mutex::default(),
            dropped: AtomicU64::new(0),
            ring: crate::events::EventRing::default(),
        }
    }

    /// Opens a connection that writes to `writer`, and makes it current:
    /// `first` (the ready event) goes out first, then the events that waited
    /// for a host.
    fn connect(&self, writer: Box<dyn Write + Send>, first: Option<Event>) -> ConnId {
        let conn = Connection::new(writer);
        let mut routes = lock(&self.routes);
        let id = routes.next;
        routes.next += 1;
        routes.open.insert(id, Arc::clone(&conn));
        routes.current = Some(id);
        if let Some(event) = first {
            conn.push(encode(&AgentMessage::Event { event }), false);
        }
        for frame in std::mem::take(&mut routes.parked) {
            if !conn.push(frame, false) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        id
    }

    /// Ends a connection: what is still on its way to it is dropped.
    fn disconnect(&self, id: ConnId) {
        let mut routes = lock(&self.routes);
        if let Some(conn) = routes.open.remove(&id) {
            conn.close();
        }
        if routes.current == Some(id) {
            routes.current = routes.open.keys().next_back().copied();
        }
    }

    /// Sends a reply or output to connection `to`, waiting for room; dropped
    /// if that connection has ended.
    pub(crate) fn send(&self, to: ConnId, message: &AgentMessage) {
        let conn = lock(&self.routes).open.get(&to).cloned();
        if let Some(conn) = conn {
            conn.push(encode(message), true);
        }
    }

    pub(crate) fn event(&self, event: Event) {
        self.ring.push(&event);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0
            && !self.post(AgentMessage::Event {
                event: Event::Dropped { count: dropped },
            })
        {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if !self.post(AgentMessage::Event { event }) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an event for the current connection, or parks it until one
    /// comes; `false` if it was dropped.
    fn post(&self, message: AgentMessage) -> bool {
        let frame = encode(&message);
        let mut routes = lock(&self.routes);
        let current = routes.current.and_then(|id| routes.open.get(&id).cloned());
        match current {
            Some(conn) => {
                drop(routes);
                conn.push(frame, false)
            }
            None if routes.parked.len() < PARKED_EVENTS => {
                routes.parked.push_back(frame);
                true
            }
            None => false,
        }
    }
}

/// Answers one request: its output and then its one response, on the
/// connection it came from. Once the response is sent, later output (a
/// background process that kept the pipes open) is dropped, so nothing of a
/// request follows its response.
pub(crate) struct Responder {
    agent: Arc<Agent>,
    conn: ConnId,
    id: u64,
    answered: Mutex<bool>,
}

impl Responder {
    /// Sends a chunk of output; `false` once the response has been sent.
    pub(crate) fn output(&self, stream: Stream, data: &[u8]) -> bool {
        let answered = lock(&self.answered);
        if *answered {
            return false;
        }
        self.agent.outbox.send(
            self.conn,
            &AgentMessage::Output {
                id: self.id,
                stream,
                data: Bytes(data.to_vec()),
            },
        );
        true
    }

    /// Sends the response (the first one only).
    pub(crate) fn respond(&self, reply: Reply) {
        let mut answered = lock(&self.answered);
        if *answered {
            return;
        }
        *answered = true;
        self.agent
            .outbox
            .send(self.conn, &AgentMessage::Response { id: self.id, reply });
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
    desktop: Desktop,
    logs: crate::logs::Logs,
    triggers: crate::triggers::Triggers,
    /// When the last activity was (see [`Agent::note_activity`]).
    last_activity: Mutex<std::time::Instant>,
    auto_stop: crate::autostop::AutoStop,
    health_state: crate::metrics::HealthState,
    scrape: crate::metrics::Endpoint,
    shipper: Mutex<Option<Arc<crate::telemetry::Shipper>>>,
    /// Requests that are activity, running now.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent; [`Server::new`] serves it to hosts.
    pub fn new(config: AgentConfig) -> Arc<Agent> {
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
            outbox: Outbox::new(),
            supervisor: Supervisor::default(),
            health: HealthChecks::default(),
            desktop: Desktop::default(),
            logs: crate::logs::Logs::default(),
            triggers: crate::triggers::Triggers::default(),
            last_activity: Mutex::new(std::time::Instant::now()),
            auto_stop: crate::autostop::AutoStop::default(),
            health_state: crate::metrics::HealthState::default(),
            scrape: crate::metrics::Endpoint::default(),
            shipper: Mutex::new(None),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        };
        Arc::new(agent)
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

    fn responder(self: &Arc<Self>, conn: ConnId, id: u64) -> Arc<Responder> {
        Arc::new(Responder {
            agent: Arc::clone(self),
            conn,
            id,
            answered: Mutex::new(false),
        })
    }

    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub(crate) fn logs(&self) -> &crate::logs::Logs {
        &self.logs
    }

    pub(crate) fn triggers(&self) -> &crate::triggers::Triggers {
        &self.triggers
    }

    /// Notes activity now: a request that runs or moves something, a
    /// trigger that fired.
    pub(crate) fn note_activity(&self) {
        *lock(&self.last_activity) = std::time::Instant::now();
    }

    /// The last result of each app's health check.
    pub(crate) fn health_state(&self) -> &crate::metrics::HealthState {
        &self.health_state
    }

    /// Where telemetry goes, when it is pushed.
    pub(crate) fn shipper(&self) -> Option<Arc<crate::telemetry::Shipper>> {
        lock(&self.shipper).clone()
    }

    /// How long since the last activity (none while a request that is
    /// activity runs).
    pub(crate) fn idle(&self) -> std::time::Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return std::time::Duration::ZERO;
        }
        lock(&self.last_activity).elapsed()
    }

    /// Stops the triggers, health checks and services; then, with machine
    /// control, syncs and powers off.
    pub(crate) fn shut_down(self: &Arc<Self>) {
        self.triggers.clear();
        self.health.clear();
        self.supervisor.stop_all();
        if self.config.machine {
            crate::machine::power_off(self, false);
        }
    }

    pub(crate) fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The environment every process starts with.
    pub(crate) fn base_env(&self) -> BTreeMap<String, String> {
        lock(&self.env).clone()
    }

    pub(crate) fn set_base_env(&self, env: &BTreeMap<String, String>, previous: &[String]) {
        let mut base = lock(&self.env);
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

    /// Handles one frame's payload (or the error reading it) from connection
    /// `conn`: the reply goes back there. Long operations run on their own
    /// thread, so this returns at once. Nothing the host sends makes it panic.
    fn handle_frame(self: &Arc<Self>, conn: ConnId, frame: Result<Vec<u8>, FrameError>) {
        let payload = match frame {
            Ok(payload) => payload,
            Err(e) => return self.error(conn, 0, e.code(), e.to_string()),
        };
        let value: serde_json::Value = match serde_json::from_slice(&payload) {
            Ok(v) => v,
            Err(e) => {
                return self.error(
                    conn,
                    0,
                    ErrorCode::BadRequest,
                    format!("malformed JSON: {e}"),
                );
            }
        };
        let id = value
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        match serde_json::from_value::<Request>(value) {
            Ok(request) => self.handle(conn, request),
            Err(e) => self.error(conn, id, ErrorCode::BadRequest, format!("bad request: {e}")),
        }
    }

    fn error(self: &Arc<Self>, conn: ConnId, id: u64, code: ErrorCode, message: String) {
        self.responder(conn, id)
            .respond(Reply::Error { code, message });
    }

    /// Handles one request from connection `conn`; the reply goes back there.
    fn handle(self: &Arc<Self>, conn: ConnId, request: Request) {
        let Request { id, op } = request;
        // Observations are not activity (see `autostop`); the rest is, from
        // its start to its end (a long exec keeps the computer busy).
        let active = !matches!(
            op,
            Op::Hello { .. }
                | Op::Ping
                | Op::ServiceStatus
                | Op::ListLogs
                | Op::ReadLog { .. }
                | Op::ReadEvents { .. }
                | Op::Idle
                | Op::Metrics
        );
        if active {
            self.note_activity();
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        let quick = matches!(
            op,
            Op::Hello { .. } | Op::Ping | Op::ServiceStatus | Op::ReadFile { .. }
        );
        let agent = Arc::clone(self);
        let responder = self.responder(conn, id);
        let work = move || {
            let reply = agent
                .dispatch(&responder, op)
                .unwrap_or_else(|e| Reply::Error {
                    code: e.code,
                    message: e.message,
                });
            responder.respond(reply);
            if active {
                agent.note_activity();
                agent.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        };
        if quick {
            work();
        } else if let Err(e) = std::thread::Builder::new()
            .name(format!("req-{id}"))
            .spawn(work)
        {
            if active {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            self.error(
                conn,
                id,
                ErrorCode::Io,
                format!("cannot start a thread: {e}"),
            );
        }
    }

    fn dispatch(self: &Arc<Self>, responder: &Arc<Responder>, op: Op) -> Result<Reply, OpError> {
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
                let (status, timed_out) = crate::exec::exec(self, responder, exec)?;
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
                let outcome = crate::exec::hook(self, responder, hook)?;
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
            Op::ListLogs => Ok(Reply::LogNames {
                names: self.logs.names(),
            }),
            Op::ReadLog {
                name,
                offset,
                since_unix_ms,
                max_bytes,
            } => {
                let (data, from, next) = self.logs.read(&name, offset, since_unix_ms, max_bytes)?;
                Ok(Reply::Log {
                    data: Bytes(data),
                    from,
                    next,
                })
            }
            Op::ReadEvents { after, max } => {
                let (events, dropped) = self.outbox.ring.read(after, max);
                Ok(Reply::Events { events, dropped })
            }
            Op::SetTriggers { triggers } => {
                self.triggers.set(self, triggers)?;
                Ok(Reply::Done)
            }
            Op::FireWebhook { path, data } => {
                let triggers = self.triggers.webhook(self, &path, data.0)?;
                Ok(Reply::Fired { triggers })
            }
            Op::SetAutoStop {
                idle_ms,
                on_shutdown,
            } => {
                self.auto_stop.set(self, idle_ms, on_shutdown);
                Ok(Reply::Done)
            }
            Op::Idle => Ok(Reply::Idle {
                idle_ms: self.idle().as_millis() as u64,
            }),
            Op::Metrics => Ok(Reply::Metrics {
                text: crate::metrics::render(self),
            }),
            Op::SetTelemetry {
                metrics,
                logs,
                otel_endpoint,
                resource,
            } => {
                if metrics {
                    self.scrape
                        .start(self)
                        .map_err(|e| OpError::io("cannot serve the metrics endpoint", &e))?;
                }
                let shipper = match otel_endpoint {
                    Some(endpoint) => Some(
                        crate::telemetry::Shipper::start(self, endpoint, resource)
                            .map_err(|e| OpError::io("cannot start the telemetry thread", &e))?,
                    ),
                    None => None,
                };
                if let Some(old) = std::mem::replace(&mut *lock(&self.shipper), shipper.clone()) {
                    old.stop();
                }
                self.logs.set_shipping(logs, shipper);
                Ok(Reply::Done)
            }
            Op::Shutdown { reboot } => {
                self.auto_stop.set(self, 0, None);
                self.triggers.clear();
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
            Op::StartDesktop(spec) => {
                self.desktop.start(self, spec)?;
                Ok(Reply::Done)
            }
            Op::Screenshot { region } => {
                let (png, width, height) = self.desktop.screenshot(region)?;
                Ok(Reply::Screenshot {
                    png: Bytes(png),
                    width,
                    height,
                })
            }
            Op::Input(input) => {
                self.desktop.input(&input)?;
                Ok(Reply::Done)
            }
            Op::Cursor => {
                let (x, y) = self.desktop.cursor()?;
                Ok(Reply::Cursor { x, y })
            }
        }
    }
}

/// Serves the agent to host connections: each reads requests, and gets the
/// replies to them (and events, while it is the newest).
pub struct Server {
    agent: Arc<Agent>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `agent` (from [`Agent::new`]).
    pub fn new(agent: Arc<Agent>) -> Self {
        Server { agent }
    }

    /// The agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// Serves one host connection until it ends: replies to what is read
    /// from `reader` are written to `writer` (by a thread of its own), and
    /// so are events while it is the newest connection. With `announce`,
    /// it is a connection from the start and [`Event::Ready`] goes out
    /// first; without, from the first bytes read (a serial port reads 0
    /// bytes while no host is there: that is no connection, and events wait
    /// for the next). Returns at the end of the stream or on an
    /// unrecoverable read error; what is still on its way to this
    /// connection then is dropped, never sent to another.
    pub fn serve<R: Read>(&self, reader: R, writer: Box<dyn Write + Send>, announce: bool) {
        let outbox = &self.agent.outbox;
        let mut writer = Some(writer);
        let mut conn = None;
        let mut connect = |first: Option<Event>| -> ConnId {
            *conn.get_or_insert_with(|| {
                let writer = writer.take().expect("a connection opens once");
                outbox.connect(writer, first)
            })
        };
        if announce {
            connect(Some(Event::Ready(self.agent.ready_info())));
        }
        let mut frames = FrameReader::new(reader);
        loop {
            match frames.read_payload() {
                Ok(None) => break,
                Ok(Some(payload)) => self.agent.handle_frame(connect(None), Ok(payload)),
                Err(e) if e.recoverable() => self.agent.handle_frame(connect(None), Err(e)),
                Err(_) => break,
            }
        }
        if let Some(conn) = conn {
            outbox.disconnect(conn);
        }
    }
}
