//! The embedded default backend: a directory on a local filesystem.
//!
//! ```text
//! <root>/
//!   VERSION                       `orgo-store 1`: the layout's version
//!   blobs/sha256/<2 hex>/<64 hex> read-only files, named by their SHA-256
//!   refs/<key>                    one line: `sha256:<64 hex>`
//!   locks/<key>.lock              flock(2) files (named locks)
//!   tmp/                          files being written, each flock'ed by its writer
//! ```
//!
//! Every write goes to `tmp/`, is fsynced, then renamed (or, to create a ref
//! only if absent, hard-linked) under its final name, and the directory is
//! fsynced: a crash at any moment leaves either the old state or the new,
//! never a partial object under a final name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::error::StoreError;
use crate::service::{
    BlobInfo, BlobReader, BlobService, LockGuard, LockMode, LockService, PutMode, RefKey,
    RefService,
};

const LAYOUT: &str = "orgo-store 1\n";
const CHUNK: usize = 1 << 20;
/// A ref file is one line; anything longer is not a ref.
const REF_MAX: u64 = 128;

/// A store in a local directory. Cheap to clone; safe to share between
/// threads and between processes using the same root.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
}

/// What [`LocalStore::materialize`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Materialized {
    /// A private, writable copy-on-write clone (reflink) at the destination;
    /// no bytes were copied.
    Cloned(PathBuf),
    /// The filesystem cannot clone: the store's own read-only file, shared by
    /// every user. Put a copy-on-write layer over it (a qcow2 overlay for a
    /// disk, a private mapping for guest memory); never write to it.
    Shared(PathBuf),
}

impl Materialized {
    /// The file to use.
    pub fn path(&self) -> &Path {
        match self {
            Self::Cloned(path) | Self::Shared(path) => path,
        }
    }
}

