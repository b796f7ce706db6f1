//! The Cloud Hypervisor backend: one `cloud-hypervisor --api-socket`
//! process per VM, driven over its REST API (upstream's OpenAPI spec,
//! `vmm/src/api/openapi/cloud-hypervisor.yaml`) with the
//! `cloud-hypervisor-client` crate.
//!
//! - Boot: `vm.create` with one memory zone, then `vm.boot`. A golden VM
//!   ([`VmConfig::memory_file`](crate::VmConfig::memory_file) set) maps its
//!   zone `shared` from that file, so `vm.snapshot` leaves its RAM in the
//!   file instead of copying it into `memory-ranges`.
//! - Restore is lazy: a clone restores from a directory of its own holding
//!   a rewritten `config.json` (its disk, vsock socket, serial log, tap, and
//!   the memory zone mapped private, copy-on-write, from the golden file)
//!   beside symlinks to the snapshot's `state.json` and `memory-ranges`,
//!   which are never written. Without a memory file, the clone restores
//!   with `memory_restore_mode: OnDemand` (userfaultfd). `resume: true`,
//!   then `vm.resize` (vCPUs) and `vm.resize-zone` (memory) grow it.
//! - The agent is reached over hybrid vsock
//!   ([`AgentEndpoint::HybridVsock`](crate::AgentEndpoint::HybridVsock));
//!   the network is a tap ([`Network::User`](crate::Network::User) is
//!   unsupported).
//! - A [`VmmPool`] keeps processes spawned ahead for launches.
//! - Each VMM runs in its own process group. The handle that booted or
//!   restored a VM kills its process on drop unless
//!   [detached](crate::Vm::detach); the VM's run directory then keeps a
//!   record (`vmm.json`: the process id and the API socket) from which
//!   [`Vmm::attach`](crate::Vmm::attach) takes it back, from any process.
//!
//! With the `simulator` feature, `ch::simulator` serves a simulation of the
//! REST API on a Unix socket (the `ch-simulator` binary behaves like
//! `cloud-hypervisor --api-socket path=...`), for tests on hosts without
//! KVM or the binary.

mod backend;
mod convert;
mod pool;
mod process;
#[cfg(feature = "simulator")]
pub mod simulator;

pub use backend::{ChVm, CloudHypervisor};
pub use pool::VmmPool;

/// The backend's name.
pub const BACKEND: &str = "cloud-hypervisor";

/// The snapshot's VM configuration, as Cloud Hypervisor writes it.
pub const CONFIG_FILE: &str = "config.json";
/// The snapshot's device and vCPU state.
pub const STATE_FILE: &str = "state.json";
/// The snapshot's copied guest memory (absent when it all lives in the
/// memory file).
pub const MEMORY_RANGES_FILE: &str = "memory-ranges";

/// The roles of the files [`Vm::snapshot`](crate::Vm::snapshot) returns.
pub mod roles {
    /// `config.json`.
    pub const CONFIG: &str = "config";
    /// `state.json`.
    pub const STATE: &str = "state";
    /// `memory-ranges`, when there is one.
    pub const MEMORY_RANGES: &str = "memory-ranges";
    /// The memory file of a golden VM (mapped copy-on-write by restores).
    pub const MEMORY_FILE: &str = "memory-file";
}
