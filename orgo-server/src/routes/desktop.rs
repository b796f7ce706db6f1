//! `/api/computers/{id}/desktop/...`: the computer-use API of a computer
//! with a desktop (screenshots, pointer and keyboard), as `orgo
//! screenshot`, `click`, `move`, `drag`, `type`, `key`, `scroll` and
//! `cursor` do them. A computer without a desktop answers 409
//! `no_desktop`; an action the desktop refuses (a point off the screen, a
//! key that is no key) 422 `action_refused`.
//!
//! The actions are one route taking a tagged body (`{"action": "click",
//! ...}`), so that a client adds an action without a new path.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orgo_runtime::{MouseButton, Region, ScrollDirection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{P, Q, read_json};
use crate::routes::computers::{IdPath, running};
use crate::state::AppState;

/// The longest text one `type` action takes, in characters.
const MAX_TEXT_CHARS: usize = 65_536;
/// The longest key combination.
const MAX_COMBO_CHARS: usize = 256;
/// The most notches one `scroll` turns.
const MAX_SCROLL: u32 = 100;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/computers/{id}/desktop/screenshot", get(screenshot))
        .route("/api/computers/{id}/desktop/cursor", get(cursor))
        .route("/api/computers/{id}/desktop/actions", post(act))
}

/// A point on the screen, in pixels from the top-left corner.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Point {
    /// Pixels from the left edge.
    x: u32,
    /// Pixels from the top edge.
    y: u32,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Button {
    /// The left button (the default).
    #[default]
    Left,
    /// The middle button.
    Middle,
    /// The right button.
    Right,
}

/// Which way the wheel turns.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Direction {
    /// Up.
    Up,
    /// Down.
    Down,
    /// Left.
    Left,
    /// Right.
    Right,
}

fn one() -> u32 {
    1
}

/// One desktop action, tagged by `action`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum DesktopAction {
    /// Click `button` at (`x`, `y`); twice with `double`.
    Click {
        /// Pixels from the left edge.
        x: u32,
        /// Pixels from the top edge.
        y: u32,
        /// Which button (default `left`).
        #[serde(default)]
        button: Button,
        /// A double click.
        #[serde(default)]
        double: bool,
    },
    /// Move the pointer to (`x`, `y`).
    Move {
        /// Pixels from the left edge.
        x: u32,
        /// Pixels from the top edge.
        y: u32,
    },
    /// Press `button` at `from`, move to `to`, release it there.
    Drag {
        /// Where the button is pressed.
        from: Point,
        /// Where it is released.
        to: Point,
        /// Which button (default `left`).
        #[serde(default)]
        button: Button,
    },
    /// Type UTF-8 text (any characters, not only a US keyboard's).
    Type {
        /// The text.
        #[schema(max_length = 65536)]
        text: String,
    },
    /// Press a key combination in `xdotool` syntax (`ctrl+shift+t`, `Return`).
    Key {
        /// The combination.
        #[schema(min_length = 1, max_length = 256)]
        combo: String,
    },
    /// Turn the mouse wheel `amount` notches, at `at` if given (else where
    /// the pointer is).
    Scroll {
        /// Which way.
        direction: Direction,
        /// How many notches (default 1).
        #[serde(default = "one")]
        #[schema(minimum = 1, maximum = 100)]
        amount: u32,
        /// Where (default: where the pointer is).
        #[serde(default)]
        at: Option<Point>,
    },
}

/// A screenshot's region: all four numbers, or none for the whole screen.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScreenshotQuery {
    /// The region's left edge.
    x: Option<u32>,
    /// The region's top edge.
    y: Option<u32>,
    /// The region's width.
    width: Option<u32>,
    /// The region's height.
    height: Option<u32>,
}

fn button(b: Button) -> MouseButton {
    match b {
        Button::Left => MouseButton::Left,
        Button::Middle => MouseButton::Middle,
        Button::Right => MouseButton::Right,
    }
}

fn direction(d: Direction) -> ScrollDirection {
    match d {
        Direction::Up => ScrollDirection::Up,
        Direction::Down => ScrollDirection::Down,
        Direction::Left => ScrollDirection::Left,
        Direction::Right => ScrollDirection::Right,
    }
}

/// A PNG of the screen, or of the region the query gives.
#[utoipa::path(
    get, path = "/api/computers/{id}/desktop/screenshot", tag = "desktop",
    params(IdPath, ScreenshotQuery),
    responses(
        (status = 200, description = "the PNG", content_type = "image/png", body = Vec<u8>),
        (status = 400, description = "a bad request (a partial region)", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running, or has no desktop (`no_desktop`)", body = crate::error::ErrorBody),
        (status = 422, description = "the desktop refused (a region off the screen)", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn screenshot(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<ScreenshotQuery>,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let region = match (query.x, query.y, query.width, query.height) {
        (None, None, None, None) => None,
        (Some(x), Some(y), Some(width), Some(height)) => Some(Region {
            x,
            y,
            width,
            height,
        }),
        _ => {
            return Err(ApiError::bad_request(
                "a region needs all of `x`, `y`, `width` and `height`",
            ));
        }
    };
    let computer = running(&state, &id).await?;
    let shot = computer.screenshot(region).await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], Body::from(shot.png)).into_response())
}

