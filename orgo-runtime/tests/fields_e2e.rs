//! The template fields that `runtime_e2e` leaves out, carried out for real
//! under QEMU TCG: `vars` interpolation, the hardware shape, an optional
//! secret left unset, file ownership, services (user, cwd, env, log,
//! `restart: no`), health checks of every kind with `on_fail`, terminal
//! sessions and `on_every_boot`. One build, one launch, one test per
//! behaviour (the build cache builds the template once for all of them).
//!
//! Needs root, QEMU, mmdebstrap and Debian's package mirror, like
//! `runtime_e2e`. The store is `target/orgo-test-home`.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::nonce;
use orgo_runtime::{Computer, Exec, LaunchOptions, Vault};
use orgo_template::Template;

/// A bound on each exec, not a measure: Node.js (`npm ls`) starts slowly
/// under TCG, as in `system_templates.rs`, the more so with two VMs on two
/// cores.
const T: Duration = Duration::from_secs(300);

/// One nonce per run of this binary: every test builds the same template,
/// so the build cache builds it once.
static NONCE: LazyLock<String> = LazyLock::new(nonce);

fn template() -> Template {
    Template::from_yaml(&format!(
        r#"
api_version: orgo.ai/v1
name: fields@1.0.0
vars:
  greeting: hello
hardware:
  os: linux
  cpu: 1
  ram_gb: 4
  disk_gb: 3
secrets:
  - name: token
    required: false
    description: an optional secret, left unset
  - name: svc_key
env:
  NONCE: "{nonce}"
  GREETING: "${{var.greeting}}"
  TOKEN: {{ secret: token }}
build:
  apt: [busybox]
  pip: [six]
  npm: [left-pad]
files:
  - {{ to: /srv/index.html, inline: "served\n", owner: orgo, group: orgo, mode: "0640" }}
apps:
  - name: web
    title: A web server
    services:
      - name: web
        run: "echo started-$MODE; exec busybox httpd -f -v -p 8080 -h /srv"
        cwd: /srv
        user: orgo
        env: {{ MODE: "svc-${{var.greeting}}", SVC_KEY: {{ secret: svc_key }} }}
        log: /var/log/web.log
        restart: "no"
    health:
      type: http
      url: http://127.0.0.1:8080/index.html
      every: 1s
      timeout: 1s
      retries: 2
      on_fail: restart_service:web
  - name: down
    services:
      - name: down-marker
        run: "date +%s%N >> /var/tmp/down-starts; exec sleep infinity"
        user: root
        restart: "no"
    health:
      type: tcp
      host: 127.0.0.1
      port: 9
      every: 1s
      retries: 1
      on_fail: restart_service:down-marker
  - name: up
    services:
      - name: up-marker
        run: "date +%s%N >> /var/tmp/up-starts; exec sleep infinity"
        user: root
    health:
      type: process
      process: busybox
      every: 5s
      timeout: 5s
      retries: 1
      on_fail: restart_service:up-marker
  - name: check
    services:
      - name: check-marker
        run: "date +%s%N >> /var/tmp/check-starts; exec sleep infinity"
        user: root
    health:
      type: command
      command: "test ! -e /var/tmp/break-check"
      every: 5s
      timeout: 5s
      retries: 1
      on_fail: restart_service:check-marker
terminal:
  - name: main
    title: Main
    cwd: /srv
    run: "sleep infinity"
hooks:
  on_every_boot: date +%s%N >> /var/tmp/every-boot
"#,
        nonce = *NONCE
    ))
    .unwrap()
}

