//! `${var.X}` and `${env.X}` interpolation.
//!
//! Rules:
//! - `${var.NAME}` is the value of `vars.NAME`; `${env.NAME}` is the value of
//!   the literal `env.NAME`. A secret-backed env value cannot be interpolated:
//!   secrets are only known at launch.
//! - `vars` and literal `env` values may themselves refer to vars and env
//!   values; each is resolved once, and a cycle is an error.
//! - `$${` is an escape for a literal `${`. Any other `${...}` (a shell's
//!   `${HOME}`) and any other `$` stay as written.
//! - Expansion is bounded: references may add at most [`MAX_VALUE`] bytes to
//!   one value and [`MAX_TOTAL`] bytes to the whole document (text as written
//!   is not counted), so doubling chains fail fast instead of growing without
//!   end.

use std::collections::HashMap;

use crate::convert::{Cx, Map, Sp};
use crate::error::{FieldPath, Location, Segment};
use crate::node::truncate;
use crate::raw::EnvValue;

/// Largest single interpolated value.
pub(crate) const MAX_VALUE: usize = 1024 * 1024;
/// Largest total of interpolated text in one document.
pub(crate) const MAX_TOTAL: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ns {
    Var,
    Env,
}

impl Ns {
    fn as_str(self) -> &'static str {
        match self {
            Ns::Var => "var",
            Ns::Env => "env",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Ref(Ns, &'a str),
}

/// Splits `text` into literal runs and references.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if after.starts_with("$${") {
            out.push(Piece::Text(&rest[..i + 1])); // keep one `$`, then continue after `$$`
            out.push(Piece::Text("{"));
            rest = &rest[i + 3..];
            continue;
        }
        let ns = if after.starts_with("${var.") {
            Ns::Var
        } else if after.starts_with("${env.") {
            Ns::Env
        } else {
            out.push(Piece::Text(&rest[..i + 1]));
            rest = &rest[i + 1..];
            continue;
        };
        out.push(Piece::Text(&rest[..i]));
        let body = &after[6..];
        let end = body
            .find('}')
            .ok_or_else(|| format!("`${{{}.` is not closed with `}}`", ns.as_str()))?;
        let name = &body[..end];
        if !is_ident(name) {
            return Err(format!(
                "`${{{}.{}}}` is not a valid reference (names are letters, digits, `_` and `-`)",
                ns.as_str(),
                truncate(name)
            ));
        }
        out.push(Piece::Ref(ns, name));
        rest = &body[end + 1..];
    }
    out.push(Piece::Text(rest));
    out.retain(|p| *p != Piece::Text(""));
    Ok(out)
}

pub(crate) fn is_ident(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone)]
enum State {
    Pending,
    Resolving,
    Done(String),
    /// A problem already reported; users of the value stay quiet.
    Failed,
    /// A secret-backed env value.
    Secret,
}

/// One definition being resolved.
struct Frame {
    id: (Ns, String),
    /// Literal text (`None`) or a reference into a namespace.
    pieces: Vec<(Option<Ns>, String)>,
    next: usize,
    out: String,
    /// Bytes that references added to `out`.
    added: usize,
    failed: bool,
}

/// The resolved `vars` and literal `env` values.
pub(crate) struct Scope {
    states: HashMap<(Ns, String), State>,
    /// Raw text and place of each definition, for resolving and for messages.
    sources: HashMap<(Ns, String), (String, Option<Location>)>,
    total: usize,
    /// The document-wide limit is reported once, where it was reached.
    total_reported: bool,
}

impl Scope {
    /// Resolves every var and literal env value, reporting problems at their own paths.
    pub(crate) fn resolve(
        vars: Option<&Map<Sp<String>>>,
        env: Option<&Map<EnvValue>>,
        cx: &mut Cx,
    ) -> Self {
        let mut scope = Scope {
            states: HashMap::new(),
            sources: HashMap::new(),
            total: 0,
            total_reported: false,
        };
        let mut order = Vec::new();
        for (key, value) in vars.map(|m| m.0.as_slice()).unwrap_or_default() {
            let id = (Ns::Var, key.value.clone());
            scope.states.insert(id.clone(), State::Pending);
            scope
                .sources
                .insert(id.clone(), (value.value.clone(), value.at));
            order.push(id);
        }
        for (key, value) in env.map(|m| m.0.as_slice()).unwrap_or_default() {
            let id = (Ns::Env, key.value.clone());
            match value {
                EnvValue::Literal(text) => {
                    scope.states.insert(id.clone(), State::Pending);
                    scope
                        .sources
                        .insert(id.clone(), (text.value.clone(), text.at));
                    order.push(id);
                }
                EnvValue::Secret(_) => {
                    scope.states.insert(id, State::Secret);
                }
            }
        }
        for id in order {
            scope.resolve_one(id, cx);
        }
        scope
    }

