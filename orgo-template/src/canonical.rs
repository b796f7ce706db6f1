//! The canonical document: sugar folded, `${...}` resolved, every value
//! validated and typed, documented defaults filled in. Only this form is
//! serialized for the digest; only [`crate::Document::normalize`] makes one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};
use url::Url;

use crate::names::{Name, SecretName};

fn is_false(b: &bool) -> bool {
    !*b
}

/// A validated `orgo.ai/v1` template in canonical form.
///
/// Only this crate's pipeline ([`crate::Document::normalize`],
/// [`Template::parse`] and the other readers) makes one, and its sections are
/// read through accessors: a template cannot be changed after validation, so
/// its [`Template::digest`] always names a valid template.
///
/// ```compile_fail,E0616
/// let mut template = orgo_template::Template::from_yaml("api_version: orgo.ai/v1\nname: x@1.0.0\n")?;
/// template.hardware.cpu = Some(3); // error: field `hardware` is private
/// # Ok::<(), orgo_template::TemplateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Template {
    /// Always `orgo.ai/v1`.
    pub(crate) api_version: ApiVersion,
    /// Identity and provenance.
    pub(crate) template: Identity,
    /// Resource shape.
    pub(crate) hardware: Hardware,
    /// Secrets the template needs at launch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<Secret>,
    /// Environment variables, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) env: BTreeMap<String, EnvValue>,
    /// Build steps.
    #[serde(skip_serializing_if = "Build::is_empty")]
    pub(crate) build: Build,
    /// Files written into the VM.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) files: Vec<File>,
    /// Apps with services and health checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) apps: Vec<App>,
    /// Reactive automation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) triggers: Vec<Trigger>,
    /// tmux sessions created at first boot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) terminal: Vec<TerminalSession>,
    /// Lifecycle hooks.
    #[serde(skip_serializing_if = "Hooks::is_empty")]
    pub(crate) hooks: Hooks,
    /// Metrics and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) telemetry: Option<Telemetry>,
    /// Network rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) egress_policy: Option<EgressPolicy>,
    /// Outbound streams.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) streaming: Vec<Stream>,
    /// Desktop settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) desktop: Option<Desktop>,
}

impl Template {
    /// The format version: always `orgo.ai/v1`.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// Identity and provenance: name, version, publisher and the like.
    pub fn template(&self) -> &Identity {
        &self.template
    }

    /// The resource shape.
    pub fn hardware(&self) -> &Hardware {
        &self.hardware
    }

    /// The secrets the template needs at launch, in document order.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// The environment variables, by name.
    pub fn env(&self) -> &BTreeMap<String, EnvValue> {
        &self.env
    }

    /// The build steps.
    pub fn build(&self) -> &Build {
        &self.build
    }

    /// The files written into the VM, in document order.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The apps, with their services and health checks, in document order.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// The reactive automation, in document order.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// The tmux sessions created at first boot, in document order.
    pub fn terminal(&self) -> &[TerminalSession] {
        &self.terminal
    }

    /// The lifecycle hooks.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Metrics and logs, when set.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// The network rules, when set.
    pub fn egress_policy(&self) -> Option<&EgressPolicy> {
        self.egress_policy.as_ref()
    }

    /// The outbound streams, in document order.
    pub fn streaming(&self) -> &[Stream] {
        &self.streaming
    }

    /// The desktop settings, when set.
    pub fn desktop(&self) -> Option<&Desktop> {
        self.desktop.as_ref()
    }
}

/// The format version; `orgo.ai/v1` is the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiVersion {
    /// `orgo.ai/v1`.
    V1,
}

impl ApiVersion {
    /// The string form.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "orgo.ai/v1",
        }
    }
}

impl Serialize for ApiVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Identity and provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Identity {
    /// Kebab-case name.
    pub name: Name,
    /// Semantic version.
    #[serde(serialize_with = "display")]
    pub version: semver::Version,
    /// One line about the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Publisher handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<Name>,
    /// SPDX license id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Home page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub homepage: Option<Url>,
    /// Source repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Url>,
}

