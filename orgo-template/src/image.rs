//! A fluent, immutable image builder in the style of OpenComputer's `Image`,
//! written onto the `build`, `env` and `files` sections of a template.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};
use url::Url;

use crate::digest::{Digest, to_document_value};
use crate::error::{Diagnostic, Diagnostics, FieldPath, TemplateError};
use crate::{Template, jcs};

/// What a computer is made of, said step by step: packages, commands,
/// environment and files, on top of orgo's base Linux image.
///
/// Every method returns a new `Image` and leaves its receiver as it was, so
/// one image can be the start of several:
///
/// ```
/// use orgo_template::Image;
/// use serde_json::json;
///
/// let base = Image::base().apt_install(["curl", "jq"]).env([("PROJECT_ROOT", "/workspace")]);
/// let data = base.pip_install(["pandas"]).workdir("/workspace").run_commands(["make"]);
/// let web = base.npm_install(["pnpm"]).builder_memory(8192);
/// assert_ne!(data.cache_key(), base.cache_key());
/// // Build memory is a resource of the build, not content of the image.
/// assert_eq!(web.cache_key(), base.npm_install(["pnpm"]).cache_key());
///
/// let template = data.to_template("data-science", "1.0.0", &json!({"cpu": 4, "ram_gb": 8}))?;
/// assert_eq!(template.build().apt, ["curl", "jq"]);
/// assert_eq!(template.build().run, ["mkdir -p /workspace", "cd /workspace && make"]);
/// # Ok::<(), orgo_template::TemplateError>(())
/// ```
///
/// # How an image becomes a template
///
/// [`Image::to_template`] writes a template document and reads it through
/// [`Template::from_value`], so every rule of the format applies and every
/// problem comes back at its field path in that document (`build.apt[1]`,
/// `files[0].to`, `env.lower`, `hardware.cpu`), without locations.
///
/// - `apt_install`, `pip_install`, `npm_install` and `run_commands` append to
///   `build.apt`, `build.pip`, `build.npm` and `build.run`. A template's build
///   runs apt, then pip, then npm, then `run`, so the image keeps the order
///   of the steps within each list, not across them: an install that needs a
///   command run first (adding an apt repository) is written as a command,
///   `run_commands(["apt-get install -y nodejs"])`.
/// - `env` sets `env` entries; a later value for a name replaces an earlier one.
/// - `workdir(dir)` appends `mkdir -p DIR` to `build.run`, and every later
///   `run_commands` command becomes `cd DIR && COMMAND` (Dockerfile's
///   `WORKDIR` for `RUN`). `DIR` must be absolute; it is single-quoted for the
///   shell when it holds anything but letters, digits and `/._-+@%:,=`. A
///   template has no default working directory for the computer itself
///   (services and terminal sessions have their own `cwd`), so `workdir`
///   says nothing about the computer at run time.
/// - `add_file(path, content)` adds `{to: path, inline: content}`.
/// - `add_local_file(local, remote)` adds `{to: remote, from: file://LOCAL}`
///   and `add_local_dir(local, remote)` adds `{to: remote, from: file://LOCAL/}`:
///   a `file://` source whose path ends in `/` is a directory whose tree the
///   build copies to `to` (a trailing `/` of `remote` is dropped). `local`
///   must be absolute; it is not read here (this crate does no I/O): the
///   machine that runs the build reads it.
/// - `builder_memory(mb)` is the RAM of the build, not part of the image: it
///   is in neither the template nor the cache key.
///
/// Strings are taken literally: `${var.X}` in a command or a file stays
/// `${var.X}` in the computer (the builder escapes it as `$${var.X}`), since
/// an image has no `vars`; the program that builds the image interpolates.
///
/// # The cache key (a contract)
///
/// [`Image::cache_key`] is `sha256:` and the lower-case hex SHA-256 of
/// [`Image::canonical_json`]: the `build`, `env` and `files` sections the
/// image writes into its template, as one JSON object serialized like
/// [`Template::canonical_json`] (RFC 8785: members sorted, no whitespace,
/// strings as a document spells them):
///
/// ```text
/// {"build":{"apt":[..],"npm":[..],"pip":[..],"run":[..]},"env":{"NAME":"value"},
///  "files":[{"inline":"text","to":"/path"},{"from":"file:///local/path","to":"/path"}]}
/// ```
///
/// Empty lists, maps and sections are left out (so `Image::base()` hashes
/// `{}`), and values are as given, before the template's validation. The
/// template's name, version and hardware are not in it, nor is the build
/// memory or the working directory left for later commands. So images that
/// write the same sections share a key however their steps were split
/// (`apt_install(["a"]).apt_install(["b"])` is `apt_install(["a", "b"])`),
/// and equal keys give equal templates for equal names, versions and
/// hardware. The key covers a local file's path, not its content: a builder
/// that reads local files must hash what it reads into its own cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct Image {
    content: Content,
    workdir: Option<String>,
    builder_memory_mb: Option<u32>,
    /// Problems found when a step was added, reported by [`Image::to_template`].
    problems: Vec<(FieldPath, String)>,
}