impl LocalStore {
    /// Opens the store at `root`, creating it if needed.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let store = Self {
            root: Arc::new(root),
        };
        let this = store.clone();
        blocking(move || this.init()).await?;
        Ok(store)
    }

    /// The documented default root: `$ORGO_HOME`, else `$XDG_DATA_HOME/orgo`,
    /// else `$HOME/.local/share/orgo`.
    pub fn default_root() -> Option<PathBuf> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("ORGO_HOME")
            .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("orgo")))
            .or_else(|| var("HOME").map(|h| h.join(".local/share/orgo")))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is stored).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// Makes a stored blob available at `dest` without copying its bytes:
    /// a reflink clone where the filesystem supports it, else the store's
    /// read-only file itself (see [`Materialized::Shared`]). `None` if the
    /// blob is not stored.
    ///
    /// The content is not re-hashed here (a launch must not read gigabytes);
    /// blobs are hashed when written, stored read-only, and checked by
    /// [`crate::verify`].
    pub async fn materialize(
        &self,
        digest: &Digest,
        dest: &Path,
    ) -> Result<Option<Materialized>, StoreError> {
        let src = self.blob_path(digest);
        let dest = dest.to_owned();
        blocking(move || {
            let source = match File::open(&src) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io("open", &src)(e)),
            };
            let target = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)
                .map_err(StoreError::io("create", &dest))?;
            match rustix::fs::ioctl_ficlone(&target, &source) {
                Ok(()) => Ok(Some(Materialized::Cloned(dest))),
                Err(_) => {
                    drop(target);
                    fs::remove_file(&dest).map_err(StoreError::io("remove", &dest))?;
                    Ok(Some(Materialized::Shared(src)))
                }
            }
        })
        .await
    }

    fn init(&self) -> Result<(), StoreError> {
        for dir in ["blobs/sha256", "refs", "locks", "tmp"] {
            let path = self.root.join(dir);
            create_dir_durable(&path)?;
        }
        let version = self.root.join("VERSION");
        match read_bounded(&version, 64) {
            Ok(text) if text == LAYOUT.as_bytes() => Ok(()),
            Ok(text) => Err(StoreError::Invalid {
                what: "store layout",
                location: version.display().to_string(),
                reason: format!(
                    "found `{}`, this orgo reads `{}`",
                    String::from_utf8_lossy(&text).trim(),
                    LAYOUT.trim()
                ),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = self.temp_file()?;
                write_all(&tmp, LAYOUT.as_bytes())?;
                self.publish_rename(tmp, &version)
            }
            Err(e) => Err(StoreError::io("read", &version)(e)),
        }
    }

    fn ref_path(&self, key: &RefKey) -> PathBuf {
        self.root.join("refs").join(key.as_str())
    }

    /// A new, locked, empty file in `tmp/`.
    fn temp_file(&self) -> Result<TempFile, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.root.join("tmp").join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        // Held until the file is renamed away or removed: gc only sweeps
        // temp files no live writer holds.
        file.lock().map_err(StoreError::io("lock", &path))?;
        Ok(TempFile {
            path,
            file,
            done: false,
        })
    }

    /// fsyncs `tmp`, renames it to `dest` and fsyncs `dest`'s directory.
    fn publish_rename(&self, mut tmp: TempFile, dest: &Path) -> Result<(), StoreError> {
        tmp.file
            .sync_all()
            .map_err(StoreError::io("fsync", &tmp.path))?;
        let dir = dest.parent().expect("store paths have a parent");
        create_dir_durable(dir)?;
        fs::rename(&tmp.path, dest).map_err(StoreError::io("rename", dest))?;
        tmp.done = true;
        sync_dir(dir)
    }

    /// Three stages on three threads, a few chunks in flight between them:
    /// one reads, this one hashes, one writes. Storing costs about the
    /// slowest stage (hashing), not the sum of the three.
    fn put_blocking(&self, source: &mut (dyn Read + Send)) -> Result<BlobInfo, StoreError> {
        let tmp = self.temp_file()?;
        let (read_tx, read_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..6 {
            empty_tx
                .send(vec![0; CHUNK])
                .expect("the receiver is alive");
        }
        let file = &tmp.file;
        let (info, read, written) = std::thread::scope(|scope| {
            // Each stage stops when its neighbour hangs up, so a failure
            // anywhere ends all three; the errors are looked at below.
            let reader = scope.spawn(move || -> io::Result<()> {
                while let Ok(mut buf) = empty_rx.recv() {
                    let n = fill(source, &mut buf)?;
                    if n == 0 || read_tx.send((buf, n)).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            let writer = scope.spawn(move || -> io::Result<()> {
                let mut file = file;
                for (buf, n) in full_rx {
                    file.write_all(&buf[..n])?;
                    let _ = empty_tx.send(buf); // the reader may be done
                }
                Ok(())
            });
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for (buf, n) in read_rx {
                hasher.update(&buf[..n]);
                size += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            drop(full_tx);
            let digest = Digest::from_sha256(hasher.finalize().into());
            (BlobInfo { digest, size }, reader.join(), writer.join())
        });
        read.expect("the reader thread does not panic")
            .map_err(StoreError::io("read", "<source>"))?;
        written
            .expect("the writer thread does not panic")
            .map_err(StoreError::io("write", &tmp.path))?;
        self.seal(tmp, info)
    }

    /// Makes `tmp` (holding the blob `info`) read-only and moves it in place.
    fn seal(&self, tmp: TempFile, info: BlobInfo) -> Result<BlobInfo, StoreError> {
        tmp.file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(StoreError::io("chmod", &tmp.path))?;
        let dest = self.blob_path(&info.digest);
        self.publish_rename(tmp, &dest)?;
        Ok(info)
    }

    fn put_file_blocking(&self, path: &Path, mode: PutMode) -> Result<BlobInfo, StoreError> {
        let mut source = File::open(path).map_err(StoreError::io("open", path))?;
        if mode == PutMode::Copy {
            return self.put_blocking(&mut source);
        }
        // Move: hash in place, then rename into the store, no bytes copied.
        // The source stays locked by this writer, so gc's sweep of `tmp/`
        // never takes it while it is on its way.
        source.lock().map_err(StoreError::io("lock", path))?;
        let info = hash_read_ahead(&mut source).map_err(StoreError::io("read", path))?;
        // Into tmp/ first: the final name must only ever hold a complete,
        // fsynced, read-only file, and the rename may cross filesystems.
        let mut slot = self.temp_file()?;
        match fs::rename(path, &slot.path) {
            Ok(()) => {
                slot.done = true; // the name now holds the source
                let moved = TempFile {
                    path: slot.path.clone(),
                    file: source,
                    done: false,
                };
                drop(slot);
                self.seal(moved, info)
            }
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                drop(slot);
                let mut source = File::open(path).map_err(StoreError::io("open", path))?;
                let stored = self.put_blocking(&mut source)?;
                if stored != info {
                    return Err(StoreError::Invalid {
                        what: "source file",
                        location: path.display().to_string(),
                        reason: "it changed while it was being stored".into(),
                    });
                }
                fs::remove_file(path).map_err(StoreError::io("remove", path))?;
                Ok(stored)
            }
            Err(e) => Err(StoreError::io("rename", path)(e)),
        }
    }

    fn list_blobs_blocking(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let top = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for shard in read_dir(&top)? {
            let shard = shard.map_err(StoreError::io("list", &top))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in read_dir(&shard)? {
                let entry = entry.map_err(StoreError::io("list", &shard))?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                let size = entry
                    .metadata()
                    .map_err(StoreError::io("stat", entry.path()))?
                    .len();
                out.push(BlobInfo { digest, size });
            }
        }
        out.sort_by_key(|b| b.digest);
        Ok(out)
    }

    fn list_refs_blocking(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        let refs_root = self.root.join("refs");
        let mut out = Vec::new();
        let mut stack = vec![self.ref_path(prefix)];
        while let Some(path) = stack.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("stat", &path)(e)),
            };
            if meta.is_dir() {
                for entry in read_dir(&path)? {
                    stack.push(entry.map_err(StoreError::io("list", &path))?.path());
                }
                continue;
            }
            let relative = path
                .strip_prefix(&refs_root)
                .expect("walked from under the refs directory");
            // A file no key can name was not written by a store: skip it.
            if let Ok(key) = RefKey::new(&relative.to_string_lossy()) {
                out.push(key);
            }
        }
        out.sort();
        Ok(out)
    }

    fn read_ref(&self, path: &Path) -> Result<Option<Digest>, StoreError> {
        let bytes = match read_bounded(path, REF_MAX) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", path)(e)),
        };
        let invalid = || StoreError::Invalid {
            what: "ref",
            location: path.display().to_string(),
            reason: "expected one line `sha256:<64 hex>`".into(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let line = text.strip_suffix('\n').ok_or_else(invalid)?;
        line.parse().map(Some).map_err(|_| invalid())
    }

    fn ref_temp(&self, digest: &Digest) -> Result<TempFile, StoreError> {
        let tmp = self.temp_file()?;
        write_all(&tmp, format!("{digest}\n").as_bytes())?;
        tmp.file
            .sync_all()
            .map_err(StoreError::io("fsync", &tmp.path))?;
        Ok(tmp)
    }

    /// Removes temp files no live writer holds (left by crashed writers).
    fn sweep_blocking(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        // Temp files: named `<pid>-...`. One is abandoned when its writer
        // process is gone; a live writer's file may be unlocked for the
        // moment between its creation and its lock, so it is left alone.
        let dir = self.root.join("tmp");
        for entry in read_dir(&dir)? {
            let path = entry.map_err(StoreError::io("list", &dir))?.path();
            if writer_alive(&path) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue; // renamed away meanwhile
            };
            if file.try_lock().is_ok() {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove", &path)(e)),
                }
            }
        }
        if removed > 0 {
            sync_dir(&dir)?;
        }
        // Scratch files and directories of writers that are gone.
        let scratch = self.root.join("scratch");
        if scratch.is_dir() {
            for entry in read_dir(&scratch)? {
                let path = entry.map_err(StoreError::io("list", &scratch))?.path();
                if !writer_alive(&path) {
                    let gone = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    match gone {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io("remove", &path)(e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// A new, empty directory on the store's filesystem for one process's
    /// work in progress (a build writes its files there, then moves them
    /// into the store with [`PutMode::Move`]). Removed by gc once this
    /// process is gone; remove it when done.
    pub async fn scratch_dir(&self) -> Result<PathBuf, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.root.join("scratch").join(format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let made = path.clone();
        blocking(move || create_dir_durable(&made)).await?;
        Ok(path)
    }
}

/// Whether the process named by a `<pid>-...` file name still runs (a name
/// without a pid has no live writer).
fn writer_alive(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

/// `create_dir_all`, then an fsync of the parent of every directory it
/// made, so a new directory (and what is later renamed into it) survives a
/// power loss.
fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
    for made in missing.iter().rev() {
        if let Some(parent) = made.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

#[async_trait]
impl BlobService for LocalStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat", path)(e)),
        }
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, StoreError> {
        let path = self.blob_path(digest);
        let opened = path.clone();
        let opened = blocking(move || match File::open(&opened) {
            Ok(file) => {
                let size = file
                    .metadata()
                    .map_err(StoreError::io("stat", &opened))?
                    .len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open", &opened)(e)),
        })
        .await?;
        let Some((file, size)) = opened else {
            return Ok(None);
        };
        Ok(Some(BlobReader::new(
            ReadAhead::spawn(file),
            *digest,
            size,
            path.display().to_string(),
        )))
    }

    async fn put(
        &self,
        source: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<BlobInfo, StoreError> {
        // Bytes arrive on the async side; hashing and writing happen on a
        // blocking thread, a bounded channel of chunks between them.
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        let this = self.clone();
        let writer = tokio::task::spawn_blocking(move || {
            this.put_blocking(&mut ChannelReader {
                rx,
                current: Vec::new(),
                pos: 0,
            })
        });
        loop {
            let mut buf = vec![0; CHUNK];
            let item = match source.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break; // the writer stopped (its error is reported below)
            }
        }
        drop(tx);
        writer.await.map_err(StoreError::Task)?
    }

    async fn put_file(&self, path: &Path, mode: PutMode) -> Result<BlobInfo, StoreError> {
        let this = self.clone();
        let path = path.to_owned();
        blocking(move || this.put_file_blocking(&path, mode)).await
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        blocking(move || remove_and_sync(&path)).await
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let this = self.clone();
        blocking(move || this.list_blobs_blocking()).await
    }

    async fn remove_incomplete(&self) -> Result<u64, StoreError> {
        let this = self.clone();
        blocking(move || this.sweep_blocking()).await
    }
}

#[async_trait]
impl RefService for LocalStore {
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError> {
        let this = self.clone();
        let path = self.ref_path(key);
        blocking(move || {
            if path.is_dir() {
                return Ok(None);
            }
            this.read_ref(&path)
        })
        .await
    }

    async fn create_ref(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<Option<Digest>, StoreError> {
        let this = self.clone();
        let path = self.ref_path(key);
        let digest = *digest;
        blocking(move || {
            let tmp = this.ref_temp(&digest)?;
            let dir = path.parent().expect("ref paths have a parent");
            create_dir_durable(dir)?;
            // link(2) fails if the name exists: the atomic create-if-absent.
            match fs::hard_link(&tmp.path, &path) {
                Ok(()) => {
                    sync_dir(dir)?;
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => this
                    .read_ref(&path)?
                    .map(Some)
                    .ok_or_else(|| StoreError::Invalid {
                        what: "ref",
                        location: path.display().to_string(),
                        reason: "it vanished while it was being read".into(),
                    }),
                Err(e) => Err(StoreError::io("link", &path)(e)),
            }
        })
        .await
    }

    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError> {
        let this = self.clone();
        let path = self.ref_path(key);
        let digest = *digest;
        blocking(move || {
            let tmp = this.ref_temp(&digest)?;
            this.publish_rename(tmp, &path)
        })
        .await
    }

    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError> {
        let path = self.ref_path(key);
        blocking(move || remove_and_sync(&path)).await
    }

    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        let this = self.clone();
        let prefix = prefix.clone();
        blocking(move || this.list_refs_blocking(&prefix)).await
    }
}

#[async_trait]
impl LockService for LocalStore {
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        blocking(move || {
            let dir = path.parent().expect("lock paths have a parent");
            create_dir_durable(dir)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(StoreError::io("open", &path))?;
            match mode {
                LockMode::Shared => file.lock_shared(),
                LockMode::Exclusive => file.lock(),
            }
            .map_err(StoreError::io("lock", &path))?;
            Ok(LockGuard::new(file))
        })
        .await
    }
}

/// A file in `tmp/`, removed on drop unless it was moved to its final name.
struct TempFile {
    path: PathBuf,
    file: File,
    done: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A file read on a blocking thread a few chunks ahead of its consumer, so
/// reading overlaps with the consumer's hashing and writing.
struct ReadAhead {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    fn spawn(mut file: File) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0; CHUNK];
                let item = match fill(&mut file, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    break; // the reader was dropped, or the error is sent
                }
            }
        });
        Self {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.current.len() {
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => {
                    this.current = chunk?;
                    this.pos = 0;
                }
                None => return std::task::Poll::Ready(Ok(())), // the end
            }
        }
        let n = buf.remaining().min(this.current.len() - this.pos);
        buf.put_slice(&this.current[this.pos..this.pos + n]);
        this.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0), // sender finished
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::Task)?
}

/// The digest and size of everything `source` yields, read on a second
/// thread a few chunks ahead of the hashing.
fn hash_read_ahead(source: &mut (dyn Read + Send)) -> io::Result<BlobInfo> {
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        empty_tx
            .send(vec![0; CHUNK])
            .expect("the receiver is alive");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> io::Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                let n = fill(source, &mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for (buf, n) in full_rx {
            hasher.update(&buf[..n]);
            size += n as u64;
            let _ = empty_tx.send(buf); // the reader may be done
        }
        reader.join().expect("the reader thread does not panic")?;
        Ok(BlobInfo {
            digest: Digest::from_sha256(hasher.finalize().into()),
            size,
        })
    })
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn fill(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn write_all(tmp: &TempFile, bytes: &[u8]) -> Result<(), StoreError> {
    (&tmp.file)
        .write_all(bytes)
        .map_err(StoreError::io("write", &tmp.path))
}

fn read_dir(path: &Path) -> Result<fs::ReadDir, StoreError> {
    fs::read_dir(path).map_err(StoreError::io("list", path))
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync", dir))
}

fn remove_and_sync(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(path.parent().expect("store paths have a parent"))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}
