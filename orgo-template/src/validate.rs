//! Desugared, authored values to the canonical [`Template`]: every string
//! interpolated as it is read, every rule of the reference checked, every
//! problem reported at its path.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use url::Url;

use crate::canonical::*;
use crate::convert::{Cx, IntOrStr, Map, Sp};
use crate::error::{FieldPath, Location, Segment};
use crate::interpolate::{self, Scope};
use crate::names::{Name, SecretName, check_kebab, check_secret_name};
use crate::node::truncate;
use crate::normalize::Relocations;
use crate::raw;

/// Paths no file may be written under: the kernel's and the runtime's own.
pub(crate) const RESERVED_PATHS: &[&str] = &[
    "/proc",
    "/sys",
    "/boot",
    "/dev",
    "/tmp",
    "/run",
    "/etc/orgo",
    "/var/orgo",
    "/orgo",
    "/etc/supervisor",
    "/var/run",
    "/opt/orgo",
    "/usr/local/sbin/orgo",
    "/usr/local/sbin/orgo-agent",
];

/// Ports the platform itself uses inside the VM (VNC, desktop API, noVNC, proxy).
pub(crate) const RESERVED_PORTS: &[u64] = &[5900, 5999, 6080, 8080];

const MAX_BUILD_RUN: usize = 64;

/// A field that only some variants take: its name, where it is written
/// (`None` when absent) and the variants it belongs to.
type VariantField<'a> = (&'static str, Option<Option<Location>>, &'a [&'a str]);

/// A name used somewhere that must be defined elsewhere, checked at the end.
struct Reference {
    path: FieldPath,
    at: Option<Location>,
    kind: RefKind,
    name: String,
}

#[derive(PartialEq)]
enum RefKind {
    Service,
    App,
    /// A service name or an absolute path.
    LogSource,
}

struct V<'a> {
    cx: &'a mut Cx,
    /// Where sugar came from, to name the author's paths inside messages.
    moved: &'a Relocations,
    scope: Scope,
    secrets: HashSet<String>,
    references: Vec<Reference>,
    /// Every well-formed service name, also of services with other problems,
    /// so a reference to one is not reported as dangling.
    service_names: HashMap<String, FieldPath>,
    /// Every well-formed app name, likewise.
    app_names: HashMap<String, FieldPath>,
}

/// Checks a desugared document and builds its canonical form.
pub(crate) fn validate(
    doc: raw::Document,
    cx: &mut Cx,
    moved: &Relocations,
    scope: Scope,
) -> Option<Template> {
    let mut v = V {
        cx,
        moved,
        scope,
        secrets: HashSet::new(),
        references: Vec::new(),
        service_names: HashMap::new(),
        app_names: HashMap::new(),
    };
    let before = v.cx.diagnostics.len();

    if let Some(vars) = &doc.vars {
        v.key("vars", |v| {
            for (name, _) in &vars.0 {
                if !interpolate::is_ident(&name.value) {
                    let message = format!("`{}` is not a variable name (letters, digits, `_`, `-`, not starting with a digit)", truncate(&name.value));
                    v.key(name.value.clone(), |v| v.error(name.at, message));
                }
            }
        });
    }
    let api_version = v.api_version(doc.api_version.as_ref(), doc.at);
    let secrets = v.key("secrets", |v| v.secrets(doc.secrets.unwrap_or_default()));
    let template = match doc.template {
        Some(identity) => v.key("template", |v| v.identity(identity)),
        None => {
            v.missing("template", doc.at);
            None
        }
    };
    let hardware = v.key("hardware", |v| v.hardware(doc.hardware.unwrap_or_default()));
    let env = v.key("env", |v| v.env(doc.env, true));
    let build = v.key("build", |v| v.build(doc.build.unwrap_or_default()));
    // `normalize::desugar` has turned the sugar mapping into a list.
    debug_assert!(!matches!(doc.files, Some(raw::Files::Sugar(_))));
    let files = match doc.files {
        Some(raw::Files::List(list)) => v.key("files", |v| v.files(list)),
        Some(raw::Files::Sugar(_)) | None => Vec::new(),
    };
    let apps = v.key("apps", |v| v.apps(doc.apps.unwrap_or_default()));
    let triggers = v.key("triggers", |v| v.triggers(doc.triggers.unwrap_or_default()));
    let terminal = v.key("terminal", |v| v.terminal(doc.terminal.unwrap_or_default()));
    let hooks = v.key("hooks", |v| v.hooks(doc.hooks.unwrap_or_default()));
    // An empty section means the same as none, so it is left out of the canonical form.
    let telemetry = doc
        .telemetry
        .map(|t| v.key("telemetry", |v| v.telemetry(t)))
        .filter(|t| t.metrics || !t.logs.is_empty() || t.otel_endpoint.is_some());
    let egress_policy = doc
        .egress_policy
        .and_then(|e| v.key("egress_policy", |v| v.egress(e)));
    let streaming = v.key("streaming", |v| {
        v.streaming(doc.streaming.unwrap_or_default())
    });
    let desktop = doc.desktop.and_then(|d| v.key("desktop", |v| v.desktop(d)));
    v.check_references();

    if v.cx.diagnostics.len() > before {
        return None;
    }
    Some(Template {
        api_version: api_version?,
        template: template?,
        hardware: hardware?,
        secrets,
        env,
        build,
        files,
        apps,
        triggers,
        terminal,
        hooks,
        telemetry,
        egress_policy,
        streaming,
        desktop,
    })
}

