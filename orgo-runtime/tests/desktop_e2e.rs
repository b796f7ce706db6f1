//! The desktop under QEMU (TCG): a 1024x768x24 template with a solid-colour
//! wallpaper and two autostarted windows (an `xterm` running `cat > FILE`,
//! and `xev` logging what it receives) builds on the desktop image and
//! launches; screenshots, typing, keys, clicks, scroll and drag reach the
//! guest's X server through the agent; a VNC client that this project did
//! not write (`vncdotool`, from PyPI) captures a frame; a tone played on
//! the desktop's sound server is heard on its null sink's monitor; streams
//! reach an RTMP receiver, by autostart and by hand. One template is built
//! per process, shared by the tests. (A headless computer's refusals are in
//! `desktop_fake.rs`, over the fake VMM.)

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{desktop, nonce, test_runtime, workspace};
use orgo_runtime::{
    Computer, Exec, LaunchOptions, MouseButton, Region, Runtime, RuntimeError, ScrollDirection,
    StreamState,
};
use orgo_template::Template;

const T: Duration = Duration::from_secs(120);
/// How long [`wait_for`] polls. An autostarted `xterm` under TCG, with two
/// other desktops restoring beside it, once took over 120 s to map its
/// window (created, 1x1, unmapped until then): a bound, not a measure.
const PATIENCE: Duration = Duration::from_secs(300);
/// The wallpaper's colour.
const COLOUR: [u8; 3] = [0x33, 0x66, 0x99];
const W: u32 = 1024;
const H: u32 = 768;

static NONCE: LazyLock<String> = LazyLock::new(nonce);

/// The secret key of the `auto` stream, given at launch only.
const STREAM_KEY: &str = "sk-live-5f0c2e9b7a41";

/// The RTMP receivers run in a test network namespace of their own
/// ([`RTMP_NS`], reached through the veth `ot-r0`): a computer reaches no
/// address of this host (its own network denies them), so a receiver on
/// the host would be out of its reach. This is their address as the guest
/// sees it.
const HOST_FROM_GUEST: &str = "10.98.0.2";
/// The receivers' namespace, and this host's end of its veth.
const RTMP_NS: &str = "orgotest-rtmp";
const RTMP_VETH: &str = "ot-r0";

/// The receivers' namespace, made for the streaming test and removed when
/// dropped.
struct RtmpNet;

impl RtmpNet {
    fn up() -> RtmpNet {
        RtmpNet::down();
        let script = format!(
            "ip netns add {RTMP_NS} && ip link add {RTMP_VETH} type veth peer name ot-r1 netns {RTMP_NS} \
             && ip addr add 10.98.0.1/24 dev {RTMP_VETH} && ip link set {RTMP_VETH} up \
             && ip -n {RTMP_NS} link set lo up && ip -n {RTMP_NS} addr add {HOST_FROM_GUEST}/24 dev ot-r1 \
             && ip -n {RTMP_NS} link set ot-r1 up && ip -n {RTMP_NS} route add default via 10.98.0.1"
        );
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(ok.success(), "the receivers' namespace: `{script}`");
        RtmpNet
    }

    fn down() {
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("ip link del {RTMP_VETH} 2>/dev/null; ip netns del {RTMP_NS} 2>/dev/null"),
            ])
            .status();
    }
}

impl Drop for RtmpNet {
    fn drop(&mut self) {
        RtmpNet::down();
    }
}

/// Two free loopback ports for this process's RTMP receivers: the `auto`
/// stream's and the `manual` one's.
static RECEIVER_PORTS: LazyLock<(u16, u16)> = LazyLock::new(|| {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
});

/// A 16x16 PNG of [`COLOUR`], at one path for every run.
static WALLPAPER: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = workspace().join("target/orgo-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wallpaper.png");
    let tmp = dir.join(format!("wallpaper.png.{}", std::process::id()));
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, 16, 16);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&COLOUR.repeat(16 * 16)).unwrap();
    }
    std::fs::write(&tmp, png).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
});

