//! The machine: PID-1 duties (mounts, network), the login environment, tmux
//! sessions, a clone's new identity, power off, and the host channels.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orgo_agent_protocol::{
    Command, ErrorCode, Identity, SERIAL_PORT_NAME, TerminalSpec, VSOCK_PORT,
};
use rustix::mount::MountFlags;

use crate::agent::{Agent, Server};
use crate::exec::prepare;
use crate::files::{OpError, write_file};

/// Where login shells read the environment the host sets.
pub const PROFILE_ENV: &str = "/etc/profile.d/orgo.sh";

fn log(message: &str) {
    let _ = writeln!(std::io::stderr(), "orgo-agent: {message}");
}

/// Mounts the kernel file systems a guest needs. Mounts that already exist
/// (the initramfs moved `/dev` over) are left alone.
pub fn mount_filesystems() {
    let nodev = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mounts: [(&str, &str, &str, MountFlags, Option<&str>); 7] = [
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags::NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None),
    ];
    for (source, target, fstype, flags, data) in mounts {
        let _ = fs::create_dir_all(target);
        let data = data.map(|d| std::ffi::CString::new(d).expect("no NUL in mount options"));
        match rustix::mount::mount(source, target, fstype, flags, data.as_deref()) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {}
            Err(e) => log(&format!("cannot mount `{target}`: {e}")),
        }
    }
    for dir in ["/run/lock", "/tmp"] {
        let _ = fs::create_dir_all(dir);
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
}

/// Static network settings: `orgo.ip=ADDR/PREFIX,GATEWAY,DNS` on the kernel
/// command line (QEMU user networking: `10.0.2.15/24,10.0.2.2,10.0.2.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Address with prefix length.
    pub address: String,
    /// Default gateway.
    pub gateway: Option<String>,
    /// Name server.
    pub dns: Option<String>,
}

impl NetConfig {
    /// Reads `orgo.ip=` from a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Option<NetConfig> {
        let value = cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("orgo.ip="))?;
        let mut parts = value.split(',');
        let address = parts.next().filter(|a| !a.is_empty())?.to_string();
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Some(NetConfig {
            address,
            gateway: some(parts.next()),
            dns: some(parts.next()),
        })
    }
}

/// Brings up `lo`, and `eth0` from the kernel command line's `orgo.ip=`.
pub fn setup_network(agent: &Arc<Agent>) {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut steps: Vec<Vec<String>> = vec![argv(&["ip", "link", "set", "lo", "up"])];
    let config = NetConfig::from_cmdline(&cmdline);
    if let Some(net) = &config {
        steps.push(argv(&["ip", "link", "set", "eth0", "up"]));
        steps.push(argv(&["ip", "addr", "add", &net.address, "dev", "eth0"]));
        if let Some(gw) = &net.gateway {
            steps.push(argv(&["ip", "route", "add", "default", "via", gw]));
        }
        if let Some(dns) = &net.dns {
            let _ = fs::write("/etc/resolv.conf", format!("nameserver {dns}\n"));
        }
    }
    for step in steps {
        if let Err(e) = run_quiet(agent, step.clone()) {
            log(&format!("`{}` failed: {e}", step.join(" ")));
        }
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs a command to completion with no output, as root; an error unless it exits 0.
fn run_quiet(agent: &Arc<Agent>, args: Vec<String>) -> Result<(), String> {
    run_as(agent, args, None)
}

fn run_as(agent: &Arc<Agent>, args: Vec<String>, user: Option<&str>) -> Result<(), String> {
    run_as_within(agent, args, user, Duration::from_secs(60))
}

/// How much of a failed command's stderr is kept for its error.
const STDERR_BYTES: u64 = 64 * 1024;

/// Runs a command as `user` (root if none), killing its process group after
/// `timeout`; an error unless it exits 0. Its stderr is read on another
/// thread, so the timeout holds even while a process keeps stderr open.
fn run_as_within(
    agent: &Arc<Agent>,
    args: Vec<String>,
    user: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let mut prepared = prepare(agent, &Command::Argv(args), &BTreeMap::new(), None, user)
        .map_err(|e| e.message)?;
    let cmd = &mut prepared.command;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (mut child, waiter) = agent.spawner().start(cmd).map_err(|e| e.to_string())?;
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    if let Some(pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut err = String::new();
            let _ = pipe.take(STDERR_BYTES).read_to_string(&mut err);
            let _ = err_tx.send(err);
        });
    }
    let (status, timed_out) = waiter.wait_or_kill(Some(timeout));
    if status.success() {
        Ok(())
    } else if timed_out {
        Err("timed out".to_string())
    } else {
        // A background process may hold stderr open: wait for it a little.
        let err = err_rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        Err(format!("{status}: {}", err.trim()))
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// [`Op::SetEnv`](orgo_agent_protocol::Op::SetEnv): `/etc/profile.d/orgo.sh`, and the agent's
/// own environment.
pub(crate) fn set_env(agent: &Arc<Agent>, env: &BTreeMap<String, String>) -> Result<(), OpError> {
    if let Some(bad) = env.keys().find(|k| !valid_env_name(k)) {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            format!("`{bad}` is not a valid environment variable name"),
        ));
    }
    if let Some((name, _)) = env.iter().find(|(_, v)| v.contains('\0')) {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            format!("the value of `{name}` contains a NUL byte"),
        ));
    }
    let profile = agent.root().join(PROFILE_ENV.trim_start_matches('/'));
    let previous: Vec<String> = fs::read_to_string(&profile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Some(l.strip_prefix("export ")?.split('=').next()?.to_string()))
        .collect();
    let mut text = String::from("# Written by orgo-agent: the computer's environment.\n");
    for (name, value) in env {
        text.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    write_file(
        agent.root(),
        &agent.config().policy,
        PROFILE_ENV,
        text.as_bytes(),
        Some(0o644),
        None,
        None,
    )?;
    agent.set_base_env(env, &previous);
    Ok(())
}

