//! Invariants of the `orgo-template` pipeline, checked on arbitrary input;
//! and of `orgo-net`'s guest-facing parsers ([`check_net`], see `net.rs`).
//!
//! [`check`] panics when an invariant breaks; the fuzz targets in
//! `fuzz_targets/` call it with libFuzzer's input, and `tests/seed.rs` calls it
//! over the seed corpus and systematic mutations of it on stable Rust.
//!
//! The invariants, for YAML and for JSON:
//! 1. parse, normalize and digest never panic, whatever the input;
//! 2. a parse that succeeds is a fixed point of normalization: the canonical
//!    JSON parses again (as JSON) to the same canonical JSON and digest, and so
//!    do the canonical YAML (`to_yaml`) and the indented JSON (`to_json_pretty`);
//! 3. `Document::parse` + `normalize` agrees with `Template::parse`;
//! 4. parsing is deterministic: the same text gives the same template or the
//!    same error;
//! 5. a parse that fails carries at least one diagnostic, and its message and
//!    every diagnostic's message are non-empty.

#![forbid(unsafe_code)]

mod net;

pub use net::check_net;

use orgo_template::{Document, Format, Template, TemplateError};

/// Checks every invariant on `data`, read as YAML and as JSON. Input that is
/// not UTF-8 is skipped (the library takes `&str`).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_text(text, Format::Yaml);
    check_text(text, Format::Json);
}

/// [`check`] with the input read as JSON only.
pub fn check_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_text(text, Format::Json);
}

/// Checks every invariant on `text` read in `format`.
pub fn check_text(text: &str, format: Format) {
    let first = Template::parse(text, format);
    let again = Template::parse(text, format);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(
            a.canonical_json(),
            b.canonical_json(),
            "{format:?}: two parses of one text gave different templates"
        ),
        (Err(a), Err(b)) => assert_eq!(
            a.to_string(),
            b.to_string(),
            "{format:?}: two parses of one text gave different errors"
        ),
        _ => panic!("{format:?}: two parses of one text disagree: {first:?} vs {again:?}"),
    }

    check_staged(text, format, &first);

    match first {
        Ok(template) => check_fixed_point(&template, format),
        Err(error) => check_error(&error, format),
    }
}

/// `Document::parse` then `normalize` must agree with `Template::parse`.
fn check_staged(text: &str, format: Format, whole: &Result<Template, TemplateError>) {
    let staged = Document::parse(text, format).map(Document::normalize);
    match (staged, whole) {
        (Ok(Ok(staged)), Ok(whole)) => assert_eq!(
            staged.canonical_json(),
            whole.canonical_json(),
            "{format:?}: Document::normalize and Template::parse gave different templates"
        ),
        (Ok(Ok(staged)), Err(error)) => panic!(
            "{format:?}: Document::normalize succeeded ({}) but Template::parse failed: {error}",
            staged.digest()
        ),
        (Ok(Err(error)), Ok(whole)) | (Err(error), Ok(whole)) => panic!(
            "{format:?}: Template::parse succeeded ({}) but the staged pipeline failed: {error}",
            whole.digest()
        ),
        (Ok(Err(error)), Err(_)) | (Err(error), Err(_)) => check_error(&error, format),
    }
}

/// A canonical template parses back to itself, from each of its serializations.
fn check_fixed_point(template: &Template, format: Format) {
    let canonical = template.canonical_json();
    let digest = template.digest();
    assert_eq!(
        digest,
        orgo_template::Digest::of(canonical.as_bytes()),
        "{format:?}: the digest is not the hash of the canonical JSON"
    );
    assert!(
        digest.to_string().starts_with("sha256:") && digest.to_string().len() == 7 + 64,
        "{format:?}: malformed digest {digest}"
    );

    let reparsed = Template::from_json(&canonical).unwrap_or_else(|error| {
        panic!(
            "{format:?}: the canonical JSON does not parse again\n\
             canonical JSON: {canonical}\nerror: {error}"
        )
    });
    assert_eq!(
        reparsed.canonical_json(),
        canonical,
        "{format:?}: normalization is not idempotent (canonical JSON -> parse -> canonical JSON)"
    );
    assert_eq!(
        reparsed.digest(),
        digest,
        "{format:?}: the canonical JSON parses to another digest"
    );

    let yaml = template.to_yaml();
    match Template::from_yaml(&yaml) {
        Ok(from_yaml) => assert_eq!(
            from_yaml.canonical_json(),
            canonical,
            "{format:?}: to_yaml -> from_yaml changed the template\nYAML:\n{yaml}"
        ),
        Err(error) => panic!(
            "{format:?}: to_yaml does not parse again\nYAML:\n{yaml}\nerror: {error}\n\
             canonical JSON: {canonical}"
        ),
    }

    let pretty = template.to_json_pretty();
    match Template::from_json(&pretty) {
        Ok(from_pretty) => assert_eq!(
            from_pretty.canonical_json(),
            canonical,
            "{format:?}: to_json_pretty -> from_json changed the template\nJSON:\n{pretty}"
        ),
        Err(error) => panic!(
            "{format:?}: to_json_pretty does not parse again\nJSON:\n{pretty}\nerror: {error}"
        ),
    }
}

/// An error says what is wrong, at least once.
fn check_error(error: &TemplateError, format: Format) {
    let diagnostics = error.diagnostics();
    assert!(
        !diagnostics.is_empty(),
        "{format:?}: an error without diagnostics: {error:?}"
    );
    assert!(
        !error.to_string().trim().is_empty(),
        "{format:?}: an error with an empty message: {error:?}"
    );
    for diagnostic in diagnostics {
        assert!(
            !diagnostic.message.trim().is_empty(),
            "{format:?}: a diagnostic with an empty message: {diagnostic:?}"
        );
        assert!(
            !diagnostic.to_string().is_empty(),
            "{format:?}: a diagnostic that displays as nothing: {diagnostic:?}"
        );
    }
}
