//! The authored document: what a person may write, sugar included, every field
//! optional and every scalar still as written. The JSON Schema is generated
//! from these types, so it accepts both forms.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::convert::{Cx, FromNode, IntOrStr, Map, Sp, fields};
use crate::node::{Node, NodeKind};

fields! {
    /// An `orgo.ai/v1` template, in canonical or sugar form (or both mixed).
    #[schemars(title = "orgo.ai/v1 template")]
    Document {
        /// Must be `orgo.ai/v1`.
        #[schemars(required, extend("const" = "orgo.ai/v1"))]
        api_version: Sp<String>,
        /// Identity: name, version, description.
        template: Identity,
        /// VM resource shape.
        hardware: Hardware,
        /// Vault secrets the template needs.
        secrets: Vec<Secret>,
        /// Variables for `${var.X}` interpolation.
        vars: Map<Sp<String>>,
        /// Environment variables, literal or secret-backed. Keys are UPPER_SNAKE_CASE.
        env: Map<EnvValue>,
        /// Build-time install steps.
        build: Build,
        /// Files written into the VM: a list, or the sugar `{ /path: "text" }`.
        files: Files,
        /// Apps, services, and health checks.
        apps: Vec<App>,
        /// Reactive automation: a source fires, actions run.
        triggers: Vec<Trigger>,
        /// Pre-staged tmux sessions.
        terminal: Vec<Terminal>,
        /// Lifecycle shell hooks.
        hooks: Hooks,
        /// Metrics and logs.
        telemetry: Telemetry,
        /// Per-VM network rules.
        egress_policy: EgressPolicy,
        /// Outbound RTMP streams.
        streaming: Vec<Stream>,
        /// Desktop settings; the canonical home of the `wallpaper` sugar.
        desktop: Desktop,
        /// Sugar for `template: { name, version }`: `name: foo@1.0.0`.
        name: Sp<String>,
        /// Sugar for `hardware.cpu`.
        cpu: Sp<u64>,
        /// Sugar for `hardware.ram_gb`: `4gb`, `4GiB` or `4`.
        ram: Sp<IntOrStr>,
        /// Sugar for `hardware.resolution` with depth 24: `1280x800`.
        display: Sp<String>,
        /// Sugar for `desktop.wallpaper`: an image URL set as the background on every boot.
        wallpaper: Sp<String>,
        /// Sugar for `hooks.on_first_boot`.
        on_first_boot: Sp<String>,
    }
}

fields! {
    /// Identity and provenance.
    Identity {
        /// Lowercase kebab-case, 1-64 characters.
        name: Sp<String>,
        /// Semantic version, immutable once published.
        version: Sp<String>,
        /// One line about the template.
        description: Sp<String>,
        /// Publisher handle (kebab-case).
        publisher: Sp<String>,
        /// SPDX license id (informational).
        license: Sp<String>,
        /// Home page URL.
        homepage: Sp<String>,
        /// Source URL.
        source: Sp<String>,
    }
}

fields! {
    /// The VM's resource shape; every field is optional.
    Hardware {
        /// `linux`.
        os: Sp<String>,
        /// vCPU count: 1, 2, 4, 8 or 16.
        cpu: Sp<u64>,
        /// RAM in GB: 4, 8, 16, 32 or 64.
        ram_gb: Sp<u64>,
        /// Disk in GB, at least 1.
        disk_gb: Sp<u64>,
        /// GPU model.
        gpu: Sp<String>,
        /// Number of GPUs.
        gpu_count: Sp<u64>,
        /// `WIDTHxHEIGHTxDEPTH`, e.g. `1280x720x24`.
        resolution: Sp<String>,
        /// Idle minutes before auto-stop, 0-1440; 0 disables.
        auto_stop_minutes: Sp<u64>,
        /// `auto-us`, `iad`, `sjc` or `lax`.
        region: Sp<String>,
        /// Enable the audio device.
        audio: Sp<bool>,
        /// Network bandwidth cap in Mbps.
        bandwidth_mbps: Sp<u64>,
    }
}

fields! {
    /// A secret the template needs from the launching user's vault.
    Secret {
        /// Lowercase letters, digits, `_` and `-`, starting with a letter; 1-64.
        name: Sp<String>,
        /// What the secret is for.
        description: Sp<String>,
        /// Whether a launch fails without it (default `true`).
        required: Sp<bool>,
    }
}

fields! {
    /// `{ secret: NAME }`: a value taken from the vault at launch.
    SecretRef {
        /// A name declared in `secrets`.
        secret: Sp<String>,
    }
}