/// The desktop template: an `xterm` autostarted at once, and a recorder
/// 1 s after.
fn desktop_template() -> Template {
    Template::from_yaml(&format!(
        r#"api_version: orgo.ai/v1
template: {{ name: desktop-e2e, version: 1.0.0, description: "run {nonce}" }}
hardware: {{ resolution: 1024x768x24, audio: true }}
desktop: {{ wallpaper: "file://{wallpaper}" }}
apps:
  - name: desk
    autostart:
      - run: "xterm -T typed -geometry 60x8+0+0 -e sh -c 'cat > /tmp/typed.txt'"
      - run: "stdbuf -oL xev -name recorder -geometry 300x200+0+400 > /tmp/xev.log"
        delay: 1s
secrets: [{{ name: stream_key }}]
streaming:
  - {{ name: auto, url: "rtmp://{host}:{auto}/live", key: {{ secret: stream_key }}, autostart: true }}
  - {{ name: manual, url: "rtmp://{host}:{manual}/live", key: manual-key }}
"#,
        nonce = *NONCE,
        wallpaper = WALLPAPER.display(),
        host = HOST_FROM_GUEST,
        auto = RECEIVER_PORTS.0,
        manual = RECEIVER_PORTS.1,
    ))
    .unwrap()
}

/// Launch options with the stream's secret key.
fn with_key() -> LaunchOptions {
    let mut values = std::collections::BTreeMap::new();
    values.insert("stream_key".to_owned(), STREAM_KEY.to_owned());
    LaunchOptions {
        vault: orgo_runtime::Vault::new().with(values),
        ..LaunchOptions::default()
    }
}

