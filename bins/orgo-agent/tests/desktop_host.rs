//! The agent's computer-use actions on the host, without a VM: an agent in
//! a sandbox drives a real X server (`Xvfb`, Debian's `xvfb`) in which
//! `xev` (Debian's `x11-utils`) records every event it receives.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_agent::{Agent, AgentConfig, Server};
use orgo_agent_protocol::{
    AgentMessage, DesktopSpec, ErrorCode, FrameReader, Input, MouseButton, Op, Point, Region,
    Reply, Request, ScrollDirection, encode,
};

const PATIENCE: Duration = Duration::from_secs(30);
const W: u32 = 320;
const H: u32 = 200;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Host {
    stream: UnixStream,
    frames: FrameReader<UnixStream>,
    next: u64,
}

impl Host {
    fn start(root: &std::path::Path) -> Host {
        let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(root))));
        let (host, guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let writer = guest.try_clone().unwrap();
            server.serve(guest, Box::new(writer), false);
        });
        host.set_read_timeout(Some(PATIENCE)).unwrap();
        let frames = FrameReader::new(host.try_clone().unwrap());
        Host {
            stream: host,
            frames,
            next: 1,
        }
    }

    fn call(&mut self, op: Op) -> Reply {
        let id = self.next;
        self.next += 1;
        self.stream.write_all(&encode(&Request { id, op })).unwrap();
        loop {
            match self.frames.read::<AgentMessage>().unwrap().unwrap() {
                AgentMessage::Response { id: got, reply } if got == id => return reply,
                _ => {}
            }
        }
    }

    fn done(&mut self, op: Op) {
        match self.call(op) {
            Reply::Done => {}
            other => panic!("expected done, got {other:?}"),
        }
    }

    fn refused(&mut self, op: Op) -> (ErrorCode, String) {
        match self.call(op) {
            Reply::Error { code, message } => (code, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

fn at(x: u32, y: u32) -> Point {
    Point { x, y }
}

/// What `xev` has printed so far.
fn events(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn wait_for(log: &std::path::Path, what: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = events(log);
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "xev never printed `{what}`:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn actions_reach_an_x_client_and_screenshots_are_pngs_of_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let display = 90 + std::process::id() % 500;
    let _xvfb = Killed(
        Command::new("Xvfb")
            .arg(format!(":{display}"))
            .args(["-screen", "0", &format!("{W}x{H}x24"), "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs (Debian's `xvfb`; scripts/install-deps.sh installs it)"),
    );
    let mut host = Host::start(dir.path());

    // No desktop yet: every action is refused as such.
    let (code, _) = host.refused(Op::Screenshot { region: None });
    assert_eq!(code, ErrorCode::NoDesktop);
    let (code, _) = host.refused(Op::Input(Input::Move { to: at(1, 1) }));
    assert_eq!(code, ErrorCode::NoDesktop);

    // A size the server does not have is an error.
    let spec = |width| DesktopSpec {
        display,
        width,
        height: H,
        depth: 24,
        wallpaper: None,
        timeout_ms: Some(20_000),
    };
    let (code, message) = host.refused(Op::StartDesktop(spec(W + 1)));
    assert_eq!(code, ErrorCode::Io, "{message}");
    assert!(message.contains(&format!("{W}x{H}")), "{message}");
    host.done(Op::StartDesktop(spec(W)));

    // xev's window at the top left (no window manager), its events logged.
    let log = dir.path().join("xev.log");
    let _xev = Killed(
        Command::new("stdbuf")
            .args(["-oL", "xev", "-geometry", "200x150+0+0"])
            .env("DISPLAY", format!(":{display}"))
            .env("LANG", "C.UTF-8")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("xev runs (Debian's `x11-utils`)"),
    );
    wait_for(&log, "MapNotify");

    // Screenshots: the whole screen and a region, as PNGs of those sizes.
    for (region, size) in [
        (None, (W, H)),
        (
            Some(Region {
                x: 10,
                y: 20,
                width: 30,
                height: 40,
            }),
            (30, 40),
        ),
    ] {
        let Reply::Screenshot { png, width, height } = host.call(Op::Screenshot { region }) else {
            panic!("expected a screenshot");
        };
        assert_eq!((width, height), size);
        let reader = png::Decoder::new(std::io::Cursor::new(png.0))
            .read_info()
            .unwrap();
        assert_eq!((reader.info().width, reader.info().height), size);
    }
    let (code, message) = host.refused(Op::Screenshot {
        region: Some(Region {
            x: W - 5,
            y: 0,
            width: 10,
            height: 10,
        }),
    });
    assert_eq!(code, ErrorCode::BadRequest, "{message}");

    // Pointer: a move, then the cursor is there.
    host.done(Op::Input(Input::Move { to: at(50, 60) }));
    assert_eq!(host.call(Op::Cursor), Reply::Cursor { x: 50, y: 60 });
    wait_for(&log, "(50,60)");

    // Clicks: left at a point, a right double click.
    host.done(Op::Input(Input::Click {
        at: at(30, 40),
        button: MouseButton::Left,
        double: false,
    }));
    wait_for(&log, "button 1, same_screen YES");
    host.done(Op::Input(Input::Click {
        at: at(31, 41),
        button: MouseButton::Right,
        double: true,
    }));
    let text = wait_for(&log, "button 3, same_screen YES");
    let right_presses = text
        .split("ButtonPress")
        .filter(|e| e.contains("button 3,"))
        .count();
    // Each press is followed by its release; wait for both releases.
    let deadline = Instant::now() + PATIENCE;
    let mut presses = right_presses;
    while presses < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        presses = events(&log)
            .split("ButtonPress")
            .filter(|e| e.contains("button 3,"))
            .count();
    }
    assert_eq!(presses, 2, "a double click is two presses");

    // Scroll: three notches down, at a point.
    host.done(Op::Input(Input::Scroll {
        direction: ScrollDirection::Down,
        amount: 3,
        at: Some(at(20, 20)),
    }));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let downs = events(&log)
            .split("ButtonPress")
            .filter(|e| e.contains("button 5,"))
            .count();
        if downs == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{downs} scroll notches seen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Drag: pressed at one point, moved with the button held, released at
    // the other.
    host.done(Op::Input(Input::Drag {
        from: at(10, 10),
        to: at(100, 80),
        button: MouseButton::Left,
    }));
    let text = wait_for(&log, "root:(100,80),\n    state 0x100, button 1");
    assert!(
        text.contains("state 0x100, is_hint"),
        "motion with button 1 held:\n{text}"
    );

    // Keys: a combination, and text with characters no US key gives.
    host.done(Op::Input(Input::Key {
        combo: "ctrl+shift+t".into(),
    }));
    wait_for(&log, "keysym 0xffe3, Control_L");
    host.done(Op::Input(Input::Type {
        text: "héllo Жx".into(),
    }));
    let text = wait_for(&log, "keysym 0x78, x");
    assert!(text.contains("keysym 0xe9, eacute"), "{text}");
    assert!(text.contains("keysym 0x1000416"), "{text}");
    assert!(text.contains("\"é\""), "typed as é:\n{text}");

    // Off the screen is an error, not a clamp; so are bad keys and amounts.
    for bad in [
        Input::Click {
            at: at(W, 0),
            button: MouseButton::Left,
            double: false,
        },
        Input::Move { to: at(0, H) },
        Input::Key {
            combo: "ctrl+nosuchkey".into(),
        },
        Input::Scroll {
            direction: ScrollDirection::Up,
            amount: 0,
            at: None,
        },
    ] {
        let (code, message) = host.refused(Op::Input(bad.clone()));
        assert_eq!(code, ErrorCode::BadRequest, "{bad:?}: {message}");
    }
    let (_, message) = host.refused(Op::Input(Input::Move { to: at(0, H) }));
    assert!(
        message.contains(&format!("off the {W}x{H} screen")),
        "{message}"
    );
}
