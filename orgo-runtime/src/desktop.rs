//! The desktop (pure): which templates get one, and what it is as agent
//! requests.
//!
//! **The rule.** A template has a desktop when it sets
//! `hardware.resolution` (sugar `display`), `desktop.wallpaper` (sugar
//! `wallpaper`), any `apps[].autostart`, or any `streaming` entry. Its
//! resolution is `hardware.resolution`, else [`DEFAULT_RESOLUTION`]. Other
//! templates are headless: their steps, base image and digests are what
//! they were before the desktop existed.
//!
//! **The stack**, from the desktop image (see
//! [`DesktopImageRecipe`](crate::DesktopImageRecipe)), as supervised
//! services (restarted if they exit):
//!
//! | service | what |
//! |---|---|
//! | `desktop:x` | TigerVNC's `Xvnc` on display `:0` at the template's resolution and depth; it serves VNC itself on port [`VNC_PORT`] (no password: reach it through the host's forwarding only) |
//! | `desktop:wm` | the `openbox` window manager (click to focus), as user `orgo`, started at launch; once it runs, it marks the root window ([`WM_READY`]) |
//! | `desktop:novnc` | `websockify` serving noVNC on port [`NOVNC_PORT`] (`/vnc.html`) |
//! | `desktop:audio` | with `hardware.audio: true`: PulseAudio, as user `orgo`, with one null sink `orgo` (the default sink) whose monitor `orgo.monitor` captures what is played; clients reach it at [`PULSE_SERVER`] (set for every desktop service, autostart entry and stream) |
//! | `apps[i].autostart[j]` | each autostart entry, as user `orgo`, once the window manager runs (up to 30 s), then after its `delay` |
//! | `stream:NAME` | a stream of `streaming[]` (see `streams`): the screen, and the sink's monitor with `hardware.audio` |
//!
//! **When.** The build starts the X server and noVNC, downloads the
//! wallpaper (http, https or file, as `files[]` are) to [`WALLPAPER_PATH`]
//! and sets it, all before the golden snapshot: a launch restores a running
//! display showing the wallpaper. Every launch sets the wallpaper again
//! (restores included; in the background) and starts the window manager:
//! an `openbox` restored from the snapshot stopped managing new windows
//! (its map requests never reached it; seen under QEMU TCG), while one
//! started after the restore works, and starts in well under a second.
//! Autostart entries run on every launch, never at build time: each
//! computer's first boot is its launch, and each computer starts its own,
//! `delay` after its window manager runs.
//!
//! **Openbox's startup.** `openbox` (3.6.1) selects the root window's
//! redirects early in its startup, then loads its configuration and theme
//! (seconds under QEMU TCG) before its main loop. A window mapped meanwhile
//! sends openbox a map request that its startup's round trips read into
//! Xlib's queue, and its main loop, which waits on the connection only,
//! does not see it until another event arrives: on an idle desktop the
//! window stayed an unmapped 1x1 window for good (an `xterm` started with
//! the launch, three times out of three; any later event, such as a root
//! property set, got it managed at once). So openbox runs
//! `--startup` a command that sets [`WM_READY`] on the root window: openbox
//! runs it just before its main loop, and the property's change is the
//! event that wakes the loop for what was queued. Autostart entries wait
//! for the mark, so their windows are mapped once openbox manages them.

use std::collections::BTreeMap;

use orgo_agent_protocol::{Backoff, DesktopSpec, RestartPolicy, ServiceSpec};
use orgo_template::{Autostart, Resolution, Template};
use url::Url;

/// The desktop session's user: the base image's default user (uid 1000).
const SESSION_USER: &str = "orgo";
/// Its home.
const SESSION_HOME: &str = "/home/orgo";

/// The X display the desktop is on (`:0`).
pub(crate) const DISPLAY: u32 = 0;
/// The guest port of VNC (Xvnc's own server).
pub const VNC_PORT: u16 = 5900;
/// The guest port of noVNC (websockify).
pub const NOVNC_PORT: u16 = 6080;
/// The sound server's socket, as clients name it (`PULSE_SERVER`).
pub const PULSE_SERVER: &str = "unix:/tmp/orgo-pulse/native";
/// Where the wallpaper is downloaded to in the guest.
pub(crate) const WALLPAPER_PATH: &str = "/var/lib/orgo/wallpaper";
/// The resolution of a desktop whose template sets none: 1280x800x24.
pub const DEFAULT_RESOLUTION: (u32, u32, u32) = (1280, 800, 24);

/// The root window's property that the window manager sets once it runs
/// its main loop (see the module's docs); removed before it starts.
pub(crate) const WM_READY: &str = "_ORGO_WM_READY";

/// How long a build waits for the X server.
pub(crate) const BUILD_TIMEOUT_MS: u64 = 120_000;
/// How long a launch waits for it (it is restored running).
pub(crate) const LAUNCH_TIMEOUT_MS: u64 = 30_000;

