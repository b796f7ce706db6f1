//! `orgo-agent`: the guest agent of every orgo computer, and the protocol the
//! host speaks to it.
//!
//! The agent runs as PID 1 of the guest (no systemd: boot must be fast). It
//! mounts the kernel file systems, reaps orphans, brings up the network from
//! the kernel command line (`orgo.ip=ADDR/PREFIX,GATEWAY,DNS`), then serves
//! the host over a virtio-serial port named `org.orgo.agent` (QEMU) and over
//! vsock port 1024 (Cloud Hypervisor): one framed, versioned protocol on
//! both. Operations: exec with streamed output, file write and read, hooks
//! (`set -e`, 10-minute default timeout, output captured), supervised
//! services (restart policy, backoff, stop signal, log file), health checks
//! (http, tcp, command, process; `on_fail` acts and events reach the host),
//! tmux sessions, the login environment, and a restored clone's new identity.
//! Nothing the host sends makes it exit: a bad frame gets an error reply.
//!
//! As PID 1 it must reap every orphan, and a `wait` for any child would steal
//! the statuses other threads wait for; so every child starts through one
//! spawner whose reaper thread waits for any child and hands each status to
//! the thread that started it (the registry is locked from `fork` until the
//! pid is registered, so a quick exit is never taken for an orphan's).
//!
//! # The protocol
//!
//! Each frame is `ORGO`, a big-endian `u16` protocol version, two zero bytes,
//! a big-endian `u32` payload length (at most [`MAX_FRAME_BYTES`]), then a
//! JSON payload. The host sends [`Request`]s (an id and an [`Op`]); the agent
//! answers each with one [`AgentMessage::Response`] carrying the same id,
//! after any [`AgentMessage::Output`] chunks of that request, and sends
//! [`AgentMessage::Event`]s on its own. The host starts with [`Op::Hello`],
//! answered by [`Reply::Ready`].
//!
//! Several hosts may connect, one after another (the serial port) or at
//! once (vsock). A request's output and response go to the connection it
//! came on, and are dropped if that connection has ended; events go to the
//! newest connection. Each connection is written by a thread of its own, so
//! one that stalls holds up no other. No output of a request follows its
//! response, even from a background process that kept the pipes open.
//!
//! With the default `guest` feature off, only the protocol is built, for the
//! host side (`orgo-runtime`).
//!
//! ```
//! use orgo_agent::{FrameReader, Op, Request, encode};
//!
//! let frame = encode(&Request { id: 7, op: Op::Ping });
//! assert_eq!(&frame[..4], b"ORGO");
//! let back: Request = FrameReader::new(&frame[..]).read()?.expect("one frame");
//! assert_eq!(back, Request { id: 7, op: Op::Ping });
//! # Ok::<(), orgo_agent::FrameError>(())
//! ```
//!
//! In a test, an agent serves a socket pair (`AgentConfig::sandbox` keeps its
//! files under a scratch directory and leaves the machine alone):
//!
//! ```no_run
//! # #[cfg(feature = "guest")] {
//! use std::os::unix::net::UnixStream;
//! use orgo_agent::{Agent, AgentConfig, Server};
//!
//! let (host, guest) = UnixStream::pair()?;
//! let server = Server::new(Agent::new(AgentConfig::sandbox("/tmp/guest-root")));
//! std::thread::spawn(move || {
//!     let writer = guest.try_clone().expect("a socket clones");
//!     server.serve(guest, Box::new(writer), true)
//! });
//! // ... speak the protocol on `host` ...
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

mod protocol;

#[cfg(feature = "guest")]
mod agent;
#[cfg(feature = "guest")]
mod exec;
#[cfg(feature = "guest")]
mod files;
#[cfg(feature = "guest")]
mod health;
#[cfg(feature = "guest")]
mod machine;
#[cfg(feature = "guest")]
mod process;
#[cfg(feature = "guest")]
mod supervisor;

pub use protocol::{
    AgentMessage, Backoff, Bytes, Command, DEFAULT_HOOK_TIMEOUT_MS, ErrorCode, Event, Exec,
    ExitStatus, FrameError, FrameReader, HEADER_BYTES, HealthSpec, Hook, Identity, MAGIC,
    MAX_FILE_BYTES, MAX_FRAME_BYTES, MAX_HOOK_OUTPUT_BYTES, OnFail, Op, PROTOCOL_VERSION, Probe,
    ReadyInfo, Reply, Request, RestartPolicy, SERIAL_PORT_NAME, ServiceSpec, ServiceState,
    ServiceStatus, Stream, TerminalSpec, VSOCK_PORT, encode, encode_raw, write_frame,
};

#[cfg(feature = "guest")]
pub use agent::{Agent, AgentConfig, Server};
#[cfg(feature = "guest")]
pub use files::{FilePolicy, OpError, User, lookup_group, lookup_user};
#[cfg(feature = "guest")]
pub use machine::{
    NetConfig, PROFILE_ENV, ensure_machine_id, find_serial_port, mount_filesystems, run_init,
    serve_serial, serve_vsock, setup_network,
};
