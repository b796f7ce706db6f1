//! End to end over real TCP under QEMU TCG: publish a small template,
//! build it (two posts share one build; the SSE log consumed to the end by
//! a late subscriber), launch one computer, then many calls on it: exec
//! streaming (output, exit code, cwd, user, env, timeout), files both ways
//! (binary, over the cap, missing), the automation (a webhook, events, a
//! service's log, metrics), the desktop and egress routes of a headless
//! computer not launched to learn (409 `no_desktop`, 409 `conflict`; a
//! read-only key may look, not act), another namespace's view, stop.
//!
//! Needs root, QEMU and the base image (built into `target/orgo-test-home`
//! the first time, as the runtime's VM tests do).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;
#[path = "../../orgo-runtime/tests/common/mod.rs"]
mod vm;

use base64::Engine as _;
use common::{TestServer, client, error_code, key};
use futures_util::StreamExt as _;
use orgo_server::ServerConfig;
use serde_json::{Value, json};

/// The events of an SSE stream, read to its end: `(event, data)`.
async fn sse(response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            Some((event?, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

/// An exec's NDJSON frames, as they came.
async fn exec(url: &str, key: &str, id: &str, body: Value) -> Vec<Value> {
    let response = client()
        .post(format!("{url}/api/computers/{id}/exec"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn output(frames: &[Value], kind: &str) -> String {
    let mut bytes = Vec::new();
    for f in frames.iter().filter(|f| f["type"] == kind) {
        bytes.extend(
            base64::engine::general_purpose::STANDARD
                .decode(f["data"].as_str().unwrap())
                .unwrap(),
        );
    }
    String::from_utf8(bytes).unwrap()
}

/// Polls `check` every half second until it gives a value (a hang fails
/// after two minutes).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..240 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("never: {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_build_launch_exec_files_stop() {
    let runtime = vm::test_runtime().await;
    let home = runtime.store().root().to_path_buf();
    let server = TestServer::start(runtime, ServerConfig::default()).await;
    let url = server.url.clone();
    let team = key(&home, "team", false);
    let other = key(&home, "other", false);
    let read_only = key(&home, "team", true);
    let http = client();
    let nonce = vm::nonce();
    // A name of its own per run: the shared store keeps earlier runs' refs,
    // and a version is immutable.
    let name = format!("api-e2e-{nonce}");
    let document = format!(
        "api_version: orgo.ai/v1\nname: {name}@1.0.0\nenv:\n  NONCE: \"{nonce}\"\nbuild:\n  run:\n    - echo building-{nonce}\n    - echo built > /opt/built.txt\nhooks:\n  on_shutdown: echo bye\napps:\n  - name: greeter\n    services:\n      - name: greeter\n        run: \"echo hello-{nonce}; exec sleep infinity\"\ntriggers:\n  - name: deploy\n    source: {{ type: webhook, path: /deploy }}\n    actions: [{{ run: \"cat > /tmp/hook-body\" }}]\n"
    );
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(document)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let build = format!("{url}/api/templates/team/{name}/1.0.0/build");

    // Two posts, one build.
    let first: Value = http
        .post(&build)
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (first["status"].as_str(), first["reused"].as_bool()),
        (Some("building"), Some(false))
    );
    let second: Value = http
        .post(&build)
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (second["status"].as_str(), second["reused"].as_bool()),
        (Some("building"), Some(true))
    );

    // The log, consumed to its end; a subscriber after the end gets it all again.
    let events = sse(http
        .get(format!("{build}/events"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap())
    .await;
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(end["status"], "ready", "{end}");
    let logs: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, d)| d)
        .collect();
    assert!(logs.iter().all(|f| f["ts"].is_u64()
        && f["level"].is_string()
        && f["phase"].is_string()
        && f["source"].is_string()));
    assert!(
        logs.iter()
            .any(|f| f["phase"] == "step" && f["field"] == "build.run[0]"),
        "no step frame"
    );
    assert!(
        logs.iter()
            .any(|f| f["field"] == "build.run[0]" && f["line"] == format!("building-{nonce}")),
        "no output frame of build.run[0]"
    );
    let replay = sse(http
        .get(format!("{build}/events"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(replay.len(), events.len());
    let status: Value = http
        .get(&build)
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "ready");
    assert!(status["build_time_ms"].as_u64().unwrap() > 0);
    let again: Value = http
        .post(&build)
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["status"].as_str(), again["reused"].as_bool()),
        (Some("ready"), Some(true))
    );

    // Launch.
    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({"template_ref": format!("{name}@1.0.0"), "env": {"GREETING": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status().as_u16(), 201);
    let computer: Value = launched.json().await.unwrap();
    let id = computer["id"].as_str().unwrap().to_owned();
    assert_eq!(computer["status"], "running");
    assert_eq!(computer["template_ref"], format!("team/{name}@1.0.0"));
    assert!(computer["memory_mib"].as_u64().unwrap() >= 1024 && computer["ports"].is_array());
    assert_eq!(computer["egress_learn"], false);

    // Exec: output as it comes, the exit code, cwd, user, env.
    let frames = exec(
        &url,
        &team,
        &id,
        json!({"command": "echo out; echo err >&2; cat /opt/built.txt; exit 3"}),
    )
    .await;
    assert_eq!(output(&frames, "stdout"), "out\nbuilt\n");
    assert_eq!(output(&frames, "stderr"), "err\n");
    assert_eq!(frames.last().unwrap()["type"], "exit");
    assert_eq!(frames.last().unwrap()["exit_code"], 3);
    assert_eq!(frames.last().unwrap()["timed_out"], false);
    let frames = exec(&url, &team, &id, json!({"command": ["sh", "-c", "pwd; id -un; echo $GREETING $EXTRA"], "cwd": "/tmp", "user": "orgo", "env": {"EXTRA": "there"}})).await;
    assert_eq!(output(&frames, "stdout"), "/tmp\norgo\nhi there\n");
    let frames = exec(
        &url,
        &team,
        &id,
        json!({"command": "echo one; sleep 1; echo two; sleep 30", "timeout_s": 3}),
    )
    .await;
    assert!(
        frames.iter().filter(|f| f["type"] == "stdout").count() >= 2,
        "streamed: {frames:?}"
    );
    assert_eq!(frames.last().unwrap()["type"], "exit");
    assert_ne!(frames.last().unwrap()["exit_code"], 0);
    assert_eq!(frames.last().unwrap()["timed_out"], true, "{frames:?}");

    // Files both ways.
    let files = format!("{url}/api/computers/{id}/files");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let put = http
        .put(&files)
        .query(&[("path", "/tmp/blob.bin"), ("mode", "0600")])
        .bearer_auth(&team)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    assert_eq!(put.json::<Value>().await.unwrap()["bytes"], 300_000);
    let got = http
        .get(&files)
        .query(&[("path", "/tmp/blob.bin")])
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let frames = exec(
        &url,
        &team,
        &id,
        json!({"command": "stat -c %a /tmp/blob.bin"}),
    )
    .await;
    assert_eq!(output(&frames, "stdout"), "600\n");
    let over = vec![0u8; orgo_agent_protocol::MAX_FILE_BYTES as usize + 1];
    let (status, code, _) = error_code(
        http.put(&files)
            .query(&[("path", "/tmp/big")])
            .bearer_auth(&team)
            .body(over)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    let (status, code, _) = error_code(
        http.get(&files)
            .query(&[("path", "/nope")])
            .bearer_auth(&team)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));

    // The automation: a webhook with data, the events it made, the
    // service's log, the metrics.
    let fired: Value = http
        .post(format!("{url}/api/computers/{id}/webhooks"))
        .query(&[("path", "/deploy")])
        .bearer_auth(&team)
        .body("payload-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fired["triggers"], json!(["deploy"]));
    let (status, code, _) = error_code(
        http.post(format!("{url}/api/computers/{id}/webhooks"))
            .query(&[("path", "/nope")])
            .bearer_auth(&team)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    // The action runs beside the answer: its file appears soon.
    let body = eventually("the webhook's action wrote its body", || async {
        let response = http
            .get(&files)
            .query(&[("path", "/tmp/hook-body")])
            .bearer_auth(&team)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => Some(response.text().await.unwrap()),
            _ => None,
        }
    })
    .await;
    assert_eq!(body, "payload-1");
    let events = http
        .get(format!("{url}/api/computers/{id}/events"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "application/x-ndjson");
    let events: Vec<Value> = events
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "trigger_fired" && e["trigger"] == "deploy"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["ts"].is_string() && e["seq"].is_u64())
    );
    let logs = eventually("the service's line is in its log", || async {
        let logs: Vec<Value> = http
            .get(format!("{url}/api/computers/{id}/logs"))
            .query(&[("service", "greeter")])
            .bearer_auth(&team)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (!logs.is_empty()).then_some(logs)
    })
    .await;
    assert_eq!(
        logs,
        vec![json!({"service": "greeter", "line": format!("hello-{nonce}")})]
    );
    // A log no service writes: the stream's one line is a not_found error.
    let missing: Value = http
        .get(format!("{url}/api/computers/{id}/logs"))
        .query(&[("service", "nothing")])
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&missing["type"], &missing["error"]["code"]),
        (&json!("error"), &json!("not_found")),
        "{missing}"
    );
    let metrics = http
        .get(format!("{url}/api/computers/{id}/metrics"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("orgo_service_up{service=\"greeter\"}"),
        "{metrics}"
    );
    // No desktop: every desktop route says so, with its stable code; a
    // read-only key may look but not act. Not launched to learn: its
    // egress is a conflict.
    let click = || json!({"action": "click", "x": 1, "y": 1});
    for (method, path, body, key, want) in [
        (
            "GET",
            "desktop/screenshot",
            None,
            &team,
            (409, "no_desktop"),
        ),
        (
            "GET",
            "desktop/screenshot?x=0&y=0&width=10&height=10",
            None,
            &team,
            (409, "no_desktop"),
        ),
        (
            "GET",
            "desktop/screenshot?x=0",
            None,
            &team,
            (400, "invalid_request"),
        ),
        ("GET", "desktop/cursor", None, &team, (409, "no_desktop")),
        (
            "GET",
            "desktop/cursor",
            None,
            &read_only,
            (409, "no_desktop"),
        ),
        (
            "POST",
            "desktop/actions",
            Some(click()),
            &team,
            (409, "no_desktop"),
        ),
        (
            "POST",
            "desktop/actions",
            Some(json!({"action": "type", "text": "hi"})),
            &team,
            (409, "no_desktop"),
        ),
        (
            "POST",
            "desktop/actions",
            Some(json!({"action": "wave"})),
            &team,
            (400, "invalid_request"),
        ),
        (
            "POST",
            "desktop/actions",
            Some(click()),
            &read_only,
            (403, "read_only_key"),
        ),
        ("GET", "egress", None, &team, (409, "conflict")),
    ] {
        let mut request = http
            .request(
                method.parse().unwrap(),
                format!("{url}/api/computers/{id}/{path}"),
            )
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, code, _) = error_code(request.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), want, "{method} {path}");
    }

    // Another namespace does not see it.
    for (method, path) in [
        ("GET", format!("/api/computers/{id}")),
        ("DELETE", format!("/api/computers/{id}")),
        ("GET", format!("/api/computers/{id}/logs")),
        ("GET", format!("/api/computers/{id}/events")),
        ("POST", format!("/api/computers/{id}/webhooks?path=/deploy")),
        ("GET", format!("/api/computers/{id}/metrics")),
        ("GET", format!("/api/computers/{id}/services")),
        ("GET", format!("/api/computers/{id}/egress")),
        ("GET", format!("/api/computers/{id}/desktop/screenshot")),
        ("GET", format!("/api/computers/{id}/desktop/cursor")),
        ("POST", format!("/api/computers/{id}/desktop/actions")),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_code(response).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "not_found"),
            "{method} {path}"
        );
    }
    let theirs: Value = http
        .get(format!("{url}/api/computers"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["computers"], json!([]));
    let ours: Value = http
        .get(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ours["computers"][0]["id"], id.as_str());
    assert_eq!(ours["computers"][0]["status"], "running");
    // The template is in use: it is not deleted.
    let (status, code, _) = error_code(
        http.delete(format!("{url}/api/templates/team/{name}/1.0.0"))
            .bearer_auth(&team)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "in_use"));

    // Stop: on_shutdown runs; then it is gone.
    let stopped = http
        .delete(format!("{url}/api/computers/{id}"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 200);
    assert_eq!(
        stopped.json::<Value>().await.unwrap()["on_shutdown"],
        "bye\n"
    );
    let (status, _, _) = error_code(
        http.get(format!("{url}/api/computers/{id}"))
            .bearer_auth(&team)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    server.shutdown().await;
}
