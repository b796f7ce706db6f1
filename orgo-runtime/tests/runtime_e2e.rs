//! Build and launch for real under QEMU TCG. Most tests here share one
//! template (files, an apt package, a service with a health check, hooks),
//! built once per test process (the build cache's single flight), and each
//! checks one thing: the build's steps, output and cache hit; two launches
//! at once with their own identity, secrets, environment and files; a
//! launch from the warm pool; hot-added hardware; a dropped handle; a
//! detached computer stopped by id; clones drawing different random bytes.
//! Also: a failing step named by its field with its output and nothing
//! stored, a missing secret refused before anything starts, a failing
//! `on_resume`.
//!
//! Needs root, QEMU, mmdebstrap and Debian's package mirror (for the base
//! image and the apt step). The store is `target/orgo-test-home` (the base
//! image is built there once); each run's templates carry a fresh nonce, so
//! each run really builds.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use common::{nonce, test_home as home, workspace};
use orgo_runtime::{
    BuildEvent, Computer, Exec, LaunchOptions, Runtime, RuntimeError, Vault, VaultError,
};
use orgo_snapshot::Built;
use orgo_template::Template;

const T: Duration = Duration::from_secs(120);

async fn runtime() -> Runtime {
    common::test_runtime().await
}

/// The test template; `host_file` is copied in by a `file://` source.
fn template(nonce: &str, host_file: &std::path::Path) -> Template {
    let host_file = host_file.display();
    Template::from_yaml(&format!(
        r#"
api_version: orgo.ai/v1
name: e2e@1.0.0
secrets:
  - name: api_key
env:
  RUN_NONCE: "{nonce}"
  API_KEY: {{ secret: api_key }}
build:
  apt: [jq]
  run:
    - echo built > /opt/built.txt
files:
  - {{ to: /opt/hello.txt, inline: "hello from orgo\n" }}
  - {{ to: ~/notes.txt, inline: "mine\n", mode: "0600" }}
  - {{ to: /opt/from-host.txt, from: "file://{host_file}" }}
  - {{ to: /etc/app/key, from: "secret://api_key", when: runtime }}
apps:
  - name: beat
    install: echo installed > /opt/installed.txt
    services:
      - name: heartbeat
        run: "while true; do date +%s%N > /var/tmp/beat.new; mv /var/tmp/beat.new /var/tmp/beat; sleep 0.2; done"
        user: root
    health:
      type: command
      command: "test -f /var/tmp/beat"
      every: 1s
      retries: 2
      on_fail: restart_service:heartbeat
hooks:
  on_first_boot: echo first > /opt/first-boot.txt
  on_pre_snapshot: echo pre > /opt/pre-snapshot.txt
  on_resume: cat /etc/machine-id > /opt/resumed-machine-id.txt
  on_shutdown: echo "bye from $(hostname)"
"#
    ))
    .unwrap()
}

async fn sh(computer: &Computer, script: &str) -> String {
    let out = computer.exec(Exec::shell(script), T).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}` in {}: {}",
        computer.id(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn recorder() -> (Arc<Mutex<Vec<BuildEvent>>>, impl FnMut(BuildEvent) + Send) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |event: BuildEvent| {
        if let BuildEvent::Status(text) = &event {
            eprintln!("[build] {text}");
        }
        sink.lock().unwrap().push(event);
    })
}

/// This process's nonce: the tests that share [`shared`] build one
/// template, which the build cache's single flight builds once for all of
/// them.
static NONCE: LazyLock<String> = LazyLock::new(nonce);

/// The host file [`shared`] copies in (`file://`): one path and content
/// for every run (written atomically: another run may be reading it).
static HOST_FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = workspace().join("target/orgo-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("from-host.txt");
    let tmp = dir.join(format!("from-host.txt.{}", std::process::id()));
    std::fs::write(&tmp, "from the host\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
});

/// The events of this process's one build of [`shared`], recorded by
/// whichever test ran it.
static BUILD_LOG: OnceLock<Vec<BuildEvent>> = OnceLock::new();

/// The template most tests here launch, the same in all of them.
fn shared() -> Template {
    template(&NONCE, &HOST_FILE)
}