fn display<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Declares a closed set of string values, serialized as written in the reference.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name { $( $(#[$vmeta])* $variant, )* }

        impl $name {
            /// Every value, in the reference's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value as written in a template.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )* }
            }

            pub(crate) fn parse(text: &str) -> Option<Self> {
                match text { $( $text => Some($name::$variant), )* _ => None }
            }

            pub(crate) fn allowed() -> String {
                [$(concat!("`", $text, "`")),*].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Guest operating system.
    Os { /** Linux. */ Linux = "linux" }
}

string_enum! {
    /// GPU model.
    Gpu {
        /// No GPU.
        None = "none",
        /// NVIDIA T4.
        T4 = "t4",
        /// NVIDIA L4.
        L4 = "l4",
        /// NVIDIA A10.
        A10 = "a10",
        /// NVIDIA L40S.
        L40s = "l40s",
        /// NVIDIA A100 40 GB.
        A100_40 = "a100-40",
        /// NVIDIA A100 80 GB.
        A100_80 = "a100-80",
        /// NVIDIA H100.
        H100 = "h100",
    }
}

string_enum! {
    /// Placement region.
    Region {
        /// Any US region.
        AutoUs = "auto-us",
        /// Ashburn.
        Iad = "iad",
        /// San Jose.
        Sjc = "sjc",
        /// Los Angeles.
        Lax = "lax",
    }
}

/// The VM's resource shape. Unset fields are left to the platform or the launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Hardware {
    /// Always `linux`.
    pub os: Os,
    /// vCPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// RAM in GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<u32>,
    /// Disk in GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    /// GPU model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Number of GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// Display resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Idle minutes before auto-stop; 0 disables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_minutes: Option<u32>,
    /// Placement region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Audio device (default `false`).
    pub audio: bool,
    /// Bandwidth cap in Mbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<u64>,
}

/// `WIDTHxHEIGHTxDEPTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolution {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Bits per pixel.
    pub depth: u32,
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.width, self.height, self.depth)
    }
}

impl Serialize for Resolution {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret the template needs from the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Secret {
    /// Name in the vault.
    pub name: SecretName,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a launch fails without it.
    pub required: bool,
}

/// An environment value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum EnvValue {
    /// A literal, already interpolated.
    Literal(String),
    /// Taken from the vault at launch.
    Secret {
        /// The declared secret's name.
        secret: SecretName,
    },
}

/// Build steps, in the order they run: apt, pip, npm, then `run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Build {
    /// Debian packages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apt: Vec<String>,
    /// Python packages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    /// npm packages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub npm: Vec<String>,
    /// Shell commands.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run: Vec<String>,
}

impl Build {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.apt.is_empty() && self.pip.is_empty() && self.npm.is_empty() && self.run.is_empty()
    }
}

string_enum! {
    /// When a file is written.
    When {
        /// Baked into the snapshot.
        Build = "build",
        /// Re-applied at each boot and restore.
        Runtime = "runtime",
    }
}

/// Unix permission bits, written as a four-digit octal string (`"0644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub(crate) u32);

impl FileMode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileSource {
    /// Inline text.
    Inline(String),
    /// A URI: file, git, http, https, s3 or `secret://NAME`.
    From(Url),
}

/// A file written into the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct File {
    /// Destination: absolute and normalized, or `~/...`.
    pub to: String,
    /// Content.
    #[serde(flatten)]
    pub source: FileSource,
    /// Permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// When it is written (default `build`).
    pub when: When,
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct App {
    /// Kebab-case name.
    pub name: Name,
    /// Display title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Build-time install shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// Supervised services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Liveness check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Desktop autostart commands.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub autostart: Vec<Autostart>,
}

string_enum! {
    /// Restart policy of a service.
    Restart {
        /// Always restart (default).
        Always = "always",
        /// Restart after a non-zero exit.
        OnFailure = "on-failure",
        /// Never restart.
        No = "no",
    }
}

string_enum! {
    /// Signal that stops a service.
    Signal {
        /// SIGTERM (default).
        Term = "TERM",
        /// SIGINT.
        Int = "INT",
        /// SIGQUIT.
        Quit = "QUIT",
        /// SIGHUP.
        Hup = "HUP",
        /// SIGKILL.
        Kill = "KILL",
        /// SIGUSR1.
        Usr1 = "USR1",
        /// SIGUSR2.
        Usr2 = "USR2",
    }
}

