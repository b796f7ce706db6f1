//! Checkpoints and forks, end to end under QEMU TCG: a running computer is
//! captured (and runs on) into a checkpoint that stores only what changed,
//! with its provenance; computers forked from it have its files and
//! processes, identities of their own, and ran `on_resume`; a checkpoint
//! that would hold a secret given to the launch is refused, naming it.
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
use std::time::{Duration, Instant};

use orgo_runtime::{Computer, Exec, LaunchOptions, Runtime, RuntimeError, Vault};
use orgo_snapshot::{Checkpoints, RefKey, Store};
use orgo_template::Template;

const T: Duration = Duration::from_secs(120);

async fn sh(computer: &Computer, script: &str) -> String {
    let out = computer.exec(Exec::shell(script), T).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The checkpoints of computer `id` in the store.
async fn checkpoints_of(runtime: &Runtime, id: &str) -> usize {
    let store = Arc::new(runtime.store().clone()) as Arc<dyn Store>;
    let mut count = 0;
    for key in store
        .list_refs(&RefKey::new("checkpoints").unwrap())
        .await
        .unwrap()
    {
        let digest = store.get_ref(&key).await.unwrap().unwrap();
        let manifest = Checkpoints::new(Arc::clone(&store))
            .get(&digest)
            .await
            .unwrap()
            .unwrap();
        count += usize::from(manifest.parent.is_some_and(|p| p.computer == id));
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_of_a_checkpoint_have_its_files_and_processes_and_identities_of_their_own() {
    let runtime = common::test_runtime().await;
    let template = Template::from_yaml(&format!(
        r#"
api_version: orgo.ai/v1
name: checkpoint@1.0.0
env:
  NONCE: "{}"
hooks:
  on_resume: date +%s%N >> /var/tmp/resumed
"#,
        common::nonce()
    ))
    .unwrap();
    let computer = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let id = computer.id().to_owned();
    let parent_snapshot = computer.record().snapshot.unwrap();
    // A counter held in a process's memory, written out as it goes.
    sh(
        &computer,
        "head -c 10000000 /dev/urandom > /root/ten-mb && sha256sum /root/ten-mb > /root/sum \
         && (setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done' \
             >/dev/null 2>&1 < /dev/null & echo $! > /root/pid)",
    )
    .await;
    let machine_id = sh(&computer, "cat /etc/machine-id").await;
    // QEMU serves one control connection: the launch's handle lets go.
    computer.detach();

    let started = Instant::now();
    let checkpoint = runtime.checkpoint(&id, &Vault::new()).await.unwrap();
    eprintln!(
        "checkpoint: {} ms, paused {} ms, {} bytes stored",
        started.elapsed().as_millis(),
        checkpoint.paused.as_millis(),
        checkpoint.stored_bytes
    );
    let store = Arc::new(runtime.store().clone()) as Arc<dyn Store>;
    let manifest = Checkpoints::new(store)
        .get(&checkpoint.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoints_of(&runtime, &id).await, 1);
    let provenance = manifest.parent.as_ref().unwrap();
    assert_eq!(
        (provenance.snapshot, provenance.computer.as_str()),
        (parent_snapshot, id.as_str())
    );
    let full: u64 = orgo_snapshot::get_manifest(runtime.store(), &parent_snapshot)
        .await
        .unwrap()
        .map(|m| m.blobs().map(|b| b.size).sum())
        .unwrap();
    eprintln!(
        "checkpoint: the disk layer is {} bytes, the state {} bytes; the parent snapshot's files are {full} bytes",
        manifest.blobs["disk"].size, manifest.blobs["state"].size
    );

    // The computer runs on.
    let original = runtime.connect(&id).await.unwrap();
    let sum = sh(&original, "cat /root/sum").await;
    sh(&original, "echo after > /root/after").await;
    // Counted a while: a count that restarted would be below this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counted: u64 = sh(&original, "cat /root/counter")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(counted > 5, "the counter runs: {counted}");
    original.detach();

    let started = Instant::now();
    let (second, forks) = runtime
        .fork(&id, 3, LaunchOptions::default())
        .await
        .unwrap();
    eprintln!("fork of 3: {} ms", started.elapsed().as_millis());
    assert_ne!(
        second.digest, checkpoint.digest,
        "each fork checkpoints anew"
    );
    let mut ids = Vec::new();
    for fork in &forks {
        assert_ne!(fork.id(), id);
        assert_eq!(sh(fork, "sha256sum /root/ten-mb").await, sum, "its files");
        assert_eq!(
            sh(fork, "cat /root/after").await,
            "after\n",
            "as of the fork"
        );
        sh(fork, "kill -0 $(cat /root/pid)").await;
        // The counter goes on from its value, in each fork on its own.
        let first: u64 = sh(fork, "cat /root/counter").await.trim().parse().unwrap();
        assert!(
            first >= counted,
            "continued, not restarted: {first} < {counted}"
        );
        sh(fork, "sleep 1").await;
        let later: u64 = sh(fork, "cat /root/counter").await.trim().parse().unwrap();
        assert!(later > first, "still counting: {later} after {first}");
        assert_eq!(sh(fork, "hostname").await.trim(), fork.id());
        let its = sh(fork, "cat /etc/machine-id").await;
        assert_ne!(its, machine_id, "an identity of its own");
        ids.push(its);
        assert_eq!(
            sh(fork, "wc -l < /var/tmp/resumed").await.trim(),
            "2",
            "on_resume ran at the launch and again at the fork"
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three machine-ids");
    for (i, fork) in forks.iter().enumerate() {
        sh(fork, &format!("echo {i} > /root/mine")).await;
    }
    for (i, fork) in forks.iter().enumerate() {
        assert_eq!(
            sh(fork, "cat /root/mine").await,
            format!("{i}\n"),
            "its own disk"
        );
    }
    let from_first = runtime
        .launch_checkpoint(&checkpoint.digest, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        sh(&from_first, "test -e /root/after || echo absent").await,
        "absent\n",
        "the first checkpoint is as it was"
    );
    from_first.stop().await.unwrap();
    for fork in forks {
        fork.stop().await.unwrap();
    }
    runtime.stop(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_holding_a_launch_secret_is_refused_naming_it() {
    let runtime = common::test_runtime().await;
    let template = Template::from_yaml(&format!(
        r#"
api_version: orgo.ai/v1
name: checkpoint-secret@1.0.0
secrets:
  - name: api_key
env:
  NONCE: "{}"
  API_KEY: {{ secret: api_key }}
"#,
        common::nonce()
    ))
    .unwrap();
    let value = format!("canary-{}", common::nonce());
    let vault = Vault::new().with(BTreeMap::from([("api_key".to_owned(), value.clone())]));
    let computer = runtime
        .launch(
            &template,
            LaunchOptions {
                vault: vault.clone(),
                ..LaunchOptions::default()
            },
            &mut |_| {},
        )
        .await
        .unwrap();
    let id = computer.id().to_owned();
    computer.detach();
    let error = runtime.checkpoint(&id, &vault).await.unwrap_err();
    let RuntimeError::SecretCaptured { findings } = &error else {
        panic!("expected a secret found, got {error:?}");
    };
    assert!(
        findings.iter().all(|f| f.secret == "api_key"),
        "{findings:?}"
    );
    assert!(
        findings.iter().any(|f| f.file == "state"),
        "in its memory: {findings:?}"
    );
    let message = orgo_runtime::ErrorChain(&error).to_string();
    assert!(message.contains("secret `api_key`"), "{message}");
    assert!(!message.contains(&value), "never the value: {message}");
    assert_eq!(checkpoints_of(&runtime, &id).await, 0, "nothing is stored");
    runtime.stop(&id).await.unwrap();
}
