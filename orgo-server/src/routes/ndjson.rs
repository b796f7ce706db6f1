//! NDJSON answers: one JSON value per line, ending, on a failure after the
//! answer has begun, with `{"type": "error", "error": {code, message,
//! details}}`. The exec route and the automation's streams share these.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Lines waiting for a slow client in a [`bounded`] answer: past this, the
/// producer waits.
const BACKLOG: usize = 64;

/// A value as one line of the body.
pub(crate) fn line(value: &Value) -> Result<Bytes, Infallible> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

/// The last line of an answer that failed.
pub(crate) fn error_frame(error: &ApiError) -> Value {
    json!({"type": "error", "error": {
        "code": error.code, "message": error.message, "details": error.details,
    }})
}

/// An NDJSON answer of `items` until they end, one fails (its error is the
/// last line), or the client goes away: a client that left ends it at
/// once, not at the next item. At most [`BACKLOG`] lines wait.
pub(crate) fn bounded<S>(items: S) -> Response
where
    S: Stream<Item = Result<Value, ApiError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        loop {
            let item = tokio::select! {
                () = tx.closed() => return,
                item = items.next() => item,
            };
            let (value, last) = match item {
                Some(Ok(value)) => (value, false),
                Some(Err(error)) => (error_frame(&error), true),
                None => return,
            };
            if tx.send(line(&value)).await.is_err() || last {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