/// A supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Service {
    /// Kebab-case name, unique in the template.
    pub name: Name,
    /// Command.
    pub run: String,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run-as user (default `orgo`).
    pub user: String,
    /// Extra environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Restart policy (default `always`).
    pub restart: Restart,
    /// Stop signal (default `TERM`).
    pub stop_signal: Signal,
    /// Log file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// A duration, written canonically in its largest exact unit (`90s`, `2m`, `1500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub(crate) u64);

impl Duration {
    /// The length in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// As a standard duration.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        for (size, unit) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        if self.0 == 0 {
            return f.write_str("0s");
        }
        write!(f, "{}ms", self.0)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthCheck {
    /// The URL answers 2xx or 3xx.
    Http {
        /// http or https URL.
        url: Url,
    },
    /// The port accepts a TCP connection.
    Tcp {
        /// Port.
        port: u16,
        /// Host (default `127.0.0.1`).
        host: String,
    },
    /// The shell command exits 0.
    Command {
        /// Shell command.
        command: String,
    },
    /// A process of this name runs.
    Process {
        /// Process name.
        process: String,
    },
}

/// What happens after `retries` consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFail {
    /// Restart the named service.
    RestartService(Name),
    /// Restart the VM.
    RestartVm,
    /// Raise an alert.
    Alert,
    /// Nothing (default).
    None,
}

impl fmt::Display for OnFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnFail::RestartService(name) => write!(f, "restart_service:{name}"),
            OnFail::RestartVm => f.write_str("restart_vm"),
            OnFail::Alert => f.write_str("alert"),
            OnFail::None => f.write_str("none"),
        }
    }
}

impl Serialize for OnFail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A polled liveness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The probe.
    #[serde(flatten)]
    pub check: HealthCheck,
    /// Interval (default 15s).
    pub every: Duration,
    /// Timeout of one probe (default 3s).
    pub timeout: Duration,
    /// Consecutive failures before `on_fail` (default 3).
    pub retries: u32,
    /// Action on failure (default `none`).
    pub on_fail: OnFail,
}

string_enum! {
    /// Port protocol.
    Protocol {
        /// TCP (default).
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
        /// HTTP.
        Http = "http",
        /// WebSocket.
        Ws = "ws",
    }
}

/// A port an app listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Port {
    /// In-VM port.
    pub internal: u16,
    /// Mapped port, 0 for none (default 0).
    pub external: u16,
    /// Protocol (default `tcp`).
    pub protocol: Protocol,
    /// Public (default `false`).
    pub public: bool,
}

/// A desktop autostart command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Autostart {
    /// Command.
    pub run: String,
    /// Delay (default 0s).
    pub delay: Duration,
}

string_enum! {
    /// A file-watch event.
    FileEvent {
        /// Created.
        Create = "create",
        /// Modified.
        Modify = "modify",
        /// Deleted.
        Delete = "delete",
    }
}

/// What fires a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum TriggerSource {
    /// A cron schedule, in the VM's clock.
    Schedule {
        /// Five-field cron expression.
        cron: String,
    },
    /// An HTTP POST to this path on the VM's trigger endpoint.
    Webhook {
        /// URL path.
        path: String,
    },
    /// A change to a file.
    File {
        /// Absolute path.
        path: String,
        /// Events watched (default all three).
        events: Vec<FileEvent>,
    },
    /// An app's health check reaching its `retries`.
    Health {
        /// App name.
        app: Name,
    },
}

/// One action of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerAction {
    /// Run a shell command.
    Run(String),
    /// Restart a service.
    RestartService(Name),
    /// Raise an alert.
    Alert(String),
}

/// Reactive automation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Trigger {
    /// Kebab-case name.
    pub name: Name,
    /// Source.
    pub source: TriggerSource,
    /// Actions, in order.
    pub actions: Vec<TriggerAction>,
    /// Dedup window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Duration>,
}

