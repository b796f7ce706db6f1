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

use orgo_agent::{
    Agent, AgentConfig, AgentMessage, ErrorCode, Exec, FrameReader, Op, PROTOCOL_VERSION,
    ReadyInfo, Reply, Request, Server, write_frame,
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
    assert_eq!(client.ready().protocol, orgo_agent::PROTOCOL_VERSION);
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
