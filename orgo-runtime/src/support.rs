//! No silent field: which fields of a template this runtime cannot honour
//! on this host (pure). A template that sets one fails `build` and `launch`
//! with every such field's path and what is missing, instead of running
//! with the field ignored.
//!
//! | field | here |
//! |---|---|
//! | `hardware.gpu` (other than `none`), `hardware.gpu_count` | refused: no GPU passthrough |
//! | `hardware.region` | enforced: must match the host's [`RuntimeConfig::region`](crate::RuntimeConfig::region) (`auto-us` matches any US region) |
//! | `hardware.resolution` (depth 16, 24 or 32), `desktop.wallpaper` (http, https, file), `apps[].autostart` | carried out: the template has a desktop (see [`crate::desktop`]); depth 8 and an `s3://` wallpaper are refused |
//! | `streaming` | carried out: streamed by `ffmpeg` from the desktop (see `streams`) |
//! | `hardware.audio` | carried out on a desktop (a sound server with a null sink, see [`crate::desktop`]); refused on a headless template |
//! | `triggers`, `telemetry`, `hardware.auto_stop_minutes`, `apps[].health.on_fail` `alert` | carried out by the guest agent (see [`crate::automation`]) |
//! | `apps[].health.on_fail: restart_vm` | carried out by the process that launched the computer, while it runs (see `restart`); refused by a launch with [`LaunchOptions::detached`](crate::LaunchOptions::detached) (`orgo launch`, which exits at once), and by a launch from a checkpoint (a fork) |
//! | `telemetry.logs[i]` naming a path that is no service's log file | refused: services' logs are shipped |
//! | `egress_policy`, `apps[].ports`, `hardware.bandwidth_mbps` | enforced on the host (a network namespace per computer: nftables, the `orgo-netd` proxy and resolver, port forwards, `tc`); refused on a host without root or `CAP_NET_ADMIN` (or with the user-mode network configured), naming what it lacks |
//! | `files[].from` with an `s3://` source | refused: the local runtime holds no object-store credentials |
//!
//! Everything else is carried out by the build and the launch.

use std::fmt;

use orgo_template::{FileSource, Gpu, OnFail, Region, Template};

/// What the host offers, as far as templates are concerned.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostFacts {
    /// The region this host serves, if configured.
    pub(crate) region: Option<String>,
    /// Why this host cannot enforce the network fields, if it cannot.
    pub(crate) network: Option<String>,
    /// The launch's process exits once the launch returns
    /// ([`LaunchOptions::detached`](crate::LaunchOptions::detached)):
    /// nothing stays to restart the computer.
    pub(crate) detached: bool,
    /// The launch restores a checkpoint, not the template's snapshot.
    pub(crate) from_checkpoint: bool,
}

/// A field this host cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unsupported {
    /// The field's path (`apps[0].ports[1]`, `hardware.gpu`).
    pub field: String,
    /// What this runtime lacks.
    pub missing: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.missing)
    }
}

/// Why a detached launch refuses `restart_vm`.
const RESTART_VM: &str = "`restart_vm` is carried out by the process that launched the computer, while it runs, and this launch's process exits at once (`orgo launch`); the launch's secrets are never stored for another process to restart it with. Launch it through `orgo serve` (`orgo --remote URL launch`) or the library (`Runtime::launch`), or use `on_fail: restart_service:NAME` or `alert`";

/// Why a launch from a checkpoint refuses `restart_vm`.
const RESTART_VM_CHECKPOINT: &str = "`restart_vm` restores the template's golden snapshot, and a computer launched from a checkpoint (a fork) would come back as the template's, not as the checkpoint's: not carried out yet. Use `on_fail: restart_service:NAME` or `alert`";

