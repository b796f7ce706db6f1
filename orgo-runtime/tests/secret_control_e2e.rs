//! The secret scan's positive control, 20 times, under QEMU TCG: each
//! round plants a fresh canary in a running computer, in one of the
//! encodings a program leaves a secret in (raw, base64, hex, URL-encoded),
//! either on its disk (a file, synced) or only in a process's memory, and
//! checkpoints it with the canary in the vault. Every round must be
//! refused, naming the canary with the planted encoding, in the file it was
//! planted in (the disk layer, or the saved state), and store nothing.
//!
//! One launch; the canaries are checked by the checkpoint path, which
//! shares the scan (`snapshot_scan::refuse_secrets`) with builds (whose own
//! positive control is `bins/orgo/tests/vm_secret_scan.rs`, one build).
//!
//! Needs QEMU and the base image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use orgo_runtime::{Exec, LaunchOptions, RuntimeError, SecretEncoding, Vault};
use orgo_snapshot::{RefKey, Store};
use orgo_template::Template;

const ROUNDS: usize = 20;
const T: Duration = Duration::from_secs(120);

/// `value` as `encoding` writes it.
fn encoded(value: &str, encoding: SecretEncoding) -> String {
    match encoding {
        SecretEncoding::Raw => value.to_owned(),
        SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(value),
        SecretEncoding::Hex => value.bytes().map(|b| format!("{b:02x}")).collect(),
        SecretEncoding::Url => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        other => panic!("not planted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_canary_is_found_and_refuses_the_checkpoint() {
    let runtime = common::test_runtime().await;
    let template =
        Template::from_yaml("api_version: orgo.ai/v1\nname: secret-control@1.0.0\n").unwrap();
    let computer = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let id = computer.id().to_owned();
    // QEMU serves one control connection: the launch's handle lets go.
    computer.detach();
    let store = Arc::new(runtime.store().clone()) as Arc<dyn Store>;
    let checkpoints = RefKey::new("checkpoints").unwrap();
    let before = store.list_refs(&checkpoints).await.unwrap().len();
    let encodings = [
        SecretEncoding::Raw,
        SecretEncoding::Base64,
        SecretEncoding::Hex,
        SecretEncoding::Url,
    ];
    let mut found = 0;
    for round in 0..ROUNDS {
        let encoding = encodings[round % encodings.len()];
        // Each encoding both on disk and in memory, in turn.
        let on_disk = (round / encodings.len()).is_multiple_of(2);
        // `/`, `+` and a space: its URL encoding differs from it.
        let value = format!("canary/{round}+{} x", common::nonce());
        let planted = encoded(&value, encoding);
        let script = if on_disk {
            format!("printf %s '{planted}' > /root/canary-{round} && sync")
        } else {
            format!(
                "setsid sh -c 'v=\"{planted}\"; while :; do sleep 60; done' \
                 >/dev/null 2>&1 </dev/null &"
            )
        };
        let computer = runtime.connect(&id).await.unwrap();
        let out = computer.exec(Exec::shell(script), T).await.unwrap();
        assert!(out.status.success(), "round {round}: {out:?}");
        computer.detach();
        let name = format!("canary_{round}");
        let vault = Vault::new().with(BTreeMap::from([(name.clone(), value.clone())]));

        let error = runtime.checkpoint(&id, &vault).await.unwrap_err();
        let RuntimeError::SecretCaptured { findings } = &error else {
            panic!(
                "round {round} ({encoding}, disk {on_disk}): expected a secret found, got {error:?}"
            );
        };
        let file = if on_disk { "disk" } else { "state" };
        assert!(
            findings
                .iter()
                .any(|f| f.secret == name && f.encoding == encoding && f.file == file),
            "round {round}: {encoding} in the {file}: {findings:?}"
        );
        let message = orgo_runtime::ErrorChain(&error).to_string();
        assert!(
            !message.contains(&value) && !message.contains(&planted),
            "never the value: {message}"
        );
        found += 1;
    }
    assert_eq!(found, ROUNDS);
    assert_eq!(
        store.list_refs(&checkpoints).await.unwrap().len(),
        before,
        "nothing was stored"
    );
    runtime.stop(&id).await.unwrap();
}
