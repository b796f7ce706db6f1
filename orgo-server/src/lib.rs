//! `orgo-server`: the HTTP API of `orgo serve`, a thin layer over
//! [`orgo_runtime::Runtime`] (axum on tokio).
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `POST /api/templates[?namespace=]` | publish (YAML or JSON): 201 `{ref, digest, published}`, 200 when the same document is published already, 409 `version_conflict` with both digests, 422 `invalid_template` with `details.errors: [{path, line, column, message}]` |
//! | `GET /api/templates[?namespace=]` | the key's namespace and `system`, or one namespace |
//! | `GET`, `DELETE /api/templates/{ns}/{name}/{version}` | the canonical document, digest and build status; unpublish (409 `in_use` while computers or other refs use the digest) |
//! | `POST`, `GET`, `DELETE .../build` | start (202 `{status, reused}`; one build per digest, shared), status (`build_time_ms`, the error with the failing step's field and output), cancel |
//! | `GET .../build/events` | Server-Sent Events: `log` events (`{ts, level, phase, source, field, line}`), every one so far then the live ones, then one `end` event with the final status |
//! | `POST /api/computers` | launch `{template_ref, cpu, ram_gb, env, secrets, egress_learn}` (built first if needed): 201 `{id, status, template_ref, cpu, memory_mib, ports, egress_learn}` |
//! | `GET /api/computers`, `GET`, `DELETE /api/computers/{id}` | list, read, stop (`on_shutdown`, power off) |
//! | `POST /api/computers/{id}/exec` | run `{command: argv or "shell line", cwd, user, env, timeout_s}`: **NDJSON**, one `{"type": "stdout"\|"stderr", "data": base64}` line per chunk as it comes, then `{"type": "exit", "exit_code", "signal", "timed_out"}` (or `{"type": "error", "error"}`) |
//! | `PUT`, `GET /api/computers/{id}/files?path=` | write (streamed in, refused past the cap, `?mode=0644`), read (bytes) |
//! | `GET /api/computers/{id}/logs?service=&since_s=&follow=` | service logs: **NDJSON** `{"service", "line"}`; `follow` keeps it open |
//! | `GET /api/computers/{id}/events?follow=` | the event stream: **NDJSON** objects with `ts`, `seq`, `kind` and the event's fields |
//! | `POST /api/computers/{id}/webhooks?path=` | fire the webhook triggers of `path` with the body (at most 1 MiB): `{triggers}` that ran |
//! | `GET /api/computers/{id}/metrics`, `GET .../services` | the Prometheus text format; the services' state, restarts and last exit |
//! | `GET /api/computers/{id}/egress` | what a computer launched with `egress_learn` reached: `{names, addresses, policy}`, the policy the smallest `egress_policy` allowing it, as YAML (`orgo egress ID`); 409 `conflict` when it was not launched to learn |
//! | `GET /api/computers/{id}/desktop/screenshot[?x=&y=&width=&height=]` | a PNG (`image/png`) of the screen or a region |
//! | `GET /api/computers/{id}/desktop/cursor` | the pointer's position `{x, y}` |
//! | `POST /api/computers/{id}/desktop/actions` | one action, tagged: `{"action": "click", x, y, button, double}`, `move {x, y}`, `drag {from, to, button}`, `type {text}`, `key {combo}`, `scroll {direction, amount, at}`: 204; 409 `no_desktop` on a computer without a desktop, 422 `action_refused` for a point off the screen or a key that is no key |
//! | `GET /api/template-schema`, `GET /api/openapi.json` | the documents (no key needed) |
//!
//! Errors are one shape, `{"error": {"code", "message", "details"}}`, with
//! the stable codes of [`Code`].
//!
//! # Keys, scopes and limits
//!
//! `Authorization: Bearer <key>`; keys ([`KeyStore`]) are stored hashed
//! in `<home>/server/keys.json` and scoped to one namespace (see the
//! `auth` module): 401 without a known key, 403
//! `namespace_scope_mismatch` outside the scope, 404 for another
//! namespace's computer. Templates arriving over HTTP read no host file
//! (`file://` and `s3://` sources are refused with 422 naming the field,
//! unless [`ServerConfig::allow_file_root`]). [`Limits`] cap bodies (413)
//! and concurrent builds and computers per namespace (429 with
//! `Retry-After`).
//!
//! # Restarts
//!
//! The server owns the runtime's warm pool. At start it sweeps what a
//! killed predecessor left (orphaned launches, parked computers, builder
//! VMs of its builds), marks
//! builds it left `building` as `failed` (with the reason), and finds its
//! running computers again from their records. On shutdown
//! ([`Server::serve`]'s signal) it stops accepting, cancels builds and
//! leaves computers running.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = orgo_runtime::Runtime::open(orgo_runtime::RuntimeConfig::from_env(None)?).await?;
//! let server = orgo_server::Server::open(runtime, orgo_server::ServerConfig::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod builds;
mod computers;
mod config;
mod error;
mod extract;
mod keys;
mod openapi;
mod routes;
mod safety;
mod state;
mod sweep;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use orgo_runtime::{ErrorChain, Runtime, RuntimeError};
use tokio::sync::watch;

