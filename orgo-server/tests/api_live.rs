//! Live computers over real TCP under QEMU TCG: a computer launched over
//! HTTP is suspended (its calls answer 409 `conflict` saying so, a second
//! suspend too), resumed with its files, checkpointed, and forked into two
//! computers of the same key, which the key lists and stops; a bad count
//! is a 400; a computer launched with a secret is refused a checkpoint
//! (422 `build_failed`, naming the secret, never its value).
//!
//! Needs root, QEMU and the base image (built into `target/orgo-test-home`
//! the first time, as the runtime's VM tests do).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;
#[path = "../../orgo-runtime/tests/common/mod.rs"]
mod vm;

use common::{TestServer, client, error_code, key};
use orgo_server::ServerConfig;
use serde_json::{Value, json};

async fn run(url: &str, key: &str, id: &str, command: &str) -> Vec<Value> {
    let response = client()
        .post(format!("{url}/api/computers/{id}/exec"))
        .bearer_auth(key)
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stdout(frames: &[Value]) -> String {
    use base64::Engine as _;
    let mut out = Vec::new();
    for frame in frames.iter().filter(|f| f["type"] == "stdout") {
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(frame["data"].as_str().unwrap())
                .unwrap(),
        );
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_checkpoint_and_fork_over_http() {
    let runtime = vm::test_runtime().await;
    let home = runtime.store().root().to_path_buf();
    let server = TestServer::start(runtime, ServerConfig::default()).await;
    let url = server.url.clone();
    let team = key(&home, "team", false);
    let http = client();
    let nonce = vm::nonce();
    let name = format!("api-live-{nonce}");
    let document =
        format!("api_version: orgo.ai/v1\nname: {name}@1.0.0\nenv:\n  NONCE: \"{nonce}\"\n");
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(document)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({ "template_ref": format!("{name}@1.0.0") }))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status().as_u16(), 201);
    let computer: Value = launched.json().await.unwrap();
    let id = computer["id"].as_str().unwrap().to_owned();
    run(&url, &team, &id, "echo kept > /root/kept").await;
    let post = |path: String| {
        http.post(format!("{url}/api/computers/{id}/{path}"))
            .bearer_auth(&team)
    };

    let suspended = post("suspend".into()).send().await.unwrap();
    assert_eq!(suspended.status().as_u16(), 200);
    let body: Value = suspended.json().await.unwrap();
    assert!(body["paused_ms"].as_u64().unwrap() > 0, "{body}");
    let listed: Value = http
        .get(format!("{url}/api/computers/{id}"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["status"], "suspended");
    let again = error_code(post("suspend".into()).send().await.unwrap()).await;
    assert_eq!((again.0, again.1.as_str()), (409, "conflict"), "{again:?}");
    let exec = error_code(
        http.post(format!("{url}/api/computers/{id}/exec"))
            .bearer_auth(&team)
            .json(&json!({ "command": "true" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((exec.0, exec.1.as_str()), (409, "conflict"), "{exec:?}");
    assert_eq!(exec.2["state"], "suspended", "{exec:?}");

    let resumed = post("resume".into()).send().await.unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    assert_eq!(
        stdout(&run(&url, &team, &id, "cat /root/kept").await),
        "kept\n"
    );

    let checkpoint: Value = post("checkpoint".into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        checkpoint["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{checkpoint}"
    );
    assert_eq!(checkpoint["computer"], id.as_str());

    // Published under a ref of the key's namespace, it launches by that
    // ref; the ref is immutable, and another namespace's is refused before
    // anything is paused.
    let branch = format!("{name}-branch@1.0.0");
    let published: Value = post("checkpoint".into())
        .json(&json!({ "publish": branch }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        published["published"],
        format!("team/{branch}"),
        "{published}"
    );
    let taken = error_code(
        post("checkpoint".into())
            .json(&json!({ "publish": branch }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (taken.0, taken.1.as_str()),
        (409, "version_conflict"),
        "{taken:?}"
    );
    assert_eq!(taken.2["existing"], published["digest"], "{taken:?}");
    let outside = error_code(
        post("checkpoint".into())
            .json(&json!({ "publish": "other/branch@1.0.0" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (outside.0, outside.1.as_str()),
        (403, "namespace_scope_mismatch"),
        "{outside:?}"
    );
    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({ "template_ref": branch }))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status().as_u16(), 201);
    let branched: Value = launched.json().await.unwrap();
    let branched = branched["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stdout(&run(&url, &team, &branched, "cat /root/kept").await),
        "kept\n"
    );

    let bad = error_code(
        post("fork".into())
            .json(&json!({ "count": 0 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.0, 400, "{bad:?}");
    let forked = post("fork".into())
        .json(&json!({ "count": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(forked.status().as_u16(), 201);
    let forked: Value = forked.json().await.unwrap();
    let forks: Vec<String> = forked["computers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(forks.len(), 2, "{forked}");
    for fork in &forks {
        assert_ne!(fork, &id);
        assert_eq!(
            stdout(&run(&url, &team, fork, "cat /root/kept").await),
            "kept\n"
        );
        assert_eq!(
            stdout(&run(&url, &team, fork, "hostname").await).trim(),
            fork
        );
    }
    let ours: Value = http
        .get(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = ours["computers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for fork in &forks {
        assert!(listed.contains(&fork.as_str()), "{ours}");
    }
    // A computer launched over HTTP with a secret: the server keeps it in
    // memory, and the checkpoint is refused, naming it.
    let secret_name = format!("api-live-secret-{nonce}");
    let document = format!(
        "api_version: orgo.ai/v1\nname: {secret_name}@1.0.0\nsecrets:\n  - name: token\nenv:\n  NONCE: \"{nonce}\"\n  TOKEN: {{ secret: token }}\n"
    );
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(document)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let value = format!("canary-{nonce}");
    let launched: Value = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({ "template_ref": format!("{secret_name}@1.0.0"), "secrets": { "token": value } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let holder = launched["id"].as_str().unwrap().to_owned();
    let refused = http
        .post(format!("{url}/api/computers/{holder}/checkpoint"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    let (status, code, details) = error_code(refused).await;
    assert_eq!((status, code.as_str()), (422, "build_failed"), "{details}");
    assert_eq!(details["secrets"][0]["name"], "token", "{details}");
    assert!(!details.to_string().contains(&value), "never the value");

    for id in forks.iter().chain([&id, &holder, &branched]) {
        let stopped = http
            .delete(format!("{url}/api/computers/{id}"))
            .bearer_auth(&team)
            .send()
            .await
            .unwrap();
        assert_eq!(stopped.status().as_u16(), 200);
    }
}
