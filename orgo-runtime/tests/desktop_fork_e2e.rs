//! A plain desktop under QEMU (TCG): a window opened as its launch returns
//! is managed; a fork of it is refused, naming the field that gives it its
//! desktop, before anything is captured; the computer runs on.
//!
//! The window: `openbox`, which the launch starts, left a window mapped
//! while it was starting unmapped (1x1) for good on an idle desktop, three
//! launches out of three here, until it was made to wake its main loop
//! (see `orgo-runtime/src/desktop.rs`). The same bug made a fork's window
//! manager, started again, look broken; a fork works with the fix (tried
//! by hand: the checkpoint's window and a new one both managed).
//!
//! Why a fork is still refused: a launch runs the desktop's session
//! services and autostart entries, and in a fork they would replace the
//! checkpoint's running ones (its apps started again, their state lost).
//! What a fork of a desktop keeps is not decided yet.
//!
//! Needs QEMU and the desktop image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_runtime::{Exec, LaunchOptions, RuntimeError};
use orgo_snapshot::{RefKey, Store};
use orgo_template::Template;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_of_a_desktop_is_refused_naming_the_field_before_anything_is_captured() {
    let runtime = common::test_runtime().await;
    let template = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: desktop-fork@1.0.0\nhardware: { resolution: 800x600x24 }\n",
    )
    .unwrap();
    let computer = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let open = computer
        .exec(
            Exec::shell("DISPLAY=:0 setsid xterm -T early -e sleep 600 >/dev/null 2>&1 &"),
            T,
        )
        .await
        .unwrap();
    assert!(open.status.success());
    let deadline = Instant::now() + T;
    loop {
        let out = computer
            .exec(Exec::shell("DISPLAY=:0 xwininfo -name early 2>&1"), T)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("Map State: IsViewable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window opened at launch was never managed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = computer.id().to_owned();
    computer.detach();
    let store = Arc::new(runtime.store().clone()) as Arc<dyn Store>;
    let checkpoints = RefKey::new("checkpoints").unwrap();
    let before = store.list_refs(&checkpoints).await.unwrap().len();

    let error = runtime
        .fork(&id, 1, LaunchOptions::default())
        .await
        .unwrap_err();
    let RuntimeError::Unsupportable(problems) = &error else {
        panic!("expected a refused field, got {error:?}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "hardware.resolution");
    assert!(
        problems[0].missing.contains("window manager"),
        "{problems:?}"
    );
    assert_eq!(
        store.list_refs(&checkpoints).await.unwrap().len(),
        before,
        "nothing was captured"
    );

    // It runs on, and its own desktop works.
    let computer = runtime.connect(&id).await.unwrap();
    let shot = computer.screenshot(None).await.unwrap();
    assert_eq!((shot.width, shot.height), (800, 600));
    let out = computer.exec(Exec::argv(["true"]), T).await.unwrap();
    assert!(out.status.success());
    computer.stop().await.unwrap();
}
