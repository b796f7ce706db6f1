//! The VMM backends ([`qemu`], [`ch`]) and which one the runtime uses: the
//! configured [`Backend`] for builds, and for each snapshot the backend
//! that made it ([`BackendKind`]).

mod accel;
pub mod ch;
pub(crate) mod qemu;
mod qmp;

use std::path::Path;
use std::sync::Arc;

use orgo_snapshot::LocalStore;

use self::accel::AccelProbe;
use crate::config::{Backend, RuntimeConfig};
use crate::error::RuntimeError;
use crate::host_tools::HostTool;
use crate::image::KERNEL_CMDLINE;
use crate::images::BaseImages;
use crate::steps::BuildLog;
use crate::vmm::{Accel, BackendKind, Network, Vmm};

use self::ch::CloudHypervisor;
use self::qemu::{Qemu, USER_NET_IP};

/// The configured backend, and QEMU's accelerator.
#[derive(Debug)]
pub(crate) struct Backends {
    backend: Backend,
    qemu: std::path::PathBuf,
    accel: AccelProbe,
}

/// How a backend boots a builder VM.
pub(crate) struct Flavor {
    /// The backend, as snapshots record it.
    pub(crate) kind: BackendKind,
    /// The image's kernel role (`vmlinuz` for QEMU, `vmlinux` for Cloud
    /// Hypervisor).
    pub(crate) kernel: &'static str,
    pub(crate) network: Network,
    pub(crate) cmdline: String,
}

impl Backends {
    pub(crate) fn new(config: &RuntimeConfig, home: &Path) -> Backends {
        Backends {
            backend: config.backend.clone(),
            qemu: config.qemu.clone(),
            accel: AccelProbe::new(config.accel, config.qemu.clone(), home),
        }
    }

    /// QEMU's accelerator here (see [`AccelProbe`]).
    pub(crate) async fn accel(
        &self,
        images: &BaseImages,
        store: &LocalStore,
        log: BuildLog<'_>,
    ) -> Result<Accel, RuntimeError> {
        self.accel.get(images, store, log).await
    }

    /// The VMM that made snapshots of `kind` and restores them. QEMU's
    /// clones' disks skip flushes: a computer's disk layer is removed when
    /// it stops, and nothing survives a host crash anyway. A custom VMM
    /// serves the snapshots of its own kind.
    pub(crate) fn vmm(&self, kind: BackendKind) -> Result<Arc<dyn Vmm>, RuntimeError> {
        match (kind, &self.backend) {
            (BackendKind::Qemu(accel), Backend::Qemu) => Ok(Arc::new(
                Qemu::with_binary(&self.qemu, accel).with_ephemeral_clones(),
            )),
            (BackendKind::CloudHypervisor, Backend::CloudHypervisor(binary)) => {
                Ok(Arc::new(CloudHypervisor::new(binary)))
            }
            (kind, Backend::Custom(vmm)) if kind == vmm.kind() => Ok(Arc::clone(vmm)),
            (other, Backend::Custom(vmm)) => Err(RuntimeError::Unsupported {
                backend: "the custom vmm",
                what: format!(
                    "run a snapshot made by `{other}` (it runs `{}`)",
                    vmm.kind()
                ),
            }),
            (other, configured) => Err(RuntimeError::Unsupported {
                backend: match configured {
                    Backend::CloudHypervisor(_) => "cloud-hypervisor",
                    _ => "qemu",
                },
                what: format!("run a snapshot made by `{other}`"),
            }),
        }
    }

    /// The host binaries QEMU's builds and launches spawn, all present (a
    /// configured QEMU binary given by path is checked by spawning it).
    pub(crate) fn require_qemu_tools(&self) -> Result<(), RuntimeError> {
        let bare = self.qemu.components().count() == 1;
        let tools: Vec<HostTool> = HostTool::VMS
            .iter()
            .filter(|t| bare || t.binary != "qemu-system-x86_64")
            .copied()
            .collect();
        crate::host_tools::require(&tools).map_err(RuntimeError::MissingTools)
    }

    /// The host binaries a restore of a snapshot of `kind` spawns: QEMU's
    /// and `qemu-img` under QEMU, `qemu-img` (the disk layer) under Cloud
    /// Hypervisor, none of ours under a custom VMM.
    pub(crate) fn require_restore_tools(&self, kind: BackendKind) -> Result<(), RuntimeError> {
        match (kind, &self.backend) {
            (BackendKind::Qemu(_), Backend::Qemu) => self.require_qemu_tools(),
            (BackendKind::CloudHypervisor, Backend::CloudHypervisor(_)) => {
                let qemu_img: Vec<HostTool> = HostTool::VMS
                    .iter()
                    .filter(|t| t.binary == "qemu-img")
                    .copied()
                    .collect();
                crate::host_tools::require(&qemu_img).map_err(RuntimeError::MissingTools)
            }
            _ => Ok(()),
        }
    }

    /// What a build boots with.
    pub(crate) async fn flavor(
        &self,
        images: &BaseImages,
        store: &LocalStore,
        log: BuildLog<'_>,
    ) -> Result<Flavor, RuntimeError> {
        match &self.backend {
            Backend::Qemu => {
                self.require_qemu_tools()?;
                Ok(Flavor {
                    kind: BackendKind::Qemu(self.accel(images, store, log).await?),
                    kernel: "vmlinuz",
                    network: Network::User,
                    cmdline: format!("{KERNEL_CMDLINE} {USER_NET_IP}"),
                })
            }
            Backend::CloudHypervisor(binary) => {
                CloudHypervisor::new(binary).probe().await?;
                self.require_restore_tools(BackendKind::CloudHypervisor)?;
                Ok(Flavor {
                    kind: BackendKind::CloudHypervisor,
                    kernel: "vmlinux",
                    network: Network::None,
                    cmdline: KERNEL_CMDLINE.into(),
                })
            }
            Backend::Custom(vmm) => {
                vmm.probe().await?;
                Ok(Flavor {
                    kind: vmm.kind(),
                    kernel: "vmlinuz",
                    network: Network::User,
                    cmdline: KERNEL_CMDLINE.into(),
                })
            }
        }
    }

    /// The network a restored computer of `kind` gets: QEMU's user-mode
    /// NAT; none yet under Cloud Hypervisor (a tap is the host's to set
    /// up); a custom VMM's clones get what its builds boot with (user-mode).
    pub(crate) fn clone_network(&self, kind: BackendKind) -> Network {
        match (&self.backend, kind) {
            (Backend::Custom(_), _) | (_, BackendKind::Qemu(_)) => Network::User,
            (_, BackendKind::CloudHypervisor) => Network::None,
        }
    }
}
