//! The host side of the agent channel: a client over a Unix stream (QEMU's
//! virtio-serial chardev socket, or Cloud Hypervisor's hybrid vsock socket).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use orgo_agent_protocol::{
    AgentMessage, Bytes, ErrorCode, Event, Exec, ExitStatus, FrameReader, HEADER_BYTES, HealthSpec,
    Hook, Identity, MAX_FILE_BYTES, MAX_FRAME_BYTES, Op, PROTOCOL_VERSION, ReadyInfo, Reply,
    Request, ServiceSpec, ServiceStatus, Stream, TerminalSpec, encode,
};

/// A failure talking to the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The channel failed.
    #[error("agent channel i/o failed")]
    Io(#[from] std::io::Error),
    /// The channel could not be opened in time.
    #[error("cannot reach the agent at `{path}` within {ms} ms")]
    Unreachable {
        /// The socket.
        path: String,
        /// How long it was tried.
        ms: u128,
        /// The last error.
        #[source]
        source: std::io::Error,
    },
    /// No reply in time.
    #[error("no reply to `{op}` within {ms} ms")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        ms: u128,
    },
    /// The agent closed the channel.
    #[error("the agent channel closed")]
    Closed,
    /// The agent answered with an error.
    #[error("agent refused `{op}` ({code:?}): {message}")]
    Guest {
        /// The operation.
        op: &'static str,
        /// Kind.
        code: ErrorCode,
        /// The agent's explanation.
        message: String,
    },
    /// The request is over a limit of the protocol, so it was not sent.
    #[error("`{op}` of `{bytes}` bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// Its size: the file's for `write_file`, else the frame's payload.
        bytes: u64,
        /// The limit: [`MAX_FILE_BYTES`] or [`MAX_FRAME_BYTES`].
        limit: u64,
    },
    /// The agent answered with a reply of another kind.
    #[error("unexpected reply to `{op}`: {reply}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// The reply, debug-printed.
        reply: String,
    },
}

enum Incoming {
    Output(Stream, Vec<u8>),
    Reply(Reply),
}

type Pending = Arc<Mutex<Option<HashMap<u64, Sender<Incoming>>>>>;

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// A hook's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// stdout and stderr interleaved (the tail).
    pub output: Vec<u8>,
}

/// A connected agent. Requests may be sent from several threads at once.
/// Dropping it closes the channel.
#[derive(Debug)]
pub struct AgentClient {
    writer: Mutex<UnixStream>,
    pending: Pending,
    events: Mutex<Receiver<Event>>,
    ready: ReadyInfo,
}

impl Drop for AgentClient {
    /// Shuts the socket down both ways: the reader thread sees the end of
    /// the stream and drops its handle, so the socket closes.
    fn drop(&mut self) {
        let _ = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown(Shutdown::Both);
    }
}

/// The next request id. One counter for every client of this process, from
/// a random base: two clients never share an id, and a reply an agent still
/// holds for another process's earlier connection is never taken for ours.
/// Ids stay below 2^53, exact in any JSON reader.
fn next_request_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let seed = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), Instant::now()));
        AtomicU64::new((seed >> 12) + 1)
    })
    .fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Incoming")
    }
}

impl AgentClient {
    /// Connects to QEMU's chardev socket of the agent's virtio-serial port,
    /// retrying until `timeout` (the socket appears when QEMU starts), then
    /// shakes hands: returns once the agent answered [`Op::Hello`].
    pub fn connect_serial(path: &Path, timeout: Duration) -> Result<AgentClient, AgentError> {
        let deadline = Instant::now() + timeout;
        let stream = retry_connect(path, deadline, Ok)?;
        AgentClient::handshake(stream, deadline.saturating_duration_since(Instant::now()))
    }

