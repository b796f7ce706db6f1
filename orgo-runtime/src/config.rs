//! How a runtime is set up: [`RuntimeConfig`], in code or from the
//! environment ([`RuntimeConfig::from_env`], which the CLI and the Python
//! bindings both use).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::RuntimeError;
use crate::vmm::{Accel, Vmm};

/// How the runtime is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// The orgo home: the store, the computers, the probe cache.
    pub home: PathBuf,
    /// The static `orgo-agent` the base image is built with; `None` (the
    /// default): the agent embedded in this library, installed under
    /// `<home>/agent/` when a base image is built.
    pub agent: Option<PathBuf>,
    /// The VMM (QEMU by default).
    pub backend: Backend,
    /// QEMU's accelerator; `None`: probe once (see [`Runtime::accel`](crate::Runtime::accel)).
    pub accel: Option<Accel>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// How many computers of a launched template to keep restored and
    /// parked, per snapshot and shape, for the next launches (see
    /// [`Runtime::prewarm`](crate::Runtime::prewarm)); 0 (the default) keeps none.
    pub warm_pool: usize,
    /// The region this host serves, if any: a template's
    /// `hardware.region` must name it (a template that names a region
    /// cannot run on a host without one).
    pub region: Option<String>,
    /// CA certificates (PEM: a file, or a directory of `*.crt` and `*.pem`
    /// files) that builder VMs trust besides Debian's: for build hosts
    /// behind a TLS-intercepting proxy, where `apt`, `pip`, `npm` and
    /// `curl` in the guest would otherwise refuse the proxy's
    /// certificates. They are installed before the first step, so they are
    /// in the snapshot too (not in the digest: like the network, they are
    /// the host's).
    pub guest_ca_certs: Option<PathBuf>,
}

/// Which VMM builds and runs computers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// QEMU ([`RuntimeConfig::qemu`]): KVM where it works, TCG otherwise;
    /// guests reach the network through QEMU's user-mode NAT.
    Qemu,
    /// Cloud Hypervisor, for hosts with KVM: the binary. Its guests have
    /// no network device yet (a tap device and NAT are the host's to set
    /// up), so build steps that download (apt, pip, npm, http files) need
    /// QEMU for now.
    CloudHypervisor(PathBuf),
    /// Bring your own VMM (a test double, say): it builds snapshots of its
    /// [`kind`](Vmm::kind) and restores those; snapshots of another kind are
    /// refused. Builds boot the image's `vmlinuz` with
    /// [`KERNEL_CMDLINE`](crate::KERNEL_CMDLINE) and
    /// [`Network::User`](crate::Network::User), and so do its clones.
    Custom(Arc<dyn Vmm>),
}

