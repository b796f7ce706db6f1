//! The desktop's messages: the display the agent drives ([`DesktopSpec`],
//! [`Op::StartDesktop`](crate::Op::StartDesktop)) and the computer-use
//! actions on it ([`Input`], a screenshot's [`Region`]).

use serde::{Deserialize, Serialize};

/// The display the agent drives: the X server (started by the host as a
/// supervised service) on display `:display`, at `width`x`height`x`depth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesktopSpec {
    /// The X display number (`0` for `:0`).
    pub display: u32,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Bits per pixel (16, 24 or 32).
    pub depth: u32,
    /// A guest path of an image (PNG or JPEG) set as the background, scaled
    /// to fill the screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallpaper: Option<String>,
    /// How long to wait for the X server to accept connections (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A point on the screen, in pixels from the top left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Pixels from the left edge.
    pub x: u32,
    /// Pixels from the top edge.
    pub y: u32,
}

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Pixels across (at least 1).
    pub width: u32,
    /// Pixels down (at least 1).
    pub height: u32,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MouseButton {
    /// Button 1.
    #[default]
    Left,
    /// Button 2.
    Middle,
    /// Button 3.
    Right,
}

/// Which way a scroll goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrollDirection {
    /// Wheel up (button 4).
    Up,
    /// Wheel down (button 5).
    Down,
    /// Wheel left (button 6).
    Left,
    /// Wheel right (button 7).
    Right,
}

/// A computer-use input action ([`Op::Input`](crate::Op::Input)). A point
/// off the screen is refused ([`ErrorCode::BadRequest`](crate::ErrorCode)),
/// never clamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Input {
    /// Move the pointer.
    Move {
        /// Where to.
        to: Point,
    },
    /// Move the pointer, then press and release a button (twice for a
    /// double click).
    Click {
        /// Where.
        at: Point,
        /// Which button.
        button: MouseButton,
        /// A double click.
        #[serde(default)]
        double: bool,
    },
    /// Press a button at `from`, move to `to`, release it there.
    Drag {
        /// Where the press is.
        from: Point,
        /// Where the release is.
        to: Point,
        /// Which button.
        button: MouseButton,
    },
    /// Type UTF-8 text (characters that no key of the keyboard gives are
    /// mapped onto a spare keycode first, as `xdotool` does).
    Type {
        /// The text.
        text: String,
    },
    /// Press a key combination in `xdotool` syntax (`ctrl+shift+t`,
    /// `Return`, `alt+F4`), releasing in reverse order.
    Key {
        /// The combination.
        combo: String,
    },
    /// Turn the wheel `amount` notches, at `at` if given (the pointer moves
    /// there first), else where the pointer is.
    Scroll {
        /// Which way.
        direction: ScrollDirection,
        /// How many notches (1 to 100).
        amount: u32,
        /// Where.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
    },
}

impl Input {
    /// The action's name (`click`, `type`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Input::Move { .. } => "move",
            Input::Click { .. } => "click",
            Input::Drag { .. } => "drag",
            Input::Type { .. } => "type",
            Input::Key { .. } => "key",
            Input::Scroll { .. } => "scroll",
        }
    }
}