/// Where the pointer is.
#[utoipa::path(
    get, path = "/api/computers/{id}/desktop/cursor", tag = "desktop",
    params(IdPath),
    responses(
        (status = 200, description = "the pointer's position", body = Point),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running, or has no desktop (`no_desktop`)", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cursor(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<Point>, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    let computer = running(&state, &id).await?;
    let (x, y) = computer.cursor().await?;
    Ok(Json(Point { x, y }))
}

/// Click, move, drag, type, press keys or scroll.
#[utoipa::path(
    post, path = "/api/computers/{id}/desktop/actions", tag = "desktop",
    params(IdPath),
    request_body(content = DesktopAction, content_type = "application/json"),
    responses(
        (status = 204, description = "done"),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running, or has no desktop (`no_desktop`)", body = crate::error::ErrorBody),
        (status = 413, description = "the body is too large", body = crate::error::ErrorBody),
        (status = 422, description = "the desktop refused (`action_refused`: a point off the screen, a key that is no key)", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
        (status = 504, description = "the action did not finish in time", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn act(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    let action: DesktopAction = read_json(body, state.config.limits.json_bytes).await?;
    check(&action)?;
    let c = running(&state, &id).await?;
    match action {
        DesktopAction::Click {
            x,
            y,
            button: b,
            double,
        } => c.click(x, y, button(b), double).await,
        DesktopAction::Move { x, y } => c.move_to(x, y).await,
        DesktopAction::Drag {
            from,
            to,
            button: b,
        } => c.drag((from.x, from.y), (to.x, to.y), button(b)).await,
        DesktopAction::Type { text } => c.type_text(&text).await,
        DesktopAction::Key { combo } => c.key(&combo).await,
        DesktopAction::Scroll {
            direction: d,
            amount,
            at,
        } => c.scroll(direction(d), amount, at.map(|p| (p.x, p.y))).await,
    }?;
    Ok(StatusCode::NO_CONTENT)
}

/// The bounds the schema states, which serde does not check.
fn check(action: &DesktopAction) -> Result<(), ApiError> {
    match action {
        DesktopAction::Type { text } if text.chars().count() > MAX_TEXT_CHARS => Err(
            ApiError::bad_request(format!("text: over {MAX_TEXT_CHARS} characters")),
        ),
        DesktopAction::Key { combo }
            if combo.is_empty() || combo.chars().count() > MAX_COMBO_CHARS =>
        {
            Err(ApiError::bad_request(format!(
                "combo: empty or over {MAX_COMBO_CHARS} characters"
            )))
        }
        DesktopAction::Scroll { amount, .. } if !(1..=MAX_SCROLL).contains(amount) => {
            Err(ApiError::bad_request(format!(
                "amount: `{amount}` is not between 1 and {MAX_SCROLL}"
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_with_their_defaults_and_refuse_the_rest() {
        let parse =
            |text: &str| serde_json::from_str::<DesktopAction>(text).map(|a| format!("{a:?}"));
        for (text, want) in [
            (
                r#"{"action": "click", "x": 1, "y": 2}"#,
                "Click { x: 1, y: 2, button: Left, double: false }",
            ),
            (
                r#"{"action": "drag", "from": {"x": 1, "y": 2}, "to": {"x": 3, "y": 4}, "button": "right"}"#,
                "Drag { from: Point { x: 1, y: 2 }, to: Point { x: 3, y: 4 }, button: Right }",
            ),
            (
                r#"{"action": "scroll", "direction": "down"}"#,
                "Scroll { direction: Down, amount: 1, at: None }",
            ),
            (r#"{"action": "type", "text": "é"}"#, "Type { text: \"é\" }"),
        ] {
            assert_eq!(parse(text).expect(text), want);
        }
        for text in [
            r#"{"action": "click", "x": 1, "y": 2, "z": 3}"#,
            r#"{"action": "wave"}"#,
            r#"{"x": 1, "y": 2}"#,
            r#"{"action": "move", "x": -1, "y": 2}"#,
            r#"{"action": "scroll", "direction": "sideways"}"#,
        ] {
            assert!(parse(text).is_err(), "{text} parsed");
        }
        let over = |action: DesktopAction| check(&action).is_err();
        assert!(over(DesktopAction::Scroll {
            direction: Direction::Up,
            amount: 0,
            at: None
        }));
        assert!(over(DesktopAction::Key {
            combo: String::new()
        }));
        assert!(over(DesktopAction::Type {
            text: "x".repeat(MAX_TEXT_CHARS + 1)
        }));
        assert!(!over(DesktopAction::Type {
            text: "x".repeat(MAX_TEXT_CHARS)
        }));
    }
}
