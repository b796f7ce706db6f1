//! Sugar to canonical shape: the seven rows of the reference's table.
//!
//! | sugar                  | canonical                                      |
//! |------------------------|------------------------------------------------|
//! | `name: foo@1.0.0`      | `template: { name: foo, version: 1.0.0 }`      |
//! | `cpu: 2`               | `hardware: { cpu: 2 }`                         |
//! | `ram: 4gb`             | `hardware: { ram_gb: 4 }`                      |
//! | `display: 1280x800`    | `hardware: { resolution: 1280x800x24 }`        |
//! | `wallpaper: URL`       | `desktop: { wallpaper: URL }`                  |
//! | `files: { /p: "text" }`| `files: [{ to: /p, inline: "text" }]`          |
//! | `on_first_boot: ...`   | `hooks: { on_first_boot: ... }`                |
//!
//! Sugar and canonical fields may be mixed; setting one value both ways is an
//! error naming both. Moved values keep their source location, and the
//! [`Relocations`] let later stages report a problem at the path the author
//! wrote (`cpu`, not `hardware.cpu`).

use crate::convert::{Cx, IntOrStr, Sp};
use crate::error::{Diagnostic, FieldPath};
use crate::interpolate::Scope;
use crate::node::truncate;
use crate::raw::{Desktop, Document, File, Files, Hardware, Hooks, Identity};

/// Canonical path to authored path, for values sugar moved.
#[derive(Default)]
pub(crate) struct Relocations(Vec<(FieldPath, FieldPath)>);

impl Relocations {
    fn add(&mut self, canonical: FieldPath, authored: FieldPath) {
        self.0.push((canonical, authored));
    }

    /// Rewrites a diagnostic's path to the one the author wrote.
    pub(crate) fn apply(&self, diagnostic: &mut Diagnostic) {
        diagnostic.path = self.authored(&diagnostic.path);
    }

    /// The path the author wrote for a canonical path.
    pub(crate) fn authored(&self, path: &FieldPath) -> FieldPath {
        if let Some((_, authored)) = self.0.iter().find(|(c, _)| c == path) {
            return authored.clone();
        }
        let best = self
            .0
            .iter()
            .filter(|(c, _)| path.starts_with(c))
            .max_by_key(|(c, _)| c.segments().len());
        match best {
            Some((canonical, authored)) => path.replace_prefix(canonical, authored),
            None => path.clone(),
        }
    }
}

fn root(key: &'static str) -> FieldPath {
    FieldPath::root().key(key)
}

/// Moves one sugar value into its canonical slot, or reports that both are set.
fn place<T>(
    cx: &mut Cx,
    sugar: Sp<T>,
    sugar_key: &'static str,
    slot: &mut Option<Sp<T>>,
    canonical: &FieldPath,
    moved: &mut Relocations,
) {
    if slot.is_some() {
        cx.key(sugar_key, |cx| {
            cx.error(
                sugar.at,
                format!("`{sugar_key}` and `{canonical}` are both set; keep one"),
            )
        });
        return;
    }
    *slot = Some(sugar);
    moved.add(canonical.clone(), root(sugar_key));
}

/// Interpolates a sugar value that must be read before validation (`name`,
/// `ram`, `display`); `None` when that failed (reported at `key`).
fn interpolated(
    value: Sp<String>,
    key: &'static str,
    cx: &mut Cx,
    scope: &mut Scope,
) -> Option<Sp<String>> {
    let text = cx.key(key, |cx| scope.apply(&value, cx));
    if text.is_none() {
        cx.invalid.insert(root(key));
    }
    Some(Sp {
        value: text?,
        at: value.at,
    })
}

/// A value already interpolated, spelled so that validation's own
/// interpolation reads it back unchanged.
fn escape(text: &str) -> String {
    crate::jcs::escape_document(text).into_owned()
}

