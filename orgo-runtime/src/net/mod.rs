//! The network of the VMs this runtime starts.
//!
//! # Design
//!
//! **A namespace per VM.** On a host where this process has root (or
//! `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`) and `ip` and `nft`, every VM (build
//! VMs, parked pool VMs, launched computers) gets a network namespace of
//! its own, `orgo-<id>`, and its VMM runs inside it. There:
//!
//! - `tap0`, the guest's NIC, with the gateway's `10.0.2.2/24` and the
//!   resolver's `10.0.2.3/32` and the MAC of QEMU's user-mode gateway: the
//!   guest keeps the address plan it has under QEMU's user-mode network
//!   (`10.0.2.15`, MAC `52:54:00:12:34:56`), so snapshots restore
//!   unchanged and clones of one snapshot, each in its own namespace, never
//!   see each other;
//! - `veth0`, whose peer `vo-<12 hex>` is in the host namespace: each VM
//!   takes a *slot* N of the computers' range (`10.200.0.0/16` unless
//!   [`RuntimeConfig::net_range`](crate::RuntimeConfig::net_range) says
//!   otherwise), the host end `.1` and the namespace end `.2` of its N-th
//!   /30; the namespace routes through the host, which masquerades the range
//!   (one shared table `inet orgo`, which also keeps the veths from reaching
//!   the host itself or each other);
//! - the table `inet orgo` of the namespace: DNS (to any address) goes to
//!   the VM's `orgo-netd` resolver on `10.0.2.3`, TCP 80 and 443 to its
//!   proxy (which reads the TLS SNI or HTTP `Host`, checks the name against
//!   the policy, resolves it on the host and dials the address it checked);
//!   any other traffic is forwarded only to addresses the policy's IP/CIDR
//!   rules allow, never to the always-denied set (loopback, `0.0.0.0/8`,
//!   link-local `169.254.0.0/16` with the cloud metadata address, multicast,
//!   the host's own addresses, the computers' range) unless an `allow` rule
//!   lies inside it. IPv6 is dropped unless an `allow` rule names it (and
//!   the namespace has no IPv6 uplink: such a rule is accepted and reaches
//!   nothing yet). The guest, root inside, holds none of this.
//! - `hardware.bandwidth_mbps`: a token bucket on the tap's egress (to the
//!   guest) and a policer on its ingress (from the guest).
//!
//! Each VM's `orgo-netd` runs in the host namespace (its sockets are made
//! inside the VM's), from its configuration file `netd.json` in the VM's
//! run directory; its control socket forwards `apps[].ports` (public ones
//! on [`RuntimeConfig::publish_address`](crate::RuntimeConfig::publish_address),
//! the others on `127.0.0.1`) and turns learning on. It resolves names
//! through [`RuntimeConfig::dns_upstream`](crate::RuntimeConfig::dns_upstream).
//!
//! **Builds** run with no policy: steps reach the internet (package
//! registries), through the same proxy and resolver, never the always-denied
//! set (the host's private and metadata addresses). A template's
//! `egress_policy` applies to the computers launched from it.
//!
//! **The pool.** A parked VM gets its namespace, firewall and netd when it
//! is parked; a launch from the pool only asks its netd to forward ports
//! (and to learn).
//!
//! **Cleanup.** Slots are claimed with `flock` on `/run/orgo/net/slot-N.lock`
//! (host-wide, as namespaces are), held by the VM's netd for as long as it
//! runs. A stop deletes the host link (synchronously), the namespace and
//! netd. A sweep (`orgo store gc`, and every `Runtime::open`) kills the
//! netd of orphaned computers, and deletes every namespace recorded in a
//! slot that no netd holds any more (its VM died with a `kill -9` or a
//! host crash).
//!
//! **Without root** (or with
//! [`RuntimeConfig::user_mode_network`](crate::RuntimeConfig::user_mode_network)),
//! QEMU's user-mode network is the fallback: no host setup, and no
//! enforcement (it also maps the gateway onto the host's loopback), so any
//! template with `egress_policy`, `apps[].ports` or `hardware.bandwidth_mbps`
//! is refused there, naming the field and what the host lacks. Cloud
//! Hypervisor guests have no network there.

mod host;
mod netd;
pub(crate) mod plan;
mod slot;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use orgo_template::Template;
use tokio::process::Child;
use tokio::sync::OnceCell;

use self::plan::{AddrRules, Names, Net4, NsPlan, Slot};
use crate::error::RuntimeError;
use crate::vmm::Network;

pub(crate) use self::host::resolv_conf_upstream;
pub(crate) use self::netd::{ForwardPort, Proto};
pub use self::plan::Net4 as Ipv4Net;

/// How this runtime gives VMs a network.
#[derive(Debug)]
pub(crate) enum Net {
    /// A namespace per VM.
    Host(HostNet),
    /// QEMU's user-mode network; why (for refusals).
    User(String),
}

/// What [`Net::new`] takes from the runtime's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) user_mode_network: bool,
    pub(crate) netd: Option<PathBuf>,
    pub(crate) home: PathBuf,
    pub(crate) range: Net4,
    pub(crate) dns_upstream: SocketAddr,
}

