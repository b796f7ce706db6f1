//! The source tree both loaders build: every value with its location, scalars
//! already resolved to the YAML 1.2 core schema, mapping keys unique.

use std::collections::HashSet;

use crate::error::{FieldPath, Location, Segment};

/// Largest document accepted, checked before parsing starts.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of sequences and mappings (a real template is under 8 deep).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most values in one document, counting every copy an alias makes.
pub(crate) const MAX_NODES: usize = 200_000;
/// Most text that aliases may copy in one document (as much again as the
/// largest document), so an alias of a long string cannot multiply it.
pub(crate) const MAX_ALIAS_BYTES: usize = MAX_DOCUMENT_BYTES;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Null,
    Bool(bool),
    /// An integer as written (`-12`, `0x1f`, `0o755`); parsed where a field needs it.
    Int(String),
    /// A floating-point number as written.
    Float(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) location: Location,
}

impl NodeKind {
    /// How the value reads in a message: "the string `yes`", "a mapping".
    pub(crate) fn describe(&self) -> String {
        match self {
            NodeKind::Null => "null".to_owned(),
            NodeKind::Bool(b) => format!("the boolean `{b}`"),
            NodeKind::Int(text) | NodeKind::Float(text) => format!("the number `{text}`"),
            NodeKind::Str(text) => format!("the string `{}`", truncate(text)),
            NodeKind::Seq(_) => "a sequence".to_owned(),
            NodeKind::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// A value cut to a readable length for messages.
pub(crate) fn truncate(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A problem found while loading, before any field is interpreted.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) path: FieldPath,
    pub(crate) message: String,
    pub(crate) location: Location,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} @{}: {}", self.path, self.location, self.message)
    }
}

/// Resolves a plain (unquoted) YAML scalar by the YAML 1.2 core schema.
/// `yes`, `on`, `off` and `no` are strings, as YAML 1.2 says.
pub(crate) fn resolve_plain(text: String) -> NodeKind {
    match text.as_str() {
        _ if is_plain_null(&text) => return NodeKind::Null,
        "true" | "True" | "TRUE" => return NodeKind::Bool(true),
        "false" | "False" | "FALSE" => return NodeKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return NodeKind::Float(text),
        _ => {}
    }
    if is_core_int(&text) {
        NodeKind::Int(text)
    } else if is_core_float(&text) {
        NodeKind::Float(text)
    } else {
        NodeKind::Str(text)
    }
}

fn is_core_int(text: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(rest) = text.strip_prefix("0o") {
        return digits(rest, 8);
    }
    if let Some(rest) = text.strip_prefix("0x") {
        return digits(rest, 16);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    digits(unsigned, 10)
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let b = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

/// Counts values against [`MAX_NODES`] and nesting against [`MAX_DEPTH`].
#[derive(Default)]
pub(crate) struct Budget {
    nodes: usize,
    alias_bytes: usize,
}

impl Budget {
    pub(crate) fn spend(&mut self, count: usize, location: Location) -> Result<(), LoadError> {
        self.nodes = self.nodes.saturating_add(count);
        if self.nodes > MAX_NODES {
            return Err(LoadError {
                path: FieldPath::root(),
                message: format!(
                    "document has more than {MAX_NODES} values (aliases count once per use); \
                     a template is far smaller"
                ),
                location,
            });
        }
        Ok(())
    }

    /// Spends an alias's copy of `size` bytes of text.
    pub(crate) fn spend_alias_bytes(
        &mut self,
        bytes: usize,
        location: Location,
    ) -> Result<(), LoadError> {
        self.alias_bytes = self.alias_bytes.saturating_add(bytes);
        if self.alias_bytes > MAX_ALIAS_BYTES {
            return Err(LoadError {
                path: FieldPath::root(),
                message: format!(
                    "aliases copy more than {MAX_ALIAS_BYTES} bytes of text; write the values out"
                ),
                location,
            });
        }
        Ok(())
    }

    pub(crate) fn check_depth(depth: usize, location: Location) -> Result<(), LoadError> {
        if depth > MAX_DEPTH {
            return Err(LoadError {
                path: FieldPath::root(),
                message: format!("document nests deeper than {MAX_DEPTH} levels"),
                location,
            });
        }
        Ok(())
    }
}

pub(crate) fn check_size(len: usize) -> Result<(), LoadError> {
    if len > MAX_DOCUMENT_BYTES {
        return Err(LoadError {
            path: FieldPath::root(),
            message: format!(
                "document is {len} bytes, over the limit of {MAX_DOCUMENT_BYTES} bytes; \
                 large files belong in `files[].from`, not inline"
            ),
            location: Location { line: 1, column: 1 },
        });
    }
    Ok(())
}

/// Collects the entries of one mapping and rejects a key seen twice.
pub(crate) struct MapBuilder {
    pub(crate) entries: Vec<(Key, Node)>,
    seen: Option<HashSet<String>>,
}

/// Up to this many keys a linear scan beats hashing.
const LINEAR_SCAN_KEYS: usize = 16;

impl MapBuilder {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            seen: None,
        }
    }

    /// Checks that `key` is new. The error is the message; the caller knows the path.
    pub(crate) fn check_key(&mut self, key: &Key) -> Result<(), String> {
        let duplicate = if let Some(seen) = &mut self.seen {
            !seen.insert(key.text.clone())
        } else if self.entries.len() >= LINEAR_SCAN_KEYS {
            let mut seen: HashSet<String> =
                self.entries.iter().map(|(k, _)| k.text.clone()).collect();
            let duplicate = !seen.insert(key.text.clone());
            self.seen = Some(seen);
            duplicate
        } else {
            self.entries.iter().any(|(k, _)| k.text == key.text)
        };
        if !duplicate {
            return Ok(());
        }
        let first = self
            .entries
            .iter()
            .find(|(k, _)| k.text == key.text)
            .map(|(k, _)| k.location);
        Err(match first {
            Some(first) => format!("duplicate key `{}` (first defined at {first})", key.text),
            None => format!("duplicate key `{}`", key.text),
        })
    }
}

