//! `/api/computers`: launch computers, list and stop them, run commands
//! in them (streamed as NDJSON) and move files in and out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use orgo_runtime::{ComputerState, Exec, LaunchOptions, Stream, Vault};
use orgo_template::TemplateRef;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Principal};
use crate::builds::BuildStatus;
use crate::computers::{Owner, Slot};
use crate::error::{ApiError, Code};
use crate::extract::{P, Q, read_capped, read_json};
use crate::routes::ndjson;
use crate::routes::templates::resolve;
use crate::safety::check_sources;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/computers", post(launch).get(list))
        .route("/api/computers/{id}", get(read).delete(stop))
        .route("/api/computers/{id}/exec", post(exec))
        .route("/api/computers/{id}/files", get(read_file).put(write_file))
}

/// What to launch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LaunchRequest {
    /// `[namespace/]name@version` (the namespace defaults to the key's): a
    /// template, built first if needed, or a published checkpoint
    /// (`POST /api/computers/{id}/checkpoint` with `publish`), launched
    /// from it with no build.
    #[schema(
        pattern = r"^([a-z0-9]+(-[a-z0-9]+)*/)?[a-z0-9]+(-[a-z0-9]+)*@(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$",
        max_length = 200
    )]
    template_ref: String,
    /// vCPUs (at least the snapshot's).
    #[schema(minimum = 1, maximum = 16)]
    cpu: Option<u32>,
    /// Memory in GiB (at least the snapshot's).
    #[schema(minimum = 1, maximum = 256)]
    ram_gb: Option<u32>,
    /// Not settable at launch here (the disk is the template's
    /// `hardware.disk_gb`): only 0 (or none) is accepted; other values
    /// are refused (422 `unsupported`).
    #[schema(maximum = 0)]
    disk_gb: Option<u32>,
    /// Extra environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Record every destination the computer reaches (names from TLS
    /// SNI, HTTP `Host` and DNS; bare addresses), for
    /// `GET /api/computers/{id}/egress` to turn into the smallest
    /// `egress_policy` allowing them (`orgo launch --egress-learn`).
    #[serde(default)]
    egress_learn: bool,
    /// Secret values by name: the only source of secrets for a launch over
    /// HTTP (the server's own environment and vault are never used).
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Idle minutes before the computer stops itself (over the template's
    /// `hardware.auto_stop_minutes`; 0 disables). The computer keeps the
    /// clock; API calls that run or move something are activity.
    auto_stop_minutes: Option<u32>,
}

/// A computer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ComputerView {
    /// Its id.
    id: String,
    /// `running`, `exited`, `launching`, `parked`, `orphaned` or `suspended`.
    status: String,
    /// The ref it was launched from.
    template_ref: String,
    /// vCPUs.
    cpu: u32,
    /// Memory in MiB.
    memory_mib: u64,
    /// Its forwarded ports (`apps[].ports[]`, and a desktop's VNC and
    /// noVNC), as `orgo ports` prints them.
    ports: Vec<PortView>,
    /// When it was launched (seconds since the Unix epoch).
    created_unix: u64,
    /// Whether it records what it reaches (`egress_learn` at launch).
    egress_learn: bool,
}

/// A forwarded port.
#[derive(Serialize, ToSchema)]
pub(crate) struct PortView {
    /// The port inside the computer.
    internal: u16,
    /// `tcp` or `udp`.
    protocol: String,
    /// Where the host reaches it, `ADDRESS:PORT`.
    address: String,
}

fn ports(record: &orgo_runtime::ComputerRecord) -> Vec<PortView> {
    record
        .ports
        .iter()
        .map(|p| PortView {
            internal: p.internal,
            protocol: p.protocol.clone(),
            address: p.address.to_string(),
        })
        .collect()
}

/// Computers.
#[derive(Serialize, ToSchema)]
pub(crate) struct ComputerList {
    /// Oldest first.
    computers: Vec<ComputerView>,
}

/// A stopped computer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Stopped {
    /// Its id.
    id: String,
    /// What `on_shutdown` printed.
    on_shutdown: Option<String>,
}

/// A command: an argv list, or one shell command line.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CommandSpec {
    /// Run as given, no shell.
    Argv(Vec<String>),
    /// Run by `/bin/sh -c`.
    Shell(String),
}

