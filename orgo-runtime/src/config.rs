//! How a runtime is set up: [`RuntimeConfig`], in code or from the
//! environment ([`RuntimeConfig::from_env`], which the CLI and the Python
//! bindings both use).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::RuntimeError;
use crate::net::Ipv4Net;
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
    /// Use QEMU's user-mode network even where the host network works
    /// (root or `CAP_NET_ADMIN`): templates with `egress_policy`,
    /// `apps[].ports` or `hardware.bandwidth_mbps` are then refused, as on
    /// a rootless host. See the network's design in the crate docs.
    pub user_mode_network: bool,
    /// The resolver each computer's `orgo-netd` forwards the names its
    /// policy allows to; `None` (the default): the first `nameserver` of
    /// the host's `/etc/resolv.conf`.
    pub dns_upstream: Option<SocketAddr>,
    /// The host address public ports (`apps[].ports[]` with `public: true`)
    /// are published on: `127.0.0.1` by default (this host only; set
    /// `0.0.0.0` to publish to the network). Other ports are always on
    /// `127.0.0.1`.
    pub publish_address: IpAddr,
    /// The range each VM's namespace takes a /30 of
    /// (`10.200.0.0/16` by default).
    pub net_range: Ipv4Net,
    /// The `orgo-netd` binary; `None` (the default): the one embedded in
    /// this library, written out under `<home>/netd/`.
    pub netd: Option<PathBuf>,
    /// The store a fleet of hosts shares (refs, locks and blobs; the
    /// `orgo-fleet` crate opens one), with this host's store in `home` as
    /// its cache; `None` (the default): this host's store alone.
    pub shared_store: Option<SharedStore>,
    /// In a fleet, the most bytes of blobs this host's store keeps: after a
    /// fetch brings blobs in, the least recently used are removed until the
    /// store is within it, except what this host's computers use, base
    /// images, blobs under 1 MiB, blobs used in the last 10 minutes and
    /// blobs the shared store lacks; `None` (the default): no cap (the
    /// README's "A fleet of hosts" tells more). Refused without a
    /// [`shared_store`](Self::shared_store), where the host's store is the
    /// only copy of its blobs.
    pub cache_max: Option<u64>,
}

/// A fleet's shared store (see [`RuntimeConfig::shared_store`]).
#[derive(Clone)]
pub struct SharedStore(pub Arc<dyn orgo_snapshot::Store>);

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedStore").field(&self.0).finish()
    }
}

