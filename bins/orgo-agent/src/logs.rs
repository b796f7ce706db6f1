//! Service and trigger logs: the agent reads each service's stdout and
//! stderr from a pipe and appends them to its log file, rotating it at
//! [`LOG_CAP_BYTES`]: the file is renamed to `FILE.1` (replacing the one
//! before) and a new one started, so a log takes at most twice the cap on
//! disk. A log's bytes are numbered from the first ever written, across
//! rotations, so a reader can follow it without losing its place; the
//! agent keeps, for `--since`, the offset of the first write of each second
//! that saw one (the newest [`INDEX_ENTRIES`]).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use orgo_agent_protocol::{ErrorCode, MAX_LOG_READ_BYTES};

use crate::events::now_ms;
use crate::files::OpError;

/// The size at which a log file is rotated: 10 MiB (one rotated file is
/// kept, so a log takes at most 20 MiB).
pub(crate) const LOG_CAP_BYTES: u64 = 10 << 20;

/// How many (time, offset) marks a log keeps for `since` reads.
pub(crate) const INDEX_ENTRIES: usize = 8192;

/// Where logs go unless a service's `log` names a file: `/var/log/orgo`.
pub(crate) const LOG_DIR: &str = "var/log/orgo";

/// One log file and where its bytes are.
pub(crate) struct LogFile {
    path: PathBuf,
    cap: u64,
    file: Option<File>,
    /// The current file's size.
    size: u64,
    /// The offset of the current file's first byte.
    base: u64,
    /// The offset of `FILE.1`'s first byte, when this agent rotated it.
    rotated_base: Option<u64>,
    /// (unix ms, offset) of the first write of each second.
    index: VecDeque<(u64, u64)>,
    /// Where its lines are shipped (telemetry), and the line begun.
    tap: Option<(String, Arc<crate::telemetry::Shipper>, Vec<u8>)>,
}

impl LogFile {
    fn open(path: &Path, cap: u64) -> LogFile {
        let mut log = LogFile {
            path: path.to_path_buf(),
            cap,
            file: None,
            size: 0,
            base: 0,
            rotated_base: None,
            index: VecDeque::new(),
            tap: None,
        };
        log.reopen();
        log
    }

    /// Opens the file for appending (creating it and its directory); what
    /// is in it already counts as the log's first bytes.
    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    fn rotated_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends `data`, rotating first when it would pass the cap.
    pub(crate) fn append(&mut self, data: &[u8]) {
        if self.size > 0 && self.size + data.len() as u64 > self.cap {
            let _ = std::fs::rename(&self.path, self.rotated_path());
            self.rotated_base = Some(self.base);
            self.base += self.size;
            self.reopen();
            // A file someone else filled again is not ours to count.
            self.base = self.base.saturating_sub(self.size);
            let oldest = self.rotated_base.unwrap_or(self.base);
            while self.index.front().is_some_and(|&(_, off)| off < oldest) {
                self.index.pop_front();
            }
        }
        let offset = self.base + self.size;
        let now = now_ms();
        if self
            .index
            .back()
            .is_none_or(|&(ts, _)| now / 1000 > ts / 1000)
        {
            if self.index.len() >= INDEX_ENTRIES {
                self.index.pop_front();
            }
            self.index.push_back((now, offset));
        }
        if let Some(file) = &mut self.file
            && file.write_all(data).is_ok()
        {
            self.size += data.len() as u64;
        }
        if let Some((service, shipper, partial)) = &mut self.tap {
            partial.extend_from_slice(data);
            let mut lines = Vec::new();
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            // A line with no end in sight is shipped in pieces.
            if partial.len() > crate::telemetry::MAX_LINE_BYTES {
                lines.push(String::from_utf8_lossy(partial).into_owned());
                partial.clear();
            }
            if !lines.is_empty() {
                shipper.push(service, lines);
            }
        }
    }