/// [`Op::CreateTerminals`](orgo_agent_protocol::Op::CreateTerminals): `tmux new-session -d`,
/// unless the session exists.
pub(crate) fn create_terminals(
    agent: &Arc<Agent>,
    sessions: &[TerminalSpec],
) -> Result<(), OpError> {
    for s in sessions {
        let user = s.user.as_deref();
        if run_as(
            agent,
            argv(&["tmux", "has-session", "-t", &format!("={}", s.name)]),
            user,
        )
        .is_ok()
        {
            continue;
        }
        let mut args = argv(&["tmux", "new-session", "-d", "-s", &s.name]);
        if let Some(title) = &s.title {
            args.extend(argv(&["-n", title]));
        }
        if let Some(cwd) = &s.cwd {
            args.extend(argv(&["-c", cwd]));
        }
        if let Some(run) = &s.run {
            args.push(run.clone());
        }
        run_as(agent, args, user).map_err(|e| {
            OpError::new(
                ErrorCode::Io,
                format!("cannot create tmux session `{}`: {e}", s.name),
            )
        })?;
    }
    Ok(())
}

/// 128 bits as a machine-id: a version-4 UUID (as systemd makes them), in
/// 32 lower-case hex digits.
fn format_machine_id(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh machine-id: 128 random bits. Only for a first boot: a restored
/// clone's random state is its siblings' (see [`reset_identity`]).
fn new_machine_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format_machine_id(bytes))
}

/// `RNDRESEEDCRNG`: `_IO('R', 0x07)` in `linux/random.h`.
const RNDRESEEDCRNG: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(b'R', 0x07);

/// Reseeds the kernel's CRNG from its input pool now (needs
/// `CAP_SYS_ADMIN`; the agent is PID 1 and root).
#[allow(
    unsafe_code,
    reason = "an ioctl; rustix has no safe wrapper for `RNDRESEEDCRNG`"
)]
fn reseed_crng(urandom: &fs::File) -> std::io::Result<()> {
    // SAFETY: `RNDRESEEDCRNG` takes no argument and reads or writes no
    // memory of this process; `NoArg` passes none, and the opcode is the
    // kernel's for exactly that request on a random device.
    unsafe { rustix::ioctl::ioctl(urandom, rustix::ioctl::NoArg::<RNDRESEEDCRNG>::new()) }
        .map_err(std::io::Error::from)
}

/// A clone's machine-id, from the entropy the host sent it: the first 128
/// bits of SHA-256 over a label and the bytes. The host sends each clone
/// its own random bytes, so clones differ; the same bytes give the same id.
pub(crate) fn machine_id_from_entropy(entropy: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"orgo machine-id\0")
        .chain_update(entropy)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format_machine_id(bytes)
}

/// Writes a machine-id at first boot if the image has none.
pub fn ensure_machine_id(root: &Path) {
    let path = root.join("etc/machine-id");
    let current = fs::read_to_string(&path).unwrap_or_default();
    if current.trim().len() != 32
        && let Ok(id) = new_machine_id()
    {
        let _ = fs::write(&path, format!("{id}\n"));
    }
}