fn allowed_values<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl V<'_> {
    fn at<R>(&mut self, segment: Segment, f: impl FnOnce(&mut Self) -> R) -> R {
        self.cx.path.push(segment);
        let out = f(self);
        self.cx.path.pop();
        out
    }

    fn key<R>(&mut self, key: impl Into<Cow<'static, str>>, f: impl FnOnce(&mut Self) -> R) -> R {
        self.at(Segment::Key(key.into()), f)
    }

    fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.at(Segment::Index(index), f)
    }

    fn error(&mut self, at: Option<Location>, message: impl Into<String>) {
        self.cx.error(at, message);
    }

    /// Reports a required field as missing, unless it was present but unreadable.
    fn missing(&mut self, field: &'static str, parent_at: Option<Location>) {
        let path = self.cx.path.key(field);
        if !self.cx.invalid.contains(&path) {
            self.key(field, |v| v.error(parent_at, "required field is missing"));
        }
    }

    /// The interpolated text of an optional field.
    fn text(&mut self, field: &'static str, value: Option<&Sp<String>>) -> Option<String> {
        let value = value?;
        self.key(field, |v| v.scope.apply(value, v.cx))
    }

    /// The interpolated text of a required field.
    fn required(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        parent_at: Option<Location>,
    ) -> Option<String> {
        if value.is_none() {
            self.missing(field, parent_at);
        }
        self.text(field, value)
    }

    /// Like [`Self::required`], and the text must not be blank.
    fn command(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        parent_at: Option<Location>,
    ) -> Option<String> {
        let text = self.required(field, value, parent_at)?;
        if text.trim().is_empty() {
            self.key(field, |v| {
                v.error(value.and_then(|s| s.at), "must not be empty")
            });
            return None;
        }
        Some(text)
    }

    /// Runs a check on a field's value and reports its message at the field.
    fn check<T>(
        &mut self,
        field: &'static str,
        at: Option<Location>,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.key(field, |v| v.error(at, message));
                None
            }
        }
    }

    /// Reads an optional text field and converts it, reporting a failure at the field.
    fn parsed<T>(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        convert: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(field, value)?;
        self.check(field, value.and_then(|s| s.at), convert(text))
    }

    /// [`Self::parsed`] for a required field.
    fn parsed_required<T>(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        parent_at: Option<Location>,
        convert: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        if value.is_none() {
            self.missing(field, parent_at);
        }
        self.parsed(field, value, convert)
    }

    fn one_of<E>(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        parse: fn(&str) -> Option<E>,
        allowed: String,
    ) -> Option<E> {
        self.parsed(field, value, |text| {
            parse(&text).ok_or_else(|| not_allowed(&text, &allowed))
        })
    }

    fn name(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        parent_at: Option<Location>,
    ) -> Option<Name> {
        self.parsed_required(field, value, parent_at, |text| {
            check_kebab(&text).map(|()| Name::trusted(text))
        })
    }

    fn int(
        &mut self,
        field: &'static str,
        value: Option<&Sp<u64>>,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let value = value?;
        let result = if range.contains(&value.value) {
            Ok(value.value)
        } else if *range.end() == u64::MAX {
            Err(format!(
                "`{}` is too small; the least allowed is {}",
                value.value,
                range.start()
            ))
        } else {
            Err(format!(
                "`{}` is out of range; allowed {}-{}",
                value.value,
                range.start(),
                range.end()
            ))
        };
        self.check(field, value.at, result)
    }

    fn flag(&mut self, value: Option<&Sp<bool>>, default: bool) -> bool {
        value.map_or(default, |b| b.value)
    }

    fn duration(
        &mut self,
        field: &'static str,
        value: Option<&Sp<IntOrStr>>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let result = match &value.value {
            IntOrStr::Int(seconds) => seconds
                .checked_mul(1000)
                .map(Duration)
                .ok_or_else(|| format!("`{seconds}` seconds is too long")),
            IntOrStr::Str(text) => parse_duration(text),
        };
        self.check(field, value.at, result)
    }

    fn url(
        &mut self,
        field: &'static str,
        value: Option<&Sp<String>>,
        schemes: &[&str],
    ) -> Option<Url> {
        self.parsed(field, value, |text| check_url(&text, schemes))
    }

    fn api_version(
        &mut self,
        value: Option<&Sp<String>>,
        doc_at: Option<Location>,
    ) -> Option<ApiVersion> {
        self.parsed_required("api_version", value, doc_at, |text| {
            if text == ApiVersion::V1.as_str() {
                Ok(ApiVersion::V1)
            } else {
                Err(format!(
                    "`{}` is not supported; expected `orgo.ai/v1`",
                    truncate(&text)
                ))
            }
        })
    }

    fn identity(&mut self, raw: raw::Identity) -> Option<Identity> {
        let name = self.name("name", raw.name.as_ref(), raw.at);
        let version = self.parsed_required("version", raw.version.as_ref(), raw.at, |text| {
            semver::Version::parse(&text).map_err(|e| {
                format!(
                    "`{}` is not a semantic version ({e}); write MAJOR.MINOR.PATCH, e.g. `1.0.0`",
                    truncate(&text)
                )
            })
        });
        let description = self.text("description", raw.description.as_ref());
        let publisher = raw
            .publisher
            .as_ref()
            .and_then(|p| self.name("publisher", Some(p), raw.at));
        let license = self.parsed("license", raw.license.as_ref(), |text| {
            if !text.is_empty() && text.len() <= 128 && !text.contains(['\n', '\t']) {
                Ok(text)
            } else {
                Err("must be an SPDX license expression, e.g. `MIT`".to_owned())
            }
        });
        let homepage = self.url("homepage", raw.homepage.as_ref(), &["http", "https"]);
        let source = self.url(
            "source",
            raw.source.as_ref(),
            &["http", "https", "git", "ssh"],
        );
        Some(Identity {
            name: name?,
            version: version?,
            description,
            publisher,
            license,
            homepage,
            source,
        })
    }

    fn hardware(&mut self, raw: raw::Hardware) -> Option<Hardware> {
        let before = self.cx.diagnostics.len();
        let os = match raw.os.as_ref() {
            Some(_) => self.one_of("os", raw.os.as_ref(), Os::parse, Os::allowed()),
            None => Some(Os::Linux),
        };
        let cpu = self.in_set("cpu", raw.cpu.as_ref(), &[1, 2, 4, 8, 16]);
        let ram_gb = self.in_set("ram_gb", raw.ram_gb.as_ref(), &[4, 8, 16, 32, 64]);
        let disk_gb = self.int("disk_gb", raw.disk_gb.as_ref(), 1..=u64::MAX);
        let gpu = self.one_of("gpu", raw.gpu.as_ref(), Gpu::parse, Gpu::allowed());
        let gpu_count = self
            .int("gpu_count", raw.gpu_count.as_ref(), 0..=64)
            .map(|n| n as u32);
        if let (Some(count @ 1..), Some(value)) = (gpu_count, raw.gpu_count.as_ref()) {
            // An unreadable `gpu` was reported already; only a missing or `none` model is wrong here.
            if raw.gpu.is_none() || gpu == Some(Gpu::None) {
                self.key("gpu_count", |v| {
                    v.error(
                        value.at,
                        format!("`gpu_count: {count}` needs a `gpu` model other than `none`"),
                    )
                });
            }
        }
        // `gpu: none` says what leaving `gpu` out says.
        let gpu = gpu.filter(|model| *model != Gpu::None);
        let resolution = self.parsed("resolution", raw.resolution.as_ref(), |text| {
            parse_resolution(&text)
        });
        let auto_stop_minutes = self
            .int(
                "auto_stop_minutes",
                raw.auto_stop_minutes.as_ref(),
                0..=1440,
            )
            .map(|n| n as u32);
        let region = self.one_of(
            "region",
            raw.region.as_ref(),
            Region::parse,
            Region::allowed(),
        );
        let audio = self.flag(raw.audio.as_ref(), false);
        let bandwidth_mbps = self.int("bandwidth_mbps", raw.bandwidth_mbps.as_ref(), 0..=u64::MAX);
        if self.cx.diagnostics.len() > before {
            return None;
        }
        Some(Hardware {
            os: os?,
            cpu,
            ram_gb,
            disk_gb,
            gpu,
            gpu_count,
            resolution,
            auto_stop_minutes,
            region,
            audio,
            bandwidth_mbps,
        })
    }

    fn in_set(&mut self, field: &'static str, value: Option<&Sp<u64>>, set: &[u64]) -> Option<u32> {
        let value = value?;
        let result = if set.contains(&value.value) {
            Ok(value.value as u32)
        } else {
            Err(not_allowed(&value.value.to_string(), &allowed_values(set)))
        };
        self.check(field, value.at, result)
    }

    fn secrets(&mut self, list: Vec<raw::Secret>) -> Vec<Secret> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            self.index(i, |v| {
                let Some(text) = v.required("name", raw.name.as_ref(), raw.at) else {
                    return;
                };
                let at = raw.name.as_ref().and_then(|s| s.at);
                // Known even when malformed (that is reported here), so uses of it stay quiet.
                v.secrets.insert(text.clone());
                if v.check("name", at, check_secret_name(&text)).is_none() {
                    return;
                }
                if let Some(first) = seen.insert(text.clone(), i) {
                    v.key("name", |v| {
                        v.error(
                            at,
                            format!(
                                "secret `{text}` is declared twice (also at `secrets[{first}].name`)"
                            ),
                        )
                    });
                }
                out.push(Secret {
                    name: SecretName::trusted(text),
                    description: v.text("description", raw.description.as_ref()),
                    required: v.flag(raw.required.as_ref(), true),
                });
            });
        }
        out
    }

    /// Whether an entry of `secrets` was unreadable (reported there), so an
    /// undeclared-looking name may be one of its.
    fn secrets_unreadable(&self) -> bool {
        self.cx.invalid_under(&FieldPath::root().key("secrets"))
    }

    fn secret_ref(&mut self, reference: &raw::SecretRef) -> Option<SecretName> {
        let value = reference.secret.as_ref()?;
        let text = self.text("secret", Some(value))?;
        let result = if self.secrets.contains(&text) || self.secrets_unreadable() {
            Ok(SecretName::trusted(text))
        } else {
            Err(format!(
                "secret `{}` is not declared in `secrets`",
                truncate(&text)
            ))
        };
        self.check("secret", value.at, result)
    }

    /// `env` at the top level (literals already resolved by the scope) or in a service.
    fn env(
        &mut self,
        map: Option<Map<raw::EnvValue>>,
        top_level: bool,
    ) -> BTreeMap<String, EnvValue> {
        let mut out = BTreeMap::new();
        for (key, value) in map.unwrap_or_default().0 {
            self.key(key.value.clone(), |v| {
                let upper = !key.value.is_empty()
                    && !key.value.starts_with(|c: char| c.is_ascii_digit())
                    && key.value.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !upper {
                    v.error(key.at, format!("`{}` is not UPPER_SNAKE_CASE (A-Z, 0-9, `_`, not starting with a digit)", truncate(&key.value)));
                }
                let value = match value {
                    raw::EnvValue::Literal(_) if top_level => v.scope.env_value(&key.value).map(str::to_owned).map(EnvValue::Literal),
                    raw::EnvValue::Literal(text) => v.scope.apply(&text, v.cx).map(EnvValue::Literal),
                    raw::EnvValue::Secret(reference) => v.secret_ref(&reference).map(|secret| EnvValue::Secret { secret }),
                };
                if let Some(value) = value.filter(|_| upper) {
                    out.insert(key.value.clone(), value);
                }
            });
        }
        out
    }

    fn build(&mut self, raw: raw::Build) -> Build {
        let packages = |v: &mut Self,
                        field: &'static str,
                        list: Option<Vec<Sp<String>>>|
         -> Vec<String> {
            v.key(field, |v| {
                let mut out = Vec::new();
                for (i, spec) in list.unwrap_or_default().iter().enumerate() {
                    v.index(i, |v| {
                        let Some(text) = v.scope.apply(spec, v.cx) else { return };
                        if text.is_empty() || text.starts_with('-') || text.contains(char::is_whitespace) {
                            v.error(spec.at, format!("`{}` is not a package spec: it must not be empty, start with `-` or contain spaces", truncate(&text)));
                        } else {
                            out.push(text);
                        }
                    });
                }
                out
            })
        };
        let apt = packages(self, "apt", raw.apt);
        let pip = packages(self, "pip", raw.pip);
        let npm = packages(self, "npm", raw.npm);
        let run_list = raw.run.unwrap_or_default();
        let run = self.key("run", |v| {
            if run_list.len() > MAX_BUILD_RUN {
                let at = run_list.first().and_then(|s| s.at);
                v.error(
                    at,
                    format!(
                        "{} commands; at most {MAX_BUILD_RUN} are allowed",
                        run_list.len()
                    ),
                );
            }
            let mut out = Vec::new();
            for (i, command) in run_list.iter().enumerate() {
                v.index(i, |v| match v.scope.apply(command, v.cx) {
                    Some(text) if text.trim().is_empty() => {
                        v.error(command.at, "must not be empty")
                    }
                    Some(text) => out.push(text),
                    None => {}
                });
            }
            out
        });
        Build { apt, pip, npm, run }
    }

    fn files(&mut self, list: Vec<raw::File>) -> Vec<File> {
        let mut out = Vec::new();
        let mut targets: HashMap<String, usize> = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            self.index(i, |v| {
                let to_at = raw.to.as_ref().and_then(|s| s.at);
                let to = v
                    .required("to", raw.to.as_ref(), raw.at)
                    .and_then(|text| v.check("to", to_at, normalize_destination(&text)));
                let when = match raw.when.as_ref() {
                    Some(_) => v.one_of("when", raw.when.as_ref(), When::parse, When::allowed()),
                    None => Some(When::Build),
                };
                let source = match (raw.from.as_ref(), raw.inline.as_ref()) {
                    (Some(_), Some(inline)) => {
                        v.error(
                            inline.at,
                            "set exactly one of `from` and `inline`, not both",
                        );
                        None
                    }
                    (None, None) => {
                        if !v.cx.invalid.contains(&v.cx.path.key("from"))
                            && !v.cx.invalid.contains(&v.cx.path.key("inline"))
                        {
                            v.error(raw.at, "set exactly one of `from` and `inline`");
                        }
                        None
                    }
                    (None, Some(inline)) => v.text("inline", Some(inline)).map(FileSource::Inline),
                    (Some(from), None) => v.file_source(from, when),
                };
                let mode = v.parsed("mode", raw.mode.as_ref(), |text| parse_mode(&text));
                let owner = v.account("owner", raw.owner.as_ref());
                let group = v.account("group", raw.group.as_ref());
                if let Some(to) = &to
                    && let Some(first) = targets.insert(to.clone(), i)
                {
                    v.key("to", |v| {
                        v.error(
                            to_at,
                            format!(
                                "`{}` is also the target of `{}`; each file needs its own path",
                                truncate(to),
                                v.moved
                                    .authored(&FieldPath::root().key("files").index(first))
                            ),
                        )
                    });
                }
                if let (Some(to), Some(source), Some(when)) = (to, source, when) {
                    out.push(File {
                        to,
                        source,
                        mode,
                        owner,
                        group,
                        when,
                    });
                }
            });
        }
        out
    }

    fn file_source(&mut self, from: &Sp<String>, when: Option<When>) -> Option<FileSource> {
        let url = self.url(
            "from",
            Some(from),
            &["file", "git", "http", "https", "s3", "secret"],
        )?;
        if url.scheme() == "secret" {
            let name = url.host_str().unwrap_or_default().to_owned();
            let extra = !(url.path().is_empty() || url.path() == "/")
                || url.query().is_some()
                || url.fragment().is_some()
                || url.port().is_some()
                || !url.username().is_empty()
                || url.password().is_some();
            let result = if extra {
                Err("a secret source is `secret://NAME`, with nothing after the name".to_owned())
            } else if !self.secrets.contains(&name) && !self.secrets_unreadable() {
                Err(format!(
                    "secret `{}` is not declared in `secrets`",
                    truncate(&name)
                ))
            } else if when == Some(When::Build) {
                Err("a `secret://` file must have `when: runtime`; secrets are never baked into a snapshot".to_owned())
            } else {
                Ok(())
            };
            self.check("from", from.at, result)?;
        }
        Some(FileSource::From(url))
    }

    /// A user or group name, or a numeric id.
    fn account(&mut self, field: &'static str, value: Option<&Sp<String>>) -> Option<String> {
        self.parsed(field, value, check_account)
    }

    fn directory(&mut self, field: &'static str, value: Option<&Sp<String>>) -> Option<String> {
        self.parsed(field, value, |text| {
            if text.starts_with('/') || text == "~" || text.starts_with("~/") {
                Ok(text)
            } else {
                Err(format!(
                    "`{}` must be an absolute path or start with `~/`",
                    truncate(&text)
                ))
            }
        })
    }

    fn absolute(&mut self, field: &'static str, value: Option<&Sp<String>>) -> Option<String> {
        self.parsed(field, value, |text| {
            if text.starts_with('/') && !text.split('/').any(|s| s == "..") {
                Ok(text)
            } else {
                Err(format!(
                    "`{}` must be an absolute path without `..`",
                    truncate(&text)
                ))
            }
        })
    }

    fn unique(
        &mut self,
        seen: &mut HashMap<String, FieldPath>,
        what: &str,
        name: &Name,
        at: Option<Location>,
    ) {
        let here = self.cx.path.key("name");
        if let Some(first) = seen.get(name.as_str()) {
            let message = format!(
                "{what} `{name}` is defined twice (also at `{}`)",
                self.moved.authored(first)
            );
            self.key("name", |v| v.error(at, message));
        } else {
            seen.insert(name.as_str().to_owned(), here);
        }
    }

    fn apps(&mut self, list: Vec<raw::App>) -> Vec<App> {
        let mut out = Vec::new();
        let mut app_names = std::mem::take(&mut self.app_names);
        let mut service_names = std::mem::take(&mut self.service_names);
        let mut ports: HashMap<(u64, Protocol), FieldPath> = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            self.index(i, |v| {
                let name = v.name("name", raw.name.as_ref(), raw.at);
                if let Some(name) = &name {
                    v.unique(
                        &mut app_names,
                        "app",
                        name,
                        raw.name.as_ref().and_then(|s| s.at),
                    );
                }
                let title = v.text("title", raw.title.as_ref());
                let install = v.text("install", raw.install.as_ref());
                let services = v.key("services", |v| {
                    let mut out = Vec::new();
                    for (j, service) in raw.services.unwrap_or_default().into_iter().enumerate() {
                        if let Some(service) =
                            v.index(j, |v| v.service(service, &mut service_names))
                        {
                            out.push(service);
                        }
                    }
                    out
                });
                let health = raw.health.and_then(|h| v.key("health", |v| v.health(h)));
                let app_ports = v.key("ports", |v| {
                    let mut out = Vec::new();
                    for (j, port) in raw.ports.unwrap_or_default().into_iter().enumerate() {
                        if let Some(port) = v.index(j, |v| v.port(port, &mut ports)) {
                            out.push(port);
                        }
                    }
                    out
                });
                let autostart = v.key("autostart", |v| {
                    let mut out = Vec::new();
                    for (j, entry) in raw.autostart.unwrap_or_default().into_iter().enumerate() {
                        let entry = v.index(j, |v| {
                            let run = v.command("run", entry.run.as_ref(), entry.at);
                            let delay = v.duration("delay", entry.delay.as_ref(), Duration(0));
                            Some(Autostart {
                                run: run?,
                                delay: delay?,
                            })
                        });
                        out.extend(entry);
                    }
                    out
                });
                if let Some(name) = name {
                    out.push(App {
                        name,
                        title,
                        install,
                        services,
                        health,
                        ports: app_ports,
                        autostart,
                    });
                }
            });
        }
        self.app_names = app_names;
        self.service_names = service_names;
        out
    }

    fn service(
        &mut self,
        raw: raw::Service,
        seen: &mut HashMap<String, FieldPath>,
    ) -> Option<Service> {
        let name = self.name("name", raw.name.as_ref(), raw.at);
        if let Some(name) = &name {
            self.unique(seen, "service", name, raw.name.as_ref().and_then(|s| s.at));
        }
        let run = self.command("run", raw.run.as_ref(), raw.at);
        let cwd = self.directory("cwd", raw.cwd.as_ref());
        let user = match raw.user.as_ref() {
            Some(_) => self.account("user", raw.user.as_ref()),
            None => Some("orgo".to_owned()),
        };
        let env = self.key("env", |v| v.env(raw.env, false));
        let restart = match raw.restart.as_ref() {
            Some(_) => self.one_of(
                "restart",
                raw.restart.as_ref(),
                Restart::parse,
                Restart::allowed(),
            ),
            None => Some(Restart::Always),
        };
        let stop_signal = match raw.stop_signal.as_ref() {
            Some(_) => self.one_of(
                "stop_signal",
                raw.stop_signal.as_ref(),
                |text| Signal::parse(text.strip_prefix("SIG").unwrap_or(text)),
                Signal::allowed(),
            ),
            None => Some(Signal::Term),
        };
        let log = self.absolute("log", raw.log.as_ref());
        Some(Service {
            name: name?,
            run: run?,
            cwd,
            user: user?,
            env,
            restart: restart?,
            stop_signal: stop_signal?,
            log,
        })
    }

    fn health(&mut self, raw: raw::Health) -> Option<Health> {
        let kind = match raw.r#type.as_ref() {
            Some(t) => self.one_of(
                "type",
                Some(t),
                |s| {
                    ["http", "tcp", "command", "process"]
                        .into_iter()
                        .find(|k| *k == s)
                },
                "`http`, `tcp`, `command`, `process`".into(),
            ),
            None => {
                self.missing("type", raw.at);
                None
            }
        };
        if let Some(kind) = kind {
            self.fields_of_other_variants(
                kind,
                "checks",
                &[
                    ("url", raw.url.as_ref().map(|s| s.at), &["http"]),
                    ("port", raw.port.as_ref().map(|s| s.at), &["tcp"]),
                    ("host", raw.host.as_ref().map(|s| s.at), &["tcp"]),
                    ("command", raw.command.as_ref().map(|s| s.at), &["command"]),
                    ("process", raw.process.as_ref().map(|s| s.at), &["process"]),
                ],
            );
        }
        let check = match kind? {
            "http" => {
                if raw.url.is_none() {
                    self.missing("url", raw.at);
                }
                self.url("url", raw.url.as_ref(), &["http", "https"])
                    .map(|url| HealthCheck::Http { url })
            }
            "tcp" => {
                if raw.port.is_none() {
                    self.missing("port", raw.at);
                }
                let port = self
                    .int("port", raw.port.as_ref(), 1..=65535)
                    .map(|p| p as u16);
                let host = match raw.host.as_ref() {
                    Some(_) => self.parsed("host", raw.host.as_ref(), |text| {
                        if text.parse::<IpAddr>().is_ok() || is_hostname(&text) {
                            Ok(text.to_ascii_lowercase())
                        } else {
                            Err(format!(
                                "`{}` is not a host name or IP address",
                                truncate(&text)
                            ))
                        }
                    }),
                    None => Some("127.0.0.1".to_owned()),
                };
                Some(HealthCheck::Tcp {
                    port: port?,
                    host: host?,
                })
            }
            "command" => self
                .command("command", raw.command.as_ref(), raw.at)
                .map(|command| HealthCheck::Command { command }),
            _ => self
                .command("process", raw.process.as_ref(), raw.at)
                .map(|process| HealthCheck::Process { process }),
        };
        let every = self.duration("every", raw.every.as_ref(), Duration(15_000));
        // The default timeout is 3s, or `every` when that is shorter.
        let default_timeout = every.map_or(Duration(3_000), |every| every.min(Duration(3_000)));
        let timeout = self.duration("timeout", raw.timeout.as_ref(), default_timeout);
        if let Some(every) = every.filter(|d| d.0 < 1000) {
            let at = raw.every.as_ref().and_then(|s| s.at);
            self.key("every", |v| {
                v.error(
                    at,
                    format!("`{every}` is too short; checks run at most once a second"),
                )
            });
        }
        if let (Some(every), Some(timeout)) = (every, timeout)
            && raw.timeout.is_some()
            && (timeout.0 == 0 || timeout > every)
        {
            let at = raw.timeout.as_ref().and_then(|s| s.at);
            self.key("timeout", |v| {
                v.error(
                    at,
                    format!("`{timeout}` must be more than 0 and at most `every` ({every})"),
                )
            });
        }
        let retries = match raw.retries.as_ref() {
            Some(_) => self
                .int("retries", raw.retries.as_ref(), 1..=100)
                .map(|n| n as u32),
            None => Some(3),
        };
        let on_fail = match raw.on_fail.as_ref() {
            Some(value) => self.on_fail(value),
            None => Some(OnFail::None),
        };
        Some(Health {
            check: check?,
            every: every?,
            timeout: timeout?,
            retries: retries?,
            on_fail: on_fail?,
        })
    }

    fn on_fail(&mut self, value: &Sp<String>) -> Option<OnFail> {
        let text = self.text("on_fail", Some(value))?;
        let result = match text.as_str() {
            "restart_vm" => Ok(OnFail::RestartVm),
            "alert" => Ok(OnFail::Alert),
            "none" => Ok(OnFail::None),
            other => match other.strip_prefix("restart_service:") {
                Some("") => Err(
                    "`restart_service:` needs a service name, e.g. `restart_service:my-app-server`"
                        .to_owned(),
                ),
                Some(service) => check_kebab(service).map(|()| {
                    self.references.push(Reference {
                        path: self.cx.path.key("on_fail"),
                        at: value.at,
                        kind: RefKind::Service,
                        name: service.to_owned(),
                    });
                    OnFail::RestartService(Name::trusted(service.to_owned()))
                }),
                None => Err(format!(
                    "`{}` is not allowed; expected `restart_service:<name>`, `restart_vm`, `alert` or `none`",
                    truncate(other)
                )),
            },
        };
        self.check("on_fail", value.at, result)
    }

    fn port(
        &mut self,
        raw: raw::Port,
        seen: &mut HashMap<(u64, Protocol), FieldPath>,
    ) -> Option<Port> {
        if raw.internal.is_none() {
            self.missing("internal", raw.at);
        }
        let internal = self
            .int("internal", raw.internal.as_ref(), 1..=65535)
            .and_then(|port| {
                let result = if RESERVED_PORTS.contains(&port) {
                    Err(format!(
                        "port `{port}` is reserved by the platform ({})",
                        allowed_values(RESERVED_PORTS)
                    ))
                } else {
                    Ok(port)
                };
                self.check("internal", raw.internal.as_ref().and_then(|s| s.at), result)
            });
        let external = match raw.external.as_ref() {
            Some(_) => self.int("external", raw.external.as_ref(), 0..=65535),
            None => Some(0),
        };
        let protocol = match raw.protocol.as_ref() {
            Some(_) => self.one_of(
                "protocol",
                raw.protocol.as_ref(),
                Protocol::parse,
                Protocol::allowed(),
            ),
            None => Some(Protocol::Tcp),
        };
        let public = self.flag(raw.public.as_ref(), false);
        let (internal, external, protocol) = (internal?, external?, protocol?);
        let here = self.cx.path.key("internal");
        if let Some(first) = seen.get(&(internal, protocol)) {
            let message = format!(
                "port `{internal}/{protocol}` is already declared at `{}`",
                self.moved.authored(first)
            );
            self.key("internal", |v| {
                v.error(raw.internal.as_ref().and_then(|s| s.at), message)
            });
        } else {
            seen.insert((internal, protocol), here);
        }
        Some(Port {
            internal: internal as u16,
            external: external as u16,
            protocol,
            public,
        })
    }

    fn triggers(&mut self, list: Vec<raw::Trigger>) -> Vec<Trigger> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            let trigger = self.index(i, |v| {
                let name = v.name("name", raw.name.as_ref(), raw.at);
                if let Some(name) = &name {
                    v.unique(
                        &mut seen,
                        "trigger",
                        name,
                        raw.name.as_ref().and_then(|s| s.at),
                    );
                }
                let source = match raw.source {
                    Some(source) => v.key("source", |v| v.trigger_source(source)),
                    None => {
                        v.missing("source", raw.at);
                        None
                    }
                };
                let actions = raw.actions.unwrap_or_default();
                if actions.is_empty() && !v.cx.invalid.contains(&v.cx.path.key("actions")) {
                    v.key("actions", |v| {
                        v.error(raw.at, "a trigger needs at least one action")
                    });
                }
                let actions = v.key("actions", |v| {
                    let mut out = Vec::new();
                    for (j, action) in actions.into_iter().enumerate() {
                        out.extend(v.index(j, |v| v.trigger_action(action)));
                    }
                    out
                });
                // A zero window drops nothing: the same as no `dedup`.
                let dedup = match raw.dedup.as_ref() {
                    Some(_) => v.duration("dedup", raw.dedup.as_ref(), Duration(0)),
                    None => None,
                }
                .filter(|window| window.0 > 0);
                Some(Trigger {
                    name: name?,
                    source: source?,
                    actions,
                    dedup,
                })
            });
            out.extend(trigger);
        }
        out
    }

    fn trigger_source(&mut self, raw: raw::TriggerSource) -> Option<TriggerSource> {
        let kinds = ["schedule", "webhook", "file", "health"];
        let kind = match raw.r#type.as_ref() {
            Some(t) => self.one_of(
                "type",
                Some(t),
                |s| {
                    ["schedule", "webhook", "file", "health"]
                        .into_iter()
                        .find(|k| *k == s)
                },
                allowed_values(&kinds),
            ),
            None => {
                self.missing("type", raw.at);
                None
            }
        }?;
        let first_event = raw
            .events
            .as_ref()
            .map(|e| e.first().and_then(|s| s.at).or(raw.at));
        self.fields_of_other_variants(
            kind,
            "sources",
            &[
                ("cron", raw.cron.as_ref().map(|s| s.at), &["schedule"]),
                (
                    "path",
                    raw.path.as_ref().map(|s| s.at),
                    &["webhook", "file"],
                ),
                ("events", first_event, &["file"]),
                ("app", raw.app.as_ref().map(|s| s.at), &["health"]),
            ],
        );
        match kind {
            "schedule" => {
                let cron = self.required("cron", raw.cron.as_ref(), raw.at)?;
                let at = raw.cron.as_ref().and_then(|s| s.at);
                let cron = self.check("cron", at, normalize_cron(&cron))?;
                Some(TriggerSource::Schedule { cron })
            }
            "webhook" => {
                let path = self.required("path", raw.path.as_ref(), raw.at)?;
                let ok = path.starts_with('/')
                    && path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
                let result = if ok {
                    Ok(path)
                } else {
                    Err("a webhook path starts with `/` and uses letters, digits, `/`, `-`, `_`, `.`".to_owned())
                };
                let path = self.check("path", raw.path.as_ref().and_then(|s| s.at), result)?;
                Some(TriggerSource::Webhook { path })
            }
            "file" => {
                if raw.path.is_none() {
                    self.missing("path", raw.at);
                }
                let path = self.parsed("path", raw.path.as_ref(), |text| {
                    clean_path(&text).map(|(path, _)| path)
                });
                let events = match raw.events {
                    Some(list) if list.is_empty() => {
                        let at = raw.at;
                        self.key("events", |v| {
                            v.error(at, "`events` is empty; list some of `create`, `modify`, `delete`, or leave it out for all")
                        });
                        Vec::new()
                    }
                    Some(list) => self.key("events", |v| {
                        let mut out = Vec::new();
                        for (i, event) in list.iter().enumerate() {
                            out.extend(v.index(i, |v| {
                                v.one_of_here(event, FileEvent::parse, FileEvent::allowed())
                            }));
                        }
                        out.sort();
                        out.dedup();
                        out
                    }),
                    None => FileEvent::ALL.to_vec(),
                };
                Some(TriggerSource::File {
                    path: path?,
                    events,
                })
            }
            _ => {
                let app = self.name("app", raw.app.as_ref(), raw.at)?;
                self.references.push(Reference {
                    path: self.cx.path.key("app"),
                    at: raw.app.as_ref().and_then(|s| s.at),
                    kind: RefKind::App,
                    name: app.to_string(),
                });
                Some(TriggerSource::Health { app })
            }
        }
    }

    /// [`Self::one_of`] for a value at the current path (a list item).
    fn one_of_here<E>(
        &mut self,
        value: &Sp<String>,
        parse: fn(&str) -> Option<E>,
        allowed: String,
    ) -> Option<E> {
        let text = self.scope.apply(value, self.cx)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            self.error(value.at, not_allowed(&text, &allowed));
        }
        parsed
    }

    fn trigger_action(&mut self, raw: raw::TriggerAction) -> Option<TriggerAction> {
        let set = [
            raw.run.is_some(),
            raw.restart_service.is_some(),
            raw.alert.is_some(),
        ];
        if set.iter().filter(|b| **b).count() != 1 {
            self.error(
                raw.at,
                "set exactly one of `run`, `restart_service` and `alert`",
            );
            return None;
        }
        if raw.run.is_some() {
            return self
                .command("run", raw.run.as_ref(), raw.at)
                .map(TriggerAction::Run);
        }
        if raw.alert.is_some() {
            return self
                .command("alert", raw.alert.as_ref(), raw.at)
                .map(TriggerAction::Alert);
        }
        let name = self.name("restart_service", raw.restart_service.as_ref(), raw.at)?;
        self.references.push(Reference {
            path: self.cx.path.key("restart_service"),
            at: raw.restart_service.as_ref().and_then(|s| s.at),
            kind: RefKind::Service,
            name: name.to_string(),
        });
        Some(TriggerAction::RestartService(name))
    }

    fn terminal(&mut self, list: Vec<raw::Terminal>) -> Vec<TerminalSession> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            let session = self.index(i, |v| {
                let name = v.name("name", raw.name.as_ref(), raw.at)?;
                v.unique(
                    &mut seen,
                    "terminal session",
                    &name,
                    raw.name.as_ref().and_then(|s| s.at),
                );
                let title = v.text("title", raw.title.as_ref());
                let cwd = v.directory("cwd", raw.cwd.as_ref());
                let run = v.text("run", raw.run.as_ref());
                Some(TerminalSession {
                    name,
                    title,
                    cwd,
                    run,
                })
            });
            out.extend(session);
        }
        out
    }

    fn hooks(&mut self, raw: raw::Hooks) -> Hooks {
        Hooks {
            on_first_boot: self.text("on_first_boot", raw.on_first_boot.as_ref()),
            on_every_boot: self.text("on_every_boot", raw.on_every_boot.as_ref()),
            on_pre_snapshot: self.text("on_pre_snapshot", raw.on_pre_snapshot.as_ref()),
            on_resume: self.text("on_resume", raw.on_resume.as_ref()),
            on_shutdown: self.text("on_shutdown", raw.on_shutdown.as_ref()),
        }
    }

    fn telemetry(&mut self, raw: raw::Telemetry) -> Telemetry {
        let metrics = self.flag(raw.metrics.as_ref(), false);
        let logs = self.key("logs", |v| {
            let mut out = Vec::new();
            for (i, entry) in raw.logs.unwrap_or_default().iter().enumerate() {
                v.index(i, |v| {
                    let Some(text) = v.scope.apply(entry, v.cx) else {
                        return;
                    };
                    if !text.starts_with('/') {
                        v.references.push(Reference {
                            path: v.cx.path.clone(),
                            at: entry.at,
                            kind: RefKind::LogSource,
                            name: text.clone(),
                        });
                    }
                    out.push(text);
                });
            }
            out
        });
        let otel_endpoint = self.url(
            "otel_endpoint",
            raw.otel_endpoint.as_ref(),
            &["http", "https"],
        );
        Telemetry {
            metrics,
            logs,
            otel_endpoint,
        }
    }

    fn egress(&mut self, raw: raw::EgressPolicy) -> Option<EgressPolicy> {
        let mode = match raw.mode.as_ref() {
            Some(_) => self.one_of(
                "mode",
                raw.mode.as_ref(),
                EgressMode::parse,
                EgressMode::allowed(),
            ),
            None => {
                self.missing("mode", raw.at);
                None
            }
        };
        let rules = self.key("rules", |v| {
            let mut out = Vec::new();
            for (i, rule) in raw.rules.unwrap_or_default().iter().enumerate() {
                v.index(i, |v| {
                    let Some(text) = v.scope.apply(rule, v.cx) else {
                        return;
                    };
                    match parse_egress_rule(&text) {
                        Ok(rule) => out.push(rule),
                        Err(message) => v.error(rule.at, message),
                    }
                });
            }
            out
        });
        Some(EgressPolicy { mode: mode?, rules })
    }

    fn streaming(&mut self, list: Vec<raw::Stream>) -> Vec<Stream> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (i, raw) in list.into_iter().enumerate() {
            let stream = self.index(i, |v| {
                let name = v.name("name", raw.name.as_ref(), raw.at);
                if let Some(name) = &name {
                    v.unique(
                        &mut seen,
                        "stream",
                        name,
                        raw.name.as_ref().and_then(|s| s.at),
                    );
                }
                if raw.url.is_none() {
                    v.missing("url", raw.at);
                }
                let url = v.url("url", raw.url.as_ref(), &["rtmp", "rtmps"]);
                let key = match raw.key {
                    Some(raw::EnvValue::Literal(text)) => {
                        v.text("key", Some(&text)).map(EnvValue::Literal)
                    }
                    Some(raw::EnvValue::Secret(reference)) => v
                        .key("key", |v| v.secret_ref(&reference))
                        .map(|secret| EnvValue::Secret { secret }),
                    None => None,
                };
                let autostart = v.flag(raw.autostart.as_ref(), false);
                Some(Stream {
                    name: name?,
                    url: url?,
                    key,
                    autostart,
                })
            });
            out.extend(stream);
        }
        out
    }

    fn desktop(&mut self, raw: raw::Desktop) -> Option<Desktop> {
        if raw.wallpaper.is_none() {
            self.missing("wallpaper", raw.at);
        }
        let wallpaper = self.url(
            "wallpaper",
            raw.wallpaper.as_ref(),
            &["http", "https", "s3", "file"],
        )?;
        Some(Desktop { wallpaper })
    }

    /// Reports each field that is set but belongs to other variants than `kind`.
    fn fields_of_other_variants(&mut self, kind: &str, what: &str, fields: &[VariantField<'_>]) {
        for (field, written, owners) in fields {
            if let Some(at) = written.filter(|_| !owners.contains(&kind)) {
                let message = format!(
                    "`{field}` applies to `{}` {what}, not `{kind}`",
                    owners.join("` and `")
                );
                self.key(*field, |v| v.error(at, message));
            }
        }
    }

    /// Checks that every service and app named somewhere exists.
    fn check_references(&mut self) {
        // An unreadable app or service is reported where it is; names used
        // elsewhere are not called undefined after that.
        if self.cx.invalid_under(&FieldPath::root().key("apps")) {
            self.references.clear();
        }
        for reference in std::mem::take(&mut self.references) {
            let message = match reference.kind {
                RefKind::Service | RefKind::LogSource
                    if self.service_names.contains_key(&reference.name) =>
                {
                    continue;
                }
                RefKind::App if self.app_names.contains_key(&reference.name) => continue,
                RefKind::Service => {
                    format!(
                        "no service named `{}`; services: {}",
                        truncate(&reference.name),
                        list_or_none(&self.service_names)
                    )
                }
                RefKind::LogSource => format!(
                    "`{}` is neither a service name nor an absolute path; services: {}",
                    truncate(&reference.name),
                    list_or_none(&self.service_names)
                ),
                RefKind::App => format!(
                    "no app named `{}`; apps: {}",
                    truncate(&reference.name),
                    list_or_none(&self.app_names)
                ),
            };
            self.cx.diagnostics.push(crate::error::Diagnostic {
                path: reference.path,
                message,
                location: reference.at,
            });
        }
    }
}