    /// The end: where the next byte written will be.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Reads from `offset` (else the first write at or after
    /// `since_unix_ms`, else the oldest byte kept), at most `max` bytes, not
    /// across a rotation. Returns the bytes, their offset, the next offset.
    pub(crate) fn read(
        &self,
        offset: Option<u64>,
        since_unix_ms: Option<u64>,
        max: u64,
    ) -> (Vec<u8>, u64, u64) {
        let oldest = self.rotated_base.unwrap_or(self.base);
        let start = match (offset, since_unix_ms) {
            (Some(offset), _) => offset,
            (None, Some(since)) => self
                .index
                .iter()
                .find(|&&(ts, _)| ts >= since)
                .map_or(self.end(), |&(_, off)| off),
            (None, None) => oldest,
        };
        let start = start.clamp(oldest, self.end());
        let (path, file_base, file_end) = match self.rotated_base {
            Some(rotated) if start < self.base => (self.rotated_path(), rotated, self.base),
            _ => (self.path.clone(), self.base, self.end()),
        };
        let want = (file_end - start).min(max);
        let mut data = Vec::new();
        if want > 0
            && let Ok(mut file) = File::open(&path)
            && file.seek(SeekFrom::Start(start - file_base)).is_ok()
        {
            let _ = file.take(want).read_to_end(&mut data);
        }
        let next = start + data.len() as u64;
        // A rotated file that lost bytes: go on from the current file.
        let next = if data.len() as u64 != want {
            file_end
        } else {
            next
        };
        (data, start, next)
    }
}

/// Which logs are shipped, and where to.
type Shipping = (Vec<String>, Arc<crate::telemetry::Shipper>);

/// Every log the agent writes, by name.
#[derive(Default)]
pub(crate) struct Logs {
    logs: Mutex<BTreeMap<String, Arc<Mutex<LogFile>>>>,
    shipping: Mutex<Option<Shipping>>,
}

/// Whether log `name` at `path` is one of `wanted` (names or paths).
fn wanted(wanted: &[String], name: &str, path: &Path) -> bool {
    wanted
        .iter()
        .any(|w| w == name || Path::new(w) == path || path.ends_with(w.trim_start_matches('/')))
}

pub(crate) fn lock_log(log: &Mutex<LogFile>) -> MutexGuard<'_, LogFile> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Logs {
    /// The log `name` writing to `path`: the one open already when it writes
    /// there, else a new one.
    pub(crate) fn open(&self, name: &str, path: &Path) -> Arc<Mutex<LogFile>> {
        self.open_capped(name, path, LOG_CAP_BYTES)
    }

    /// [`Logs::open`] with another cap (tests).
    pub(crate) fn open_capped(&self, name: &str, path: &Path, cap: u64) -> Arc<Mutex<LogFile>> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(name)
            && lock_log(log).path == path
        {
            return Arc::clone(log);
        }
        let mut file = LogFile::open(path, cap);
        if let Some((names, shipper)) = &*self.shipping.lock().unwrap_or_else(|e| e.into_inner())
            && wanted(names, name, path)
        {
            file.tap = Some((name.to_owned(), Arc::clone(shipper), Vec::new()));
        }
        let log = Arc::new(Mutex::new(file));
        logs.insert(name.to_owned(), Arc::clone(&log));
        log
    }

    /// Ships the lines of the logs `names` (names or paths) to `shipper`
    /// from now on (none, without one).
    pub(crate) fn set_shipping(
        &self,
        names: Vec<String>,
        shipper: Option<Arc<crate::telemetry::Shipper>>,
    ) {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for (name, log) in logs.iter() {
            let mut log = lock_log(log);
            log.tap = match &shipper {
                Some(shipper) if wanted(&names, name, &log.path) => {
                    Some((name.clone(), Arc::clone(shipper), Vec::new()))
                }
                _ => None,
            };
        }
        *self.shipping.lock().unwrap_or_else(|e| e.into_inner()) = shipper.map(|s| (names, s));
    }

    /// The logs' names.
    pub(crate) fn names(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// [`LogFile::read`] of log `name`.
    pub(crate) fn read(
        &self,
        name: &str,
        offset: Option<u64>,
        since_unix_ms: Option<u64>,
        max: Option<u32>,
    ) -> Result<(Vec<u8>, u64, u64), OpError> {
        let log = self
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| OpError::new(ErrorCode::NotFound, format!("no log `{name}`")))?;
        let max = u64::from(max.unwrap_or(MAX_LOG_READ_BYTES).min(MAX_LOG_READ_BYTES));
        Ok(lock_log(&log).read(offset, since_unix_ms, max))
    }
}