    fn path_of(id: &(Ns, String)) -> [Segment; 2] {
        let top = match id.0 {
            Ns::Var => "vars",
            Ns::Env => "env",
        };
        [Segment::Key(top.into()), Segment::Key(id.1.clone().into())]
    }

    fn report(&self, cx: &mut Cx, id: &(Ns, String), message: String) {
        let at = self.sources.get(id).and_then(|(_, at)| *at);
        let [a, b] = Self::path_of(id);
        cx.at(a, |cx| cx.at(b, |cx| cx.error(at, message)));
    }

    /// Appends `text` to a frame's value, failing the frame past the limits.
    fn push(&mut self, frame: &mut Frame, text: &str, cx: &mut Cx) {
        if frame.failed {
            return;
        }
        if let Err(limit) = charge(&mut frame.added, &mut self.total, text.len()) {
            frame.failed = true;
            if let Some(message) = self.limit_message(limit) {
                self.report(cx, &frame.id, message);
            }
            return;
        }
        frame.out.push_str(text);
    }

    /// Starts resolving `id`: parses its text into a frame.
    fn open(&mut self, id: (Ns, String), cx: &mut Cx) -> Option<Frame> {
        self.states.insert(id.clone(), State::Resolving);
        let text = self
            .sources
            .get(&id)
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        match pieces(&text) {
            Ok(list) => Some(Frame {
                pieces: list
                    .into_iter()
                    .map(|p| match p {
                        Piece::Text(t) => (None, t.to_owned()),
                        Piece::Ref(ns, name) => (Some(ns), name.to_owned()),
                    })
                    .collect(),
                id,
                next: 0,
                out: String::new(),
                added: 0,
                failed: false,
            }),
            Err(message) => {
                self.report(cx, &id, message);
                self.states.insert(id, State::Failed);
                None
            }
        }
    }

    /// Resolves one definition and all it depends on, with an explicit stack
    /// (a chain of 100,000 vars must not overflow the call stack).
    fn resolve_one(&mut self, start: (Ns, String), cx: &mut Cx) {
        if !matches!(self.states.get(&start), Some(State::Pending)) {
            return;
        }
        let mut stack: Vec<Frame> = self.open(start, cx).into_iter().collect();
        while let Some(mut frame) = stack.pop() {
            let Some((ns, text)) = frame.pieces.get(frame.next).cloned() else {
                // Finished: record the value and hand it to the frame waiting for it.
                let state = if frame.failed {
                    State::Failed
                } else {
                    State::Done(frame.out.clone())
                };
                self.states.insert(frame.id.clone(), state);
                if let Some(mut parent) = stack.pop() {
                    if frame.failed {
                        parent.failed = true;
                    } else {
                        self.push(&mut parent, &frame.out, cx);
                    }
                    stack.push(parent);
                }
                continue;
            };
            frame.next += 1;
            let Some(ns) = ns else {
                // The definition's own text is not expansion: it is not charged.
                frame.out.push_str(&text);
                stack.push(frame);
                continue;
            };
            let target = (ns, text);
            match self.states.get(&target).cloned() {
                Some(State::Done(value)) => self.push(&mut frame, &value, cx),
                Some(State::Pending) => {
                    let child = self.open(target, cx);
                    frame.failed |= child.is_none();
                    stack.push(frame);
                    stack.extend(child);
                    continue;
                }
                Some(State::Resolving) => {
                    frame.failed = true;
                    let message = if frame.id == target {
                        format!(
                            "`${{{}.{}}}` refers to itself",
                            target.0.as_str(),
                            truncate(&target.1)
                        )
                    } else {
                        format!(
                            "`${{{}.{}}}` is part of a reference cycle through `{}.{}`",
                            target.0.as_str(),
                            truncate(&target.1),
                            frame.id.0.as_str(),
                            truncate(&frame.id.1)
                        )
                    };
                    self.report(cx, &frame.id, message);
                }
                Some(State::Failed) => frame.failed = true,
                Some(State::Secret) => {
                    frame.failed = true;
                    self.report(cx, &frame.id, secret_message(&target.1));
                }
                None => {
                    frame.failed = true;
                    if !defined_but_unreadable(cx, target.0, &target.1) {
                        self.report(cx, &frame.id, unknown_message(target.0, &target.1));
                    }
                }
            }
            stack.push(frame);
        }
    }

