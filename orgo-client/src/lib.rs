//! `orgo-client`: a client of `orgo serve`'s HTTP API (reqwest, rustls),
//! for the CLI's remote mode and the Python client.
//!
//! Every failure the server reports is a [`ClientError::Api`] with the
//! server's stable `code` (`not_found`, `version_conflict`,
//! `invalid_template`, ...), its message and details.
//!
//! ```no_run
//! # async fn run() -> Result<(), orgo_client::ClientError> {
//! let client = orgo_client::Client::new("http://127.0.0.1:8080", "orgo_...")?;
//! let published = client.publish(None, "api_version: orgo.ai/v1\nname: box@1.0.0\n").await?;
//! client.build(&published.reference, &mut |frame| eprintln!("{}", frame.line)).await?;
//! let computer = client.launch(&orgo_client::Launch::new(&published.reference)).await?;
//! let status = client
//!     .exec(&computer.id, &orgo_client::ExecRequest::shell("uname -a"), &mut |_, bytes| {
//!         print!("{}", String::from_utf8_lossy(bytes))
//!     })
//!     .await?;
//! client.stop(&computer.id).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A failure of a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable code.
        code: String,
        /// What went wrong.
        message: String,
        /// Code-specific fields.
        details: Value,
    },
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach the orgo server")]
    Http(#[source] reqwest::Error),
    /// The server answered with something this client does not read.
    #[error("unexpected answer from the orgo server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's code, for an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A publish's outcome.
#[derive(Debug, Clone, Deserialize)]
pub struct Published {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The template's digest.
    pub digest: String,
    /// `false` when it was published already.
    pub published: bool,
}

/// A listed template.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplateSummary {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its digest.
    pub digest: String,
}

/// A template read back.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplateDetail {
    /// `namespace/name@version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its digest.
    pub digest: String,
    /// The canonical document.
    pub document: Value,
    /// Its build.
    pub build: BuildView,
}

/// A build's state.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildView {
    /// The template's digest.
    pub digest: String,
    /// `none`, `building`, `ready` or `failed`.
    pub status: String,
    /// How long it took.
    pub build_time_ms: Option<u64>,
    /// The snapshot's digest, once ready.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Why it failed.
    pub error: Option<BuildFailure>,
}

/// Why a build failed.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildFailure {
    /// One line.
    pub message: String,
    /// The failing step's field.
    pub field: Option<String>,
    /// The failing step's output.
    pub output: Option<String>,
}

/// One line of a build's log.
#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// `info`, `output` or `error`.
    pub level: String,
    /// `status`, `step` or `output`.
    pub phase: String,
    /// `orgo`, `stdout` or `stderr`.
    pub source: String,
    /// The step's field.
    pub field: Option<String>,
    /// The text.
    pub line: String,
}

/// A build's outcome, as [`Client::build`] returns it.
#[derive(Debug, Clone)]
pub struct Built {
    /// The final state.
    pub view: BuildView,
    /// `true` when the snapshot was built already (or by another request).
    pub reused: bool,
}

/// What to launch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Launch {
    /// `[namespace/]name@version`.
    pub template_ref: String,
    /// vCPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory in GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<u32>,
    /// Extra environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Record what the computer reaches, for [`Client::egress`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub egress_learn: bool,
    /// Idle minutes before the computer stops itself (0 disables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_minutes: Option<u32>,
}

impl Launch {
    /// A launch of `template_ref` with the defaults.
    pub fn new(template_ref: &str) -> Launch {
        Launch {
            template_ref: template_ref.to_owned(),
            ..Launch::default()
        }
    }
}

/// A computer.
#[derive(Debug, Clone, Deserialize)]
pub struct ComputerView {
    /// Its id.
    pub id: String,
    /// `running`, `exited`, ...
    pub status: String,
    /// The ref it was launched from.
    pub template_ref: String,
    /// vCPUs.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Its forwarded ports (`apps[].ports[]`, a desktop's VNC and noVNC).
    pub ports: Vec<PortView>,
    /// When it was launched.
    #[serde(default)]
    pub created_unix: u64,
    /// Whether it records what it reaches ([`Launch::egress_learn`]).
    #[serde(default)]
    pub egress_learn: bool,
}