/// What to run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecRequest {
    /// The command.
    command: CommandSpec,
    /// Working directory.
    cwd: Option<String>,
    /// Run as this user (default root).
    user: Option<String>,
    /// Extra environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Kill it after this many seconds.
    #[schema(minimum = 1)]
    timeout_s: Option<u64>,
}

/// One line of an exec's NDJSON answer: output frames (`stdout`,
/// `stderr`, with the bytes in base64), then exactly one `exit` (or
/// `error`) frame.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExecFrame {
    /// `stdout`, `stderr`, `exit` or `error`.
    #[serde(rename = "type")]
    kind: String,
    /// The output's bytes, base64 (`stdout`, `stderr`).
    data: Option<String>,
    /// The exit code (`exit`), when it exited.
    exit_code: Option<i32>,
    /// The signal (`exit`), when a signal ended it.
    signal: Option<i32>,
    /// Whether the command's `timeout_s` killed it (`exit`).
    timed_out: Option<bool>,
    /// What failed (`error`): `{code, message, details}`.
    #[schema(value_type = Object, nullable)]
    error: Option<serde_json::Value>,
}

/// `?path=` (and `?mode=` for a write).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileQuery {
    /// An absolute path in the guest.
    #[param(pattern = "^/[^\\u0000]*$", max_length = 4096)]
    path: String,
    /// Octal mode of a written file (`0644`).
    #[param(pattern = "^[0-7]{1,4}$")]
    mode: Option<String>,
}

/// A written file.
#[derive(Serialize, ToSchema)]
pub(crate) struct Written {
    /// Its path.
    path: String,
    /// Its size.
    bytes: u64,
}

/// A computer's id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct IdPath {
    /// The computer's id.
    pub(crate) id: String,
}

pub(crate) fn view(owner: &Owner, status: Option<&orgo_runtime::ComputerStatus>) -> ComputerView {
    ComputerView {
        id: owner.id.clone(),
        status: status.map_or("gone", |s| s.state.as_str()).to_owned(),
        template_ref: owner.template_ref.clone(),
        cpu: status.map_or(0, |s| s.record.cpus),
        memory_mib: status.map_or(0, |s| s.record.memory_mib),
        ports: status.map_or_else(Vec::new, |s| ports(&s.record)),
        created_unix: status.map_or(0, |s| s.record.created_unix),
        egress_learn: status.is_some_and(|s| s.record.egress_learn),
    }
}

