//! What every handler shares.

use std::sync::Arc;

use orgo_runtime::Runtime;
use tokio::sync::watch;

use crate::builds::Builds;
use crate::computers::Computers;
use crate::config::ServerConfig;
use crate::keys::KeyStore;

/// The server's state.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) runtime: Runtime,
    pub(crate) keys: Arc<KeyStore>,
    pub(crate) builds: Arc<Builds>,
    pub(crate) computers: Computers,
    pub(crate) config: ServerConfig,
    /// `true` once the server stops accepting work.
    pub(crate) stopping: watch::Receiver<bool>,
}

impl AppState {
    /// Refuses new work while the server stops.
    pub(crate) fn accepting(&self) -> Result<(), crate::error::ApiError> {
        if *self.stopping.borrow() {
            return Err(crate::error::ApiError::new(
                crate::error::Code::ShuttingDown,
                "the server is shutting down",
            )
            .retry_after(5));
        }
        Ok(())
    }
}