    /// Connects through Cloud Hypervisor's hybrid vsock socket: `CONNECT
    /// <port>\n`, answered `OK <host port>\n`; retried until `timeout` (the
    /// guest may not listen yet), then the handshake.
    pub fn connect_hybrid_vsock(
        path: &Path,
        port: u32,
        timeout: Duration,
    ) -> Result<AgentClient, AgentError> {
        let deadline = Instant::now() + timeout;
        let stream = retry_connect(path, deadline, |mut s| {
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            // Byte by byte: what follows the line is the agent's.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while line.len() < 64 && !line.ends_with(b"\n") {
                if s.read(&mut byte)? == 0 {
                    break;
                }
                line.push(byte[0]);
            }
            s.set_read_timeout(None)?;
            if line.starts_with(b"OK ") && line.ends_with(b"\n") {
                Ok(s)
            } else {
                Err(std::io::Error::other(format!(
                    "hybrid vsock answered `{}`",
                    String::from_utf8_lossy(&line).trim()
                )))
            }
        })?;
        AgentClient::handshake(stream, deadline.saturating_duration_since(Instant::now()))
    }

    /// Speaks the protocol on a connected stream: sends [`Op::Hello`] and
    /// waits `timeout` for [`Reply::Ready`]; events and replies that arrive
    /// first (a previous host's) are set aside.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<AgentClient, AgentError> {
        let reader = stream.try_clone()?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events_tx, events_rx) = mpsc::channel();
        let for_reader = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("agent-reader".into())
            .spawn(move || read_loop(reader, &for_reader, &events_tx))?;
        // From here on, a failure drops the client, which closes the socket.
        let mut client = AgentClient {
            writer: Mutex::new(stream),
            pending,
            events: Mutex::new(events_rx),
            ready: ReadyInfo {
                agent_version: String::new(),
                protocol: 0,
                uptime_ms: None,
                pid1: false,
            },
        };
        // A hello sent before the guest opened its end of a virtio-serial
        // port is lost, and a restored guest may take a moment to notice the
        // new host: say hello again every second until one is answered.
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            let hello = Op::Hello {
                protocol: PROTOCOL_VERSION,
            };
            match client.request(hello, wait) {
                Ok(Reply::Ready(info)) => {
                    client.ready = info;
                    return Ok(client);
                }
                Ok(other) => return Err(unexpected("hello", &other)),
                Err(AgentError::Timeout { .. }) if Instant::now() < deadline => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// What the agent said about itself at the handshake.
    pub fn ready(&self) -> &ReadyInfo {
        &self.ready
    }

    /// Sends `op` and waits for its reply; output chunks go to `on_output`.
    pub fn request_streaming(
        &self,
        op: Op,
        timeout: Duration,
        mut on_output: impl FnMut(Stream, &[u8]),
    ) -> Result<Reply, AgentError> {
        let name = op.name();
        let id = next_request_id();
        let frame = encode(&Request { id, op });
        // The agent would skip a larger frame unread, and this wait would end
        // in a timeout.
        let payload = (frame.len() - HEADER_BYTES) as u64;
        if payload > u64::from(MAX_FRAME_BYTES) {
            return Err(AgentError::TooLarge {
                op: name,
                bytes: payload,
                limit: MAX_FRAME_BYTES.into(),
            });
        }
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.as_mut().ok_or(AgentError::Closed)?.insert(id, tx);
        }
        let sent = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&frame);
        if let Err(e) = sent {
            self.forget(id);
            return Err(AgentError::Io(e));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Incoming::Output(stream, data)) => on_output(stream, &data),
                Ok(Incoming::Reply(Reply::Error { code, message })) => {
                    return Err(AgentError::Guest {
                        op: name,
                        code,
                        message,
                    });
                }
                Ok(Incoming::Reply(reply)) => return Ok(reply),
                Err(RecvTimeoutError::Timeout) => {
                    self.forget(id);
                    return Err(AgentError::Timeout {
                        op: name,
                        ms: timeout.as_millis(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(AgentError::Closed),
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(map) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            map.remove(&id);
        }
    }

    /// Sends `op` and waits for its reply (output is dropped).
    pub fn request(&self, op: Op, timeout: Duration) -> Result<Reply, AgentError> {
        self.request_streaming(op, timeout, |_, _| {})
    }

    fn done(&self, op: Op, timeout: Duration) -> Result<(), AgentError> {
        let name = op.name();
        match self.request(op, timeout)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(name, &other)),
        }
    }

    /// Runs a program, collecting its output. `timeout` bounds the wait for
    /// the reply; set [`Exec::timeout_ms`] to have the guest kill it.
    pub fn exec(&self, exec: Exec, timeout: Duration) -> Result<ExecOutput, AgentError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let reply =
            self.request_streaming(Op::Exec(exec), timeout, |stream, data| match stream {
                Stream::Stdout => stdout.extend_from_slice(data),
                Stream::Stderr => stderr.extend_from_slice(data),
            })?;
        match reply {
            Reply::Exit { status, timed_out } => Ok(ExecOutput {
                status,
                timed_out,
                stdout,
                stderr,
            }),
            other => Err(unexpected("exec", &other)),
        }
    }

    /// Writes a file (mode default 0644). A file over [`MAX_FILE_BYTES`] is
    /// refused at once, [`AgentError::TooLarge`], without being sent.
    pub fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<&str>,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let bytes = content.len() as u64;
        if bytes > MAX_FILE_BYTES {
            return Err(AgentError::TooLarge {
                op: "write_file",
                bytes,
                limit: MAX_FILE_BYTES,
            });
        }
        self.done(
            Op::WriteFile {
                path: path.to_string(),
                content: Bytes(content.to_vec()),
                mode,
                owner: owner.map(str::to_string),
                group: group.map(str::to_string),
            },
            timeout,
        )
    }

    /// Reads a file: its content and mode bits.
    pub fn read_file(&self, path: &str, timeout: Duration) -> Result<(Vec<u8>, u32), AgentError> {
        match self.request(
            Op::ReadFile {
                path: path.to_string(),
            },
            timeout,
        )? {
            Reply::File { content, mode } => Ok((content.0, mode)),
            other => Err(unexpected("read_file", &other)),
        }
    }

    /// Runs a hook; `on_output` sees its output live.
    pub fn run_hook(
        &self,
        hook: Hook,
        timeout: Duration,
        on_output: impl FnMut(Stream, &[u8]),
    ) -> Result<HookOutput, AgentError> {
        match self.request_streaming(Op::RunHook(hook), timeout, on_output)? {
            Reply::Hook {
                status,
                timed_out,
                output,
            } => Ok(HookOutput {
                status,
                timed_out,
                output: output.0,
            }),
            other => Err(unexpected("run_hook", &other)),
        }
    }

    /// Registers and starts a service.
    pub fn start_service(&self, spec: ServiceSpec, timeout: Duration) -> Result<(), AgentError> {
        self.done(Op::StartService(spec), timeout)
    }

    /// Stops and forgets a service.
    pub fn stop_service(&self, name: &str, timeout: Duration) -> Result<(), AgentError> {
        self.done(
            Op::StopService {
                name: name.to_string(),
            },
            timeout,
        )
    }

    /// Every service's status.
    pub fn services(&self, timeout: Duration) -> Result<Vec<ServiceStatus>, AgentError> {
        match self.request(Op::ServiceStatus, timeout)? {
            Reply::Services { services } => Ok(services),
            other => Err(unexpected("service_status", &other)),
        }
    }

    /// Replaces the health checks.
    pub fn set_health_checks(
        &self,
        checks: Vec<HealthSpec>,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        self.done(Op::SetHealthChecks { checks }, timeout)
    }

    /// Creates tmux sessions.
    pub fn create_terminals(
        &self,
        sessions: Vec<TerminalSpec>,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        self.done(Op::CreateTerminals { sessions }, timeout)
    }

    /// Sets the login environment.
    pub fn set_env(
        &self,
        env: std::collections::BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        self.done(Op::SetEnv { env }, timeout)
    }

    /// Gives a restored clone its own identity: `entropy` (at least 32 random
    /// bytes), the host's clock now, and optionally a hostname.
    pub fn reset_identity(
        &self,
        entropy: Vec<u8>,
        hostname: Option<String>,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.done(
            Op::ResetIdentity(Identity {
                entropy: Bytes(entropy),
                unix_secs: now.as_secs(),
                unix_nanos: now.subsec_nanos(),
                hostname,
            }),
            timeout,
        )
    }

    /// Asks the guest to stop its services and power off.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), AgentError> {
        self.done(Op::Shutdown { reboot: false }, timeout)
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(timeout)
            .ok()
    }

    /// Waits for an event that matches `pred`, dropping others, up to `timeout`.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next_event(left)?;
            if pred(&event) {
                return Some(event);
            }
        }
    }
}