/// Launch a computer (building its template first if needed).
#[utoipa::path(
    post, path = "/api/computers", tag = "computers",
    request_body(content = LaunchRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "launched", body = ComputerView),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "outside the key's scope", body = crate::error::ErrorBody),
        (status = 404, description = "no such template", body = crate::error::ErrorBody),
        (status = 409, description = "a conflict", body = crate::error::ErrorBody),
        (status = 413, description = "the body is too large", body = crate::error::ErrorBody),
        (status = 422, description = "a refused field, source or secret; a failed build", body = crate::error::ErrorBody),
        (status = 429, description = "too many computers or builds (`Retry-After`)", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
        (status = 503, description = "the server is shutting down", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn launch(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: Body,
) -> Result<(StatusCode, Json<ComputerView>), ApiError> {
    state.accepting()?;
    principal.writer()?;
    let request: LaunchRequest = read_json(body, state.config.limits.json_bytes).await?;
    if request.disk_gb.is_some_and(|gb| gb != 0) {
        return Err(refused(
            "disk_gb",
            "the disk is the template's `hardware.disk_gb`; it is not set at launch",
        ));
    }
    if let Some(cpu) = request.cpu.filter(|c| !(1..=16).contains(c)) {
        return Err(ApiError::bad_request(format!(
            "cpu: `{cpu}` is not between 1 and 16"
        )));
    }
    if let Some(gb) = request.ram_gb.filter(|g| !(1..=256).contains(g)) {
        return Err(ApiError::bad_request(format!(
            "ram_gb: `{gb}` is not between 1 and 256"
        )));
    }
    env_names(&request.env)?;
    let text = if request.template_ref.contains('/') {
        request.template_ref.clone()
    } else {
        format!("{}/{}", principal.namespace(), request.template_ref)
    };
    let reference: TemplateRef = text.parse().map_err(|e: orgo_template::TemplateError| {
        ApiError::bad_request(format!("template_ref: {e}"))
    })?;
    principal.check(reference.namespace().as_str(), Access::Read)?;
    let options = LaunchOptions {
        cpus: request.cpu,
        memory_mib: request.ram_gb.map(|gb| u64::from(gb) * 1024),
        env: request.env,
        vault: Vault::new().with(request.secrets.clone()),
        egress_learn: request.egress_learn,
        auto_stop_minutes: request.auto_stop_minutes,
        // The server runs on: it restarts computers whose health checks
        // ask for it (`on_fail: restart_vm`) while it runs.
        detached: false,
    };
    // A published checkpoint launches from its snapshot, with no build.
    // The slot is held until the computer is owned.
    let (computer, _slot) = match state.runtime.published_checkpoint(&reference).await? {
        Some(digest) => {
            let slot = state.computers.reserve(principal.namespace())?;
            let computer = state
                .runtime
                .launch_checkpoint(&digest, options, &mut |_| {})
                .await?;
            (computer, slot)
        }
        None => launch_template(&state, &principal, &reference, options).await?,
    };
    let record = computer.record().clone();
    let owner = Owner {
        id: record.id.clone(),
        namespace: principal.namespace().to_owned(),
        template_ref: reference.to_string(),
    };
    state
        .computers
        .own(owner.clone())
        .map_err(|e| ApiError::internal(&e))?;
    state.computers.keep_secrets(&record.id, request.secrets);
    // It runs on its own from now on; the server keeps a connection.
    computer.detach();
    let _ = state.computers.handle(&state.runtime, &record.id).await;
    let ports = ports(&record);
    Ok((
        StatusCode::CREATED,
        Json(ComputerView {
            id: record.id,
            status: "running".into(),
            template_ref: owner.template_ref,
            cpu: record.cpus,
            memory_mib: record.memory_mib,
            ports,
            created_unix: record.created_unix,
            egress_learn: record.egress_learn,
        }),
    ))
}

/// Launches the template `reference` names, built first through the build
/// registry; returns it with the slot of the key's namespace it holds.
async fn launch_template<'a>(
    state: &'a AppState,
    principal: &Principal,
    reference: &TemplateRef,
    options: LaunchOptions,
) -> Result<(orgo_runtime::Computer, Slot<'a>), ApiError> {
    let template = resolve(state, principal, reference).await?;
    check_sources(&template, state.config.allow_file_root.as_deref())?;
    state.runtime.check(&template)?;
    let slot = state.computers.reserve(principal.namespace())?;
    // Built first, through the build registry (shared, limited, watched).
    let (job, _) = state
        .builds
        .start(&state.runtime, template.clone(), reference.to_string())
        .await?;
    let built = job.finished().await;
    if built.status != BuildStatus::Ready {
        let error = built.error.unwrap_or(crate::builds::BuildFailure {
            message: "the build failed".into(),
            field: None,
            output: None,
        });
        return Err(
            ApiError::new(Code::BuildFailed, error.message.clone()).details(json!({
                "field": error.field, "output": error.output,
            })),
        );
    }
    let computer = state
        .runtime
        .launch(&template, options, &mut |_| {})
        .await?;
    Ok((computer, slot))
}

/// Environment names are letters, digits and `_`, not starting with a
/// digit (as the runtime's).
fn env_names(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let bad = |name: &str| {
        let mut bytes = name.bytes();
        !(bytes
            .next()
            .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
            && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric()))
    };
    match env.keys().find(|k| bad(k)) {
        Some(name) => Err(ApiError::bad_request(format!(
            "env: `{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
        ))),
        None => Ok(()),
    }
}

fn refused(field: &str, why: &str) -> ApiError {
    ApiError::new(Code::Unsupported, format!("`{field}`: {why}")).details(json!({
        "fields": [{ "field": field, "missing": why }],
    }))
}

/// The key's namespace's computers.
#[utoipa::path(
    get, path = "/api/computers", tag = "computers",
    responses(
        (status = 200, description = "computers", body = ComputerList),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<ComputerList>, ApiError> {
    let statuses = state.runtime.computers()?;
    let computers = state
        .computers
        .owned(principal.namespace())
        .iter()
        .map(|owner| view(owner, statuses.iter().find(|s| s.record.id == owner.id)))
        .collect();
    Ok(Json(ComputerList { computers }))
}

/// A computer.
#[utoipa::path(
    get, path = "/api/computers/{id}", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "the computer", body = ComputerView),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<ComputerView>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    let status = state
        .runtime
        .computers()?
        .into_iter()
        .find(|s| s.record.id == id);
    Ok(Json(view(&owner, status.as_ref())))
}