/// What a computer launched with [`Launch::egress_learn`] reached.
#[derive(Debug, Clone, Deserialize)]
pub struct EgressLearned {
    /// The names it used (TLS SNI, HTTP `Host`, DNS), sorted.
    pub names: Vec<String>,
    /// The addresses it reached without a name, sorted.
    pub addresses: Vec<String>,
    /// The smallest `egress_policy` allowing all of it, as YAML.
    pub policy: String,
}

/// A point on a computer's screen, in pixels from the top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// From the left edge.
    pub x: u32,
    /// From the top edge.
    pub y: u32,
}

/// A part of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The left edge.
    pub x: u32,
    /// The top edge.
    pub y: u32,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    /// The left one.
    #[default]
    Left,
    /// The middle one.
    Middle,
    /// The right one.
    Right,
}

/// Which way the wheel turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Up.
    Up,
    /// Down.
    Down,
    /// Left.
    Left,
    /// Right.
    Right,
}

/// One desktop action ([`Client::act`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DesktopAction {
    /// Click `button` at (`x`, `y`), twice with `double`.
    Click {
        /// From the left edge.
        x: u32,
        /// From the top edge.
        y: u32,
        /// Which button.
        button: Button,
        /// A double click.
        double: bool,
    },
    /// Move the pointer.
    Move {
        /// From the left edge.
        x: u32,
        /// From the top edge.
        y: u32,
    },
    /// Press `button` at `from`, release it at `to`.
    Drag {
        /// Where it is pressed.
        from: Point,
        /// Where it is released.
        to: Point,
        /// Which button.
        button: Button,
    },
    /// Type UTF-8 text.
    Type {
        /// The text.
        text: String,
    },
    /// Press a key combination (`ctrl+shift+t`, `Return`).
    Key {
        /// The combination, in `xdotool` syntax.
        combo: String,
    },
    /// Turn the wheel `amount` notches, at `at` if given.
    Scroll {
        /// Which way.
        direction: Direction,
        /// How many notches.
        amount: u32,
        /// Where (else where the pointer is).
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
    },
}

/// A forwarded port of a computer, as the server describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PortView {
    /// The port inside the computer.
    pub internal: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where the host reaches it, `ADDRESS:PORT`.
    pub address: String,
}

/// A command to run.
#[derive(Debug, Clone, Serialize)]
pub struct ExecRequest {
    /// An argv list (`["ls", "-l"]`) or a shell line.
    pub command: Value,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Kill it after this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

impl ExecRequest {
    /// Runs `argv`, no shell.
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> ExecRequest {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        ExecRequest::with(Value::from(argv))
    }

    /// Runs a shell line.
    pub fn shell(line: &str) -> ExecRequest {
        ExecRequest::with(Value::from(line))
    }

    fn with(command: Value) -> ExecRequest {
        ExecRequest {
            command,
            cwd: None,
            user: None,
            env: BTreeMap::new(),
            timeout_s: None,
        }
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when one ended it.
    pub signal: Option<i32>,
    /// Whether the request's `timeout_s` killed it.
    pub timed_out: bool,
}

/// A client of one server with one key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`) with `key`.
    pub fn new(url: &str, key: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends, and turns an error answer into [`ClientError::Api`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(ClientError::Http)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(|e| {
            ClientError::Protocol(format!("an error answer that is not JSON ({status}): {e}"))
        })?;
        Err(api_error(status, &body))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Publishes a document (YAML or JSON) in `namespace` (default: the key's).
    pub async fn publish(
        &self,
        namespace: Option<&str>,
        document: &str,
    ) -> Result<Published, ClientError> {
        let mut request = self.request(reqwest::Method::POST, "/api/templates");
        if let Some(ns) = namespace {
            request = request.query(&[("namespace", ns)]);
        }
        self.json(request.body(document.to_owned())).await
    }

    /// The templates of `namespace`, or of the key's namespace and `system`.
    pub async fn templates(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<TemplateSummary>, ClientError> {
        #[derive(Deserialize)]
        struct List {
            templates: Vec<TemplateSummary>,
        }
        let mut request = self.request(reqwest::Method::GET, "/api/templates");
        if let Some(ns) = namespace {
            request = request.query(&[("namespace", ns)]);
        }
        Ok(self.json::<List>(request).await?.templates)
    }

    /// The template `reference` (`ns/name@version`) names.
    pub async fn template(&self, reference: &str) -> Result<TemplateDetail, ClientError> {
        let path = ref_path(reference)?;
        self.json(self.request(reqwest::Method::GET, &format!("/api/templates/{path}")))
            .await
    }

    /// Builds `reference` (or joins its build), passing each log frame to
    /// `on_frame`, and returns the final state (a failed build is
    /// `Ok` with status `failed`).
    pub async fn build(
        &self,
        reference: &str,
        on_frame: &mut (dyn FnMut(Frame) + Send),
    ) -> Result<Built, ClientError> {
        #[derive(Deserialize)]
        struct Started {
            reused: bool,
        }
        let path = format!("/api/templates/{}/build", ref_path(reference)?);
        let started: Started = self
            .json(self.request(reqwest::Method::POST, &path))
            .await?;
        let response = self
            .send(self.request(reqwest::Method::GET, &format!("{path}/events")))
            .await?;
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&chunk.map_err(ClientError::Http)?);
            while let Some(end) = find(&buffer, b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                let (event, data) = sse_block(&block);
                match event.as_deref() {
                    Some("log") => {
                        if let Ok(frame) = serde_json::from_str(&data) {
                            on_frame(frame);
                        }
                    }
                    Some("end") => {
                        let view = serde_json::from_str(&data)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?;
                        return Ok(Built {
                            view,
                            reused: started.reused,
                        });
                    }
                    _ => {}
                }
            }
        }
        Err(ClientError::Protocol(
            "the build's event stream ended without its status".into(),
        ))
    }

    /// Launches a computer.
    pub async fn launch(&self, launch: &Launch) -> Result<ComputerView, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, "/api/computers")
                .json(launch),
        )
        .await
    }