async fn launched() -> Computer {
    let runtime = common::test_runtime().await;
    let options = LaunchOptions {
        vault: Vault::new().with([("svc_key".to_owned(), "key-of-the-service".to_owned())].into()),
        ..LaunchOptions::default()
    };
    runtime
        .launch(&template(), options, &mut |_| {})
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

/// Polls `script` until it prints `want` (health checks act within
/// seconds; TCG is slow, so the bound is generous and not asserted on).
async fn eventually(computer: &Computer, script: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..120 {
        last = sh(computer, script).await;
        if last.trim() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("`{script}` printed `{}`, never `{want}`", last.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vars_hardware_and_an_unset_optional_secret() {
    let c = launched().await;
    // The template's name and version name the computer's record.
    assert_eq!(c.record().template, "fields@1.0.0");
    assert_eq!(c.record().template_digest, template().digest());
    assert_eq!(
        sh(&c, "bash -lc 'echo \"$GREETING [${TOKEN-unset}]\"'").await,
        "hello [unset]\n",
        "`vars` interpolate into env; an optional secret without a value is not set"
    );
    assert_eq!(sh(&c, "nproc").await, "1\n");
    let mem_kib: u64 = sh(&c, "awk '/MemTotal/ {print $2}' /proc/meminfo")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        (3584 * 1024..=4096 * 1024).contains(&mem_kib),
        "`hardware.ram_gb: 4`: {mem_kib} KiB"
    );
    let disk_bytes: u64 = sh(&c, "cat /sys/block/vda/size")
        .await
        .trim()
        .parse::<u64>()
        .unwrap()
        * 512;
    assert_eq!(disk_bytes, 3 << 30, "`hardware.disk_gb: 3`");
    assert_eq!(sh(&c, "uname -s").await, "Linux\n", "`hardware.os: linux`");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_get_their_owner_group_and_mode() {
    let c = launched().await;
    assert_eq!(
        sh(&c, "stat -c '%U:%G %a' /srv/index.html").await,
        "orgo:orgo 640\n"
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log() {
    let c = launched().await;
    let pid = sh(&c, "pgrep -x httpd || pgrep -f 'busybox httpd'").await;
    let pid = pid.lines().next().unwrap().trim().to_owned();
    assert_eq!(
        sh(&c, &format!("ps -o user= -p {pid}")).await.trim(),
        "orgo"
    );
    assert_eq!(sh(&c, &format!("readlink /proc/{pid}/cwd")).await, "/srv\n");
    let environ = sh(&c, &format!("tr '\\0' '\\n' < /proc/{pid}/environ")).await;
    assert!(
        environ.lines().any(|l| l == "MODE=svc-hello"),
        "the service's own env, interpolated: {environ}"
    );
    assert!(
        environ.lines().any(|l| l == "SVC_KEY=key-of-the-service"),
        "a secret in a service's env, given at launch: {environ}"
    );
    assert!(
        sh(&c, "cat /var/log/web.log")
            .await
            .contains("started-svc-hello"),
        "the service's output goes to its `log`"
    );
    assert_eq!(
        sh(&c, "curl -fsS http://127.0.0.1:8080/index.html").await,
        "served\n"
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_http_check_restarts_a_service_that_does_not_restart_itself() {
    let c = launched().await;
    let before = sh(&c, "pgrep -f 'busybox httpd' | head -1").await;
    // `restart: no`: only the health check's `on_fail` brings it back.
    sh(&c, "pkill -KILL -f 'busybox httpd'").await;
    eventually(
        &c,
        "curl -fsS http://127.0.0.1:8080/index.html || true",
        "served",
    )
    .await;
    let after = sh(&c, "pgrep -f 'busybox httpd' | head -1").await;
    assert_ne!(before, after, "a new process serves");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_process_and_command_checks_act_only_when_they_fail() {
    let c = launched().await;
    // Nothing listens on port 9: the tcp check fails and restarts its marker.
    eventually(
        &c,
        "test $(wc -l < /var/tmp/down-starts) -ge 3 && echo restarted || true",
        "restarted",
    )
    .await;
    // The command check passes until its file appears, then fails. It and
    // the process check, which must pass, have 5 s to answer: with two
    // TCG guests on two cores, a check's process can take longer than the
    // default timeout of 1 s (`every`), which counts as a failure.
    let checks_before = sh(&c, "wc -l < /var/tmp/check-starts").await;
    assert_eq!(
        checks_before.trim(),
        "1",
        "a passing command check does nothing"
    );
    sh(&c, "touch /var/tmp/break-check").await;
    eventually(
        &c,
        "test $(wc -l < /var/tmp/check-starts) -ge 2 && echo restarted || true",
        "restarted",
    )
    .await;
    // httpd (`busybox`) runs: the process check never fails, its marker
    // started once.
    assert_eq!(sh(&c, "wc -l < /var/tmp/up-starts").await.trim(), "1");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_sessions_and_on_every_boot() {
    let c = launched().await;
    // Sessions belong to root, like hooks and build steps.
    let tmux = Exec::argv([
        "tmux",
        "list-panes",
        "-a",
        "-F",
        "#{session_name} #{window_name} #{pane_current_path} #{pane_current_command}",
    ]);
    let out = c.exec(tmux, T).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "main Main /srv sleep\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once at the build's boot, once at this launch.
    assert_eq!(sh(&c, "wc -l < /var/tmp/every-boot").await.trim(), "2");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_pip_and_npm_install_their_packages() {
    let c = launched().await;
    assert_eq!(
        sh(&c, "python3 -c 'import six; print(six.__name__)'").await,
        "six\n"
    );
    assert!(
        sh(&c, "npm ls -g --depth=0").await.contains("left-pad@"),
        "`build.npm` installs globally"
    );
    c.stop().await.unwrap();
}
