//! The agent on the host, without a VM: the protocol over a socket pair, and
//! exec, files, hooks, the supervisor and health checks with real processes.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_agent::{Agent, AgentConfig, Server};
use orgo_agent_protocol::{
    AgentMessage, Backoff, Bytes, ErrorCode, Event, Exec, FrameReader, HealthSpec, Hook, Identity,
    MAX_FRAME_BYTES, OnFail, Op, PROTOCOL_VERSION, Probe, Reply, Request, RestartPolicy,
    ServiceSpec, ServiceState, Stream, encode, encode_raw,
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

    fn exec(&mut self, exec: Exec) -> (i32, String, String) {
        let (reply, out, err) = self.call_with_output(Op::Exec(exec));
        match reply {
            Reply::Exit { status, .. } => (
                status.code.unwrap_or(-1),
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            ),
            other => panic!("expected an exit, got {other:?}"),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn service(name: &str, run: &str, restart: RestartPolicy) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        run: run.into(),
        cwd: None,
        user: None,
        env: BTreeMap::new(),
        restart,
        stop_signal: "TERM".into(),
        stop_timeout_ms: Some(5_000),
        log: None,
        backoff: Backoff {
            initial_ms: 50,
            max_ms: 400,
            reset_after_ms: 10_000,
        },
    }
}

fn service_pid(host: &mut Host, name: &str) -> Option<u32> {
    match host.call(Op::ServiceStatus) {
        Reply::Services { services } => services.into_iter().find(|s| s.name == name)?.pid,
        other => panic!("expected services, got {other:?}"),
    }
}

// ---- protocol ----

#[test]
fn hello_answers_ready_and_refuses_another_version() {
    let mut host = Host::start();
    match host.call(Op::Hello {
        protocol: PROTOCOL_VERSION,
    }) {
        Reply::Ready(info) => {
            assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
            assert!(!info.pid1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host.error_of(Op::Hello { protocol: 99 }),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(host.call(Op::Ping), Reply::Done);
}

/// Sends raw bytes, expects an error reply with `code` for request `id`,
/// then checks the stream is still in step with a ping.
fn expect_error_after(host: &mut Host, bytes: &[u8], id: u64, code: ErrorCode) {
    host.stream.write_all(bytes).unwrap();
    match host.recv() {
        AgentMessage::Response {
            id: got,
            reply: Reply::Error { code: c, message },
        } => {
            assert_eq!((got, c), (id, code), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_eq!(host.call(Op::Ping), Reply::Done);
}

#[test]
fn malformed_frames_get_error_replies_and_the_stream_stays_in_step() {
    let mut host = Host::start();
    // Not JSON.
    expect_error_after(
        &mut host,
        &encode_raw(1, b"{not json"),
        0,
        ErrorCode::BadRequest,
    );
    // JSON, but an unknown operation: the reply carries the request's id.
    expect_error_after(
        &mut host,
        &encode_raw(1, br#"{"id":41,"op":"format_disk"}"#),
        41,
        ErrorCode::BadRequest,
    );
    // A known operation with a missing field.
    expect_error_after(
        &mut host,
        &encode_raw(1, br#"{"id":42,"op":"read_file"}"#),
        42,
        ErrorCode::BadRequest,
    );
    // Another protocol version: skipped whole.
    expect_error_after(
        &mut host,
        &encode_raw(7, br#"{"id":43,"op":"ping"}"#),
        0,
        ErrorCode::UnsupportedVersion,
    );
    // Bytes that are no frame at all, then a frame.
    let mut garbage = b"hello there, agent".to_vec();
    garbage.extend(encode(&Request {
        id: 44,
        op: Op::Ping,
    }));
    host.stream.write_all(&garbage).unwrap();
    match host.recv() {
        AgentMessage::Response {
            id: 0,
            reply: Reply::Error { code, .. },
        } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    match host.recv() {
        AgentMessage::Response { id: 44, reply } => assert_eq!(reply, Reply::Done),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oversize_frame_gets_an_error_reply_and_the_stream_stays_in_step() {
    let mut host = Host::start();
    let len = MAX_FRAME_BYTES + 1;
    let mut header = encode_raw(1, b"");
    header[8..12].copy_from_slice(&len.to_be_bytes());
    let writer = host.stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&header).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    });
    match host.recv() {
        AgentMessage::Response {
            id: 0,
            reply: Reply::Error { code, .. },
        } => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
    feeder.join().unwrap();
    assert_eq!(host.call(Op::Ping), Reply::Done);
}

#[test]
fn a_reply_goes_only_to_the_connection_that_asked() {
    let root = scratch_root();
    let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(&root))));
    let (go, finished) = (root.join("go"), root.join("a-finished"));
    let mut a = Host::connect(&server, &root);
    let asked = a.send(Op::Exec(Exec::shell(format!(
        "while [ ! -e {go} ]; do sleep 0.02; done; echo for-a; touch {finished}",
        go = go.display(),
        finished = finished.display()
    ))));
    // A goes away before its reply is ready; B connects.
    a.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(a);
    let mut b = Host::connect(&server, &root);
    b.next = 100;
    std::fs::write(&go, "").unwrap();
    wait_until("A's command has run", || finished.exists());
    // By the time this ends, A's reply has long been made: were it sent to
    // B, it would come first.
    let id = b.send(Op::Exec(Exec::shell("sleep 0.5; echo for-b")));
    loop {
        match b.recv() {
            AgentMessage::Response { id: got, reply } if got == id => {
                assert!(matches!(reply, Reply::Exit { .. }), "{reply:?}");
                break;
            }
            AgentMessage::Output { id: got, data, .. } if got == id => {
                assert_eq!(data.0, b"for-b\n");
            }
            AgentMessage::Event { .. } => {}
            other => panic!("B got a message of A's request `{asked}`: {other:?}"),
        }
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_stalled_connection_does_not_hold_up_another() {
    let root = scratch_root();
    let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(&root))));
    let wrote = root.join("wrote");
    // A asks for megabytes of output and never reads: its channel fills and
    // the agent's write to it blocks.
    let mut a = Host::connect(&server, &root);
    a.send(Op::Exec(Exec::shell(format!(
        "head -c 6000000 /dev/zero; touch {}",
        wrote.display()
    ))));
    wait_until("A's output is made", || wrote.exists());
    // B is served all the same.
    let mut b = Host::connect(&server, &root);
    assert_eq!(b.call(Op::Ping), Reply::Done);
    let (code, out, _) = b.exec(Exec::argv(["echo", "b"]));
    assert_eq!((code, out.as_str()), (0, "b\n"));
    a.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop((a, b));
    let _ = std::fs::remove_dir_all(&root);
}

// ---- exec ----

#[test]
fn exec_streams_output_and_reports_the_exit_code() {
    let mut host = Host::start();
    let (code, out, err) = host.exec(Exec::argv(["echo", "hello", "world"]));
    assert_eq!((code, out.as_str(), err.as_str()), (0, "hello world\n", ""));

    let (code, out, err) = host.exec(Exec::shell("echo out; echo err >&2; exit 3"));
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));

    let mut exec = Exec::shell("echo \"$GREETING from $(pwd)\"; cat");
    exec.env.insert("GREETING".into(), "hi".into());
    exec.cwd = Some("/tmp".into());
    exec.stdin = Some(Bytes::from("piped"));
    let (code, out, _) = host.exec(exec);
    assert_eq!((code, out.as_str()), (0, "hi from /tmp\npiped"));

    let (code, _, err) = host.exec(Exec::argv(["no-such-program-orgo"]));
    assert_eq!(code, 127, "{err}");

    let mut exec = Exec::argv(["true"]);
    exec.cwd = Some("/no/such/dir".into());
    match host.call(Op::Exec(exec)) {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host.error_of(Op::Exec(Exec::argv(Vec::<String>::new()))),
        ErrorCode::BadRequest
    );
}

#[test]
fn exec_timeout_kills_the_whole_process_group() {
    let mut host = Host::start();
    let marker = host.root.join("survivor");
    let mut exec = Exec::shell(format!(
        "(sleep 2; touch {}) & echo started; sleep 30",
        marker.display()
    ));
    exec.timeout_ms = Some(300);
    let (reply, out, _) = host.call_with_output(Op::Exec(exec));
    assert_eq!(out, b"started\n");
    match reply {
        Reply::Exit { status, timed_out } => {
            assert!(timed_out);
            assert_eq!(status.signal, Some(9));
        }
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!marker.exists(), "the background child was not killed");
}

#[test]
fn no_output_follows_the_response_of_its_request() {
    let mut host = Host::start();
    let late = host.root.join("late");
    // A background process keeps the pipes open past the grace period and
    // writes after the response.
    let (code, out, _) = host.exec(Exec::shell(format!(
        "(sleep 3; echo late; touch {}) & echo hi",
        late.display()
    )));
    assert_eq!((code, out.as_str()), (0, "hi\n"));
    wait_until("the background process wrote", || late.exists());
    // Any output of the first request would come before this reply (and
    // `reply_to` refuses messages of other requests).
    let (code, out, _) = host.exec(Exec::shell("sleep 0.5; echo next"));
    assert_eq!((code, out.as_str()), (0, "next\n"));
}

#[test]
#[ignore = "needs root (to run a command as another user): run with --ignored as root"]
fn exec_as_another_user() {
    assert!(rustix_is_root(), "this test needs root");
    let mut host = Host::start();
    let mut exec = Exec::argv(["id", "-u"]);
    exec.user = Some("nobody".into());
    let (code, out, _) = host.exec(exec);
    assert_eq!((code, out.trim()), (0, "65534"));
    let mut exec = Exec::argv(["true"]);
    exec.user = Some("no-such-user".into());
    assert_eq!(host.error_of(Op::Exec(exec)), ErrorCode::NotFound);
}

fn rustix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

// ---- files ----

#[test]
fn files_are_written_atomically_and_read_back() {
    let mut host = Host::start();
    let reply = host.call(Op::WriteFile {
        path: "/opt/app/config.txt".into(),
        content: Bytes::from("key=value\n"),
        mode: Some(0o600),
        owner: None,
        group: None,
    });
    assert_eq!(reply, Reply::Done);
    let on_disk = host.root.join("opt/app/config.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "key=value\n");
    match host.call(Op::ReadFile {
        path: "/opt/app/config.txt".into(),
    }) {
        Reply::File { content, mode } => {
            assert_eq!(content.0, b"key=value\n");
            assert_eq!(mode, 0o600);
        }
        other => panic!("{other:?}"),
    }
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(on_disk.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn concurrent_writes_to_one_path_leave_exactly_one_of_them() {
    let mut host = Host::start();
    let contents: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'a' + i; 256 * 1024]).collect();
    for round in 0..4 {
        let ids: Vec<u64> = contents
            .iter()
            .map(|content| {
                host.send(Op::WriteFile {
                    path: "/srv/shared.bin".into(),
                    content: Bytes(content.clone()),
                    mode: None,
                    owner: None,
                    group: None,
                })
            })
            .collect();
        let mut replies = BTreeMap::new();
        while replies.len() < ids.len() {
            match host.recv() {
                AgentMessage::Response { id, reply } => {
                    replies.insert(id, reply);
                }
                AgentMessage::Event { event } => host.events.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
        for id in &ids {
            assert_eq!(replies[id], Reply::Done, "round {round}, request {id}");
        }
        let on_disk = std::fs::read(host.root.join("srv/shared.bin")).unwrap();
        assert!(
            contents.contains(&on_disk),
            "round {round}: the file is none of the writes ({} bytes)",
            on_disk.len()
        );
    }
    let names: Vec<_> = std::fs::read_dir(host.root.join("srv"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
}

#[test]
fn files_outside_the_policy_are_refused() {
    let mut host = Host::start();
    for path in [
        "relative/path",
        "/etc/../etc/passwd",
        "/proc/1/mem",
        "/sys/x",
        "/dev/sda",
        "/",
    ] {
        assert_eq!(
            host.error_of(Op::ReadFile { path: path.into() }),
            ErrorCode::PathDenied,
            "{path}"
        );
        assert_eq!(
            host.error_of(Op::WriteFile {
                path: path.into(),
                content: Bytes::from("x"),
                mode: None,
                owner: None,
                group: None,
            }),
            ErrorCode::PathDenied,
            "{path}"
        );
    }
    assert_eq!(
        host.error_of(Op::ReadFile {
            path: "/no/such/file".into()
        }),
        ErrorCode::NotFound
    );
    assert_eq!(
        host.error_of(Op::WriteFile {
            path: "/opt/x".into(),
            content: Bytes::from("x"),
            mode: None,
            owner: Some("no-such-user".into()),
            group: None,
        }),
        ErrorCode::NotFound
    );
    assert!(!host.root.join("opt/x").exists());
}

// ---- hooks ----

#[test]
fn hooks_stop_at_the_first_failure_and_capture_output() {
    let mut host = Host::start();
    let hook = Hook {
        name: "on_first_boot".into(),
        script: "echo one\necho two >&2\nfalse\necho never".into(),
        timeout_ms: None,
        env: BTreeMap::new(),
        cwd: None,
        user: None,
    };
    match host.call(Op::RunHook(hook)) {
        Reply::Hook {
            status,
            timed_out,
            output,
        } => {
            assert_eq!(status.code, Some(1));
            assert!(!timed_out);
            let output = String::from_utf8(output.0).unwrap();
            assert!(
                output.contains("one\n") && output.contains("two\n"),
                "{output}"
            );
            assert!(!output.contains("never"), "{output}");
        }
        other => panic!("{other:?}"),
    }
    let hook = Hook {
        name: "slow".into(),
        script: "echo begun; sleep 30".into(),
        timeout_ms: Some(200),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
    };
    match host.call(Op::RunHook(hook)) {
        Reply::Hook {
            timed_out, output, ..
        } => {
            assert!(timed_out);
            assert_eq!(output.0, b"begun\n");
        }
        other => panic!("{other:?}"),
    }
}

// ---- supervisor ----

#[test]
fn a_killed_service_is_restarted() {
    let mut host = Host::start();
    let reply = host.call(Op::StartService(service(
        "sleeper",
        "exec sleep 300",
        RestartPolicy::Always,
    )));
    assert_eq!(reply, Reply::Done);
    let first = match host.wait_event("started", |e| matches!(e, Event::ServiceStarted { .. })) {
        Event::ServiceStarted { pid, restarts, .. } => {
            assert_eq!(restarts, 0);
            pid
        }
        _ => unreachable!(),
    };
    assert_eq!(service_pid(&mut host, "sleeper"), Some(first));
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    host.wait_event("exited by SIGKILL", |e| {
        matches!(e, Event::ServiceExited { status, restarting: true, .. } if status.signal == Some(9))
    });
    let second = match host.wait_event("restarted", |e| {
        matches!(e, Event::ServiceStarted { restarts: 1, .. })
    }) {
        Event::ServiceStarted { pid, .. } => pid,
        _ => unreachable!(),
    };
    assert_ne!(first, second);
    assert_eq!(
        host.call(Op::StopService {
            name: "sleeper".into()
        }),
        Reply::Done
    );
    assert_eq!(
        host.error_of(Op::StopService {
            name: "sleeper".into()
        }),
        ErrorCode::NotFound
    );
}

#[test]
fn restart_policies_decide_after_an_exit() {
    let mut host = Host::start();
    // on-failure: a clean exit ends it.
    host.call(Op::StartService(service(
        "clean",
        "exit 0",
        RestartPolicy::OnFailure,
    )));
    host.wait_event(
        "clean exit, no restart",
        |e| matches!(e, Event::ServiceExited { name, restarting: false, .. } if name == "clean"),
    );
    // on-failure: a failing one is restarted, with a growing backoff.
    host.call(Op::StartService(service(
        "failing",
        "exit 4",
        RestartPolicy::OnFailure,
    )));
    host.wait_event(
        "third start",
        |e| matches!(e, Event::ServiceStarted { name, restarts: 2, .. } if name == "failing"),
    );
    // no: never restarted.
    host.call(Op::StartService(service(
        "once",
        "exit 1",
        RestartPolicy::No,
    )));
    host.wait_event(
        "once exits",
        |e| matches!(e, Event::ServiceExited { name, restarting: false, .. } if name == "once"),
    );
    let Reply::Services { services } = host.call(Op::ServiceStatus) else {
        panic!("no services reply")
    };
    let once = services.iter().find(|s| s.name == "once").unwrap();
    assert_eq!(once.state, ServiceState::Stopped);
    assert_eq!(once.last_exit.unwrap().code, Some(1));
    for name in ["clean", "failing", "once"] {
        assert_eq!(
            host.call(Op::StopService { name: name.into() }),
            Reply::Done
        );
    }
}

#[test]
fn stop_sends_the_stop_signal_and_logs_go_to_the_log_file() {
    let mut host = Host::start();
    let log = host.root.join("var/log/trapper.log");
    let mut spec = service(
        "trapper",
        "trap 'echo got-usr1; exit 0' USR1; echo up; while true; do sleep 0.05; done",
        RestartPolicy::Always,
    );
    spec.stop_signal = "USR1".into();
    spec.log = Some(log.display().to_string());
    host.call(Op::StartService(spec));
    host.wait_event("started", |e| matches!(e, Event::ServiceStarted { .. }));
    wait_until("the service logs", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("up\n")
    });
    assert_eq!(
        host.call(Op::StopService {
            name: "trapper".into()
        }),
        Reply::Done
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("got-usr1"), "{text}");
    assert_eq!(
        host.error_of(Op::StartService(ServiceSpec {
            stop_signal: "BOGUS".into(),
            ..service("x", "true", RestartPolicy::No)
        })),
        ErrorCode::BadRequest
    );
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

fn pids_in(file: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

#[test]
fn concurrent_starts_of_one_service_leave_no_process_after_stop() {
    let mut host = Host::start();
    let pids = host.root.join("dup.pids");
    let run = format!("echo $$ >> {}; exec sleep 300", pids.display());
    let ids: Vec<u64> = (0..8)
        .map(|_| {
            host.send(Op::StartService(service(
                "dup",
                &run,
                RestartPolicy::Always,
            )))
        })
        .collect();
    let mut replies = BTreeMap::new();
    while replies.len() < ids.len() {
        match host.recv() {
            AgentMessage::Response { id, reply } => {
                replies.insert(id, reply);
            }
            AgentMessage::Event { event } => host.events.push(event),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(replies.values().all(|r| *r == Reply::Done), "{replies:?}");
    // One of them is registered and running.
    wait_until("the service runs", || !pids_in(&pids).is_empty());
    assert_eq!(
        host.call(Op::StopService { name: "dup".into() }),
        Reply::Done
    );
    let stopped = std::time::Instant::now();
    let deadline = stopped + PATIENCE;
    let survivors = loop {
        let survivors: Vec<u32> = pids_in(&pids).into_iter().filter(|p| alive(*p)).collect();
        if survivors.is_empty() || std::time::Instant::now() > deadline {
            break survivors;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_all(&survivors);
    assert!(
        survivors.is_empty(),
        "processes of `dup` left: {survivors:?}"
    );
    assert_eq!(
        host.error_of(Op::StopService { name: "dup".into() }),
        ErrorCode::NotFound
    );
}

#[test]
fn stop_kills_what_the_service_started_too() {
    let mut host = Host::start();
    let pids = host.root.join("child.pid");
    // A child that ignores TERM, in the service's process group.
    let run = format!(
        "(trap '' TERM; exec sleep 300) & echo $! > {}; exec sleep 300",
        pids.display()
    );
    host.call(Op::StartService(service(
        "parent",
        &run,
        RestartPolicy::Always,
    )));
    wait_until("the child started", || !pids_in(&pids).is_empty());
    let child = pids_in(&pids)[0];
    assert!(alive(child));
    assert_eq!(
        host.call(Op::StopService {
            name: "parent".into()
        }),
        Reply::Done
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while alive(child) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(child);
    kill_all(&[child]);
    assert!(!survived, "the service's child `{child}` survived the stop");
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- health ----

fn check(app: &str, probe: Probe, retries: u32, on_fail: OnFail) -> HealthSpec {
    HealthSpec {
        app: app.into(),
        probe,
        every_ms: 50,
        timeout_ms: 2_000,
        retries,
        on_fail,
    }
}

#[test]
fn a_failing_health_check_restarts_its_service() {
    let mut host = Host::start();
    let flag = host.root.join("healthy");
    host.call(Op::StartService(service(
        "web",
        "exec sleep 300",
        RestartPolicy::Always,
    )));
    let first = match host.wait_event("started", |e| matches!(e, Event::ServiceStarted { .. })) {
        Event::ServiceStarted { pid, .. } => pid,
        _ => unreachable!(),
    };
    std::fs::write(&flag, "").unwrap();
    let probe = Probe::Command {
        command: format!("test -e {}", flag.display()),
    };
    let reply = host.call(Op::SetHealthChecks {
        checks: vec![check(
            "web",
            probe,
            2,
            OnFail::RestartService {
                service: "web".into(),
            },
        )],
    });
    assert_eq!(reply, Reply::Done);
    host.wait_event("healthy", |e| {
        matches!(e, Event::Health { healthy: true, .. })
    });
    std::fs::remove_file(&flag).unwrap();
    host.wait_event("second failure", |e| {
        matches!(
            e,
            Event::Health {
                healthy: false,
                failures: 2,
                ..
            }
        )
    });
    host.wait_event("restart acted", |e| {
        matches!(
            e,
            Event::HealthAction {
                ok: true,
                on_fail: OnFail::RestartService { .. },
                ..
            }
        )
    });
    let second = match host.wait_event("restarted", |e| {
        matches!(e, Event::ServiceStarted { restarts: 1, .. })
    }) {
        Event::ServiceStarted { pid, .. } => pid,
        _ => unreachable!(),
    };
    assert_ne!(first, second);
    std::fs::write(&flag, "").unwrap();
    host.wait_event("healthy again", |e| {
        matches!(e, Event::Health { healthy: true, .. })
    });
    host.call(Op::SetHealthChecks { checks: vec![] });
    host.call(Op::StopService { name: "web".into() });
}

#[test]
fn tcp_http_and_process_probes() {
    let mut host = Host::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
            let status = if ok { "200 OK" } else { "503 Unavailable" };
            let _ = write!(s, "HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let checks = vec![
        check(
            "tcp-up",
            Probe::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            1,
            OnFail::None,
        ),
        check(
            "http-up",
            Probe::Http {
                url: format!("http://127.0.0.1:{port}/ok"),
            },
            1,
            OnFail::None,
        ),
        check(
            "http-503",
            Probe::Http {
                url: format!("http://127.0.0.1:{port}/down"),
            },
            1,
            OnFail::Alert,
        ),
        check(
            "tcp-closed",
            Probe::Tcp {
                host: "127.0.0.1".into(),
                port: closed_port,
            },
            2,
            OnFail::RestartVm,
        ),
        check(
            "no-process",
            Probe::Process {
                process: "no-such-process-orgo".into(),
            },
            1,
            OnFail::RestartService {
                service: "missing".into(),
            },
        ),
        check(
            "none-down",
            Probe::Tcp {
                host: "127.0.0.1".into(),
                port: closed_port,
            },
            1,
            OnFail::None,
        ),
    ];
    host.call(Op::SetHealthChecks { checks });
    // `none` reaches its retries twice and acts neither time: an action
    // would come right after the failure that triggered it, on the same
    // thread, so before the second failure.
    for _ in 0..2 {
        host.wait_event(
            "none-down failing",
            |e| matches!(e, Event::Health { app, healthy: false, .. } if app == "none-down"),
        );
    }
    assert!(
        !host.events.iter().any(|e| matches!(
            e,
            Event::HealthAction { app, .. }
                | Event::Alert { app, .. }
                | Event::RestartVmRequested { app }
                if app == "none-down"
        )),
        "on_fail: none acted: {:?}",
        host.events
    );
    for app in ["tcp-up", "http-up"] {
        host.wait_event(
            app,
            |e| matches!(e, Event::Health { app: a, healthy: true, .. } if a == app),
        );
    }
    host.wait_event("alert", |e| matches!(e, Event::Alert { app, message, .. } if app == "http-503" && message.contains("503")));
    host.wait_event(
        "restart vm",
        |e| matches!(e, Event::RestartVmRequested { app } if app == "tcp-closed"),
    );
    host.wait_event(
        "missing service",
        |e| matches!(e, Event::HealthAction { app, ok: false, .. } if app == "no-process"),
    );
    host.call(Op::SetHealthChecks { checks: vec![] });
}

// ---- environment and identity ----

#[test]
fn env_is_written_for_login_shells_and_used_by_later_processes() {
    let mut host = Host::start();
    let env: BTreeMap<String, String> = [
        ("APP_MODE".to_string(), "it's live".to_string()),
        ("PORT".to_string(), "8080".to_string()),
    ]
    .into();
    assert_eq!(host.call(Op::SetEnv { env }), Reply::Done);
    let profile = host.root.join("etc/profile.d/orgo.sh");
    let (code, out, _) = host.exec(Exec::shell(format!(
        "env -i sh -c '. {}; echo \"$APP_MODE:$PORT\"'; echo \"$PORT\"",
        profile.display()
    )));
    assert_eq!((code, out.as_str()), (0, "it's live:8080\n8080\n"));
    // A new set replaces the old one.
    let env: BTreeMap<String, String> = [("OTHER".to_string(), "1".to_string())].into();
    host.call(Op::SetEnv { env });
    let (_, out, _) = host.exec(Exec::shell("echo \"[$PORT][$OTHER]\""));
    assert_eq!(out, "[][1]\n");
    let bad: BTreeMap<String, String> = [("1BAD".to_string(), "x".to_string())].into();
    assert_eq!(
        host.error_of(Op::SetEnv { env: bad }),
        ErrorCode::BadRequest
    );
}

#[test]
fn identity_reset_derives_the_machine_id_from_the_hosts_entropy() {
    let mut host = Host::start();
    let identity = |fill: u8, bytes: usize| Identity {
        entropy: Bytes(vec![fill; bytes]),
        unix_secs: 1_800_000_000,
        unix_nanos: 0,
        hostname: Some("clone-1".into()),
    };
    let mut machine_id_after = |identity: Identity| {
        assert_eq!(host.call(Op::ResetIdentity(identity)), Reply::Done);
        std::fs::read_to_string(host.root.join("etc/machine-id")).unwrap()
    };
    let first = machine_id_after(identity(7, 64));
    let id = first.strip_suffix('\n').unwrap();
    assert_eq!(id.len(), 32, "{first:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{first:?}"
    );
    // Two clones given different bytes get different ids, whatever their
    // (shared, restored) random state; the same bytes give the same id.
    let other = machine_id_after(identity(8, 64));
    assert_ne!(first, other);
    assert_eq!(machine_id_after(identity(7, 64)), first);
    assert_eq!(
        std::fs::read_to_string(host.root.join("etc/hostname")).unwrap(),
        "clone-1\n"
    );
    assert_eq!(
        host.error_of(Op::ResetIdentity(identity(7, 8))),
        ErrorCode::BadRequest
    );
}
