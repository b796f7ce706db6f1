//! Egress learn mode over HTTP, under QEMU TCG: a computer launched with
//! `egress_learn: true` looks a name up; `GET /api/computers/{id}/egress`
//! answers that name and the smallest `egress_policy` allowing it, as the
//! library does.
//!
//! The names resolve through a DNS server of this test on loopback (the
//! runtime's `dns_upstream`): it answers every `A` query with a
//! documentation address (`192.0.2.10`) that nothing dials, so no traffic
//! leaves this host. Needs root (the host network) and QEMU; the template
//! is the restart tests' (`restart-base@1.0.0`), so one of them builds it
//! and the others find it built.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;
#[path = "../../orgo-runtime/tests/common/mod.rs"]
mod vm;

use std::net::{SocketAddr, UdpSocket};

use common::{TestServer, client, key};
use orgo_server::ServerConfig;
use serde_json::{Value, json};

const BASE: &str = "api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: [\"echo base > /opt/base.txt\"]\n";

/// The address every `A` answer carries (TEST-NET-1, never dialled).
const ANSWER: [u8; 4] = [192, 0, 2, 10];

/// The answer to one DNS query: an `A` record of [`ANSWER`] for an `A`
/// question, no record otherwise; `None` for what is no query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question's name: labels up to the zero byte.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    query.get(question_end - 1)?;
    let mut reply = query[..question_end].to_vec();
    reply[2] = 0x81; // a response, recursion desired
    reply[3] = 0x80; // recursion available, NOERROR
    reply[6..12].copy_from_slice(&[0, u8::from(qtype == 1), 0, 0, 0, 0]);
    if qtype == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ANSWER);
    }
    Some(reply)
}

/// The test's DNS server on loopback, on a thread for the process's life.
fn dns_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..n]) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    addr
}

#[test]
fn the_dns_answers_are_well_formed() {
    // `learned.api.test A IN`, id 0x1234.
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["learned", "api", "test"] {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply = answer(&query).unwrap();
    assert_eq!(&reply[..4], &[0x12, 0x34, 0x81, 0x80]);
    assert_eq!(&reply[4..8], &[0, 1, 0, 1], "one question, one answer");
    assert_eq!(&reply[reply.len() - 4..], &ANSWER);
    // AAAA: no record.
    let len = query.len();
    query[len - 3] = 28;
    assert_eq!(&answer(&query).unwrap()[6..8], &[0, 0]);
    assert!(answer(&[0; 5]).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_launched_to_learn_reports_the_names_it_used() {
    assert!(
        rustix::process::geteuid().is_root(),
        "learn mode needs the host network (root)"
    );
    let agent = tokio::task::spawn_blocking(vm::static_agent).await.unwrap();
    let mut config = orgo_runtime::RuntimeConfig::new(vm::test_home());
    config.agent = Some(agent);
    config.accel = Some(orgo_runtime::Accel::Tcg);
    config.guest_ca_certs = vm::guest_ca_certs();
    config.dns_upstream = Some(dns_server());
    let runtime = orgo_runtime::Runtime::open(config).await.unwrap();
    let home = runtime.store().root().to_path_buf();
    let server = TestServer::start(runtime, ServerConfig::default()).await;
    let url = server.url.clone();
    let team = key(&home, "learn", false);
    let http = client();
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(BASE)
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success(), "{}", published.status());

    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({"template_ref": "restart-base@1.0.0", "egress_learn": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status().as_u16(), 201);
    let computer: Value = launched.json().await.unwrap();
    let id = computer["id"].as_str().unwrap().to_owned();
    assert_eq!(computer["egress_learn"], true);

    let name = format!("n{}.learned.test", vm::nonce().replace('-', ""));
    let exec: String = http
        .post(format!("{url}/api/computers/{id}/exec"))
        .bearer_auth(&team)
        .json(&json!({"command": ["getent", "ahostsv4", name]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(exec.lines().last().unwrap()).unwrap();
    assert_eq!(last["exit_code"], 0, "the name resolved: {exec}");

    let learned = http
        .get(format!("{url}/api/computers/{id}/egress"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(learned.status().as_u16(), 200);
    let learned: Value = learned.json().await.unwrap();
    assert!(
        learned["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == name.as_str()),
        "{learned}"
    );
    let policy = learned["policy"].as_str().unwrap();
    assert!(
        policy.starts_with("egress_policy:\n  mode: allow\n") && policy.contains(&name),
        "{policy}"
    );
    // The policy is one a template takes, allowing exactly that name.
    let pasted = orgo_template::Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: pasted@1.0.0\n{policy}"
    ))
    .unwrap();
    let rules: Vec<String> = pasted
        .egress_policy()
        .unwrap()
        .rules
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(rules.contains(&name), "{rules:?}");

    let stopped = http
        .delete(format!("{url}/api/computers/{id}"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 200);
    server.shutdown().await;
}