fn list_or_none(names: &HashMap<String, FieldPath>) -> String {
    if names.is_empty() {
        return "none defined".to_owned();
    }
    let mut sorted: Vec<&String> = names.keys().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_allowed(text: &str, allowed: &str) -> String {
    format!(
        "`{}` is not allowed; expected one of {allowed}",
        truncate(text)
    )
}

fn check_account(text: String) -> Result<String, String> {
    let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let named = (1..=32).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if numeric || named {
        Ok(text)
    } else {
        Err(format!(
            "`{}` is not a user or group name (a-z, 0-9, `_`, `-`, up to 32) or a numeric id",
            truncate(&text)
        ))
    }
}

fn check_url(text: &str, schemes: &[&str]) -> Result<Url, String> {
    let shown = truncate(text);
    let url = Url::parse(text).map_err(|e| format!("`{shown}` is not a valid URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "`{shown}` has scheme `{}`; expected one of {}",
            url.scheme(),
            allowed_values(schemes)
        ));
    }
    let needs_host = !matches!(url.scheme(), "file");
    if needs_host && url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(url)
}

/// Normalizes a file destination: collapses `//` and `/./`, rejects `..`
/// before any prefix test, then rejects reserved system paths.
pub(crate) fn normalize_destination(text: &str) -> Result<String, String> {
    let (path, directory) = clean_path(text)?;
    if directory {
        return Err(format!(
            "`{}` names a directory; a file path is required",
            truncate(text)
        ));
    }
    if path.starts_with('~') {
        return Ok(path);
    }
    if let Some(reserved) = RESERVED_PATHS.iter().find(|r| {
        path == **r
            || path
                .strip_prefix(**r)
                .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Err(format!(
            "`{}` is under `{reserved}`, a reserved system path",
            truncate(&path)
        ));
    }
    Ok(path)
}

/// An absolute or `~/` path with `//` and `/./` collapsed, `..` rejected
/// (before any prefix test), and whether it names a directory (it is the
/// root or home itself, or ends in `/` or `/.`).
fn clean_path(text: &str) -> Result<(String, bool), String> {
    let shown = truncate(text);
    let (home, rest) = if let Some(rest) = text.strip_prefix("~/") {
        (true, rest)
    } else if text.starts_with('~') {
        return Err(format!("`{shown}`: only `~/` is supported, not `~user`"));
    } else if text.starts_with('/') {
        (false, text)
    } else {
        return Err(format!(
            "`{shown}` must be an absolute path or start with `~/`"
        ));
    };
    if text.contains('\0') {
        return Err("a path must not contain a NUL character".to_owned());
    }
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(format!("`{shown}` must not contain `..`")),
            other => segments.push(other),
        }
    }
    let directory = segments.is_empty() || text.ends_with('/') || text.ends_with("/.");
    let joined = segments.join("/");
    Ok((
        if home {
            format!("~/{joined}")
        } else {
            format!("/{joined}")
        },
        directory,
    ))
}

