//! The desktop commands in remote mode: `screenshot`, `click`, `move`,
//! `drag`, `type`, `key`, `scroll` and `cursor` through the server's
//! `/api/computers/{id}/desktop/...`, with the local commands' output and
//! exit codes. `vnc` and `stream` stay local (refused here, saying why).

use orgo_client::{Button as RemoteButton, Client, DesktopAction, Direction as RemoteDirection};

use crate::Failure;
use crate::desktop::{Button, DesktopCommand, Direction, write_png};
use crate::remote::failure;

fn button(b: Button) -> RemoteButton {
    match b {
        Button::Left => RemoteButton::Left,
        Button::Middle => RemoteButton::Middle,
        Button::Right => RemoteButton::Right,
    }
}

fn point((x, y): (u32, u32)) -> orgo_client::Point {
    orgo_client::Point { x, y }
}

/// Runs a desktop command against the server.
pub(crate) fn run(
    tokio: &tokio::runtime::Runtime,
    client: &Client,
    command: DesktopCommand,
) -> Result<(), Failure> {
    let (id, action) = match command {
        DesktopCommand::Screenshot(args) => {
            let region = args.region.map(|r| orgo_client::Region {
                x: r.x,
                y: r.y,
                width: r.width,
                height: r.height,
            });
            let png = tokio
                .block_on(client.screenshot(&args.id, region))
                .map_err(failure)?;
            return write_png(args.output.as_deref(), &png);
        }
        DesktopCommand::Cursor { id } => {
            let at = tokio.block_on(client.cursor(&id)).map_err(failure)?;
            println!("{} {}", at.x, at.y);
            return Ok(());
        }
        DesktopCommand::Vnc { .. } => {
            return Err(Failure::Input(
                "`orgo vnc` prints the VNC and noVNC forwards on the host the computer runs on; \
                 the HTTP API does not serve them: run it on the server's host"
                    .into(),
            ));
        }
        DesktopCommand::Stream { .. } => {
            return Err(Failure::Input(
                "`orgo stream` takes a stream's secret key from this host's vault; the HTTP API \
                 does not offer streams: run it on the server's host"
                    .into(),
            ));
        }
        DesktopCommand::Click {
            id,
            x,
            y,
            button: b,
            double,
        } => (
            id,
            DesktopAction::Click {
                x,
                y,
                button: button(b),
                double,
            },
        ),
        DesktopCommand::Move { id, x, y } => (id, DesktopAction::Move { x, y }),
        DesktopCommand::Drag {
            id,
            x1,
            y1,
            x2,
            y2,
            button: b,
        } => (
            id,
            DesktopAction::Drag {
                from: point((x1, y1)),
                to: point((x2, y2)),
                button: button(b),
            },
        ),
        DesktopCommand::Type { id, text } => (id, DesktopAction::Type { text }),
        DesktopCommand::Key { id, combo } => (id, DesktopAction::Key { combo }),
        DesktopCommand::Scroll {
            id,
            direction,
            amount,
            at,
        } => {
            let direction = match direction {
                Direction::Up => RemoteDirection::Up,
                Direction::Down => RemoteDirection::Down,
                Direction::Left => RemoteDirection::Left,
                Direction::Right => RemoteDirection::Right,
            };
            (
                id,
                DesktopAction::Scroll {
                    direction,
                    amount,
                    at: at.map(point),
                },
            )
        }
    };
    tokio.block_on(client.act(&id, &action)).map_err(failure)
}
