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
//! | `hardware.auto_stop_minutes` (other than 0), `triggers`, `telemetry`, `apps[].health.on_fail` `alert` and `restart_vm` | refused until the in-guest automation lands |
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

const AUTOMATION: &str = "this runtime does not run triggers, telemetry, alerts or auto-stop yet";

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
    if hw.auto_stop_minutes.is_some_and(|m| m > 0) {
        refuse("hardware.auto_stop_minutes".into(), AUTOMATION);
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
            && matches!(health.on_fail, OnFail::Alert | OnFail::RestartVm)
        {
            refuse(format!("apps[{i}].health.on_fail"), AUTOMATION);
        }
    }
    for i in 0..template.triggers().len() {
        refuse(format!("triggers[{i}]"), AUTOMATION);
    }
    if template.telemetry().is_some() {
        refuse("telemetry".into(), AUTOMATION);
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