/// What a VM's network is made with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spec<'a> {
    pub(crate) template: Option<&'a Template>,
    pub(crate) learn: bool,
}

/// The namespace-per-VM network of one runtime.
#[derive(Debug)]
pub(crate) struct HostNet {
    range: Net4,
    dns_upstream: SocketAddr,
    netd: PathBuf,
    /// The host's addresses, once the host table is in place.
    prepared: OnceCell<Vec<Net4>>,
}

impl Net {
    /// The network the runtime's configuration asks for and this host
    /// allows.
    pub(crate) fn new(config: Settings) -> Net {
        if config.user_mode_network {
            return Net::User(
                "is off: the runtime is configured for QEMU's user-mode network (`ORGO_USER_NET`)"
                    .into(),
            );
        }
        if let Err(why) = host::capable() {
            return Net::User(why);
        }
        let netd = match &config.netd {
            Some(path) => path.clone(),
            None => match crate::embedded::netd_binary(&config.home) {
                Ok(path) => path,
                Err(e) => {
                    return Net::User(format!("is unavailable: cannot write out `orgo-netd`: {e}"));
                }
            },
        };
        Net::Host(HostNet {
            range: config.range,
            dns_upstream: config.dns_upstream,
            netd,
            prepared: OnceCell::new(),
        })
    }

    /// Why templates with network fields are refused here, if they are.
    pub(crate) fn lacking(&self) -> Option<&str> {
        match self {
            Net::Host(_) => None,
            Net::User(why) => Some(why),
        }
    }

    /// Sets up VM `id`'s network (run directory `run_dir`); `None` under
    /// the user-mode network.
    pub(crate) async fn attach(
        &self,
        id: &str,
        run_dir: &Path,
        spec: Spec<'_>,
    ) -> Result<Option<Attached>, RuntimeError> {
        match self {
            Net::Host(host) => host.attach(id, run_dir, spec).await.map(Some),
            Net::User(_) => Ok(None),
        }
    }

    /// Removes what is left of VM `id`'s network (its VMM is gone), run
    /// directory `run_dir`: its netd, its host link and its namespace.
    pub(crate) async fn teardown(&self, id: &str, run_dir: &Path) {
        if let Net::Host(_) = self {
            teardown(id, run_dir).await;
        }
    }

    /// Deletes the namespaces whose VMs are gone (see the module docs);
    /// returns their names.
    pub(crate) async fn sweep(&self) -> Vec<String> {
        if let Net::Host(_) = self {
            sweep().await
        } else {
            Vec::new()
        }
    }
}

impl HostNet {
    async fn attach(
        &self,
        id: &str,
        run_dir: &Path,
        spec: Spec<'_>,
    ) -> Result<Attached, RuntimeError> {
        let range = self.range;
        let host_addrs = self
            .prepared
            .get_or_try_init(|| async {
                host::prepare_host(range).await?;
                host::host_addresses().await
            })
            .await?;
        // Before the slot names it: a sweep takes a slot whose directory
        // is missing for a dead VM's.
        std::fs::create_dir_all(run_dir).map_err(crate::error::io("create", run_dir))?;
        let names = Names::of(id);
        let claimed = slot::claim(
            Slot::count(range),
            &slot::Holder {
                netns: names.netns.clone(),
                run_dir: run_dir.to_owned(),
            },
        )?;
        let template = spec.template;
        let policy = orgo_net::Policy::for_template(template.and_then(Template::egress_policy));
        let mut denied = host_addrs.clone();
        if let IpAddr::V4(v4) = self.dns_upstream.ip() {
            // The upstream is the host's to ask, not the guest's.
            denied.push(Net4::new(v4, 32));
        }
        let plan = NsPlan {
            names: names.clone(),
            slot: claimed.slot,
            range,
            denied: denied.clone(),
            rules: AddrRules::of(&policy),
            learn: spec.learn,
            bandwidth_mbps: template.and_then(|t| t.hardware().bandwidth_mbps),
        };
        let made = async {
            host::create(&plan).await?;
            let mut denied: Vec<orgo_net::ipnet::IpNet> =
                denied.iter().map(|n| n.to_ipnet()).collect();
            denied.push(range.to_ipnet());
            let config = orgo_net::NetdConfig {
                netns: host::netns_path(&names.netns),
                proxy_port: plan::PROXY_PORT,
                dns: SocketAddr::new(plan::DNS.into(), 53),
                dns_upstream: self.dns_upstream,
                policy,
                denied,
                learn: spec.learn,
                learn_file: netd::learn_path(run_dir),
                control: netd::control_path(run_dir),
            };
            netd::spawn(&self.netd, run_dir, &config, claimed.file).await
        }
        .await;
        match made {
            Ok(child) => Ok(Attached {
                names,
                netd: Some(child),
            }),
            Err(error) => {
                host::destroy(&plan).await;
                Err(error)
            }
        }
    }
}

/// A VM's network, set up: its namespace and its netd. Dropped, it is
/// removed (netd killed, namespace deleted) unless
/// [detached](Attached::detach) or [torn down](Attached::teardown).
#[derive(Debug)]
pub(crate) struct Attached {
    names: Names,
    netd: Option<Child>,
}

