//! The framing on its own: oversize frames are skipped without being held,
//! and a stream that ends mid-frame is told from one that ends between frames.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::io::Read;

use orgo_agent_protocol::{
    FrameError, FrameReader, MAX_FRAME_BYTES, Op, Request, encode, encode_raw,
};

/// A stream of a header that announces `body` bytes, those bytes (made as
/// they are read, never held), then `tail`; it records the largest read it
/// was asked for, which is how much the reader meant to hold at once.
struct Announced {
    header: Vec<u8>,
    body: u64,
    tail: Vec<u8>,
    largest_read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Read for Announced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.largest_read
            .set(self.largest_read.get().max(buf.len()));
        if !self.header.is_empty() {
            let n = buf.len().min(self.header.len());
            buf[..n].copy_from_slice(&self.header[..n]);
            self.header.drain(..n);
            return Ok(n);
        }
        if self.body > 0 {
            let n = buf
                .len()
                .min(usize::try_from(self.body).unwrap_or(usize::MAX));
            buf[..n].fill(b'x');
            self.body -= n as u64;
            return Ok(n);
        }
        let n = buf.len().min(self.tail.len());
        buf[..n].copy_from_slice(&self.tail[..n]);
        self.tail.drain(..n);
        Ok(n)
    }
}

#[test]
fn an_oversize_frame_is_skipped_without_being_buffered() {
    let len = MAX_FRAME_BYTES + 1;
    let mut header = encode_raw(1, b"");
    header[8..12].copy_from_slice(&len.to_be_bytes());
    let largest_read = std::rc::Rc::new(std::cell::Cell::new(0));
    let source = Announced {
        header,
        body: u64::from(len),
        tail: encode(&Request {
            id: 9,
            op: Op::Ping,
        }),
        largest_read: std::rc::Rc::clone(&largest_read),
    };
    let mut reader = FrameReader::new(source);
    match reader.read_payload() {
        Err(FrameError::TooLarge(n)) => assert_eq!(n, len),
        other => panic!("expected `TooLarge`, got {other:?}"),
    }
    // The next frame is read whole: the body was consumed to its last byte.
    let next: Request = reader.read().unwrap().unwrap();
    assert_eq!(
        next,
        Request {
            id: 9,
            op: Op::Ping
        }
    );
    // Never asked for more than a small buffer's worth at once: a reader that
    // buffered the frame would have asked for all of it.
    assert!(
        largest_read.get() <= 1 << 20,
        "asked to read `{}` bytes at once",
        largest_read.get()
    );
}

#[test]
fn frame_reader_reports_truncation_and_end_of_stream() {
    let frame = encode(&Request {
        id: 1,
        op: Op::Ping,
    });
    let mut reader = FrameReader::new(&frame[..frame.len() - 1]);
    assert!(!reader.read::<Request>().unwrap_err().recoverable());
    let mut reader = FrameReader::new(&b""[..]);
    assert!(reader.read::<Request>().unwrap().is_none());
}