/// Stop a computer: `on_shutdown`, power off, clean up.
#[utoipa::path(
    delete, path = "/api/computers/{id}", tag = "computers",
    params(IdPath),
    responses(
        (status = 200, description = "stopped", body = Stopped),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it cannot be stopped now", body = crate::error::ErrorBody),
        (status = 422, description = "`on_shutdown` failed (the computer is stopped)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stop(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
) -> Result<Json<Stopped>, ApiError> {
    let owner = state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    // The stop opens its own agent connection.
    state.computers.disconnect(&id).await;
    let result = state.runtime.stop(&owner.id).await;
    match result {
        Ok(said) => {
            state.computers.forget(&id).await;
            Ok(Json(Stopped {
                id,
                on_shutdown: said,
            }))
        }
        Err(orgo_runtime::RuntimeError::NotFound { .. }) => {
            state.computers.forget(&id).await;
            Err(ApiError::not_found(format!("computer `{id}`")))
        }
        Err(error @ orgo_runtime::RuntimeError::Build(_)) => {
            // `on_shutdown` failed; the computer is stopped all the same.
            state.computers.forget(&id).await;
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Run a command; its output streams back as NDJSON ([`ExecFrame`] lines).
#[utoipa::path(
    post, path = "/api/computers/{id}/exec", tag = "computers",
    params(IdPath),
    request_body(content = ExecRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`application/x-ndjson`: one `ExecFrame` per line, the last `exit` or `error`", content_type = "application/x-ndjson", body = ExecFrame),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 413, description = "the body is too large", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    body: Body,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    let request: ExecRequest = read_json(body, state.config.limits.json_bytes).await?;
    let computer = running(&state, &id).await?;
    let mut exec = match request.command {
        CommandSpec::Argv(argv) if argv.is_empty() => {
            return Err(ApiError::bad_request("command: an empty argv"));
        }
        CommandSpec::Argv(argv) => Exec::argv(argv),
        CommandSpec::Shell(line) => Exec::shell(line),
    };
    env_names(&request.env)?;
    exec.cwd = request.cwd;
    exec.user = request.user;
    exec.env = request.env;
    exec.timeout_ms = request.timeout_s.map(|s| s.saturating_mul(1000));
    let wait = Duration::from_secs(
        request
            .timeout_s
            .map_or(24 * 3600, |s| s.saturating_add(30)),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
    // The guest writes as fast as it likes and the client reads as slowly
    // as it likes: what waits between them is bounded. Past the bound the
    // output is dropped, and the stream ends with an error saying so.
    let backlog = Arc::new(Backlog::new(MAX_EXEC_BACKLOG));
    let disconnect = (Arc::clone(&state), id.clone());
    let queued = Arc::clone(&backlog);
    tokio::spawn(async move {
        let out = tx.clone();
        let mut dropped = 0usize;
        let mut forward = |stream: Stream, data: &[u8]| {
            let kind = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let data = base64::engine::general_purpose::STANDARD.encode(data);
            let frame = ndjson::line(&json!({"type": kind, "data": data}));
            let size = frame.as_ref().map_or(0, Bytes::len);
            // Once output is dropped, all later output is: no holes.
            if dropped > 0 || !queued.admit(size) {
                dropped += size;
                return;
            }
            let _ = out.send(frame);
        };
        let ended = computer.exec_streamed(exec, wait, &mut forward).await;
        let last = match ended {
            Ok(_) if dropped > 0 => ndjson::error_frame(&ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the command's output waiting for this client passed {} MiB; the rest was dropped (read the stream faster, or write less)",
                    MAX_EXEC_BACKLOG >> 20
                ),
            )),
            Ok(end) => json!({
                "type": "exit", "exit_code": end.status.code, "signal": end.status.signal,
                "timed_out": end.timed_out,
            }),
            Err(error) => {
                if matches!(error, orgo_runtime::RuntimeError::Agent(_)) {
                    // The connection may be broken: the next request connects again.
                    disconnect.0.computers.disconnect(&disconnect.1).await;
                }
                ndjson::error_frame(&ApiError::from(error))
            }
        };
        let _ = tx.send(ndjson::line(&last));
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |frame| {
        if let Ok(bytes) = &frame {
            backlog.taken(bytes.len());
        }
        frame
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The exec output a client may leave unread, encoded, before the rest is
/// dropped.
const MAX_EXEC_BACKLOG: usize = 64 << 20;

/// Bytes queued for a client and not yet taken by its connection, under a
/// cap.
struct Backlog {
    waiting: AtomicUsize,
    cap: usize,
}

impl Backlog {
    fn new(cap: usize) -> Backlog {
        Backlog {
            waiting: AtomicUsize::new(0),
            cap,
        }
    }

    /// Queues `size` bytes if they fit under the cap.
    fn admit(&self, size: usize) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w + size <= self.cap).then_some(w + size)
            })
            .is_ok()
    }

    /// `size` bytes were taken by the connection.
    fn taken(&self, size: usize) {
        self.waiting.fetch_sub(size, Ordering::AcqRel);
    }
}

/// A running computer's handle.
pub(crate) async fn running(
    state: &AppState,
    id: &str,
) -> Result<Arc<orgo_runtime::Computer>, ApiError> {
    let status = state
        .runtime
        .computers()?
        .into_iter()
        .find(|s| s.record.id == id)
        .ok_or_else(|| ApiError::not_found(format!("computer `{id}`")))?;
    if status.state == ComputerState::Suspended {
        return Err(orgo_runtime::RuntimeError::Suspended { id: id.to_owned() }.into());
    }
    if status.state != ComputerState::Running {
        return Err(ApiError::new(
            Code::Conflict,
            format!("computer `{id}` is {}", status.state.as_str()),
        ));
    }
    state.computers.handle(&state.runtime, id).await
}

fn guest_path(path: &str) -> Result<(), ApiError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "path: `{path}` is not an absolute path"
        )));
    }
    Ok(())
}

