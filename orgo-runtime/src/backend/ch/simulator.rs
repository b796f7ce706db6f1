//! A simulation of Cloud Hypervisor's REST API on a Unix socket, for tests
//! on hosts that cannot run Cloud Hypervisor.
//!
//! It follows upstream's OpenAPI spec (`/api/v1/vmm.ping`, `vm.create`,
//! `vm.boot`, `vm.pause`, `vm.resume`, `vm.snapshot`, `vm.restore`,
//! `vm.info`, `vm.resize`, `vm.resize-zone`, `vm.shutdown`, `vm.delete`,
//! `vmm.shutdown`: the same methods, bodies and success codes, `204` without
//! a body, `200` with one) and, where the spec is silent or loose, what
//! upstream's HTTP server does: `400` for a body that does not deserialize
//! or a configuration that does not validate, `404` for an unknown path or
//! a VM that is not created (`VmNotCreated`, `VmMissingConfig`), `500` for
//! an illegal transition (`VmNotRunning`, `VmAlreadyCreated`, an invalid
//! state transition), with upstream's error body: a JSON array of the
//! error chain's messages.
//!
//! The VM is simulated, not run: `vm.boot` checks the kernel, disk and
//! memory files exist and binds the hybrid vsock socket (never answering
//! it); `vm.snapshot` writes `config.json`, `state.json` and, unless all
//! memory lives in a shared memory file, a sparse `memory-ranges`, as
//! upstream does; `vm.restore` reads them back and rejects a missing or
//! invalid snapshot. Requests are HTTP/1.1 with `Content-Length` bodies.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cloud_hypervisor_client::models;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// The version `vmm.ping` and `--version` report.
pub const VERSION: &str = "v0.0.0-orgo-simulator";

/// Upstream's cap on a request body.
const MAX_BODY: usize = 4 << 20;
const MAX_HEAD: usize = 64 << 10;

/// What `state.json` holds in the simulation.
#[derive(Debug, Serialize, Deserialize)]
struct SimState {
    simulator: String,
    cpus: i32,
    /// Bytes of `memory-ranges` the restore expects.
    memory_ranges: u64,
}

#[derive(Debug)]
enum Vm {
    /// No VM object (none booted, or shut down): `vm.info` says `Created`
    /// if there is a config.
    None,
    Owned {
        state: models::VmState,
        /// The hybrid vsock socket, bound while the VM lives.
        _vsock: Option<BoundSocket>,
    },
}

/// A bound socket, unlinked when the VM goes.
#[derive(Debug)]
struct BoundSocket {
    _listener: StdUnixListener,
    path: PathBuf,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
struct Vmm {
    config: Option<models::VmConfig>,
    vm: Vm,
}

/// An error answer: status and upstream-style messages.
#[derive(Debug)]
struct Failure {
    status: u16,
    messages: Vec<String>,
}

fn fail(status: u16, messages: &[&str]) -> Failure {
    Failure {
        status,
        messages: messages.iter().map(|m| (*m).to_owned()).collect(),
    }
}

fn not_running(op: &str) -> Failure {
    fail(
        500,
        &[&format!("Error from API: {op}"), "VM is not running"],
    )
}

fn transition(op: &str, from: models::VmState, to: models::VmState) -> Failure {
    fail(
        500,
        &[
            &format!("Error from API: {op}"),
            &format!("Invalid VM state transition: {from:?} to {to:?}"),
        ],
    )
}

type Answer = Result<Option<Vec<u8>>, Failure>;

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| fail(400, &["Failed to deserialize JSON", &e.to_string()]))
}

fn dir_of(url: &str, op: &str) -> Result<PathBuf, Failure> {
    let path = url.strip_prefix("file://").ok_or_else(|| {
        fail(
            500,
            &[
                &format!("Error from API: {op}"),
                &format!("Could not extract path from URL: {url}"),
            ],
        )
    })?;
    let path = PathBuf::from(path);
    if !path.is_dir() {
        return Err(fail(
            500,
            &[
                &format!("Error from API: {op}"),
                &format!("Destination is not a directory: {path:?}"),
            ],
        ));
    }
    Ok(path)
}