/// An environment value: a literal string or a secret reference.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(untagged)]
pub(crate) enum EnvValue {
    /// A literal value.
    Literal(Sp<String>),
    /// A value from the vault.
    Secret(SecretRef),
}

impl FromNode for EnvValue {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        if matches!(node.kind, NodeKind::Map(_)) {
            let at = Some(node.location);
            let reference = SecretRef::from_node(node, cx)?;
            if reference.secret.is_none() && !cx.invalid.contains(&cx.path.key("secret")) {
                cx.error(at, "a secret reference needs `secret: NAME`");
                return None;
            }
            Some(EnvValue::Secret(reference))
        } else {
            Sp::<String>::from_node(node, cx).map(EnvValue::Literal)
        }
    }
}

fields! {
    /// Build-time install steps, run once when baking the golden snapshot.
    Build {
        /// Debian packages.
        apt: Vec<Sp<String>>,
        /// Python packages.
        pip: Vec<Sp<String>>,
        /// npm packages, installed globally.
        npm: Vec<Sp<String>>,
        /// Shell commands, in order; at most 64.
        run: Vec<Sp<String>>,
    }
}

/// `files`: a list of entries, or the sugar mapping of path to inline text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Files {
    List(Vec<File>),
    Sugar(Map<Sp<String>>),
}

impl JsonSchema for Files {
    fn schema_name() -> Cow<'static, str> {
        "Files".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "array", "items": generator.subschema_for::<File>() },
                { "type": "object", "additionalProperties": { "type": "string" },
                  "description": "Sugar: destination path to inline text." }
            ]
        })
    }
}

impl FromNode for Files {
    fn from_node(node: Node, cx: &mut Cx) -> Option<Self> {
        if matches!(node.kind, NodeKind::Map(_)) {
            Map::from_node(node, cx).map(Files::Sugar)
        } else {
            Vec::from_node(node, cx).map(Files::List)
        }
    }
}

fields! {
    /// A file materialized into the VM; exactly one of `from` and `inline`.
    File {
        /// Absolute destination path, or `~/...`.
        to: Sp<String>,
        /// Source URI: file, git, http, https, s3 or `secret://NAME`.
        from: Sp<String>,
        /// Inline content.
        inline: Sp<String>,
        /// Octal permissions as a string, e.g. `"0644"`.
        mode: Sp<String>,
        /// Owner, resolved against the VM's /etc/passwd.
        owner: Sp<String>,
        /// Group, resolved against the VM's /etc/group.
        group: Sp<String>,
        /// `build` (baked into the snapshot, default) or `runtime` (applied at each boot).
        when: Sp<String>,
    }
}

fields! {
    /// An app: install step, services, health check, ports.
    App {
        /// Kebab-case, unique.
        name: Sp<String>,
        /// Display title.
        title: Sp<String>,
        /// Shell run at build time, after `build`.
        install: Sp<String>,
        /// Long-running services, supervised.
        services: Vec<Service>,
        /// Liveness check; `on_fail` runs after `retries` consecutive failures.
        health: Health,
        /// Ports the app listens on.
        ports: Vec<Port>,
        /// Commands started on the desktop after boot.
        autostart: Vec<Autostart>,
    }
}

fields! {
    /// A supervised long-running process.
    Service {
        /// Kebab-case, unique across the template.
        name: Sp<String>,
        /// The long-lived command.
        run: Sp<String>,
        /// Working directory.
        cwd: Sp<String>,
        /// Run-as user (default `orgo`).
        user: Sp<String>,
        /// Extra environment variables.
        env: Map<EnvValue>,
        /// `always` (default), `on-failure` or `no`.
        restart: Sp<String>,
        /// Stop signal, e.g. `TERM` (default).
        stop_signal: Sp<String>,
        /// Log file path.
        log: Sp<String>,
    }
}

fields! {
    /// A polled liveness check. Fields by type: http `url`; tcp `port` (and `host`);
    /// command `command`; process `process`.
    Health {
        /// `http`, `tcp`, `command` or `process`.
        r#type: Sp<String>,
        /// http: URL that must answer 2xx or 3xx.
        url: Sp<String>,
        /// tcp: port that must accept a connection.
        port: Sp<u64>,
        /// tcp: host to connect to (default `127.0.0.1`).
        host: Sp<String>,
        /// command: shell command that must exit 0.
        command: Sp<String>,
        /// process: process name that must be running.
        process: Sp<String>,
        /// Interval (default `15s`).
        every: Sp<IntOrStr>,
        /// Timeout of one check (default `3s`).
        timeout: Sp<IntOrStr>,
        /// Consecutive failures before `on_fail` (default 3).
        retries: Sp<u64>,
        /// `restart_service:NAME`, `restart_vm`, `alert` or `none` (default).
        on_fail: Sp<String>,
    }
}

