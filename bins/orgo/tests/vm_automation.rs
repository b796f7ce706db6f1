//! In-guest automation, end to end under QEMU TCG: service logs (`orgo
//! logs`, rotation), restarts in `orgo ps`, events (`orgo events`), and
//! triggers (file, webhook, health, schedule). One template built once per
//! run; each test launches its own computer (two through the CLI, which
//! exits after the launch).
//!
//! Needs root, QEMU and mmdebstrap (the base image is built once into the
//! store `target/orgo-test-home`, shared with the other VM tests).

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{nonce, static_agent, test_home, workspace};
use orgo_runtime::{Computer, Event, Exec, LaunchOptions};
use orgo_template::Template;

/// A bound on waits for what happens "soon" under TCG (only a hang hits it).
const PATIENCE: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(120);

static NONCE: LazyLock<String> = LazyLock::new(nonce);

fn template_text() -> String {
    format!(
        r#"
api_version: orgo.ai/v1
name: automation@1.0.0
env:
  NONCE: "{nonce}"
apps:
  - name: broken
    services:
      # Its default user, `orgo`, may not write under /root.
      - name: broken
        run: "echo starting; echo data > /root/not-yours"
        restart: on-failure
  - name: web
    services:
      - name: web
        run: "exec sleep infinity"
    health:
      type: command
      command: "test ! -e /var/tmp/break-web"
      every: 1s
      retries: 2
      on_fail: alert
  - name: chatty
    services:
      - name: chatty
        run: "while [ ! -e /var/tmp/go-chatty ]; do sleep 1; done; seq 1 12000000; exec sleep infinity"
        restart: "no"
triggers:
  - name: on-flag
    source: {{ type: file, path: /srv/inbox/flag, events: [create] }}
    actions: [{{ run: "echo \"$ORGO_FILE_EVENT $ORGO_FILE\" >> /var/tmp/file-fired" }}]
    dedup: 10m
  - name: deploy
    source: {{ type: webhook, path: /deploy }}
    actions: [{{ run: "cat > /var/tmp/webhook-body; echo deployed" }}]
  - name: web-down
    source: {{ type: health, app: web }}
    actions: [{{ alert: "web is down" }}]
    dedup: 10m
  - name: kick
    source: {{ type: webhook, path: /kick }}
    actions: [{{ restart_service: web }}]
  - name: every-minute
    source: {{ type: schedule, cron: "* * * * *" }}
    actions: [{{ run: "date +%s >> /var/tmp/cron-fired" }}]
"#,
        nonce = *NONCE
    )
}

fn template() -> Template {
    Template::from_yaml(&template_text()).unwrap()
}

/// Runs `orgo ARGS` on the shared store, under TCG, with the static agent.
fn orgo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(args)
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .output()
        .expect("orgo runs")
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Launches the template through the CLI, which exits: returns the id.
fn cli_launch() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("automation.yaml");
    std::fs::write(&path, template_text()).unwrap();
    let id = ok(&orgo(&["launch", path.to_str().unwrap()]), "orgo launch");
    (dir, id.trim().to_owned())
}

/// Polls `check` every second until it gives a value; panics after [`PATIENCE`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