/// Folds every sugar field of `doc` into its canonical place. The sugar that
/// must be parsed here (`name`, `ram`, `display`) is interpolated first.
pub(crate) fn desugar(doc: &mut Document, cx: &mut Cx, scope: &mut Scope) -> Relocations {
    let mut moved = Relocations::default();
    if let Some(sugar) = doc
        .name
        .take()
        .and_then(|s| interpolated(s, "name", cx, scope))
    {
        let identity = doc.template.get_or_insert_with(Identity::default);
        let (name, version) = match sugar.value.rsplit_once('@') {
            Some((name, version)) => (escape(name), Some(escape(version))),
            None => (escape(&sugar.value), None),
        };
        let at = sugar.at;
        place(
            cx,
            Sp { value: name, at },
            "name",
            &mut identity.name,
            &root("template").key("name"),
            &mut moved,
        );
        if let Some(version) = version {
            place(
                cx,
                Sp { value: version, at },
                "name",
                &mut identity.version,
                &root("template").key("version"),
                &mut moved,
            );
        } else if identity.version.is_none() {
            let message = format!(
                "`{}` has no version; write `name: {}@1.0.0` (NAME@VERSION)",
                truncate(&sugar.value),
                truncate(&sugar.value)
            );
            cx.key("name", |cx| cx.error(at, message));
            cx.invalid.insert(root("template").key("version"));
        }
    }

    // An unreadable `name` sugar stands for the identity: do not also call it missing.
    if cx.invalid.contains(&root("name")) {
        for path in [
            root("template"),
            root("template").key("name"),
            root("template").key("version"),
        ] {
            cx.invalid.insert(path);
        }
    }

    let hardware_sugar = doc.cpu.is_some() || doc.ram.is_some() || doc.display.is_some();
    if hardware_sugar {
        let hardware = doc.hardware.get_or_insert_with(Hardware::default);
        if let Some(cpu) = doc.cpu.take() {
            place(
                cx,
                cpu,
                "cpu",
                &mut hardware.cpu,
                &root("hardware").key("cpu"),
                &mut moved,
            );
        }
        if let Some(ram) = doc.ram.take() {
            let at = ram.at;
            let value = match ram.value {
                IntOrStr::Str(text) => interpolated(Sp { value: text, at }, "ram", cx, scope)
                    .map(|text| IntOrStr::Str(text.value)),
                int => Some(int),
            };
            match value.as_ref().map(parse_ram) {
                Some(Ok(gb)) => place(
                    cx,
                    Sp { value: gb, at },
                    "ram",
                    &mut hardware.ram_gb,
                    &root("hardware").key("ram_gb"),
                    &mut moved,
                ),
                Some(Err(message)) => cx.key("ram", |cx| cx.error(at, message)),
                None => {} // the interpolation problem is reported
            }
        }
        if let Some(display) = doc
            .display
            .take()
            .and_then(|s| interpolated(s, "display", cx, scope))
        {
            let value = escape(&with_default_depth(&display.value));
            place(
                cx,
                Sp {
                    value,
                    at: display.at,
                },
                "display",
                &mut hardware.resolution,
                &root("hardware").key("resolution"),
                &mut moved,
            );
        }
    }

    if let Some(wallpaper) = doc.wallpaper.take() {
        let desktop = doc.desktop.get_or_insert_with(Desktop::default);
        place(
            cx,
            wallpaper,
            "wallpaper",
            &mut desktop.wallpaper,
            &root("desktop").key("wallpaper"),
            &mut moved,
        );
    }

    if let Some(hook) = doc.on_first_boot.take() {
        let hooks = doc.hooks.get_or_insert_with(Hooks::default);
        place(
            cx,
            hook,
            "on_first_boot",
            &mut hooks.on_first_boot,
            &root("hooks").key("on_first_boot"),
            &mut moved,
        );
    }

    if let Some(Files::Sugar(map)) = doc.files.take_if(|files| matches!(files, Files::Sugar(_))) {
        let mut list = Vec::with_capacity(map.0.len());
        for (i, (path, text)) in map.0.into_iter().enumerate() {
            let authored = root("files").key(path.value.clone());
            let canonical = root("files").index(i);
            moved.add(canonical.key("to"), authored.clone());
            moved.add(canonical.key("inline"), authored.clone());
            moved.add(canonical, authored);
            list.push(File {
                to: Some(path),
                inline: Some(text),
                ..File::default()
            });
        }
        doc.files = Some(Files::List(list));
    }

    moved
}

/// `4`, `4gb`, `4GB`, `4g`, `4GiB`, `4 gb`: a whole number of GB.
fn parse_ram(value: &IntOrStr) -> Result<u64, String> {
    match value {
        IntOrStr::Int(gb) => Ok(*gb),
        IntOrStr::Str(text) => {
            let lower = text.trim().to_ascii_lowercase();
            let digits = lower
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .trim_end();
            let unit = lower[digits.len()..].trim_start();
            match (digits.parse::<u64>(), unit) {
                (Ok(gb), "" | "g" | "gb" | "gib") => Ok(gb),
                _ => Err(format!(
                    "`{}` is not a RAM size; write whole gigabytes, e.g. `4gb`",
                    truncate(text)
                )),
            }
        }
    }
}

/// `WxH` gets the default depth 24; anything else is left for validation.
fn with_default_depth(display: &str) -> String {
    let parts: Vec<&str> = display.split('x').collect();
    if parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        format!("{display}x24")
    } else {
        display.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes() {
        for (text, gb) in [
            ("4gb", 4),
            ("8GB", 8),
            ("16g", 16),
            ("32GiB", 32),
            ("64 gb", 64),
            ("4", 4),
        ] {
            assert_eq!(parse_ram(&IntOrStr::Str(text.into())), Ok(gb), "{text}");
        }
        for bad in ["4tb", "gb", "4.5gb", "-4gb", "4 mb"] {
            assert!(parse_ram(&IntOrStr::Str(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_depth() {
        assert_eq!(with_default_depth("1280x800"), "1280x800x24");
        assert_eq!(with_default_depth("1280x800x16"), "1280x800x16");
        assert_eq!(with_default_depth("big"), "big");
    }
}