/// [`Op::ResetIdentity`](orgo_agent_protocol::Op::ResetIdentity): mix the
/// host's entropy into the pool and reseed the kernel's random generator
/// from it, set the clock, then a new machine-id and hostname.
///
/// Clones restored from one snapshot share the kernel's random state: until
/// it is reseeded, every clone's `/dev/urandom` gives the same bytes. Writing
/// the host's bytes to `/dev/urandom` only mixes them into the input pool
/// (Linux 6.1), so the agent then asks for a reseed at once
/// (`RNDRESEEDCRNG`). (A kernel with a vmgenid driver would reseed by itself
/// on a restore; Debian's cloud kernel has none.) The machine-id is derived
/// from the host's bytes (see
/// [`machine_id_from_entropy`]).
pub(crate) fn reset_identity(agent: &Arc<Agent>, identity: &Identity) -> Result<(), OpError> {
    if identity.entropy.0.len() < 32 {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            format!(
                "`{}` bytes of entropy; at least 32 are needed",
                identity.entropy.0.len()
            ),
        ));
    }
    if identity.unix_nanos >= 1_000_000_000 {
        return Err(OpError::new(
            ErrorCode::BadRequest,
            "`unix_nanos` is over a second",
        ));
    }
    if agent.config().machine {
        let mut urandom = fs::OpenOptions::new()
            .write(true)
            .open("/dev/urandom")
            .map_err(|e| OpError::io("cannot open `/dev/urandom`", &e))?;
        urandom
            .write_all(&identity.entropy.0)
            .map_err(|e| OpError::io("cannot write `/dev/urandom`", &e))?;
        reseed_crng(&urandom).map_err(|e| OpError::io("cannot reseed the kernel's CRNG", &e))?;
        let secs = i64::try_from(identity.unix_secs)
            .map_err(|_| OpError::new(ErrorCode::BadRequest, "`unix_secs` is out of range"))?;
        rustix::time::clock_settime(
            rustix::time::ClockId::Realtime,
            rustix::time::Timespec {
                tv_sec: secs,
                tv_nsec: identity.unix_nanos.into(),
            },
        )
        .map_err(|e| OpError::io("cannot set the clock", &e.into()))?;
        if let Some(host) = &identity.hostname {
            rustix::system::sethostname(host.as_bytes())
                .map_err(|e| OpError::io("cannot set the hostname", &e.into()))?;
        }
    }
    let id = machine_id_from_entropy(&identity.entropy.0);
    let policy = &agent.config().policy;
    write_file(
        agent.root(),
        policy,
        "/etc/machine-id",
        format!("{id}\n").as_bytes(),
        Some(0o444),
        None,
        None,
    )?;
    if let Some(host) = &identity.hostname {
        write_file(
            agent.root(),
            policy,
            "/etc/hostname",
            format!("{host}\n").as_bytes(),
            Some(0o644),
            None,
            None,
        )?;
    }
    Ok(())
}

/// Syncs the disks and powers off (or reboots). Does not return on success.
pub(crate) fn power_off(_agent: &Arc<Agent>, reboot: bool) {
    rustix::fs::sync();
    let cmd = if reboot {
        rustix::system::RebootCommand::Restart
    } else {
        rustix::system::RebootCommand::PowerOff
    };
    if let Err(e) = rustix::system::reboot(cmd) {
        log(&format!("cannot power off: {e}"));
    }
}

