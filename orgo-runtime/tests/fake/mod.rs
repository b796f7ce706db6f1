//! A fake VMM for testing the runtime without a VM: [`FakeVmm`] "restores" a
//! computer by starting an in-process `orgo_agent::Server`, sandboxed under
//! the computer's run directory, on the Unix socket the runtime connects to
//! (`<run_dir>/agent.sock`, as QEMU's), and a `sleep` process that stands
//! for the VMM process: its pid is what the runtime records, its command
//! line names the run directory (so a sweep finds and kills it as it would
//! QEMU), pause and resume stop and continue it, and shutdown (or dropping
//! the handle that restored it, unless detached) kills it.
//!
//! Where it differs from a real VMM: its agent lives in the process that
//! restored it, so a computer whose launcher died keeps its "VMM" process
//! but no longer answers, and attach finds only this process's VMs; what
//! the agent runs (execs, hooks) runs on this host, and outlives the VM.
//!
//! [`fake_snapshot`] puts a snapshot of a template in the store with fake
//! files (the launch's `qemu-img create -u` never reads the disk), so a
//! launch is a cache hit and builds nothing.

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orgo_agent::{Agent, AgentConfig, Server};
use orgo_runtime::{
    AgentEndpoint, BackendKind, Capabilities, RestoreConfig, Runtime, RuntimeError, Vm, VmConfig,
    VmInfo, VmState, Vmm,
};
use orgo_snapshot::{BuildCache, BuildFailure, Built, HardwareShape, SnapshotArtifacts, Store};
use orgo_template::{Digest, Template};

/// What the fake's VMM processes are called (`argv[0]`): `<run_dir>/vmm`,
/// the argument by which a sweep knows a custom VMM of that run directory.
pub(crate) const PROCESS_NAME: &str = "vmm";

/// The hardware of the fake snapshots.
pub(crate) const SHAPE: HardwareShape = HardwareShape {
    cpu: 1,
    memory_mib: 512,
    disk_gb: 2,
};

/// A VMM without VMs (see the module's documentation).
#[derive(Debug)]
pub(crate) struct FakeVmm {
    kind: BackendKind,
    /// The machines restored here: attach finds them.
    machines: Mutex<HashMap<String, Arc<Machine>>>,
    /// While set, restores wait for it to open (and say they started).
    gate: Mutex<Option<Gate>>,
}

/// Holds restores until opened; `started` is told when one begins to wait.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) started: Arc<tokio::sync::Notify>,
    pub(crate) open: Arc<tokio::sync::Notify>,
}

impl FakeVmm {
    /// A fake VMM that makes and restores snapshots of `kind`.
    pub(crate) fn new(kind: BackendKind) -> Arc<FakeVmm> {
        Arc::new(FakeVmm {
            kind,
            machines: Mutex::new(HashMap::new()),
            gate: Mutex::new(None),
        })
    }

    /// From now on, restores wait at a gate: the returned one.
    pub(crate) fn hold_restores(&self) -> Gate {
        let gate = Gate {
            started: Arc::new(tokio::sync::Notify::new()),
            open: Arc::new(tokio::sync::Notify::new()),
        };
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// The pid of computer `id`'s VMM process, if it was restored here.
    pub(crate) fn pid(&self, id: &str) -> Option<u32> {
        self.machines.lock().unwrap().get(id).map(|m| m.pid)
    }

    /// The state of computer `id`'s VM, if it was restored here.
    pub(crate) fn state(&self, id: &str) -> Option<VmState> {
        self.machines
            .lock()
            .unwrap()
            .get(id)
            .map(|m| *m.state.lock().unwrap())
    }

    /// The ids of the machines restored here and not shut down.
    pub(crate) fn live(&self) -> Vec<String> {
        self.machines
            .lock()
            .unwrap()
            .values()
            .filter(|m| *m.state.lock().unwrap() != VmState::Shutdown)
            .map(|m| m.id.clone())
            .collect()
    }

    fn handle(&self, machine: Arc<Machine>, owned: bool) -> Box<dyn Vm> {
        Box::new(FakeVm { machine, owned })
    }
}

impl Drop for FakeVmm {
    /// Nothing outlives the fake: detached machines are stopped too.
    fn drop(&mut self) {
        let machines: Vec<Arc<Machine>> = self
            .machines
            .get_mut()
            .map(|m| m.drain().map(|(_, m)| m).collect())
            .unwrap_or_default();
        for machine in machines {
            machine.stop();
        }
    }
}

#[async_trait]
impl Vmm for FakeVmm {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    async fn probe(&self) -> Result<Capabilities, RuntimeError> {
        Ok(Capabilities {
            backend: self.kind,
            version: "fake 1".into(),
            accel: orgo_runtime::Accel::Tcg,
            lazy_restore: true,
        })
    }

