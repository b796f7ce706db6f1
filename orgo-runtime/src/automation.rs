//! The in-guest automation from the host: a template's triggers as the
//! agent takes them (pure), and a computer's logs and events read back
//! ([`LogReader`], [`EventReader`]), once or followed.
//!
//! The agent keeps both (see the `orgo-agent` crate): logs in
//! `/var/log/orgo/<service>.log` unless `log:` names another file, rotated
//! at 10 MiB with one older file kept; events in a ring of the newest 4096,
//! the oldest dropped first. Following polls the agent every
//! [`FOLLOW_POLL`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orgo_agent_protocol::{
    EventRecord, FileEvent, Op, Reply, TriggerAction, TriggerSource, TriggerSpec,
};
use orgo_template::Template;

use crate::agent::{AgentClient, AgentError};
use crate::error::RuntimeError;
use crate::guest::{QUICK, call};

/// How often a follower asks the agent for more.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The triggers of `template`, as the agent takes them.
pub(crate) fn triggers(template: &Template) -> Vec<TriggerSpec> {
    template
        .triggers()
        .iter()
        .filter_map(|t| {
            let source = match &t.source {
                orgo_template::TriggerSource::Schedule { cron } => {
                    TriggerSource::Schedule { cron: cron.clone() }
                }
                orgo_template::TriggerSource::Webhook { path } => {
                    TriggerSource::Webhook { path: path.clone() }
                }
                orgo_template::TriggerSource::File { path, events } => TriggerSource::File {
                    path: path.clone(),
                    events: events
                        .iter()
                        .filter_map(|e| match e {
                            orgo_template::FileEvent::Create => Some(FileEvent::Create),
                            orgo_template::FileEvent::Modify => Some(FileEvent::Modify),
                            orgo_template::FileEvent::Delete => Some(FileEvent::Delete),
                            _ => None,
                        })
                        .collect(),
                },
                orgo_template::TriggerSource::Health { app } => TriggerSource::Health {
                    app: app.to_string(),
                },
                _ => return None,
            };
            let actions = t
                .actions
                .iter()
                .filter_map(|a| match a {
                    orgo_template::TriggerAction::Run(command) => Some(TriggerAction::Run {
                        command: command.clone(),
                    }),
                    orgo_template::TriggerAction::RestartService(service) => {
                        Some(TriggerAction::RestartService {
                            service: service.to_string(),
                        })
                    }
                    orgo_template::TriggerAction::Alert(message) => Some(TriggerAction::Alert {
                        message: message.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Some(TriggerSpec {
                name: t.name.to_string(),
                source,
                actions,
                dedup_ms: t.dedup.map(|d| d.as_millis()).filter(|ms| *ms > 0),
            })
        })
        .collect()
}

/// The agent's auto-stop setting for `template` launched with
/// `minutes` (over the template's `hardware.auto_stop_minutes`); `None`
/// when it is off.
pub(crate) fn auto_stop(template: &Template, minutes: Option<u32>) -> Option<Op> {
    let minutes = minutes.or(template.hardware().auto_stop_minutes)?;
    (minutes > 0).then(|| Op::SetAutoStop {
        idle_ms: u64::from(minutes) * 60_000,
        on_shutdown: template.hooks().on_shutdown.clone(),
    })
}

/// The agent's telemetry setting for computer `id` of `template`: the
/// scrape endpoint, the logs shipped and the OTLP endpoint, with the
/// resource attributes `orgo.computer.id`, `orgo.template` (`name@version`)
/// and `orgo.template.digest`; `None` without `telemetry`.
pub(crate) fn telemetry(template: &Template, id: &str) -> Option<Op> {
    let telemetry = template.telemetry()?;
    let resource = std::collections::BTreeMap::from([
        ("orgo.computer.id".to_owned(), id.to_owned()),
        (
            "orgo.template".to_owned(),
            format!(
                "{}@{}",
                template.template().name,
                template.template().version
            ),
        ),
        (
            "orgo.template.digest".to_owned(),
            template.digest().to_string(),
        ),
    ]);
    Some(Op::SetTelemetry {
        metrics: telemetry.metrics,
        logs: telemetry.logs.clone(),
        otel_endpoint: telemetry.otel_endpoint.as_ref().map(|u| u.to_string()),
        resource,
    })
}

/// The most of a computer's console log read for why it stopped.
const CONSOLE_TAIL_BYTES: u64 = 64 << 10;

/// Why computer `dir` stopped on its own, from its console log's tail:
/// `auto_stop after N s idle`.
pub(crate) fn stop_reason(dir: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(dir.join("console.log")).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_BYTES)))
        .ok()?;
    let mut tail = Vec::new();
    file.take(CONSOLE_TAIL_BYTES).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let mark = orgo_agent_protocol::AUTO_STOP_MARK;
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.find(mark).map(|i| &l[i..]))?;
    let rest: String = line[mark.len()..]
        .chars()
        .take(64)
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    Some(format!("auto_stop{}", rest.trim_end()))
}