/// Every field of `template` that `host` cannot honour, in document order.
pub(crate) fn unsupported(template: &Template, host: &HostFacts) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let network = host
        .network
        .as_ref()
        .map(|why| format!("this host cannot enforce it: the host network {why}"));
    let mut refuse = |field: String, missing: &str| {
        out.push(Unsupported {
            field,
            missing: missing.to_owned(),
        });
    };
    let hw = template.hardware();
    if hw.gpu.is_some_and(|g| g != Gpu::None) {
        refuse(
            "hardware.gpu".into(),
            "this host has no GPU to pass through",
        );
    }
    if hw.gpu_count.is_some_and(|n| n > 0) {
        refuse(
            "hardware.gpu_count".into(),
            "this host has no GPU to pass through",
        );
    }
    if let Some(region) = hw.region {
        match host.region.as_deref() {
            None => refuse(
                "hardware.region".into(),
                &format!(
                    "this host serves no region (set `ORGO_REGION` or `RuntimeConfig::region`); the template asks for `{}`",
                    region.as_str()
                ),
            ),
            Some(here) if !region_matches(region, here) => refuse(
                "hardware.region".into(),
                &format!(
                    "this host serves `{here}`; the template asks for `{}`",
                    region.as_str()
                ),
            ),
            Some(_) => {}
        }
    }
    if hw.resolution.is_some_and(|r| r.depth == 8) {
        refuse(
            "hardware.resolution".into(),
            "the desktop serves depth 16, 24 or 32, not 8",
        );
    }
    if hw.audio && crate::desktop::plan(template).is_none() {
        refuse(
            "hardware.audio".into(),
            &format!(
                "the sound server runs on a desktop, and this template has none (set {})",
                crate::desktop::DESKTOP_FIELDS
            ),
        );
    }
    if let (Some(_), Some(why)) = (hw.bandwidth_mbps, &network) {
        refuse("hardware.bandwidth_mbps".into(), why);
    }
    for (i, file) in template.files().iter().enumerate() {
        if let FileSource::From(url) = &file.source
            && url.scheme() == "s3"
        {
            refuse(
                format!("files[{i}].from"),
                "the local runtime holds no object-store credentials to fetch `s3://`",
            );
        }
    }
    for (i, app) in template.apps().iter().enumerate() {
        if let Some(why) = &network {
            for j in 0..app.ports.len() {
                refuse(format!("apps[{i}].ports[{j}]"), why);
            }
        }
        if let Some(health) = &app.health
            && matches!(health.on_fail, OnFail::RestartVm)
        {
            if host.from_checkpoint {
                refuse(format!("apps[{i}].health.on_fail"), RESTART_VM_CHECKPOINT);
            } else if host.detached {
                refuse(format!("apps[{i}].health.on_fail"), RESTART_VM);
            }
        }
    }
    if let Some(telemetry) = template.telemetry() {
        // A path ships only as a service's log file.
        let log_files: Vec<String> = template
            .apps()
            .iter()
            .flat_map(|a| a.services.iter())
            .map(|s| {
                s.log
                    .clone()
                    .unwrap_or_else(|| format!("/var/log/orgo/{}.log", s.name))
            })
            .collect();
        for (i, entry) in telemetry.logs.iter().enumerate() {
            if entry.starts_with('/') && !log_files.contains(entry) {
                refuse(
                    format!("telemetry.logs[{i}]"),
                    &format!(
                        "`{entry}` is no service's log file; this runtime ships services' logs (name the service, or its `log` file)"
                    ),
                );
            }
        }
    }
    if let (Some(_), Some(why)) = (template.egress_policy(), &network) {
        refuse("egress_policy".into(), why);
    }
    if let Some(desktop) = template.desktop()
        && !matches!(desktop.wallpaper.scheme(), "http" | "https" | "file")
    {
        refuse(
            "desktop.wallpaper".into(),
            "the local runtime fetches a wallpaper over http, https or file only",
        );
    }
    out
}

/// Whether a template's `region` runs on a host serving `here`.
fn region_matches(region: Region, here: &str) -> bool {
    match region {
        Region::AutoUs => matches!(here, "auto-us" | "iad" | "sjc" | "lax"),
        named => named.as_str() == here,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn telemetry_ships_services_logs_only() {
        let template = Template::from_yaml(
            r#"
api_version: orgo.ai/v1
name: t@1.0.0
apps:
  - name: a
    services:
      - { name: web, run: "sleep 1" }
      - { name: api, run: "sleep 1", log: /srv/api.log }
telemetry:
  logs: [web, /var/log/orgo/web.log, /srv/api.log, /var/log/syslog]
  otel_endpoint: http://127.0.0.1:4318
"#,
        )
        .unwrap();
        let refused = unsupported(&template, &HostFacts::default());
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "telemetry.logs[3]");
        assert!(refused[0].missing.contains("`/var/log/syslog`"));
    }

    #[test]
    fn restart_vm_is_refused_only_by_a_detached_launch() {
        let template = Template::from_yaml(
            r#"
api_version: orgo.ai/v1
name: t@1.0.0
apps:
  - name: a
    services: [{ name: a, run: "sleep 1" }]
    health: { type: process, process: a, on_fail: alert }
  - name: b
    services: [{ name: b, run: "sleep 1" }]
    health: { type: process, process: b, on_fail: restart_vm }
"#,
        )
        .unwrap();
        for (detached, refused) in [(false, vec![]), (true, vec!["apps[1].health.on_fail"])] {
            let host = HostFacts {
                detached,
                ..HostFacts::default()
            };
            let fields: Vec<String> = unsupported(&template, &host)
                .into_iter()
                .map(|u| u.field)
                .collect();
            assert_eq!(fields, refused, "detached: {detached}");
        }
        // A launch from a checkpoint (a fork) refuses it, detached or not.
        for detached in [false, true] {
            let host = HostFacts {
                detached,
                from_checkpoint: true,
                ..HostFacts::default()
            };
            let refused = unsupported(&template, &host);
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert_eq!(refused[0].field, "apps[1].health.on_fail");
            assert!(refused[0].missing.contains("checkpoint"), "{}", refused[0]);
        }
    }

    #[test]
    fn a_launch_from_a_checkpoint_takes_a_desktop() {
        for fields in [
            "hardware: { resolution: 800x600x24 }\n",
            "desktop: { wallpaper: \"file:///w.png\" }\n",
            "apps:\n  - name: a\n  - name: b\n    autostart: [{ run: xterm }]\n",
            "streaming: [{ name: s, url: \"rtmp://h/live\", key: k }]\n",
        ] {
            let template =
                Template::from_yaml(&format!("api_version: orgo.ai/v1\nname: t@1.0.0\n{fields}"))
                    .unwrap_or_else(|e| panic!("{fields}: {e}"));
            let from_checkpoint = HostFacts {
                from_checkpoint: true,
                ..HostFacts::default()
            };
            let refused = unsupported(&template, &from_checkpoint);
            assert!(refused.is_empty(), "{fields}: {refused:?}");
        }
    }
}