/// `"0644"`, `"644"`, `"0o644"`: octal permission bits, at most `7777`.
fn parse_mode(text: &str) -> Result<FileMode, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let ok = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let bits = u32::from_str_radix(digits, 8).ok().filter(|_| ok);
    bits.map(FileMode).ok_or_else(|| {
        format!(
            "`{}` is not an octal mode; write it as a quoted string like `\"0644\"`",
            truncate(text)
        )
    })
}

fn parse_resolution(text: &str) -> Result<Resolution, String> {
    let bad = || {
        format!(
            "`{}` is not WIDTHxHEIGHTxDEPTH (e.g. `1280x720x24`; depth 8, 16, 24 or 32)",
            truncate(text)
        )
    };
    let parts: Vec<&str> = text.split('x').collect();
    let [w, h, d] = parts.as_slice() else {
        return Err(bad());
    };
    let num = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| s.bytes().all(|b| b.is_ascii_digit()) && (1..=16384).contains(n))
    };
    match (num(w), num(h), num(d)) {
        (Some(width), Some(height), Some(depth)) if [8, 16, 24, 32].contains(&depth) => {
            Ok(Resolution {
                width,
                height,
                depth,
            })
        }
        _ => Err(bad()),
    }
}

/// `500ms`, `15s`, `2m`, `1h30m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{}` is not a duration; write e.g. `15s`, `500ms`, `2m` or `1h30m`",
            truncate(text)
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .map(Duration)
            .ok_or_else(bad);
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Units must come largest first, each at most once (`1h30m`, not `30m1h` or `1s1s`).
    let mut last_unit = u64::MAX;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total = n
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(bad)?;
    }
    Ok(Duration(total))
}