/// One line of a computer's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The log's name: its service's, or `trigger.NAME` for a trigger's
    /// `run` actions.
    pub service: String,
    /// The line, without its newline (bytes that are not UTF-8 replaced).
    pub line: String,
}

struct Followed {
    name: String,
    /// Where the next read starts; `None` before the first.
    next: Option<u64>,
    /// The start of a line not ended yet.
    partial: Vec<u8>,
}

/// A computer's logs, line by line: from [`Computer::logs`](crate::Computer::logs).
pub struct LogReader {
    agent: Arc<AgentClient>,
    /// Only this log; else every log, new ones included.
    only: Option<String>,
    since_unix_ms: Option<u64>,
    follow: bool,
    logs: Vec<Followed>,
    ready: VecDeque<LogLine>,
    listed: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("only", &self.only)
            .field("follow", &self.follow)
            .finish_non_exhaustive()
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LogReader {
    pub(crate) fn new(
        agent: Arc<AgentClient>,
        service: Option<&str>,
        since: Option<Duration>,
        follow: bool,
    ) -> LogReader {
        // The guest's clock was set from the host's at launch.
        let since_unix_ms =
            since.map(|d| unix_ms(SystemTime::now()).saturating_sub(d.as_millis() as u64));
        LogReader {
            agent,
            only: service.map(str::to_owned),
            since_unix_ms,
            follow,
            logs: Vec::new(),
            ready: VecDeque::new(),
            listed: false,
        }
    }

    /// The next line; `None` at the end (never, when following).
    pub async fn next(&mut self) -> Result<Option<LogLine>, RuntimeError> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Ok(Some(line));
            }
            let got = self.poll().await?;
            if !got {
                if !self.follow {
                    // The end: lines not ended yet count as lines.
                    for log in &mut self.logs {
                        if !log.partial.is_empty() {
                            let line = String::from_utf8_lossy(&log.partial).into_owned();
                            log.partial.clear();
                            self.ready.push_back(LogLine {
                                service: log.name.clone(),
                                line,
                            });
                        }
                    }
                    return Ok(self.ready.pop_front());
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }

    /// Reads what is new in every log; whether anything was.
    async fn poll(&mut self) -> Result<bool, RuntimeError> {
        if !self.listed || (self.follow && self.only.is_none()) {
            let names = match &self.only {
                Some(name) => vec![name.clone()],
                None => match call(&self.agent, |a| a.request(Op::ListLogs, QUICK)).await? {
                    Reply::LogNames { names } => names,
                    other => return Err(unexpected("list_logs", &other)),
                },
            };
            for name in names {
                if !self.logs.iter().any(|l| l.name == name) {
                    self.logs.push(Followed {
                        name,
                        next: None,
                        partial: Vec::new(),
                    });
                }
            }
            self.listed = true;
        }
        let mut any = false;
        for log in &mut self.logs {
            loop {
                let op = Op::ReadLog {
                    name: log.name.clone(),
                    offset: log.next,
                    since_unix_ms: if log.next.is_none() {
                        self.since_unix_ms
                    } else {
                        None
                    },
                    max_bytes: None,
                };
                let (data, next) = match call(&self.agent, move |a| a.request(op, QUICK)).await? {
                    Reply::Log { data, next, .. } => (data.0, next),
                    other => return Err(unexpected("read_log", &other)),
                };
                log.next = Some(next);
                if data.is_empty() {
                    break;
                }
                any = true;
                log.partial.extend_from_slice(&data);
                while let Some(end) = log.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = log.partial.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    self.ready.push_back(LogLine {
                        service: log.name.clone(),
                        line: text.trim_end_matches('\r').to_owned(),
                    });
                }
            }
        }
        Ok(any)
    }
}

