//! The `orgo.ai/v1` template format: parse, normalize, interpolate, validate
//! and digest, with no I/O.
//!
//! ```
//! use orgo_template::Template;
//!
//! let template = Template::from_yaml(r#"
//! api_version: orgo.ai/v1
//! name: my-workstation@1.0.0      # sugar for template: { name, version }
//! cpu: 2                          # sugar for hardware: { cpu: 2 }
//! vars: { greeting: hello }
//! files:
//!   /opt/welcome.txt: "${var.greeting}"
//! "#)?;
//! assert_eq!(template.template().name.as_str(), "my-workstation");
//! assert_eq!(template.hardware().cpu, Some(2));
//! assert!(template.digest().to_string().starts_with("sha256:"));
//!
//! let err = Template::from_yaml("api_version: orgo.ai/v1\nname: x@1.0.0\ncpu: 3\nhardwares: {}\n")
//!     .unwrap_err();
//! let paths: Vec<String> = err.diagnostics().iter().map(|d| d.path.to_string()).collect();
//! assert_eq!(paths, ["cpu", "hardwares"]); // every problem, at the path the author wrote
//! # Ok::<(), orgo_template::TemplateError>(())
//! ```
//!
//! # Stages
//!
//! 1. **parse**: YAML (saphyr-parser events) or JSON (a strict RFC 8259 reader)
//!    into a tree where every value keeps its line and column, then into the
//!    authored [`Document`]: unknown fields, wrong types and duplicate keys are
//!    reported here.
//! 2. **normalize**: the sugar of the reference (`name: foo@1.0.0`, `cpu`,
//!    `ram: 4gb`, `display: WxH`, `wallpaper`, `files: {path: text}`,
//!    `on_first_boot`) moves to its canonical place. Sugar and canonical
//!    fields may be mixed; one value set both ways is an error.
//! 3. **interpolate**: `${var.X}` from `vars`, `${env.X}` from literal `env`
//!    values, `$${` for a literal `${`; other `${...}` (a shell's `${HOME}`) is
//!    left alone. Vars may refer to vars; cycles and unknown names are errors,
//!    and expansion is bounded, so every input terminates. Every string value
//!    is interpolated; `vars` are consumed and do not appear in the canonical
//!    form (two templates that differ only in how they spell a value share a
//!    digest).
//! 4. **validate**: every rule of the reference, into the canonical
//!    [`Template`]. [`Document::normalize`] runs stages 2-4 and is the only way
//!    to get a `Template`. All problems of all stages are reported together.
//! 5. **digest**: [`Template::digest`].
//!
//! # Canonical JSON and the digest (a contract)
//!
//! The digest is `sha256:` followed by the lower-case hex SHA-256 of the
//! canonical JSON of the canonical template, serialized per **RFC 8785 (JCS)**:
//! no insignificant whitespace, object members sorted by the UTF-16 code units
//! of their names, strings with only `"`, `\` and U+0000-U+001F escaped
//! (`\b \t \n \f \r`, otherwise `\u00xx` lower-case), other characters as
//! UTF-8, and numbers as plain decimal integers (canonical templates hold no
//! fractions). [`Template::canonical_json`] returns exactly the hashed bytes.
//! Strings are written as a document spells them: a literal `${` that
//! interpolation would read differently (one before `var.` or `env.`, or
//! right after a `$`) is written `$${`, so the canonical JSON is itself a
//! valid document that normalizes to the same bytes; a shell's `${HOME}` is
//! written as it is.
//!
//! The canonical template is shaped as follows:
//! - Absent optional values, empty lists, empty maps and empty sections are
//!   omitted, and so are values that say what absence says (`gpu: none`,
//!   `dedup: 0`). `vars` is omitted (it has been applied).
//! - Documented defaults are written out: `hardware.os: linux`,
//!   `hardware.audio: false`, `files[].when: build`, `secrets[].required: true`,
//!   service `user: orgo`, `restart: always`, `stop_signal: TERM`; health
//!   `every: 15s`, `timeout: 3s` (or `every`), `retries: 3`, `on_fail: none`; tcp health
//!   `host: 127.0.0.1`; ports `external: 0`, `protocol: tcp`, `public: false`;
//!   autostart `delay: 0s`; stream `autostart: false`; file triggers watch
//!   `[create, modify, delete]`.
//! - Values are written in one spelling: durations in their largest exact unit
//!   (`60s` -> `1m`, `1500ms`), file modes as four octal digits (`"0644"`),
//!   resolutions as `WxHxD`, paths (file destinations, watched files) with
//!   `//` and `/./` collapsed, URLs as the WHATWG URL standard serializes
//!   them, egress domains lower-case, CIDRs by their network address and a
//!   `/32` or `/128` as the bare address, cron expressions with single spaces
//!   and lower-case names, tcp health hosts lower-case, `SIGTERM` as `TERM`.
//! - Lists keep their order (build steps run in order; order is meaning).
//!
//! So YAML or JSON, sugar or canonical, key order, comments, quoting and
//! flow or block style never change the digest; any change of meaning does.
//!
//! # The image builder
//!
//! [`Image`] says a computer step by step, in the style of OpenComputer's
//! `Image` (`Image::base().apt_install([..]).run_commands([..])`), each call
//! returning a new image. [`Image::to_template`] writes its steps onto
//! `build`, `env` and `files` and reads the result like any document, and
//! [`Image::cache_key`] is the SHA-256 of those sections' canonical JSON,
//! without name, version, hardware or build memory. The mapping and the
//! key's exact input are documented on [`Image`].
//!
//! # Reading YAML
//!
//! YAML 1.2 core schema: `yes`, `on`, `no`, `off` are strings, so `audio: yes`
//! is a type error. A string field does not take a number: `version: 1.10` or
//! `mode: 0755` is an error that says to quote it, never a silent `1.1` or
//! `493`. Tags (`!foo`), merge keys (`<<`), several documents in one file and
//! duplicate keys in any mapping are errors; anchors on values and aliases
//! are expanded (anchors on keys are errors). Limits, checked as the document
//! is read: 4 MiB of text, 64 levels of nesting (alias copies included),
//! 200,000 values and 4 MiB of text copied by aliases; references may add
//! 1 MiB to one value and 16 MiB to the document.
//!
//! # Where the reference is silent
//!
//! - **`wallpaper`**: canonical form `desktop: { wallpaper: URL }` (http,
//!   https, s3 or file). The image is downloaded when the snapshot is built and
//!   the guest agent sets it as the desktop background on every boot,
//!   restores included.
//! - **Health checks**: `http` needs `url` (http/https, 2xx or 3xx passes);
//!   `tcp` needs `port` (1-65535) and takes `host` (default `127.0.0.1`);
//!   `command` needs `command` (exit 0 passes); `process` needs `process` (a
//!   process of that name runs). A field of another type is an error.
//!   `every` is at least 1s; `timeout` is more than 0 and at most `every`,
//!   and defaults to 3s or to `every` when that is shorter; `retries` is 1-100.
//!   Durations are `500ms`, `15s`, `2m`, `1h30m` (units largest first, each
//!   once) or a bare number of seconds. `restart_service:NAME` may name any service of the
//!   template (service names are unique across apps).
//! - **Triggers**: `{ name, source, actions, dedup }`. `source.type` is
//!   `schedule` (`cron`, five fields), `webhook` (`path`, POSTed to the VM's
//!   trigger endpoint), `file` (`path`, `events` of create/modify/delete) or
//!   `health` (`app`: fires when that app's check reaches its retries).
//!   `actions` is a non-empty list of `{run: CMD}`, `{restart_service: NAME}` or
//!   `{alert: MESSAGE}`. `dedup` drops firings within that window.
//! - **Files**: `secret://NAME` sources need `when: runtime` (secrets are never
//!   baked into a snapshot) and nothing after the name. Reserved beside the
//!   reference's list: the runtime's own binaries (`/opt/orgo`,
//!   `/usr/local/sbin/orgo`, `/usr/local/sbin/orgo-agent`) and `/var/run`
//!   (a link to `/run`). A destination ending in `/` or `/.` names a
//!   directory and is an error, as are two files with one destination.
//!   A `file://` source is a path on the machine that runs the build; one
//!   whose path ends in `/` is a directory, whose tree is copied to `to`
//!   (which then names a directory, still written without a trailing `/`).
//!   The digest covers a source's URL, not what it holds.
//! - **Names**: service names are unique across the template; ports are unique
//!   per protocol across apps; `telemetry.logs` entries are service names or
//!   absolute paths; build package specs may not start with `-` or hold spaces.