/// Five cron fields: minute hour day-of-month month day-of-week, each `*`,
/// `N`, `A-B`, with an optional `/STEP`, in comma-separated lists; months and
/// days may be given by their three-letter English names.
fn normalize_cron(text: &str) -> Result<String, String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "`{}` is not a cron expression; it needs 5 fields (minute hour day-of-month month day-of-week)",
            truncate(text)
        ));
    }
    for (i, (part, (what, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
        let value = |s: &str| -> Option<u32> {
            let lower = s.to_ascii_lowercase();
            let named = match i {
                3 => MONTHS
                    .iter()
                    .position(|m| *m == lower)
                    .map(|p| p as u32 + 1),
                4 => DAYS.iter().position(|d| *d == lower).map(|p| p as u32),
                _ => None,
            };
            named
                .or_else(|| number(s))
                .filter(|n| (lo..=hi).contains(n))
        };
        for item in part.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            let range_ok = range == "*"
                || match range.split_once('-') {
                    Some((a, b)) => matches!((value(a), value(b)), (Some(a), Some(b)) if a <= b),
                    None => value(range).is_some(),
                };
            let step_ok = step.is_none_or(|s| number(s).is_some_and(|n| n >= 1 && n <= hi));
            if !range_ok || !step_ok {
                return Err(format!(
                    "cron {what} field `{item}` is not valid (allowed {lo}-{hi}, `*`, ranges, lists and `/step`)"
                ));
            }
        }
    }
    // One spelling per schedule: single spaces, names in lower case.
    Ok(parts.join(" ").to_ascii_lowercase())
}

