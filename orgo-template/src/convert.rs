//! Typed reading of a [`Node`] tree: shapes and scalar types, every problem
//! collected with its path, nothing interpreted yet.

use std::borrow::Cow;
use std::collections::HashSet;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::error::{Diagnostic, FieldPath, Location, Segment};
use crate::node::{Key, Node, NodeKind, truncate};

/// Collects diagnostics and tracks the path being read.
#[derive(Default)]
pub(crate) struct Cx {
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) path: FieldPath,
    /// Fields that were present but unreadable: later stages do not call them missing.
    pub(crate) invalid: HashSet<FieldPath>,
}

impl Cx {
    pub(crate) fn error(&mut self, location: Option<Location>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            path: self.path.clone(),
            message: message.into(),
            location,
        });
    }

    /// Runs `f` with `segment` appended to the current path.
    pub(crate) fn at<R>(&mut self, segment: Segment, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(segment);
        let out = f(self);
        self.path.pop();
        out
    }

    /// Whether something at or under `prefix` was present but unreadable;
    /// checks that a name is defined stay quiet then.
    pub(crate) fn invalid_under(&self, prefix: &FieldPath) -> bool {
        self.invalid.iter().any(|path| path.starts_with(prefix))
    }

    pub(crate) fn key<R>(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        self.at(Segment::Key(key.into()), f)
    }

    pub(crate) fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.at(Segment::Index(index), f)
    }
}

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T> {
    pub(crate) value: T,
    pub(crate) at: Option<Location>,
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Reads one value of a type from a node; `None` after reporting a problem.
pub(crate) trait FromNode: Sized {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self>;
}

fn quote_hint(text: &str) -> String {
    format!("; quote it (`\"{text}\"`) to keep it as written")
}

impl FromNode for Sp<String> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        let at = Some(node.location);
        match node.kind {
            NodeKind::Str(value) => Some(Sp { value, at }),
            NodeKind::Int(text) | NodeKind::Float(text) => {
                let hint = quote_hint(&text);
                cx.error(
                    at,
                    format!("expected a string, found the number `{text}`{hint}"),
                );
                None
            }
            NodeKind::Bool(b) => {
                cx.error(
                    at,
                    format!(
                        "expected a string, found the boolean `{b}`{}",
                        quote_hint(&b.to_string())
                    ),
                );
                None
            }
            other => {
                cx.error(at, format!("expected a string, found {}", other.describe()));
                None
            }
        }
    }
}

/// Parses a YAML 1.2 core-schema integer (`12`, `+12`, `0o14`, `0xc`) that must be `>= 0`.
fn parse_unsigned(text: &str) -> Result<u64, String> {
    let (digits, radix) = if let Some(rest) = text.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = text.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(magnitude) = text.strip_prefix('-') {
        if magnitude.bytes().all(|b| b == b'0') {
            return Ok(0);
        }
        return Err(format!(
            "expected a whole number of at least 0, found `{text}`"
        ));
    } else {
        (text.strip_prefix('+').unwrap_or(text), 10)
    };
    u64::from_str_radix(digits, radix).map_err(|_| {
        format!(
            "the number `{}` is too large (at most {})",
            truncate(text),
            u64::MAX
        )
    })
}

impl FromNode for Sp<u64> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        let at = Some(node.location);
        let result = match &node.kind {
            NodeKind::Int(text) => parse_unsigned(text),
            NodeKind::Float(text) => Err(format!("expected a whole number, found `{text}`")),
            NodeKind::Str(text) if parse_unsigned(text).is_ok() => Err(format!(
                "expected a whole number, found the string `\"{text}\"`; remove the quotes"
            )),
            other => Err(format!(
                "expected a whole number, found {}",
                other.describe()
            )),
        };
        match result {
            Ok(value) => Some(Sp { value, at }),
            Err(message) => {
                cx.error(at, message);
                None
            }
        }
    }
}

impl FromNode for Sp<bool> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        let at = Some(node.location);
        let message = match node.kind {
            NodeKind::Bool(value) => return Some(Sp { value, at }),
            NodeKind::Str(text) if text == "true" || text == "false" => {
                format!(
                    "expected `true` or `false`, found the string `\"{text}\"`; remove the quotes"
                )
            }
            NodeKind::Str(text)
                if matches!(
                    text.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                format!(
                    "expected `true` or `false`, found the string `{text}` \
                     (`yes`, `no`, `on` and `off` are strings in YAML 1.2 and JSON)"
                )
            }
            other => format!("expected `true` or `false`, found {}", other.describe()),
        };
        cx.error(at, message);
        None
    }
}

/// A whole number or a string, for fields with a unit (`ram: 4gb`, `every: 15s`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IntOrStr {
    Int(u64),
    Str(String),
}

impl JsonSchema for IntOrStr {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "string"], "minimum": 0 })
    }
}

impl FromNode for Sp<IntOrStr> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        let at = Some(node.location);
        match node.kind {
            NodeKind::Str(text) => Some(Sp {
                value: IntOrStr::Str(text),
                at,
            }),
            kind @ NodeKind::Int(_) => {
                let Sp { value, .. } = Sp::<u64>::from_node(
                    Node {
                        kind,
                        location: node.location,
                    },
                    cx,
                )?;
                Some(Sp {
                    value: IntOrStr::Int(value),
                    at,
                })
            }
            other => {
                cx.error(
                    at,
                    format!("expected a number or a string, found {}", other.describe()),
                );
                None
            }
        }
    }
}

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        match node.kind {
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.into_iter().enumerate() {
                    match cx.index(i, |cx| read_present(item, cx)) {
                        Some(value) => out.push(value),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            other => {
                cx.error(
                    Some(node.location),
                    format!("expected a sequence, found {}", other.describe()),
                );
                None
            }
        }
    }
}

