//! The local secrets vault: where a launch finds the values of the secrets a
//! template declares. Secrets are read at launch only, never at build, and
//! never stored in the snapshot or the store.
//!
//! Sources, the first that has a name wins:
//!
//! 1. values given to the launch itself ([`Vault::with`]);
//! 2. the environment: `ORGO_SECRET_<NAME>`, the secret's name upper-cased
//!    (`api_key` -> `ORGO_SECRET_API_KEY`);
//! 3. the vault file, `$ORGO_HOME/secrets.json` by default: one JSON object
//!    of names to strings. It holds secrets, so it must not be readable by
//!    group or others (mode `0600`), like `~/.ssh` keys and `~/.netrc`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use orgo_template::Template;

/// The vault file's name in the orgo home.
pub const VAULT_FILE: &str = "secrets.json";

/// The environment prefix of secrets.
pub const ENV_PREFIX: &str = "ORGO_SECRET_";

/// The largest vault file read (1 MiB).
const MAX_VAULT_BYTES: u64 = 1 << 20;

/// A problem with the vault or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault file cannot be read.
    #[error("cannot read the vault `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The vault file is not what it must be.
    #[error("the vault `{}` {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Required secrets have no value.
    #[error(
        "missing required {}: {}; set {} or add {} to the vault file",
        if names.len() == 1 { "secret" } else { "secrets" },
        names.iter().map(|(field, name)| format!("`{name}` ({field})")).collect::<Vec<_>>().join(", "),
        names.iter().map(|(_, name)| format!("`{ENV_PREFIX}{}`", name.to_uppercase())).collect::<Vec<_>>().join(", "),
        if names.len() == 1 { "it" } else { "them" },
    )]
    Missing {
        /// Each missing secret's field path (`secrets[0]`) and name.
        names: Vec<(String, String)>,
    },
}

/// Secret values by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vault {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Vault {
    /// Names only: a debug print never shows a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Vault {
    /// An empty vault.
    pub fn new() -> Vault {
        Vault::default()
    }

    /// Loads the documented sources: `file` (if it exists) under the
    /// variables of `env` named `ORGO_SECRET_*`.
    pub fn load(
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vault, VaultError> {
        let mut values = read_file(file)?;
        for (key, value) in env {
            if let Some(name) = key.strip_prefix(ENV_PREFIX)
                && !name.is_empty()
            {
                values.insert(name.to_lowercase(), value);
            }
        }
        Ok(Vault { values })
    }

    /// The documented sources of this process: `file` under its
    /// `ORGO_SECRET_*` environment (variables that are not Unicode are
    /// skipped).
    pub(crate) fn load_here(file: &Path) -> Result<Vault, VaultError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Vault::load(file, env)
    }

    /// This vault with `values` over it.
    #[must_use]
    pub fn with(mut self, values: BTreeMap<String, String>) -> Vault {
        self.values.extend(values);
        self
    }

    /// Every secret, name and value.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The values of the secrets `template` declares: every required one
    /// must be there (all missing ones are named at once); optional ones
    /// without a value are left out.
    pub fn resolve(&self, template: &Template) -> Result<BTreeMap<String, String>, VaultError> {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for (i, secret) in template.secrets().iter().enumerate() {
            match self.values.get(secret.name.as_str()) {
                Some(value) => {
                    found.insert(secret.name.as_str().to_owned(), value.clone());
                }
                None if secret.required => {
                    missing.push((format!("secrets[{i}]"), secret.name.as_str().to_owned()));
                }
                None => {}
            }
        }
        if missing.is_empty() {
            Ok(found)
        } else {
            Err(VaultError::Missing { names: missing })
        }
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, VaultError> {
    let read = |source| VaultError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |reason: String| VaultError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(read(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "is readable by group or others (mode `{mode:04o}`); `chmod 600` it"
        )));
    }
    if meta.len() > MAX_VAULT_BYTES {
        return Err(invalid(format!(
            "is `{}` bytes, over the {MAX_VAULT_BYTES}-byte limit",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(read)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("is not a JSON object of names to strings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        Template::from_yaml(
            "api_version: orgo.ai/v1\nname: t@1.0.0\nsecrets:\n  - { name: api_key }\n  - { name: token }\n  - { name: extra, required: false }\n",
        )
        .expect("valid")
    }

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(VAULT_FILE);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn the_environment_wins_over_the_file_and_launch_values_over_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            r#"{"api_key": "from-file", "token": "t"}"#,
            0o600,
        );
        let env = [("ORGO_SECRET_API_KEY".to_owned(), "from-env".to_owned())];
        let vault = Vault::load(&file, env).expect("loads");
        assert_eq!(vault.get("api_key"), Some("from-env"));
        let vault = vault.with(BTreeMap::from([("token".into(), "given".into())]));
        let values = vault.resolve(&template()).expect("all required present");
        assert_eq!(values.get("token").map(String::as_str), Some("given"));
        assert!(!values.contains_key("extra"), "optional and absent");
        assert!(
            !format!("{vault:?}").contains("from-env"),
            "debug hides values"
        );
    }

    #[test]
    fn every_missing_required_secret_is_named_with_its_field() {
        let err = Vault::new().resolve(&template()).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "missing required secrets: `api_key` (secrets[0]), `token` (secrets[1]); \
             set `ORGO_SECRET_API_KEY`, `ORGO_SECRET_TOKEN` or add them to the vault file"
        );
    }

    #[test]
    fn a_vault_file_others_can_read_or_that_is_not_an_object_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = write(dir.path(), "{}", 0o644);
        let err = Vault::load(&open, []).expect_err("too open");
        assert!(err.to_string().contains("mode `0644`"), "{err}");
        let bad = write(dir.path(), "[1]", 0o600);
        assert!(matches!(
            Vault::load(&bad, []),
            Err(VaultError::Invalid { .. })
        ));
        let absent = dir.path().join("none.json");
        assert_eq!(
            Vault::load(&absent, []).expect("absent is empty"),
            Vault::new()
        );
    }
}
