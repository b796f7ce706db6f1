//! JSON text (RFC 8259, strict) to a [`Node`] tree.
//!
//! serde_json keeps no positions and keeps the last of two equal keys; this small
//! reader keeps both the location of every value and the rules of [`crate::node`]
//! (duplicate keys, depth and size limits), so a JSON document gets the same
//! diagnostics as the same document in YAML.

use std::cell::Cell;

use crate::error::{FieldPath, Location, Segment};
use crate::node::{self, Budget, Key, LoadError, MapBuilder, Node, NodeKind};

const COMMENT: &str = "JSON syntax: comments are not allowed in JSON (YAML allows them)";

struct Reader<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
    /// Byte offset where the current line starts.
    line_start: usize,
    /// The last column computed: (byte offset, column there). Columns count
    /// characters, so each is counted on from the last one, not from the
    /// line's start (canonical JSON is a single long line).
    column_at: Cell<(usize, usize)>,
    budget: Budget,
    path: FieldPath,
}

/// Loads one JSON document.
pub(crate) fn load(src: &str) -> Result<Node, LoadError> {
    node::check_size(src.len())?;
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut reader = Reader {
        src,
        pos: 0,
        line: 1,
        line_start: 0,
        column_at: Cell::new((0, 1)),
        budget: Budget::default(),
        path: FieldPath::root(),
    };
    reader.skip_ws();
    if reader.pos == src.len() {
        return Err(reader.error("document is empty"));
    }
    let node = reader.value(1)?;
    reader.skip_ws();
    if reader.pos != src.len() {
        return Err(reader.error("JSON syntax: unexpected text after the document"));
    }
    Ok(node)
}

