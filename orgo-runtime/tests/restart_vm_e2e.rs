//! `apps[].health.on_fail: restart_vm`, end to end under QEMU TCG: a
//! health check that fails on a flag file makes the launching process
//! restore the computer again under its id, back in its launch state, with
//! its secrets, environment and services; twice, the second time after the
//! launching handle detached it and a connected handle drives it (as
//! `orgo serve` does).
//!
//! Needs QEMU and the base image (built once into the store
//! `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orgo_runtime::{Computer, Event, Exec, LaunchOptions, Runtime, ServiceState, Vault};
use orgo_template::Template;

/// A bound on waits for what happens "soon" under TCG (only a hang hits it).
const PATIENCE: Duration = Duration::from_secs(240);
const T: Duration = Duration::from_secs(60);

fn template() -> Template {
    Template::from_yaml(&format!(
        r#"
api_version: orgo.ai/v1
name: restart-vm@1.0.0
secrets:
  - name: api_key
env:
  NONCE: "{nonce}"
  API_KEY: {{ secret: api_key }}
apps:
  - name: web
    services:
      - name: web
        run: "date +%s%N >> /var/tmp/web-starts; exec sleep infinity"
        user: root
    health:
      type: command
      command: "test ! -e /var/tmp/fail"
      every: 1s
      retries: 2
      on_fail: restart_vm
"#,
        nonce = common::nonce()
    ))
    .unwrap()
}

async fn sh(computer: &Computer, script: &str) -> String {
    let out = computer.exec(Exec::shell(script), T).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Computer `id`'s recorded restarts.
fn restarts(runtime: &Runtime, id: &str) -> u32 {
    runtime
        .computers()
        .unwrap()
        .into_iter()
        .find(|c| c.record.id == id)
        .map_or(0, |c| c.record.restarts)
}

/// Writes the flag, waits until the computer is restarted (`restarts`
/// reaches `count`) and answers an exec through `computer`; returns the
/// time from the flag to that answer.
async fn fail_and_wait(runtime: &Runtime, computer: &Computer, count: u32) -> Duration {
    let id = computer.id().to_owned();
    sh(
        computer,
        "echo kept? > /var/tmp/marker; touch /var/tmp/fail",
    )
    .await;
    let flagged = Instant::now();
    loop {
        assert!(
            flagged.elapsed() < PATIENCE,
            "computer `{id}` was never restarted"
        );
        if restarts(runtime, &id) >= count
            && let Ok(out) = computer.exec(Exec::shell("echo up"), T).await
            && out.status.success()
        {
            return flagged.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The restarted computer: its launch state, secrets, environment and
/// service.
async fn assert_restarted(computer: &Computer) {
    // Back in its launch state: what was written since is gone.
    assert_eq!(
        sh(
            computer,
            "test -e /var/tmp/marker && echo marker; test -e /var/tmp/fail && echo flag; true"
        )
        .await,
        ""
    );
    // Personalized again: the launch's secret and environment.
    assert_eq!(
        sh(computer, "echo \"$API_KEY $LAUNCH_VAR\"").await,
        "the-key from-launch\n"
    );
    // Its service runs again, started once on this disk.
    let web = computer
        .services()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "web")
        .expect("the service `web`");
    assert_eq!(web.state, ServiceState::Running, "{web:?}");
    assert_eq!(
        sh(computer, "wc -l < /var/tmp/web-starts").await.trim(),
        "1"
    );
    // Its events start fresh: the restart request was the old VM's.
    let mut events = computer.events(false);
    while let Some(record) = events.next().await.unwrap() {
        assert!(
            !matches!(record.event, Event::RestartVmRequested { .. }),
            "{record:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_restores_the_computer_again_under_its_id() {
    let runtime = common::test_runtime().await;
    let options = LaunchOptions {
        vault: Vault::new().with([("api_key".to_owned(), "the-key".to_owned())].into()),
        env: BTreeMap::from([("LAUNCH_VAR".to_owned(), "from-launch".to_owned())]),
        ..LaunchOptions::default()
    };
    let computer = runtime
        .launch(&template(), options, &mut |_| {})
        .await
        .unwrap();
    let id = computer.id().to_owned();
    let launched_pid = computer.record().pid;
    assert_eq!(restarts(&runtime, &id), 0);

    // Through the launching handle, which follows the restart.
    let first = fail_and_wait(&runtime, &computer, 1).await;
    assert_restarted(&computer).await;
    let record = runtime
        .computers()
        .unwrap()
        .into_iter()
        .find(|c| c.record.id == id)
        .expect("the same id");
    assert_eq!(record.record.restarts, 1);
    assert_ne!(record.record.pid, launched_pid, "a new VMM");

    // Detached (the VM runs on its own), driven through a connected
    // handle that shares the watcher's channel, as `orgo serve` does.
    computer.detach();
    let connected = runtime.connect(&id).await.unwrap();
    let second = fail_and_wait(&runtime, &connected, 2).await;
    assert_restarted(&connected).await;
    eprintln!(
        "restart_vm: from the flag to an exec answered by the restarted computer: {} ms, {} ms",
        first.as_millis(),
        second.as_millis()
    );

    // A stop ends the watcher and the computer.
    drop(connected);
    runtime.stop(&id).await.unwrap();
    assert!(
        runtime
            .computers()
            .unwrap()
            .iter()
            .all(|c| c.record.id != id)
    );
}