/// Digits only (no sign), as cron fields are written.
fn number(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

/// A domain (`api.anthropic.com`), a pattern (`*.github.com`), an IP or a CIDR.
/// Domains are lower-cased; CIDRs are held by their network address.
pub(crate) fn parse_egress_rule(text: &str) -> Result<EgressRule, String> {
    if let Some((scheme, rest)) = text.split_once("://") {
        return Err(format!(
            "`{}` is a URL; write the host alone, e.g. `{}`, not `{scheme}://`",
            truncate(text),
            truncate(rest.split(['/', ':']).next().unwrap_or(rest))
        ));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(EgressRule::Ip(ip));
    }
    if let Some((addr, prefix)) = text.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!(
                "`{}` is not a CIDR: `{addr}` is not an IP address",
                truncate(text)
            )
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u32 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max && prefix.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "`{}` is not a CIDR: the prefix must be 0-{max}",
                    truncate(text)
                )
            })?;
        let network = match ip {
            IpAddr::V4(v4) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        // A full-length prefix is one address: written as the bare address.
        if prefix == max {
            return Ok(EgressRule::Ip(network));
        }
        let prefix = u8::try_from(prefix).expect("a prefix of at most 128");
        let net = IpNet::new(network, prefix).expect("the prefix was checked against the address");
        return Ok(EgressRule::Cidr(net));
    }
    let lower = text.to_ascii_lowercase();
    let (suffix, wildcard) = match lower.strip_prefix("*.") {
        Some(suffix) => (suffix, true),
        None => (lower.as_str(), false),
    };
    if is_hostname(suffix) {
        Ok(if wildcard {
            EgressRule::Wildcard(suffix.to_owned())
        } else {
            EgressRule::Domain(lower)
        })
    } else {
        Err(format!(
            "`{}` is not a domain, `*.` domain pattern, IP address or CIDR",
            truncate(text)
        ))
    }
}