/// Builds [`shared`] (or waits for the test building it, or finds it
/// built); the one call that builds records the build's events. Every test
/// of [`shared`] calls this before it launches.
async fn build_shared(runtime: &Runtime) -> Built {
    let (events, mut log) = recorder();
    let built = runtime.build(&shared(), &mut log).await.unwrap();
    if built.built_here {
        let events = events.lock().unwrap().clone();
        BUILD_LOG.set(events).expect("one build per process");
    }
    built
}

/// The launch options of a computer whose secret is `secret`.
fn options(secret: &str) -> LaunchOptions {
    LaunchOptions {
        vault: Vault::new().with(BTreeMap::from([("api_key".into(), secret.into())])),
        env: BTreeMap::from([("EXTRA".into(), "given".into())]),
        ..LaunchOptions::default()
    }
}

async fn launch(runtime: &Runtime, options: LaunchOptions) -> Computer {
    runtime
        .launch(&shared(), options, &mut |_| {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_runs_the_steps_in_order_streams_their_output_then_hits_the_cache() {
    let runtime = runtime().await;
    let built = build_shared(&runtime).await;
    // The test that ran the build recorded it as soon as it returned.
    let events = loop {
        if let Some(events) = BUILD_LOG.get() {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step { field, .. } => Some(field.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            "build.apt",
            "build.run[0]",
            "files[0]",
            "files[1]",
            "files[2]",
            "apps[0].install",
            "apps[0].services[0]",
            "hooks.on_first_boot",
            "hooks.on_pre_snapshot",
        ]
    );
    let output: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Output { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        String::from_utf8_lossy(&output).contains("Setting up jq"),
        "apt's output streams into the build log"
    );

    // The same template again: a cache hit, nothing built.
    let (events, mut quiet) = recorder();
    let again = runtime.build(&shared(), &mut quiet).await.unwrap();
    assert!(!again.built_here);
    assert_eq!(again.digest, built.digest);
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, BuildEvent::Step { .. })),
        "a cache hit runs no step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_launches_at_once_get_their_own_identity_secrets_env_and_files() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    let (a, b) = tokio::join!(
        launch(&runtime, options("key-a")),
        launch(&runtime, options("key-b")),
    );
    assert_ne!(a.id(), b.id());

    let mut machine_ids = Vec::new();
    for (computer, key) in [(&a, "key-a"), (&b, "key-b")] {
        assert_eq!(
            sh(computer, "cat /opt/hello.txt").await,
            "hello from orgo\n"
        );
        assert_eq!(
            sh(computer, "cat /opt/from-host.txt").await,
            "from the host\n"
        );
        assert_eq!(
            sh(
                computer,
                "cat /opt/built.txt /opt/installed.txt /opt/first-boot.txt /opt/pre-snapshot.txt"
            )
            .await,
            "built\ninstalled\nfirst\npre\n"
        );
        assert_eq!(
            sh(computer, "stat -c '%U %a' /home/orgo/notes.txt").await,
            "orgo 600\n"
        );
        assert!(sh(computer, "jq --version").await.starts_with("jq-"));
        // Secrets arrive at launch: in the environment and in runtime files.
        assert_eq!(sh(computer, "cat /etc/app/key").await, key);
        assert_eq!(
            sh(computer, "bash -lc 'echo $API_KEY $EXTRA'").await,
            format!("{key} given\n")
        );
        // on_resume ran after the identity reset.
        let id = sh(computer, "cat /etc/machine-id").await;
        assert_eq!(sh(computer, "cat /opt/resumed-machine-id.txt").await, id);
        assert_eq!(sh(computer, "hostname").await.trim(), computer.id());
        machine_ids.push(id);
        // The service runs in the clone: its heartbeat moves.
        let first = sh(computer, "cat /var/tmp/beat").await;
        let later = sh(computer, "sleep 1; cat /var/tmp/beat").await;
        assert_ne!(first, later, "the heartbeat service runs after the restore");
    }
    assert_ne!(machine_ids[0], machine_ids[1]);
    for computer in [a, b] {
        let id = computer.id().to_owned();
        let said = computer.stop().await.unwrap();
        assert_eq!(said.as_deref(), Some(format!("bye from {id}\n").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_takes_a_parked_computer_and_drain_removes_the_rest() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    // A computer restored ahead and parked: the launch takes it and gives
    // it its own identity and secrets like any other.
    runtime.prewarm(&shared(), 1).await.unwrap();
    let parked = runtime.parked();
    assert_eq!(parked.len(), 1, "one parked computer: {parked:?}");
    let c = launch(&runtime, options("key-c")).await;
    assert_eq!(c.id(), parked[0], "the launch took the parked computer");
    assert!(runtime.parked().is_empty());
    assert_eq!(sh(&c, "cat /etc/app/key").await, "key-c");
    assert_eq!(sh(&c, "hostname").await.trim(), c.id());
    let machine_id = sh(&c, "cat /etc/machine-id").await;
    assert_eq!(sh(&c, "cat /opt/resumed-machine-id.txt").await, machine_id);
    c.stop().await.unwrap();

    runtime.prewarm(&shared(), 1).await.unwrap();
    let parked = runtime.parked();
    assert_eq!(parked.len(), 1, "{parked:?}");
    runtime.drain().await;
    assert!(runtime.parked().is_empty(), "drain stops parked computers");
    assert!(
        !home().join("computers").join(&parked[0]).exists(),
        "and removes their files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_above_the_snapshot_is_hot_added() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    let mut bigger = options("key-d");
    bigger.cpus = Some(2);
    bigger.memory_mib = Some(2048);
    let d = launch(&runtime, bigger).await;
    assert_eq!((d.record().cpus, d.record().memory_mib), (2, 2048));
    assert_eq!(sh(&d, "nproc").await, "2\n");
    let total_kib: u64 = sh(&d, "awk '/MemTotal/ {print $2}' /proc/meminfo")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        total_kib > 1536 * 1024,
        "MemTotal {total_kib} KiB after growing to 2 GiB"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_takes_its_computer_with_it() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    let e = launch(&runtime, options("key-e")).await;
    let (e_id, e_pid) = (e.id().to_owned(), e.record().pid.unwrap());
    drop(e);
    assert!(!home().join("computers").join(&e_id).exists());
    for _ in 0..500 {
        if !std::path::Path::new(&format!("/proc/{e_pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = std::fs::read_to_string(format!("/proc/{e_pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "its QEMU is gone: {state}"
    );
    let lease = orgo_snapshot::RefKey::new(&format!("leases/{e_id}")).unwrap();
    use orgo_snapshot::RefService as _;
    assert_eq!(runtime.store().get_ref(&lease).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_computer_is_reached_by_id_and_stopped_with_its_on_shutdown() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    let a = launch(&runtime, options("key-a")).await;
    let id = a.id().to_owned();
    // Listed, and reachable from another handle (what `orgo exec` does).
    let listed: Vec<String> = runtime
        .computers()
        .unwrap()
        .into_iter()
        .filter(|c| c.running)
        .map(|c| c.record.id)
        .collect();
    assert!(listed.contains(&id), "{listed:?}");

    // Left running by its handle and stopped by id, as the CLI does.
    a.detach();
    let again = runtime.connect(&id).await.unwrap();
    assert_eq!(sh(&again, "cat /etc/app/key").await, "key-a");
    drop(again);
    let said = runtime.stop(&id).await.unwrap();
    assert_eq!(said.as_deref(), Some(format!("bye from {id}\n").as_str()));
    let left: Vec<String> = runtime
        .computers()
        .unwrap()
        .into_iter()
        .map(|c| c.record.id)
        .collect();
    assert!(!left.contains(&id), "{left:?}");
    assert!(matches!(
        runtime.connect(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_one_snapshot_draw_different_random_bytes() {
    let runtime = runtime().await;
    build_shared(&runtime).await;
    let (a, b) = tokio::join!(
        launch(&runtime, options("key-a")),
        launch(&runtime, options("key-b")),
    );
    // The first thing each asks for: 32 bytes of /dev/urandom. Restored
    // from one memory image, the two kernels would hand out the same bytes
    // until their next timed reseed (seen here), but for the reseed the
    // agent asks for at launch, after mixing in the host's entropy
    // (`RNDRESEEDCRNG`: Debian's cloud kernel has no vmgenid driver).
    let mut drawn = Vec::new();
    for computer in [&a, &b] {
        let out = computer
            .exec(Exec::argv(["head", "-c", "32", "/dev/urandom"]), T)
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout.len(), 32);
        drawn.push(out.stdout);
    }
    assert_ne!(drawn[0], drawn[1], "two clones drew the same random bytes");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_its_output_and_nothing_is_stored() {
    let runtime = runtime().await;
    let template = Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: broken@1.0.0\nenv: {{ NONCE: \"{}\" }}\nbuild:\n  run:\n    - echo fine\n    - echo about to fail; exit 3\n    - echo never\n",
        nonce()
    ))
    .unwrap();
    let (events, mut log) = recorder();
    let error = runtime.build(&template, &mut log).await.unwrap_err();
    let RuntimeError::Build(failure) = &error else {
        panic!("a step failure, not {error:?}");
    };
    assert_eq!(failure.field, "build.run[1]");
    assert_eq!(failure.reason, "exited with status 3");
    assert!(failure.output.contains("about to fail"), "{failure:?}");
    assert_eq!(error.to_string(), "`build.run[1]` exited with status 3");
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, BuildEvent::Step { field, .. } if field == "build.run[2]")),
        "no step runs after the failing one"
    );
    // Nothing was stored: a launch would build again.
    let store: Arc<dyn orgo_snapshot::Store> = Arc::new(runtime.store().clone());
    let cache = orgo_snapshot::BuildCache::new(store);
    assert!(cache.get(&template.digest()).await.unwrap().is_none());
    let record = cache.failure(&template.digest()).await.unwrap().unwrap();
    assert!(record.log.contains("about to fail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_launch_before_anything_starts() {
    let runtime = runtime().await;
    let template = template(&nonce(), std::path::Path::new("/nonexistent"));
    let mut log = |_: BuildEvent| panic!("nothing may be built");
    let error = runtime
        .launch(&template, LaunchOptions::default(), &mut log)
        .await
        .unwrap_err();
    let RuntimeError::Vault(VaultError::Missing { names }) = &error else {
        panic!("a missing secret, not {error:?}");
    };
    assert_eq!(names, &[("secrets[0]".to_owned(), "api_key".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_resume_fails_the_launch_and_leaves_nothing() {
    let runtime = runtime().await;
    let template = Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: resume-fails@1.0.0\nenv: {{ NONCE: \"{}\" }}\nhooks:\n  on_resume: echo cannot resume; exit 4\n",
        nonce()
    ))
    .unwrap();
    let (events, mut log) = recorder();
    let error = runtime
        .launch(&template, LaunchOptions::default(), &mut log)
        .await
        .unwrap_err();
    let RuntimeError::Build(failure) = &error else {
        panic!("a step failure, not {error:?}");
    };
    assert_eq!(failure.field, "hooks.on_resume");
    assert_eq!(failure.reason, "exited with status 4");
    assert!(failure.output.contains("cannot resume"), "{failure:?}");
    // The hook's output streamed into the launch's log as it ran.
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        BuildEvent::Output { data, .. } if String::from_utf8_lossy(data).contains("cannot resume")
    )));
    // The computer it restored (named in the log) left no files or lease.
    let id = events
        .lock()
        .unwrap()
        .iter()
        .find_map(|e| match e {
            BuildEvent::Status(text) if text.contains(": restored") => {
                text.split(':').next().map(str::to_owned)
            }
            _ => None,
        })
        .expect("the launch restored a computer before its hook failed");
    assert!(!home().join("computers").join(&id).exists(), "{id}'s files");
    let lease = orgo_snapshot::RefKey::new(&format!("leases/{id}")).unwrap();
    use orgo_snapshot::RefService as _;
    assert_eq!(
        runtime.store().get_ref(&lease).await.unwrap(),
        None,
        "{id}'s lease"
    );
}
