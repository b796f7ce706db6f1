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
//!   restored ahead for launches to take. [`Runtime::check`] says which
//!   fields of a template this host cannot honour: builds and launches
//!   refuse those instead of ignoring them.
//! - The network is the host's: as root, each VM runs in a network namespace
//!   of its own where its `egress_policy` is enforced (nftables and an
//!   `orgo-netd` proxy and resolver per VM), its `apps[].ports` forwarded
//!   ([`Computer::ports`]) and its `bandwidth_mbps` applied; learn mode
//!   ([`LaunchOptions::egress_learn`], [`Computer::egress_learned`]) prints
//!   the smallest policy allowing what a computer reached. Without root,
//!   QEMU's user-mode network, and those fields are refused.
//! - [`RuntimeConfig`] sets it up, in code or from the environment
//!   ([`RuntimeConfig::from_env`]). The guest agent the base image needs is
//!   embedded in this library.
//! - [`BaseImageRecipe`] names everything a base image is made of; its
//!   [`digest`](BaseImageRecipe::digest) names the image, and
//!   [`build_base`] builds it (kernel and busybox from Debian packages, root
//!   file system by mmdebstrap, the static `orgo-agent` as
//!   `/sbin/orgo-agent`, an initramfs that loads the virtio modules).
//! - [`Vmm`] and [`Vm`] are the backend traits: [`Qemu`] (QMP; golden RAM in
//!   a shared file, device state by migration with `x-ignore-shared`,
//!   restores that map the RAM copy-on-write) and [`CloudHypervisor`] (its
//!   REST API, lazy restores, a [`VmmPool`]; see [`ch`]); [`Backend::Custom`]
//!   runs any other (a test double, say). Snapshots record the backend that
//!   made them as a [`BackendKind`].
//! - The desktop: a template with a resolution, a wallpaper, autostart
//!   apps or streams has one (the rule and the stack are in the `desktop`
//!   module's docs), built on the [`DesktopImageRecipe`]'s image. A
//!   [`Computer`] drives it: [`Computer::screenshot`], [`Computer::click`],
//!   [`Computer::move_to`], [`Computer::drag`], [`Computer::type_text`],
//!   [`Computer::key`], [`Computer::scroll`], [`Computer::cursor`] (done by
//!   the agent, in-process over X11), and streams it
//!   ([`Computer::stream_start`], [`Computer::stream_stop`],
//!   [`Computer::stream_status`]). A computer without a desktop answers each
//!   with [`RuntimeError::NoDesktop`].
//! - [`system_templates`] are the curated templates (`system/python@1.0.0`,
//!   `system/nodejs@1.0.0`, `system/claude-code@1.0.0`), compiled in from
//!   the repository's `templates/system/`; [`system_template`] resolves one.
//! - [`check_host_tools`] finds the host binaries ([`HostTool::VMS`],
//!   [`HostTool::BASE_IMAGE`]) that are not installed, all at once.
//! - [`AgentClient`] speaks the agent protocol over QEMU's virtio-serial
//!   socket or Cloud Hypervisor's hybrid vsock.
//! - The static `orgo-agent` is embedded in this crate (its `build.rs`
//!   builds it; `ORGO_AGENT_EMBED=/path/to/orgo-agent` at build time embeds
//!   that file instead); [`agent_binary`] writes it out once under a home.
//!
//! The modules: `config` and `error`; `runtime` (the front door) over
//! `shared` (what its handles share), `builder` (builds), `launch` (launches and the warm `pool`), `computer`
//! (a running computer's handle), `home` (computer records, orphans);
//! `images` (the base image in the store);
//! `steps`, `plan` and `guest` (a template's steps through the agent);
//! `support` (no silent field); `automation` (triggers, telemetry and
//! auto-stop as the agent takes them; a computer's logs, events and
//! metrics read back); `restart` (`on_fail: restart_vm`: the launching
//! process restores the computer again under its id, started by the
//! runtime's `launch`) and `live` (what a computer's handles share, which a
//! restart replaces); `desktop` (which templates get a desktop,
//! and its services), `computer_use` and `streams` (the desktop's API on a
//! [`Computer`]); `backend/{qemu, ch, accel}` (the VMMs, the KVM probe); `image` (the base
//! image recipe and build); `net` (each VM's network: a namespace with a tap, nftables, `tc` and its
//! `orgo-netd`, or QEMU's user-mode network without root; its docs hold the design: the address
//! plan, the build policy, the rootless fallback, cleanup).
//!
//! ```no_run
//! use std::time::Duration;
//! use orgo_runtime::{Exec, LaunchOptions, Runtime, RuntimeConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let template = orgo_template::Template::from_yaml("api_version: orgo.ai/v1\nname: box@1.0.0\nbuild: { apt: [jq] }\n")?;
//! let runtime = Runtime::open(RuntimeConfig::from_env(None)?).await?;
//! runtime.build(&template, &mut |event| eprintln!("{event:?}")).await?;
//! let computer = runtime.launch(&template, LaunchOptions::default(), &mut |_| {}).await?;
//! let out = computer.exec(Exec::argv(["jq", "--version"]), Duration::from_secs(10)).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! computer.stop().await?;
//! # Ok(())
//! # }
//! ```

