//! Files the host writes and reads, users by name, and the path policy.
//!
//! Users and groups are read from `/etc/passwd` and `/etc/group` directly: a
//! static binary has no NSS modules, and the guest has no other user database.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use orgo_agent_protocol::{ErrorCode, MAX_FILE_BYTES};

/// A failed agent operation, sent back as [`Reply::Error`](orgo_agent_protocol::Reply::Error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Kind.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
}

impl OpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OpError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::Io
        };
        OpError::new(code, format!("{what}: {e}"))
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// Looks a user up by name (or by decimal uid) in `<root>/etc/passwd`.
pub fn lookup_user(root: &Path, name: &str) -> Result<User, OpError> {
    let text = fs::read_to_string(root.join("etc/passwd"))
        .map_err(|e| OpError::io("cannot read `/etc/passwd`", &e))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        if f[0] == name || f[2] == name {
            let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
                continue;
            };
            return Ok(User {
                name: f[0].to_string(),
                uid,
                gid,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            });
        }
    }
    Err(OpError::new(
        ErrorCode::NotFound,
        format!("no user `{name}` in `/etc/passwd`"),
    ))
}

/// Looks a group id up by name (or decimal gid) in `<root>/etc/group`.
pub fn lookup_group(root: &Path, name: &str) -> Result<u32, OpError> {
    let text = fs::read_to_string(root.join("etc/group"))
        .map_err(|e| OpError::io("cannot read `/etc/group`", &e))?;
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && (f[0] == name || f[2] == name)).then(|| f[2].parse().ok())?
        })
        .next()
        .ok_or_else(|| {
            OpError::new(
                ErrorCode::NotFound,
                format!("no group `{name}` in `/etc/group`"),
            )
        })
}

/// Which paths the host may write and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePolicy {
    /// Paths under these (and these themselves) are refused.
    pub denied: Vec<PathBuf>,
}

impl Default for FilePolicy {
    /// Everything but the kernel's pseudo file systems.
    fn default() -> Self {
        FilePolicy {
            denied: ["/proc", "/sys", "/dev"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

impl FilePolicy {
    /// Checks that `path` is absolute, has no `.` or `..` component and is not
    /// denied.
    pub fn check(&self, path: &str) -> Result<PathBuf, OpError> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(OpError::new(
                ErrorCode::PathDenied,
                format!("`{path}` is not an absolute path"),
            ));
        }
        if path.contains('\0')
            || p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(OpError::new(
                ErrorCode::PathDenied,
                format!("`{path}` has a `.` or `..` component"),
            ));
        }
        if p.parent().is_none() {
            return Err(OpError::new(
                ErrorCode::PathDenied,
                format!("`{path}` is the root directory"),
            ));
        }
        if let Some(denied) = self.denied.iter().find(|d| p.starts_with(d)) {
            return Err(OpError::new(
                ErrorCode::PathDenied,
                format!(
                    "`{path}` is under `{}`, which the agent does not touch",
                    denied.display()
                ),
            ));
        }
        Ok(p.to_path_buf())
    }
}

/// Writes `content` to `path` atomically: a temporary file beside it, then a
/// rename. Parent directories are created (owned by root, mode 0755).
pub(crate) fn write_file(
    root: &Path,
    policy: &FilePolicy,
    path: &str,
    content: &[u8],
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), OpError> {
    let path = policy.check(path)?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(OpError::new(
            ErrorCode::TooLarge,
            format!(
                "file of `{}` bytes is over the {MAX_FILE_BYTES}-byte limit",
                content.len()
            ),
        ));
    }
    let mode = mode.unwrap_or(0o644);
    if mode > 0o7777 {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            format!("mode `{mode:o}` has bits beyond 07777"),
        ));
    }
    // Resolve names before touching the disk, so a bad name changes nothing.
    let user = owner.map(|o| lookup_user(root, o)).transpose()?;
    let gid = match (group, &user) {
        (Some(g), _) => Some(lookup_group(root, g)?),
        (None, Some(u)) => Some(u.gid),
        (None, None) => None,
    };
    let target = root.join(path.strip_prefix("/").expect("checked absolute"));
    let parent = target.parent().expect("checked not root");
    fs::create_dir_all(parent)
        .map_err(|e| OpError::io(format!("cannot create `{}`", parent.display()), &e))?;
    let name = target.file_name().expect("checked not root");
    let (temp, mut f) = create_temp(parent, &name.to_string_lossy())
        .map_err(|e| OpError::io(format!("cannot write `{}`", path.display()), &e))?;
    let result = (|| {
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if user.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&f, user.as_ref().map(|u| u.uid), gid)?;
            // chown clears set-id bits; put them back.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        fs::rename(&temp, &target)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temp);
        OpError::io(format!("cannot write `{}`", path.display()), &e)
    })
}

/// Creates a new temporary file in `dir` for `name`, named uniquely (the
/// agent is PID 1 in every guest, so its pid tells writers nothing): a
/// process-wide counter and the clock, and `create_new`, so two writers of
/// one path never share a temporary file.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Keep within NAME_MAX whatever the target's name.
    let short: String = name.chars().take(64).collect();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = dir.join(format!(
            ".{short}.orgo-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`]; returns it and its mode bits.
pub(crate) fn read_file(
    root: &Path,
    policy: &FilePolicy,
    path: &str,
) -> Result<(Vec<u8>, u32), OpError> {
    let path = policy.check(path)?;
    let target = root.join(path.strip_prefix("/").expect("checked absolute"));
    let f = fs::File::open(&target)
        .map_err(|e| OpError::io(format!("cannot open `{}`", path.display()), &e))?;
    let meta = f
        .metadata()
        .map_err(|e| OpError::io(format!("cannot stat `{}`", path.display()), &e))?;
    if !meta.is_file() {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            format!("`{}` is not a regular file", path.display()),
        ));
    }
    let mut content = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| OpError::io(format!("cannot read `{}`", path.display()), &e))?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(OpError::new(
            ErrorCode::TooLarge,
            format!(
                "`{}` is over the {MAX_FILE_BYTES}-byte limit",
                path.display()
            ),
        ));
    }
    Ok((content, meta.mode() & 0o7777))
}
