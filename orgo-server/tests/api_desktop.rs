//! The desktop over HTTP, under QEMU TCG: a computer of a 640x480 desktop
//! template answers screenshots (a PNG of the screen, of a region), the
//! pointer's position, and every action (move, click, drag, type, key,
//! scroll), which move the pointer where they say; a point off the screen
//! is refused (422 `action_refused`); a read-only key may look, not act.
//!
//! Needs root, QEMU and the desktop image in `target/orgo-test-home`
//! (`desktop_e2e.rs` builds it too). The template has no nonce: its
//! snapshot is built once per test home.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;
#[path = "../../orgo-runtime/tests/common/mod.rs"]
mod vm;

use common::{TestServer, client, error_code, key};
use orgo_server::ServerConfig;
use serde_json::{Value, json};

const TEMPLATE: &str =
    "api_version: orgo.ai/v1\nname: api-desktop@1.0.0\nhardware: { resolution: 640x480x24 }\n";

/// A PNG's width and height, from its `IHDR` chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_answers_screenshots_the_cursor_and_actions() {
    let runtime = vm::test_runtime().await;
    let home = runtime.store().root().to_path_buf();
    let server = TestServer::start(runtime, ServerConfig::default()).await;
    let url = server.url.clone();
    let team = key(&home, "desk", false);
    let read_only = key(&home, "desk", true);
    let http = client();
    let published = http
        .post(format!("{url}/api/templates"))
        .bearer_auth(&team)
        .body(TEMPLATE)
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success(), "{}", published.status());
    let launched = http
        .post(format!("{url}/api/computers"))
        .bearer_auth(&team)
        .json(&json!({"template_ref": "api-desktop@1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status().as_u16(), 201);
    let id = launched.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("{url}/api/computers/{id}/desktop");

    // Screenshots, whole and a region; a read-only key may take them.
    for (query, key, want) in [
        ("", &team, (640, 480)),
        ("?x=600&y=440&width=40&height=30", &team, (40, 30)),
        ("", &read_only, (640, 480)),
    ] {
        let shot = http
            .get(format!("{base}/screenshot{query}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(shot.status().as_u16(), 200, "screenshot{query}");
        assert_eq!(shot.headers()["content-type"], "image/png");
        assert_eq!(png_size(&shot.bytes().await.unwrap()), want, "{query}");
    }

    // Each action is done (204); the pointer ends where the last one says.
    let act = |body: Value, key: &str| {
        http.post(format!("{base}/actions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let cursor = || async {
        let at: Value = http
            .get(format!("{base}/cursor"))
            .bearer_auth(&team)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (at["x"].as_u64().unwrap(), at["y"].as_u64().unwrap())
    };
    for (body, at) in [
        (json!({"action": "move", "x": 100, "y": 120}), (100, 120)),
        (
            json!({"action": "click", "x": 50, "y": 60, "button": "right", "double": true}),
            (50, 60),
        ),
        (
            json!({"action": "drag", "from": {"x": 10, "y": 20}, "to": {"x": 300, "y": 310}}),
            (300, 310),
        ),
        (json!({"action": "type", "text": "héllo"}), (300, 310)),
        (json!({"action": "key", "combo": "ctrl+a"}), (300, 310)),
        (
            json!({"action": "scroll", "direction": "down", "amount": 2, "at": {"x": 200, "y": 210}}),
            (200, 210),
        ),
    ] {
        let done = act(body.clone(), &team).await.unwrap();
        assert_eq!(done.status().as_u16(), 204, "{body}");
        assert_eq!(cursor().await, at, "after {body}");
    }

    // Off the screen: refused, never clamped. A read-only key may not act.
    let (status, code, details) = error_code(
        act(json!({"action": "click", "x": 640, "y": 1}), &team)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "action_refused"));
    assert_eq!(details["action"], "click");
    assert_eq!(cursor().await, (200, 210));
    let (status, code, _) = error_code(
        act(json!({"action": "move", "x": 1, "y": 1}), &read_only)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "read_only_key"));

    let stopped = http
        .delete(format!("{url}/api/computers/{id}"))
        .bearer_auth(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 200);
    server.shutdown().await;
}