/// The zones whose memory is not in a shared file: what `memory-ranges`
/// holds.
fn copied_bytes(config: &models::VmConfig) -> u64 {
    let Some(memory) = &config.memory else {
        return 0;
    };
    let zones: i64 = memory
        .zones
        .iter()
        .flatten()
        .filter(|z| !(z.file.is_some() && z.shared == Some(true)))
        .map(|z| z.size)
        .sum();
    u64::try_from(memory.size + zones).unwrap_or(0)
}

/// What upstream's `VmConfig::validate` would refuse, in part.
fn validate(config: &models::VmConfig) -> Result<(), Failure> {
    let invalid = |m: &str| fail(400, &["Error from API: The VM could not be created", m]);
    if config.payload.kernel.is_none()
        && config.payload.firmware.is_none()
        && config.payload.igvm.is_none()
    {
        return Err(invalid("No kernel, firmware or IGVM payload"));
    }
    if let Some(cpus) = &config.cpus
        && (cpus.boot_vcpus < 1 || cpus.boot_vcpus > cpus.max_vcpus)
    {
        return Err(invalid("Max vCPUs lower than boot vCPUs"));
    }
    if let Some(memory) = &config.memory {
        let zones = memory.zones.as_deref().unwrap_or_default();
        if memory.size == 0 && zones.is_empty() {
            return Err(invalid(
                "User defined memory regions must be provided if the memory size is 0",
            ));
        }
        if memory.size != 0 && !zones.is_empty() {
            return Err(invalid("Memory zones require the memory size to be 0"));
        }
        if zones.iter().any(|z| z.hotplug_size.is_some())
            && memory.hotplug_method.as_deref().unwrap_or("Acpi") == "Acpi"
        {
            return Err(invalid(
                "Invalid to set ACPI hotplug method for memory zones",
            ));
        }
    }
    Ok(())
}

/// What creating the VM object checks: the files it opens, the vsock socket
/// it binds.
fn instantiate(config: &models::VmConfig, op: &str, state: models::VmState) -> Result<Vm, Failure> {
    let failed = |m: String| fail(500, &[&format!("Error from API: {op}"), &m]);
    let mut files: Vec<&str> = Vec::new();
    files.extend(config.payload.kernel.as_deref());
    files.extend(config.payload.initramfs.as_deref());
    files.extend(
        config
            .disks
            .iter()
            .flatten()
            .filter_map(|d| d.path.as_deref()),
    );
    for path in files {
        if !Path::new(path).is_file() {
            return Err(failed(format!(
                "Cannot open {path:?}: No such file or directory"
            )));
        }
    }
    for zone in config.memory.iter().flat_map(|m| m.zones.iter().flatten()) {
        if let Some(file) = &zone.file {
            let f = OpenOptions::new()
                .read(true)
                .write(zone.shared == Some(true))
                .open(file)
                .map_err(|e| failed(format!("Error creating memory zone file {file:?}: {e}")))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if i64::try_from(len).unwrap_or(i64::MAX) < zone.size {
                return Err(failed(format!(
                    "Memory zone file {file:?} is smaller than the zone"
                )));
            }
        }
    }
    let vsock = match &config.vsock {
        Some(v) => Some(BoundSocket {
            _listener: StdUnixListener::bind(&v.socket)
                .map_err(|e| failed(format!("Error binding vsock socket {:?}: {e}", v.socket)))?,
            path: PathBuf::from(&v.socket),
        }),
        None => None,
    };
    Ok(Vm::Owned {
        state,
        _vsock: vsock,
    })
}

impl Vmm {
    fn state(&self) -> Option<models::VmState> {
        match &self.vm {
            Vm::Owned { state, .. } => Some(*state),
            Vm::None => None,
        }
    }

    fn set_state(&mut self, to: models::VmState) {
        if let Vm::Owned { state, .. } = &mut self.vm {
            *state = to;
        }
    }