/// The sections an image writes; serialized, they are the cache key's input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Steps::is_empty")]
    build: Steps,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
struct Steps {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    apt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pip: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    npm: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    run: Vec<String>,
}

impl Steps {
    fn is_empty(&self) -> bool {
        self.apt.is_empty() && self.pip.is_empty() && self.npm.is_empty() && self.run.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
struct FileEntry {
    to: String,
    #[serde(flatten)]
    source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Inline(String),
    From(String),
}

/// The default build memory, in MiB, when [`Image::builder_memory`] was not called.
const DEFAULT_BUILDER_MEMORY_MB: u32 = 4096;

impl Image {
    /// orgo's base Linux image, with nothing added.
    pub fn base() -> Self {
        Self::default()
    }

    fn with(&self, change: impl FnOnce(&mut Self)) -> Self {
        let mut image = self.clone();
        change(&mut image);
        image
    }

    /// Installs Debian packages (`build.apt`).
    pub fn apt_install<I, S>(&self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with(|image| extend(&mut image.content.build.apt, packages))
    }

    /// Installs Python packages (`build.pip`).
    pub fn pip_install<I, S>(&self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with(|image| extend(&mut image.content.build.pip, packages))
    }

    /// Installs npm packages (`build.npm`).
    pub fn npm_install<I, S>(&self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with(|image| extend(&mut image.content.build.npm, packages))
    }

    /// Runs shell commands during the build, in order (`build.run`), in the
    /// directory of the last [`Image::workdir`] if there was one.
    pub fn run_commands<I, S>(&self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with(|image| {
            for command in commands {
                let command = command.into();
                let command = match &image.workdir {
                    Some(dir) => format!("cd {} && {command}", shell_quote(dir)),
                    None => command,
                };
                image.content.build.run.push(command);
            }
        })
    }

    /// Sets environment variables (`env`); a later value replaces an earlier one.
    pub fn env<I, K, V>(&self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.with(|image| {
            for (name, value) in vars {
                image.content.env.insert(name.into(), value.into());
            }
        })
    }

    /// Creates `dir` and runs the later commands in it (see the type's docs).
    pub fn workdir(&self, dir: impl Into<String>) -> Self {
        let dir = dir.into();
        self.with(|image| {
            let run = &mut image.content.build.run;
            if !dir.starts_with('/') {
                image.problems.push((
                    FieldPath::root().key("build").key("run").index(run.len()),
                    format!(
                        "workdir `{}` must be an absolute path",
                        crate::node::truncate(&dir)
                    ),
                ));
            }
            run.push(format!("mkdir -p {}", shell_quote(&dir)));
            image.workdir = Some(dir);
        })
    }

    /// Writes a file with the given text (`files[]` with `inline`).
    pub fn add_file(&self, path: impl Into<String>, content: impl Into<String>) -> Self {
        let (to, content) = (path.into(), content.into());
        self.with(|image| {
            image.content.files.push(FileEntry {
                to,
                source: Source::Inline(content),
            })
        })
    }

    /// Copies a local file (`files[]` with `from: file://LOCAL`); `local` must be absolute.
    pub fn add_local_file(&self, local: impl AsRef<Path>, remote: impl Into<String>) -> Self {
        let local = local.as_ref();
        let remote = remote.into();
        self.with(|image| image.add_local(Url::from_file_path(local), local, remote))
    }

    /// Copies a local directory's tree (`files[]` with `from: file://LOCAL/`);
    /// `local` must be absolute.
    pub fn add_local_dir(&self, local: impl AsRef<Path>, remote: impl Into<String>) -> Self {
        let local = local.as_ref();
        let remote = remote.into();
        let trimmed = remote.trim_end_matches('/');
        let remote = if trimmed.is_empty() {
            remote
        } else {
            trimmed.to_owned()
        };
        self.with(|image| image.add_local(Url::from_directory_path(local), local, remote))
    }

    fn add_local(&mut self, url: Result<Url, ()>, local: &Path, to: String) {
        let from = match url {
            Ok(url) => url.to_string(),
            Err(()) => {
                let shown = local.to_string_lossy().into_owned();
                self.problems.push((
                    FieldPath::root()
                        .key("files")
                        .index(self.content.files.len())
                        .key("from"),
                    format!(
                        "`{}` is a relative path; a local file or directory needs an absolute path",
                        crate::node::truncate(&shown)
                    ),
                ));
                shown
            }
        };
        self.content.files.push(FileEntry {
            to,
            source: Source::From(from),
        });
    }

    /// Sets the RAM of the build, in MiB (the default is 4096). It is not part
    /// of the image: neither the template nor the cache key holds it.
    pub fn builder_memory(&self, mb: u32) -> Self {
        self.with(|image| image.builder_memory_mb = Some(mb))
    }

    /// The RAM of the build in MiB: the last [`Image::builder_memory`], or 4096.
    pub fn builder_memory_mb(&self) -> u32 {
        self.builder_memory_mb.unwrap_or(DEFAULT_BUILDER_MEMORY_MB)
    }

    /// The directory of the last [`Image::workdir`], where later commands run.
    pub fn working_dir(&self) -> Option<&str> {
        self.workdir.as_deref()
    }

    /// The RFC 8785 JSON that [`Image::cache_key`] hashes (see the type's docs).
    pub fn canonical_json(&self) -> String {
        jcs::to_string(&self.content).expect("an image holds only strings, lists and maps")
    }

    /// `sha256:` + hex SHA-256 of [`Image::canonical_json`]: equal for images
    /// that write the same sections, whatever their build memory.
    pub fn cache_key(&self) -> Digest {
        Digest::of(self.canonical_json().as_bytes())
    }

    /// The sections the image writes (`build`, `env`, `files`) as a JSON
    /// object, the content of [`Image::canonical_json`] with members in the
    /// reference's order and strings as a document spells them.
    pub fn to_value(&self) -> Value {
        to_document_value(&self.content)
    }

    /// The template of this image: `template: {name, version}`, the given
    /// `hardware` fields (a JSON object, or `Value::Null` for none) and the
    /// image's sections, read through [`Template::from_value`]. Every problem
    /// is reported with its path in that document; see the type's docs.
    pub fn to_template(
        &self,
        name: &str,
        version: &str,
        hardware: &Value,
    ) -> Result<Template, TemplateError> {
        let mut document = Map::new();
        document.insert("api_version".to_owned(), Value::from("orgo.ai/v1"));
        let mut identity = Map::new();
        identity.insert("name".to_owned(), Value::from(name));
        identity.insert("version".to_owned(), Value::from(version));
        document.insert("template".to_owned(), Value::Object(identity));
        if !hardware.is_null() {
            document.insert("hardware".to_owned(), hardware.clone());
        }
        let mut document = to_document_value(&Value::Object(document));
        if let (Value::Object(document), Value::Object(sections)) = (&mut document, self.to_value())
        {
            document.extend(sections);
        }
        let result = Template::from_value(&document);
        if self.problems.is_empty() {
            return result;
        }
        let mut diagnostics: Vec<Diagnostic> = match result {
            Ok(_) => Vec::new(),
            Err(TemplateError::Invalid(diagnostics)) => diagnostics
                .into_vec()
                .into_iter()
                // A relative path is also an invalid URL: one problem is enough.
                .filter(|d| !self.problems.iter().any(|(path, _)| *path == d.path))
                .collect(),
            Err(other) => return Err(other),
        };
        diagnostics.extend(self.problems.iter().map(|(path, message)| Diagnostic {
            path: path.clone(),
            message: message.clone(),
            location: None,
        }));
        Err(TemplateError::Invalid(Diagnostics::new(diagnostics)))
    }
}

fn extend<I, S>(list: &mut Vec<String>, items: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    list.extend(items.into_iter().map(Into::into));
}

/// `text` as one shell word: as it is when it holds only characters no shell
/// reads specially, else single-quoted.
fn shell_quote(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@%:,=".contains(&b));
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/opt/my-app_1.2"), "/opt/my-app_1.2");
        assert_eq!(shell_quote("/opt/my app"), "'/opt/my app'");
        assert_eq!(shell_quote("/it's"), r"'/it'\''s'");
        assert_eq!(shell_quote("/$HOME"), "'/$HOME'");
    }

    #[test]
    fn the_base_image_hashes_an_empty_object() {
        assert_eq!(Image::base().canonical_json(), "{}");
        assert_eq!(
            Image::base().cache_key().to_string(),
            format!("sha256:{}", Digest::of(b"{}").hex())
        );
    }
}