    /// The key's computers.
    pub async fn computers(&self) -> Result<Vec<ComputerView>, ClientError> {
        #[derive(Deserialize)]
        struct List {
            computers: Vec<ComputerView>,
        }
        Ok(self
            .json::<List>(self.request(reqwest::Method::GET, "/api/computers"))
            .await?
            .computers)
    }

    /// A computer.
    pub async fn computer(&self, id: &str) -> Result<ComputerView, ClientError> {
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/computers/{}", segment(id)),
        ))
        .await
    }

    /// Stops a computer; returns what `on_shutdown` printed.
    pub async fn stop(&self, id: &str) -> Result<Option<String>, ClientError> {
        #[derive(Deserialize)]
        struct Stopped {
            on_shutdown: Option<String>,
        }
        let stopped: Stopped = self
            .json(self.request(
                reqwest::Method::DELETE,
                &format!("/api/computers/{}", segment(id)),
            ))
            .await?;
        Ok(stopped.on_shutdown)
    }

    /// Suspends a computer (`POST /api/computers/{id}/suspend`); returns
    /// how long its vCPUs stood, in milliseconds.
    pub async fn suspend(&self, id: &str) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Suspended {
            paused_ms: u64,
        }
        let suspended: Suspended = self
            .json(self.request(
                reqwest::Method::POST,
                &format!("/api/computers/{}/suspend", segment(id)),
            ))
            .await?;
        Ok(suspended.paused_ms)
    }

    /// Resumes a suspended computer (`POST /api/computers/{id}/resume`).
    pub async fn resume(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(self.request(
                reqwest::Method::POST,
                &format!("/api/computers/{}/resume", segment(id)),
            ))
            .await?;
        Ok(())
    }

    /// Checkpoints a computer (`POST /api/computers/{id}/checkpoint`),
    /// published under `publish` (`[namespace/]name@version`) if given;
    /// returns the checkpoint's digest.
    pub async fn checkpoint(&self, id: &str, publish: Option<&str>) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Checkpoint {
            digest: String,
        }
        let checkpoint: Checkpoint = self
            .json(
                self.request(
                    reqwest::Method::POST,
                    &format!("/api/computers/{}/checkpoint", segment(id)),
                )
                .json(&serde_json::json!({ "publish": publish })),
            )
            .await?;
        Ok(checkpoint.digest)
    }

    /// Forks a computer into `count` (`POST /api/computers/{id}/fork`),
    /// each given `secrets`; returns their ids.
    pub async fn fork(
        &self,
        id: &str,
        count: u32,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, ClientError> {
        #[derive(Deserialize)]
        struct Fork {
            computers: Vec<Forked>,
        }
        #[derive(Deserialize)]
        struct Forked {
            id: String,
        }
        let fork: Fork = self
            .json(
                self.request(
                    reqwest::Method::POST,
                    &format!("/api/computers/{}/fork", segment(id)),
                )
                .json(&serde_json::json!({ "count": count, "secrets": secrets })),
            )
            .await?;
        Ok(fork.computers.into_iter().map(|c| c.id).collect())
    }

    /// Runs a command, passing its output to `on_output` as it comes.
    pub async fn exec(
        &self,
        id: &str,
        exec: &ExecRequest,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExitStatus, ClientError> {
        let response = self
            .send(
                self.request(
                    reqwest::Method::POST,
                    &format!("/api/computers/{}/exec", segment(id)),
                )
                .json(exec),
            )
            .await?;
        let mut exit = None;
        ndjson(response, &mut |frame| {
            match frame["type"].as_str() {
                Some(kind @ ("stdout" | "stderr")) => {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(frame["data"].as_str().unwrap_or(""))
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let stream = if kind == "stdout" {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    on_output(stream, &data);
                }
                Some("exit") => {
                    let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
                    exit = Some(ExitStatus {
                        code: int(&frame["exit_code"]),
                        signal: int(&frame["signal"]),
                        timed_out: frame["timed_out"].as_bool().unwrap_or(false),
                    });
                }
                _ => {
                    return Err(ClientError::Protocol(format!(
                        "an exec frame of no known type: {frame}"
                    )));
                }
            }
            Ok(())
        })
        .await?;
        exit.ok_or_else(|| {
            ClientError::Protocol("the exec stream ended without an exit status".into())
        })
    }

    /// Writes a file in the computer.
    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        bytes: Vec<u8>,
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        let mut query = vec![("path", path.to_owned())];
        if let Some(mode) = mode {
            query.push(("mode", format!("{mode:o}")));
        }
        self.send(
            self.request(
                reqwest::Method::PUT,
                &format!("/api/computers/{}/files", segment(id)),
            )
            .query(&query)
            .body(bytes),
        )
        .await
        .map(drop)
    }

    /// Reads a file from the computer.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = self
            .send(
                self.request(
                    reqwest::Method::GET,
                    &format!("/api/computers/{}/files", segment(id)),
                )
                .query(&[("path", path)]),
            )
            .await?;
        Ok(response.bytes().await.map_err(ClientError::Http)?.to_vec())
    }

    /// A computer's service logs: `on_line(service, line)` for each line,
    /// one service's (or `trigger.NAME`'s) or every log; `since_s` only the
    /// last while; `follow` waits for new lines until the call is dropped.
    pub async fn logs(
        &self,
        id: &str,
        service: Option<&str>,
        since_s: Option<u64>,
        follow: bool,
        on_line: &mut (dyn FnMut(&str, &str) + Send),
    ) -> Result<(), ClientError> {
        let mut query = vec![("follow", follow.to_string())];
        if let Some(service) = service {
            query.push(("service", service.to_owned()));
        }
        if let Some(since) = since_s {
            query.push(("since_s", since.to_string()));
        }
        let response = self
            .send(
                self.request(
                    reqwest::Method::GET,
                    &format!("/api/computers/{}/logs", segment(id)),
                )
                .query(&query),
            )
            .await?;
        ndjson(response, &mut |line| {
            on_line(
                line["service"].as_str().unwrap_or_default(),
                line["line"].as_str().unwrap_or_default(),
            );
            Ok(())
        })
        .await
    }

    /// A computer's events, oldest first: `on_event` gets each as the JSON
    /// object `orgo events` prints (`ts`, `seq`, `kind`, ...); `follow`
    /// waits for new ones until the call is dropped.
    pub async fn events(
        &self,
        id: &str,
        follow: bool,
        on_event: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), ClientError> {
        let response = self
            .send(
                self.request(
                    reqwest::Method::GET,
                    &format!("/api/computers/{}/events", segment(id)),
                )
                .query(&[("follow", follow)]),
            )
            .await?;
        ndjson(response, &mut |event| {
            on_event(event);
            Ok(())
        })
        .await
    }

    /// Fires a computer's webhook triggers of `path` with `data`; returns
    /// the triggers that ran.
    pub async fn trigger(
        &self,
        id: &str,
        path: &str,
        data: Vec<u8>,
    ) -> Result<Vec<String>, ClientError> {
        #[derive(Deserialize)]
        struct Fired {
            triggers: Vec<String>,
        }
        let fired: Fired = self
            .json(
                self.request(
                    reqwest::Method::POST,
                    &format!("/api/computers/{}/webhooks", segment(id)),
                )
                .query(&[("path", path)])
                .body(data),
            )
            .await?;
        Ok(fired.triggers)
    }

    /// A computer's metrics, in the Prometheus text format.
    pub async fn metrics(&self, id: &str) -> Result<String, ClientError> {
        let response = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("/api/computers/{}/metrics", segment(id)),
            ))
            .await?;
        response.text().await.map_err(ClientError::Http)
    }
}