fields! {
    /// A port an app listens on.
    Port {
        /// In-VM port, 1-65535; 5900, 5999, 6080 and 8080 are reserved.
        internal: Sp<u64>,
        /// Externally mapped port (0 = none).
        external: Sp<u64>,
        /// `tcp` (default), `udp`, `http` or `ws`.
        protocol: Sp<String>,
        /// Expose publicly.
        public: Sp<bool>,
    }
}

fields! {
    /// A command started on the desktop after boot.
    Autostart {
        /// The command.
        run: Sp<String>,
        /// Delay before it starts: seconds or a duration (`3`, `500ms`, `3s`).
        delay: Sp<IntOrStr>,
    }
}

fields! {
    /// Reactive automation: when `source` fires, `actions` run in order.
    Trigger {
        /// Kebab-case, unique.
        name: Sp<String>,
        /// What fires the trigger.
        source: TriggerSource,
        /// What runs, in order.
        actions: Vec<TriggerAction>,
        /// Firings within this window after one are dropped (e.g. `30s`).
        dedup: Sp<IntOrStr>,
    }
}

fields! {
    /// A trigger source. By type: schedule `cron`; webhook `path`; file `path`
    /// (and `events`); health `app`.
    TriggerSource {
        /// `schedule`, `webhook`, `file` or `health`.
        r#type: Sp<String>,
        /// schedule: five-field cron expression.
        cron: Sp<String>,
        /// webhook: URL path (`/hooks/x`); file: absolute path watched.
        path: Sp<String>,
        /// file: `create`, `modify`, `delete` (default all).
        events: Vec<Sp<String>>,
        /// health: the app whose health check failing fires the trigger.
        app: Sp<String>,
    }
}

fields! {
    /// One action; exactly one field set.
    TriggerAction {
        /// Run a shell command.
        run: Sp<String>,
        /// Restart a service by name.
        restart_service: Sp<String>,
        /// Raise an alert with this message.
        alert: Sp<String>,
    }
}

fields! {
    /// A tmux session created detached at first boot.
    Terminal {
        /// Session name (kebab-case), unique.
        name: Sp<String>,
        /// Display title.
        title: Sp<String>,
        /// Working directory.
        cwd: Sp<String>,
        /// Command run in the session.
        run: Sp<String>,
    }
}

fields! {
    /// Shell run at lifecycle points, with `set -e`.
    Hooks {
        /// Once, on the VM's first boot.
        on_first_boot: Sp<String>,
        /// Every boot, including restores.
        on_every_boot: Sp<String>,
        /// Before a golden snapshot is captured.
        on_pre_snapshot: Sp<String>,
        /// After restoring from a snapshot.
        on_resume: Sp<String>,
        /// On graceful shutdown.
        on_shutdown: Sp<String>,
    }
}

fields! {
    /// Metrics and logs.
    Telemetry {
        /// Flag the VM as scrape-ready.
        metrics: Sp<bool>,
        /// Service names or absolute log paths to ship.
        logs: Vec<Sp<String>>,
        /// OTLP endpoint (http or https).
        otel_endpoint: Sp<String>,
    }
}

fields! {
    /// Per-VM network filtering.
    EgressPolicy {
        /// `allow` (only these reachable) or `block` (everything except these).
        mode: Sp<String>,
        /// Domain patterns, exact domains, IPs or CIDRs.
        rules: Vec<Sp<String>>,
    }
}

fields! {
    /// An outbound RTMP(S) stream of the desktop.
    Stream {
        /// Kebab-case, unique.
        name: Sp<String>,
        /// `rtmp://` or `rtmps://` ingest URL.
        url: Sp<String>,
        /// Stream key: a literal string or `{ secret: NAME }`.
        key: EnvValue,
        /// Start streaming at boot.
        autostart: Sp<bool>,
    }
}

fields! {
    /// Desktop settings.
    Desktop {
        /// Image URL (http, https, s3 or file), downloaded at build and set as the
        /// desktop background on every boot.
        wallpaper: Sp<String>,
    }
}

impl Document {
    /// Reads the authored document from a tree; problems land in `cx`.
    pub(crate) fn read(node: Node, cx: &mut Cx) -> Option<Self> {
        Self::from_node(node, cx)
    }
}
