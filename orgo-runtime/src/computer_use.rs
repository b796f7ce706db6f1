//! The computer-use API of a [`Computer`] with a desktop: screenshots,
//! pointer and keyboard, through the guest agent (which does them
//! in-process over X11). A computer without a desktop answers each with
//! [`RuntimeError::NoDesktop`], naming the fields that give a template one;
//! a point off the screen is [`RuntimeError::Action`], never clamped.

use std::time::Duration;

use orgo_agent_protocol::{
    ErrorCode, Input, MouseButton, Op, Point, Region, Reply, ScrollDirection,
};

use crate::agent::AgentError;
use crate::computer::Computer;
use crate::error::RuntimeError;
use crate::guest::call;

/// How long one action may take (typing long text under TCG is slow).
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A screenshot: a PNG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Screenshot {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

impl Computer {
    async fn desktop_op(&self, action: &'static str, op: Op) -> Result<Reply, RuntimeError> {
        let id = self.id().to_owned();
        match call(&self.agent(), move |a| a.request(op, ACTION_TIMEOUT)).await {
            Err(RuntimeError::Agent(AgentError::Guest { code, message, .. })) => Err(match code {
                ErrorCode::NoDesktop => RuntimeError::NoDesktop { id },
                _ => RuntimeError::Action { action, message },
            }),
            other => other,
        }
    }

    async fn input(&self, input: Input) -> Result<(), RuntimeError> {
        let action = input.name();
        match self.desktop_op(action, Op::Input(input)).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(action, other)),
        }
    }

    /// A PNG of the whole screen, or of `region` of it.
    pub async fn screenshot(&self, region: Option<Region>) -> Result<Screenshot, RuntimeError> {
        match self
            .desktop_op("screenshot", Op::Screenshot { region })
            .await?
        {
            Reply::Screenshot { png, width, height } => Ok(Screenshot {
                png: png.0,
                width,
                height,
            }),
            other => Err(unexpected("screenshot", other)),
        }
    }

    /// Moves the pointer to (`x`, `y`).
    pub async fn move_to(&self, x: u32, y: u32) -> Result<(), RuntimeError> {
        self.input(Input::Move { to: Point { x, y } }).await
    }

    /// Clicks `button` at (`x`, `y`), twice with `double`.
    pub async fn click(
        &self,
        x: u32,
        y: u32,
        button: MouseButton,
        double: bool,
    ) -> Result<(), RuntimeError> {
        self.input(Input::Click {
            at: Point { x, y },
            button,
            double,
        })
        .await
    }

    /// Presses `button` at `from`, moves to `to`, releases it there.
    pub async fn drag(
        &self,
        from: (u32, u32),
        to: (u32, u32),
        button: MouseButton,
    ) -> Result<(), RuntimeError> {
        self.input(Input::Drag {
            from: Point {
                x: from.0,
                y: from.1,
            },
            to: Point { x: to.0, y: to.1 },
            button,
        })
        .await
    }

    /// Types UTF-8 text (any characters, not only a US keyboard's).
    pub async fn type_text(&self, text: &str) -> Result<(), RuntimeError> {
        self.input(Input::Type {
            text: text.to_owned(),
        })
        .await
    }

    /// Presses a key combination in `xdotool` syntax (`ctrl+shift+t`, `Return`).
    pub async fn key(&self, combo: &str) -> Result<(), RuntimeError> {
        self.input(Input::Key {
            combo: combo.to_owned(),
        })
        .await
    }

    /// Turns the wheel `amount` notches `direction`, at (`x`, `y`) if given.
    pub async fn scroll(
        &self,
        direction: ScrollDirection,
        amount: u32,
        at: Option<(u32, u32)>,
    ) -> Result<(), RuntimeError> {
        self.input(Input::Scroll {
            direction,
            amount,
            at: at.map(|(x, y)| Point { x, y }),
        })
        .await
    }

    /// Where the pointer is.
    pub async fn cursor(&self) -> Result<(u32, u32), RuntimeError> {
        match self.desktop_op("cursor", Op::Cursor).await? {
            Reply::Cursor { x, y } => Ok((x, y)),
            other => Err(unexpected("cursor", other)),
        }
    }
}

fn unexpected(op: &'static str, reply: Reply) -> RuntimeError {
    RuntimeError::Agent(AgentError::Unexpected {
        op,
        reply: format!("{reply:?}"),
    })
}