/// A template's desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desktop {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) depth: u32,
    /// Where the wallpaper comes from, if the template sets one.
    pub(crate) wallpaper: Option<Url>,
    /// `(field, entry)` of every autostart entry.
    pub(crate) autostart: Vec<(String, Autostart)>,
    /// A sound server (`hardware.audio`).
    pub(crate) audio: bool,
}

/// The fields that give a template a desktop, for errors on headless ones.
pub const DESKTOP_FIELDS: &str = "`hardware.resolution` (`display`), `desktop.wallpaper` (`wallpaper`), `apps[].autostart` or `streaming`";

/// The first field that gives `template` a desktop ([`DESKTOP_FIELDS`]),
/// if one does: it has a desktop exactly then.
pub(crate) fn desktop_field(template: &Template) -> Option<String> {
    if template.hardware().resolution.is_some() {
        return Some("hardware.resolution".into());
    }
    if template.desktop().is_some() {
        return Some("desktop".into());
    }
    if let Some(i) = template.apps().iter().position(|a| !a.autostart.is_empty()) {
        return Some(format!("apps[{i}].autostart"));
    }
    (!template.streaming().is_empty()).then(|| "streaming".into())
}

/// `template`'s desktop, if it has one (see the module's rule).
pub(crate) fn plan(template: &Template) -> Option<Desktop> {
    let hw = template.hardware();
    let autostart: Vec<(String, Autostart)> = template
        .apps()
        .iter()
        .enumerate()
        .flat_map(|(i, app)| {
            app.autostart
                .iter()
                .enumerate()
                .map(move |(j, a)| (format!("apps[{i}].autostart[{j}]"), a.clone()))
        })
        .collect();
    desktop_field(template)?;
    let (width, height, depth) = hw.resolution.map_or(DEFAULT_RESOLUTION, |r: Resolution| {
        (r.width, r.height, r.depth)
    });
    Some(Desktop {
        width,
        height,
        depth,
        wallpaper: template.desktop().map(|d| d.wallpaper.clone()),
        autostart,
        audio: hw.audio,
    })
}

impl Desktop {
    /// What the display is, for the agent; with `wallpaper`, the agent
    /// sets it (and waits for it).
    pub(crate) fn spec(&self, timeout_ms: u64, wallpaper: bool) -> DesktopSpec {
        DesktopSpec {
            display: DISPLAY,
            width: self.width,
            height: self.height,
            depth: self.depth,
            wallpaper: self
                .wallpaper
                .as_ref()
                .filter(|_| wallpaper)
                .map(|_| WALLPAPER_PATH.to_owned()),
            timeout_ms: Some(timeout_ms),
        }
    }

    /// What a launch starts in the session: the window manager, and the
    /// wallpaper set again (`hsetroot`, in the background: the restored
    /// screen shows it already).
    pub(crate) fn session_services(&self) -> Vec<ServiceSpec> {
        let mut out = vec![session_service(
            "desktop:wm",
            &format!(
                "{}\nxprop -root -remove {WM_READY} 2>/dev/null\n\
                 exec openbox --startup 'xprop -root -f {WM_READY} 32c -set {WM_READY} 1'",
                wait_for_x()
            ),
            RestartPolicy::Always,
        )];
        if self.audio {
            out.push(session_service(
                "desktop:audio",
                "mkdir -p /tmp/orgo-pulse\n\
                 exec pulseaudio --daemonize=no --exit-idle-time=-1 --system=no -n \
                 --load='module-null-sink sink_name=orgo' \
                 --load='module-native-protocol-unix socket=/tmp/orgo-pulse/native auth-anonymous=1'",
                RestartPolicy::Always,
            ));
        }
        if self.wallpaper.is_some() {
            out.push(session_service(
                "desktop:wallpaper",
                &format!("exec hsetroot -fill {WALLPAPER_PATH}"),
                RestartPolicy::No,
            ));
        }
        out
    }

    /// The autostart entries as services (each `delay` after the window
    /// manager runs), with their fields.
    pub(crate) fn autostart_services(&self) -> Vec<(String, ServiceSpec)> {
        self.autostart
            .iter()
            .map(|(field, entry)| {
                let ms = entry.delay.as_millis();
                let run = format!(
                    "{}\nsleep {}.{:03}\n{}",
                    wait_for_wm(),
                    ms / 1000,
                    ms % 1000,
                    entry.run
                );
                (
                    field.clone(),
                    session_service(field, &run, RestartPolicy::No),
                )
            })
            .collect()
    }

    /// What the build starts: the X server and noVNC.
    pub(crate) fn services(&self) -> Vec<ServiceSpec> {
        let x = ServiceSpec {
            log: Some("/var/log/orgo-desktop-x.log".into()),
            user: None,
            ..session_service(
                "desktop:x",
                &format!(
                    "exec Xvnc :{DISPLAY} -geometry {}x{} -depth {} -rfbport {VNC_PORT} \
                     -SecurityTypes None -AlwaysShared -desktop orgo -nolisten tcp",
                    self.width, self.height, self.depth
                ),
                RestartPolicy::Always,
            )
        };
        let novnc = session_service(
            "desktop:novnc",
            &format!("exec websockify --web /usr/share/novnc {NOVNC_PORT} localhost:{VNC_PORT}"),
            RestartPolicy::Always,
        );
        vec![x, novnc]
    }
}

