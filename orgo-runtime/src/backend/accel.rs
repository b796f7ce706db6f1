//! Which accelerator QEMU uses on this host: the configured one, else the
//! answer of a probe run once per host (and QEMU version) and cached in
//! `<home>/probe/`. A host with an openable `/dev/kvm` boots the base image
//! under KVM once; if the guest does not come up (a nested, paravirtualized
//! KVM fails unmodified guests), the answer is TCG.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orgo_snapshot::{ImageManifest, LocalStore};
use orgo_template::Digest;

use super::qemu::Qemu;
use crate::disk::create_overlay;
use crate::error::{ErrorChain, RuntimeError, store_error};
use crate::guest;
use crate::image::KERNEL_CMDLINE;
use crate::images::BaseImages;
use crate::steps::{BuildEvent, BuildLog};
use crate::vmm::{Accel, Disk, DiskFormat, Network, VmConfig, Vmm as _};

/// The accelerator, decided once per runtime.
#[derive(Debug)]
pub(crate) struct AccelProbe {
    accel: tokio::sync::OnceCell<Accel>,
    qemu: PathBuf,
    /// Where answers are cached.
    cache_dir: PathBuf,
}

impl AccelProbe {
    /// `configured`, else a probe with `qemu`, cached under `home`.
    pub(crate) fn new(configured: Option<Accel>, qemu: PathBuf, home: &Path) -> AccelProbe {
        AccelProbe {
            accel: tokio::sync::OnceCell::new_with(configured),
            qemu,
            cache_dir: home.join("probe"),
        }
    }

    /// The accelerator: configured, cached, or probed now.
    pub(crate) async fn get(
        &self,
        images: &BaseImages,
        store: &LocalStore,
        log: BuildLog<'_>,
    ) -> Result<Accel, RuntimeError> {
        self.accel
            .get_or_try_init(|| self.probe(images, store, log))
            .await
            .copied()
    }

    async fn probe(
        &self,
        images: &BaseImages,
        store: &LocalStore,
        log: BuildLog<'_>,
    ) -> Result<Accel, RuntimeError> {
        let kvm_opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !kvm_opens {
            return Ok(Accel::Tcg);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let qemu = crate::vmm::version_output("qemu", &self.qemu).await?;
        let key = Digest::of(format!("{}\n{}", host.trim(), qemu).as_bytes());
        let cached = self.cache_dir.join(format!("kvm-{}", &key.hex()[..16]));
        match std::fs::read_to_string(&cached).as_deref().map(str::trim) {
            Ok("kvm") => return Ok(Accel::Kvm),
            Ok("tcg") => return Ok(Accel::Tcg),
            _ => {}
        }
        let (_, image) = images.get(log).await?;
        log(BuildEvent::Status(
            "probing KVM (once per host): booting the base image under KVM".into(),
        ));
        let scratch = store.scratch_dir().await.map_err(store_error)?;
        let works = self.boots_under_kvm(images, &image, &scratch).await;
        let _ = std::fs::remove_dir_all(&scratch);
        let works = match works {
            Ok(works) => works,
            // Not an answer about KVM: TCG for now, and probe again next time.
            Err(error) => {
                log(BuildEvent::Status(format!(
                    "the KVM probe could not run ({}); using tcg",
                    ErrorChain(&error)
                )));
                return Ok(Accel::Tcg);
            }
        };
        let accel = if works { Accel::Kvm } else { Accel::Tcg };
        log(BuildEvent::Status(format!("KVM probe: using {accel}")));
        let _ = std::fs::create_dir_all(&self.cache_dir);
        let _ = std::fs::write(&cached, accel.to_string());
        Ok(accel)
    }

    /// Whether the base image boots under KVM to a guest agent that
    /// answers; an error if the probe itself could not be set up.
    async fn boots_under_kvm(
        &self,
        images: &BaseImages,
        image: &ImageManifest,
        scratch: &Path,
    ) -> Result<bool, RuntimeError> {
        let paths = images.paths(image)?;
        let disk = scratch.join("probe.qcow2");
        create_overlay(&paths.rootfs, DiskFormat::Raw, &disk, None).await?;
        let qemu = Qemu::with_binary(&self.qemu, Accel::Kvm);
        let config = VmConfig {
            id: "kvm-probe".into(),
            cpus: 1,
            memory_mib: 256,
            kernel: paths.vmlinuz,
            initrd: Some(paths.initrd),
            cmdline: KERNEL_CMDLINE.into(),
            disk: Disk {
                path: disk,
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            memory_file: None,
            network: Network::None,
            run_dir: scratch.join("run"),
        };
        // QEMU refusing KVM, or a guest that does not come up under it, is
        // the answer: no.
        let Ok(vm) = qemu.boot(&config).await else {
            return Ok(false);
        };
        let answered = guest::connect(vm.agent_endpoint(), Duration::from_secs(45))
            .await
            .is_ok();
        let _ = vm.shutdown().await;
        Ok(answered)
    }
}