impl Reader<'_> {
    fn location(&self) -> Location {
        let (mut from, mut column) = self.column_at.get();
        if from < self.line_start || from > self.pos {
            (from, column) = (self.line_start, 1);
        }
        column += self.src[from..self.pos].chars().count();
        self.column_at.set((self.pos, column));
        Location {
            line: self.line,
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    fn error(&self, message: &str) -> LoadError {
        LoadError {
            path: self.path.clone(),
            message: message.to_owned(),
            location: self.location(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                _ => break,
            }
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), LoadError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("JSON syntax: expected {what}")))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, LoadError> {
        let location = self.location();
        self.budget.spend(1, location)?;
        let kind = match self.peek() {
            Some(b'{') => {
                Budget::check_depth(depth, location).map_err(|e| LoadError {
                    path: self.path.clone(),
                    ..e
                })?;
                self.object(depth)?
            }
            Some(b'[') => {
                Budget::check_depth(depth, location).map_err(|e| LoadError {
                    path: self.path.clone(),
                    ..e
                })?;
                self.array(depth)?
            }
            Some(b'"') => NodeKind::Str(self.string()?),
            Some(b't') => self.literal("true", NodeKind::Bool(true))?,
            Some(b'f') => self.literal("false", NodeKind::Bool(false))?,
            Some(b'n') => self.literal("null", NodeKind::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'/' | b'#') => return Err(self.error(COMMENT)),
            Some(_) => return Err(self.error("JSON syntax: expected a value")),
            None => return Err(self.error("JSON syntax: unexpected end of document")),
        };
        Ok(Node { kind, location })
    }

    fn literal(&mut self, word: &str, kind: NodeKind) -> Result<NodeKind, LoadError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(self.error("JSON syntax: expected a value"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<NodeKind, LoadError> {
        self.pos += 1;
        let mut map = MapBuilder::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(NodeKind::Map(map.entries));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error(match self.peek() {
                    Some(b'/' | b'#') => COMMENT,
                    _ => "JSON syntax: expected a key in double quotes",
                }));
            }
            let location = self.location();
            let key = Key {
                text: self.string()?,
                location,
            };
            if let Err(message) = map.check_key(&key) {
                return Err(LoadError {
                    path: self.path.key(key.text.clone()),
                    message,
                    location,
                });
            }
            self.skip_ws();
            self.expect(b':', "`:` after a key")?;
            self.skip_ws();
            self.path.push(Segment::Key(key.text.clone().into()));
            let value = self.value(depth + 1)?;
            self.path.pop();
            map.entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(NodeKind::Map(map.entries));
                }
                _ => return Err(self.error("JSON syntax: expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<NodeKind, LoadError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(NodeKind::Seq(items));
        }
        loop {
            self.skip_ws();
            self.path.push(Segment::Index(items.len()));
            let value = self.value(depth + 1)?;
            self.path.pop();
            items.push(value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(NodeKind::Seq(items));
                }
                _ => return Err(self.error("JSON syntax: expected `,` or `]`")),
            }
        }
    }

    fn number(&mut self) -> Result<NodeKind, LoadError> {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        let mut pos = self.pos;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        let int_start = pos;
        let int_digits = digits(&mut pos);
        if int_digits == 0 || (int_digits > 1 && bytes[int_start] == b'0') {
            self.pos = int_start;
            return Err(self.error("JSON syntax: invalid number"));
        }
        let mut float = false;
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            float = true;
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("JSON syntax: invalid number"));
            }
        }
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            float = true;
            if matches!(bytes.get(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("JSON syntax: invalid number"));
            }
        }
        self.pos = pos;
        let text = self.src[start..pos].to_owned();
        Ok(if float {
            NodeKind::Float(text)
        } else {
            NodeKind::Int(text)
        })
    }

    fn string(&mut self) -> Result<String, LoadError> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let run = rest
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or_else(|| self.error("JSON syntax: unterminated string"))?;
            out.push_str(&rest[..run]);
            self.pos += run;
            match self.src.as_bytes()[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("JSON syntax: unterminated string"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.pos -= 2;
                            return Err(self.error("JSON syntax: invalid escape in string"));
                        }
                    }
                }
                _ => return Err(self.error("JSON syntax: control character in string; escape it")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, LoadError> {
        let hex = self
            .src
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("JSON syntax: `\\u` needs four hex digits"))?;
        self.pos += 4;
        u32::from_str_radix(hex, 16)
            .map_err(|_| self.error("JSON syntax: `\\u` needs four hex digits"))
    }

    fn unicode_escape(&mut self) -> Result<char, LoadError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.src[self.pos..].starts_with("\\u") {
                return Err(self.error("JSON syntax: unpaired surrogate in `\\u` escape"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("JSON syntax: unpaired surrogate in `\\u` escape"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code)
            .ok_or_else(|| self.error("JSON syntax: unpaired surrogate in `\\u` escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        load(src).expect_err("should fail").to_string()
    }

    #[test]
    fn reads_values_with_locations() {
        let node =
            load("{\n  \"a\": [1, -2.5e3, \"x\\u00e9\\ud83d\\ude00\", true, null]\n}").unwrap();
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.location, Location { line: 2, column: 3 });
        let NodeKind::Seq(items) = &entries[0].1.kind else {
            panic!()
        };
        assert_eq!(items[0].kind, NodeKind::Int("1".into()));
        assert_eq!(items[1].kind, NodeKind::Float("-2.5e3".into()));
        assert_eq!(items[2].kind, NodeKind::Str("xé😀".into()));
        assert_eq!(items[3].kind, NodeKind::Bool(true));
        assert_eq!(items[4].kind, NodeKind::Null);
        assert_eq!(
            items[1].location,
            Location {
                line: 2,
                column: 12
            }
        );
    }

    #[test]
    fn columns_on_one_long_line() {
        let mut text = String::from("{\"a\": [");
        text.push_str(&vec!["\"é\""; 50_000].join(","));
        text.push_str(", x]}");
        // `{"a": [` is 7 characters, 50,000 items `"é"` and their 49,999 commas are
        // 199,999, then `, ` and the `x`: column 7 + 199,999 + 2 + 1.
        let expected = format!("@1:{}: JSON syntax: expected a value", 7 + 199_999 + 2 + 1);
        assert!(err(&text).ends_with(&expected), "{}", err(&text));
    }

    #[test]
    fn rejects_bad_json() {
        assert_eq!(
            err("{\"a\": 1, \"a\": 2}"),
            "a @1:10: duplicate key `a` (first defined at 1:2)"
        );
        assert!(err("{\"a\": 01}").contains("invalid number"));
        assert!(err("{\"a\": 1,}").contains("expected a key in double quotes"));
        assert!(err("{\"a\": 1, // note\n}").contains("comments are not allowed"));
        assert!(err("[1 2]").contains("expected `,` or `]`"));
        assert!(err("{\"a\": \"x\ny\"}").contains("control character"));
        assert!(err("{} {}").contains("after the document"));
        assert!(err("\"\\ud800\"").contains("surrogate"));
        assert!(err("  ").contains("empty"));
        assert!(err(&"[".repeat(100_000)).contains("deeper than 64"));
        assert_eq!(
            err("{\"a\": {\"b\": [1, tru]}}"),
            "a.b[1] @1:17: JSON syntax: expected a value"
        );
    }
}
