//! A QMP (QEMU Machine Protocol) client over a Unix socket: one JSON
//! object per line; commands answered in order, events interleaved.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::RuntimeError;

/// The longest QMP line accepted (a `query-*` answer is a few KiB).
const MAX_LINE: usize = 1 << 20;

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub(crate) struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects to `path`, retrying until QEMU has made the socket, reads
    /// the greeting and leaves capabilities negotiation mode.
    pub(crate) async fn connect(path: &Path, timeout: Duration) -> Result<Self, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(source) => {
                    return Err(RuntimeError::Io {
                        op: "connect to QMP at",
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        };
        let (read, writer) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
        };
        // QEMU takes one QMP client at a time: a socket another client
        // holds accepts the connection but sends no greeting.
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(500));
        let greeting = tokio::time::timeout(left, qmp.read_message())
            .await
            .map_err(|_| {
                qmp_error(
                    "greeting",
                    format!(
                        "no greeting on `{}`: another client holds the QMP socket",
                        path.display()
                    ),
                )
            })??;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error("greeting", format!("unexpected `{greeting}`")));
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; a QMP `error` answer
    /// is [`RuntimeError::Vmm`] naming the command.
    pub(crate) async fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> Result<Value, RuntimeError> {
        let mut line = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments }))
            .expect("a JSON value serializes");
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .map_err(|e| qmp_error(command, format!("cannot send: {e}")))?;
        loop {
            let message = self.read_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let text = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                return Err(qmp_error(command, text.to_owned()));
            }
            return Err(qmp_error(command, format!("unexpected answer `{message}`")));
        }
    }

    async fn read_message(&mut self) -> Result<Value, RuntimeError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await
            .map_err(|e| qmp_error("read", e.to_string()))?;
        if n == 0 {
            return Err(qmp_error("read", "QEMU closed the QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|e| qmp_error("read", format!("not JSON: {e}")))
    }
}

fn qmp_error(op: &str, message: String) -> RuntimeError {
    RuntimeError::Vmm {
        backend: "qemu",
        op: op.to_owned(),
        message,
    }
}