mod canonical;
mod convert;
mod digest;
mod error;
mod image;
mod interpolate;
mod jcs;
mod json;
mod names;
mod node;
mod normalize;
mod raw;
mod validate;
mod yaml;

use crate::convert::Cx;
use crate::node::LoadError;

pub use crate::canonical::{
    ApiVersion, App, Autostart, Build, Desktop, Duration, EgressMode, EgressPolicy, EgressRule,
    EgressRuleError, EnvValue, File, FileEvent, FileMode, FileSource, Gpu, Hardware, Health,
    HealthCheck, Hooks, Identity, OnFail, Os, Port, Protocol, Region, Resolution, Restart, Secret,
    Service, Signal, Stream, Telemetry, Template, TerminalSession, Trigger, TriggerAction,
    TriggerSource, When,
};
pub use crate::digest::Digest;
pub use crate::error::{Diagnostic, Diagnostics, FieldPath, Location, Segment, TemplateError};
pub use crate::image::Image;
pub use crate::names::{Name, SecretName, TemplateRef};

/// The largest template text accepted, in bytes (checked before parsing).
pub const MAX_DOCUMENT_BYTES: usize = node::MAX_DOCUMENT_BYTES;
/// The deepest nesting of sequences and mappings accepted in a document.
pub const MAX_DEPTH: usize = node::MAX_DEPTH;

