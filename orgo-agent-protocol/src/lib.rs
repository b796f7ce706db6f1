//! `orgo-agent-protocol`: the wire protocol between the orgo host
//! (`orgo-runtime`) and the guest agent (`orgo-agent`, PID 1 of every
//! computer): the messages and their framing, and nothing else, so that both
//! sides build it and neither builds the other.
//!
//! Each frame is `ORGO`, a big-endian `u16` protocol version, two zero bytes,
//! a big-endian `u32` payload length (at most [`MAX_FRAME_BYTES`]), then a
//! JSON payload. The host sends [`Request`]s (an id and an [`Op`]); the agent
//! answers each with one [`AgentMessage::Response`] carrying the same id,
//! after any [`AgentMessage::Output`] chunks of that request, and sends
//! [`AgentMessage::Event`]s on its own. The host starts with [`Op::Hello`],
//! answered by [`Reply::Ready`].
//!
//! The agent serves it over a virtio-serial port named [`SERIAL_PORT_NAME`]
//! (QEMU) and over vsock port [`VSOCK_PORT`] (Cloud Hypervisor). Several
//! hosts may connect, one after another (the serial port) or at once
//! (vsock). A request's output and response go to the connection it came
//! on, and are dropped if that connection has ended; events go to the newest
//! connection. No output of a request follows its response. Nothing the host
//! sends makes the agent exit: a frame it cannot read gets an error reply
//! (request id 0 when the id could not be read either).
//!
//! A reader checks a frame's length before it buffers anything; an oversize
//! or foreign-version frame is skipped whole and reported, and bytes that
//! are not a frame are skipped up to the next magic, so the stream stays in
//! step ([`FrameError::recoverable`]).
//!
//! ```
//! use orgo_agent_protocol::{FrameReader, Op, Request, encode};
//!
//! let frame = encode(&Request { id: 7, op: Op::Ping });
//! assert_eq!(&frame[..4], b"ORGO");
//! let back: Request = FrameReader::new(&frame[..]).read()?.expect("one frame");
//! assert_eq!(back, Request { id: 7, op: Op::Ping });
//! # Ok::<(), orgo_agent_protocol::FrameError>(())
//! ```

mod automation;
mod desktop;
mod frame;
mod message;

pub use automation::{
    AUTO_STOP_MARK, EventRecord, FileEvent, MAX_EVENTS_READ, MAX_LOG_READ_BYTES, MAX_WEBHOOK_BYTES,
    TriggerAction, TriggerSource, TriggerSpec,
};
pub use desktop::{DesktopSpec, Input, MouseButton, Point, Region, ScrollDirection};
pub use frame::{
    FrameError, FrameReader, HEADER_BYTES, MAGIC, MAX_FRAME_BYTES, PROTOCOL_VERSION,
    SERIAL_PORT_NAME, VSOCK_PORT, encode, encode_raw, write_frame,
};
pub use message::{
    AgentMessage, Backoff, Bytes, Command, DEFAULT_HOOK_TIMEOUT_MS, ErrorCode, Event, Exec,
    ExitStatus, HealthSpec, Hook, Identity, MAX_FILE_BYTES, MAX_HOOK_OUTPUT_BYTES, OnFail, Op,
    Probe, ReadyInfo, Reply, Request, RestartPolicy, ServiceSpec, ServiceState, ServiceStatus,
    Stream, TerminalSpec,
};
