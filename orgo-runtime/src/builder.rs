//! Builds: a template's golden snapshot, made once per digest (also across
//! processes, through the store's [`BuildCache`]): boot the base image, run
//! the template's steps through the agent, pause, snapshot, store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use orgo_snapshot::{
    BuildCache, BuildFailure, Built, HardwareShape, LocalStore, SnapshotArtifacts, StoreError,
};
use orgo_template::Template;

use crate::backend::Backends;
use crate::backend::qemu::USER_NET_IP;
use crate::disk::{create_overlay, disk_bytes};
use crate::error::{RuntimeError, store_error};
use crate::guest::{self, BOOT_TIMEOUT, QUICK, call};
use crate::images::BaseImages;
use crate::plan;
use crate::steps::{BuildEvent, BuildLog, run_step};
use crate::vmm::{Disk, DiskFormat, VmConfig};

/// What builds need: the store, its build cache, the base images and the
/// backends.
#[derive(Debug)]
pub(crate) struct Builder {
    pub(crate) store: LocalStore,
    pub(crate) cache: BuildCache,
    pub(crate) images: BaseImages,
    pub(crate) backends: Backends,
    /// CA certificates builder VMs trust (see
    /// [`RuntimeConfig::guest_ca_certs`](crate::RuntimeConfig::guest_ca_certs)).
    pub(crate) guest_ca_certs: Option<PathBuf>,
    /// How build VMs get their network.
    pub(crate) net: std::sync::Arc<crate::net::Net>,
    /// The fleet's store this host fetches from, in a fleet.
    pub(crate) fleet: crate::fleet::Fleet,
}

