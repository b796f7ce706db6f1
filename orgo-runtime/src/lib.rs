//! `orgo-runtime`: the base image, the VM launcher and the host side of the
//! guest agent channel.
//!
//! - [`BaseImageRecipe`] names everything a base image is made of; its
//!   [`digest`](BaseImageRecipe::digest) names the image, and
//!   [`build_base`] builds it once per digest (kernel and busybox from
//!   Debian packages, root file system by mmdebstrap, the static
//!   `orgo-agent` as `/sbin/orgo-agent`, an initramfs that loads the virtio
//!   modules and hands over to it).
//! - [`QemuVm`] boots an image under TCG with the agent's virtio-serial port
//!   on a Unix socket; [`AgentClient`] speaks the agent protocol over it (or
//!   over Cloud Hypervisor's hybrid vsock socket).
//! - [`CloudHypervisor`] is the [`Vmm`] backend for hosts with KVM: one
//!   `cloud-hypervisor` process per VM, lazy restores, a [`VmmPool`] of
//!   processes spawned ahead (see [`ch`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use orgo_runtime::{BaseImageRecipe, QemuConfig, QemuVm, build_base};
//!
//! let agent = std::path::Path::new("target/agent-static/orgo-agent");
//! let recipe = BaseImageRecipe::resolve(agent)?;
//! let image = build_base(&recipe, agent, "images".as_ref(), &mut |step: &str| eprintln!("{step}"))?;
//! let vm = QemuVm::spawn(&QemuConfig::for_image(&image, "run/vm1".as_ref()))?;
//! let agent = vm.connect_agent(Duration::from_secs(60))?;
//! let out = agent.exec(orgo_agent::Exec::argv(["uname", "-a"]), Duration::from_secs(10))?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod agent;
pub mod ch;
mod image;
mod initramfs;
mod plan;
mod qemu;
mod qemu_backend;
mod qmp;
mod runtime;
mod vault;
mod vmlinux;
mod vmm;

pub use agent::{AgentClient, AgentError, ExecOutput, HookOutput};
pub use ch::{ChVm, CloudHypervisor, VmmPool};
pub use image::{
    BUILDER_VERSION, BaseImage, BaseImageRecipe, DEFAULT_PACKAGES, INITRAMFS_MODULES, ImageError,
    KERNEL_CMDLINE, MANIFEST_VERSION, MAX_MANIFEST_BYTES, Progress, build_base, cached_base,
    sha256_file,
};
/// The agent protocol's types that the runtime's API uses.
pub use orgo_agent::{Exec, ExitStatus, Stream};
pub use qemu::{QemuConfig, QemuError, QemuVm, USER_NET_IP};
pub use qemu_backend::Qemu;
pub use runtime::{
    BuildEvent, BuildLog, Computer, ComputerRecord, ComputerStatus, LaunchOptions, Runtime,
    RuntimeConfig, StepFailure,
};
pub use vault::{ENV_PREFIX as SECRET_ENV_PREFIX, VAULT_FILE, Vault, VaultError};
pub use vmlinux::extract_vmlinux;
pub use vmm::{
    Accel, AgentEndpoint, Capabilities, Disk, DiskFormat, Network, RestoreConfig, RuntimeError, Vm,
    VmConfig, VmInfo, VmState, Vmm,
};
