//! The messages: what the host asks ([`Request`], an id and an [`Op`]) and
//! what the agent sends back ([`AgentMessage`]), as JSON payloads of frames.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;

use crate::desktop::{DesktopSpec, Input, Region};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest file [`Op::WriteFile`] or [`Op::ReadFile`] moves in one request (8 MiB).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Raw bytes, base64 (standard alphabet, padded) on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if self.0.len() <= 256 => write!(f, "{text:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&str> for Bytes {
    fn from(v: &str) -> Self {
        Bytes(v.as_bytes().to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// A host-to-agent message: one operation, with an id its reply carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the host; echoed in [`AgentMessage::Response`] and in
    /// [`AgentMessage::Output`]. 0 is never used by a well-behaved host (the
    /// agent uses it for errors about frames it could not read).
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// What a program runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A program and its arguments, looked up in `PATH`.
    Argv(Vec<String>),
    /// A shell command line, run by `bash -c` (`sh -c` without bash).
    Shell(String),
}

/// Exec options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// What to run.
    pub command: Command,
    /// Extra environment, over the agent's (which includes [`Op::SetEnv`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the user's home, else `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run-as user (default: the agent's, root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Killed (its whole process group) after this long; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Written to stdin, which is then closed (empty by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Bytes>,
}

impl Exec {
    /// Runs `argv` with every option at its default.
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        Exec::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// Runs a shell command line with every option at its default.
    pub fn shell(script: impl Into<String>) -> Self {
        Exec::new(Command::Shell(script.into()))
    }

    fn new(command: Command) -> Self {
        Exec {
            command,
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            timeout_ms: None,
            stdin: None,
        }
    }
}

/// A lifecycle hook: a bash script run with `set -e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Which hook, for logs and events (`on_first_boot`, ...).
    pub name: String,
    /// The script.
    pub script: String,
    /// Default [`DEFAULT_HOOK_TIMEOUT_MS`] (10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run-as user (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The default hook timeout: 10 minutes.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 600_000;

/// The most output a hook reply carries (the tail is kept): 1 MiB.
pub const MAX_HOOK_OUTPUT_BYTES: usize = 1 << 20;

/// When a supervised service is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit.
    Always,
    /// After an exit with a non-zero status or a signal.
    OnFailure,
    /// Never.
    No,
}

/// Restart backoff: the delay starts at `initial_ms`, doubles after each
/// quick exit up to `max_ms`, and falls back to `initial_ms` once the service
/// stayed up for `reset_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay.
    pub initial_ms: u64,
    /// Largest delay.
    pub max_ms: u64,
    /// Uptime after which the delay starts over.
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 200,
            max_ms: 30_000,
            reset_after_ms: 10_000,
        }
    }
}

/// A supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Shell command line (`bash -c`).
    pub run: String,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run-as user (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Signal name that stops it (`TERM`, `INT`, `QUIT`, `HUP`, `KILL`, `USR1`, `USR2`).
    pub stop_signal: String,
    /// Grace period after the stop signal before `KILL` (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// stdout and stderr are appended here (default:
    /// `/var/log/orgo/NAME.log`); the agent writes the file and rotates it
    /// at its size cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Restart backoff.
    #[serde(default)]
    pub backoff: Backoff,
}

/// A service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Its process runs.
    Running,
    /// Exited; waiting out the backoff before the next start.
    Backoff,
    /// Stopped by request, or exited and not to be restarted.
    Stopped,
    /// Could not be started (see the events).
    Failed,
}

/// One service, as [`Op::ServiceStatus`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: ServiceState,
    /// The running process's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Starts after the first.
    pub restarts: u32,
    /// How the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Probe {
    /// The URL answers 2xx or 3xx (https through the guest's curl).
    Http {
        /// http or https URL.
        url: String,
    },
    /// The port accepts a TCP connection.
    Tcp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// The shell command exits 0.
    Command {
        /// Shell command line.
        command: String,
    },
    /// A process whose name (`comm`, or argv\[0\]'s file name) is this runs.
    Process {
        /// Process name.
        process: String,
    },
}

/// What follows `retries` consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OnFail {
    /// Restart the named service.
    RestartService {
        /// Service name.
        service: String,
    },
    /// Ask the host to restart the VM ([`Event::RestartVmRequested`]).
    RestartVm,
    /// Raise [`Event::Alert`].
    Alert,
    /// Only the [`Event::Health`] events.
    None,
}