async fn sh(computer: &Computer, script: &str) -> String {
    let out = computer.exec(Exec::shell(script), T).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `script` until it prints something containing `what`, for up to
/// [`PATIENCE`].
async fn wait_for(computer: &Computer, script: &str, what: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = computer.exec(Exec::shell(script), T).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`{script}` never printed `{what}`: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A window's client area: (x, y, width, height), from `xwininfo`.
async fn window(computer: &Computer, name: &str) -> (u32, u32, u32, u32) {
    let text = desktop::wait_viewable(computer, name, PATIENCE).await;
    let field = |label: &str| -> u32 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        field("Absolute upper-left X:"),
        field("Absolute upper-left Y:"),
        field("Width:"),
        field("Height:"),
    )
}

/// A PNG's size and RGB pixels.
fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

async fn launch(runtime: &Runtime, template: &Template) -> Computer {
    runtime
        .launch(template, with_key(), &mut |e| eprintln!("{e:?}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_desktop_shows_its_wallpaper_and_takes_typing_keys_clicks_scroll_and_drag() {
    let runtime = test_runtime().await;
    let template = desktop_template();
    let computer = launch(&runtime, &template).await;
    // A window opened as the launch returns, while the window manager the
    // launch started may still be starting, is managed too (openbox once
    // left such a window unmapped for good: see `desktop.rs`).
    desktop::open_window(&computer, "early", "20x2+0+300").await;

    let terminal = window(&computer, "typed").await;
    let recorder = window(&computer, "recorder").await;
    window(&computer, "early").await;

    // The screenshot: a PNG of exactly the template's size, the wallpaper's
    // colour wherever no window is (right of both windows and their frames).
    let shot = computer.screenshot(None).await.unwrap();
    let (w, h, rgb) = decode(&shot.png);
    assert_eq!((w, h, shot.width, shot.height), (W, H, W, H));
    let right_of_windows = (terminal.0 + terminal.2).max(recorder.0 + recorder.2) + 16;
    let mut wrong = 0;
    for y in 0..H {
        for x in right_of_windows..W {
            let i = ((y * W + x) * 3) as usize;
            if rgb[i..i + 3] != COLOUR {
                wrong += 1;
            }
        }
    }
    assert_eq!(
        wrong, 0,
        "pixels right of x={right_of_windows} not the wallpaper"
    );
    // A region.
    let part = computer
        .screenshot(Some(Region {
            x: W - 100,
            y: H - 50,
            width: 100,
            height: 50,
        }))
        .await
        .unwrap();
    let (pw, ph, prgb) = decode(&part.png);
    assert_eq!((pw, ph), (100, 50));
    assert_eq!(&prgb[..3], &COLOUR);

    // A click on the recorder focuses it; a click on the terminal takes the
    // focus back, and what is typed then reaches the terminal alone.
    let centre = |(x, y, w, h): (u32, u32, u32, u32)| (x + w / 2, y + h / 2);
    let (rx, ry) = centre(recorder);
    computer
        .click(rx, ry, MouseButton::Left, false)
        .await
        .unwrap();
    wait_for(&computer, "cat /tmp/xev.log", "FocusIn").await;
    let (tx, ty) = centre(terminal);
    computer
        .click(tx, ty, MouseButton::Left, false)
        .await
        .unwrap();
    wait_for(&computer, "cat /tmp/xev.log", "FocusOut").await;
    assert_eq!(computer.cursor().await.unwrap(), (tx, ty));
    computer.type_text("héllo wörld").await.unwrap();
    computer.key("Return").await.unwrap();
    let typed = wait_for(&computer, "cat /tmp/typed.txt", "\n").await;
    assert_eq!(typed, "héllo wörld\n");
    let log = sh(&computer, "cat /tmp/xev.log").await;
    assert!(
        !log.contains("KeyPress"),
        "the recorder had no focus:\n{log}"
    );

    // Scroll and drag on the recorder, which logs what it receives.
    computer
        .scroll(ScrollDirection::Down, 3, Some((rx, ry)))
        .await
        .unwrap();
    let deadline = Instant::now() + T;
    loop {
        let log = sh(&computer, "cat /tmp/xev.log").await;
        let notches = log
            .split("ButtonPress")
            .filter(|e| e.contains("button 5,"))
            .count();
        if notches == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{notches} of 3 notches:\n{log}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (x0, y0) = (recorder.0 + 10, recorder.1 + 10);
    let (x1, y1) = (recorder.0 + 200, recorder.1 + 150);
    computer
        .drag((x0, y0), (x1, y1), MouseButton::Left)
        .await
        .unwrap();
    let log = wait_for(
        &computer,
        "cat /tmp/xev.log",
        &format!("root:({x1},{y1}),\n    state 0x100, button 1"),
    )
    .await;
    assert!(
        log.contains(&format!("root:({x0},{y0}),\n    state 0x0, button 1")),
        "pressed at the start:\n{log}"
    );
    assert!(
        log.contains("state 0x100, is_hint"),
        "moved with the button held"
    );

    // Sound: a tone played into the default sink is heard on its monitor
    // (listened to in 2 s windows until it is, or 20 windows: a loaded
    // host may start the player late).
    let heard = sh(
        &computer,
        &format!(
            "export PULSE_SERVER={}\n\
             for _ in $(seq 150); do [ -S /tmp/orgo-pulse/native ] && break; sleep 0.2; done\n\
             ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi -i sine=frequency=440:duration=120 -f pulse default &\n\
             player=$!\n\
             for _ in $(seq 20); do\n\
               level=$(ffmpeg -hide_banner -nostdin -f pulse -i orgo.monitor -t 2 -af volumedetect -f null - 2>&1 | grep max_volume)\n\
               db=$(echo \"$level\" | sed 's/.*max_volume: *\\(-*[0-9.]*\\) dB.*/\\1/')\n\
               awk -v d=\"$db\" 'BEGIN {{ exit !(d > -30) }}' && break\n\
             done\n\
             kill $player; wait\n\
             echo \"$level\"",
            orgo_runtime::PULSE_SERVER
        ),
    )
    .await;
    let db: f64 = heard
        .split("max_volume:")
        .nth(1)
        .and_then(|rest| rest.trim().strip_suffix("dB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no level in {heard}"));
    assert!(db > -30.0, "the monitor hears the tone: {heard}");

    // Off the screen is an error, not a clamp.
    match computer.click(W, 0, MouseButton::Left, false).await {
        Err(RuntimeError::Action { action, message }) => {
            assert_eq!(action, "click");
            assert!(message.contains("off the 1024x768 screen"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    computer.stop().await.unwrap();
}

/// `vncdotool` in a virtual environment under `target/` (made once).
fn vncdo() -> PathBuf {
    let venv = workspace().join("target/vncdotool-venv");
    let bin = venv.join("bin/vncdo");
    if !bin.exists() {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv");
        let ok = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "vncdotool==1.2.0"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install vncdotool");
    }
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vnc_client_not_written_here_captures_a_frame_of_the_same_size() {
    let vncdo = tokio::task::spawn_blocking(vncdo).await.unwrap();
    let runtime = test_runtime().await;
    let computer = launch(&runtime, &desktop_template()).await;
    // The runtime forwards the desktop's VNC port to the host, as `orgo vnc`
    // prints it.
    let vnc = computer
        .ports()
        .iter()
        .find(|p| p.internal == orgo_runtime::VNC_PORT)
        .expect("the desktop's VNC port is forwarded")
        .address;
    let out = tempfile::tempdir().unwrap();
    let frame = out.path().join("frame.png");
    let status = tokio::process::Command::new(&vncdo)
        .arg("-s")
        .arg(format!("{}::{}", vnc.ip(), vnc.port()))
        .arg("capture")
        .arg(&frame)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "vncdo capture");
    // vncdotool writes RGB or RGBA; only the size matters here.
    let reader = png::Decoder::new(std::io::Cursor::new(std::fs::read(&frame).unwrap()))
        .read_info()
        .unwrap();
    assert_eq!((reader.info().width, reader.info().height), (W, H));
    computer.stop().await.unwrap();
}

/// An RTMP receiver in [`RTMP_NS`] (`ffmpeg -listen 1`), recording the first
/// seconds of what arrives at `port` into `out`.
fn receiver(port: u16, key: &str, out: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", RTMP_NS, "ffmpeg"])
        .args(["-y", "-loglevel", "error", "-listen", "1", "-i"])
        .arg(format!("rtmp://{HOST_FROM_GUEST}:{port}/live/{key}"))
        .args(["-t", "3", "-c", "copy"])
        .arg(out)
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (Debian's `ffmpeg`; scripts/install-deps.sh installs it)")
}

/// `WIDTHxHEIGHT` of the first video stream of `file`, by `ffprobe`.
fn probe(file: &std::path::Path) -> String {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=s=x:p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn received(mut rx: tokio::process::Child, file: &std::path::Path) {
    let status = tokio::time::timeout(Duration::from_secs(300), rx.wait())
        .await
        .expect("the stream arrived within 5 minutes")
        .unwrap();
    assert!(status.success(), "the receiver failed");
    assert_eq!(probe(file), format!("{W}x{H}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_reach_an_rtmp_receiver_by_autostart_and_by_hand_and_the_key_is_not_baked() {
    let _net = RtmpNet::up();
    let out = tempfile::tempdir().unwrap();
    let (auto_port, manual_port) = *RECEIVER_PORTS;
    let auto_file = out.path().join("auto.flv");
    let auto_rx = receiver(auto_port, STREAM_KEY, &auto_file);
    let runtime = test_runtime().await;
    let template = desktop_template();
    let computer = launch(&runtime, &template).await;

    // `auto` streams from the launch on.
    received(auto_rx, &auto_file).await;
    // The receiver hung up: the stream retries, and its status says so.
    let deadline = Instant::now() + T;
    loop {
        let status = computer.stream_status("auto").await.unwrap();
        if status.restarts >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no retry: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `manual` waits to be started by hand; then streams; then stops.
    let manual = computer.stream_status("manual").await.unwrap();
    assert_eq!(manual.state, StreamState::Stopped);
    let manual_file = out.path().join("manual.flv");
    let manual_rx = receiver(manual_port, "manual-key", &manual_file);
    computer
        .stream_start("manual", &orgo_runtime::Vault::new())
        .await
        .unwrap();
    assert_ne!(
        computer.stream_status("manual").await.unwrap().state,
        StreamState::Stopped
    );
    received(manual_rx, &manual_file).await;
    computer.stream_stop("manual").await.unwrap();
    computer.stream_stop("auto").await.unwrap();
    assert_eq!(
        computer.stream_status("auto").await.unwrap().state,
        StreamState::Stopped
    );
    assert!(matches!(
        computer.stream_status("nope").await,
        Err(RuntimeError::NotFound { .. })
    ));

    // The secret key is in no file of the golden snapshot.
    let built = runtime.build(&template, &mut |_| {}).await.unwrap();
    assert!(!built.manifest.blobs.is_empty());
    for (role, blob) in &built.manifest.blobs {
        let path = runtime.store().blob_path(&blob.digest);
        let found = std::process::Command::new("grep")
            .args(["-F", "-a", "-q", STREAM_KEY])
            .arg(&path)
            .status()
            .unwrap();
        assert_eq!(
            found.code(),
            Some(1),
            "the key is in the snapshot's `{role}`"
        );
    }
    computer.stop().await.unwrap();
}
