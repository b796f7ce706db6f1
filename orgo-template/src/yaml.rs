//! YAML text to a [`Node`] tree, with saphyr-parser's event stream.
//!
//! serde_yaml 0.9 keeps no positions, drops tags silently and keeps duplicate
//! keys of maps; an event parser lets every value keep its line and column and
//! lets each of those cases be an error here.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{FieldPath, Location, Segment};
use crate::node::{self, Budget, Key, LoadError, MapBuilder, Node, NodeKind};

enum Frame {
    Seq {
        items: Vec<Node>,
        location: Location,
        anchor: usize,
    },
    Map {
        map: MapBuilder,
        pending: Option<Key>,
        location: Location,
        anchor: usize,
    },
}

fn location(span: &Span) -> Location {
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Location {
        line: to_u32(span.start.line()),
        column: to_u32(span.start.col()).saturating_add(1),
    }
}

struct Loader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, node::Size)>,
    budget: Budget,
    root: Option<Node>,
}

impl Loader {
    /// The path of the value about to be added to the innermost open collection.
    fn path(&self) -> FieldPath {
        let mut path = FieldPath::root();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => path.push(Segment::Index(items.len())),
                Frame::Map {
                    pending: Some(key), ..
                } => path.push(Segment::Key(key.text.clone().into())),
                Frame::Map { pending: None, .. } => {}
            }
        }
        path
    }

    fn error(&self, message: String, location: Location) -> LoadError {
        LoadError {
            path: self.path(),
            message,
            location,
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { pending: None, .. }))
    }

    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { map, pending, .. }) => {
                if let Some(key) = pending.take() {
                    map.entries.push((key, node));
                }
            }
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (node.clone(), node::measure(node)));
        }
    }

    fn scalar(
        &mut self,
        text: String,
        style: ScalarStyle,
        anchor: usize,
        at: Location,
    ) -> Result<(), LoadError> {
        if self.expecting_key() {
            if anchor != 0 {
                return Err(self.error(
                    "anchors on mapping keys are not supported; anchor values instead".to_owned(),
                    at,
                ));
            }
            if style == ScalarStyle::Plain {
                if text == "<<" {
                    return Err(self.error(
                        "YAML merge keys (`<<`) are not supported; write the fields out".to_owned(),
                        at,
                    ));
                }
                if node::is_plain_null(&text) {
                    return Err(
                        self.error("a mapping key must not be null or empty".to_owned(), at)
                    );
                }
            }
            let key = Key { text, location: at };
            if let Some(Frame::Map { map, pending, .. }) = self.stack.last_mut() {
                match map.check_key(&key) {
                    Ok(()) => *pending = Some(key),
                    Err(message) => {
                        // The path is built only here, on the error path.
                        let path = self.path().key(key.text.clone());
                        return Err(LoadError {
                            path,
                            message,
                            location: at,
                        });
                    }
                }
            }
            return Ok(());
        }
        self.budget.spend(1, at)?;
        let kind = if style == ScalarStyle::Plain {
            node::resolve_plain(text)
        } else {
            NodeKind::Str(text)
        };
        let node = Node { kind, location: at };
        self.remember(anchor, &node);
        self.add(node);
        Ok(())
    }

    fn open(&mut self, map: bool, anchor: usize, at: Location) -> Result<(), LoadError> {
        if self.expecting_key() {
            return Err(self.error(
                "a mapping key must be a plain string, not a sequence or mapping".to_owned(),
                at,
            ));
        }
        Budget::check_depth(self.stack.len() + 1, at).map_err(|e| LoadError {
            path: self.path(),
            ..e
        })?;
        self.budget.spend(1, at)?;
        self.stack.push(if map {
            Frame::Map {
                map: MapBuilder::new(),
                pending: None,
                location: at,
                anchor,
            }
        } else {
            Frame::Seq {
                items: Vec::new(),
                location: at,
                anchor,
            }
        });
        Ok(())
    }

    fn close(&mut self) {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq {
                items,
                location,
                anchor,
            }) => (
                Node {
                    kind: NodeKind::Seq(items),
                    location,
                },
                anchor,
            ),
            Some(Frame::Map {
                map,
                location,
                anchor,
                ..
            }) => (
                Node {
                    kind: NodeKind::Map(map.entries),
                    location,
                },
                anchor,
            ),
            None => return,
        };
        self.remember(anchor, &node);
        self.add(node);
    }

    fn alias(&mut self, id: usize, at: Location) -> Result<(), LoadError> {
        if self.expecting_key() {
            return Err(self.error("an alias cannot be a mapping key".to_owned(), at));
        }
        let Some((node, size)) = self.anchors.get(&id) else {
            return Err(self.error(
                "alias refers to an anchor that encloses it; recursive aliases are not allowed"
                    .to_owned(),
                at,
            ));
        };
        let (mut node, size) = (node.clone(), *size);
        self.budget.spend(size.values, at)?;
        self.budget.spend_alias_bytes(size.bytes, at)?;
        // The copy lands inside the collections open now; nesting counts from there.
        Budget::check_depth(self.stack.len() + size.depth, at).map_err(|e| LoadError {
            path: self.path(),
            ..e
        })?;
        node.location = at;
        self.add(node);
        Ok(())
    }
}

