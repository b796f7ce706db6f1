//! Telemetry push: the lines of the logs `telemetry.logs` names, and the
//! metrics, sent to `telemetry.otel_endpoint` as OTLP/HTTP with the JSON
//! encoding (`POST /v1/logs`, `POST /v1/metrics`), each batch with the
//! computer's resource attributes (its id, its template) and, for logs, the
//! service's `service.name`.
//!
//! A service never waits for the network: its pump hands lines to a buffer
//! of at most [`BUFFER_LINES`] lines (each cut to [`MAX_LINE_BYTES`]); when
//! it is full the oldest line is dropped and counted
//! (`orgo_telemetry_dropped_lines_total`). A thread sends a batch every
//! [`FLUSH_EVERY`] and the metrics every [`METRICS_EVERY`]; a failed send is
//! retried with backoff from 1 s, doubling up to [`MAX_BACKOFF`], its lines
//! kept in the buffer. `http://` endpoints are spoken to directly; `https://`
//! ones through the guest's `curl`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::Agent;
use crate::events::now_ms;

/// The most lines waiting to be sent.
pub(crate) const BUFFER_LINES: usize = 10_000;
/// The longest line sent (longer ones are cut).
pub(crate) const MAX_LINE_BYTES: usize = 16 << 10;
/// The most lines in one request.
const BATCH_LINES: usize = 1000;
/// How often lines are sent.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often the metrics are sent.
pub(crate) const METRICS_EVERY: Duration = Duration::from_secs(15);
/// The longest wait between retries.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Line {
    service: String,
    unix_ms: u64,
    text: String,
}

/// One shipping setup; replaced whole by a new [`Shipper::start`].
pub(crate) struct Shipper {
    endpoint: String,
    resource: BTreeMap<String, String>,
    buffer: Mutex<VecDeque<Line>>,
    /// Set when the setup is replaced: the thread ends.
    stopped: Mutex<bool>,
    wake: Condvar,
    pub(crate) dropped: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) failures: AtomicU64,
}