/// A mapping with author-chosen keys (`env`, `vars`), in source order; keys are unique.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Map<T>(pub(crate) Vec<(Sp<String>, T)>);

impl<T> Default for Map<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: JsonSchema> JsonSchema for Map<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object", "additionalProperties": generator.subschema_for::<T>() })
    }
}

impl<T: FromNode> FromNode for Map<T> {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        match node.kind {
            NodeKind::Map(entries) => {
                // Entries that read are kept: keys, not positions, name them,
                // so later stages still see every good definition.
                let mut out = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let Key { text, location } = key;
                    let read = cx.at(Segment::Key(text.clone().into()), |cx| {
                        read_present(value, cx)
                    });
                    if let Some(value) = read {
                        let key = Sp {
                            value: text,
                            at: Some(location),
                        };
                        out.push((key, value));
                    }
                }
                Some(Map(out))
            }
            other => {
                cx.error(
                    Some(node.location),
                    format!("expected a mapping, found {}", other.describe()),
                );
                None
            }
        }
    }
}

/// Reads a value that must be there: null is reported, not taken as absent.
fn read_present<T: FromNode>(node: Node, cx: &mut Cx) -> Option<T> {
    if node.kind == NodeKind::Null {
        cx.error(Some(node.location), "expected a value, found null");
        cx.invalid.insert(cx.path.clone());
        return None;
    }
    let value = T::from_node(node, cx);
    if value.is_none() {
        cx.invalid.insert(cx.path.clone());
    }
    value
}

/// The fields of one mapping, taken one by one; what is left over is unknown.
pub(crate) struct Fields {
    entries: Vec<(Key, Option<Node>)>,
    pub(crate) location: Location,
}

impl Fields {
    pub(crate) fn new(node: Node, cx: &mut Cx) -> Option<Self> {
        match node.kind {
            NodeKind::Map(entries) => Some(Self {
                entries: entries.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                location: node.location,
            }),
            other => {
                cx.error(
                    Some(node.location),
                    format!("expected a mapping, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// Takes field `name`; an explicit null counts as absent.
    pub(crate) fn take<T: FromNode>(&mut self, cx: &mut Cx, name: &'static str) -> Option<T> {
        let name = name.strip_prefix("r#").unwrap_or(name);
        let slot = self
            .entries
            .iter_mut()
            .find(|(k, v)| v.is_some() && k.text == name)?;
        let node = slot.1.take()?;
        if node.kind == NodeKind::Null {
            return None;
        }
        cx.key(name, |cx| read_present(node, cx))
    }

    /// Reports every field not taken as unknown, with the closest known name.
    pub(crate) fn finish(self, cx: &mut Cx, known: &[&str]) {
        for (key, node) in self.entries {
            if node.is_none() {
                continue;
            }
            let hint = match closest(&key.text, known) {
                Some(best) => format!("; did you mean `{best}`?"),
                None => format!(
                    "; expected one of: {}",
                    known
                        .iter()
                        .map(|k| k.trim_start_matches("r#"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            cx.key(key.text.clone(), |cx| {
                cx.error(
                    Some(key.location),
                    format!("unknown field `{}`{hint}", truncate(&key.text)),
                )
            });
        }
    }
}

/// The known name nearest to `word` by edit distance, if it is near enough to be a typo.
pub(crate) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| k.trim_start_matches("r#"))
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Declares an authored mapping type: every field optional, unknown fields reported.
macro_rules! fields {
    ($(#[$meta:meta])* $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        #[derive(Debug, Clone, Default, PartialEq, schemars::JsonSchema)]
        $(#[$meta])*
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            /// Where the mapping starts in the source.
            #[schemars(skip)]
            pub(crate) at: Option<$crate::error::Location>,
            $( $(#[$fmeta])* pub(crate) $field: Option<$ty>, )*
        }

        impl $crate::convert::FromNode for $name {
            fn from_node(node: $crate::node::Node, cx: &mut $crate::convert::Cx) -> Option<Self> {
                let mut fields = $crate::convert::Fields::new(node, cx)?;
                let out = Self { at: Some(fields.location), $( $field: fields.take(cx, stringify!($field)), )* };
                fields.finish(cx, &[$(stringify!($field)),*]);
                Some(out)
            }
        }
    };
}
pub(crate) use fields;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let known = ["hardware", "hooks", "apps", "env"];
        assert_eq!(closest("hardwares", &known), Some("hardware"));
        assert_eq!(closest("hook", &known), Some("hooks"));
        assert_eq!(closest("zzzzzz", &known), None);
    }

    #[test]
    fn unsigned_integers() {
        assert_eq!(parse_unsigned("0o755"), Ok(0o755));
        assert_eq!(parse_unsigned("+12"), Ok(12));
        assert_eq!(parse_unsigned("-0"), Ok(0));
        assert!(parse_unsigned("-1").unwrap_err().contains("at least 0"));
        assert!(
            parse_unsigned("99999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }
}