/// The device of the virtio-serial port named [`SERIAL_PORT_NAME`]
/// (`/dev/vportNpM`; there is no udev to make the `/dev/virtio-ports` link).
pub fn find_serial_port() -> Option<std::path::PathBuf> {
    let dir = fs::read_dir("/sys/class/virtio-ports").ok()?;
    dir.flatten().find_map(|entry| {
        let name = fs::read_to_string(entry.path().join("name")).ok()?;
        (name.trim() == SERIAL_PORT_NAME).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

/// Serves the host on the virtio-serial port, forever. A read of 0 bytes
/// means no host is connected: wait a little and read again.
///
/// Each host is a connection of its own, but all write to the one port: a
/// write waits while no host is connected, and the old connection's writer
/// may still be in a write when the next host comes. `PortWriter` keeps
/// each frame whole on the port.
pub fn serve_serial(server: &Server, device: &Path) -> std::io::Result<()> {
    let port = fs::OpenOptions::new().read(true).write(true).open(device)?;
    let writer = PortWriter(Arc::new(std::sync::Mutex::new(port.try_clone()?)));
    let mut announce = true;
    loop {
        server.serve(&port, Box::new(writer.clone()), announce);
        announce = false;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The serial port, shared by the writers of successive connections: one
/// frame (a `write_all`) at a time, so frames never interleave.
#[derive(Clone)]
struct PortWriter(Arc<std::sync::Mutex<fs::File>>);

impl PortWriter {
    fn port(&self) -> std::sync::MutexGuard<'_, fs::File> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for PortWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.port().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.port().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.port().flush()
    }
}

/// Serves the host on vsock port [`VSOCK_PORT`], a thread per connection, forever.
pub fn serve_vsock(server: Arc<Server>) -> std::io::Result<()> {
    let listener = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, VSOCK_PORT)?;
    accept_loop(
        || listener.accept().map(|(stream, _)| Some(stream)),
        |stream| {
            let writer = match stream.try_clone() {
                Ok(writer) => writer,
                Err(e) => return log(&format!("cannot clone a vsock connection: {e}")),
            };
            let server = Arc::clone(&server);
            std::thread::spawn(move || server.serve(stream, Box::new(writer), true));
        },
    );
    Ok(())
}

/// Hands each accepted connection to `handle` until `accept` gives `None`.
/// A failed accept (a connection reset before it was taken, no memory, too
/// many files) is logged and retried after a pause that grows while it
/// keeps failing: it never ends the serving.
pub(crate) fn accept_loop<S>(
    mut accept: impl FnMut() -> std::io::Result<Option<S>>,
    mut handle: impl FnMut(S),
) {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    let mut pause = FIRST_PAUSE;
    loop {
        match accept() {
            Ok(Some(stream)) => {
                pause = FIRST_PAUSE;
                handle(stream);
            }
            Ok(None) => return,
            Err(e) => {
                log(&format!("cannot accept a connection: {e}"));
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The agent as PID 1: mounts, network, machine-id, then serves on every
/// channel present. Never returns.
pub fn run_init() -> ! {
    mount_filesystems();
    let agent = Agent::new(crate::AgentConfig::guest());
    ensure_machine_id(Path::new("/"));
    if let Ok(name) = fs::read_to_string("/etc/hostname") {
        let _ = rustix::system::sethostname(name.trim().as_bytes());
    }
    setup_network(&agent);
    let server = Arc::new(Server::new(Arc::clone(&agent)));
    let vsock_server = Arc::clone(&server);
    std::thread::spawn(move || {
        if let Err(e) = serve_vsock(vsock_server) {
            log(&format!("no vsock channel: {e}"));
        }
    });
    // The serial port appears once virtio_console has probed it.
    for _ in 0..500 {
        if let Some(device) = find_serial_port() {
            log(&format!("serving on `{}`", device.display()));
            if let Err(e) = serve_serial(&server, &device) {
                log(&format!("serial channel failed: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    log("no virtio-serial port; serving on vsock only");
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("orgo-machine-{name}-{}", std::process::id()));
        fs::create_dir_all(root.join("etc")).expect("a scratch root");
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
            .expect("a passwd file");
        root
    }

    #[test]
    fn run_as_times_out_while_stderr_stays_open() {
        let root = sandbox("run-as");
        let agent = Agent::new(crate::AgentConfig::sandbox(&root));
        // `sleep` holds stderr open for as long as it runs.
        let result = run_as_within(
            &agent,
            argv(&["sleep", "30"]),
            None,
            Duration::from_millis(200),
        );
        assert_eq!(result, Err("timed out".to_string()));
        let failed = run_as_within(
            &agent,
            argv(&["sh", "-c", "echo oops >&2; exit 3"]),
            None,
            Duration::from_secs(30),
        );
        let message = failed.expect_err("exit 3 is a failure");
        assert!(message.contains("oops"), "{message}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_failed_accept_does_not_end_the_serving() {
        let mut attempts = 0;
        let mut served = Vec::new();
        accept_loop(
            || {
                attempts += 1;
                match attempts {
                    1 | 2 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionAborted)),
                    3 => Ok(Some("first")),
                    4 => Err(std::io::Error::other("too many open files")),
                    5 => Ok(Some("second")),
                    _ => Ok(None),
                }
            },
            |stream| served.push(stream),
        );
        assert_eq!(served, ["first", "second"]);
    }
}