/// A tag as its author would have written it: `!!str`, `!foo`.
fn tag_text(tag: &saphyr_parser::Tag) -> String {
    match tag.handle.as_str() {
        "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
        handle => format!("{handle}{}", tag.suffix),
    }
}

/// Loads one YAML document.
pub(crate) fn load(src: &str) -> Result<Node, LoadError> {
    node::check_size(src.len())?;
    let mut loader = Loader {
        stack: Vec::new(),
        anchors: HashMap::new(),
        budget: Budget::default(),
        root: None,
    };
    let mut documents = 0;
    for event in Parser::new_from_str(src) {
        let (event, span) = event.map_err(|e| LoadError {
            path: loader.path(),
            message: if e.info() == "recursion limit exceeded" {
                format!("document nests deeper than {} levels", node::MAX_DEPTH)
            } else {
                format!("YAML syntax: {}", e.info())
            },
            location: Location {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                column: u32::try_from(e.marker().col())
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
            },
        })?;
        let at = location(&span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(LoadError {
                        path: FieldPath::root(),
                        message: "a template is one YAML document; found a second one".to_owned(),
                        location: at,
                    });
                }
            }
            Event::Scalar(_, _, _, Some(tag))
            | Event::SequenceStart(_, Some(tag))
            | Event::MappingStart(_, Some(tag)) => {
                return Err(loader.error(
                    format!("YAML tags are not supported (found `{}`)", tag_text(&tag)),
                    at,
                ));
            }
            Event::Scalar(text, style, anchor, None) => {
                loader.scalar(text.into_owned(), style, anchor, at)?
            }
            Event::SequenceStart(anchor, None) => loader.open(false, anchor, at)?,
            Event::MappingStart(anchor, None) => loader.open(true, anchor, at)?,
            Event::SequenceEnd | Event::MappingEnd => loader.close(),
            Event::Alias(id) => loader.alias(id, at)?,
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
        }
    }
    loader.root.ok_or_else(|| LoadError {
        path: FieldPath::root(),
        message: "document is empty".to_owned(),
        location: Location { line: 1, column: 1 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        load(src).expect_err("should fail").to_string()
    }

    #[test]
    fn keeps_locations_and_styles() {
        let node = load("a: 1.10\nb: '1.10'\nc:\n  - yes\n").unwrap();
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        assert_eq!(entries[0].1.kind, NodeKind::Float("1.10".into()));
        assert_eq!(entries[1].1.kind, NodeKind::Str("1.10".into()));
        assert_eq!(entries[2].0.location, Location { line: 3, column: 1 });
        let NodeKind::Seq(items) = &entries[2].1.kind else {
            panic!()
        };
        assert_eq!(items[0].kind, NodeKind::Str("yes".into()));
        assert_eq!(items[0].location, Location { line: 4, column: 5 });
    }

    #[test]
    fn rejects_what_serde_yaml_would_silently_accept() {
        assert_eq!(
            err("env:\n  A: x\n  A: y\n"),
            "env.A @3:3: duplicate key `A` (first defined at 2:3)"
        );
        assert_eq!(
            err("a: !foo x\n"),
            "a @1:4: YAML tags are not supported (found `!foo`)"
        );
        assert!(err("a: &x {b: 1}\nc:\n  <<: *x\n").contains("merge keys"));
        assert!(err("a: 1\n---\nb: 2\n").contains("one YAML document"));
        assert!(err("a: !!str 1\n").contains("(found `!!str`)"));
        assert!(err("").contains("empty"));
        assert!(err("a: &x [*x]\n").contains("recursive"));
    }

    #[test]
    fn duplicate_keys_found_in_large_maps_too() {
        let mut src = String::new();
        for i in 0..40 {
            src.push_str(&format!("K{i}: v\n"));
        }
        src.push_str("K7: again\n");
        assert!(err(&src).starts_with("K7 @41:1: duplicate key `K7`"));
    }

    #[test]
    fn aliases_are_expanded_within_budget() {
        let node = load("a: &x {b: 1}\nc: *x\n").unwrap();
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        assert_eq!(entries[0].1.kind, entries[1].1.kind);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(err(&bomb).contains("more than 200000 values"));
    }

    #[test]
    fn aliases_cannot_multiply_text_or_nesting() {
        let big = "a".repeat(100_000);
        let mut doc = format!("a: &s {big}\nb: [");
        doc.push_str(&vec!["*s"; 60].join(", "));
        doc.push_str("]\n");
        assert!(err(&doc).contains("aliases copy more than 4194304 bytes"));

        let mut deep = String::from("a0: &a0 [[[[[[[[[[x]]]]]]]]]]\n");
        for i in 1..10 {
            deep.push_str(&format!("a{i}: &a{i} [[[[[[[[[[*a{}]]]]]]]]]]\n", i - 1));
        }
        assert!(err(&deep).contains("deeper than 64"));
        assert!(err("a:\n  &k b: 1\n").contains("anchors on mapping keys"));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("deeper than 64"));
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&" ".repeat(i));
            block.push_str("a:\n");
        }
        assert!(err(&block).contains("deeper than 64"));
    }
}