async fn launched() -> Computer {
    let runtime = common::test_runtime().await;
    runtime
        .launch(&template(), LaunchOptions::default(), &mut |_| {})
        .await
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

async fn all_events(computer: &Computer) -> Vec<Event> {
    let mut reader = computer.events(false);
    let mut events = Vec::new();
    while let Some(record) = reader.next().await.unwrap() {
        events.push(record.event);
    }
    events
}

#[test]
fn a_failing_service_s_error_is_in_orgo_logs_and_orgo_ps_counts_its_restarts() {
    let (_dir, id) = cli_launch();
    let logs = eventually("the error in `orgo logs`", || {
        let text = ok(&orgo(&["logs", &id, "broken"]), "orgo logs");
        text.contains("Permission denied").then_some(text)
    });
    assert!(
        logs.lines().any(|l| l == "starting"),
        "one service: bare lines\n{logs}"
    );
    assert!(logs.contains("/root/not-yours"), "{logs}");
    // Every log: each line names its service.
    let every = ok(&orgo(&["logs", &id]), "orgo logs (all)");
    assert!(every.lines().any(|l| l == "broken | starting"), "{every}");
    let recent = ok(&orgo(&["logs", &id, "broken", "--since", "10m"]), "--since");
    assert!(recent.lines().any(|l| l == "starting"), "{recent}");
    let ps = eventually("restarts in `orgo ps`", || {
        let text = ok(&orgo(&["ps"]), "orgo ps");
        text.lines()
            .any(|l| {
                l.trim_start().starts_with("broken: ")
                    && l.contains("last exit status 1")
                    && !l.contains(" 0 restarts")
            })
            .then_some(text)
    });
    assert!(ps.contains(&id), "{ps}");
    let json = ok(&orgo(&["ps", "--json"]), "orgo ps --json");
    let mine: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["id"] == id.as_str())
        .unwrap();
    let broken = mine["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap();
    assert!(broken["restarts"].as_u64().unwrap() >= 1, "{broken}");
    assert_eq!(broken["last_exit"]["code"], 1);
    ok(&orgo(&["stop", &id]), "orgo stop");
}

#[test]
fn a_webhook_with_data_reaches_its_run_action_and_alerts_are_in_orgo_events() {
    let (dir, id) = cli_launch();
    let body = dir.path().join("body.json");
    std::fs::write(&body, b"{\"ref\": \"main\"}").unwrap();
    let data = format!("@{}", body.display());
    let fired = ok(
        &orgo(&["trigger", &id, "/deploy", "--data", &data]),
        "orgo trigger",
    );
    assert_eq!(fired, "deploy\n");
    let got = eventually("the body in the guest", || {
        let out = orgo(&["exec", &id, "--", "cat", "/var/tmp/webhook-body"]);
        (out.status.code() == Some(0)).then(|| String::from_utf8(out.stdout).unwrap())
    });
    assert_eq!(got, "{\"ref\": \"main\"}");
    let logs = ok(&orgo(&["logs", &id, "trigger.deploy"]), "trigger log");
    assert_eq!(logs, "deployed\n");
    ok(&orgo(&["trigger", &id, "/kick"]), "orgo trigger /kick");
    let missing = orgo(&["trigger", &id, "/nowhere"]);
    assert_eq!(missing.status.code(), Some(1), "no such webhook is a no");

    // The health check fails twice: its own alert, then the health trigger's.
    ok(
        &orgo(&["exec", &id, "--", "touch", "/var/tmp/break-web"]),
        "break web",
    );
    let events = eventually("both alerts in `orgo events`", || {
        let text = ok(&orgo(&["events", &id]), "orgo events");
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let alerts = events.iter().filter(|e| e["kind"] == "alert").count();
        (alerts >= 2).then_some(events)
    });
    for event in &events {
        assert!(event["ts"].as_str().unwrap().ends_with('Z'), "{event}");
        assert!(event["seq"].is_u64(), "{event}");
    }
    let position = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing in {events:#?}"))
    };
    let second_failure =
        position(&|e| e["kind"] == "health" && e["app"] == "web" && e["failures"] == 2);
    let check_alert = position(&|e| e["kind"] == "alert" && e["app"] == "web");
    let fired = position(&|e| e["kind"] == "trigger_fired" && e["trigger"] == "web-down");
    let trigger_alert = position(&|e| {
        e["kind"] == "alert" && e["trigger"] == "web-down" && e["message"] == "web is down"
    });
    assert!(
        second_failure < check_alert && check_alert < fired && fired < trigger_alert,
        "{events:#?}"
    );
    position(&|e| e["kind"] == "trigger_fired" && e["trigger"] == "deploy");
    // `restart_service`: the kick restarted web.
    let kicked = position(&|e| e["kind"] == "trigger_fired" && e["trigger"] == "kick");
    let restarted = position(&|e| e["kind"] == "service_restarted" && e["name"] == "web");
    assert!(kicked < restarted, "{events:#?}");
    ok(&orgo(&["stop", &id]), "orgo stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_trigger_fires_on_create_and_dedup_drops_a_burst() {
    let c = launched().await;
    sh(&c, "mkdir -p /srv/inbox && touch /srv/inbox/flag").await;
    let mut fired = String::new();
    for _ in 0..180 {
        fired = sh(&c, "cat /var/tmp/file-fired 2>/dev/null || true").await;
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(fired, "create /srv/inbox/flag\n");
    sh(
        &c,
        "for i in 1 2 3; do rm /srv/inbox/flag; touch /srv/inbox/flag; sleep 0.3; done",
    )
    .await;
    let mut dropped = 0;
    for _ in 0..180 {
        dropped = all_events(&c)
            .await
            .iter()
            .filter(
                |e| matches!(e, Event::TriggerDeduplicated { trigger, .. } if trigger == "on-flag"),
            )
            .count();
        if dropped >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        dropped, 3,
        "each firing of the burst is a dropped-firing event"
    );
    assert_eq!(
        sh(&c, "cat /var/tmp/file-fired").await,
        "create /srv/inbox/flag\n",
        "the burst ran nothing"
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_of_every_minute_fires_within_70_s_and_not_for_minutes_on_disk() {
    let c = launched().await;
    let launched_at = sh(&c, "date +%s").await.trim().parse::<u64>().unwrap();
    // The bound the issue sets, on the host's clock: a minute boundary
    // plus slack for TCG.
    let deadline = Instant::now() + Duration::from_secs(70);
    let mut fired = String::new();
    while Instant::now() < deadline {
        fired = sh(&c, "cat /var/tmp/cron-fired 2>/dev/null || true").await;
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(!fired.is_empty(), "`* * * * *` fired within 70 s");
    // The snapshot was made minutes ago, with no trigger armed: the runs
    // are this computer's, from its launch on, one per minute at most.
    let now = sh(&c, "date +%s").await.trim().parse::<u64>().unwrap();
    let runs: Vec<u64> = fired.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        runs.iter().all(|t| *t >= launched_at.saturating_sub(1)),
        "{runs:?}"
    );
    assert!(
        runs.len() as u64 <= (now - launched_at) / 60 + 1,
        "{runs:?}"
    );
    assert!(
        all_events(&c).await.iter().any(|e| matches!(
            e,
            Event::TriggerFired { trigger, source, .. } if trigger == "every-minute" && source == "schedule"
        ))
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_caps_a_service_that_writes_100_mb() {
    let c = launched().await;
    sh(&c, "touch /var/tmp/go-chatty").await;
    // `seq 1 12000000` writes about 104 MB; its last line ends the log.
    let mut last = String::new();
    for _ in 0..600 {
        last = sh(&c, "tail -n 1 /var/log/orgo/chatty.log").await;
        if last == "12000000\n" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(last, "12000000\n");
    let files = sh(&c, "ls /var/log/orgo/ | grep chatty").await;
    assert_eq!(files, "chatty.log\nchatty.log.1\n");
    let sizes = sh(
        &c,
        "stat -c %s /var/log/orgo/chatty.log /var/log/orgo/chatty.log.1",
    )
    .await;
    for size in sizes.lines() {
        let size: u64 = size.parse().unwrap();
        assert!(
            size <= 10 << 20,
            "a file is at most the 10 MiB cap: {sizes}"
        );
    }
    // Through the library: the newest line kept is the last one written.
    let mut reader = c.logs(Some("chatty"), None, false);
    let mut count = 0u64;
    let mut line = None;
    while let Some(next) = reader.next().await.unwrap() {
        count += 1;
        line = Some(next.line);
    }
    assert_eq!(line.as_deref(), Some("12000000"));
    assert!(
        count < 12_000_000 / 4,
        "old lines were rotated away: {count}"
    );
    c.stop().await.unwrap();
}