/// Two are equal when they are the very same store.
impl PartialEq for SharedStore {
    fn eq(&self, other: &SharedStore) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The variables that configure a fleet's shared store, which
/// [`RuntimeConfig::from_env`] refuses: it opens no shared store (the CLI
/// and `orgo serve` do, with the `orgo-fleet` crate).
pub const FLEET_VARIABLES: [&str; 2] = ["ORGO_STORE_URL", "ORGO_REGISTRY_URL"];

/// Which VMM builds and runs computers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// QEMU ([`RuntimeConfig::qemu`]): KVM where it works, TCG otherwise;
    /// guests get the host network (a namespace per VM, as root) or QEMU's
    /// user-mode NAT.
    Qemu,
    /// Cloud Hypervisor, for hosts with KVM: the binary. Its guests get a
    /// tap in a namespace of their own as root (the host network); without
    /// root they have no network device, so build steps that download
    /// (apt, pip, npm, http files) need QEMU there.
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
            user_mode_network: false,
            dns_upstream: None,
            publish_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            net_range: Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16),
            netd: None,
            shared_store: None,
            cache_max: None,
        }
    }

    /// The resolver netd asks: [`dns_upstream`](Self::dns_upstream), else
    /// the host's first nameserver, else `127.0.0.1:53`.
    pub(crate) fn upstream_resolver(&self) -> SocketAddr {
        self.dns_upstream.unwrap_or_else(|| {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let ip =
                crate::net::resolv_conf_upstream(&text).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            SocketAddr::new(ip, 53)
        })
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
    /// | `ORGO_USER_NET` (`1`) | [`user_mode_network`](Self::user_mode_network) |
    /// | `ORGO_DNS_UPSTREAM` (`IP` or `IP:PORT`) | [`dns_upstream`](Self::dns_upstream) |
    /// | `ORGO_PUBLISH_ADDRESS` (an IP) | [`publish_address`](Self::publish_address) |
    /// | `ORGO_NET_RANGE` (an IPv4 CIDR, at most /30) | [`net_range`](Self::net_range) |
    /// | `ORGO_NETD` (the binary) | [`netd`](Self::netd) |
    /// | `ORGO_CACHE_MAX` (bytes, or with a binary `K`, `M`, `G` or `T` suffix: `50G`; in a fleet only) | [`cache_max`](Self::cache_max) |
    ///
    /// `home`, when given, wins over the environment's. A fleet's
    /// variables ([`FLEET_VARIABLES`]) are refused: this opens no shared
    /// store, and a host that ran on its own store alone while one was asked
    /// for would build what the fleet has and share nothing. So is
    /// `ORGO_CACHE_MAX` outside a fleet ([`from_env_in_fleet`](Self::from_env_in_fleet)
    /// takes it): there the host's store is no cache but the only copy.
    pub fn from_env(home: Option<PathBuf>) -> Result<RuntimeConfig, RuntimeError> {
        Self::from_vars(home, env_var, None)
    }

    /// As [`from_env`](Self::from_env), in the fleet whose store is
    /// `shared` (opened from [`FLEET_VARIABLES`] by the caller).
    pub fn from_env_in_fleet(
        home: Option<PathBuf>,
        shared: SharedStore,
    ) -> Result<RuntimeConfig, RuntimeError> {
        Self::from_vars(home, env_var, Some(shared))
    }

    fn from_vars(
        home: Option<PathBuf>,
        var: impl Fn(&str) -> Option<String>,
        shared_store: Option<SharedStore>,
    ) -> Result<RuntimeConfig, RuntimeError> {
        if shared_store.is_none()
            && let Some(name) = FLEET_VARIABLES.into_iter().find(|n| var(n).is_some())
        {
            return Err(RuntimeError::Env {
                name,
                value: "(set)".into(),
                expected: "unset: a fleet's shared store is opened by `orgo` and `orgo serve` \
                           (the orgo-fleet crate), not by this library",
            });
        }
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
        config.user_mode_network = match var("ORGO_USER_NET").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(RuntimeError::Env {
                    name: "ORGO_USER_NET",
                    value: other.to_owned(),
                    expected: "`1` or `0`",
                });
            }
        };
        if let Some(value) = var("ORGO_DNS_UPSTREAM") {
            let parsed = value
                .parse::<SocketAddr>()
                .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            config.dns_upstream = Some(parsed.map_err(|_| RuntimeError::Env {
                name: "ORGO_DNS_UPSTREAM",
                value: value.clone(),
                expected: "an IP address, or `IP:PORT`",
            })?);
        }
        if let Some(value) = var("ORGO_PUBLISH_ADDRESS") {
            config.publish_address = value.parse().map_err(|_| RuntimeError::Env {
                name: "ORGO_PUBLISH_ADDRESS",
                value: value.clone(),
                expected: "an IP address",
            })?;
        }
        if let Some(value) = var("ORGO_NET_RANGE") {
            config.net_range = value
                .parse::<Ipv4Net>()
                .ok()
                .filter(|r| r.prefix_len() <= 30)
                .ok_or_else(|| RuntimeError::Env {
                    name: "ORGO_NET_RANGE",
                    value: value.clone(),
                    expected: "an IPv4 network of at least 4 addresses (`10.200.0.0/16`)",
                })?;
        }
        config.netd = var("ORGO_NETD").map(PathBuf::from);
        if let Some(value) = var("ORGO_CACHE_MAX") {
            if shared_store.is_none() {
                return Err(RuntimeError::Env {
                    name: "ORGO_CACHE_MAX",
                    value,
                    expected: "unset outside a fleet: this host's store is then the only copy \
                               of its blobs, and a cap would remove them",
                });
            }
            config.cache_max = Some(parse_size(&value).ok_or_else(|| RuntimeError::Env {
                name: "ORGO_CACHE_MAX",
                value: value.clone(),
                expected: "a size in bytes above 0, or with a binary `K`, `M`, `G` or `T` \
                           suffix (`50G`)",
            })?);
        }
        config.shared_store = shared_store;
        Ok(config)
    }
}

/// A size above 0: a count of bytes, or one followed by `K`, `M`, `G` or
/// `T` (either case) in binary units (`2G` is 2 GiB); `None` for anything
/// else, or one past `u64::MAX`.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&text[..text.len() - 1], 10),
        b'M' => (&text[..text.len() - 1], 20),
        b'G' => (&text[..text.len() - 1], 30),
        b'T' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let count: u64 = digits.parse().ok()?;
    count.checked_mul(1 << shift).filter(|&bytes| bytes > 0)
}

