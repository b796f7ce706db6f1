//! A plain desktop under QEMU (TCG): a window opened as its launch returns
//! is managed; a fork of it keeps that window, managed by the fork's own
//! window manager, and manages a window opened in the fork; the computer
//! runs on.
//!
//! The window at launch: `openbox`, which a launch starts, left a window
//! mapped while it was starting unmapped (1x1) for good on an idle desktop,
//! three launches out of three here, until it was made to wake its main
//! loop (see `orgo-runtime/src/desktop.rs`); this test failed then. The
//! same bug made a fork's window manager, started again by the fork's
//! launch, leave new windows unmapped, and desktop forks were refused.
//!
//! A fork is personalized as any launch is: the desktop's window manager,
//! wallpaper and autostart entries start again in it, as the template's
//! services do (a service of the same name is replaced); windows opened
//! otherwise stay as the checkpoint had them.
//!
//! Needs QEMU and the desktop image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::time::Duration;

use common::desktop::{open_window, wait_viewable};
use orgo_runtime::{Computer, LaunchOptions};
use orgo_template::Template;

/// How long a window may take to be managed: a bound, not a measure.
const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_of_a_desktop_keeps_its_windows_and_manages_new_ones() {
    let runtime = common::test_runtime().await;
    let template = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: desktop-fork@1.0.0\nhardware: { resolution: 800x600x24 }\n",
    )
    .unwrap();
    let computer = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    open_window(&computer, "early", "80x24").await;
    wait_viewable(&computer, "early", T).await;
    let id = computer.id().to_owned();
    computer.detach();

    let (_checkpoint, forks) = runtime
        .fork(&id, 1, LaunchOptions::default())
        .await
        .unwrap();
    let [fork] = <[Computer; 1]>::try_from(forks).ok().unwrap();
    wait_viewable(&fork, "early", T).await;
    open_window(&fork, "late", "80x24").await;
    wait_viewable(&fork, "late", T).await;
    let shot = fork.screenshot(None).await.unwrap();
    assert_eq!((shot.width, shot.height), (800, 600));
    fork.stop().await.unwrap();

    // The original runs on, its own desktop working.
    let computer = runtime.connect(&id).await.unwrap();
    open_window(&computer, "after", "80x24").await;
    wait_viewable(&computer, "after", T).await;
    computer.stop().await.unwrap();
}