/// The service name of stream `name`.
pub(crate) fn stream_service_name(name: &str) -> String {
    format!("stream:{name}")
}

impl Desktop {
    /// The service that streams the screen to `url` (with `key` appended
    /// as the RTMP stream name): `ffmpeg -f x11grab` to FLV over RTMP(S),
    /// H.264 (`ultrafast`, `zerolatency`), 10 frames a second. The target is
    /// in the service's environment only (never on its command line or in
    /// a log): it is given at launch, never at build time. It exits when
    /// the connection drops and is started again with backoff (1 s,
    /// doubling to 30 s).
    pub(crate) fn stream_service(&self, name: &str, url: &Url, key: Option<&str>) -> ServiceSpec {
        let target = match key {
            Some(key) => format!("{}/{key}", url.as_str().trim_end_matches('/')),
            None => url.to_string(),
        };
        let (audio_in, audio_out) = if self.audio {
            ("-f pulse -i orgo.monitor ", "-c:a aac -b:a 128k ")
        } else {
            ("", "")
        };
        let run = format!(
            "{}\nexec ffmpeg -hide_banner -nostdin -loglevel error \
             -f x11grab -framerate 10 -video_size {}x{} -i :{DISPLAY} {audio_in}\
             -c:v libx264 -preset ultrafast -tune zerolatency -pix_fmt yuv420p -g 20 {audio_out}\
             -f flv \"$ORGO_STREAM_TARGET\"",
            wait_for_x(),
            self.width,
            self.height
        );
        let mut spec = session_service(&stream_service_name(name), &run, RestartPolicy::Always);
        spec.env.insert("ORGO_STREAM_TARGET".into(), target);
        spec.backoff = Backoff {
            initial_ms: 1_000,
            max_ms: 30_000,
            reset_after_ms: 10_000,
        };
        spec
    }
}

/// A shell loop that waits (up to 30 s) for the X server's socket.
fn wait_for_x() -> String {
    format!("for _ in $(seq 300); do [ -S /tmp/.X11-unix/X{DISPLAY} ] && break; sleep 0.1; done")
}

/// A shell loop that waits (up to 30 s) for the window manager's mark,
/// [`WM_READY`]; past that, what follows starts anyway (a window then
/// shows unmanaged, or once a window manager comes).
fn wait_for_wm() -> String {
    format!(
        "{}\nfor _ in $(seq 300); do xprop -root {WM_READY} 2>/dev/null | grep -q ' = ' && break; sleep 0.1; done",
        wait_for_x()
    )
}

/// A service in the desktop session: user `orgo` in its home, `DISPLAY`
/// set.
pub(crate) fn session_service(name: &str, run: &str, restart: RestartPolicy) -> ServiceSpec {
    let mut env = BTreeMap::new();
    env.insert("DISPLAY".to_owned(), format!(":{DISPLAY}"));
    env.insert("HOME".to_owned(), SESSION_HOME.to_owned());
    env.insert("PULSE_SERVER".to_owned(), PULSE_SERVER.to_owned());
    ServiceSpec {
        name: name.to_owned(),
        run: run.to_owned(),
        cwd: Some(SESSION_HOME.to_owned()),
        user: Some(SESSION_USER.to_owned()),
        env,
        restart,
        stop_signal: "TERM".to_owned(),
        stop_timeout_ms: Some(5_000),
        log: None,
        backoff: Backoff {
            initial_ms: 500,
            max_ms: 30_000,
            reset_after_ms: 10_000,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(extra: &str) -> Template {
        Template::from_yaml(&format!(
            "api_version: orgo.ai/v1\ntemplate: {{ name: t, version: 1.0.0 }}\n{extra}"
        ))
        .expect("a valid template")
    }

    #[test]
    fn the_rule_for_which_templates_get_a_desktop() {
        for (extra, desktop) in [
            ("", false),
            ("hardware: { cpu: 2, audio: false }\n", false),
            ("display: 1024x768\n", true),
            ("hardware: { resolution: 800x600x16 }\n", true),
            ("wallpaper: https://example.com/w.png\n", true),
            (
                "apps: [{ name: a, autostart: [{ run: xterm, delay: 2s }] }]\n",
                true,
            ),
            ("apps: [{ name: a }]\n", false),
            (
                "streaming: [{ name: live, url: rtmp://example.com/app }]\n",
                true,
            ),
        ] {
            assert_eq!(plan(&template(extra)).is_some(), desktop, "{extra}");
        }
        let d = plan(&template("display: 1024x768\n")).expect("a desktop");
        assert_eq!((d.width, d.height, d.depth), (1024, 768, 24));
        let d = plan(&template("wallpaper: https://example.com/w.png\n")).expect("a desktop");
        assert_eq!((d.width, d.height, d.depth), DEFAULT_RESOLUTION);
    }
}