    fn handle(&mut self, method: &str, path: &str, bytes: &[u8]) -> Answer {
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return Err(fail(404, &["Not Found"]));
        };
        let get = method == "GET";
        let put = method == "PUT";
        let wrong = || Err(fail(400, &["Bad Request"]));
        match endpoint {
            "vmm.ping" if get => self.ping(),
            "vm.info" if get => self.info(),
            "vmm.shutdown" if put => self.delete(),
            "vm.create" if put => self.create(bytes),
            "vm.boot" if put => self.boot(),
            "vm.pause" if put => {
                self.transit("VmPause", models::VmState::Running, models::VmState::Paused)
            }
            "vm.resume" if put => self.transit(
                "VmResume",
                models::VmState::Paused,
                models::VmState::Running,
            ),
            "vm.snapshot" if put => self.snapshot(bytes),
            "vm.restore" if put => self.restore(bytes),
            "vm.shutdown" if put => self.shutdown(),
            "vm.delete" if put => self.delete(),
            "vm.resize" if put => self.resize(bytes),
            "vm.resize-zone" if put => self.resize_zone(bytes),
            "vmm.ping" | "vm.info" | "vmm.shutdown" | "vm.create" | "vm.boot" | "vm.pause"
            | "vm.resume" | "vm.snapshot" | "vm.restore" | "vm.shutdown" | "vm.delete"
            | "vm.resize" | "vm.resize-zone" => wrong(),
            _ => Err(fail(404, &["Not Found"])),
        }
    }

    fn ping(&self) -> Answer {
        let mut ping = models::VmmPingResponse::new(VERSION.to_owned());
        ping.pid = Some(i64::from(std::process::id()));
        ping.features = Some(Vec::new());
        Ok(Some(serde_json::to_vec(&ping).expect("a ping serializes")))
    }

    fn info(&self) -> Answer {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| fail(404, &["Error from API: VmInfo", "VM is not created"]))?;
        let mut info = models::VmInfo::new(
            config.clone(),
            self.state().unwrap_or(models::VmState::Created),
        );
        let bytes: i64 = config.memory.as_ref().map_or(0, |m| {
            m.size
                + m.zones
                    .iter()
                    .flatten()
                    .map(|z| z.size + z.hotplugged_size.unwrap_or(0))
                    .sum::<i64>()
        });
        info.memory_actual_size = Some(bytes);
        Ok(Some(
            serde_json::to_vec(&info).expect("a VmInfo serializes"),
        ))
    }

    fn create(&mut self, bytes: &[u8]) -> Answer {
        let config: models::VmConfig = body(bytes)?;
        validate(&config)?;
        if self.config.is_some() {
            return Err(fail(
                500,
                &["Error from API: VmCreate", "VM is already created"],
            ));
        }
        self.config = Some(config);
        Ok(None)
    }

    fn boot(&mut self) -> Answer {
        if matches!(self.vm, Vm::Owned { .. }) {
            return Err(fail(
                500,
                &["Error from API: VmBoot", "VM is already created"],
            ));
        }
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| fail(404, &["Error from API: VmBoot", "VM is not created"]))?;
        self.vm = instantiate(config, "VmBoot", models::VmState::Running)?;
        Ok(None)
    }

    fn transit(&mut self, op: &str, from: models::VmState, to: models::VmState) -> Answer {
        match self.state() {
            None => Err(not_running(op)),
            Some(state) if state == from => {
                self.set_state(to);
                Ok(None)
            }
            Some(state) => Err(transition(op, state, to)),
        }
    }

    fn snapshot(&mut self, bytes: &[u8]) -> Answer {
        let request: models::VmSnapshotConfig = body(bytes)?;
        let op = "VmSnapshot";
        match self.state() {
            None => return Err(not_running(op)),
            Some(models::VmState::Paused) => {}
            Some(_) => {
                return Err(fail(
                    500,
                    &[
                        &format!("Error from API: {op}"),
                        "Error snapshotting VM",
                        "Trying to snapshot while VM is running",
                    ],
                ));
            }
        }
        let config = self.config.as_ref().expect("an owned VM has a config");
        let url = request.destination_url.unwrap_or_default();
        let dir = dir_of(&url, op)?;
        let failed = |m: String| fail(500, &[&format!("Error from API: {op}"), &m]);
        let create = |name: &str| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(name))
                .map_err(|e| failed(format!("Error creating snapshot file {name}: {e}")))
        };
        let ranges = copied_bytes(config);
        let write = |name: &str, bytes: Vec<u8>| {
            use std::io::Write;
            create(name)?
                .write_all(&bytes)
                .map_err(|e| failed(format!("Error writing {name}: {e}")))
        };
        write(
            super::CONFIG_FILE,
            serde_json::to_vec(config).expect("a VmConfig serializes"),
        )?;
        let state = SimState {
            simulator: VERSION.to_owned(),
            cpus: config.cpus.as_ref().map_or(1, |c| c.boot_vcpus),
            memory_ranges: ranges,
        };
        write(
            super::STATE_FILE,
            serde_json::to_vec(&state).expect("the state serializes"),
        )?;
        if ranges > 0 {
            create(super::MEMORY_RANGES_FILE)?
                .set_len(ranges)
                .map_err(|e| failed(format!("Error writing memory-ranges: {e}")))?;
        }
        Ok(None)
    }

    fn restore(&mut self, bytes: &[u8]) -> Answer {
        let request: models::RestoreConfig = body(bytes)?;
        let op = "VmRestore";
        if matches!(self.vm, Vm::Owned { .. }) || self.config.is_some() {
            return Err(fail(
                500,
                &[&format!("Error from API: {op}"), "VM is already created"],
            ));
        }
        if request.prefault == Some(true)
            && request.memory_restore_mode == Some(models::MemoryRestoreMode::OnDemand)
        {
            return Err(fail(
                400,
                &[
                    &format!("Error from API: {op}"),
                    "prefault is not supported with memory_restore_mode=ondemand",
                ],
            ));
        }
        let dir = dir_of(&request.source_url, op)?;
        let failed = |m: String| {
            fail(
                500,
                &[&format!("Error from API: {op}"), "Error restoring VM", &m],
            )
        };
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| failed(format!("Error opening snapshot file {name}: {e}")))
        };
        let config: models::VmConfig = serde_json::from_slice(&read(super::CONFIG_FILE)?)
            .map_err(|e| failed(format!("Error deserialising VM config snapshot: {e}")))?;
        let state: SimState = serde_json::from_slice(&read(super::STATE_FILE)?)
            .map_err(|e| failed(format!("Error deserialising VM state snapshot: {e}")))?;
        // Restore reads the ranges `state.json` lists (the memory that was
        // not in a shared file at snapshot time), whatever `config.json`
        // now says.
        if state.memory_ranges > 0 {
            let len = std::fs::metadata(dir.join(super::MEMORY_RANGES_FILE))
                .map_err(|e| failed(format!("Error opening memory-ranges: {e}")))?
                .len();
            if len < state.memory_ranges {
                return Err(failed(
                    "memory-ranges is shorter than the snapshot's ranges".to_owned(),
                ));
            }
        }
        let resumed = request.resume == Some(true);
        let state = if resumed {
            models::VmState::Running
        } else {
            models::VmState::Paused
        };
        self.vm = instantiate(&config, op, state)?;
        self.config = Some(config);
        Ok(None)
    }

    fn shutdown(&mut self) -> Answer {
        if matches!(self.vm, Vm::None) {
            return Err(not_running("VmShutdown"));
        }
        // Upstream drops the VM object and keeps its config: `vm.info` then
        // reports `Created`, and `vm.boot` boots it again.
        self.vm = Vm::None;
        Ok(None)
    }

    fn delete(&mut self) -> Answer {
        self.vm = Vm::None;
        self.config = None;
        Ok(None)
    }

    fn resize(&mut self, bytes: &[u8]) -> Answer {
        let request: models::VmResize = body(bytes)?;
        let op = "VmResize";
        let owned = matches!(self.vm, Vm::Owned { .. });
        let config = self.config.as_mut().ok_or_else(|| {
            fail(
                404,
                &[&format!("Error from API: {op}"), "VM is not created"],
            )
        })?;
        let failed = |m: &str| fail(500, &[&format!("Error from API: {op}"), m]);
        if let Some(vcpus) = request.desired_vcpus {
            let cpus = config
                .cpus
                .get_or_insert_with(|| models::CpusConfig::new(1, 1));
            if owned && (vcpus < 1 || vcpus > cpus.max_vcpus) {
                return Err(failed(
                    "Error resizing vCPUs: desired vCPUs above the maximum",
                ));
            }
            cpus.boot_vcpus = vcpus;
        }
        if let Some(ram) = request.desired_ram {
            let memory = config
                .memory
                .get_or_insert_with(|| models::MemoryConfig::new(0));
            if owned && memory.zones.as_ref().is_some_and(|z| !z.is_empty()) {
                return Err(failed(
                    "Not allowed to resize guest memory when backed with user defined memory zones.",
                ));
            }
            memory.size = ram;
        }
        Ok(None)
    }

    fn resize_zone(&mut self, bytes: &[u8]) -> Answer {
        let request: models::VmResizeZone = body(bytes)?;
        let op = "VmResizeZone";
        let owned = matches!(self.vm, Vm::Owned { .. });
        let config = self.config.as_mut().ok_or_else(|| {
            fail(
                404,
                &[&format!("Error from API: {op}"), "VM is not created"],
            )
        })?;
        let failed = |m: &str| fail(500, &[&format!("Error from API: {op}"), m]);
        let id = request.id.unwrap_or_default();
        let desired = request.desired_ram.unwrap_or_default();
        let zone = config
            .memory
            .as_mut()
            .and_then(|m| m.zones.as_mut())
            .and_then(|zones| zones.iter_mut().find(|z| z.id == id))
            .ok_or_else(|| {
                failed(&format!(
                    "Could not find the memory zone {id} for the resize"
                ))
            })?;
        if !owned {
            zone.size = desired;
            return Ok(None);
        }
        if desired < zone.size {
            return Err(failed("Invalid to resize below the boot size"));
        }
        if desired - zone.size > zone.hotplug_size.unwrap_or(0) {
            return Err(failed("Error resizing virtio-mem: size above hotplug_size"));
        }
        zone.hotplugged_size = Some(desired - zone.size);
        Ok(None)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn response(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n",
        reason(status)
    );
    if status != 204 {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if status != 204 {
        out.extend_from_slice(body);
    }
    out
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// Reads a request off `stream`, `buf` holding what was read past the last
/// one. `Ok(None)` at a clean end of the connection.
async fn read_request(stream: &mut UnixStream, buf: &mut Vec<u8>) -> Result<Option<Request>, u16> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(400);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    if headers.contains_key("transfer-encoding") {
        return Err(400);
    }
    let length: usize = match headers.get("content-length") {
        Some(v) => v.parse().map_err(|_| 400u16)?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(413);
    }
    while buf.len() < length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    // The path without a query string.
    let path = target.split('?').next().unwrap_or_default().to_owned();
    Ok(Some(Request {
        method: method.to_owned(),
        path,
        body,
        close: headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
    }))
}

async fn connection(mut stream: UnixStream, vmm: Arc<Mutex<Vmm>>, stop: watch::Sender<bool>) {
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                let body = serde_json::to_vec(&[reason(status)]).expect("strings serialize");
                let _ = stream.write_all(&response(status, &body)).await;
                return;
            }
        };
        let answer = vmm
            .lock()
            .expect("the simulator's lock is never poisoned")
            .handle(&request.method, &request.path, &request.body);
        let bytes = match answer {
            Ok(Some(body)) => response(200, &body),
            Ok(None) => response(204, b""),
            Err(f) => response(
                f.status,
                &serde_json::to_vec(&f.messages).expect("strings serialize"),
            ),
        };
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        if request.method == "PUT" && request.path == "/api/v1/vmm.shutdown" {
            let _ = stream.flush().await;
            let _ = stop.send(true);
            return;
        }
        if request.close {
            return;
        }
    }
}

/// Serves the simulated API on `socket` until `vmm.shutdown`; removes the
/// socket then.
pub async fn serve(socket: &Path) -> std::io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    let vmm = Arc::new(Mutex::new(Vmm {
        config: None,
        vm: Vm::None,
    }));
    let (stop, mut stopped) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(connection(stream, Arc::clone(&vmm), stop.clone()));
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(socket);
    Ok(())
}
