//! API keys: created once and shown once, stored hashed in
//! `<home>/server/keys.json`, compared in constant time.
//!
//! A key is `orgo_` and 64 hex digits (256 random bits from the host's
//! CSPRNG). The file holds its SHA-256 only (a key of 256 random bits needs
//! no slow hash), with its id, namespace and whether it is read-only:
//! `{"orgo_api_keys": 1, "keys": [...]}`, at most 4 MiB, mode 0600,
//! written atomically under an exclusive lock (`keys.lock`), so that
//! `orgo keys create` and a running server may share it. The server reads
//! it again when it changes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use orgo_snapshot::{Version, VersionedError, VersionedFormat};
use orgo_template::Name;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

const FORMAT: VersionedFormat = VersionedFormat::new("orgo_api_keys", Version::new(1, 0), 4 << 20);
const FILE: &str = "keys.json";
const LOCK: &str = "keys.lock";
const PREFIX: &str = "orgo_";

/// A failure of the key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file operation failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file cannot be read.
    #[error("invalid key file")]
    File(#[source] VersionedError),
    /// The host's random source failed.
    #[error("no entropy from the host")]
    Entropy(#[source] getrandom::Error),
    /// No key has this id.
    #[error("no key `{0}`")]
    NotFound(String),
}

/// A key as stored and listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its id (`k-` and 12 hex digits), for `orgo keys revoke`.
    pub id: String,
    /// The namespace it may use.
    pub namespace: String,
    /// Whether it may only read.
    pub read_only: bool,
    /// When it was created (seconds since the Unix epoch).
    pub created_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// SHA-256 of the key, hex.
    sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// The key file of an orgo home.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    /// The keys as last read, and the file's identity then.
    cache: Mutex<(Option<FileStamp>, Vec<Hashed>)>,
}

/// A key's SHA-256 and what it may do.
type Hashed = ([u8; 32], KeyInfo);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl KeyStore {
    /// The key file under `<home>/server/`.
    pub fn new(home: &Path) -> KeyStore {
        KeyStore {
            dir: home.join("server"),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Creates a key for `namespace`; returns it (the only time it is
    /// seen) and what is stored of it.
    pub fn create(&self, namespace: &Name, read_only: bool) -> Result<(String, KeyInfo), KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(KeyError::Entropy)?;
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).map_err(KeyError::Entropy)?;
        let key = format!("{PREFIX}{}", hex::encode(secret));
        let info = KeyInfo {
            id: format!("k-{}", hex::encode(id)),
            namespace: namespace.as_str().to_owned(),
            read_only,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let stored = StoredKey {
            info: info.clone(),
            sha256: hex::encode(Sha256::digest(key.as_bytes())),
        };
        self.update(|file| {
            file.keys.push(stored);
            Ok(())
        })?;
        Ok((key, info))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self.read()?.keys.into_iter().map(|k| k.info).collect())
    }

    /// Revokes key `id`.
    pub fn revoke(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let mut removed = None;
        self.update(|file| {
            let at = file
                .keys
                .iter()
                .position(|k| k.info.id == id)
                .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
            removed = Some(file.keys.remove(at).info);
            Ok(())
        })?;
        Ok(removed.expect("set by the update"))
    }

    /// The key `presented` is, if any: its hash is compared with every
    /// stored one in constant time.
    pub fn authenticate(&self, presented: &str) -> Result<Option<KeyInfo>, KeyError> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = self.stamp()?;
        if cache.0 != stamp || stamp.is_none() {
            let keys = self
                .read()?
                .keys
                .into_iter()
                .filter_map(|k| {
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(&k.sha256, &mut hash).ok()?;
                    Some((hash, k.info))
                })
                .collect();
            *cache = (stamp, keys);
        }
        let mut found = None;
        for (stored, info) in &cache.1 {
            if bool::from(stored.ct_eq(&hash)) {
                found = Some(info.clone());
            }
        }
        Ok(found)
    }

    fn stamp(&self) -> Result<Option<FileStamp>, KeyError> {
        use std::os::unix::fs::MetadataExt as _;
        let path = self.path();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(FileStamp {
                modified: m.modified().ok(),
                len: m.len(),
                ino: m.ino(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    fn read(&self) -> Result<KeyFile, KeyError> {
        match FORMAT.read_file::<KeyFile>(&self.path()) {
            Ok(file) => Ok(file),
            Err(VersionedError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(KeyFile::default())
            }
            Err(error) => Err(KeyError::File(error)),
        }
    }

    /// Reads, changes and writes the file under its lock.
    fn update(
        &self,
        change: impl FnOnce(&mut KeyFile) -> Result<(), KeyError>,
    ) -> Result<(), KeyError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { op, path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create", &self.dir))?;
        let lock_path = self.dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            KeyError::Io {
                op: "lock",
                path: lock_path.clone(),
                source: e.into(),
            }
        })?;
        let mut file = self.read()?;
        change(&mut file)?;
        let bytes =
            serde_json::to_vec_pretty(&FORMAT.to_value(&file)).expect("the key file serializes");
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            });
        written.map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // The lock is released when `lock` closes.
        drop(lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_shown_once_stored_hashed_and_revocable() {
        let home = tempfile::tempdir().expect("a temp dir");
        let keys = KeyStore::new(home.path());
        let team: Name = "team".parse().expect("a name");
        let (key, info) = keys.create(&team, false).expect("created");
        assert!(key.starts_with("orgo_") && key.len() == 5 + 64, "{key}");
        let text = std::fs::read_to_string(home.path().join("server/keys.json")).expect("written");
        assert!(!text.contains(&key[5..]), "the key itself is not stored");
        assert_eq!(keys.authenticate(&key).expect("reads"), Some(info.clone()));
        assert_eq!(keys.authenticate("orgo_00").expect("reads"), None);
        let (other, _) = keys.create(&team, true).expect("created");
        assert_eq!(keys.list().expect("lists").len(), 2);
        assert_eq!(keys.revoke(&info.id).expect("revoked"), info);
        assert_eq!(keys.authenticate(&key).expect("reads"), None);
        assert!(
            keys.authenticate(&other)
                .expect("reads")
                .is_some_and(|k| k.read_only)
        );
        assert!(matches!(keys.revoke(&info.id), Err(KeyError::NotFound(_))));
    }

    #[test]
    fn another_major_version_is_refused() {
        let home = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(home.path().join("server")).expect("dir");
        std::fs::write(
            home.path().join("server/keys.json"),
            r#"{"orgo_api_keys": 2, "keys": []}"#,
        )
        .expect("written");
        let keys = KeyStore::new(home.path());
        assert!(matches!(keys.list(), Err(KeyError::File(_))));
    }
}