/// A tmux session created detached at first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TerminalSession {
    /// Session name.
    pub name: Name,
    /// Display title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// Lifecycle hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Hooks {
    /// Once, at first boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_first_boot: Option<String>,
    /// Every boot and restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_every_boot: Option<String>,
    /// Before the golden snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_pre_snapshot: Option<String>,
    /// After a restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_resume: Option<String>,
    /// On graceful shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_shutdown: Option<String>,
}

impl Hooks {
    /// Whether no hook is set.
    pub fn is_empty(&self) -> bool {
        self.on_first_boot.is_none()
            && self.on_every_boot.is_none()
            && self.on_pre_snapshot.is_none()
            && self.on_resume.is_none()
            && self.on_shutdown.is_none()
    }
}

/// Metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Telemetry {
    /// Scrape-ready flag (default `false`).
    #[serde(skip_serializing_if = "is_false")]
    pub metrics: bool,
    /// Service names or absolute paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// OTLP endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otel_endpoint: Option<Url>,
}

string_enum! {
    /// How egress rules apply.
    EgressMode {
        /// Only the rules are reachable.
        Allow = "allow",
        /// Everything but the rules is reachable.
        Block = "block",
    }
}

/// Per-VM network rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EgressPolicy {
    /// Mode.
    pub mode: EgressMode,
    /// Rules, in document order, each serialized as the text it was parsed
    /// from in canonical form (see [`EgressRule`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<EgressRule>,
}

/// One `egress_policy.rules[]` entry, parsed once where the template is
/// normalized.
///
/// Its text form ([`fmt::Display`], and the canonical serialization) is the
/// canonical spelling: domains in lower case, `*.` patterns as written,
/// addresses in their standard form, CIDRs by their network address (a
/// full-length prefix is the bare address, an [`EgressRule::Ip`]).
///
/// ```
/// use orgo_template::{EgressRule, Template};
///
/// let template = Template::from_yaml(
///     "api_version: orgo.ai/v1\nname: x@1.0.0\n\
///      egress_policy: { mode: allow, rules: ['*.GitHub.com', api.x.com, 10.1.2.3/8, 10.0.0.7/32] }\n",
/// )?;
/// let rules = &template.egress_policy().expect("set").rules;
/// assert_eq!(rules[0], EgressRule::Wildcard("github.com".into()));
/// assert_eq!(rules[1], EgressRule::Domain("api.x.com".into()));
/// assert_eq!(rules[2], EgressRule::Cidr("10.0.0.0/8".parse()?));
/// assert_eq!(rules[3], EgressRule::Ip("10.0.0.7".parse()?));
/// assert_eq!(rules[0].to_string(), "*.github.com");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EgressRule {
    /// An exact domain, lower case: `api.github.com`.
    Domain(String),
    /// `*.github.com`: the names strictly below this suffix (held without
    /// the `*.`, lower case), not the suffix itself.
    Wildcard(String),
    /// One address.
    Ip(IpAddr),
    /// A network, by its network address, with a prefix shorter than the
    /// address.
    Cidr(IpNet),
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressRule::Domain(domain) => f.write_str(domain),
            EgressRule::Wildcard(suffix) => write!(f, "*.{suffix}"),
            EgressRule::Ip(ip) => write!(f, "{ip}"),
            EgressRule::Cidr(net) => write!(f, "{net}"),
        }
    }
}

impl std::str::FromStr for EgressRule {
    type Err = EgressRuleError;

    /// Parses one rule as a template's `egress_policy.rules[]` entry is
    /// parsed (without `${...}` interpolation), for tools that carry rules
    /// as text, such as the runtime's network daemon.
    fn from_str(text: &str) -> Result<EgressRule, EgressRuleError> {
        crate::validate::parse_egress_rule(text).map_err(EgressRuleError)
    }
}

/// Why a text is not an egress rule (see [`EgressRule`]'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRuleError(String);

impl fmt::Display for EgressRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgressRuleError {}

impl Serialize for EgressRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An outbound stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stream {
    /// Kebab-case name.
    pub name: Name,
    /// rtmp or rtmps URL.
    pub url: Url,
    /// Stream key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<EnvValue>,
    /// Start at boot (default `false`).
    pub autostart: bool,
}

/// Desktop settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Desktop {
    /// Downloaded when the snapshot is built and set as the background on every boot.
    pub wallpaper: Url,
}
