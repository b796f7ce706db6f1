//! The agent client against a real agent (on the host, in a sandbox) behind
//! a fake of Cloud Hypervisor's hybrid vsock socket, and a serial-style
//! channel whose previous host left a half-read stream behind.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use orgo_agent::{Agent, AgentConfig, Server};
use orgo_agent_protocol::{
    AgentMessage, ErrorCode, Exec, FrameReader, Op, PROTOCOL_VERSION, ReadyInfo, Reply, Request,
    write_frame,
};
use orgo_runtime::{AgentClient, AgentError};

const T: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orgo-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    dir
}

fn sandbox_server(root: &PathBuf) -> Server {
    Server::new(Agent::new(AgentConfig::sandbox(root)))
}

#[test]
fn hybrid_vsock_handshake_then_the_protocol() {
    let root = scratch("hybrid");
    let socket = root.join("vsock.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = sandbox_server(&root);
    std::thread::spawn(move || {
        // First connection: refused as CH does while the guest does not listen.
        let (mut s, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        s.read_exact(&mut line).unwrap();
        drop(s);
        // Second: accepted.
        let (mut s, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        s.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"CONNECT 1024\n");
        s.write_all(b"OK 1073741824\n").unwrap();
        let writer = s.try_clone().unwrap();
        server.serve(s, Box::new(writer), true);
    });
    let client = AgentClient::connect_hybrid_vsock(&socket, 1024, T).unwrap();
    assert_eq!(
        client.ready().protocol,
        orgo_agent_protocol::PROTOCOL_VERSION
    );
    let out = client.exec(Exec::argv(["echo", "over vsock"]), T).unwrap();
    assert_eq!(out.stdout, b"over vsock\n");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_new_host_finds_its_footing_after_a_previous_hosts_half_frame() {
    let (host, agent_end) = UnixStream::pair().unwrap();
    // A fake agent: the tail of a frame a previous host did not finish
    // reading, then proper answers.
    let fake = std::thread::spawn(move || {
        let mut w = agent_end.try_clone().unwrap();
        w.write_all(b"GO\0\x01\0\0\0\0\0\x09{\"type\":").unwrap();
        let mut frames = FrameReader::new(agent_end);
        for _ in 0..2 {
            let request: Request = frames.read().unwrap().unwrap();
            let reply = match request.op {
                Op::Hello { .. } => Reply::Ready(ReadyInfo {
                    agent_version: "test".into(),
                    protocol: PROTOCOL_VERSION,
                    uptime_ms: None,
                    pid1: false,
                }),
                _ => Reply::Error {
                    code: ErrorCode::PathDenied,
                    message: "no".into(),
                },
            };
            write_frame(
                &mut w,
                &AgentMessage::Response {
                    id: request.id,
                    reply,
                },
            )
            .unwrap();
        }
    });
    let client = AgentClient::handshake(host, T).unwrap();
    assert_eq!(client.ready().agent_version, "test");
    match client.read_file("/proc/self/environ", T) {
        Err(AgentError::Guest { code, .. }) => assert_eq!(code, ErrorCode::PathDenied),
        other => panic!("{other:?}"),
    }
    fake.join().unwrap();
    // The agent went away: requests fail instead of hanging.
    assert!(matches!(
        client.request(Op::Ping, T),
        Err(AgentError::Closed | AgentError::Io(_))
    ));
}

/// A fake agent on `end`: answers [`Op::Hello`] with `hello`, nothing else;
/// tells the id and name of every request it reads.
fn fake_agent(end: UnixStream, hello: Reply) -> std::sync::mpsc::Receiver<(u64, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut w = end.try_clone().unwrap();
        let mut frames = FrameReader::new(end);
        while let Ok(Some(request)) = frames.read::<Request>() {
            let _ = tx.send((request.id, request.op.name().to_string()));
            if matches!(request.op, Op::Hello { .. }) {
                let reply = AgentMessage::Response {
                    id: request.id,
                    reply: hello.clone(),
                };
                write_frame(&mut w, &reply).unwrap();
            }
        }
    });
    rx
}

fn ready() -> Reply {
    Reply::Ready(ReadyInfo {
        agent_version: "fake".into(),
        protocol: PROTOCOL_VERSION,
        uptime_ms: None,
        pid1: false,
    })
}

/// Whether the peer of `end` has closed: a read gives the end of the stream
/// (a peer still open would leave the read to time out).
fn peer_closed(end: &mut UnixStream) -> bool {
    end.set_read_timeout(Some(T)).unwrap();
    let mut byte = [0u8; 1];
    matches!(end.read(&mut byte), Ok(0))
}

#[test]
fn two_clients_in_one_process_use_different_request_ids() {
    let (host_a, agent_a) = UnixStream::pair().unwrap();
    let (host_b, agent_b) = UnixStream::pair().unwrap();
    let (seen_a, seen_b) = (fake_agent(agent_a, ready()), fake_agent(agent_b, ready()));
    let _a = AgentClient::handshake(host_a, T).unwrap();
    let _b = AgentClient::handshake(host_b, T).unwrap();
    let (hello_a, hello_b) = (
        seen_a.recv_timeout(T).unwrap(),
        seen_b.recv_timeout(T).unwrap(),
    );
    assert_eq!((hello_a.1.as_str(), hello_b.1.as_str()), ("hello", "hello"));
    assert_ne!(
        hello_a.0, hello_b.0,
        "both clients sent request id `{}`",
        hello_a.0
    );
}

#[test]
fn a_dropped_client_closes_its_socket() {
    let (host, agent_end) = UnixStream::pair().unwrap();
    let mut probe = agent_end.try_clone().unwrap();
    let _seen = fake_agent(agent_end, ready());
    let client = AgentClient::handshake(host, T).unwrap();
    drop(client);
    assert!(peer_closed(&mut probe), "the socket is still open");
}

#[test]
fn a_failed_handshake_closes_its_socket() {
    let (host, agent_end) = UnixStream::pair().unwrap();
    let mut probe = agent_end.try_clone().unwrap();
    let _seen = fake_agent(
        agent_end,
        Reply::Error {
            code: ErrorCode::UnsupportedVersion,
            message: "no".into(),
        },
    );
    match AgentClient::handshake(host, T) {
        Err(AgentError::Guest { code, .. }) => assert_eq!(code, ErrorCode::UnsupportedVersion),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(peer_closed(&mut probe), "the socket is still open");
}

#[test]
fn an_oversize_request_is_refused_at_once_and_not_sent() {
    let (host, agent_end) = UnixStream::pair().unwrap();
    let seen = fake_agent(agent_end, ready());
    let client = AgentClient::handshake(host, T).unwrap();
    // The fake answers nothing but hello: a request that was sent would
    // time out instead.
    let file = vec![0u8; orgo_agent_protocol::MAX_FILE_BYTES as usize + 1];
    match client.write_file("/big", &file, None, None, None, T) {
        Err(AgentError::TooLarge { op, bytes, limit }) => {
            assert_eq!(op, "write_file");
            assert_eq!(
                (bytes, limit),
                (file.len() as u64, orgo_agent_protocol::MAX_FILE_BYTES)
            );
        }
        other => panic!("expected `TooLarge`, got {other:?}"),
    }
    let mut exec = Exec::argv(["cat"]);
    exec.stdin = Some(orgo_agent_protocol::Bytes(vec![
        0u8;
        orgo_agent_protocol::MAX_FRAME_BYTES
            as usize
    ]));
    match client.exec(exec, T) {
        Err(AgentError::TooLarge { op, bytes, limit }) => {
            assert_eq!(op, "exec");
            assert!(bytes > limit, "{bytes} <= {limit}");
            assert_eq!(limit, u64::from(orgo_agent_protocol::MAX_FRAME_BYTES));
        }
        other => panic!("expected `TooLarge`, got {other:?}"),
    }
    drop(client);
    let sent: Vec<String> = seen.iter().map(|(_, op)| op).collect();
    assert_eq!(sent, ["hello"]);
}