/// A DNS name: labels of 1-63 letters, digits and inner hyphens, at most 253
/// bytes, and a last label that is not all digits (`010.0.0.1` is no name).
fn is_hostname(name: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last_not_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()));
    name.len() <= 253 && name.split('.').all(label_ok) && last_not_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(normalize_destination("//opt//./x"), Ok("/opt/x".into()));
        assert_eq!(normalize_destination("~/a/b"), Ok("~/a/b".into()));
        assert_eq!(normalize_destination("/procfoo/x"), Ok("/procfoo/x".into()));
        assert_eq!(
            normalize_destination("/opt/orgofoo"),
            Ok("/opt/orgofoo".into())
        );
        for (bad, says) in [
            ("/etc/orgo/../x", "`..`"),
            ("//proc/x", "reserved"),
            ("/proc", "reserved"),
            ("/usr/local/sbin/orgo-agent", "reserved"),
            ("~/../etc/passwd", "`..`"),
            ("~root/x", "`~/`"),
            ("relative/x", "absolute"),
            ("/opt/x/", "directory"),
            ("/", "directory"),
            ("/tmp/x", "reserved"),
            ("/var/run/x", "reserved"),
            ("/opt/x/.", "directory"),
            ("~/", "directory"),
        ] {
            let err = normalize_destination(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn modes_durations_resolutions() {
        assert_eq!(parse_mode("0755").unwrap().to_string(), "0755");
        assert_eq!(parse_mode("644").unwrap().to_string(), "0644");
        assert_eq!(parse_mode("0o4755").unwrap().bits(), 0o4755);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("07777777").is_err());
        assert_eq!(parse_duration("1h30m").unwrap().to_string(), "90m");
        assert_eq!(parse_duration("60s").unwrap().to_string(), "1m");
        assert_eq!(parse_duration("1500ms").unwrap().to_string(), "1500ms");
        assert_eq!(parse_duration("15").unwrap().to_string(), "15s");
        for bad in ["", "s", "15x", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_resolution("1280x720x24").is_ok());
        for bad in [
            "1280x720",
            "1280x720x23",
            "0x720x24",
            "axbxc",
            "1280x720x24x1",
        ] {
            assert!(parse_resolution(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_and_egress() {
        for ok in [
            "*/5 * * * *",
            "0 3 * * mon-fri",
            "0,30 9-17 1 jan *",
            "0 0 * * 7",
        ] {
            assert!(normalize_cron(ok).is_ok(), "{ok}");
        }
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "* * * foo *",
            "+5 * * * *",
            "*/+2 * * * *",
        ] {
            assert!(normalize_cron(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_cron(" 5  3 * *\tMON-Fri ").unwrap(),
            "5 3 * * mon-fri"
        );
        let text = |rule: &str| parse_egress_rule(rule).unwrap().to_string();
        assert_eq!(text("*.GitHub.com"), "*.github.com");
        assert_eq!(text("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(text("::1"), "::1");
        assert_eq!(text("10.0.0.7/32"), "10.0.0.7");
        assert_eq!(text("123.example.com"), "123.example.com");
        assert_eq!(text("2001:db8::1/32"), "2001:db8::/32");
        assert_eq!(text("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(text("::/0"), "::/0");
        for (rule, typed) in [
            ("*.GitHub.com", EgressRule::Wildcard("github.com".into())),
            ("API.x.com", EgressRule::Domain("api.x.com".into())),
            ("10.0.0.7/32", EgressRule::Ip("10.0.0.7".parse().unwrap())),
            ("fe80::1", EgressRule::Ip("fe80::1".parse().unwrap())),
            (
                "10.1.2.3/8",
                EgressRule::Cidr("10.0.0.0/8".parse().unwrap()),
            ),
            (
                "2001:db8::1/32",
                EgressRule::Cidr("2001:db8::/32".parse().unwrap()),
            ),
        ] {
            assert_eq!(parse_egress_rule(rule).unwrap(), typed, "{rule}");
        }
        for bad in [
            "10.0.0.0/33",
            "exa mple.com",
            "*.",
            "-a.com",
            "a..b",
            "1.2.3.4/x",
            "010.0.0.1",
            "https://example.com",
        ] {
            assert!(parse_egress_rule(bad).is_err(), "{bad}");
        }
    }
}