/// A computer's events, oldest first: from [`Computer::events`](crate::Computer::events).
pub struct EventReader {
    agent: Arc<AgentClient>,
    after: Option<u64>,
    follow: bool,
    ready: VecDeque<EventRecord>,
    /// Events the ring dropped before they were read.
    dropped: u64,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("after", &self.after)
            .field("follow", &self.follow)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub(crate) fn new(agent: Arc<AgentClient>, follow: bool) -> EventReader {
        EventReader {
            agent,
            after: None,
            follow,
            ready: VecDeque::new(),
            dropped: 0,
        }
    }

    /// How many events the ring dropped (it was full) before this reader
    /// got to them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next event; `None` at the end (never, when following).
    pub async fn next(&mut self) -> Result<Option<EventRecord>, RuntimeError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let after = self.after;
            let op = Op::ReadEvents { after, max: None };
            match call(&self.agent, move |a| a.request(op, QUICK)).await? {
                Reply::Events { events, dropped } => {
                    self.dropped += dropped;
                    if let Some(last) = events.last() {
                        self.after = Some(last.seq);
                    }
                    self.ready.extend(events);
                }
                other => return Err(unexpected("read_events", &other)),
            }
            if self.ready.is_empty() {
                if !self.follow {
                    return Ok(None);
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }
}

/// An event as one JSON object: `ts` (RFC 3339, UTC, milliseconds, on the
/// guest's clock), `seq`, `kind` (`service_exited`, `trigger_fired`,
/// `alert`, ...) and the event's fields.
pub fn event_json(record: &EventRecord) -> serde_json::Value {
    let at = UNIX_EPOCH + Duration::from_millis(record.ts_ms);
    let mut out = serde_json::Map::new();
    out.insert(
        "ts".into(),
        humantime::format_rfc3339_millis(at).to_string().into(),
    );
    out.insert("seq".into(), record.seq.into());
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&record.event) {
        for (key, value) in fields {
            let key = if key == "event" {
                "kind".to_owned()
            } else {
                key
            };
            out.insert(key, value);
        }
    }
    serde_json::Value::Object(out)
}

fn unexpected(op: &'static str, reply: &Reply) -> RuntimeError {
    RuntimeError::Agent(AgentError::Unexpected {
        op,
        reply: format!("{reply:?}"),
    })
}

impl crate::Computer {
    /// How long it has been idle (see the agent's auto-stop: exec, file and
    /// other requests, trigger firings, attached terminals and inbound
    /// connections are activity).
    pub async fn idle(&self) -> Result<Duration, RuntimeError> {
        match call(&self.agent(), |a| a.request(Op::Idle, QUICK)).await? {
            Reply::Idle { idle_ms } => Ok(Duration::from_millis(idle_ms)),
            other => Err(unexpected("idle", &other)),
        }
    }

    /// Its logs, line by line: one service's (or `trigger.NAME`'s), else
    /// every log the agent writes; from `since` ago (to the second), else
    /// from the oldest line kept; with `follow`, new lines as they come.
    pub fn logs(&self, service: Option<&str>, since: Option<Duration>, follow: bool) -> LogReader {
        LogReader::new(self.agent(), service, since, follow)
    }

    /// Its events, oldest first (the agent keeps the newest 4096); with
    /// `follow`, new ones as they come. [`event_json`] writes one as JSON.
    pub fn events(&self, follow: bool) -> EventReader {
        EventReader::new(self.agent(), follow)
    }

    /// Fires the webhook triggers of `path` with `data` (their `run`
    /// actions read it on stdin); returns the triggers that ran (a firing
    /// within a trigger's dedup window does not). No trigger of that path
    /// is [`RuntimeError::NotFound`].
    pub async fn trigger(&self, path: &str, data: Vec<u8>) -> Result<Vec<String>, RuntimeError> {
        if data.len() > orgo_agent_protocol::MAX_WEBHOOK_BYTES {
            return Err(RuntimeError::Invalid {
                what: format!(
                    "webhook body of {} bytes: at most {} bytes",
                    data.len(),
                    orgo_agent_protocol::MAX_WEBHOOK_BYTES
                ),
            });
        }
        let op = Op::FireWebhook {
            path: path.to_owned(),
            data: orgo_agent_protocol::Bytes(data),
        };
        match call(&self.agent(), move |a| a.request(op, QUICK)).await {
            Ok(Reply::Fired { triggers }) => Ok(triggers),
            Ok(other) => Err(unexpected("fire_webhook", &other)),
            Err(RuntimeError::Agent(AgentError::Guest {
                code: orgo_agent_protocol::ErrorCode::NotFound,
                message,
                ..
            })) => Err(RuntimeError::NotFound { what: message }),
            Err(e) => Err(e),
        }
    }