mod agent;
mod automation;
mod backend;
mod builder;
mod checkpoint;
mod computer;
mod computer_use;
mod config;
mod desktop;
mod disk;
mod embedded;
mod error;
mod fleet;
mod guest;
mod home;
mod host_tools;
mod image;
mod images;
mod launch;
mod leases;
mod live;
mod net;
mod pause;
mod plan;
mod pool;
mod process;
mod restart;
mod runtime;
mod secret_scan;
mod shared;
mod snapshot_scan;
mod steps;
mod streams;
mod support;
mod suspend;
mod system;
mod vault;
mod vmm;

pub use agent::{AgentClient, AgentError, ExecOutput, HookOutput};
pub use automation::{EventReader, FOLLOW_POLL, LogLine, LogReader, event_json};
pub use backend::ch;
pub use backend::ch::{ChVm, CloudHypervisor, VmmPool};
pub use backend::qemu::{Qemu, USER_NET_IP};
pub use checkpoint::Checkpoint;
pub use computer::{Computer, ExecEnd};
pub use computer_use::Screenshot;
pub use config::{Backend, FLEET_VARIABLES, RuntimeConfig, SharedStore};
pub use desktop::{DEFAULT_RESOLUTION, DESKTOP_FIELDS, NOVNC_PORT, PULSE_SERVER, VNC_PORT};
pub use embedded::{agent_binary, netd_binary};
pub use error::{ErrorChain, RuntimeError, StepFailure};
pub use home::{ComputerRecord, ComputerState, ComputerStatus, PortMapping, RecordState};
pub use host_tools::{HostTool, MissingTools, check_host_tools};
pub use image::{
    BUILDER_VERSION, BaseImage, BaseImageRecipe, DEFAULT_PACKAGES, DESKTOP_BUILDER_VERSION,
    DESKTOP_PACKAGES, DesktopImageRecipe, INITRAMFS_MODULES, ImageError, KERNEL_CMDLINE,
    MANIFEST_VERSION, MAX_MANIFEST_BYTES, Progress, build_base, build_desktop, cached_base,
    extract_vmlinux, sha256_file,
};
pub use launch::LaunchOptions;
pub use net::{EgressLearned, Ipv4Net};
/// The agent protocol's types that the runtime's API uses.
pub use orgo_agent_protocol::{
    Bytes, ErrorCode, Event, EventRecord, Exec, ExitStatus, MouseButton, Region, ScrollDirection,
    ServiceState, ServiceStatus, Stream,
};
pub use process::process_alive;
pub use runtime::Runtime;
pub use secret_scan::{Encoding as SecretEncoding, MIN_SECRET_BYTES, SecretFinding, SecretScan};
pub use steps::{BuildEvent, BuildLog};
pub use streams::{StreamState, StreamStatus};
pub use support::Unsupported;
pub use system::{SYSTEM_NAMESPACE, SystemTemplate, system_template, system_templates};
pub use vault::{ENV_PREFIX as SECRET_ENV_PREFIX, VAULT_FILE, Vault, VaultError};
pub use vmm::{
    Accel, AgentEndpoint, BackendKind, Capabilities, Disk, DiskFormat, Network, RestoreConfig, Vm,
    VmConfig, VmInfo, VmState, Vmm,
};