    async fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        Err(fake_error(
            "boot",
            format!("`{}`: the fake vmm builds nothing", config.id),
        ))
    }

    async fn restore(&self, config: &RestoreConfig) -> Result<Box<dyn Vm>, RuntimeError> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let open = gate.open.notified();
            gate.started.notify_one();
            open.await;
        }
        // What the runtime hands a VMM: the golden disk is the disk
        // layer's backing file, not a role of its own.
        if config.snapshot.contains_key("disk") || !config.snapshot.contains_key("memory") {
            return Err(fake_error(
                "restore",
                format!("snapshot roles `{:?}`", config.snapshot.keys()),
            ));
        }
        if !config.disk.path.is_file() {
            return Err(fake_error(
                "restore",
                format!("no disk layer at `{}`", config.disk.path.display()),
            ));
        }
        let machine = Machine::start(config).map_err(|e| fake_error("restore", e.to_string()))?;
        self.machines
            .lock()
            .unwrap()
            .insert(config.id.clone(), Arc::clone(&machine));
        Ok(self.handle(machine, true))
    }

    async fn attach(&self, id: &str, _run_dir: &Path) -> Result<Box<dyn Vm>, RuntimeError> {
        let machine = self.machines.lock().unwrap().get(id).cloned();
        match machine {
            Some(machine) if *machine.state.lock().unwrap() != VmState::Shutdown => {
                Ok(self.handle(machine, false))
            }
            Some(_) => Err(fake_error("attach", format!("`{id}` has shut down"))),
            None => Err(fake_error(
                "attach",
                format!("`{id}` was not restored by this process"),
            )),
        }
    }
}

fn fake_error(op: &str, message: String) -> RuntimeError {
    RuntimeError::Vmm {
        backend: "fake",
        op: op.to_owned(),
        message,
    }
}

/// A restored fake VM: its VMM process, its agent's listener and
/// connections.
#[derive(Debug)]
struct Machine {
    id: String,
    socket: PathBuf,
    pid: u32,
    cpus: u32,
    memory_mib: u64,
    child: Mutex<Option<Child>>,
    state: Mutex<VmState>,
    stopped: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
}

impl Machine {
    fn start(config: &RestoreConfig) -> std::io::Result<Arc<Machine>> {
        let run_dir = &config.run_dir;
        std::fs::create_dir_all(run_dir)?;
        // The agent's sandbox: its files (machine-id, hostname, the
        // environment, runtime files) land under `root`.
        let root = run_dir.join("root");
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
        let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(&root))));
        let socket = run_dir.join("agent.sock");
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let child = Command::new("sleep")
            .arg0(run_dir.join(PROCESS_NAME))
            .arg("infinity")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()?;
        let machine = Arc::new(Machine {
            id: config.id.clone(),
            socket,
            pid: child.id(),
            cpus: config.cpus,
            memory_mib: config.memory_mib,
            child: Mutex::new(Some(child)),
            state: Mutex::new(VmState::Running),
            stopped: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        });
        let (stopped, connections) = (
            Arc::clone(&machine.stopped),
            Arc::clone(&machine.connections),
        );
        std::thread::spawn(move || serve(&listener, &server, &stopped, &connections));
        Ok(machine)
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<(), RuntimeError> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a child's pid");
        rustix::process::kill_process(pid, signal)
            .map_err(|e| fake_error("signal", format!("`{}`: {e}", self.id)))?;
        // A real VMM answers a pause or resume once the vCPUs have stopped
        // or started: wait until the kernel shows the process so.
        let stopped = signal == rustix::process::Signal::STOP;
        for _ in 0..1000 {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next());
            if (state == Some('T')) == stopped {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(fake_error(
            "signal",
            format!("`{}` did not take it", self.id),
        ))
    }

    /// Kills the VMM process and closes the agent: the host side sees the
    /// channel end, as when a VM dies.
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for conn in self.connections.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        *self.state.lock().unwrap() = VmState::Shutdown;
    }
}

