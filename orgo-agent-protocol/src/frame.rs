//! Framing: how messages travel on the byte stream between host and agent.
//!
//! A frame is a 12-byte header followed by a JSON payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `ORGO` |
//! | 4..6 | protocol version, big-endian `u16` ([`PROTOCOL_VERSION`]) |
//! | 6..8 | reserved, zero |
//! | 8..12 | payload length, big-endian `u32`, at most [`MAX_FRAME_BYTES`] |
//!
//! The length is checked before anything is buffered; an oversize or
//! foreign-version frame is skipped whole (the stream stays in step) and
//! reported. Bytes that do not start with the magic are skipped up to the next
//! magic, so a reader that joins a stream mid-frame (a virtio-serial port
//! after the host reconnected) finds its footing again.

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::message::ErrorCode;

/// The version this build speaks, in every frame header.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest payload a frame may carry (16 MiB).
pub const MAX_FRAME_BYTES: u32 = 16 << 20;

/// The frame magic.
pub const MAGIC: [u8; 4] = *b"ORGO";

/// The header length.
pub const HEADER_BYTES: usize = 12;

/// The vsock port the agent listens on.
pub const VSOCK_PORT: u32 = 1024;

/// The virtio-serial port name the agent opens (`/dev/virtio-ports/<name>`).
pub const SERIAL_PORT_NAME: &str = "org.orgo.agent";

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed.
    #[error("i/o error on the agent channel")]
    Io(#[from] io::Error),
    /// The stream ended in the middle of a frame.
    #[error("the agent channel closed mid-frame")]
    Truncated,
    /// The header announced more than [`MAX_FRAME_BYTES`]; the payload was skipped.
    #[error("frame of `{0}` bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(u32),
    /// The header carries another protocol version; the payload was skipped.
    #[error("frame has protocol version `{0}`, expected `{PROTOCOL_VERSION}`")]
    Version(u16),
    /// Bytes that are not a frame were skipped.
    #[error("skipped `{0}` bytes that were not a frame")]
    Garbage(usize),
    /// The payload is not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl FrameError {
    /// Whether the stream is still in step after this error (the next frame
    /// can be read).
    pub fn recoverable(&self) -> bool {
        !matches!(self, FrameError::Io(_) | FrameError::Truncated)
    }

    /// The error code a reply to this error carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge(_) => ErrorCode::TooLarge,
            FrameError::Version(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// Serializes `message` into one frame.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(message).expect("protocol messages always serialize");
    encode_raw(PROTOCOL_VERSION, &payload)
}

/// A frame around `payload` as given, with any version (for tests of peers).
pub fn encode_raw(version: u16, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payloads are far below 4 GiB");
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(w: &mut W, message: &T) -> io::Result<()> {
    w.write_all(&encode(message))?;
    w.flush()
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: u32,
    magic_found: bool,
}

impl<R: Read> FrameReader<R> {
    /// A reader with the [`MAX_FRAME_BYTES`] limit.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            max: MAX_FRAME_BYTES,
            magic_found: false,
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads the next frame's payload. `Ok(None)` is a clean end of stream (at
    /// a frame boundary).
    pub fn read_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut header = [0u8; HEADER_BYTES];
        if self.magic_found {
            self.magic_found = false;
        } else {
            if !self.fill(&mut header[..MAGIC.len()])? {
                return Ok(None);
            }
            if header[..MAGIC.len()] != MAGIC {
                // Slide a 4-byte window a byte at a time up to the next magic.
                let mut skipped = 0usize;
                while header[..MAGIC.len()] != MAGIC {
                    header.copy_within(1..MAGIC.len(), 0);
                    if !self.fill(&mut header[MAGIC.len() - 1..MAGIC.len()])? {
                        return Err(FrameError::Garbage(skipped + MAGIC.len()));
                    }
                    skipped += 1;
                }
                // Report the garbage now; the magic just found starts the next read.
                self.magic_found = true;
                return Err(FrameError::Garbage(skipped));
            }
        }
        if !self.fill(&mut header[MAGIC.len()..])? {
            return Err(FrameError::Truncated);
        }
        let version = u16::from_be_bytes([header[4], header[5]]);
        let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if len > self.max {
            self.skip(u64::from(len))?;
            return Err(FrameError::TooLarge(len));
        }
        if version != PROTOCOL_VERSION {
            self.skip(u64::from(len))?;
            return Err(FrameError::Version(version));
        }
        let mut payload = vec![0u8; len as usize];
        if len > 0 && !self.fill(&mut payload)? {
            return Err(FrameError::Truncated);
        }
        Ok(Some(payload))
    }

    /// Reads and decodes the next message.
    pub fn read<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.read_payload()? {
            None => Ok(None),
            Some(payload) => serde_json::from_slice(&payload)
                .map(Some)
                .map_err(|e| FrameError::Malformed(e.to_string())),
        }
    }

    /// Fills `buf` entirely; `false` if the stream ended before the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, FrameError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) if done == 0 => return Ok(false),
                Ok(0) => return Err(FrameError::Truncated),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, len: u64) -> Result<(), FrameError> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        if copied < len {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }
}
