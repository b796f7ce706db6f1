//! Load, under QEMU TCG: 50 concurrent clients mixing reads (templates,
//! computers, a build's status, a file) and execs on one computer, for
//! 30 s, over real TCP. No request may fail, every exec must return its
//! own output, and once the computer is stopped nothing of it is left (no
//! record, no directory, no lease, no owner file).
//!
//! Needs root, QEMU and the base image in `target/orgo-test-home`; the
//! template is the restart test's (built once for all of them).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;
#[path = "../../orgo-runtime/tests/common/mod.rs"]
mod vm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, client, key};
use orgo_server::ServerConfig;
use serde_json::{Value, json};

const BASE: &str = "api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: [\"echo base > /opt/base.txt\"]\n";
const CLIENTS: usize = 50;
const DURATION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_for_thirty_seconds() {
    let runtime = vm::test_runtime().await;
    let home = runtime.store().root().to_path_buf();
    let server = TestServer::start(runtime.clone(), ServerConfig::default()).await;
    let url = server.url.clone();
    let team = key(&home, "load", false);
    let http = client();
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(BASE)
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success());
    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({"template_ref": "restart-base@1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        launched.status().as_u16(),
        201,
        "{}",
        launched.text().await.unwrap()
    );
    let id = launched.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let requests = Arc::new(AtomicU64::new(0));
    let execs = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + DURATION;
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (url, team, id) = (url.clone(), team.clone(), id.clone());
        let (requests, execs) = (Arc::clone(&requests), Arc::clone(&execs));
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let what = (n as u64 + i) % 5;
                let path = match what {
                    0 => "/api/templates".to_owned(),
                    1 => "/api/computers".to_owned(),
                    2 => "/api/templates/load/restart-base/1.0.0/build".to_owned(),
                    3 => format!("/api/computers/{id}/files?path=/opt/base.txt"),
                    _ => String::new(),
                };
                if what == 4 {
                    let marker = format!("{n}-{i}");
                    let response = http
                        .post(format!("{url}/api/computers/{id}/exec"))
                        .bearer_auth(&team)
                        .json(&json!({"command": ["echo", marker]}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 200, "exec {marker}");
                    let text = response.text().await.unwrap();
                    let lines: Vec<Value> = text
                        .lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                    let last = lines.last().unwrap();
                    assert_eq!(
                        (last["type"].as_str(), last["exit_code"].as_i64()),
                        (Some("exit"), Some(0)),
                        "exec {marker}: {text}"
                    );
                    use base64::Engine as _;
                    let out: Vec<u8> = lines
                        .iter()
                        .filter(|l| l["type"] == "stdout")
                        .flat_map(|l| {
                            base64::engine::general_purpose::STANDARD
                                .decode(l["data"].as_str().unwrap())
                                .unwrap()
                        })
                        .collect();
                    assert_eq!(
                        out,
                        format!("{marker}\n").into_bytes(),
                        "exec {marker} got another's output"
                    );
                    execs.fetch_add(1, Ordering::Relaxed);
                } else {
                    let response = http
                        .get(format!("{url}{path}"))
                        .bearer_auth(&team)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.bytes().await.unwrap();
                    assert_eq!(
                        status,
                        200,
                        "GET {path}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    if what == 3 {
                        assert_eq!(&body[..], b"base\n");
                    }
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let (total, execs) = (
        requests.load(Ordering::Relaxed),
        execs.load(Ordering::Relaxed),
    );
    eprintln!(
        "load: {total} requests ({execs} execs) from {CLIENTS} clients in {} s",
        DURATION.as_secs()
    );
    assert!(execs > 0 && total > execs);

    let stopped = http
        .delete(format!("{url}/api/computers/{id}"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 200);
    server.shutdown().await;
    // Nothing of it is left.
    assert!(
        runtime
            .computers()
            .unwrap()
            .iter()
            .all(|c| c.record.id != id),
        "its record is left"
    );
    assert!(
        !home.join("computers").join(&id).exists(),
        "its directory is left"
    );
    assert!(
        !home
            .join("server/computers")
            .join(format!("{id}.json"))
            .exists(),
        "its owner file is left"
    );
    let cache = orgo_snapshot::BuildCache::new(Arc::new(runtime.store().clone()));
    assert!(
        !cache.leases().await.unwrap().contains(&id),
        "its lease is left"
    );
}