/// A variable of the environment; empty counts as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned())
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
        RuntimeConfig::from_vars(None, |name| vars.get(name).cloned(), None)
    }

    #[test]
    fn a_fleet_store_is_refused_without_one_opened() {
        for name in FLEET_VARIABLES {
            let error = config(&[("ORGO_HOME", "/h"), (name, "s3://bucket/secret-prefix")])
                .expect_err("refused");
            let text = error.to_string();
            assert!(text.contains(name), "{text}");
            assert!(
                !text.contains("secret-prefix"),
                "the value is not echoed: {text}"
            );
        }
        let shared = SharedStore(Arc::new(orgo_snapshot::MemoryStore::new()));
        let vars = BTreeMap::from([("ORGO_HOME", "/h"), ("ORGO_STORE_URL", "s3://b/p")]);
        let config = RuntimeConfig::from_vars(
            None,
            |name| vars.get(name).map(|v| (*v).to_owned()),
            Some(shared.clone()),
        )
        .expect("a fleet's runtime takes them");
        assert_eq!(config.shared_store, Some(shared));
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
            ("ORGO_USER_NET", "1"),
            ("ORGO_DNS_UPSTREAM", "10.99.0.53:5353"),
            ("ORGO_PUBLISH_ADDRESS", "0.0.0.0"),
            ("ORGO_NET_RANGE", "10.201.0.0/20"),
            ("ORGO_NETD", "/n"),
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
        assert!(c.user_mode_network);
        assert_eq!(
            c.dns_upstream,
            Some("10.99.0.53:5353".parse().expect("valid"))
        );
        assert_eq!(
            c.publish_address,
            "0.0.0.0".parse::<IpAddr>().expect("valid")
        );
        assert_eq!(c.net_range.to_string(), "10.201.0.0/20");
        assert_eq!(c.netd, Some(PathBuf::from("/n")));
        let bare = config(&[("HOME", "/u"), ("ORGO_DNS_UPSTREAM", "10.1.1.1")]).expect("valid");
        assert_eq!(
            bare.dns_upstream,
            Some("10.1.1.1:53".parse().expect("valid"))
        );
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
        let given = RuntimeConfig::from_vars(
            Some("/g".into()),
            |name| (name == "ORGO_HOME").then(|| "/e".to_owned()),
            None,
        )
        .expect("valid");
        assert_eq!(given.home, PathBuf::from("/g"));
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [
            ("ORGO_ACCEL", "hvf"),
            ("ORGO_WARM_POOL", "many"),
            ("ORGO_USER_NET", "yes"),
            ("ORGO_DNS_UPSTREAM", "resolver"),
            ("ORGO_PUBLISH_ADDRESS", "localhost"),
            ("ORGO_NET_RANGE", "10.0.0.0/31"),
        ] {
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
    fn cache_sizes_are_bytes_or_binary_units() {
        for (text, bytes) in [
            ("1", Some(1)),
            ("1048576", Some(1 << 20)),
            ("4K", Some(4 << 10)),
            ("5M", Some(5 << 20)),
            ("50G", Some(50 << 30)),
            ("50g", Some(50 << 30)),
            ("2T", Some(2 << 40)),
            ("007k", Some(7 << 10)),
            ("18446744073709551615", Some(u64::MAX)),
            ("16777215T", Some(16_777_215 << 40)),
            ("16777216T", None),
            ("18446744073709551616", None),
            ("0", None),
            ("0G", None),
            ("", None),
            ("G", None),
            ("1.5G", None),
            ("-1", None),
            ("+5", None),
            ("5 G", None),
            (" 5", None),
            ("5GiB", None),
            ("5GB", None),
            ("5P", None),
            ("5B", None),
            ("ten", None),
        ] {
            assert_eq!(parse_size(text), bytes, "`{text}`");
        }
    }

    #[test]
    fn a_cache_cap_is_taken_in_a_fleet_only() {
        let shared = SharedStore(Arc::new(orgo_snapshot::MemoryStore::new()));
        let in_fleet = |value: &str| {
            let vars = BTreeMap::from([("ORGO_HOME", "/h"), ("ORGO_CACHE_MAX", value)]);
            RuntimeConfig::from_vars(
                None,
                |name| vars.get(name).map(|v| (*v).to_owned()),
                Some(shared.clone()),
            )
        };
        for (value, cap) in [("20G", 20 << 30), ("1000000", 1_000_000)] {
            let config = in_fleet(value).expect("valid");
            assert_eq!(config.cache_max, Some(cap), "{value}");
        }
        for value in ["20 GB", "0", "lots"] {
            let error = in_fleet(value).expect_err("invalid");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("`ORGO_CACHE_MAX` is `{value}`")),
                "{error}"
            );
        }
        let alone = config(&[("ORGO_HOME", "/h"), ("ORGO_CACHE_MAX", "20G")]).expect_err("refused");
        let text = alone.to_string();
        assert!(
            text.starts_with("`ORGO_CACHE_MAX` is `20G`; expected unset outside a fleet"),
            "{text}"
        );
        let unset = config(&[("ORGO_HOME", "/h")]).expect("valid");
        assert_eq!(unset.cache_max, None);
    }

    #[test]
    fn defaults_are_qemu_probed_embedded_agent() {
        let c = config(&[("HOME", "/u")]).expect("valid");
        assert_eq!(c.backend, Backend::Qemu);
        assert_eq!((c.agent, c.accel, c.warm_pool), (None, None, 0));
    }
}