    /// Its metrics now, in the Prometheus text format (CPU, memory, disk,
    /// network; each service's state and restarts; each app's health).
    pub async fn metrics(&self) -> Result<String, RuntimeError> {
        match call(&self.agent(), |a| a.request(Op::Metrics, QUICK)).await? {
            Reply::Metrics { text } => Ok(text),
            other => Err(unexpected("metrics", &other)),
        }
    }

    /// Its services: state, restarts, how each last ended.
    pub async fn services(&self) -> Result<Vec<orgo_agent_protocol::ServiceStatus>, RuntimeError> {
        call(&self.agent(), |a| a.services(QUICK)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use orgo_agent_protocol::Event;

    #[test]
    fn a_template_s_triggers_become_the_agent_s() {
        let template = Template::from_yaml(
            r#"
api_version: orgo.ai/v1
name: t@1.0.0
apps:
  - name: web
    services: [{ name: web, run: "sleep infinity" }]
    health: { type: tcp, port: 80 }
triggers:
  - name: nightly
    source: { type: schedule, cron: "0 3 * * *" }
    actions: [{ run: "echo hi" }]
  - name: drop
    source: { type: file, path: /srv/in, events: [create] }
    actions: [{ restart_service: web }, { alert: "got a file" }]
    dedup: 30s
  - name: hook
    source: { type: webhook, path: /deploy }
    actions: [{ run: "cat" }]
  - name: down
    source: { type: health, app: web }
    actions: [{ alert: "web is down" }]
"#,
        )
        .unwrap();
        let specs = triggers(&template);
        let json = serde_json::to_value(&specs).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"name": "nightly", "source": {"type": "schedule", "cron": "0 3 * * *"},
                 "actions": [{"action": "run", "command": "echo hi"}]},
                {"name": "drop", "source": {"type": "file", "path": "/srv/in", "events": ["create"]},
                 "actions": [{"action": "restart_service", "service": "web"},
                             {"action": "alert", "message": "got a file"}], "dedup_ms": 30000},
                {"name": "hook", "source": {"type": "webhook", "path": "/deploy"},
                 "actions": [{"action": "run", "command": "cat"}]},
                {"name": "down", "source": {"type": "health", "app": "web"},
                 "actions": [{"action": "alert", "message": "web is down"}]},
            ])
        );
    }

    #[test]
    fn why_a_computer_stopped_is_read_from_its_console() {
        let dir = std::env::temp_dir().join(format!("orgo-reason-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(stop_reason(&dir), None);
        std::fs::write(dir.join("console.log"), "boot\nother\n").unwrap();
        assert_eq!(stop_reason(&dir), None);
        std::fs::write(
            dir.join("console.log"),
            "boot\r\n[  1.0] orgo-agent: stopped: auto_stop after 61 s idle\r\nreboot: Power down\r\n",
        )
        .unwrap();
        assert_eq!(
            stop_reason(&dir).as_deref(),
            Some("auto_stop after 61 s idle")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn auto_stop_comes_from_the_launch_over_the_template() {
        let template = |minutes: u32| {
            Template::from_yaml(&format!(
                "api_version: orgo.ai/v1\nname: t@1.0.0\nhardware: {{ auto_stop_minutes: {minutes} }}\nhooks: {{ on_shutdown: echo bye }}\n"
            ))
            .unwrap()
        };
        let op = |idle_ms: u64| Op::SetAutoStop {
            idle_ms,
            on_shutdown: Some("echo bye".into()),
        };
        assert_eq!(auto_stop(&template(5), None), Some(op(300_000)));
        assert_eq!(auto_stop(&template(5), Some(1)), Some(op(60_000)));
        assert_eq!(auto_stop(&template(5), Some(0)), None);
        assert_eq!(auto_stop(&template(0), None), None);
        assert_eq!(auto_stop(&template(0), Some(2)), Some(op(120_000)));
    }

    #[test]
    fn an_event_is_json_with_ts_and_kind() {
        let record = EventRecord {
            seq: 7,
            ts_ms: 1_710_497_850_123,
            event: Event::Alert {
                app: String::new(),
                message: "web is down".into(),
                trigger: Some("down".into()),
            },
        };
        assert_eq!(
            event_json(&record).to_string(),
            r#"{"ts":"2024-03-15T10:17:30.123Z","seq":7,"kind":"alert","message":"web is down","trigger":"down"}"#
        );
    }
}