/// Whether a plain scalar is null by the YAML 1.2 core schema.
pub(crate) fn is_plain_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// What a tree costs when an alias copies it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Size {
    /// Values, counted against [`MAX_NODES`].
    pub(crate) values: usize,
    /// Bytes of scalar and key text, counted against [`MAX_ALIAS_BYTES`].
    pub(crate) bytes: usize,
    /// Levels of nesting below the root (0 for a scalar).
    pub(crate) depth: usize,
}

/// Measures a tree (its depth is bounded by [`MAX_DEPTH`], so recursion is shallow).
pub(crate) fn measure(node: &Node) -> Size {
    let mut size = Size {
        values: 1,
        ..Size::default()
    };
    let mut add = |child: Size, key_bytes: usize| {
        size.values += child.values;
        size.bytes += child.bytes + key_bytes;
        size.depth = size.depth.max(child.depth + 1);
    };
    match &node.kind {
        NodeKind::Seq(items) => items.iter().for_each(|item| add(measure(item), 0)),
        NodeKind::Map(entries) => entries
            .iter()
            .for_each(|(k, v)| add(measure(v), k.text.len())),
        NodeKind::Int(text) | NodeKind::Float(text) | NodeKind::Str(text) => {
            size.bytes = text.len()
        }
        NodeKind::Null | NodeKind::Bool(_) => {}
    }
    size
}

/// Builds the tree of a document already in memory. Such a document has no
/// text, so each value's location is its ordinal in document order (line =
/// ordinal, column 1): diagnostics then sort in document order, and
/// [`crate::Template::from_value`] drops the locations before they are shown.
/// The limits of text documents apply: depth, number of values, and bytes of
/// text (keys and strings).
pub(crate) fn from_value(value: &serde_json::Value) -> Result<Node, LoadError> {
    let mut reader = ValueReader {
        budget: Budget::default(),
        ordinal: 0,
        text_bytes: 0,
        path: FieldPath::root(),
    };
    reader.node(value, 1)
}

struct ValueReader {
    budget: Budget,
    ordinal: u32,
    text_bytes: usize,
    path: FieldPath,
}

impl ValueReader {
    fn next_location(&mut self) -> Location {
        self.ordinal = self.ordinal.saturating_add(1);
        Location {
            line: self.ordinal,
            column: 1,
        }
    }

    fn text(&mut self, text: &str, location: Location) -> Result<(), LoadError> {
        self.text_bytes = self.text_bytes.saturating_add(text.len());
        if self.text_bytes > MAX_DOCUMENT_BYTES {
            return Err(LoadError {
                path: self.path.clone(),
                message: format!(
                    "document holds more than {MAX_DOCUMENT_BYTES} bytes of text; \
                     large files belong in `files[].from`, not inline"
                ),
                location,
            });
        }
        Ok(())
    }

    fn node(&mut self, value: &serde_json::Value, depth: usize) -> Result<Node, LoadError> {
        use serde_json::Value;
        let location = self.next_location();
        let with_path = |e: LoadError, path: &FieldPath| LoadError {
            path: path.clone(),
            ..e
        };
        self.budget
            .spend(1, location)
            .map_err(|e| with_path(e, &self.path))?;
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            Budget::check_depth(depth, location).map_err(|e| with_path(e, &self.path))?;
        }
        let kind = match value {
            Value::Null => NodeKind::Null,
            Value::Bool(b) => NodeKind::Bool(*b),
            Value::Number(n) if n.is_i64() || n.is_u64() => NodeKind::Int(n.to_string()),
            Value::Number(n) => NodeKind::Float(n.to_string()),
            Value::String(s) => {
                self.text(s, location)?;
                NodeKind::Str(s.clone())
            }
            Value::Array(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(i));
                    let node = self.node(item, depth + 1);
                    self.path.pop();
                    nodes.push(node?);
                }
                NodeKind::Seq(nodes)
            }
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (key, item) in map {
                    let key_location = self.next_location();
                    self.text(key, key_location)?;
                    self.path.push(Segment::Key(key.clone().into()));
                    let node = self.node(item, depth + 1);
                    self.path.pop();
                    let key = Key {
                        text: key.clone(),
                        location: key_location,
                    };
                    entries.push((key, node?));
                }
                NodeKind::Map(entries)
            }
        };
        Ok(Node { kind, location })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        for (text, kind) in [
            ("yes", "str"),
            ("on", "str"),
            ("No", "str"),
            ("true", "bool"),
            ("FALSE", "bool"),
            ("~", "null"),
            ("", "null"),
            ("0755", "int"),
            ("0o755", "int"),
            ("0x1F", "int"),
            ("0xg1", "str"),
            ("0x1f", "int"),
            ("-3", "int"),
            ("1.10", "float"),
            ("1.", "float"),
            (".5", "float"),
            ("1e5", "float"),
            ("1e", "str"),
            ("1.0.0", "str"),
            (".", "str"),
            (".inf", "float"),
            ("1280x800", "str"),
        ] {
            let got = match resolve_plain(text.to_owned()) {
                NodeKind::Null => "null",
                NodeKind::Bool(_) => "bool",
                NodeKind::Int(_) => "int",
                NodeKind::Float(_) => "float",
                NodeKind::Str(_) => "str",
                _ => "other",
            };
            assert_eq!(got, kind, "{text:?}");
        }
    }
}
