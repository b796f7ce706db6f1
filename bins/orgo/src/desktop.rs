//! The desktop commands: `screenshot`, `click`, `move`, `drag`, `type`,
//! `key`, `scroll`, `cursor` and `vnc`. Each fails (exit 2) with the error
//! naming the template's missing fields on a computer without a desktop.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use orgo_runtime::{
    Computer, MouseButton, Region, Runtime, SECRET_ENV_PREFIX, ScrollDirection, VAULT_FILE, Vault,
};

use crate::Failure;
use crate::computer::{RuntimeArgs, open_with_args, runtime_error};

#[derive(Subcommand)]
pub(crate) enum DesktopCommand {
    /// Write a PNG of a computer's screen (or a region) to stdout, or to a file.
    Screenshot(ScreenshotArgs),
    /// Click at a point.
    Click {
        /// The computer's id.
        id: String,
        /// Pixels from the left edge.
        x: u32,
        /// Pixels from the top edge.
        y: u32,
        /// Which button.
        #[arg(long, value_enum, default_value_t = Button::Left)]
        button: Button,
        /// A double click.
        #[arg(long)]
        double: bool,
    },
    /// Move the pointer.
    Move {
        /// The computer's id.
        id: String,
        /// Pixels from the left edge.
        x: u32,
        /// Pixels from the top edge.
        y: u32,
    },
    /// Press a button at one point, release it at another.
    Drag {
        /// The computer's id.
        id: String,
        /// From x.
        x1: u32,
        /// From y.
        y1: u32,
        /// To x.
        x2: u32,
        /// To y.
        y2: u32,
        /// Which button.
        #[arg(long, value_enum, default_value_t = Button::Left)]
        button: Button,
    },
    /// Type text (any UTF-8).
    Type {
        /// The computer's id.
        id: String,
        /// The text.
        text: String,
    },
    /// Press a key combination, in xdotool syntax (`ctrl+shift+t`, `Return`).
    Key {
        /// The computer's id.
        id: String,
        /// The combination.
        combo: String,
    },
    /// Turn the mouse wheel.
    Scroll {
        /// The computer's id.
        id: String,
        /// Which way.
        #[arg(value_enum)]
        direction: Direction,
        /// How many notches.
        #[arg(default_value_t = 1)]
        amount: u32,
        /// Scroll at this point (`X,Y`) instead of where the pointer is.
        #[arg(long, value_name = "X,Y", value_parser = point)]
        at: Option<(u32, u32)>,
    },
    /// Print where the pointer is: `X Y`.
    Cursor {
        /// The computer's id.
        id: String,
    },
    /// Start, stop or show a stream of the computer's template (`streaming[]`).
    Stream {
        /// `start`, `stop` or `status`.
        #[arg(value_enum)]
        action: StreamAction,
        /// The computer's id.
        id: String,
        /// The stream's name.
        name: String,
    },
    /// Print the host endpoints of a computer's VNC and noVNC:
    /// `vnc HOST:PORT` and `novnc http://HOST:PORT/vnc.html`.
    Vnc {
        /// The computer's id.
        id: String,
    },
}