/// The default log file of service `name` under `root`.
pub(crate) fn default_path(root: &Path, name: &str) -> PathBuf {
    root.join(LOG_DIR).join(format!("{name}.log"))
}

/// Copies what `pipe` yields into `log` until its writers are gone; each
/// chunk is also handed to `tap` (telemetry shipping).
pub(crate) fn pump(mut pipe: impl Read, log: &Mutex<LogFile>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => lock_log(log).append(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The two ends a process writes its stdout and stderr to, and word of
/// when everything it wrote is in its log.
pub(crate) struct Piped {
    pub(crate) stdout: std::process::Stdio,
    pub(crate) stderr: std::process::Stdio,
    /// Disconnects once the pump has written the last byte (every writer gone).
    pub(crate) done: std::sync::mpsc::Receiver<()>,
}

/// A pipe whose write end goes to a process's stdout and stderr, and whose
/// read end is pumped into `log` by a thread of its own.
pub(crate) fn piped_to(log: Arc<Mutex<LogFile>>, thread_name: String) -> std::io::Result<Piped> {
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let copy = writer.try_clone()?;
    let reader = File::from(reader);
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            pump(reader, &log);
            drop(done_tx);
        })?;
    Ok(Piped {
        stdout: std::process::Stdio::from(writer),
        stderr: std::process::Stdio::from(copy),
        done,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("orgo-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_keeps_two_files_under_the_cap_and_offsets_go_on() {
        let dir = scratch("rotate");
        let path = dir.join("svc.log");
        let mut log = LogFile::open(&path, 1000);
        let line = [b'x'; 99];
        for _ in 0..100 {
            log.append(&line);
            log.append(b"\n");
        }
        assert_eq!(log.end(), 10_000);
        let current = std::fs::metadata(&path).unwrap().len();
        let rotated = std::fs::metadata(dir.join("svc.log.1")).unwrap().len();
        assert!(current <= 1000 && rotated <= 1000, "{current} {rotated}");
        assert_eq!(current + rotated, 2000, "the newest 2000 bytes are kept");
        // From the start: the oldest byte kept, in the rotated file.
        let (data, from, next) = log.read(None, None, 1 << 20);
        assert_eq!(from, 8000);
        assert_eq!(next, 9000);
        assert_eq!(data.len(), 1000);
        let (data, from, next) = log.read(Some(next), None, 1 << 20);
        assert_eq!((from, next, data.len()), (9000, 10_000, 1000));
        let (data, _, next) = log.read(Some(next), None, 1 << 20);
        assert_eq!((data.len(), next), (0, 10_000));
        // A bounded read.
        let (data, from, next) = log.read(Some(9500), None, 10);
        assert_eq!((data.len(), from, next), (10, 9500, 9510));
    }

    #[test]
    fn since_starts_at_the_first_write_of_that_second() {
        let dir = scratch("since");
        let mut log = LogFile::open(&dir.join("a.log"), LOG_CAP_BYTES);
        log.append(b"old\n");
        let cut = now_ms().div_ceil(1000) * 1000;
        while now_ms() < cut {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        log.append(b"new\n");
        let (data, ..) = log.read(None, Some(cut), 1 << 20);
        assert_eq!(data, b"new\n");
        let (data, ..) = log.read(None, Some(now_ms() + 5000), 1 << 20);
        assert!(data.is_empty());
        let (data, ..) = log.read(None, None, 1 << 20);
        assert_eq!(data, b"old\nnew\n");
    }

    #[test]
    fn an_existing_file_counts_as_the_first_bytes() {
        let dir = scratch("existing");
        let path = dir.join("b.log");
        std::fs::write(&path, "before\n").unwrap();
        let logs = Logs::default();
        let log = logs.open("b", &path);
        lock_log(&log).append(b"after\n");
        let (data, from, next) = logs.read("b", None, None, None).unwrap();
        assert_eq!(
            (data.as_slice(), from, next),
            (&b"before\nafter\n"[..], 0, 13)
        );
        assert!(
            Arc::ptr_eq(&log, &logs.open("b", &path)),
            "one log per path"
        );
        assert_eq!(logs.names(), ["b"]);
        assert_eq!(
            logs.read("c", None, None, None).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
