//! The desktop the agent drives, in-process over the X11 protocol
//! (`x11rb`, no helper process per action): screenshots by `GetImage` of
//! the root window, encoded as PNG; pointer and keyboard by XTEST; key
//! names in `xdotool`'s syntax ([`keys`]); characters no key gives are
//! mapped onto a spare keycode first, as `xdotool` does.
//!
//! The X server, the window manager and VNC are supervised services the
//! host starts; [`Op::StartDesktop`](orgo_agent_protocol::Op::StartDesktop)
//! then tells the agent which display to drive: it waits for the server,
//! checks its size, sets the wallpaper (`hsetroot -fill`), and from then on
//! serves the actions. Until then every action is refused with
//! [`ErrorCode::NoDesktop`].

mod keys;
mod pixels;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use orgo_agent_protocol::{
    Command, DesktopSpec, ErrorCode, Input, MouseButton, Point, Region, ScrollDirection,
};
use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use crate::agent::Agent;
use crate::exec::prepare;
use crate::files::OpError;

/// The longest text one `type` action takes (characters).
const MAX_TYPE_CHARS: usize = 65_536;
/// The most wheel notches one `scroll` action turns.
const MAX_SCROLL: u32 = 100;
/// Pointer moves between a drag's press and release.
const DRAG_STEPS: u32 = 8;
/// How long the wallpaper may take to set.
const WALLPAPER_TIMEOUT: Duration = Duration::from_secs(60);
/// The keysym of `Shift_L`.
const SHIFT: u32 = 0xffe1;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn x_error(what: &str, e: impl std::fmt::Display) -> OpError {
    OpError::new(ErrorCode::Io, format!("{what}: {e}"))
}

/// The agent's desktop: none until [`Desktop::start`].
#[derive(Default)]
pub(crate) struct Desktop {
    state: Mutex<Option<State>>,
}

struct State {
    spec: DesktopSpec,
    /// The connection; `None` after it failed (the next action reconnects).
    display: Option<Display>,
}

/// A connection to the X server and what the actions need of it.
struct Display {
    conn: RustConnection,
    root: xproto::Window,
    width: u32,
    height: u32,
    format: pixels::Format,
    /// Where the next remapped character goes among the spare keycodes.
    next_spare: usize,
}

impl Desktop {
    /// Drives the X display of `spec`: waits for it, checks its size, sets
    /// the wallpaper. Again on a running desktop (after a restore), it sets
    /// the wallpaper again.
    pub(crate) fn start(&self, agent: &Arc<Agent>, spec: DesktopSpec) -> Result<(), OpError> {
        if !matches!(spec.depth, 16 | 24 | 32) {
            return Err(OpError::new(
                ErrorCode::BadRequest,
                format!("depth `{}`: 16, 24 or 32 are served", spec.depth),
            ));
        }
        let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(60_000));
        let mut state = lock(&self.state);
        let reuse = state
            .as_mut()
            .filter(|s| s.spec.display == spec.display)
            .and_then(|s| s.display.take());
        let display = match reuse {
            Some(display) => display,
            None => Display::connect(spec.display, timeout)?,
        };
        if (display.width, display.height) != (spec.width, spec.height) {
            return Err(OpError::new(
                ErrorCode::Io,
                format!(
                    "the X server on `:{}` is {}x{}, not {}x{}",
                    spec.display, display.width, display.height, spec.width, spec.height
                ),
            ));
        }
        if let Some(wallpaper) = &spec.wallpaper {
            set_wallpaper(agent, spec.display, wallpaper)?;
        }
        *state = Some(State {
            spec,
            display: Some(display),
        });
        Ok(())
    }

    /// Runs `f` on the display, reconnecting first if the last action lost
    /// it; a failed connection is dropped, for the next action to reconnect.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Display) -> Result<T, ActionError>,
    ) -> Result<T, OpError> {
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or_else(|| {
            OpError::new(
                ErrorCode::NoDesktop,
                "this computer has no desktop (no display was started)",
            )
        })?;
        let display = match state.display.take() {
            Some(display) => display,
            None => Display::connect(state.spec.display, Duration::from_secs(5))?,
        };
        let mut display = display;
        match f(&mut display) {
            Ok(value) => {
                state.display = Some(display);
                Ok(value)
            }
            Err(ActionError::Refused(e)) => {
                state.display = Some(display);
                Err(e)
            }
            Err(ActionError::Connection(e)) => Err(e),
        }
    }

    /// A PNG of the screen, or of `region` of it: (png, width, height).
    pub(crate) fn screenshot(
        &self,
        region: Option<Region>,
    ) -> Result<(Vec<u8>, u32, u32), OpError> {
        self.with(|d| d.screenshot(region))
    }

    /// Carries out one input action.
    pub(crate) fn input(&self, input: &Input) -> Result<(), OpError> {
        self.with(|d| d.input(input))
    }

    /// Where the pointer is.
    pub(crate) fn cursor(&self) -> Result<(u32, u32), OpError> {
        self.with(|d| {
            let reply = d
                .conn
                .query_pointer(d.root)
                .map_err(conn_error)?
                .reply()
                .map_err(conn_error)?;
            Ok((
                u32::try_from(reply.root_x).unwrap_or(0),
                u32::try_from(reply.root_y).unwrap_or(0),
            ))
        })
    }
}