/// The text formats a template can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2.
    Yaml,
    /// JSON (RFC 8259).
    Json,
}

impl Format {
    /// The format of a file by its name: JSON for `.json`, YAML for `.yaml`
    /// and `.yml`; `None` for any other name.
    pub fn from_file_name(file_name: &str) -> Option<Self> {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Some(Format::Json)
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(Format::Yaml)
        } else {
            None
        }
    }

    /// The format of a file: by its name when that tells; otherwise JSON when
    /// the text starts with `{`, else YAML.
    pub fn detect(file_name: Option<&str>, text: &str) -> Self {
        file_name.and_then(Self::from_file_name).unwrap_or_else(|| {
            if text
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with('{')
            {
                Format::Json
            } else {
                Format::Yaml
            }
        })
    }
}

/// An authored template: sugar allowed, values as written, shapes and types
/// checked. [`Document::normalize`] turns it into a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    raw: raw::Document,
}

fn load(text: &str, format: Format) -> Result<node::Node, TemplateError> {
    let loaded = match format {
        Format::Yaml => yaml::load(text),
        Format::Json => json::load(text),
    };
    loaded.map_err(
        |LoadError {
             path,
             message,
             location,
         }| TemplateError::single(path, message, Some(location)),
    )
}

/// Whether the text could not be read at all in its format.
fn is_syntax_error(error: &TemplateError) -> bool {
    error.diagnostics().first().is_some_and(|d| {
        d.message.starts_with("JSON syntax") || d.message.starts_with("YAML syntax")
    })
}

fn finish<T>(value: Option<T>, cx: Cx) -> Result<T, TemplateError> {
    match value {
        Some(value) if cx.diagnostics.is_empty() => Ok(value),
        _ => {
            let mut diagnostics = cx.diagnostics;
            if diagnostics.is_empty() {
                // Unreachable by construction: every `None` comes with a diagnostic.
                diagnostics.push(Diagnostic {
                    path: FieldPath::root(),
                    message: "template is invalid".to_owned(),
                    location: None,
                });
            }
            Err(TemplateError::Invalid(Diagnostics::new(diagnostics)))
        }
    }
}

/// Runs normalize, interpolate and validate on a read document.
fn normalize_in(mut raw: raw::Document, cx: &mut Cx) -> Option<Template> {
    // vars and env are resolved first: the sugar read in normalize may use them.
    let mut scope = interpolate::Scope::resolve(raw.vars.as_ref(), raw.env.as_ref(), cx);
    let relocations = normalize::desugar(&mut raw, cx, &mut scope);
    let start = cx.diagnostics.len();
    let template = validate::validate(raw, cx, &relocations, scope);
    for diagnostic in &mut cx.diagnostics[start..] {
        relocations.apply(diagnostic);
    }
    template
}

impl Document {
    /// Reads a document in `format`.
    pub fn parse(text: &str, format: Format) -> Result<Self, TemplateError> {
        let node = load(text, format)?;
        let mut cx = Cx::default();
        let raw = raw::Document::read(node, &mut cx);
        finish(raw, cx).map(|raw| Self { raw })
    }

    /// Reads a YAML document.
    pub fn from_yaml(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Format::Yaml)
    }

    /// Reads a JSON document.
    pub fn from_json(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Format::Json)
    }

    /// Folds sugar, interpolates, validates: the canonical template, or every problem.
    pub fn normalize(self) -> Result<Template, TemplateError> {
        let mut cx = Cx::default();
        let template = normalize_in(self.raw, &mut cx);
        finish(template, cx)
    }
}