/// Accepts host connections until the machine stops, each served on a
/// thread of its own.
fn serve(
    listener: &UnixListener,
    server: &Arc<Server>,
    stopped: &AtomicBool,
    connections: &Mutex<Vec<UnixStream>>,
) {
    while !stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (Ok(()), Ok(reader), Ok(writer)) = (
                    stream.set_nonblocking(false),
                    stream.try_clone(),
                    stream.try_clone(),
                ) else {
                    continue;
                };
                connections.lock().unwrap().push(stream);
                let server = Arc::clone(server);
                std::thread::spawn(move || server.serve(reader, Box::new(writer), true));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

/// A handle of a fake VM: the one that restored it kills it when dropped
/// (unless detached); an attached one leaves it as it was.
#[derive(Debug)]
struct FakeVm {
    machine: Arc<Machine>,
    owned: bool,
}

#[async_trait]
impl Vm for FakeVm {
    fn id(&self) -> &str {
        &self.machine.id
    }

    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::Serial(self.machine.socket.clone())
    }

    async fn info(&self) -> Result<VmInfo, RuntimeError> {
        Ok(VmInfo {
            state: *self.machine.state.lock().unwrap(),
            cpus: self.machine.cpus,
            memory_mib: self.machine.memory_mib,
            pid: Some(self.machine.pid),
        })
    }

    async fn pause(&self) -> Result<(), RuntimeError> {
        self.machine.signal(rustix::process::Signal::STOP)?;
        *self.machine.state.lock().unwrap() = VmState::Paused;
        Ok(())
    }

    async fn resume(&self) -> Result<(), RuntimeError> {
        self.machine.signal(rustix::process::Signal::CONT)?;
        *self.machine.state.lock().unwrap() = VmState::Running;
        Ok(())
    }

    async fn snapshot(&self, _dir: &Path) -> Result<BTreeMap<String, PathBuf>, RuntimeError> {
        Err(fake_error(
            "snapshot",
            "the fake vmm makes no snapshots".into(),
        ))
    }

    async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.machine.stop();
        Ok(())
    }

    fn detach(mut self: Box<Self>) {
        self.owned = false;
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        if self.owned {
            self.machine.stop();
        }
    }
}

/// Puts a snapshot of `template` in `store` for backend `kind`, with fake
/// files and a fake base image (so `orgo_snapshot::verify` finds what the
/// snapshot names): a launch of `template` is then a cache hit.
pub(crate) async fn fake_snapshot(
    runtime: &Runtime,
    template: &Template,
    kind: BackendKind,
) -> Built {
    let store = runtime.store();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let cache = BuildCache::new(shared);
    let scratch = store.scratch_dir().await.unwrap();
    let kernel = scratch.join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let (base_image, image) = cache
        .put_base_image(
            &Digest::of(b"fake base image"),
            &BTreeMap::from([("vmlinuz".to_owned(), kernel)]),
        )
        .await
        .unwrap();
    let mut files = BTreeMap::new();
    for role in ["disk", "memory", "state"] {
        let path = scratch.join(role);
        std::fs::write(&path, format!("fake {role} of {}", template.digest())).unwrap();
        files.insert(role.to_owned(), path);
    }
    let artifacts = SnapshotArtifacts {
        files,
        hardware: SHAPE,
        backend: kind.as_str().to_owned(),
        base_image,
        kernel: image.blobs["vmlinuz"].digest,
        agent: Some(runtime.agent_digest().await.expect("the agent's digest")),
    };
    let built = cache
        .get_or_build(&template.digest(), move || async move {
            Ok::<_, BuildFailure>(artifacts)
        })
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(scratch);
    built
}

/// The pids of live processes whose command line names `marker`.
pub(crate) fn processes_naming(marker: &Path) -> Vec<u32> {
    let marker = marker.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker))
                && orgo_runtime::process_alive(pid)
        })
        .collect()
}

/// The one-letter state of process `pid` (`S`, `T`, `Z`...), if it exists.
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