/// The NIC of VM `id` in the network it has already (a restart's new VM).
pub(crate) fn kept_network(id: &str) -> Network {
    Network::Tap {
        name: plan::TAP.to_owned(),
        mac: plan::GUEST_MAC.to_owned(),
        netns: Some(host::netns_path(&Names::of(id).netns)),
    }
}

impl Attached {
    /// The NIC the VMM gives the guest.
    pub(crate) fn network(&self) -> Network {
        Network::Tap {
            name: plan::TAP.to_owned(),
            mac: plan::GUEST_MAC.to_owned(),
            netns: Some(host::netns_path(&self.names.netns)),
        }
    }

    /// Removes it (the VM's VMM is gone): the host link, the namespace,
    /// then netd (which frees the slot).
    pub(crate) async fn teardown(mut self) {
        host::destroy_names(&self.names).await;
        if let Some(mut child) = self.netd.take() {
            let _ = child.kill().await;
        }
        self.names.netns.clear();
    }

    /// Leaves it in place (the computer outlives this process).
    pub(crate) fn detach(mut self) {
        if let Some(child) = self.netd.take() {
            // Not killed on drop: it serves the computer on.
            std::mem::forget(child);
        }
        self.names.netns.clear();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.names.netns.is_empty() {
            return;
        }
        // Blocking: this may run where no async runtime does.
        for args in [
            vec!["link", "del", self.names.veth.as_str()],
            vec!["netns", "del", self.names.netns.as_str()],
        ] {
            let _ = std::process::Command::new("ip")
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        // Its drop kills netd, freeing the slot.
        self.netd = None;
    }
}

/// Removes VM `id`'s network: the host link, the namespace, then its netd
/// (which frees the slot).
async fn teardown(id: &str, run_dir: &Path) {
    if id.is_empty() {
        return;
    }
    host::destroy_names(&Names::of(id)).await;
    kill_netd(run_dir);
}

/// Kills the netd started on `run_dir`'s configuration.
fn kill_netd(run_dir: &Path) {
    let marker = netd::config_path(run_dir)
        .as_os_str()
        .as_encoded_bytes()
        .to_vec();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            crate::process::kill_if_started_with(pid, std::slice::from_ref(&marker), &[]);
        }
    }
}

/// See [`Net::sweep`]: the namespaces of slots nobody holds (their netd
/// died), and of slots whose VM's run directory is gone (its computer was
/// removed while its netd ran on).
async fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    let existing = host::namespaces();
    for holder in slot::held() {
        if !holder.run_dir.as_os_str().is_empty() && !holder.run_dir.exists() {
            if let Some(id) = Names::id_of(&holder.netns) {
                host::destroy_names(&Names::of(id)).await;
            }
            kill_netd(&holder.run_dir);
        }
    }
    for holder in slot::abandoned() {
        if let Some(id) = Names::id_of(&holder.netns)
            && existing.contains(&holder.netns)
        {
            host::destroy_names(&Names::of(id)).await;
            removed.push(holder.netns);
        }
    }
    removed
}

/// Enables learning in VM `id`'s namespace and netd (a VM parked without).
pub(crate) async fn start_learning(id: &str, run_dir: &Path) -> Result<(), RuntimeError> {
    let netns = Names::of(id).netns;
    host::run(
        "ip",
        &["netns", "exec", &netns, "nft", "-f", "-"],
        Some(&plan::learn_rules()),
    )
    .await?;
    netd::learn(&netd::control_path(run_dir)).await
}

/// Forwards `ports` through VM `run_dir`'s netd.
pub(crate) async fn forward(
    run_dir: &Path,
    ports: &[ForwardPort],
) -> Result<Result<Vec<SocketAddr>, (String, Option<usize>)>, RuntimeError> {
    netd::forward(&netd::control_path(run_dir), ports).await
}

/// What VM `id` (run directory `run_dir`) reached while learning: netd's
/// names and addresses, and the bare addresses of the namespace's
/// `learned4` set.
pub(crate) async fn learned(id: &str, run_dir: &Path) -> Result<EgressLearned, RuntimeError> {
    let mut learned = orgo_net::Learned::read(&netd::learn_path(run_dir))
        .map_err(netd::net_error("read what the computer reached"))?;
    for (addr, _, _) in host::learned(&Names::of(id).netns).await? {
        learned.add_addr(IpAddr::V4(addr));
    }
    Ok(EgressLearned {
        names: learned.names().map(str::to_owned).collect(),
        addresses: learned.addrs().collect(),
        policy: learned.minimal_policy(),
    })
}

/// What a computer launched with
/// [`LaunchOptions::egress_learn`](crate::LaunchOptions::egress_learn)
/// reached, and the smallest `egress_policy` that allows exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressLearned {
    /// The names it used (TLS SNI, HTTP `Host`, DNS), sorted.
    pub names: Vec<String>,
    /// The addresses it reached without a name, sorted.
    pub addresses: Vec<IpAddr>,
    /// `egress_policy: { mode: allow, rules: [...] }` as YAML, ready to
    /// paste into the template.
    pub policy: String,
}