/// An action's failure: a refusal (bad input; the connection is kept) or
/// a broken connection (dropped).
enum ActionError {
    Refused(OpError),
    Connection(OpError),
}

fn conn_error(e: impl std::fmt::Display) -> ActionError {
    ActionError::Connection(x_error("the X connection failed", e))
}

fn refused(message: String) -> ActionError {
    ActionError::Refused(OpError::new(ErrorCode::BadRequest, message))
}

impl Display {
    /// Connects to display `:n`, trying until `timeout`.
    fn connect(n: u32, timeout: Duration) -> Result<Display, OpError> {
        let name = format!(":{n}");
        let started = Instant::now();
        let (conn, screen) = loop {
            match RustConnection::connect(Some(&name)) {
                Ok(found) => break found,
                Err(e) if started.elapsed() >= timeout => {
                    return Err(x_error(
                        &format!(
                            "cannot connect to the X server on `{name}` within {} ms",
                            timeout.as_millis()
                        ),
                        e,
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let setup = conn.setup();
        let screen = &setup.roots[screen];
        let format = pixels::Format::of(setup, screen)
            .map_err(|e| OpError::new(ErrorCode::Io, format!("the X server on `{name}`: {e}")))?;
        let (root, width, height) = (
            screen.root,
            u32::from(screen.width_in_pixels),
            u32::from(screen.height_in_pixels),
        );
        conn.extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)
            .map_err(|e| x_error("the X connection failed", e))?
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::Io,
                    format!("the X server on `{name}` has no XTEST extension"),
                )
            })?;
        Ok(Display {
            conn,
            root,
            width,
            height,
            format,
            next_spare: 0,
        })
    }

    fn check(&self, p: Point) -> Result<(), ActionError> {
        if p.x >= self.width || p.y >= self.height {
            return Err(refused(format!(
                "({}, {}) is off the {}x{} screen",
                p.x, p.y, self.width, self.height
            )));
        }
        Ok(())
    }

    fn screenshot(&mut self, region: Option<Region>) -> Result<(Vec<u8>, u32, u32), ActionError> {
        let r = region.unwrap_or(Region {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        });
        let fits = r.width > 0
            && r.height > 0
            && r.x.checked_add(r.width).is_some_and(|e| e <= self.width)
            && r.y.checked_add(r.height).is_some_and(|e| e <= self.height);
        if !fits {
            return Err(refused(format!(
                "region {}x{} at ({}, {}) is not within the {}x{} screen",
                r.width, r.height, r.x, r.y, self.width, self.height
            )));
        }
        let small = |v: u32| i16::try_from(v).expect("checked against the screen");
        let image = self
            .conn
            .get_image(
                xproto::ImageFormat::Z_PIXMAP,
                self.root,
                small(r.x),
                small(r.y),
                u16::try_from(r.width).expect("checked against the screen"),
                u16::try_from(r.height).expect("checked against the screen"),
                !0,
            )
            .map_err(conn_error)?
            .reply()
            .map_err(conn_error)?;
        let rgb = self
            .format
            .to_rgb(&image.data, r.width, r.height)
            .map_err(|e| ActionError::Refused(OpError::new(ErrorCode::Io, e)))?;
        let png = pixels::encode_png(&rgb, r.width, r.height)
            .map_err(|e| ActionError::Refused(OpError::new(ErrorCode::Io, e)))?;
        // Base64 in a JSON frame: a third more, and some room.
        if png.len() as u64 * 4 / 3 + 4096 > u64::from(orgo_agent_protocol::MAX_FRAME_BYTES) {
            return Err(ActionError::Refused(OpError::new(
                ErrorCode::TooLarge,
                format!(
                    "the {}x{} screenshot is a {}-byte PNG, over what one reply carries; take regions",
                    r.width,
                    r.height,
                    png.len()
                ),
            )));
        }
        Ok((png, r.width, r.height))
    }

    fn fake(&self, kind: u8, detail: u8, at: Option<Point>) -> Result<(), ActionError> {
        let (x, y) = at.map_or((0, 0), |p| {
            (
                i16::try_from(p.x).expect("checked against the screen"),
                i16::try_from(p.y).expect("checked against the screen"),
            )
        });
        self.conn
            .xtest_fake_input(kind, detail, 0, self.root, x, y, 0)
            .map_err(conn_error)?;
        Ok(())
    }

    fn move_to(&self, p: Point) -> Result<(), ActionError> {
        self.fake(xproto::MOTION_NOTIFY_EVENT, 0, Some(p))
    }

    fn button(&self, button: u8, down: bool) -> Result<(), ActionError> {
        let kind = if down {
            xproto::BUTTON_PRESS_EVENT
        } else {
            xproto::BUTTON_RELEASE_EVENT
        };
        self.fake(kind, button, None)
    }

    fn key(&self, keycode: u8, down: bool) -> Result<(), ActionError> {
        let kind = if down {
            xproto::KEY_PRESS_EVENT
        } else {
            xproto::KEY_RELEASE_EVENT
        };
        self.fake(kind, keycode, None)
    }

    /// Waits until the server has processed everything sent.
    fn sync(&self) -> Result<(), ActionError> {
        self.conn
            .get_input_focus()
            .map_err(conn_error)?
            .reply()
            .map_err(conn_error)?;
        Ok(())
    }

    fn input(&mut self, input: &Input) -> Result<(), ActionError> {
        match input {
            Input::Move { to } => {
                self.check(*to)?;
                self.move_to(*to)?;
            }
            Input::Click { at, button, double } => {
                self.check(*at)?;
                self.move_to(*at)?;
                for _ in 0..if *double { 2 } else { 1 } {
                    self.button(button_number(*button), true)?;
                    self.button(button_number(*button), false)?;
                }
            }
            Input::Drag { from, to, button } => {
                self.check(*from)?;
                self.check(*to)?;
                self.move_to(*from)?;
                self.button(button_number(*button), true)?;
                for step in 1..=DRAG_STEPS {
                    let along = |a: u32, b: u32| {
                        let (a, b) = (i64::from(a), i64::from(b));
                        u32::try_from(a + (b - a) * i64::from(step) / i64::from(DRAG_STEPS))
                            .expect("between two points on the screen")
                    };
                    self.move_to(Point {
                        x: along(from.x, to.x),
                        y: along(from.y, to.y),
                    })?;
                }
                self.button(button_number(*button), false)?;
            }
            Input::Scroll {
                direction,
                amount,
                at,
            } => {
                if !(1..=MAX_SCROLL).contains(amount) {
                    return Err(refused(format!(
                        "scroll amount `{amount}`: 1 to {MAX_SCROLL} notches"
                    )));
                }
                if let Some(at) = at {
                    self.check(*at)?;
                    self.move_to(*at)?;
                }
                let button = match direction {
                    ScrollDirection::Up => 4,
                    ScrollDirection::Down => 5,
                    ScrollDirection::Left => 6,
                    ScrollDirection::Right => 7,
                };
                for _ in 0..*amount {
                    self.button(button, true)?;
                    self.button(button, false)?;
                }
            }
            Input::Key { combo } => {
                let keysyms = keys::parse_combo(combo).map_err(refused)?;
                self.press_combo(&keysyms)?;
            }
            Input::Type { text } => {
                if text.chars().count() > MAX_TYPE_CHARS {
                    return Err(refused(format!("text of over {MAX_TYPE_CHARS} characters")));
                }
                let keysyms = text
                    .chars()
                    .map(|c| {
                        keys::char_keysym(c).ok_or_else(|| {
                            refused(format!("character `{}` cannot be typed", c.escape_debug()))
                        })
                    })
                    .collect::<Result<Vec<u32>, ActionError>>()?;
                self.type_keysyms(&keysyms)?;
            }
        }
        self.sync()
    }

    /// The keyboard mapping now: (first keycode, keysyms per keycode, keysyms).
    fn keymap(&self) -> Result<Keymap, ActionError> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let reply = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)
            .map_err(conn_error)?
            .reply()
            .map_err(conn_error)?;
        Ok(Keymap {
            min,
            per: usize::from(reply.keysyms_per_keycode.max(1)),
            keysyms: reply.keysyms,
        })
    }

    /// Where each of `wanted` is on the keyboard, mapping the ones no key
    /// gives onto spare keycodes (both levels), round robin.
    fn locate(&mut self, wanted: &[u32]) -> Result<HashMap<u32, (u8, bool)>, ActionError> {
        let mut map = self.keymap()?;
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for &keysym in wanted {
            if found.contains_key(&keysym) || missing.contains(&keysym) {
                continue;
            }
            match map.find(keysym) {
                Some(at) => {
                    found.insert(keysym, at);
                }
                None => missing.push(keysym),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let spares = map.spares();
        if spares.is_empty() {
            return Err(ActionError::Refused(OpError::new(
                ErrorCode::Io,
                "the keyboard has no spare keycode to map a character onto",
            )));
        }
        for (i, keysym) in missing.into_iter().enumerate() {
            if i > 0 && i % spares.len() == 0 {
                // Every spare is in use: let clients read what was typed
                // with the present mapping first.
                self.sync()?;
                std::thread::sleep(Duration::from_millis(50));
            }
            let keycode = spares[self.next_spare % spares.len()];
            self.next_spare = self.next_spare.wrapping_add(1);
            let mut syms = vec![0u32; map.per];
            syms[0] = keysym;
            if map.per > 1 {
                syms[1] = keysym;
            }
            self.conn
                .change_keyboard_mapping(1, keycode, u8::try_from(map.per).unwrap_or(1), &syms)
                .map_err(conn_error)?;
            map.set(keycode, &syms);
            found.retain(|_, (code, _)| *code != keycode);
            found.insert(keysym, (keycode, false));
        }
        self.sync()?;
        Ok(found)
    }

    fn press_combo(&mut self, keysyms: &[u32]) -> Result<(), ActionError> {
        let mut wanted = keysyms.to_vec();
        wanted.push(SHIFT);
        let at = self.locate(&wanted)?;
        let mut pressed = Vec::new();
        let has_shift = keysyms.iter().any(|k| matches!(k, 0xffe1 | 0xffe2));
        for (i, keysym) in keysyms.iter().enumerate() {
            let (code, shifted) = at[keysym];
            let last = i + 1 == keysyms.len();
            if last && shifted && !has_shift && !keys::is_modifier(*keysym) {
                let (shift, _) = at[&SHIFT];
                self.key(shift, true)?;
                pressed.push(shift);
            }
            self.key(code, true)?;
            pressed.push(code);
        }
        for code in pressed.into_iter().rev() {
            self.key(code, false)?;
        }
        Ok(())
    }

    fn type_keysyms(&mut self, keysyms: &[u32]) -> Result<(), ActionError> {
        // In slices, so that remapped keycodes are not reused before
        // clients have read what was typed with them.
        for chunk in keysyms.chunks(64) {
            let mut wanted = chunk.to_vec();
            wanted.push(SHIFT);
            let at = self.locate(&wanted)?;
            let (shift, _) = at[&SHIFT];
            for keysym in chunk {
                let (code, shifted) = at[keysym];
                if shifted {
                    self.key(shift, true)?;
                }
                self.key(code, true)?;
                self.key(code, false)?;
                if shifted {
                    self.key(shift, false)?;
                }
            }
            self.sync()?;
        }
        Ok(())
    }
}

/// The core keyboard mapping.
struct Keymap {
    min: u8,
    per: usize,
    keysyms: Vec<u32>,
}

impl Keymap {
    fn rows(&self) -> impl Iterator<Item = (u8, &[u32])> {
        self.keysyms
            .chunks(self.per)
            .enumerate()
            .filter_map(|(i, row)| Some((self.min.checked_add(u8::try_from(i).ok()?)?, row)))
    }

    /// The keycode giving `keysym` in the first group, and whether Shift is
    /// needed; unshifted places first.
    fn find(&self, keysym: u32) -> Option<(u8, bool)> {
        for level in 0..self.per.min(2) {
            if let Some((code, _)) = self.rows().find(|(_, row)| row[level] == keysym) {
                return Some((code, level == 1));
            }
        }
        None
    }

    /// Keycodes that give nothing.
    fn spares(&self) -> Vec<u8> {
        self.rows()
            .filter(|(_, row)| row.iter().all(|k| *k == 0))
            .map(|(code, _)| code)
            .collect()
    }

    fn set(&mut self, keycode: u8, syms: &[u32]) {
        let start = usize::from(keycode - self.min) * self.per;
        self.keysyms[start..start + self.per].copy_from_slice(syms);
    }
}

fn button_number(button: MouseButton) -> u8 {
    match button {
        MouseButton::Left => 1,
        MouseButton::Middle => 2,
        MouseButton::Right => 3,
    }
}

/// `hsetroot -fill FILE` on display `:n`, as root.
fn set_wallpaper(agent: &Arc<Agent>, n: u32, path: &str) -> Result<(), OpError> {
    let mut env = BTreeMap::new();
    env.insert("DISPLAY".to_string(), format!(":{n}"));
    let argv = vec![
        "hsetroot".to_string(),
        "-fill".to_string(),
        path.to_string(),
    ];
    let mut prepared = prepare(agent, &Command::Argv(argv), &env, None, None)?;
    let cmd = &mut prepared.command;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (_child, waiter) = agent
        .spawner()
        .start(cmd)
        .map_err(|e| OpError::io("cannot run `hsetroot`", &e))?;
    let (status, timed_out) = waiter.wait_or_kill(Some(WALLPAPER_TIMEOUT));
    if status.success() {
        Ok(())
    } else {
        Err(OpError::new(
            ErrorCode::Io,
            format!(
                "`hsetroot -fill {path}` failed ({}): is the wallpaper a PNG or JPEG?",
                if timed_out {
                    "timed out".to_string()
                } else {
                    status.to_string()
                }
            ),
        ))
    }
}
