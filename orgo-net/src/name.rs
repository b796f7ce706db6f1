//! DNS names as the guest writes them (SNI, `Host`, DNS questions): checked
//! and brought to one spelling before any rule sees them.

use std::net::IpAddr;

/// The longest name in text form, without the final dot.
pub(crate) const MAX_NAME: usize = 253;

/// `name` in lower case without its final dot, when it is a DNS name:
/// labels of 1-63 letters, digits, `-` or `_`, at most 253 characters in
/// all, and not an IP address. Anything else is `None`.
pub(crate) fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let valid = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        for (text, expected) in [
            ("Api.GitHub.com", Some("api.github.com")),
            ("api.github.com.", Some("api.github.com")),
            ("_dmarc.x.org", Some("_dmarc.x.org")),
            ("localhost", Some("localhost")),
            ("", None),
            (".", None),
            ("a..b", None),
            ("a b.com", None),
            ("a.com..", None),
            ("1.2.3.4", None),
            ("::1", None),
            ("é.com", None),
            ("a.com/x", None),
        ] {
            assert_eq!(normalize_name(text).as_deref(), expected, "{text:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(normalize_name(&format!("{long_label}.com")), None);
        let long = ["abcdefghi"; 26].join(".");
        assert!(long.len() > MAX_NAME);
        assert_eq!(normalize_name(&long), None);
    }
}