impl Template {
    /// Parses and normalizes a document, reporting the problems of every stage together.
    pub fn parse(text: &str, format: Format) -> Result<Self, TemplateError> {
        let node = load(text, format)?;
        let mut cx = Cx::default();
        let template =
            raw::Document::read(node, &mut cx).and_then(|raw| normalize_in(raw, &mut cx));
        finish(template, cx)
    }

    /// Parses a file's text in the format [`Format::detect`] finds. When the
    /// format was only guessed from the text (`{` at the start) and JSON
    /// cannot read it, it is read as YAML, of which JSON is a subset: a YAML
    /// flow mapping `{a: 1}` also starts with `{`.
    pub fn parse_detected(file_name: Option<&str>, text: &str) -> Result<Self, TemplateError> {
        let format = Format::detect(file_name, text);
        let result = Self::parse(text, format);
        let guessed_json =
            format == Format::Json && file_name.and_then(Format::from_file_name).is_none();
        match result {
            Err(json_error) if guessed_json && is_syntax_error(&json_error) => {
                match Self::parse(text, Format::Yaml) {
                    Err(yaml_error) if is_syntax_error(&yaml_error) => Err(json_error),
                    yaml => yaml,
                }
            }
            result => result,
        }
    }

    /// Reads a document already in memory, such as one a program built or
    /// a Python `dict`: the same stages and rules as [`Template::parse`]. Its
    /// diagnostics carry paths but no locations (there is no text), and come
    /// in document order.
    ///
    /// ```
    /// use orgo_template::Template;
    /// use serde_json::json;
    ///
    /// let template = Template::from_value(&json!({
    ///     "api_version": "orgo.ai/v1",
    ///     "name": "from-memory@1.0.0",
    ///     "hardware": {"cpu": 2},
    /// }))?;
    /// assert_eq!(template.hardware().cpu, Some(2));
    ///
    /// let err = Template::from_value(&json!({"api_version": "orgo.ai/v1", "name": "x@1.0.0", "cpu": 3}))
    ///     .unwrap_err();
    /// assert_eq!(err.diagnostics()[0].path.to_string(), "cpu");
    /// assert_eq!(err.diagnostics()[0].location, None);
    /// # Ok::<(), orgo_template::TemplateError>(())
    /// ```
    pub fn from_value(value: &serde_json::Value) -> Result<Self, TemplateError> {
        let node = node::from_value(value).map_err(|LoadError { path, message, .. }| {
            TemplateError::single(path, message, None)
        })?;
        let mut cx = Cx::default();
        let template =
            raw::Document::read(node, &mut cx).and_then(|raw| normalize_in(raw, &mut cx));
        finish(template, cx).map_err(|error| match error {
            TemplateError::Invalid(diagnostics) => {
                TemplateError::Invalid(diagnostics.without_locations())
            }
            other => other,
        })
    }

    /// [`Template::parse`] for YAML.
    pub fn from_yaml(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Format::Yaml)
    }

    /// [`Template::parse`] for JSON.
    pub fn from_json(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Format::Json)
    }

    /// The RFC 8785 canonical JSON that [`Template::digest`] hashes. It is a
    /// valid document in its own right and reads back to an equal template.
    pub fn canonical_json(&self) -> String {
        jcs::to_string(self).expect("canonical templates hold only what RFC 8785 JSON can write")
    }

    /// `sha256:` + hex SHA-256 of [`Template::canonical_json`].
    pub fn digest(&self) -> Digest {
        Digest::of(self.canonical_json().as_bytes())
    }

    /// The canonical template as YAML, fields in the reference's order.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.to_value())
            .expect("a JSON value serializes to YAML without fail")
    }

    /// The canonical template as indented JSON, fields in the reference's order.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).expect("a JSON value always serializes")
    }

    /// The canonical template as a JSON value, fields in the reference's
    /// order, strings spelled as in a document (as [`Template::to_yaml`] and
    /// [`Template::to_json_pretty`] write them); [`Template::from_value`]
    /// reads it back to an equal template.
    pub fn to_value(&self) -> serde_json::Value {
        digest::to_document_value(self)
    }

    /// The template's ref in `namespace`.
    pub fn reference(&self, namespace: Name) -> TemplateRef {
        TemplateRef::new(
            namespace,
            self.template.name.clone(),
            self.template.version.clone(),
        )
    }
}

/// The JSON Schema of the authored format (draft 2020-12): it accepts the
/// canonical form, the sugar form and any mix of the two. Rules the schema
/// language cannot say (references between fields, interpolation) are left to
/// [`Template::parse`].
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::Document);
    let mut value = schema.to_value();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "$id".to_owned(),
            serde_json::Value::from("https://www.orgo.ai/api/template-schema"),
        );
    }
    value
}