impl Shipper {
    /// Starts shipping to `endpoint`; the thread holds the agent weakly.
    pub(crate) fn start(
        agent: &Arc<Agent>,
        endpoint: String,
        resource: BTreeMap<String, String>,
    ) -> std::io::Result<Arc<Shipper>> {
        let shipper = Arc::new(Shipper {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            resource,
            buffer: Mutex::new(VecDeque::new()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let (weak_agent, for_thread) = (Arc::downgrade(agent), Arc::clone(&shipper));
        std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || for_thread.run(&weak_agent))?;
        Ok(shipper)
    }

    pub(crate) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Takes lines of `service` (never waits on the network).
    pub(crate) fn push(&self, service: &str, lines: impl IntoIterator<Item = String>) {
        let unix_ms = now_ms();
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        for mut text in lines {
            crate::events::cut_to(&mut text, MAX_LINE_BYTES);
            if buffer.len() >= BUFFER_LINES {
                buffer.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            buffer.push_back(Line {
                service: service.to_owned(),
                unix_ms,
                text,
            });
        }
    }

    /// Sleeps `d` unless stopped; `false` when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        !*guard
    }

    fn run(&self, agent: &Weak<Agent>) {
        let mut backoff = Duration::from_secs(1);
        let mut next_metrics = Instant::now();
        let mut wait = FLUSH_EVERY;
        while self.sleep(wait) {
            let Some(agent) = agent.upgrade() else { return };
            let mut ok = true;
            let batch: Vec<Line> = {
                let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
                let n = buffer.len().min(BATCH_LINES);
                buffer.drain(..n).collect()
            };
            if !batch.is_empty() {
                match self.post(&agent, "/v1/logs", &self.logs_body(&batch)) {
                    Ok(()) => {
                        self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        ok = false;
                        self.put_back(batch);
                    }
                }
            }
            if ok && Instant::now() >= next_metrics {
                let text = crate::metrics::render(&agent);
                match self.post(&agent, "/v1/metrics", &self.metrics_body(&text)) {
                    Ok(()) => next_metrics = Instant::now() + METRICS_EVERY,
                    Err(_) => ok = false,
                }
            }
            if ok {
                backoff = Duration::from_secs(1);
                wait = FLUSH_EVERY;
            } else {
                self.failures.fetch_add(1, Ordering::Relaxed);
                wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// A batch that could not be sent goes back in front (the cap holds:
    /// what does not fit, the oldest, is dropped and counted).
    fn put_back(&self, batch: Vec<Line>) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        for line in batch.into_iter().rev() {
            if buffer.len() >= BUFFER_LINES {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buffer.push_front(line);
        }
    }

    fn attributes(&self, extra: &[(&str, &str)]) -> Value {
        let mut list: Vec<Value> = self
            .resource
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect();
        list.extend(
            extra
                .iter()
                .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})),
        );
        Value::Array(list)
    }

    /// `ExportLogsServiceRequest` in OTLP's JSON: one resource per service.
    fn logs_body(&self, batch: &[Line]) -> Value {
        let mut by_service: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for line in batch {
            let nanos = (u128::from(line.unix_ms) * 1_000_000).to_string();
            by_service.entry(&line.service).or_default().push(json!({
                "timeUnixNano": nanos,
                "observedTimeUnixNano": nanos,
                "severityNumber": 9,
                "severityText": "INFO",
                "body": {"stringValue": line.text},
            }));
        }
        let resource_logs: Vec<Value> = by_service
            .into_iter()
            .map(|(service, records)| {
                json!({
                    "resource": {"attributes": self.attributes(&[("service.name", service)])},
                    "scopeLogs": [{"scope": {"name": "orgo-agent"}, "logRecords": records}],
                })
            })
            .collect();
        json!({ "resourceLogs": resource_logs })
    }

    /// `ExportMetricsServiceRequest` in OTLP's JSON, from the Prometheus
    /// text: counters as cumulative monotonic sums, the rest as gauges.
    fn metrics_body(&self, text: &str) -> Value {
        let nanos = (u128::from(now_ms()) * 1_000_000).to_string();
        let mut kinds: BTreeMap<String, String> = BTreeMap::new();
        let mut points: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    kinds.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let attributes: Vec<Value> = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some(json!({"key": k, "value": {"stringValue": v.trim_matches('"')}}))
                })
                .collect();
            points.entry(name.to_owned()).or_default().push(json!({
                "attributes": attributes,
                "timeUnixNano": nanos,
                "asDouble": value,
            }));
        }
        let metrics: Vec<Value> = points
            .into_iter()
            .map(|(name, data_points)| {
                if kinds.get(&name).is_some_and(|k| k == "counter") {
                    json!({"name": name, "sum": {
                        "dataPoints": data_points,
                        "aggregationTemporality": 2,
                        "isMonotonic": true,
                    }})
                } else {
                    json!({"name": name, "gauge": {"dataPoints": data_points}})
                }
            })
            .collect();
        json!({"resourceMetrics": [{
            "resource": {"attributes": self.attributes(&[])},
            "scopeMetrics": [{"scope": {"name": "orgo-agent"}, "metrics": metrics}],
        }]})
    }

    fn post(&self, agent: &Arc<Agent>, path: &str, body: &Value) -> Result<(), String> {
        let url = format!("{}{path}", self.endpoint);
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        if let Some(rest) = url.strip_prefix("http://") {
            post_http(rest, &body)
        } else {
            post_curl(agent, &url, body)
        }
    }
}

/// POSTs `body` as JSON over HTTP/1.1 to `host[:port]/path`; 2xx passes.
fn post_http(rest: &str, body: &[u8]) -> Result<(), String> {
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` has no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: orgo-agent\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut answer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let status = String::from_utf8_lossy(&answer[..got]);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        other => Err(format!("answered `{}`", other.unwrap_or_default())),
    }
}

/// POSTs through the guest's curl (https).
fn post_curl(agent: &Arc<Agent>, url: &str, body: Vec<u8>) -> Result<(), String> {
    let argv = [
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        "--max-time",
        "10",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@-",
        url,
    ];
    let mut prepared = crate::exec::prepare(
        agent,
        &orgo_agent_protocol::Command::Argv(argv.map(String::from).to_vec()),
        &BTreeMap::new(),
        Some("/"),
        None,
    )
    .map_err(|e| e.message)?;
    let cmd = &mut prepared.command;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (mut child, waiter) = agent
        .spawner()
        .start(cmd)
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
    }
    match waiter.wait_or_kill(Some(REQUEST_TIMEOUT + Duration::from_secs(5))) {
        (status, false) if status.success() => Ok(()),
        (status, _) => Err(format!("curl ended with {status}")),
    }
}