#[derive(Args)]
pub(crate) struct ScreenshotArgs {
    /// The computer's id.
    pub(crate) id: String,
    /// Write the PNG here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Only this region, `X,Y,WIDTH,HEIGHT`.
    #[arg(long, value_name = "X,Y,W,H", value_parser = region)]
    pub(crate) region: Option<Region>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StreamAction {
    /// Start streaming (a secret key from `ORGO_SECRET_<NAME>` or the vault).
    Start,
    /// Stop streaming.
    Stop,
    /// Print `NAME STATE RESTARTS`: `streaming`, `retrying`, `stopped` or `failed`.
    Status,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Button {
    Left,
    Middle,
    Right,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Direction {
    Up,
    Down,
    Left,
    Right,
}

fn numbers(text: &str, n: usize, what: &str) -> Result<Vec<u32>, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    if parts.len() != n {
        return Err(format!("`{text}` is not {what}"));
    }
    Ok(parts)
}

fn point(text: &str) -> Result<(u32, u32), String> {
    let p = numbers(text, 2, "`X,Y`")?;
    Ok((p[0], p[1]))
}

fn region(text: &str) -> Result<Region, String> {
    let p = numbers(text, 4, "`X,Y,WIDTH,HEIGHT`")?;
    let mut r = orgo_runtime::Region {
        x: 0,
        y: 0,
        width: 0,
        height: 0,
    };
    (r.x, r.y, r.width, r.height) = (p[0], p[1], p[2], p[3]);
    Ok(r)
}

impl DesktopCommand {
    fn id(&self) -> &str {
        match self {
            DesktopCommand::Screenshot(a) => &a.id,
            DesktopCommand::Click { id, .. }
            | DesktopCommand::Move { id, .. }
            | DesktopCommand::Drag { id, .. }
            | DesktopCommand::Type { id, .. }
            | DesktopCommand::Key { id, .. }
            | DesktopCommand::Scroll { id, .. }
            | DesktopCommand::Cursor { id }
            | DesktopCommand::Stream { id, .. }
            | DesktopCommand::Vnc { id } => id,
        }
    }
}

fn button(b: Button) -> MouseButton {
    match b {
        Button::Left => MouseButton::Left,
        Button::Middle => MouseButton::Middle,
        Button::Right => MouseButton::Right,
    }
}

/// A screenshot's PNG to `output`, or stdout.
pub(crate) fn write_png(output: Option<&std::path::Path>, png: &[u8]) -> Result<(), Failure> {
    match output {
        Some(path) => std::fs::write(path, png)
            .map_err(|e| Failure::Input(format!("cannot write `{}`: {e}", path.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(png)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Input(format!("cannot write stdout: {e}")))
        }
    }
}

/// Runs a desktop command.
pub(crate) fn run(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    command: DesktopCommand,
) -> Result<(), Failure> {
    let (tokio, runtime) = open_with_args(root, rt)?;
    let computer = tokio
        .block_on(runtime.connect(command.id()))
        .map_err(runtime_error)?;
    tokio.block_on(act(&runtime, &computer, command))
}

async fn act(runtime: &Runtime, c: &Computer, command: DesktopCommand) -> Result<(), Failure> {
    let done = match command {
        DesktopCommand::Screenshot(args) => {
            let shot = c.screenshot(args.region).await.map_err(runtime_error)?;
            return write_png(args.output.as_deref(), &shot.png);
        }
        DesktopCommand::Click {
            x,
            y,
            button: b,
            double,
            ..
        } => c.click(x, y, button(b), double).await,
        DesktopCommand::Move { x, y, .. } => c.move_to(x, y).await,
        DesktopCommand::Drag {
            x1,
            y1,
            x2,
            y2,
            button: b,
            ..
        } => c.drag((x1, y1), (x2, y2), button(b)).await,
        DesktopCommand::Type { text, .. } => c.type_text(&text).await,
        DesktopCommand::Key { combo, .. } => c.key(&combo).await,
        DesktopCommand::Scroll {
            direction,
            amount,
            at,
            ..
        } => {
            let direction = match direction {
                Direction::Up => ScrollDirection::Up,
                Direction::Down => ScrollDirection::Down,
                Direction::Left => ScrollDirection::Left,
                Direction::Right => ScrollDirection::Right,
            };
            c.scroll(direction, amount, at).await
        }
        DesktopCommand::Cursor { .. } => {
            let (x, y) = c.cursor().await.map_err(runtime_error)?;
            println!("{x} {y}");
            Ok(())
        }
        DesktopCommand::Stream { action, name, .. } => match action {
            StreamAction::Start => {
                let vault = Vault::load(
                    &runtime.store().root().join(VAULT_FILE),
                    std::env::vars().filter(|(k, _)| k.starts_with(SECRET_ENV_PREFIX)),
                )
                .map_err(Failure::error)?;
                c.stream_start(&name, &vault).await
            }
            StreamAction::Stop => c.stream_stop(&name).await,
            StreamAction::Status => {
                let status = c.stream_status(&name).await.map_err(runtime_error)?;
                println!(
                    "{} {} {}",
                    status.name,
                    status.state.as_str(),
                    status.restarts
                );
                Ok(())
            }
        },
        DesktopCommand::Vnc { .. } => {
            // A computer without a desktop says so.
            c.cursor().await.map_err(runtime_error)?;
            let find = |internal: u16| c.ports().iter().find(|p| p.internal == internal);
            let (Some(vnc), Some(novnc)) =
                (find(orgo_runtime::VNC_PORT), find(orgo_runtime::NOVNC_PORT))
            else {
                return Err(Failure::No(format!(
                    "computer `{}` has a desktop (VNC on guest port {}, noVNC on guest port {}), \
                     but no host forward: the host network needs root or CAP_NET_ADMIN",
                    c.id(),
                    orgo_runtime::VNC_PORT,
                    orgo_runtime::NOVNC_PORT
                )));
            };
            println!("vnc {}", vnc.address);
            println!("novnc http://{}/vnc.html", novnc.address);
            return Ok(());
        }
    };
    done.map_err(runtime_error)
}
