//! A golden snapshot whose guest agent is not this runtime's is stale: the
//! next build of its template builds it again and replaces it (an agent
//! speaks the protocol of its own build, so an upgraded orgo must not
//! restore an old one), end to end under QEMU TCG.
//!
//! Needs QEMU and the base image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::sync::Mutex;

use orgo_runtime::BuildEvent;
use orgo_snapshot::{Manifest, RefKey, RefService as _, put_manifest};
use orgo_template::Template;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_another_agent_is_built_again() {
    let runtime = common::test_runtime().await;
    let template = Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: stale-agent@1.0.0\nbuild:\n  run:\n    - echo {} > /etc/nonce\n",
        common::nonce()
    ))
    .unwrap();
    let digest = template.digest();
    let agent = runtime.agent_digest().await.unwrap();
    let first = runtime.build(&template, &mut |_| {}).await.unwrap();
    assert!(first.built_here);
    assert_eq!(
        first.manifest.agent,
        Some(agent),
        "the build records its agent"
    );
    assert_eq!(
        runtime.built(&digest).await.unwrap().map(|b| b.digest),
        Some(first.digest)
    );

    // What an older orgo left: the same snapshot, recording no agent.
    let mut old = first.manifest.clone();
    old.agent = None;
    let store = runtime.store();
    let old = put_manifest(store, &Manifest::Snapshot(old)).await.unwrap();
    let key = RefKey::new(&format!("snapshots/{}", digest.hex())).unwrap();
    store.set_ref(&key, &old).await.unwrap();
    assert!(
        runtime.built(&digest).await.unwrap().is_none(),
        "a stale snapshot is not built"
    );

    let statuses = Mutex::new(Vec::new());
    let mut log = |event: BuildEvent| {
        if let BuildEvent::Status(s) = event {
            statuses.lock().unwrap().push(s);
        }
    };
    let second = runtime.build(&template, &mut log).await.unwrap();
    assert!(second.built_here, "built again, not a cache hit");
    assert_eq!(second.manifest.agent, Some(agent));
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.iter().any(|s| s.contains(&format!("`{old}`"))
            && s.contains("another guest agent (none recorded)")),
        "the log says why: {statuses:?}"
    );
    assert_eq!(store.get_ref(&key).await.unwrap(), Some(second.digest));
    let third = runtime.build(&template, &mut |_| {}).await.unwrap();
    assert!(!third.built_here, "a current snapshot is a cache hit");
}