/// Two backends are equal when they name the same VMM: the same binary, or
/// the very same custom VMM (`dyn Vmm` has no equality of its own).
impl PartialEq for Backend {
    fn eq(&self, other: &Backend) -> bool {
        match (self, other) {
            (Backend::Qemu, Backend::Qemu) => true,
            (Backend::CloudHypervisor(a), Backend::CloudHypervisor(b)) => a == b,
            (Backend::Custom(a), Backend::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Backend {}

impl RuntimeConfig {
    /// The defaults for `home`: the embedded agent, QEMU from `PATH`, the
    /// accelerator probed, no warm pool, no region.
    pub fn new(home: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            home: home.into(),
            agent: None,
            backend: Backend::Qemu,
            accel: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            warm_pool: 0,
            region: None,
            guest_ca_certs: None,
        }
    }

    /// The configuration the environment describes (empty variables count
    /// as unset):
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `ORGO_HOME`, else `$XDG_DATA_HOME/orgo`, else `~/.local/share/orgo` | [`home`](Self::home) |
    /// | `ORGO_AGENT` | [`agent`](Self::agent) |
    /// | `ORGO_ACCEL` (`kvm` or `tcg`) | [`accel`](Self::accel) |
    /// | `ORGO_QEMU` | [`qemu`](Self::qemu) |
    /// | `ORGO_CLOUD_HYPERVISOR` (the binary) | [`backend`](Self::backend) |
    /// | `ORGO_WARM_POOL` (a count) | [`warm_pool`](Self::warm_pool) |
    /// | `ORGO_REGION` | [`region`](Self::region) |
    /// | `ORGO_GUEST_CA_CERTS` (a PEM file or a directory) | [`guest_ca_certs`](Self::guest_ca_certs) |
    ///
    /// `home`, when given, wins over the environment's.
    pub fn from_env(home: Option<PathBuf>) -> Result<RuntimeConfig, RuntimeError> {
        Self::from_vars(home, |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string_lossy().into_owned())
        })
    }

    fn from_vars(
        home: Option<PathBuf>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<RuntimeConfig, RuntimeError> {
        let home = home
            .or_else(|| var("ORGO_HOME").map(PathBuf::from))
            .or_else(|| var("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("orgo")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/share/orgo")))
            .ok_or(RuntimeError::Env {
                name: "ORGO_HOME",
                value: String::new(),
                expected: "a directory (or `HOME` set)",
            })?;
        let mut config = RuntimeConfig::new(home);
        config.agent = var("ORGO_AGENT").map(PathBuf::from);
        config.accel = match var("ORGO_ACCEL").as_deref() {
            None => None,
            Some("kvm") => Some(Accel::Kvm),
            Some("tcg") => Some(Accel::Tcg),
            Some(other) => {
                return Err(RuntimeError::Env {
                    name: "ORGO_ACCEL",
                    value: other.to_owned(),
                    expected: "`kvm` or `tcg`",
                });
            }
        };
        if let Some(qemu) = var("ORGO_QEMU") {
            config.qemu = qemu.into();
        }
        if let Some(binary) = var("ORGO_CLOUD_HYPERVISOR") {
            config.backend = Backend::CloudHypervisor(binary.into());
        }
        if let Some(count) = var("ORGO_WARM_POOL") {
            config.warm_pool = count.parse().map_err(|_| RuntimeError::Env {
                name: "ORGO_WARM_POOL",
                value: count.clone(),
                expected: "a count of computers",
            })?;
        }
        config.region = var("ORGO_REGION");
        config.guest_ca_certs = var("ORGO_GUEST_CA_CERTS").map(PathBuf::from);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<RuntimeConfig, RuntimeError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RuntimeConfig::from_vars(None, |name| vars.get(name).cloned())
    }

    #[test]
    fn every_variable_reaches_its_field() {
        let c = config(&[
            ("ORGO_HOME", "/h"),
            ("ORGO_AGENT", "/a"),
            ("ORGO_ACCEL", "tcg"),
            ("ORGO_QEMU", "/q"),
            ("ORGO_CLOUD_HYPERVISOR", "/ch"),
            ("ORGO_WARM_POOL", "2"),
            ("ORGO_REGION", "iad"),
            ("ORGO_GUEST_CA_CERTS", "/c"),
        ])
        .expect("valid");
        assert_eq!(c.home, PathBuf::from("/h"));
        assert_eq!(c.agent, Some(PathBuf::from("/a")));
        assert_eq!(c.accel, Some(Accel::Tcg));
        assert_eq!(c.qemu, PathBuf::from("/q"));
        assert_eq!(c.backend, Backend::CloudHypervisor("/ch".into()));
        assert_eq!(c.warm_pool, 2);
        assert_eq!(c.region.as_deref(), Some("iad"));
        assert_eq!(c.guest_ca_certs, Some(PathBuf::from("/c")));
    }

    #[test]
    fn the_home_falls_back_to_xdg_then_home() {
        let xdg = config(&[("XDG_DATA_HOME", "/x"), ("HOME", "/u")]).expect("valid");
        assert_eq!(xdg.home, PathBuf::from("/x/orgo"));
        let home = config(&[("HOME", "/u")]).expect("valid");
        assert_eq!(home.home, PathBuf::from("/u/.local/share/orgo"));
        assert!(matches!(
            config(&[]),
            Err(RuntimeError::Env {
                name: "ORGO_HOME",
                ..
            })
        ));
        let given = RuntimeConfig::from_vars(Some("/g".into()), |name| {
            (name == "ORGO_HOME").then(|| "/e".to_owned())
        })
        .expect("valid");
        assert_eq!(given.home, PathBuf::from("/g"));
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [("ORGO_ACCEL", "hvf"), ("ORGO_WARM_POOL", "many")] {
            let error = config(&[("HOME", "/u"), (name, value)]).expect_err("invalid");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("`{name}` is `{value}`")),
                "{error}"
            );
        }
    }

    #[test]
    fn defaults_are_qemu_probed_embedded_agent() {
        let c = config(&[("HOME", "/u")]).expect("valid");
        assert_eq!(c.backend, Backend::Qemu);
        assert_eq!((c.agent, c.accel, c.warm_pool), (None, None, 0));
    }
}
