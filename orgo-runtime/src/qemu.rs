//! A minimal QEMU launcher: boots a base image under TCG (or KVM) with the
//! agent's virtio-serial port on a Unix socket. The runtime's QEMU backend
//! grows from this.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{AgentClient, AgentError};
use crate::image::{BaseImage, KERNEL_CMDLINE};
use orgo_agent_protocol::SERIAL_PORT_NAME;

/// The QEMU user-network settings the agent applies (`orgo.ip=`).
pub const USER_NET_IP: &str = "orgo.ip=10.0.2.15/24,10.0.2.2,10.0.2.3";

/// A failure to start QEMU.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// QEMU could not be started.
    #[error("cannot start `{binary}`")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The run directory could not be made.
    #[error("cannot create `{path}`")]
    RunDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent did not answer.
    #[error("the guest's agent did not answer (console log: `{console}`)")]
    Agent {
        /// The console log, to read why.
        console: String,
        /// The channel error.
        #[source]
        source: AgentError,
    },
}

/// How to boot a VM.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64` by default.
    pub binary: PathBuf,
    /// Kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Root disk (raw). Opened with `snapshot=on`: the guest's writes go to
    /// a temporary layer and the file is never written.
    pub disk: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// User-mode networking (a virtio-net NIC behind QEMU's slirp).
    pub user_net: bool,
    /// Directory for the agent socket and the console log.
    pub run_dir: PathBuf,
}

impl QemuConfig {
    /// Boots `image` under TCG with 512 MiB, one vCPU and user networking;
    /// sockets and logs go to `run_dir`.
    pub fn for_image(image: &BaseImage, run_dir: &Path) -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            kernel: image.vmlinuz(),
            initrd: image.initrd(),
            disk: image.rootfs(),
            cmdline: format!("{KERNEL_CMDLINE} {USER_NET_IP}"),
            memory_mib: 512,
            cpus: 1,
            accel: "tcg".into(),
            user_net: true,
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// The command line QEMU runs with.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        let agent_sock = self.run_dir.join("agent.sock");
        cmd.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-accel", &self.accel])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &self.cmdline])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                self.disk.display()
            ))
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=agent",
                agent_sock.display()
            ))
            .args([
                "-device",
                &format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}"),
            ])
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!(
                "file:{}",
                self.run_dir.join("console.log").display()
            ));
        if self.user_net {
            cmd.args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0",
            ]);
        }
        cmd
    }
}

/// A running QEMU; killed when dropped.
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    run_dir: PathBuf,
    started: Instant,
}

impl QemuVm {
    /// Starts QEMU.
    pub fn spawn(config: &QemuConfig) -> Result<QemuVm, QemuError> {
        std::fs::create_dir_all(&config.run_dir).map_err(|source| QemuError::RunDir {
            path: config.run_dir.display().to_string(),
            source,
        })?;
        let _ = std::fs::remove_file(config.run_dir.join("agent.sock"));
        let started = Instant::now();
        let child = config
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| QemuError::Spawn {
                binary: config.binary.display().to_string(),
                source,
            })?;
        Ok(QemuVm {
            child,
            run_dir: config.run_dir.clone(),
            started,
        })
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The guest's console output so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default()
    }

    /// Connects to the agent and shakes hands, waiting up to `timeout`.
    pub fn connect_agent(&self, timeout: Duration) -> Result<AgentClient, QemuError> {
        AgentClient::connect_serial(&self.run_dir.join("agent.sock"), timeout).map_err(|source| {
            QemuError::Agent {
                console: self.run_dir.join("console.log").display().to_string(),
                source,
            }
        })
    }

    /// Waits up to `timeout` for QEMU to exit (after a guest power-off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills QEMU.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
    }
}
