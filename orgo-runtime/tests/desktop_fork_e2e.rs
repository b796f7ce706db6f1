//! A fork of a desktop computer under QEMU (TCG) is refused, naming the
//! field that gives it its desktop, before anything is captured; the
//! computer runs on.
//!
//! Why refused: in a fork, the window manager the launch starts again (the
//! checkpoint's is replaced) did not manage the windows opened after it
//! (an `xterm` stayed an unmapped 1x1 window for 30 s, where the same check
//! on the original computer passed within 5 s; seen under QEMU TCG). Until
//! that is understood, a desktop fork would be a desktop that silently does
//! not work.
//!
//! Needs QEMU and the desktop image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

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
