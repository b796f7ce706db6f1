//! `orgo-agent`: the guest agent of every orgo computer.
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
//! tmux sessions, the login environment, a restored clone's new identity,
//! and the desktop's computer-use actions (screenshots as PNG, pointer and
//! keys), in-process over the X11 protocol (see the `desktop` module).
//! Nothing the host sends makes it exit: a bad frame gets an error reply.
//!
//! As PID 1 it must reap every orphan, and a `wait` for any child would steal
//! the statuses other threads wait for; so every child starts through one
//! spawner whose reaper thread waits for any child and hands each status to
//! the thread that started it (the registry is locked from `fork` until the
//! pid is registered, so a quick exit is never taken for an orphan's).
//!
//! The wire protocol it speaks lives in the `orgo-agent-protocol` crate,
//! which the host side (`orgo-runtime`) builds without building the agent.
//! Several hosts may connect, one after another (the serial port) or at
//! once (vsock); each connection is written by a thread of its own, so one
//! that stalls holds up no other, and no output of a request follows its
//! response, even from a background process that kept the pipes open.
//!
//! In a test, an agent serves a socket pair (`AgentConfig::sandbox` keeps its
//! files under a scratch directory and leaves the machine alone):
//!
//! ```no_run
//! use std::os::unix::net::UnixStream;
//! use orgo_agent::{Agent, AgentConfig, Server};
//!
//! let (host, guest) = UnixStream::pair()?;
//! let server = Server::new(Agent::new(AgentConfig::sandbox("/tmp/guest-root")));
//! std::thread::spawn(move || {
//!     let writer = guest.try_clone().expect("a socket clones");
//!     server.serve(guest, Box::new(writer), true)
//! });
//! // ... speak the protocol (`orgo_agent_protocol`) on `host` ...
//! # Ok::<(), std::io::Error>(())
//! ```

mod agent;
mod autostop;
mod cron;
mod desktop;
mod events;
mod exec;
mod files;
mod health;
mod logs;
mod machine;
mod metrics;
mod process;
mod supervisor;
mod telemetry;
mod triggers;

pub use agent::{Agent, AgentConfig, Server};
pub use files::{FilePolicy, OpError, User, lookup_group, lookup_user};
pub use machine::{
    NetConfig, PROFILE_ENV, ensure_machine_id, find_serial_port, mount_filesystems, run_init,
    serve_serial, serve_vsock, setup_network,
};