/// Reads an NDJSON answer: each object to `on_item`, until the body ends;
/// an `{"type": "error", "error": ...}` line is the call's error.
async fn ndjson(
    response: reqwest::Response,
    on_item: &mut (dyn FnMut(Value) -> Result<(), ClientError> + Send),
) -> Result<(), ClientError> {
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk.map_err(ClientError::Http)?);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let item: Value =
                serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
            if item["type"] == "error" {
                return Err(api_error(200, &item));
            }
            on_item(item)?;
        }
    }
    Ok(())
}

/// The server's `{"error": {code, message, details}}` (an answer's body,
/// or a stream's last line) as [`ClientError::Api`].
fn api_error(status: u16, body: &Value) -> ClientError {
    let error = &body["error"];
    ClientError::Api {
        status,
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"].as_str().unwrap_or("").to_owned(),
        details: error["details"].clone(),
    }
}

impl Client {
    /// What a computer launched with [`Launch::egress_learn`] has reached.
    pub async fn egress(&self, id: &str) -> Result<EgressLearned, ClientError> {
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/computers/{}/egress", segment(id)),
        ))
        .await
    }

    /// A PNG of the computer's screen, or of `region` of it.
    pub async fn screenshot(
        &self,
        id: &str,
        region: Option<Region>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut request = self.request(
            reqwest::Method::GET,
            &format!("/api/computers/{}/desktop/screenshot", segment(id)),
        );
        if let Some(r) = region {
            request = request.query(&[
                ("x", r.x),
                ("y", r.y),
                ("width", r.width),
                ("height", r.height),
            ]);
        }
        let response = self.send(request).await?;
        Ok(response.bytes().await.map_err(ClientError::Http)?.to_vec())
    }

    /// Does one desktop action.
    pub async fn act(&self, id: &str, action: &DesktopAction) -> Result<(), ClientError> {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/api/computers/{}/desktop/actions", segment(id)),
            )
            .json(action),
        )
        .await
        .map(drop)
    }

    /// Where the pointer is.
    pub async fn cursor(&self, id: &str) -> Result<Point, ClientError> {
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/computers/{}/desktop/cursor", segment(id)),
        ))
        .await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(event, data)` of one SSE block.
fn sse_block(block: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(block);
    let mut event = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    (event, data)
}

/// `ns/name/version` of `ns/name@version`.
fn ref_path(reference: &str) -> Result<String, ClientError> {
    let (ns, rest) = reference.split_once('/').ok_or_else(|| {
        ClientError::Protocol(format!("`{reference}` is not `namespace/name@version`"))
    })?;
    let (name, version) = rest.split_once('@').ok_or_else(|| {
        ClientError::Protocol(format!("`{reference}` is not `namespace/name@version`"))
    })?;
    Ok(format!(
        "{}/{}/{}",
        segment(ns),
        segment(name),
        segment(version)
    ))
}

/// A path segment, percent-encoded where needed.
fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_and_ref_paths() {
        let (event, data) = sse_block(b"event: end\ndata: {\"a\":1}\n\n");
        assert_eq!(
            (event.as_deref(), data.as_str()),
            (Some("end"), "{\"a\":1}")
        );
        assert_eq!(
            ref_path("team/app@1.0.0+b").expect("a ref"),
            "team/app/1.0.0%2Bb"
        );
        assert!(ref_path("app@1.0.0").is_err());
    }

    #[test]
    fn desktop_actions_are_tagged_as_the_server_reads_them() {
        let scroll = DesktopAction::Scroll {
            direction: Direction::Down,
            amount: 2,
            at: None,
        };
        assert_eq!(
            serde_json::to_value(&scroll).expect("serializes"),
            serde_json::json!({"action": "scroll", "direction": "down", "amount": 2})
        );
        let drag = DesktopAction::Drag {
            from: Point { x: 1, y: 2 },
            to: Point { x: 3, y: 4 },
            button: Button::Right,
        };
        assert_eq!(
            serde_json::to_value(&drag).expect("serializes"),
            serde_json::json!({"action": "drag", "from": {"x": 1, "y": 2}, "to": {"x": 3, "y": 4}, "button": "right"})
        );
    }
}
