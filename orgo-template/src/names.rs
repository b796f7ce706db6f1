//! Newtypes validated at the edge: kebab-case names, secret names, refs.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::TemplateError;

/// Longest name allowed.
const MAX_NAME: usize = 64;

/// A lowercase kebab-case name of 1-64 characters (`my-app`, `claude-code`):
/// ASCII letters and digits in groups joined by single hyphens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

pub(crate) fn check_kebab(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_NAME {
        return Err(format!(
            "`{}` must be 1-{MAX_NAME} characters long",
            crate::node::truncate(text)
        ));
    }
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not lowercase kebab-case (letters a-z, digits, single hyphens between them)",
            crate::node::truncate(text)
        ))
    }
}

impl Name {
    /// Checks and wraps a name.
    pub fn new(text: &str) -> Result<Self, TemplateError> {
        check_kebab(text).map_err(|reason| TemplateError::InvalidName { reason })?;
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn trusted(text: String) -> Self {
        Self(text)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a vault secret: lowercase letters, digits, `_` and `-`,
/// starting with a letter, 1-64 characters (`anthropic_api_key`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

pub(crate) fn check_secret_name(text: &str) -> Result<(), String> {
    let ok = (1..=MAX_NAME).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a secret name (1-{MAX_NAME} of a-z, 0-9, `_`, `-`, starting with a letter)",
            crate::node::truncate(text)
        ))
    }
}

impl SecretName {
    /// Checks and wraps a secret name.
    pub fn new(text: &str) -> Result<Self, TemplateError> {
        check_secret_name(text).map_err(|reason| TemplateError::InvalidName { reason })?;
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn trusted(text: String) -> Self {
        Self(text)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = TemplateError;
            fn from_str(text: &str) -> Result<Self, TemplateError> {
                Self::new(text)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}
string_newtype!(Name);
string_newtype!(SecretName);

/// The address of a published template version: `namespace/name@version`.
///
/// The namespace defaults to [`TemplateRef::DEFAULT_NAMESPACE`]; curated
/// templates live in [`TemplateRef::SYSTEM_NAMESPACE`]. It always displays in
/// full, so `foo@1.0.0` displays as `default/foo@1.0.0`.
///
/// ```
/// use orgo_template::TemplateRef;
/// let r: TemplateRef = "system/claude-code@1.0.0".parse()?;
/// assert_eq!(r.namespace().as_str(), "system");
/// assert_eq!("foo@1.2.3".parse::<TemplateRef>()?.to_string(), "default/foo@1.2.3");
/// # Ok::<(), orgo_template::TemplateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateRef {
    namespace: Name,
    name: Name,
    version: semver::Version,
}

impl TemplateRef {
    /// Namespace of a user's own templates when none is given.
    pub const DEFAULT_NAMESPACE: &'static str = "default";
    /// Namespace of curated templates.
    pub const SYSTEM_NAMESPACE: &'static str = "system";

    /// A ref from its parts.
    pub fn new(namespace: Name, name: Name, version: semver::Version) -> Self {
        Self {
            namespace,
            name,
            version,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &Name {
        &self.namespace
    }

    /// The template name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> &semver::Version {
        &self.version
    }
}

impl FromStr for TemplateRef {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, TemplateError> {
        let invalid = |reason: String| TemplateError::InvalidRef {
            input: text.to_owned(),
            reason,
        };
        let (path, version) = text.rsplit_once('@').ok_or_else(|| {
            invalid("expected `namespace/name@version`, e.g. `system/claude-code@1.0.0`".into())
        })?;
        let (namespace, name) = match path.split_once('/') {
            Some((namespace, name)) => (namespace, name),
            None => (Self::DEFAULT_NAMESPACE, path),
        };
        check_kebab(namespace).map_err(|r| invalid(format!("namespace {r}")))?;
        check_kebab(name).map_err(|r| invalid(format!("name {r}")))?;
        let version = semver::Version::parse(version).map_err(|e| {
            invalid(format!(
                "version `{version}` is not a semantic version: {e}"
            ))
        })?;
        Ok(Self {
            namespace: Name::trusted(namespace.to_owned()),
            name: Name::trusted(name.to_owned()),
            version,
        })
    }
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_names() {
        for ok in ["a", "my-app", "a1-b2", "2048", &"a".repeat(64)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "My-App",
            "a_b",
            "a.b",
            &"a".repeat(65),
        ] {
            assert!(Name::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_parse_and_display() {
        let r: TemplateRef = "system/claude-code@1.0.0-beta.1+build.5".parse().unwrap();
        assert_eq!(r.to_string(), "system/claude-code@1.0.0-beta.1+build.5");
        assert_eq!(r.name().as_str(), "claude-code");
        let r: TemplateRef = "foo@1.0.0".parse().unwrap();
        assert_eq!(r.namespace().as_str(), "default");
        for bad in [
            "foo",
            "foo@1.0",
            "a/b/c@1.0.0",
            "Foo@1.0.0",
            "ns/@1.0.0",
            "foo@v1.0.0",
            "/foo@1.0.0",
        ] {
            let err = bad.parse::<TemplateRef>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