pub use builds::{BuildFailure, BuildStatus, BuildView, Frame, MAX_FRAMES};
pub use config::{Limits, ServerConfig};
pub use error::{ApiError, Code};
pub use keys::{KeyError, KeyInfo, KeyStore};
pub use openapi::{ApiDoc, openapi_json};

use crate::builds::Builds;
use crate::computers::Computers;
use crate::state::AppState;

/// How long a stopping server waits for requests in flight (an exec's
/// stream, say) before it returns anyway.
const DRAIN: Duration = Duration::from_secs(10);

/// A failure to start or run the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The runtime failed (sweeping, reading records).
    #[error("the runtime failed")]
    Runtime(#[source] RuntimeError),
    /// A file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The server: its state, ready to serve.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
}

/// What a server found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Orphaned computers removed (launches a killed server left).
    pub orphans: Vec<String>,
    /// Builds a killed server left `building`, now `failed`.
    pub interrupted_builds: usize,
    /// Computers of this server found running (or exited) again.
    pub computers: usize,
    /// Scratch directories of dead builds removed (their builder VMs
    /// killed).
    pub builder_dirs: Vec<std::path::PathBuf>,
}

impl Server {
    /// A server over `runtime`, after the recovery described in the crate
    /// docs.
    pub async fn open(runtime: Runtime, config: ServerConfig) -> Result<Server, ServerError> {
        Ok(Self::open_recovered(runtime, config).await?.0)
    }

    /// [`open`](Self::open), also saying what was recovered.
    pub async fn open_recovered(
        runtime: Runtime,
        config: ServerConfig,
    ) -> Result<(Server, Recovered), ServerError> {
        let home = runtime.store().root().to_path_buf();
        // The builder VMs first: with their scratch directories gone, the
        // runtime's sweep also removes their networks (namespace, orgo-netd).
        let builders = sweep::builders(&home);
        let orphans = runtime.sweep().await.map_err(ServerError::Runtime)?;
        let builds = Arc::new(Builds::new(&home, config.limits.builds));
        let interrupted = builds.recover().map_err(|source| ServerError::Io {
            what: "cannot recover the build markers".into(),
            source,
        })?;
        let computers = Computers::new(&home, config.limits.computers_per_namespace);
        let found = computers.recover(&runtime).map_err(ServerError::Runtime)?;
        let (stop, stopping) = watch::channel(false);
        let state = Arc::new(AppState {
            keys: Arc::new(KeyStore::new(&home)),
            runtime,
            builds,
            computers,
            config,
            stopping,
        });
        let recovered = Recovered {
            orphans,
            interrupted_builds: interrupted.len(),
            builder_dirs: builders,
            computers: found,
        };
        Ok((Server { state, stop }, recovered))
    }

    /// The API as an axum router (for tests, or to nest in another).
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.state))
    }

    /// Serves on `listener` until `shutdown` completes; then stops
    /// accepting, cancels the builds (reported `failed`, `cancelled`),
    /// waits a little for requests in flight, stops the parked computers
    /// of the warm pool, and returns. Launched computers keep running.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = self.router();
        let state = Arc::clone(&self.state);
        let stop = self.stop;
        let (stopped_tx, mut stopped_rx) = watch::channel(false);
        let signal = {
            let state = Arc::clone(&state);
            async move {
                shutdown.await;
                let _ = stop.send(true);
                state.builds.cancel_all().await;
                let _ = stopped_tx.send(true);
            }
        };
        let serving = axum::serve(listener, router).with_graceful_shutdown(signal);
        let drained = async {
            let _ = stopped_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        };
        let result = tokio::select! {
            result = serving => result,
            () = drained => Ok(()),
        };
        state.runtime.drain().await;
        result.map_err(|source| ServerError::Io {
            what: "the server failed".into(),
            source,
        })
    }
}

/// An error as one line, its causes included (for the CLI).
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    ErrorChain(error).to_string()
}