/// Write a file (the body's bytes, streamed in under the upload cap).
#[utoipa::path(
    put, path = "/api/computers/{id}/files", tag = "computers",
    params(IdPath, FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "written", body = Written),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 403, description = "a read-only key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key)", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 413, description = "over the upload cap", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn write_file(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<FileQuery>,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    principal.writer()?;
    guest_path(&query.path)?;
    let mode = query
        .mode
        .as_deref()
        .map(|m| {
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ApiError::bad_request(format!("mode: `{m}` is not an octal mode")))
        })
        .transpose()?;
    let bytes = read_capped(body, state.config.limits.file_bytes, "the file").await?;
    let computer = running(&state, &id).await?;
    let size = bytes.len() as u64;
    computer.write_file(&query.path, bytes, mode).await?;
    Ok(Json(Written {
        path: query.path,
        bytes: size,
    }))
}

/// Read a file's bytes.
#[utoipa::path(
    get, path = "/api/computers/{id}/files", tag = "computers",
    params(IdPath, FileQuery),
    responses(
        (status = 200, description = "the file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "a bad request", body = crate::error::ErrorBody),
        (status = 401, description = "no key", body = crate::error::ErrorBody),
        (status = 404, description = "no such computer (for this key), or no such file", body = crate::error::ErrorBody),
        (status = 409, description = "it is not running", body = crate::error::ErrorBody),
        (status = 502, description = "the guest agent failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn read_file(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    P(IdPath { id }): P<IdPath>,
    Q(query): Q<FileQuery>,
) -> Result<Response, ApiError> {
    state.computers.owner(principal.namespace(), &id)?;
    guest_path(&query.path)?;
    let computer = running(&state, &id).await?;
    let bytes = computer
        .read_file(&query.path)
        .await
        .map_err(|e| match &e {
            orgo_runtime::RuntimeError::Agent(orgo_runtime::AgentError::Guest {
                code: orgo_runtime::ErrorCode::NotFound,
                ..
            }) => ApiError::not_found(format!("file `{}` in computer `{id}`", query.path)),
            _ => ApiError::from(e),
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::Backlog;

    #[test]
    fn the_backlog_admits_up_to_its_cap_and_again_as_bytes_are_taken() {
        let backlog = Backlog::new(10);
        assert!(backlog.admit(6));
        assert!(backlog.admit(4));
        assert!(!backlog.admit(1), "over the cap");
        backlog.taken(6);
        assert!(backlog.admit(5));
        assert!(!backlog.admit(2));
        assert!(!Backlog::new(3).admit(4), "a frame larger than the cap");
    }
}