/// A polled health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// The app it belongs to (its name in events).
    pub app: String,
    /// The probe.
    pub probe: Probe,
    /// Interval between probes.
    pub every_ms: u64,
    /// Timeout of one probe.
    pub timeout_ms: u64,
    /// Consecutive failures before `on_fail` acts.
    pub retries: u32,
    /// The action.
    pub on_fail: OnFail,
}

/// A tmux session created detached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSpec {
    /// Session name.
    pub name: String,
    /// The session's window name, a label for people (default: tmux's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Command (default: a login shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Owner (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A new identity for a restored clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Random bytes from the host, mixed into the guest's pool (at least 32).
    pub entropy: Bytes,
    /// The host's clock: seconds since the Unix epoch.
    pub unix_secs: u64,
    /// ... and nanoseconds.
    pub unix_nanos: u32,
    /// Hostname to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// An operation the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Handshake: answered by [`Reply::Ready`].
    Hello {
        /// The host's protocol version.
        protocol: u16,
    },
    /// Liveness: answered by [`Reply::Done`].
    Ping,
    /// Run a program; output streams as [`AgentMessage::Output`], then [`Reply::Exit`].
    Exec(Exec),
    /// Write a file atomically (temp file + rename); parent directories are created.
    WriteFile {
        /// Absolute path.
        path: String,
        /// Content.
        content: Bytes,
        /// Permission bits (default 0644).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Owner user name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Owner group name (default: the owner's primary group).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Read a file: [`Reply::File`].
    ReadFile {
        /// Absolute path.
        path: String,
    },
    /// Run a hook: output streams as [`AgentMessage::Output`], then [`Reply::Hook`].
    RunHook(Hook),
    /// Register and start a service (a running one of that name is replaced).
    StartService(ServiceSpec),
    /// Stop a service and forget it.
    StopService {
        /// Name.
        name: String,
    },
    /// Stop and start a service now (backoff reset).
    RestartService {
        /// Name.
        name: String,
    },
    /// [`Reply::Services`].
    ServiceStatus,
    /// Replace every health check.
    SetHealthChecks {
        /// The checks.
        checks: Vec<HealthSpec>,
    },
    /// Create tmux sessions, detached; existing ones are left alone.
    CreateTerminals {
        /// The sessions.
        sessions: Vec<TerminalSpec>,
    },
    /// Set the environment of login shells (`/etc/profile.d/orgo.sh`) and of
    /// everything the agent starts from now on. Replaces the previous set.
    SetEnv {
        /// Variables.
        env: BTreeMap<String, String>,
    },
    /// Give a restored clone its own identity: entropy, clock, machine-id.
    ResetIdentity(Identity),
    /// Stop services, sync, and power off (or reboot).
    Shutdown {
        /// Reboot instead of powering off.
        #[serde(default)]
        reboot: bool,
    },
    /// Wait for the desktop's X server, check its size, set the wallpaper,
    /// and serve the computer-use operations on it ([`Reply::Done`]). Sent
    /// again after a restore: the wallpaper is set again.
    StartDesktop(DesktopSpec),
    /// A PNG of the screen or of a region of it: [`Reply::Screenshot`].
    Screenshot {
        /// The region (default: the whole screen).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<Region>,
    },
    /// Pointer and keyboard input: [`Reply::Done`] once the X server has
    /// processed it.
    Input(Input),
    /// Where the pointer is: [`Reply::Cursor`].
    Cursor,
    /// The names of the logs the agent writes (services, triggers): [`Reply::LogNames`].
    ListLogs,
    /// Read a log from `offset` (its bytes are numbered from the first ever
    /// written, across rotations), or from the first write at or after
    /// `since_unix_ms`, else from the oldest byte kept: [`Reply::Log`].
    ReadLog {
        /// The log's name (a service's, or `trigger.NAME`).
        name: String,
        /// Where to start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// Or: the first write at or after this time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_unix_ms: Option<u64>,
        /// At most this many bytes (and at most
        /// [`MAX_LOG_READ_BYTES`](crate::MAX_LOG_READ_BYTES)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u32>,
    },
    /// Events of the ring after sequence number `after` (all kept when
    /// unset): [`Reply::Events`].
    ReadEvents {
        /// The last sequence number already seen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// At most this many (and at most
        /// [`MAX_EVENTS_READ`](crate::MAX_EVENTS_READ)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
    /// Replace every trigger.
    SetTriggers {
        /// The triggers.
        triggers: Vec<crate::TriggerSpec>,
    },
    /// Fire the webhook triggers of `path` with `data` (their `run`
    /// actions read it on stdin): [`Reply::Fired`]; no trigger of that path
    /// is [`ErrorCode::NotFound`].
    FireWebhook {
        /// The webhook's path.
        path: String,
        /// The body (at most [`MAX_WEBHOOK_BYTES`](crate::MAX_WEBHOOK_BYTES)).
        #[serde(default)]
        data: Bytes,
    },
    /// Stop the computer after `idle_ms` without activity (0: never): the
    /// agent runs `on_shutdown`, raises [`Event::AutoStop`], writes
    /// [`AUTO_STOP_MARK`](crate::AUTO_STOP_MARK) on the console and powers
    /// off. The idle clock starts over now.
    SetAutoStop {
        /// The idle time allowed, in milliseconds.
        idle_ms: u64,
        /// The `on_shutdown` hook's script.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_shutdown: Option<String>,
    },
    /// How long the computer has been idle: [`Reply::Idle`].
    Idle,
    /// The metrics now, in the Prometheus text format: [`Reply::Metrics`].
    Metrics,
    /// Telemetry settings: with `metrics`, the agent serves its metrics to
    /// Prometheus scrapes on the guest's port 9464 (`/metrics`); with an
    /// `otel_endpoint`, it pushes the lines of the `logs` named and its
    /// metrics there as OTLP/HTTP (JSON), with `resource` as the resource's
    /// attributes.
    SetTelemetry {
        /// Serve the scrape endpoint.
        metrics: bool,
        /// Logs whose lines are shipped: service names, or the paths of
        /// services' log files.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logs: Vec<String>,
        /// The OTLP/HTTP endpoint (`http(s)://host:port`; `/v1/logs` and
        /// `/v1/metrics` are appended).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        otel_endpoint: Option<String>,
        /// Resource attributes (the computer's id, its template).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        resource: BTreeMap<String, String>,
    },
}

impl Op {
    /// The operation's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::Ping => "ping",
            Op::Exec(_) => "exec",
            Op::WriteFile { .. } => "write_file",
            Op::ReadFile { .. } => "read_file",
            Op::RunHook(_) => "run_hook",
            Op::StartService(_) => "start_service",
            Op::StopService { .. } => "stop_service",
            Op::RestartService { .. } => "restart_service",
            Op::ServiceStatus => "service_status",
            Op::SetHealthChecks { .. } => "set_health_checks",
            Op::CreateTerminals { .. } => "create_terminals",
            Op::SetEnv { .. } => "set_env",
            Op::ResetIdentity(_) => "reset_identity",
            Op::Shutdown { .. } => "shutdown",
            Op::StartDesktop(_) => "start_desktop",
            Op::Screenshot { .. } => "screenshot",
            Op::Input(_) => "input",
            Op::Cursor => "cursor",
            Op::ListLogs => "list_logs",
            Op::ReadLog { .. } => "read_log",
            Op::ReadEvents { .. } => "read_events",
            Op::SetTriggers { .. } => "set_triggers",
            Op::FireWebhook { .. } => "fire_webhook",
            Op::SetAutoStop { .. } => "set_auto_stop",
            Op::Idle => "idle",
            Op::Metrics => "metrics",
            Op::SetTelemetry { .. } => "set_telemetry",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// What the agent knows about itself, in [`Reply::Ready`] and [`Event::Ready`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The agent's crate version.
    pub agent_version: String,
    /// Its protocol version.
    pub protocol: u16,
    /// Milliseconds since the kernel started (`/proc/uptime`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Whether it runs as PID 1.
    pub pid1: bool,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be read (bad JSON, unknown operation, missing field).
    BadRequest,
    /// The frame was larger than [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES) (or a file over [`MAX_FILE_BYTES`]).
    TooLarge,
    /// The frame's protocol version is not [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    UnsupportedVersion,
    /// The path is outside the agent's file policy.
    PathDenied,
    /// No such user, group, service, file.
    NotFound,
    /// An I/O or process error in the guest.
    Io,
    /// A computer-use operation on a computer that has no desktop.
    NoDesktop,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Op::Hello`].
    Ready(ReadyInfo),
    /// Done, nothing to report.
    Done,
    /// To [`Op::Exec`].
    Exit {
        /// How it ended.
        status: ExitStatus,
        /// Whether the timeout killed it.
        timed_out: bool,
    },
    /// To [`Op::ReadFile`].
    File {
        /// Content.
        content: Bytes,
        /// Permission bits.
        mode: u32,
    },
    /// To [`Op::RunHook`].
    Hook {
        /// How it ended.
        status: ExitStatus,
        /// Whether the timeout killed it.
        timed_out: bool,
        /// stdout and stderr, interleaved as written (the last
        /// [`MAX_HOOK_OUTPUT_BYTES`]).
        output: Bytes,
    },
    /// To [`Op::ServiceStatus`].
    Services {
        /// Every registered service, by name.
        services: Vec<ServiceStatus>,
    },
    /// To [`Op::Screenshot`].
    Screenshot {
        /// The PNG.
        png: Bytes,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// To [`Op::Cursor`].
    Cursor {
        /// Pixels from the left edge.
        x: u32,
        /// Pixels from the top edge.
        y: u32,
    },
    /// The request failed.
    Error {
        /// Kind.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// To [`Op::ListLogs`].
    LogNames {
        /// The logs' names, sorted.
        names: Vec<String>,
    },
    /// To [`Op::ReadLog`].
    Log {
        /// The bytes from `from` to `next`.
        data: Bytes,
        /// The offset of `data`'s first byte (past `offset` when older
        /// bytes were rotated away).
        from: u64,
        /// Where the next read starts.
        next: u64,
    },
    /// To [`Op::ReadEvents`].
    Events {
        /// The events, oldest first.
        events: Vec<crate::EventRecord>,
        /// How many events after `after` the ring had dropped already.
        dropped: u64,
    },
    /// To [`Op::FireWebhook`].
    Fired {
        /// The triggers whose firing was accepted (not deduplicated).
        triggers: Vec<String>,
    },
    /// To [`Op::Idle`].
    Idle {
        /// Milliseconds since the last activity.
        idle_ms: u64,
    },
    /// To [`Op::Metrics`].
    Metrics {
        /// Prometheus text format, version 0.0.4.
        text: String,
    },
}

/// An output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Something that happened in the guest, not asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent serves (once at start, and on each new vsock connection).
    Ready(ReadyInfo),
    /// A service's process started.
    ServiceStarted {
        /// Service.
        name: String,
        /// Its process id.
        pid: u32,
        /// Starts after the first.
        restarts: u32,
    },
    /// A service's process ended.
    ServiceExited {
        /// Service.
        name: String,
        /// How.
        status: ExitStatus,
        /// Whether it will be started again.
        restarting: bool,
    },
    /// A service could not be started.
    ServiceFailed {
        /// Service.
        name: String,
        /// Why.
        message: String,
    },
    /// A health check changed state, or failed again.
    Health {
        /// App.
        app: String,
        /// Whether the last probe passed.
        healthy: bool,
        /// Consecutive failures.
        failures: u32,
        /// The last failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A health check reached its `retries` and its `on_fail` acted.
    HealthAction {
        /// App.
        app: String,
        /// What was done.
        on_fail: OnFail,
        /// Whether it worked.
        ok: bool,
        /// Details.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A health check asks the host to restart the VM.
    RestartVmRequested {
        /// App.
        app: String,
    },
    /// A health check (`app`) or a trigger's action (`trigger`) raised an alert.
    Alert {
        /// App (empty for a trigger's alert).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        app: String,
        /// The last failure, or the trigger's message.
        message: String,
        /// The trigger whose `alert` action raised it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<String>,
    },
    /// Some events were dropped because the host did not read them.
    Dropped {
        /// How many.
        count: u64,
    },
    /// A service was started again (by its restart policy, a health check
    /// or a request).
    ServiceRestarted {
        /// Service.
        name: String,
        /// Starts after the first.
        restarts: u32,
    },
    /// A trigger fired; its actions run.
    TriggerFired {
        /// Trigger.
        trigger: String,
        /// Its source's type.
        source: String,
        /// What fired it (the file and change, the webhook path, the minute).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A firing within the trigger's dedup window was dropped.
    TriggerDeduplicated {
        /// Trigger.
        trigger: String,
        /// What fired it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A trigger's actions all ran.
    TriggerDone {
        /// Trigger.
        trigger: String,
    },
    /// The computer was idle for its limit and stops.
    AutoStop {
        /// How long it was idle, in milliseconds.
        idle_ms: u64,
    },
    /// A trigger's action failed; the actions after it did not run.
    TriggerFailed {
        /// Trigger.
        trigger: String,
        /// The failed action's index.
        action: usize,
        /// Why (with the tail of a `run` action's output).
        message: String,
    },
}

/// An agent-to-host message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        #[serde(flatten)]
        reply: Reply,
    },
    /// A chunk of output of request `id` (exec or hook).
    Output {
        /// The request's id.
        id: u64,
        /// Which stream.
        stream: Stream,
        /// The bytes.
        data: Bytes,
    },
    /// An event.
    Event {
        /// The event.
        #[serde(flatten)]
        event: Event,
    },
}
