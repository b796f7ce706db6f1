//! A headless computer refuses the desktop: over a fake VMM (`fake/mod.rs`,
//! the real agent in-process), every computer-use action and every stream
//! call is refused with the error that names the fields giving a template a
//! desktop. In milliseconds, without a VM.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;
mod fake;

use std::sync::Arc;

use fake::{FakeVmm, fake_snapshot};
use orgo_runtime::{
    Accel, Backend, BackendKind, LaunchOptions, MouseButton, Runtime, RuntimeConfig, RuntimeError,
    ScrollDirection, Vault,
};
use orgo_template::Template;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_computer_refuses_every_action_naming_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = FakeVmm::new(BackendKind::Qemu(Accel::Tcg));
    let mut config = RuntimeConfig::new(dir.path());
    config.backend = Backend::Custom(Arc::clone(&vmm) as Arc<dyn orgo_runtime::Vmm>);
    let runtime = Runtime::open(config).await.unwrap();
    let template = Template::from_yaml("api_version: orgo.ai/v1\nname: headless@1.0.0\n").unwrap();
    fake_snapshot(&runtime, &template, BackendKind::Qemu(Accel::Tcg)).await;
    let c = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();

    let id = c.id().to_owned();
    let refused = |result: Result<(), RuntimeError>, what: &str| match result {
        Err(RuntimeError::NoDesktop { id: got }) => assert_eq!(got, id, "{what}"),
        other => panic!("{what}: expected no desktop, got {other:?}"),
    };
    refused(c.screenshot(None).await.map(drop), "screenshot");
    refused(c.move_to(1, 1).await, "move");
    refused(c.click(1, 1, MouseButton::Left, true).await, "click");
    refused(c.drag((1, 1), (2, 2), MouseButton::Left).await, "drag");
    refused(c.type_text("héllo").await, "type");
    refused(c.key("ctrl+shift+t").await, "key");
    refused(c.scroll(ScrollDirection::Down, 3, None).await, "scroll");
    refused(c.cursor().await.map(drop), "cursor");
    refused(c.stream_start("live", &Vault::new()).await, "stream start");
    refused(c.stream_status("live").await.map(drop), "stream status");
    let message = c.screenshot(None).await.unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "computer `{id}` has no desktop: its template sets none of `hardware.resolution` (`display`), `desktop.wallpaper` (`wallpaper`), `apps[].autostart` or `streaming`"
        )
    );
    c.stop().await.unwrap();
}
