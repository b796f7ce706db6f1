//! `orgo-runtime`: build templates into golden snapshots and launch
//! computers from them.
//!
//! - [`Runtime`] is the front door: [`Runtime::build`] boots the base image,
//!   runs a template's steps through the guest agent (each named by its
//!   field: `build.run[2]`, `files[0]`, `hooks.on_first_boot`), snapshots
//!   the VM and stores the snapshot under the template's digest, once;
//!   [`Runtime::launch`] restores a computer from it on its own disk layer,
//!   gives it its identity, environment, secrets ([`Vault`]) and runtime
//!   files, and runs its hooks. [`Runtime::prewarm`] parks computers
//!   restored ahead for launches to take.
//! - [`BaseImageRecipe`] names everything a base image is made of; its
//!   [`digest`](BaseImageRecipe::digest) names the image, and
//!   [`build_base`] builds it (kernel and busybox from Debian packages, root
//!   file system by mmdebstrap, the static `orgo-agent` as
//!   `/sbin/orgo-agent`, an initramfs that loads the virtio modules).
//! - [`Vmm`] and [`Vm`] are the backend traits: [`Qemu`] (QMP; golden RAM in
//!   a shared file, device state by migration with `x-ignore-shared`,
//!   restores that map the RAM copy-on-write) and [`CloudHypervisor`] (its
//!   REST API, lazy restores, a [`VmmPool`]; see [`ch`]).
//! - [`system_templates`] are the curated templates (`system/python@1.0.0`,
//!   `system/nodejs@1.0.0`, `system/claude-code@1.0.0`), compiled in from
//!   the repository's `templates/system/`; [`system_template`] resolves one.
//! - [`check_host_tools`] finds the host binaries ([`HostTool::VMS`],
//!   [`HostTool::BASE_IMAGE`]) that are not installed, all at once.
//! - [`AgentClient`] speaks the agent protocol over QEMU's virtio-serial
//!   socket or Cloud Hypervisor's hybrid vsock.
//!
//! ```no_run
//! use std::time::Duration;
//! use orgo_runtime::{Exec, LaunchOptions, Runtime, RuntimeConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let template = orgo_template::Template::from_yaml("api_version: orgo.ai/v1\nname: box@1.0.0\nbuild: { apt: [jq] }\n")?;
//! let mut config = RuntimeConfig::new("/var/lib/orgo");
//! config.agent = Some("target/agent-static/orgo-agent".into());
//! let runtime = Runtime::open(config).await?;
//! runtime.build(&template, &mut |event| eprintln!("{event:?}")).await?;
//! let computer = runtime.launch(&template, LaunchOptions::default(), &mut |_| {}).await?;
//! let out = computer.exec(Exec::argv(["jq", "--version"]), Duration::from_secs(10)).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! computer.stop().await?;
//! # Ok(())
//! # }
//! ```

mod agent;
pub mod ch;
mod host_tools;
mod image;
mod initramfs;
mod plan;
mod qemu;
mod qemu_backend;
mod qmp;
mod runtime;
mod system;
mod vault;
mod vmlinux;
mod vmm;

pub use agent::{AgentClient, AgentError, ExecOutput, HookOutput};
pub use ch::{ChVm, CloudHypervisor, VmmPool};
pub use host_tools::{HostTool, MissingTools, check_host_tools};
pub use image::{
    BUILDER_VERSION, BaseImage, BaseImageRecipe, DEFAULT_PACKAGES, INITRAMFS_MODULES, ImageError,
    KERNEL_CMDLINE, MANIFEST_VERSION, MAX_MANIFEST_BYTES, Progress, build_base, cached_base,
    sha256_file,
};
/// The agent protocol's types that the runtime's API uses.
pub use orgo_agent::{Bytes, ErrorCode, Exec, ExitStatus, Stream};
pub use qemu::{QemuConfig, QemuError, QemuVm, USER_NET_IP};
pub use qemu_backend::Qemu;
pub use runtime::{
    Backend, BuildEvent, BuildLog, Computer, ComputerRecord, ComputerStatus, LaunchOptions,
    Runtime, RuntimeConfig, StepFailure,
};
pub use system::{SYSTEM_NAMESPACE, SystemTemplate, system_template, system_templates};
pub use vault::{ENV_PREFIX as SECRET_ENV_PREFIX, VAULT_FILE, Vault, VaultError};
pub use vmlinux::extract_vmlinux;
pub use vmm::{
    Accel, AgentEndpoint, Capabilities, Disk, DiskFormat, Network, RestoreConfig, RuntimeError, Vm,
    VmConfig, VmInfo, VmState, Vmm,
};
