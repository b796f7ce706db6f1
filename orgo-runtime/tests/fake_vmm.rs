//! The runtime over a fake VMM (`fake/mod.rs`): launches, stops, drops,
//! cancellations, the warm pool, `computers()` and orphans of killed
//! launchers, in milliseconds and without a VM. The agent is the real one,
//! in-process and sandboxed under each computer's directory; the store and
//! the computer records are real; the snapshot is a cache hit with fake
//! files.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;
mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rng;
use fake::{FakeVmm, fake_snapshot, process_state, processes_naming};
use orgo_runtime::{
    Accel, Backend, BackendKind, ComputerState, Exec, LaunchOptions, RecordState, Runtime,
    RuntimeConfig, RuntimeError, Vault, process_alive,
};
use orgo_snapshot::{Built, RefKey, RefService as _};
use orgo_template::Template;

/// A bound for exec and file calls; only a hang reaches it.
const T: Duration = Duration::from_secs(30);
const QEMU: BackendKind = BackendKind::Qemu(Accel::Tcg);

/// The test template: an environment with a secret, a runtime file from
/// it, `on_resume` and `on_shutdown` hooks (which run on this host, in the
/// fake's agent).
const TEMPLATE: &str = r#"
api_version: orgo.ai/v1
name: fake@1.0.0
secrets:
  - name: api_key
env:
  GREETING: hello
  API_KEY: { secret: api_key }
files:
  - { to: /etc/app/key, from: "secret://api_key", when: runtime }
hooks:
  on_resume: test "$GREETING" = hello
  on_shutdown: echo "bye $GREETING"
"#;

/// A store with a snapshot of one template, and a runtime over a fake VMM.
struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    vmm: Arc<FakeVmm>,
    runtime: Runtime,
    template: Template,
    built: Built,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(TEMPLATE, QEMU, QEMU).await
    }

    /// `yaml`'s snapshot, made by `snapshot_kind`, and a fake VMM of `kind`.
    async fn with(yaml: &str, kind: BackendKind, snapshot_kind: BackendKind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        let vmm = FakeVmm::new(kind);
        let runtime = open(&home, &vmm).await;
        let template = Template::from_yaml(yaml).unwrap();
        let built = fake_snapshot(&runtime, &template, snapshot_kind).await;
        Fixture {
            _dir: dir,
            home,
            vmm,
            runtime,
            template,
            built,
        }
    }

    async fn launch(&self, secret: &str) -> orgo_runtime::Computer {
        self.runtime
            .launch(&self.template, options(secret), &mut |_| {})
            .await
            .unwrap()
    }

    /// The snapshot computer `id` holds a lease on, if any.
    async fn lease(&self, id: &str) -> Option<orgo_template::Digest> {
        let key = RefKey::new(&format!("leases/{id}")).unwrap();
        self.runtime.store().get_ref(&key).await.unwrap()
    }

    /// Asserts computer `id` is gone: no directory, no lease, no VMM
    /// process (`pid`).
    async fn assert_gone(&self, id: &str, pid: Option<u32>) {
        assert!(
            !self.home.join("computers").join(id).exists(),
            "{id}'s directory"
        );
        assert_eq!(self.lease(id).await, None, "{id}'s lease");
        if let Some(pid) = pid {
            assert!(!process_alive(pid), "{id}'s vmm process {pid}");
        }
        assert!(
            !self
                .runtime
                .computers()
                .unwrap()
                .iter()
                .any(|c| c.record.id == id),
            "{id} is not listed"
        );
    }
}

async fn open(home: &Path, vmm: &Arc<FakeVmm>) -> Runtime {
    let mut config = RuntimeConfig::new(home);
    config.backend = Backend::Custom(Arc::clone(vmm) as Arc<dyn orgo_runtime::Vmm>);
    Runtime::open(config).await.unwrap()
}

fn options(secret: &str) -> LaunchOptions {
    LaunchOptions {
        vault: Vault::new().with(BTreeMap::from([("api_key".into(), secret.into())])),
        env: BTreeMap::from([("EXTRA".into(), "given".into())]),
        ..LaunchOptions::default()
    }
}

