//! The agent's automation on the host, without a VM: service logs, the
//! event ring, and triggers (file, webhook, health) with real processes.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_agent::{Agent, AgentConfig, Server};
use orgo_agent_protocol::{
    AgentMessage, Backoff, Bytes, ErrorCode, Event, EventRecord, FileEvent, FrameReader,
    HealthSpec, OnFail, Op, PROTOCOL_VERSION, Probe, Reply, Request, RestartPolicy, ServiceSpec,
    Stream, TriggerAction, TriggerSource, TriggerSpec, encode,
};

/// A generous bound for things that happen "soon"; only a hang hits it.
const PATIENCE: Duration = Duration::from_secs(30);

struct Host {
    stream: UnixStream,
    frames: FrameReader<UnixStream>,
    next: u64,
    events: Vec<Event>,
    root: PathBuf,
    /// Whether dropping this host removes `root` (other hosts may share it).
    owns_root: bool,
}

/// A scratch root for an agent in a sandbox, with users and groups.
fn scratch_root() -> PathBuf {
    let root = std::env::temp_dir().join(format!(
        "orgo-agent-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    root
}

impl Host {
    /// A new agent in a sandbox, and a host connected to it.
    fn start() -> Host {
        let root = scratch_root();
        let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(&root))));
        let mut host = Host::connect(&server, &root);
        host.owns_root = true;
        host
    }

    /// A new host connection to `server` (served on a thread of its own),
    /// once the agent has announced itself on it.
    fn connect(server: &Arc<Server>, root: &std::path::Path) -> Host {
        let (host, guest) = UnixStream::pair().unwrap();
        let server = Arc::clone(server);
        std::thread::spawn(move || {
            let writer = guest.try_clone().unwrap();
            server.serve(guest, Box::new(writer), true);
        });
        host.set_read_timeout(Some(PATIENCE)).unwrap();
        let frames = FrameReader::new(host.try_clone().unwrap());
        let mut h = Host {
            stream: host,
            frames,
            next: 1,
            events: Vec::new(),
            root: root.to_path_buf(),
            owns_root: false,
        };
        match h.recv() {
            AgentMessage::Event {
                event: Event::Ready(info),
            } => assert_eq!(info.protocol, PROTOCOL_VERSION),
            other => panic!("expected the ready event, got {other:?}"),
        }
        h
    }

    fn recv(&mut self) -> AgentMessage {
        self.frames.read().expect("a frame").expect("not the end")
    }

    fn send(&mut self, op: Op) -> u64 {
        let id = self.next;
        self.next += 1;
        self.stream.write_all(&encode(&Request { id, op })).unwrap();
        id
    }

    /// Sends `op`; returns its reply and its output (stdout, stderr).
    fn call_with_output(&mut self, op: Op) -> (Reply, Vec<u8>, Vec<u8>) {
        let id = self.send(op);
        self.reply_to(id)
    }

    fn reply_to(&mut self, id: u64) -> (Reply, Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv() {
                AgentMessage::Response { id: got, reply } if got == id => {
                    return (reply, out, err);
                }
                AgentMessage::Output {
                    id: got,
                    stream,
                    data,
                } if got == id => match stream {
                    Stream::Stdout => out.extend(data.0),
                    Stream::Stderr => err.extend(data.0),
                },
                AgentMessage::Event { event } => self.events.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn call(&mut self, op: Op) -> Reply {
        self.call_with_output(op).0
    }

    fn error_of(&mut self, op: Op) -> ErrorCode {
        match self.call(op) {
            Reply::Error { code, .. } => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Reads messages until an event matches; panics after [`PATIENCE`].
    fn wait_event(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(i) = self.events.iter().position(&pred) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.recv() {
                AgentMessage::Event { event } if pred(&event) => return event,
                AgentMessage::Event { event } => self.events.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no event: {what}");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn service(name: &str, run: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        run: run.into(),
        cwd: None,
        user: None,
        env: BTreeMap::new(),
        restart: RestartPolicy::No,
        stop_signal: "TERM".into(),
        stop_timeout_ms: Some(5_000),
        log: None,
        backoff: Backoff::default(),
    }
}

fn trigger(name: &str, source: TriggerSource, actions: Vec<TriggerAction>) -> TriggerSpec {
    TriggerSpec {
        name: name.into(),
        source,
        actions,
        dedup_ms: None,
    }
}

fn run(command: &str) -> TriggerAction {
    TriggerAction::Run {
        command: command.into(),
    }
}

fn events(host: &mut Host) -> Vec<EventRecord> {
    match host.call(Op::ReadEvents {
        after: None,
        max: None,
    }) {
        Reply::Events { events, dropped } => {
            assert_eq!(dropped, 0);
            events
        }
        other => panic!("expected events, got {other:?}"),
    }
}

fn read_log(host: &mut Host, name: &str) -> String {
    match host.call(Op::ReadLog {
        name: name.into(),
        offset: None,
        since_unix_ms: None,
        max_bytes: None,
    }) {
        Reply::Log { data, from, next } => {
            assert_eq!(next - from, data.0.len() as u64);
            String::from_utf8(data.0).unwrap()
        }
        other => panic!("expected a log, got {other:?}"),
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failing_service_leaves_its_output_and_its_exit_in_log_and_events() {
    let mut host = Host::start();
    let spec = service(
        "broken",
        "echo starting; echo 'cannot write /root/x' >&2; exit 3",
    );
    assert_eq!(host.call(Op::StartService(spec)), Reply::Done);
    host.wait_event("exited", |e| matches!(e, Event::ServiceExited { .. }));
    let log = read_log(&mut host, "broken");
    assert_eq!(log, "starting\ncannot write /root/x\n");
    assert!(host.root.join("var/log/orgo/broken.log").is_file());
    assert_eq!(
        host.call(Op::ListLogs),
        Reply::LogNames {
            names: vec!["broken".into()]
        }
    );
    let records = events(&mut host);
    let kinds: Vec<String> = records
        .iter()
        .map(|r| {
            let json = serde_json::to_value(r).unwrap();
            json["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["service_started", "service_exited"]);
    assert!(records[0].seq < records[1].seq && records[0].ts_ms > 1_600_000_000_000);
    match &records[1].event {
        Event::ServiceExited { status, .. } => assert_eq!(status.code, Some(3)),
        other => panic!("{other:?}"),
    }
    // Read after the last one: nothing new.
    let after = records[1].seq;
    assert_eq!(
        host.call(Op::ReadEvents {
            after: Some(after),
            max: None
        }),
        Reply::Events {
            events: vec![],
            dropped: 0
        }
    );
    assert_eq!(
        host.error_of(Op::ReadLog {
            name: "nope".into(),
            offset: None,
            since_unix_ms: None,
            max_bytes: None
        }),
        ErrorCode::NotFound
    );
}

#[test]
fn a_file_trigger_fires_on_a_file_created_after_it_was_set_and_dedup_drops_a_burst() {
    let mut host = Host::start();
    let inbox = host.root.join("inbox");
    let out = host.root.join("fired");
    let mut spec = trigger(
        "on-flag",
        TriggerSource::File {
            path: inbox.join("flag").display().to_string(),
            events: vec![FileEvent::Create],
        },
        vec![run(&format!(
            "echo \"$ORGO_TRIGGER $ORGO_FILE_EVENT $ORGO_FILE\" >> {}",
            out.display()
        ))],
    );
    spec.dedup_ms = Some(60_000);
    assert_eq!(
        host.call(Op::SetTriggers {
            triggers: vec![spec]
        }),
        Reply::Done
    );
    // Neither the file nor its directory exist yet.
    std::fs::create_dir(&inbox).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(inbox.join("flag"), "1").unwrap();
    host.wait_event("done", |e| matches!(e, Event::TriggerDone { .. }));
    for _ in 0..3 {
        std::fs::remove_file(inbox.join("flag")).unwrap();
        std::fs::write(inbox.join("flag"), "again").unwrap();
        host.wait_event(
            "deduplicated",
            |e| matches!(e, Event::TriggerDeduplicated { trigger, .. } if trigger == "on-flag"),
        );
    }
    let flag = inbox.join("flag").display().to_string();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("on-flag create {flag}\n"),
        "one run for the burst"
    );
    let fired = events(&mut host)
        .into_iter()
        .filter(|r| matches!(r.event, Event::TriggerFired { .. }))
        .count();
    assert_eq!(fired, 1);
}

#[test]
fn a_file_made_at_once_with_its_missing_directories_still_fires_once() {
    // No pause between the directories and the file: the watch on a new
    // directory may come after the next one (or the file) was made in it,
    // so only re-arming that looks again can see them.
    for round in 0..20 {
        let mut host = Host::start();
        let target = host.root.join(format!("deep{round}/a/b/c/d/e/flag"));
        let out = host.root.join("fired");
        let spec = trigger(
            "deep",
            TriggerSource::File {
                path: target.display().to_string(),
                events: vec![FileEvent::Create],
            },
            vec![run(&format!(
                "echo \"$ORGO_FILE_EVENT $ORGO_FILE\" >> {}",
                out.display()
            ))],
        );
        assert_eq!(
            host.call(Op::SetTriggers {
                triggers: vec![spec]
            }),
            Reply::Done
        );
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "1").unwrap();
        host.wait_event("done", |e| matches!(e, Event::TriggerDone { .. }));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("create {}\n", target.display()),
            "round {round}"
        );
    }
}

#[test]
fn a_webhook_body_reaches_its_run_action_on_stdin() {
    let mut host = Host::start();
    let out = host.root.join("body");
    let spec = trigger(
        "deploy",
        TriggerSource::Webhook {
            path: "/hooks/deploy".into(),
        },
        vec![
            run(&format!(
                "cat > {}; echo ran $ORGO_WEBHOOK_PATH",
                out.display()
            )),
            TriggerAction::Alert {
                message: "deployed".into(),
            },
        ],
    );
    host.call(Op::SetTriggers {
        triggers: vec![spec],
    });
    assert_eq!(
        host.call(Op::FireWebhook {
            path: "/hooks/deploy".into(),
            data: Bytes(b"{\"ref\":\"main\"}".to_vec()),
        }),
        Reply::Fired {
            triggers: vec!["deploy".into()]
        }
    );
    host.wait_event("alert", |e| {
        matches!(e, Event::Alert { trigger: Some(t), message, .. } if t == "deploy" && message == "deployed")
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"ref\":\"main\"}");
    assert_eq!(read_log(&mut host, "trigger.deploy"), "ran /hooks/deploy\n");
    assert_eq!(
        host.error_of(Op::FireWebhook {
            path: "/elsewhere".into(),
            data: Bytes::default(),
        }),
        ErrorCode::NotFound
    );
}

#[test]
fn a_health_trigger_fires_once_the_check_reaches_its_retries() {
    let mut host = Host::start();
    let marker = host.root.join("broken");
    let check = HealthSpec {
        app: "web".into(),
        probe: Probe::Command {
            command: format!("test ! -e {}", marker.display()),
        },
        every_ms: 50,
        timeout_ms: 1_000,
        retries: 3,
        on_fail: OnFail::Alert,
    };
    let spec = trigger(
        "web-down",
        TriggerSource::Health { app: "web".into() },
        vec![
            run("echo failing; exit 4"),
            TriggerAction::Alert {
                message: "never raised".into(),
            },
        ],
    );
    host.call(Op::SetTriggers {
        triggers: vec![spec],
    });
    host.call(Op::SetHealthChecks {
        checks: vec![check],
    });
    host.wait_event("healthy", |e| {
        matches!(e, Event::Health { healthy: true, .. })
    });
    std::fs::write(&marker, "").unwrap();
    let failed = host.wait_event("trigger failed", |e| {
        matches!(e, Event::TriggerFailed { .. })
    });
    match failed {
        Event::TriggerFailed {
            trigger,
            action,
            message,
        } => {
            assert_eq!((trigger.as_str(), action), ("web-down", 0));
            assert!(
                message.contains("exit status 4") && message.contains("failing"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    host.call(Op::SetHealthChecks { checks: vec![] });
    // In the ring: three failures, the check's own alert, then the trigger.
    let records = events(&mut host);
    let failures: Vec<u32> = records
        .iter()
        .filter_map(|r| match r.event {
            Event::Health {
                healthy: false,
                failures,
                ..
            } => Some(failures),
            _ => None,
        })
        .take(3)
        .collect();
    assert_eq!(failures, [1, 2, 3]);
    let position = |pred: &dyn Fn(&Event) -> bool| records.iter().position(|r| pred(&r.event));
    let third = position(&|e| matches!(e, Event::Health { failures: 3, .. })).unwrap();
    let alert = position(&|e| matches!(e, Event::Alert { app, trigger: None, .. } if app == "web"))
        .unwrap();
    let fired = position(&|e| matches!(e, Event::TriggerFired { .. })).unwrap();
    assert!(third < alert && alert < fired, "{third} {alert} {fired}");
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.event, Event::Alert { message, .. } if message == "never raised")),
        "the action after a failed one does not run"
    );
}

#[test]
fn bad_triggers_are_refused_whole() {
    let mut host = Host::start();
    let bad = trigger(
        "bad",
        TriggerSource::Schedule {
            cron: "61 * * * *".into(),
        },
        vec![run("true")],
    );
    assert_eq!(
        host.error_of(Op::SetTriggers {
            triggers: vec![bad]
        }),
        ErrorCode::BadRequest
    );
    let relative = trigger(
        "rel",
        TriggerSource::File {
            path: "tmp/x".into(),
            events: vec![],
        },
        vec![run("true")],
    );
    assert_eq!(
        host.error_of(Op::SetTriggers {
            triggers: vec![relative]
        }),
        ErrorCode::BadRequest
    );
}

#[test]
fn a_service_log_is_followed_across_restarts_from_an_offset() {
    let mut host = Host::start();
    let mut spec = service("ticker", "echo tick; sleep 0.05; exit 1");
    spec.restart = RestartPolicy::OnFailure;
    spec.backoff = Backoff {
        initial_ms: 10,
        max_ms: 20,
        reset_after_ms: 10_000,
    };
    host.call(Op::StartService(spec));
    host.wait_event("restarted", |e| {
        matches!(e, Event::ServiceRestarted { restarts: 2, .. })
    });
    let mut next = 0;
    let mut seen = String::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.matches("tick").count() < 3 {
        assert!(Instant::now() < deadline);
        if let Reply::Log {
            data,
            from,
            next: n,
        } = host.call(Op::ReadLog {
            name: "ticker".into(),
            offset: Some(next),
            since_unix_ms: None,
            max_bytes: Some(3),
        }) {
            assert_eq!(from, next, "nothing was rotated away");
            next = n;
            seen.push_str(&String::from_utf8(data.0).unwrap());
        }
    }
    assert!(seen.starts_with("tick\ntick\ntick"), "{seen}");
    host.call(Op::StopService {
        name: "ticker".into(),
    });
    wait_until("the log stays", || {
        host.root.join("var/log/orgo/ticker.log").exists()
    });
}

#[test]
fn auto_stop_waits_while_requests_come_then_runs_on_shutdown_and_stops_services() {
    let mut host = Host::start();
    host.call(Op::StartService(service("long", "exec sleep 600")));
    host.wait_event("started", |e| matches!(e, Event::ServiceStarted { .. }));
    let bye = host.root.join("bye");
    assert_eq!(
        host.call(Op::SetAutoStop {
            idle_ms: 2_000,
            on_shutdown: Some(format!("echo bye > {}", bye.display())),
        }),
        Reply::Done
    );
    // Busy: a command that runs longer than the limit...
    let long = host.call(Op::Exec(orgo_agent_protocol::Exec::shell("sleep 3")));
    assert!(matches!(long, Reply::Exit { .. }), "{long:?}");
    // ... then a request every 100 ms for 3 s.
    let busy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < busy_until {
        host.call(Op::WriteFile {
            path: host.root.join("touched").display().to_string(),
            content: Bytes(b"x".to_vec()),
            mode: None,
            owner: None,
            group: None,
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !events(&mut host)
            .iter()
            .any(|r| matches!(r.event, Event::AutoStop { .. })),
        "not stopped while busy"
    );
    // Observations are not activity: idle grows while it is watched.
    let idle = |host: &mut Host| match host.call(Op::Idle) {
        Reply::Idle { idle_ms } => idle_ms,
        other => panic!("{other:?}"),
    };
    let first = idle(&mut host);
    std::thread::sleep(Duration::from_millis(50));
    assert!(idle(&mut host) > first);
    let stopped = host.wait_event("auto stop", |e| matches!(e, Event::AutoStop { .. }));
    let Event::AutoStop { idle_ms } = stopped else {
        unreachable!()
    };
    assert!(idle_ms >= 2_000, "{idle_ms}");
    wait_until("on_shutdown ran", || bye.exists());
    // The services are stopped and forgotten.
    let deadline = Instant::now() + PATIENCE;
    while host.call(Op::ServiceStatus) != (Reply::Services { services: vec![] }) {
        assert!(Instant::now() < deadline, "the services were not stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_name_services_and_health_in_the_text_format() {
    let mut host = Host::start();
    host.call(Op::StartService(service("web", "exec sleep 600")));
    host.wait_event("started", |e| matches!(e, Event::ServiceStarted { .. }));
    host.call(Op::SetHealthChecks {
        checks: vec![HealthSpec {
            app: "web".into(),
            probe: Probe::Command {
                command: "true".into(),
            },
            every_ms: 50,
            timeout_ms: 1_000,
            retries: 1,
            on_fail: OnFail::None,
        }],
    });
    host.wait_event("healthy", |e| {
        matches!(e, Event::Health { healthy: true, .. })
    });
    let Reply::Metrics { text } = host.call(Op::Metrics) else {
        panic!("metrics")
    };
    for line in [
        "# TYPE orgo_service_up gauge",
        "orgo_service_up{service=\"web\"} 1",
        "orgo_service_restarts_total{service=\"web\"} 0",
        "orgo_health_healthy{app=\"web\"} 1",
        "orgo_health_failures{app=\"web\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    host.call(Op::SetHealthChecks { checks: vec![] });
}

/// A test OTLP/HTTP receiver on a loopback port: each request's path and
/// body, answered 503 for the first `refuse` requests, then 200.
fn otlp_receiver(refuse: usize) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n < refuse { "503 Busy" } else { "200 OK" };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let path = request_line.split_whitespace().nth(1).unwrap().to_owned();
            if n >= refuse && tx.send((path, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn string_value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), string_value(&kv.value)))
        .collect()
}

#[test]
fn shipped_lines_and_metrics_reach_an_otlp_receiver_with_their_attributes_after_retries() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    // The first two pushes are refused: the agent retries with backoff.
    let (port, received) = otlp_receiver(2);
    let mut host = Host::start();
    let resource = BTreeMap::from([
        ("orgo.computer.id".to_owned(), "c-0123456789ab".to_owned()),
        ("orgo.template".to_owned(), "app@1.0.0".to_owned()),
    ]);
    assert_eq!(
        host.call(Op::SetTelemetry {
            metrics: false,
            logs: vec!["web".into()],
            otel_endpoint: Some(format!("http://127.0.0.1:{port}")),
            resource,
        }),
        Reply::Done
    );
    host.call(Op::StartService(service(
        "web",
        "for i in 1 2 3; do echo line-$i; done; exec sleep 600",
    )));
    host.call(Op::StartService(service(
        "quiet",
        "echo not shipped; exec sleep 600",
    )));
    let (mut lines, mut metrics) = (Vec::new(), None);
    let deadline = Instant::now() + PATIENCE;
    while lines.len() < 3 || metrics.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (path, body) = received.recv_timeout(left).expect("pushes arrive");
        match path.as_str() {
            "/v1/logs" => {
                let request: ExportLogsServiceRequest = serde_json::from_slice(&body).unwrap();
                for resource_logs in request.resource_logs {
                    let attrs = attributes(&resource_logs.resource.unwrap().attributes);
                    assert_eq!(attrs["orgo.computer.id"], "c-0123456789ab");
                    assert_eq!(attrs["orgo.template"], "app@1.0.0");
                    assert_eq!(attrs["service.name"], "web", "only the logs named");
                    for scope in resource_logs.scope_logs {
                        for record in scope.log_records {
                            assert!(record.time_unix_nano > 1_600_000_000_000_000_000);
                            lines.push(string_value(&record.body));
                        }
                    }
                }
            }
            "/v1/metrics" => {
                let request: ExportMetricsServiceRequest = serde_json::from_slice(&body).unwrap();
                let resource_metrics = &request.resource_metrics[0];
                let attrs = attributes(&resource_metrics.resource.as_ref().unwrap().attributes);
                assert_eq!(attrs["orgo.computer.id"], "c-0123456789ab");
                let names: Vec<String> = resource_metrics.scope_metrics[0]
                    .metrics
                    .iter()
                    .map(|m| m.name.clone())
                    .collect();
                metrics = Some(names);
            }
            other => panic!("pushed to `{other}`"),
        }
    }
    assert_eq!(lines, ["line-1", "line-2", "line-3"]);
    let metrics = metrics.unwrap();
    assert!(
        metrics.iter().any(|m| m == "orgo_service_up")
            && metrics
                .iter()
                .any(|m| m == "orgo_telemetry_failed_pushes_total"),
        "{metrics:?}"
    );
    let Reply::Metrics { text } = host.call(Op::Metrics) else {
        panic!("metrics")
    };
    let failed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("orgo_telemetry_failed_pushes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed >= 2.0, "the refused pushes count: {text}");
}

#[test]
fn a_full_push_buffer_drops_the_oldest_lines_and_counts_them() {
    // Nothing listens there: every push fails, the buffer fills.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut host = Host::start();
    host.call(Op::SetTelemetry {
        metrics: false,
        logs: vec!["chatty".into()],
        otel_endpoint: Some(format!("http://127.0.0.1:{port}")),
        resource: BTreeMap::new(),
    });
    host.call(Op::StartService(service(
        "chatty",
        "seq 1 12000; exec sleep 600",
    )));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let Reply::Metrics { text } = host.call(Op::Metrics) else {
            panic!("metrics")
        };
        let dropped: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("orgo_telemetry_dropped_lines_total "))
            .unwrap()
            .parse()
            .unwrap();
        if dropped >= 2000.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped only {dropped}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The service was never held up: its log has every line.
    assert!(read_log(&mut host, "chatty").ends_with("11999\n12000\n"));
}