impl Builder {
    /// `template`'s golden snapshot, built now unless it is in the cache;
    /// with `lease`, leased to that computer in the same step (so a gc
    /// between the build and the launch cannot take it).
    pub(crate) async fn build(
        &self,
        lease: Option<&str>,
        template: &Template,
        log: BuildLog<'_>,
    ) -> Result<Built, RuntimeError> {
        let digest = template.digest();
        let agent = self.images.agent_digest().await?;
        if let Some(cached) = self.cache.get(&digest).await.map_err(store_error)?
            && cached.manifest.agent != Some(agent)
        {
            // Its agent speaks another protocol than this orgo: build anew.
            let theirs = cached
                .manifest
                .agent
                .map_or("none recorded".to_owned(), |d| format!("`{d}`"));
            log(BuildEvent::Status(format!(
                "the stored snapshot `{}` runs another guest agent ({theirs}) than this orgo's (`{agent}`): building it again",
                cached.digest
            )));
            self.cache
                .forget(&digest, &cached.digest)
                .await
                .map_err(store_error)?;
        }
        let mut failed = None;
        let mut scratch = None;
        let build = async {
            match self.snapshot(template, log, &mut scratch).await {
                Ok(artifacts) => Ok(artifacts),
                Err(error) => {
                    let failure = BuildFailure {
                        message: crate::ErrorChain(&error).to_string(),
                        log: match &error {
                            RuntimeError::Build(step) => step.output.clone(),
                            _ => String::new(),
                        },
                    };
                    failed = Some(error);
                    Err(failure)
                }
            }
        };
        let outcome = match lease {
            Some(id) => self.cache.lease_or_build(id, &digest, || build).await,
            None => self.cache.get_or_build(&digest, || build).await,
        };
        // What the store did not take in: logs, sockets, a failed build's files.
        if let Some(dir) = scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        match outcome {
            Ok(built) => Ok(built),
            // Ours: the typed error, with the step and its output.
            Err(StoreError::BuildFailed { .. }) if failed.is_some() => {
                Err(failed.expect("checked by the guard"))
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// Boots the base image, runs the template's steps, snapshots the VM;
    /// the files are in a scratch directory (named in `scratch_dir` for
    /// the caller to remove once the store has taken them).
    async fn snapshot(
        &self,
        template: &Template,
        log: BuildLog<'_>,
        scratch_dir: &mut Option<PathBuf>,
    ) -> Result<SnapshotArtifacts, RuntimeError> {
        let started = Instant::now();
        let flavor = self.backends.flavor(&self.images, &self.store, log).await?;
        let (image_digest, image) = if crate::desktop::plan(template).is_some() {
            self.images.desktop(log).await?
        } else {
            self.images.get(log).await?
        };
        let paths = self.images.paths(&image)?;
        let shape = build_shape(template);
        let scratch = self.store.scratch_dir().await.map_err(store_error)?;
        *scratch_dir = Some(scratch.clone());
        // The layer names the root file system by its place relative to
        // the layer once stored, so that the golden disk restores on any
        // host (see `crate::fleet`); a link in the scratch makes that name
        // resolve here meanwhile.
        let rootfs = image
            .blobs
            .get("rootfs.ext4")
            .ok_or_else(|| RuntimeError::MissingRole {
                what: "base image",
                role: "rootfs.ext4".into(),
            })?
            .digest;
        let layer_dir = scratch.join("layer");
        std::fs::create_dir(&layer_dir).map_err(crate::error::io("create", &layer_dir))?;
        crate::fleet::link_backing_dir(&self.store, &layer_dir, &rootfs)?;
        let disk = layer_dir.join("disk.qcow2");
        create_overlay(
            &crate::fleet::relative_backing(&rootfs),
            DiskFormat::Raw,
            &disk,
            Some(disk_bytes(shape.disk_gb)?),
        )
        .await?;
        let id = format!("build-{}", &template.digest().hex()[..12]);
        // No policy: steps reach package registries, never the host's or
        // the metadata addresses (see the network's design in `net`).
        let net = self
            .net
            .attach(&id, &scratch.join("run"), crate::net::Spec::default())
            .await?;
        let mut config = VmConfig {
            id: id.clone(),
            cpus: shape.cpu,
            memory_mib: shape.memory_mib,
            kernel: self.images.blob(&image, flavor.kernel)?,
            initrd: Some(paths.initrd.clone()),
            cmdline: flavor.cmdline.clone(),
            disk: Disk {
                path: disk.clone(),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            memory_file: Some(scratch.join("memory")),
            network: flavor.network.clone(),
            run_dir: scratch.join("run"),
        };
        if let Some(net) = &net {
            config.network = net.network();
            if !config.cmdline.contains(USER_NET_IP) {
                config.cmdline = format!("{} {USER_NET_IP}", config.cmdline);
            }
        }
        log(BuildEvent::Status(format!(
            "booting the builder VM ({} vCPU, {} MiB, {})",
            shape.cpu, shape.memory_mib, flavor.kind
        )));
        let vm = self.backends.vmm(flavor.kind)?.boot(&config).await?;
        let agent = guest::connect(vm.agent_endpoint(), BOOT_TIMEOUT).await?;
        log(BuildEvent::Status(format!(
            "the guest is up after {:.1} s",
            started.elapsed().as_secs_f64()
        )));
        let mut env = plan::environment(template.env(), &BTreeMap::new());
        if let Some(certs) = &self.guest_ca_certs {
            trust_cas(&agent, certs).await?;
            for var in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"] {
                env.entry(var.to_owned())
                    .or_insert_with(|| SYSTEM_CA_BUNDLE.to_owned());
            }
        }
        call(&agent, move |a| a.set_env(env, QUICK)).await?;
        guest::grow_root_filesystem(&agent).await?;
        let mut steps = plan::build_steps(template);
        steps.extend(plan::pre_snapshot(template));
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            log(BuildEvent::Step {
                field: step.field.clone(),
                index: i + 1,
                total,
            });
            run_step(&agent, step, None, log).await?;
        }
        // Nothing may be in flight on the channel when the state is saved.
        drop(agent);
        log(BuildEvent::Status("capturing the golden snapshot".into()));
        vm.pause().await?;
        let mut files = vm.snapshot(&scratch.join("snapshot")).await?;
        vm.shutdown().await?;
        if let Some(net) = net {
            net.teardown().await;
        }
        files.insert("disk".into(), disk);
        scan_for_secrets(&self.store.root().join(crate::VAULT_FILE), &files, log).await?;
        let kernel = image
            .blobs
            .get(flavor.kernel)
            .map(|b| b.digest)
            .ok_or_else(|| RuntimeError::MissingRole {
                what: "base image",
                role: flavor.kernel.to_owned(),
            })?;
        log(BuildEvent::Status(format!(
            "storing the snapshot ({:.1} s so far)",
            started.elapsed().as_secs_f64()
        )));
        Ok(SnapshotArtifacts {
            files,
            hardware: shape,
            backend: flavor.kind.as_str().to_owned(),
            base_image: image_digest,
            agent: Some(self.images.agent_digest().await?),
            kernel,
        })
    }
}

/// Fails if a snapshot file holds the value of a secret of the vault
/// `vault_file` or of the `ORGO_SECRET_*` environment (see
/// [`crate::secret_scan`]): a build has no secrets, so one found was
/// written into it by a step.
async fn scan_for_secrets(
    vault_file: &std::path::Path,
    files: &BTreeMap<String, PathBuf>,
    log: BuildLog<'_>,
) -> Result<(), RuntimeError> {
    let vault = crate::Vault::load_here(vault_file).map_err(RuntimeError::Vault)?;
    let needles = crate::SecretScan::new(vault.entries());
    drop(vault);
    if !needles.skipped().is_empty() {
        log(BuildEvent::Status(format!(
            "not looking for {} in the snapshot: shorter than {} bytes",
            needles
                .skipped()
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            crate::MIN_SECRET_BYTES
        )));
    }
    let started = Instant::now();
    let scanned = crate::snapshot_scan::refuse_secrets(needles, files).await;
    log(BuildEvent::Status(format!(
        "scanned the snapshot for secrets in {:.2} s",
        started.elapsed().as_secs_f64()
    )));
    scanned
}

/// Debian's bundle of the CAs it trusts, which `update-ca-certificates`
/// writes (Node and uv read their own lists unless pointed at it).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// At most this many certificate files, each at most this large.
const MAX_CA_FILES: usize = 64;
const MAX_CA_BYTES: u64 = 1 << 20;

/// Installs the PEM certificates of `path` (a file, or the `*.crt` and
/// `*.pem` files of a directory) into the guest's trust store.
async fn trust_cas(
    agent: &std::sync::Arc<crate::agent::AgentClient>,
    path: &std::path::Path,
) -> Result<(), RuntimeError> {
    let failed = |reason: String| RuntimeError::GuestCa {
        path: path.to_owned(),
        reason,
    };
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| failed(e.to_string()))?;
        for entry in entries {
            let file = entry.map_err(|e| failed(e.to_string()))?.path();
            if file.extension().is_some_and(|e| e == "crt" || e == "pem") {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    if files.is_empty() || files.len() > MAX_CA_FILES {
        return Err(failed(format!(
            "`{}` certificate files; between 1 and {MAX_CA_FILES} are taken",
            files.len()
        )));
    }
    for (i, file) in files.iter().enumerate() {
        let size = std::fs::metadata(file)
            .map_err(|e| failed(format!("`{}`: {e}", file.display())))?
            .len();
        if size > MAX_CA_BYTES {
            return Err(failed(format!(
                "`{}` is over {MAX_CA_BYTES} bytes",
                file.display()
            )));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| failed(format!("`{}`: {e}", file.display())))?;
        // Certificates only: a key in the directory must never reach a
        // snapshot.
        let pem = certificates(&text)
            .map_err(|reason| failed(format!("`{}` {reason}", file.display())))?
            .into_bytes();
        let to = format!("/usr/local/share/ca-certificates/orgo-host-{i}.crt");
        call(agent, move |a| {
            a.write_file(&to, &pem, Some(0o644), None, None, QUICK)
        })
        .await?;
    }
    // It rehashes every certificate: slow under TCG.
    let out = call(agent, |a| {
        a.exec(
            orgo_agent_protocol::Exec::shell("update-ca-certificates"),
            std::time::Duration::from_secs(600),
        )
    })
    .await?;
    if !out.status.success() {
        return Err(failed(format!(
            "`update-ca-certificates` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The `CERTIFICATE` blocks of PEM `text`; an error if it holds a private
/// key, or no certificate.
fn certificates(text: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or("holds a broken PEM block")?
            + 11;
        let label = &block[11..label_end];
        if label.contains("PRIVATE KEY") {
            return Err("holds a private key; give certificates only");
        }
        let end_marker = format!("-----END {label}-----");
        let end = block.find(&end_marker).ok_or("holds a broken PEM block")? + end_marker.len();
        if label == "CERTIFICATE" || label == "TRUSTED CERTIFICATE" {
            out.push_str(&block[..end]);
            out.push('\n');
        }
        rest = &block[end..];
    }
    if out.is_empty() {
        return Err("holds no PEM certificate");
    }
    Ok(out)
}

/// The hardware a template builds with: its own, else the defaults; the
/// disk at least the base image's 2 GiB.
fn build_shape(template: &Template) -> HardwareShape {
    let hw = template.hardware();
    HardwareShape {
        cpu: hw.cpu.unwrap_or(plan::DEFAULT_CPUS),
        memory_mib: hw
            .ram_gb
            .map_or(plan::DEFAULT_MEMORY_MIB, |gb| u64::from(gb) * 1024),
        disk_gb: hw
            .disk_gb
            .unwrap_or(0)
            .max(crate::image::ROOTFS_MIB.div_ceil(1024)),
    }
}

#[cfg(test)]
mod tests {
    use super::certificates;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

    #[test]
    fn only_certificates_are_taken_and_a_key_is_refused() {
        assert_eq!(certificates(CERT), Ok(format!("{CERT}\n")));
        let bundle =
            format!("junk\n{CERT}\n-----BEGIN X509 CRL-----\nx\n-----END X509 CRL-----\n{CERT}");
        assert_eq!(certificates(&bundle), Ok(format!("{CERT}\n{CERT}\n")));
        for key in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let with_key = format!("{CERT}\n-----BEGIN {key}-----\nk\n-----END {key}-----\n");
            assert!(certificates(&with_key).is_err(), "{key}");
        }
        assert!(certificates("no pem here").is_err());
        assert!(certificates("-----BEGIN CERTIFICATE-----\nMIIB").is_err());
    }
}
