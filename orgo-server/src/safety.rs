//! Host safety: a template that arrives over HTTP must not read the
//! server's own files or credentials. Its `file://` sources are refused
//! unless the operator allows a directory (`--allow-file-root DIR`), and
//! then only files inside it, with symlinks resolved; `s3://` sources,
//! which would use the server's credentials, are always refused.
//!
//! The check runs when a template is published and again before it is
//! built or launched (the allowed directory may have changed since).

use std::path::Path;

use orgo_template::Template;
use serde_json::{Value, json};

use crate::error::{ApiError, Code};

/// Every source of `template` the server refuses, at once (the first named
/// in the message, all in `details.fields`).
pub(crate) fn check_sources(template: &Template, allow: Option<&Path>) -> Result<(), ApiError> {
    let value = template.to_value();
    let files = value.get("files").and_then(Value::as_array);
    let mut refused = Vec::new();
    for (i, file) in files.into_iter().flatten().enumerate() {
        let Some(from) = file.get("from").and_then(Value::as_str) else {
            continue;
        };
        let field = format!("files[{i}].from");
        if from.starts_with("s3://") {
            refused.push((
                field,
                format!("`{from}`: `s3://` sources would use the server's credentials"),
            ));
        } else if let Some(path) = from.strip_prefix("file://")
            && let Some(why) = file_refusal(path, allow)
        {
            refused.push((field, format!("`{from}`: {why}")));
        }
    }
    let Some((field, why)) = refused.first() else {
        return Ok(());
    };
    let fields: Vec<Value> = refused
        .iter()
        .map(|(field, why)| json!({"field": field, "message": why}))
        .collect();
    Err(ApiError::new(
        Code::HostFileRefused,
        format!(
            "`{field}` is refused: {why}{}",
            if refused.len() > 1 {
                format!(" (and {} more)", refused.len() - 1)
            } else {
                String::new()
            }
        ),
    )
    .details(json!({ "field": field, "fields": fields })))
}

/// Why `path` may not be read, if it may not.
fn file_refusal(path: &str, allow: Option<&Path>) -> Option<String> {
    let Some(root) = allow else {
        return Some(
            "this server reads no host files (its operator allows a directory with `--allow-file-root DIR`)"
                .into(),
        );
    };
    let Ok(root) = std::fs::canonicalize(root) else {
        return Some("the allowed directory cannot be resolved".into());
    };
    match std::fs::canonicalize(path) {
        Ok(real) if real.starts_with(&root) => None,
        Ok(real) => Some(format!(
            "it resolves to `{}`, outside the allowed directory `{}`",
            real.display(),
            root.display()
        )),
        Err(e) => Some(format!("it cannot be resolved: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(from: &str) -> Template {
        Template::from_yaml(&format!(
            "api_version: orgo.ai/v1\nname: t@1.0.0\nfiles:\n  - {{ to: /a, inline: x }}\n  - {{ to: /b, from: \"{from}\" }}\n"
        ))
        .expect("valid")
    }

    #[test]
    fn sources_are_refused_unless_inside_the_allowed_root() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).expect("dir");
        std::fs::write(allowed.join("ok.txt"), "ok").expect("file");
        std::fs::write(dir.path().join("secret.txt"), "no").expect("file");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), allowed.join("link.txt"))
            .expect("symlink");
        let inside = format!("file://{}", allowed.join("ok.txt").display());
        let link = format!("file://{}", allowed.join("link.txt").display());
        let dotdot = format!("file://{}/../secret.txt", allowed.display());
        let cases: &[(&str, Option<&Path>, bool)] = &[
            (&inside, None, false),
            (&inside, Some(&allowed), true),
            (&link, Some(&allowed), false),
            (&dotdot, Some(&allowed), false),
            ("s3://bucket/key", Some(&allowed), false),
            ("https://example.com/x", None, true),
        ];
        for (from, allow, ok) in cases {
            let result = check_sources(&template(from), *allow);
            assert_eq!(result.is_ok(), *ok, "{from} with {allow:?}: {result:?}");
            if let Err(error) = result {
                assert_eq!(error.code, Code::HostFileRefused);
                assert_eq!(error.details["field"], "files[1].from");
            }
        }
    }
}