fn unexpected(op: &'static str, reply: &Reply) -> AgentError {
    AgentError::Unexpected {
        op,
        reply: format!("{reply:?}"),
    }
}

fn retry_connect(
    path: &Path,
    deadline: Instant,
    setup: impl Fn(UnixStream) -> std::io::Result<UnixStream>,
) -> Result<UnixStream, AgentError> {
    let started = Instant::now();
    loop {
        let attempt = UnixStream::connect(path).and_then(&setup);
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(source) if Instant::now() >= deadline => {
                return Err(AgentError::Unreachable {
                    path: path.display().to_string(),
                    ms: started.elapsed().as_millis(),
                    source,
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn read_loop(stream: UnixStream, pending: &Pending, events: &Sender<Event>) {
    let mut frames = FrameReader::new(stream);
    loop {
        match frames.read::<AgentMessage>() {
            Ok(Some(AgentMessage::Response { id, reply })) => {
                let tx = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|m| m.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(Incoming::Reply(reply));
                }
            }
            Ok(Some(AgentMessage::Output { id, stream, data })) => {
                let tx = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .and_then(|m| m.get(&id).cloned());
                if let Some(tx) = tx {
                    let _ = tx.send(Incoming::Output(stream, data.0));
                }
            }
            Ok(Some(AgentMessage::Event { event })) => {
                let _ = events.send(event);
            }
            Err(e) if e.recoverable() => {}
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the senders wakes every waiter with `Closed`.
    pending.lock().unwrap_or_else(|e| e.into_inner()).take();
}