/// Every entry of `<home>/computers` (temporary directories included).
fn computer_dirs(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("computers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every lease in the store.
async fn leases(runtime: &Runtime) -> Vec<String> {
    runtime
        .store()
        .list_refs(&RefKey::new("leases").unwrap())
        .await
        .unwrap()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_records_its_vmm_pid_and_execs_through_the_agent() {
    let f = Fixture::new().await;
    let c = f.launch("key-1").await;
    let id = c.id().to_owned();
    let pid = f.vmm.pid(&id).expect("the fake restored it");
    assert!(process_alive(pid));

    let listed = f.runtime.computers().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let status = &listed[0];
    assert_eq!(
        status.record,
        *c.record(),
        "the record on disk is the handle's"
    );
    assert_eq!(
        (status.state, status.running),
        (ComputerState::Running, true)
    );
    let record = &status.record;
    assert_eq!(record.id, id);
    assert_eq!(record.state, RecordState::Running);
    assert_eq!(record.pid, Some(pid));
    assert_eq!(record.snapshot, Some(f.built.digest));
    assert_eq!(record.backend, Some(QEMU));
    assert_eq!(
        (record.cpus, record.memory_mib),
        (fake::SHAPE.cpu, fake::SHAPE.memory_mib)
    );
    assert_eq!(record.template, "fake@1.0.0");
    assert_eq!(f.lease(&id).await, Some(f.built.digest));

    // The environment (template, secret, launch extras) reached the agent.
    let out = c
        .exec(Exec::shell("echo $GREETING $API_KEY $EXTRA"), T)
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "hello key-1 given\n"
    );
    // Its identity and runtime files, through the agent's file reads.
    assert_eq!(
        c.read_file("/etc/hostname").await.unwrap(),
        format!("{id}\n").into_bytes()
    );
    assert_eq!(c.read_file("/etc/app/key").await.unwrap(), b"key-1");
    assert_eq!(c.read_file("/etc/machine-id").await.unwrap().len(), 33);

    assert_eq!(c.stop().await.unwrap().as_deref(), Some("bye hello\n"));
    f.assert_gone(&id, Some(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_runs_on_shutdown_and_removes_the_directory_and_the_lease() {
    #[derive(Debug, Clone, Copy)]
    enum How {
        /// `Computer::stop` on the launch's handle.
        Handle,
        /// Detached, connected to again, then `Runtime::stop` by id (the
        /// CLI's way).
        ById,
    }
    for kind in [QEMU, BackendKind::CloudHypervisor] {
        for how in [How::Handle, How::ById] {
            let f = Fixture::with(TEMPLATE, kind, kind).await;
            let c = f.launch("key").await;
            let (id, pid) = (c.id().to_owned(), c.record().pid);
            assert_eq!(pid, f.vmm.pid(&id), "{kind} {how:?}");
            let said = match how {
                How::Handle => c.stop().await.unwrap(),
                How::ById => {
                    c.detach();
                    let again = f.runtime.connect(&id).await.unwrap();
                    let out = again.exec(Exec::shell("echo $API_KEY"), T).await.unwrap();
                    assert_eq!(out.stdout, b"key\n", "{kind} {how:?}");
                    drop(again);
                    assert!(pid.is_some_and(process_alive), "{kind} {how:?}");
                    f.runtime.stop(&id).await.unwrap()
                }
            };
            assert_eq!(said.as_deref(), Some("bye hello\n"), "{kind} {how:?}");
            f.assert_gone(&id, pid).await;
            assert!(f.vmm.live().is_empty(), "{kind} {how:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_computer_is_killed_and_removed() {
    let f = Fixture::new().await;
    let c = f.launch("key").await;
    let (id, pid) = (c.id().to_owned(), c.record().pid);
    assert!(pid.is_some_and(process_alive));
    drop(c);
    f.assert_gone(&id, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_dropped_half_way_leaves_nothing() {
    #[derive(Debug, Clone, Copy)]
    enum Where {
        /// The snapshot is leased and the VMM is restoring.
        Restoring,
        /// The VM runs and its `on_resume` hook has started.
        OnResume,
    }
    for at in [Where::Restoring, Where::OnResume] {
        let marks = tempfile::tempdir().unwrap();
        let (started, release) = (marks.path().join("started"), marks.path().join("release"));
        let yaml = TEMPLATE.replace(
            r#"on_resume: test "$GREETING" = hello"#,
            r#"on_resume: touch "$STARTED"; while [ -e "$STARTED" ] && [ ! -e "$RELEASE" ]; do sleep 0.01; done"#,
        );
        let f = Fixture::with(&yaml, QEMU, QEMU).await;
        let gate = matches!(at, Where::Restoring).then(|| f.vmm.hold_restores());
        let mut opts = options("key");
        opts.env
            .insert("STARTED".into(), started.display().to_string());
        opts.env
            .insert("RELEASE".into(), release.display().to_string());
        let mut log = |_| {};
        let launch = f.runtime.launch(&f.template, opts, &mut log);
        let mut launch = Box::pin(launch);
        let half_way = async {
            match &gate {
                Some(gate) => gate.started.notified().await,
                None => {
                    while !started.exists() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        };
        tokio::select! {
            done = &mut launch => panic!("{at:?}: the launch ended: {done:?}"),
            () = half_way => {}
        }
        // Half-way indeed: recorded as launching, leased.
        let listed = f.runtime.computers().unwrap();
        assert_eq!(listed.len(), 1, "{at:?}: {listed:?}");
        let id = listed[0].record.id.clone();
        assert_eq!(listed[0].state, ComputerState::Launching, "{at:?}");
        assert_eq!(f.lease(&id).await, Some(f.built.digest), "{at:?}");
        let pid = f.vmm.pid(&id);
        assert_eq!(pid.is_some(), matches!(at, Where::OnResume), "{at:?}");

        drop(launch);
        f.assert_gone(&id, pid).await;
        assert!(computer_dirs(&f.home).is_empty(), "{at:?}");
        assert!(f.vmm.live().is_empty(), "{at:?}");
        // The hook, a process of this host, may end now (and does when
        // `marks` goes, too).
        std::fs::write(&release, b"").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_parks_paused_computers_a_launch_takes_one_and_drain_removes_the_rest() {
    let f = Fixture::new().await;
    f.runtime.prewarm(&f.template, 3).await.unwrap();
    let parked: BTreeSet<String> = f.runtime.parked().into_iter().collect();
    assert_eq!(parked.len(), 3, "{parked:?}");
    let listed = f.runtime.computers().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut pids = BTreeMap::new();
    for status in &listed {
        let id = &status.record.id;
        assert!(parked.contains(id), "{id} is parked: {parked:?}");
        assert_eq!(status.record.state, RecordState::Parked, "{id}");
        assert_eq!(status.state, ComputerState::Parked, "{id}");
        let pid = status.record.pid.expect("a parked computer's vmm runs");
        assert_eq!(Some(pid), f.vmm.pid(id), "{id}");
        assert_eq!(process_state(pid), Some('T'), "{id}'s vm is paused");
        assert_eq!(f.lease(id).await, Some(f.built.digest), "{id}'s lease");
        pids.insert(id.clone(), pid);
    }

    let c = f.launch("key").await;
    let id = c.id().to_owned();
    assert!(parked.contains(&id), "the launch took a parked computer");
    let rest: BTreeSet<String> = f.runtime.parked().into_iter().collect();
    assert_eq!(rest.len(), 2);
    assert!(!rest.contains(&id));
    assert_ne!(process_state(pids[&id]), Some('T'), "resumed");
    assert_eq!(c.record().pid, Some(pids[&id]));
    let out = c.exec(Exec::shell("echo $API_KEY"), T).await.unwrap();
    assert_eq!(out.stdout, b"key\n");
    let status = f
        .runtime
        .computers()
        .unwrap()
        .into_iter()
        .find(|s| s.record.id == id)
        .unwrap();
    assert_eq!(
        (status.record.state, status.state),
        (RecordState::Running, ComputerState::Running)
    );

    f.runtime.drain().await;
    assert!(f.runtime.parked().is_empty());
    for other in &rest {
        f.assert_gone(other, Some(pids[other])).await;
    }
    c.stop().await.unwrap();
    f.assert_gone(&id, Some(pids[&id])).await;
    assert!(computer_dirs(&f.home).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computers_tells_running_from_exited() {
    let f = Fixture::new().await;
    let (a, b) = (f.launch("a").await, f.launch("b").await);
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    let a_pid = a.record().pid.unwrap();
    kill(a_pid);
    let states: BTreeMap<String, (ComputerState, bool)> = f
        .runtime
        .computers()
        .unwrap()
        .into_iter()
        .map(|s| (s.record.id, (s.state, s.running)))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            (a_id.clone(), (ComputerState::Exited, false)),
            (b_id.clone(), (ComputerState::Running, true)),
        ])
    );
    let error = f.runtime.connect(&a_id).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::NotFound { what } if what.contains("it has exited")),
        "{error}"
    );
    // An exited computer's stop is its cleanup: no hook, nothing left.
    assert_eq!(f.runtime.stop(&a_id).await.unwrap(), None);
    f.assert_gone(&a_id, Some(a_pid)).await;
    drop(a);
    assert_eq!(
        b.stop().await.unwrap().as_deref(),
        Some("bye hello\n"),
        "{b_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_vmm_refuses_snapshots_of_another_kind() {
    for (kind, made_by) in [
        (QEMU, BackendKind::CloudHypervisor),
        (QEMU, BackendKind::Qemu(Accel::Kvm)),
        (BackendKind::CloudHypervisor, QEMU),
    ] {
        let f = Fixture::with(TEMPLATE, kind, made_by).await;
        let error = f
            .runtime
            .launch(&f.template, options("key"), &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("the custom vmm cannot run a snapshot made by `{made_by}` (it runs `{kind}`)")
        );
        assert!(computer_dirs(&f.home).is_empty(), "{kind} {made_by}");
        assert!(leases(&f.runtime).await.is_empty(), "{kind} {made_by}");
    }
}

/// SIGKILLs `pid` and waits until it no longer runs.
fn kill(pid: u32) {
    let raw = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(raw, rustix::process::Signal::KILL).unwrap();
    while process_alive(pid) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where [`a_launcher_run_to_its_end_leaves_nothing`] finds the store of
/// the test that spawned it as a launcher process.
const LAUNCHER_HOME: &str = "ORGO_FAKE_LAUNCHER_HOME";
const LAUNCHER_TEST: &str = "a_launcher_run_to_its_end_leaves_nothing";

/// What a launcher process does: launch a computer and keep it, park two,
/// launch one from the pool and stop it, stop the first; the other parked
/// computer goes with the runtime.
async fn launcher(home: &Path) {
    let vmm = FakeVmm::new(QEMU);
    let runtime = open(home, &vmm).await;
    let template = Template::from_yaml(TEMPLATE).unwrap();
    let a = runtime
        .launch(&template, options("a"), &mut |_| {})
        .await
        .unwrap();
    runtime.prewarm(&template, 2).await.unwrap();
    let b = runtime
        .launch(&template, options("b"), &mut |_| {})
        .await
        .unwrap();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    drop(runtime);
}

/// Run in this process, the launcher leaves nothing behind. It is also the
/// launcher process that [`killed_launchers_leave_orphans_that_a_sweep_removes`]
/// spawns (with [`LAUNCHER_HOME`] naming that test's store, which then
/// checks what is left).
#[test]
fn a_launcher_run_to_its_end_leaves_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(home) = std::env::var_os(LAUNCHER_HOME) {
        rt.block_on(launcher(Path::new(&home)));
        return;
    }
    rt.block_on(async {
        let f = Fixture::new().await;
        launcher(&f.home).await;
        assert!(computer_dirs(&f.home).is_empty());
        assert!(leases(&f.runtime).await.is_empty());
        assert!(processes_naming(&f.home).is_empty());
    });
}

/// A launcher process on `home` (this binary, running
/// [`a_launcher_run_to_its_end_leaves_nothing`] as the launcher).
fn spawn_launcher(home: &Path, output: Stdio) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([LAUNCHER_TEST, "--exact", "--test-threads=1", "--quiet"])
        .env(LAUNCHER_HOME, home)
        .stdout(Stdio::null())
        .stderr(output)
        .spawn()
        .unwrap()
}

#[test]
fn killed_launchers_leave_orphans_that_a_sweep_removes() {
    const ROUNDS: usize = 30;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(Fixture::new());

    // One launcher run to its end: how long a run takes, and that it
    // leaves nothing.
    let started = Instant::now();
    let out = spawn_launcher(&f.home, Stdio::piped())
        .wait_with_output()
        .unwrap();
    let whole = started.elapsed();
    assert!(
        out.status.success(),
        "the launcher: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(computer_dirs(&f.home).is_empty());
    assert!(processes_naming(&f.home).is_empty());

    // Then launchers killed at points spread over a whole run.
    let span = (whole.as_micros() as u64) * 6 / 5;
    let mut rng = Rng(0x5eed_0f0a_110c_4700);
    let mut orphans = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let (mut running, mut exited) = (0, 0);
    for round in 0..ROUNDS {
        let mut child = spawn_launcher(&f.home, Stdio::null());
        std::thread::sleep(Duration::from_micros(rng.below(span + 1)));
        let _ = child.kill();
        child.wait().unwrap();
        for status in f.runtime.computers().unwrap() {
            let id = status.record.id.clone();
            seen.insert(id.clone());
            match status.state {
                ComputerState::Orphaned => {
                    orphans.insert(id);
                }
                // Launched before the kill: its vmm runs on, its agent died
                // with the launcher (the fake's agent is in-process).
                ComputerState::Running => {
                    running += 1;
                    kill(status.record.pid.unwrap());
                    assert_eq!(rt.block_on(f.runtime.stop(&id)).unwrap(), None, "{id}");
                }
                // Killed while stopping, after its vmm.
                ComputerState::Exited => {
                    exited += 1;
                    assert_eq!(rt.block_on(f.runtime.stop(&id)).unwrap(), None, "{id}");
                }
                other => panic!("round {round}: {id} is {other:?} after its launcher died"),
            }
        }
        // After the sweep and the stops, every lease left is a computer's
        // that still has its directory.
        let dirs = computer_dirs(&f.home);
        for l in rt.block_on(leases(&f.runtime)) {
            assert!(
                dirs.iter().any(|d| l.ends_with(d.as_str())),
                "round {round}: lease `{l}` has no computer directory: {dirs:?}"
            );
        }
    }
    eprintln!(
        "{ROUNDS} launchers killed within {span} us: {} orphans, {running} running, {exited} exited",
        orphans.len()
    );
    assert!(
        !orphans.is_empty(),
        "no kill left an orphan: the kills missed the launches"
    );

    let swept: BTreeSet<String> = rt
        .block_on(f.runtime.sweep())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(swept, orphans);
    assert!(f.runtime.computers().unwrap().is_empty());
    assert_eq!(computer_dirs(&f.home), Vec::<String>::new());
    assert_eq!(rt.block_on(leases(&f.runtime)), Vec::<String>::new());
    assert_eq!(processes_naming(&f.home), Vec::<u32>::new());
    // As root, every computer had a network namespace and a host link
    // (see the runtime's `net` module): none is left.
    let left: Vec<String> = seen
        .iter()
        .flat_map(|id| {
            [
                format!("/run/netns/orgo-{id}"),
                format!("/sys/class/net/vo-{}", &id[2..]),
            ]
        })
        .filter(|path| Path::new(path).exists())
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let report = rt
        .block_on(orgo_snapshot::verify(f.runtime.store()))
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A home given as a relative path (`ORGO_HOME=target/home`) is resolved
/// once, before anything names a path under it: a disk layer's backing
/// file named relative to the home would be looked for relative to the
/// layer, and the VMM would not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_home_that_does_not_exist_yet_is_made_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative =
        PathBuf::from(format!("{up}{}", dir.path().display()).replace("//", "/")).join("new-home");
    assert!(relative.is_relative());
    let runtime = open(&relative, &FakeVmm::new(QEMU)).await;
    let root = runtime.store().root();
    assert!(root.is_absolute(), "{}", root.display());
    assert_eq!(
        root,
        std::fs::canonicalize(dir.path().join("new-home")).unwrap()
    );
}
