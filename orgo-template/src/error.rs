//! Field paths, diagnostics and the crate's error type.

use std::borrow::Cow;
use std::fmt;

/// A position in the source document: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1, counted in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a [`FieldPath`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A mapping key (a field name, an `env` key, a `files` sugar path).
    Key(Cow<'static, str>),
    /// A zero-based index into a sequence.
    Index(usize),
}

/// Where in a template a value lives, in the notation of the schema reference:
/// `apps[0].services[1].restart`, `env.NODE_ENV`, `files["/opt/x"]`.
///
/// Keys made of ASCII letters, digits, `_` and `-` are written after a dot; any
/// other key is written in brackets as a JSON string.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The path of the document itself.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the path of the whole document.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }

    /// This path with one more key.
    pub fn key(&self, key: impl Into<Cow<'static, str>>) -> Self {
        let mut path = self.clone();
        path.push(Segment::Key(key.into()));
        path
    }

    /// This path with one more index.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.push(Segment::Index(index));
        path
    }

    pub(crate) fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    pub(crate) fn replace_prefix(&self, prefix: &FieldPath, with: &FieldPath) -> FieldPath {
        let mut out = with.clone();
        out.0.extend_from_slice(&self.0[prefix.0.len()..]);
        out
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if is_plain_key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    let quoted = serde_json::to_string(key).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")?;
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One problem found in a template: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The field the problem is about, as the author wrote it.
    pub path: FieldPath,
    /// What was found and what is allowed, lower-case, values in backticks.
    pub message: String,
    /// Where the field is in the source text, when the document came from text.
    pub location: Option<Location>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(location) => write!(f, "{} ({location}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one document, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub(crate) fn new(mut list: Vec<Diagnostic>) -> Self {
        // Source order first; problems without a location (whole-document ones) last.
        list.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                d.location
                    .map_or((u32::MAX, u32::MAX), |l| (l.line, l.column))
            };
            key(a).cmp(&key(b)).then_with(|| a.path.cmp(&b.path))
        });
        list.dedup();
        Self(list)
    }

    /// The same problems in the same order, without locations: for a document
    /// built in memory, whose locations are only ordinals.
    pub(crate) fn without_locations(mut self) -> Self {
        for diagnostic in &mut self.0 {
            diagnostic.location = None;
        }
        self
    }

    pub(crate) fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }

    /// The problems, in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems there are (never zero).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: an error carries at least one problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Why a template could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The document broke one or more rules of the format; every problem is listed.
    #[error("{}", summary(.0))]
    Invalid(Diagnostics),
    /// A template ref that does not parse.
    #[error("invalid template ref `{input}`: {reason}")]
    InvalidRef {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that breaks its rules.
    #[error("invalid name: {reason}")]
    InvalidName {
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:` and 64 lower-case hex digits.
    #[error("invalid digest `{input}`: expected `sha256:` and 64 lower-case hex digits")]
    InvalidDigest {
        /// The text given.
        input: String,
    },
}

fn summary(diagnostics: &Diagnostics) -> String {
    match diagnostics.len() {
        1 => format!("invalid template: {}", diagnostics.0[0]),
        n => format!("invalid template: {n} problems\n{diagnostics}"),
    }
}

impl TemplateError {
    /// The problems in the document, for [`TemplateError::Invalid`]; empty otherwise.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            TemplateError::Invalid(diagnostics) => &diagnostics.0,
            _ => &[],
        }
    }

    pub(crate) fn single(path: FieldPath, message: String, location: Option<Location>) -> Self {
        TemplateError::Invalid(Diagnostics::new(vec![Diagnostic {
            path,
            message,
            location,
        }]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_reference() {
        let path = FieldPath::root()
            .key("apps")
            .index(0)
            .key("services")
            .index(1)
            .key("restart");
        assert_eq!(path.to_string(), "apps[0].services[1].restart");
        assert_eq!(
            FieldPath::root().key("env").key("NODE_ENV").to_string(),
            "env.NODE_ENV"
        );
        assert_eq!(
            FieldPath::root().key("files").key("/opt/x y").to_string(),
            r#"files["/opt/x y"]"#
        );
        assert_eq!(FieldPath::root().to_string(), "(document)");
    }
}
