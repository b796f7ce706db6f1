//! Extractors whose rejections are the API's error shape (axum's own
//! answer in plain text), and bodies read under a cap.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

/// `Query<T>`, rejected as `invalid_request`.
pub(crate) struct Q<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

/// `Path<T>`, rejected as `invalid_request`.
pub(crate) struct P<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
    }
}

/// Reads `body` as it streams in; refuses it (413) once past `cap` bytes.
pub(crate) async fn read_capped(body: Body, cap: u64, what: &str) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!("{what} is over the {cap}-byte limit"),
            )
            .details(serde_json::json!({ "limit": cap }))
            .retry_after(0));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A JSON body of at most `cap` bytes.
pub(crate) async fn read_json<T: DeserializeOwned>(body: Body, cap: usize) -> Result<T, ApiError> {
    let bytes = read_capped(body, cap as u64, "the request body").await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the JSON body: {e}")))
}
