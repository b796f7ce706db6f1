//! Canonical JSON (RFC 8785, JCS) and the template digest.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::TemplateError;

/// A SHA-256 content address, displayed as `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// A digest from a SHA-256 computed elsewhere (a streaming hasher).
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl FromStr for Digest {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, TemplateError> {
        let invalid = || TemplateError::InvalidDigest {
            input: crate::node::truncate(text),
        };
        let hex_part = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serializes a canonical template to a JSON value whose strings are written
/// as a document spells them (see [`crate::jcs::escape_document`]), for the
/// YAML and indented JSON outputs; [`crate::jcs`] writes the hashed form.
pub(crate) fn to_document_value<T: Serialize>(value: &T) -> Value {
    let mut value =
        serde_json::to_value(value).expect("canonical types serialize to JSON without fail");
    escape_strings(&mut value);
    value
}

fn escape_strings(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(escaped) = crate::jcs::escape_document(s) {
                *s = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_strings),
        Value::Object(map) => map.values_mut().for_each(escape_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_values_escape_like_canonical_json() {
        let value = to_document_value(&json!({"a": "${var.x} ${HOME}", "k": ["$${y}"]}));
        assert_eq!(value, json!({"a": "$${var.x} ${HOME}", "k": ["$$${y}"]}));
    }

    #[test]
    fn digests_parse_and_display() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "e3b0",
            "sha256:xyz",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "md5:00",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }
}