    /// The message for a limit reached, or `None` when the total was already reported.
    fn limit_message(&mut self, limit: Limit) -> Option<String> {
        match limit {
            Limit::Value => Some(format!(
                "references add more than {MAX_VALUE} bytes to this value"
            )),
            Limit::Total if self.total_reported => None,
            Limit::Total => {
                self.total_reported = true;
                Some(format!(
                    "interpolation expands the document past {MAX_TOTAL} bytes in all"
                ))
            }
        }
    }

    /// The resolved value of a literal env entry (for the canonical `env`).
    pub(crate) fn env_value(&self, name: &str) -> Option<&str> {
        match self.states.get(&(Ns::Env, name.to_owned())) {
            Some(State::Done(text)) => Some(text),
            _ => None,
        }
    }

    /// Interpolates one string value at the current path of `cx`.
    pub(crate) fn apply(&mut self, value: &Sp<String>, cx: &mut Cx) -> Option<String> {
        if !value.value.contains('$') {
            return Some(value.value.clone());
        }
        let list = match pieces(&value.value) {
            Ok(list) => list,
            Err(message) => {
                cx.error(value.at, message);
                return None;
            }
        };
        let mut out = String::new();
        let mut added = 0;
        for piece in list {
            let text = match piece {
                Piece::Text(text) => {
                    // Text as written is not expansion: it is not charged.
                    out.push_str(text);
                    continue;
                }
                Piece::Ref(ns, name) => match self.states.get(&(ns, name.to_owned())) {
                    Some(State::Done(text)) => text.as_str(),
                    Some(State::Secret) => {
                        cx.error(value.at, secret_message(name));
                        return None;
                    }
                    Some(_) => return None, // reported where it is defined
                    None => {
                        if !defined_but_unreadable(cx, ns, name) {
                            cx.error(value.at, unknown_message(ns, name));
                        }
                        return None;
                    }
                },
            };
            if let Err(limit) = charge(&mut added, &mut self.total, text.len()) {
                if let Some(message) = self.limit_message(limit) {
                    cx.error(value.at, message);
                }
                return None;
            }
            out.push_str(text);
        }
        Some(out)
    }
}

/// Which expansion limit a value ran into.
enum Limit {
    Value,
    Total,
}

/// Charges `len` bytes of expansion to one value (`added`) and to the document
/// (`total`), unless that passes [`MAX_VALUE`] or [`MAX_TOTAL`].
fn charge(added: &mut usize, total: &mut usize, len: usize) -> Result<(), Limit> {
    if *added + len > MAX_VALUE {
        return Err(Limit::Value);
    }
    if *total + len > MAX_TOTAL {
        return Err(Limit::Total);
    }
    *added += len;
    *total += len;
    Ok(())
}

fn secret_message(name: &str) -> String {
    format!(
        "`${{env.{name}}}` refers to a secret-backed variable; secrets are only known at launch and cannot be interpolated"
    )
}

/// Whether `name` was written in `vars` or `env` but could not be read (that
/// problem is reported where it is).
fn defined_but_unreadable(cx: &Cx, ns: Ns, name: &str) -> bool {
    let top = match ns {
        Ns::Var => "vars",
        Ns::Env => "env",
    };
    cx.invalid
        .contains(&FieldPath::root().key(top).key(name.to_owned()))
}

fn unknown_message(ns: Ns, name: &str) -> String {
    let list = match ns {
        Ns::Var => "vars",
        Ns::Env => "literal env values",
    };
    format!(
        "unknown reference `${{{}.{}}}`: no such name in {list}",
        ns.as_str(),
        truncate(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        pieces(text)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => t.to_owned(),
                Piece::Ref(ns, name) => format!("<{}.{name}>", ns.as_str()),
            })
            .collect()
    }

    #[test]
    fn splits_references_and_escapes() {
        assert_eq!(
            render("a ${var.x} $${var.y} ${HOME} $5 ${env.P}"),
            "a <var.x> ${var.y} ${HOME} $5 <env.P>"
        );
        assert_eq!(render("$$${var.x}"), "$${var.x}");
        assert_eq!(render("${var.a}${var.b}"), "<var.a><var.b>");
        assert!(pieces("${var.x").unwrap_err().contains("not closed"));
        assert!(
            pieces("${var.a b}")
                .unwrap_err()
                .contains("not a valid reference")
        );
    }
}
