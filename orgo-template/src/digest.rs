//! Canonical JSON (RFC 8785, JCS) and the template digest.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
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

/// Serializes `value` as RFC 8785 canonical JSON.
///
/// Only the parts of RFC 8785 that canonical templates can reach are needed:
/// integers (never beyond 2^53, so ECMAScript number text is plain decimal),
/// strings, booleans, arrays and objects. Object members are sorted by the
/// UTF-16 code units of their names; strings escape only `"`, `\` and control
/// characters (`\b \t \n \f \r`, else `\u00xx` in lower-case hex), all other
/// characters are written as UTF-8.
pub(crate) fn canonical_json<T: Serialize>(value: &T) -> String {
    let value =
        serde_json::to_value(value).expect("canonical types serialize to JSON without fail");
    let mut out = String::with_capacity(1024);
    write_value(&value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            // Canonical templates hold only integers (u64 fields capped far below 2^53).
            debug_assert!(n.is_u64() || n.is_i64(), "canonical numbers are integers");
            out.push_str(&n.to_string());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\t' => "\\t",
            '\n' => "\\n",
            '\u{c}' => "\\f",
            '\r' => "\\r",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc8785_strings_and_order() {
        let value =
            json!({"b": 1, "a": [true, null, "x\"\\\n\u{1f}é€😀/"], "\u{e000}": 0, "😀": 0});
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16.
        assert_eq!(
            canonical_json(&value),
            "{\"a\":[true,null,\"x\\\"\\\\\\n\\u001fé€😀/\"],\"b\":1,\"😀\":0,\"\u{e000}\":0}"
        );
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
