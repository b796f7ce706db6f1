//! The network of one VM, as a plan (pure): its slot's addresses, the
//! names of its namespace and links, the `ip` batches, the nftables scripts
//! and the `tc` commands that set it up.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use orgo_template::EgressMode;

/// The guest side's address plan (the one QEMU's user-mode network gives,
/// so snapshots restore unchanged): the gateway, where netd's resolver
/// listens, and the guest.
pub(crate) const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub(crate) const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The tap's own MAC: the one QEMU's user-mode gateway has, which a
/// snapshot's ARP cache may hold.
pub(crate) const GATEWAY_MAC: &str = "52:55:0a:00:02:02";
/// The guest NIC's MAC (QEMU's default).
pub(crate) const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The tap inside every namespace.
pub(crate) const TAP: &str = "tap0";
/// Where the tap's ingress is redirected to be shaped (a bandwidth cap).
pub(crate) const IFB: &str = "ifb0";
/// The namespace's end of its veth pair.
pub(crate) const VETH: &str = "veth0";
/// netd's proxy port inside the namespace (TCP 80 and 443 are redirected
/// to it).
pub(crate) const PROXY_PORT: u16 = 3129;
/// Namespaces and host links start with these.
pub(crate) const NETNS_PREFIX: &str = "orgo-";
pub(crate) const VETH_PREFIX: &str = "vo-";
/// At most this many `learned4` entries.
pub(crate) const LEARNED_MAX: usize = 4096;

/// An IPv4 network, `a.b.c.d/len` (the address is its network's: `10.1.2.3/8`
/// reads as `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net4 {
    pub(crate) addr: Ipv4Addr,
    pub(crate) len: u8,
}

impl Net4 {
    /// `addr/len`, `len` at most 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Net4 {
        let len = len.min(32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Net4 {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        }
    }

    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    /// The network's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `other` lies inside this network.
    pub(crate) fn contains(self, other: Net4) -> bool {
        other.len >= self.len && (u32::from(other.addr) & self.mask()) == u32::from(self.addr)
    }

    /// As `ipnet`'s type.
    pub(crate) fn to_ipnet(self) -> orgo_net::ipnet::IpNet {
        orgo_net::ipnet::IpNet::V4(
            orgo_net::ipnet::Ipv4Net::new(self.addr, self.len)
                .expect("a prefix length of at most 32"),
        )
    }

    /// How many addresses it holds.
    pub(crate) fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }
}

impl std::fmt::Display for Net4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Net4 {
    type Err = String;

    fn from_str(text: &str) -> Result<Net4, String> {
        let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IPv4 network"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{text}`: a prefix length is 0 to 32"))?;
        Ok(Net4::new(addr, len))
    }
}

/// The ranges always denied to a guest (unless a policy rule lies inside
/// one): loopback, "this network", link-local (the cloud metadata
/// address), multicast and the reserved block. The host's addresses and the
/// computers' range are added per host.
pub(crate) fn always_denied_v4() -> Vec<Net4> {
    [
        ("0.0.0.0", 8),
        ("127.0.0.0", 8),
        ("169.254.0.0", 16),
        ("224.0.0.0", 4),
        ("240.0.0.0", 4),
    ]
    .iter()
    .map(|(a, l)| Net4::new(a.parse().expect("a literal address"), *l))
    .collect()
}

/// A VM's slot: the N-th /30 of the computers' range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(pub(crate) u32);

impl Slot {
    /// How many slots `range` holds.
    pub(crate) fn count(range: Net4) -> u32 {
        u32::try_from(range.size() / 4).unwrap_or(u32::MAX)
    }

    /// The host end's address (`.1` of the /30).
    pub(crate) fn host(self, range: Net4) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(range.addr) + self.0 * 4 + 1)
    }

    /// The namespace end's address (`.2` of the /30).
    pub(crate) fn inner(self, range: Net4) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(range.addr) + self.0 * 4 + 2)
    }
}

/// The names of VM `id`'s namespace and host link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `orgo-<id>`.
    pub(crate) netns: String,
    /// `vo-<the id's last 12 characters>` (a link name has at most 15).
    pub(crate) veth: String,
}

impl Names {
    pub(crate) fn of(id: &str) -> Names {
        let tail = &id[id.len().saturating_sub(12)..];
        Names {
            netns: format!("{NETNS_PREFIX}{id}"),
            veth: format!("{VETH_PREFIX}{tail}"),
        }
    }

    /// The VM id a namespace name carries, if it is one of ours.
    pub(crate) fn id_of(netns: &str) -> Option<&str> {
        let id = netns.strip_prefix(NETNS_PREFIX)?;
        let ok = !id.is_empty()
            && id.len() <= 40
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then_some(id)
    }
}

/// A policy, as nftables sees it: the IPv4 and IPv6 networks its rules
/// name (domains are netd's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddrRules {
    pub(crate) mode: Option<EgressMode>,
    pub(crate) v4: Vec<Net4>,
    pub(crate) v6: Vec<String>,
}

impl AddrRules {
    pub(crate) fn of(policy: &orgo_net::Policy) -> AddrRules {
        let mode = match policy.mode() {
            None => return AddrRules::default(),
            Some(orgo_net::Mode::Allow) => EgressMode::Allow,
            Some(orgo_net::Mode::Block) => EgressMode::Block,
        };
        let (v4, v6) = policy.nft_cidrs();
        let mut out = AddrRules {
            mode: Some(mode),
            v4: v4
                .iter()
                .map(|n| Net4::new(n.network(), n.prefix_len()))
                .collect(),
            v6: Vec::new(),
        };
        for net in v6 {
            match net.network().to_ipv4_mapped() {
                // `::ffff:a.b.c.d` is the IPv4 it carries.
                Some(v4) if net.prefix_len() >= 96 => {
                    out.v4.push(Net4::new(v4, net.prefix_len() - 96));
                }
                _ => out.v6.push(net.to_string()),
            }
        }
        out.v4.sort();
        out.v4.dedup();
        out
    }
}

/// What a VM's namespace is set up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NsPlan {
    pub(crate) names: Names,
    pub(crate) slot: Slot,
    pub(crate) range: Net4,
    /// Denied to the guest beyond [`always_denied_v4`]: the host's own
    /// addresses, the computers' range.
    pub(crate) denied: Vec<Net4>,
    pub(crate) rules: AddrRules,
    /// Record new flows' destinations in the `learned4` set.
    pub(crate) learn: bool,
    /// `hardware.bandwidth_mbps`.
    pub(crate) bandwidth_mbps: Option<u64>,
}

impl NsPlan {
    /// The `ip -batch` run in the host namespace: the veth pair, its host
    /// end addressed and up.
    pub(crate) fn host_batch(&self) -> String {
        let Names { netns, veth } = &self.names;
        format!(
            "link add {veth} type veth peer name {VETH} netns {netns}\n\
             addr add {}/30 dev {veth}\n\
             link set {veth} up\n",
            self.slot.host(self.range)
        )
    }

    /// The `ip -n <netns> -batch` run in the namespace: loopback, the veth
    /// end and the default route, the tap with the gateway's and the
    /// resolver's addresses.
    pub(crate) fn inner_batch(&self) -> String {
        format!(
            "link set lo up\n\
             addr add {inner}/30 dev {VETH}\n\
             link set {VETH} up\n\
             route add default via {host}\n\
             tuntap add dev {TAP} mode tap\n\
             link set {TAP} address {GATEWAY_MAC}\n\
             addr add {GATEWAY}/24 dev {TAP}\n\
             addr add {DNS}/32 dev {TAP}\n\
             link set {TAP} up\n{ifb}",
            inner = self.slot.inner(self.range),
            host = self.slot.host(self.range),
            ifb = if self.bandwidth_mbps.is_some_and(|m| m > 0) {
                format!("link add {IFB} type ifb\nlink set {IFB} up\n")
            } else {
                String::new()
            },
        )
    }

    /// The always-denied IPv4 networks, and the policy's networks that lie
    /// inside one of them (named explicitly, so allowed in `allow` mode).
    fn denied_and_exceptions(&self) -> (Vec<Net4>, Vec<Net4>) {
        let mut denied = always_denied_v4();
        denied.extend(self.denied.iter().copied());
        denied.push(self.range);
        let denied = merge(denied);
        let exceptions = match self.rules.mode {
            Some(EgressMode::Allow) => self
                .rules
                .v4
                .iter()
                .copied()
                .filter(|r| denied.iter().any(|d| d.contains(*r)))
                .collect(),
            _ => Vec::new(),
        };
        (denied, exceptions)
    }

    /// The nftables script of the namespace (table `inet orgo`).
    pub(crate) fn nft_script(&self) -> String {
        let (denied, exceptions) = self.denied_and_exceptions();
        let mut s = String::new();
        let set4 = |s: &mut String, name: &str, nets: &[Net4]| {
            let _ = writeln!(s, "  set {name} {{ type ipv4_addr; flags interval;");
            if !nets.is_empty() {
                let list: Vec<String> = nets.iter().map(Net4::to_string).collect();
                let _ = writeln!(s, "    elements = {{ {} }}", list.join(", "));
            }
            s.push_str("  }\n");
        };
        s.push_str("table inet orgo {\n");
        set4(&mut s, "denied4", &denied);
        set4(&mut s, "except4", &exceptions);
        set4(&mut s, "rules4", &merge(self.rules.v4.clone()));
        let _ = writeln!(s, "  set rules6 {{ type ipv6_addr; flags interval;");
        let v6: Vec<&String> = self.rules.v6.iter().filter(|r| v6_net_ok(r)).collect();
        if !v6.is_empty() {
            let list: Vec<&str> = v6.iter().map(|r| r.as_str()).collect();
            let _ = writeln!(s, "    elements = {{ {} }}", list.join(", "));
        }
        s.push_str("  }\n");
        let _ = writeln!(
            s,
            "  set learned4 {{ type ipv4_addr . inet_proto . inet_service; flags dynamic; size {LEARNED_MAX}; }}"
        );
        // DNS to any address goes to netd's resolver; web traffic to its
        // proxy (which reads the name, resolves and dials itself).
        let _ = writeln!(
            s,
            "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
             iifname \"{TAP}\" meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {DNS}:53\n    \
             iifname \"{TAP}\" meta nfproto ipv4 tcp dport {{ 80, 443 }} redirect to :{PROXY_PORT}\n  }}"
        );
        let _ = writeln!(
            s,
            "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
             iifname \"{TAP}\" ct state established,related accept\n    \
             iifname \"{TAP}\" ip daddr {DNS} meta l4proto {{ tcp, udp }} th dport 53 accept\n    \
             iifname \"{TAP}\" tcp dport {PROXY_PORT} accept\n    \
             iifname \"{TAP}\" jump refuse\n    \
             iifname \"{VETH}\" ct state established,related accept\n    \
             iifname \"{VETH}\" drop\n  }}"
        );
        s.push_str(
            "  chain forward {\n    type filter hook forward priority filter; policy drop;\n    \
             ct state established,related accept\n",
        );
        let tap = format!("iifname \"{TAP}\" oifname \"{VETH}\"");
        // What passes is recorded (in learn mode), then accepted.
        let pass = "jump reached";
        match self.rules.mode {
            Some(EgressMode::Block) => {
                let _ = writeln!(s, "    {tap} ip6 daddr @rules6 drop");
            }
            // `allow`, and any mode to come: only what the rules name.
            Some(_) => {
                let _ = writeln!(s, "    {tap} ip6 daddr @rules6 {pass}");
            }
            None => {}
        }
        let _ = writeln!(s, "    iifname \"{TAP}\" meta nfproto ipv6 jump refuse");
        let _ = writeln!(s, "    meta nfproto ipv6 drop");
        let _ = writeln!(s, "    {tap} ip daddr @except4 {pass}");
        let _ = writeln!(s, "    iifname \"{TAP}\" ip daddr @denied4 jump refuse");
        let _ = writeln!(s, "    ip daddr @denied4 drop");
        match self.rules.mode {
            Some(EgressMode::Block) => {
                let _ = writeln!(s, "    {tap} ip daddr @rules4 jump refuse");
                let _ = writeln!(s, "    {tap} {pass}");
            }
            Some(_) => {
                let _ = writeln!(s, "    {tap} ip daddr @rules4 {pass}");
            }
            None => {
                let _ = writeln!(s, "    {tap} {pass}");
            }
        }
        // The guest learns at once that it may not (no hanging connect).
        let _ = writeln!(s, "    iifname \"{TAP}\" jump refuse");
        s.push_str("  }\n");
        s.push_str(
            "  chain refuse {\n    meta l4proto tcp reject with tcp reset\n    \
             reject with icmpx type admin-prohibited\n  }\n",
        );
        s.push_str("  chain reached {\n");
        if self.learn {
            let _ = writeln!(s, "    {LEARN_RULE}");
        }
        s.push_str("    accept\n  }\n");
        let _ = writeln!(
            s,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             oifname \"{VETH}\" masquerade\n  }}"
        );
        s.push_str("}\n");
        s
    }

    /// The `tc` commands (each an argument list) that cap the tap both
    /// ways: a token bucket on its egress (to the guest), and one on the
    /// egress of `ifb0`, where the tap's ingress (from the guest) is
    /// redirected (shaping, not policing: TCP keeps to the rate).
    pub(crate) fn tc_commands(&self) -> Vec<Vec<String>> {
        let Some(mbps) = self.bandwidth_mbps.filter(|m| *m > 0) else {
            return Vec::new();
        };
        // What the cap passes in 20 ms, at least 128 KiB: a virtio NIC's
        // segmentation-offloaded packets reach 64 KiB, and a bucket smaller
        // than a packet never passes it.
        let burst = (mbps * 1_000_000 / 8 / 50).max(128 * 1024);
        let tbf = |dev: &str| {
            format!("qdisc add dev {dev} root tbf rate {mbps}mbit burst {burst} latency 100ms")
        };
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        vec![
            args(&tbf(TAP)),
            args(&tbf(IFB)),
            args(&format!("qdisc add dev {TAP} handle ffff: ingress")),
            args(&format!(
                "filter add dev {TAP} parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev {IFB}"
            )),
        ]
    }
}

/// Records a new flow's destination (a rule of chain `reached`).
const LEARN_RULE: &str =
    "meta l4proto { tcp, udp } ct state new add @learned4 { ip daddr . meta l4proto . th dport }";

/// The nftables commands that start learning in a namespace set up
/// without.
pub(crate) fn learn_rules() -> String {
    format!("insert rule inet orgo reached {LEARN_RULE}\n")
}

/// The host namespace's table `inet orgo` (the same for every VM, loaded
/// once): NAT out of the computers' range, forwarding for the veths, and no
/// way from a veth to the host itself.
pub(crate) fn host_nft_script(range: Net4) -> String {
    format!(
        "table inet orgo {{\n  \
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {range} oifname != \"{VETH_PREFIX}*\" masquerade\n  }}\n  \
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"{VETH_PREFIX}*\" oifname \"{VETH_PREFIX}*\" drop\n    \
         iifname \"{VETH_PREFIX}*\" accept\n    \
         oifname \"{VETH_PREFIX}*\" ct state established,related accept\n    \
         oifname \"{VETH_PREFIX}*\" drop\n  }}\n  \
         chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname \"{VETH_PREFIX}*\" ct state established,related accept\n    \
         iifname \"{VETH_PREFIX}*\" drop\n  }}\n}}\n"
    )
}

/// Whether `rule` is an IPv6 address or network nftables takes.
fn v6_net_ok(rule: &str) -> bool {
    let (addr, len) = rule.split_once('/').unwrap_or((rule, "128"));
    addr.parse::<Ipv6Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
}

/// Networks with the ones inside another dropped (nftables refuses
/// overlapping intervals in one set), sorted.
fn merge(mut nets: Vec<Net4>) -> Vec<Net4> {
    nets.sort_by_key(|n| (n.len, n.addr));
    let mut out: Vec<Net4> = Vec::new();
    for net in nets {
        if !out.iter().any(|o| o.contains(net)) {
            out.push(net);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Net4 {
        "10.200.0.0/16".parse().expect("a network")
    }

    fn plan(policy: Option<&orgo_template::EgressPolicy>) -> NsPlan {
        NsPlan {
            names: Names::of("c-0123456789ab"),
            slot: Slot(3),
            range: range(),
            denied: vec!["192.168.1.10/32".parse().expect("a network")],
            rules: AddrRules::of(&orgo_net::Policy::for_template(policy)),
            learn: false,
            bandwidth_mbps: None,
        }
    }

    fn policy(mode: EgressMode, rules: &[&str]) -> orgo_template::EgressPolicy {
        let yaml = format!(
            "api_version: orgo.ai/v1\nname: t@1.0.0\negress_policy: {{ mode: {}, rules: [{}] }}\n",
            match mode {
                EgressMode::Allow => "allow",
                _ => "block",
            },
            rules
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        orgo_template::Template::from_yaml(&yaml)
            .expect("a valid template")
            .egress_policy()
            .expect("a policy")
            .clone()
    }

    #[test]
    fn slots_are_the_range_in_thirties() {
        assert_eq!(Slot(0).host(range()), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(Slot(0).inner(range()), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(Slot(65).host(range()), Ipv4Addr::new(10, 200, 1, 5));
        assert_eq!(Slot::count(range()), 16384);
    }

    #[test]
    fn names_fit_linux_limits() {
        let n = Names::of("c-0123456789ab");
        assert_eq!(n.netns, "orgo-c-0123456789ab");
        assert_eq!(n.veth, "vo-0123456789ab");
        assert!(n.veth.len() <= 15);
        assert_eq!(Names::id_of(&n.netns), Some("c-0123456789ab"));
        assert_eq!(Names::id_of("orgo-../x"), None);
        assert_eq!(Names::id_of("other"), None);
    }

    #[test]
    fn networks_parse_contain_and_merge() {
        let a: Net4 = "10.1.2.3/8".parse().expect("valid");
        assert_eq!(a.to_string(), "10.0.0.0/8");
        assert!(a.contains("10.9.9.9".parse().expect("valid")));
        assert!(!a.contains("11.0.0.0/8".parse().expect("valid")));
        assert!("1.2.3.4/33".parse::<Net4>().is_err());
        let merged = merge(vec![
            "10.0.0.0/8".parse().expect("valid"),
            "10.1.0.0/16".parse().expect("valid"),
            "1.0.0.0/8".parse().expect("valid"),
        ]);
        assert_eq!(
            merged.iter().map(Net4::to_string).collect::<Vec<_>>(),
            ["1.0.0.0/8", "10.0.0.0/8"]
        );
    }

    #[test]
    fn policies_become_address_rules() {
        let p = policy(
            EgressMode::Allow,
            &[
                "*.github.com",
                "1.2.3.4",
                "10.0.0.0/8",
                "2001:db8::/32",
                "::ffff:5.6.7.8",
            ],
        );
        let rules = AddrRules::of(&orgo_net::Policy::for_template(Some(&p)));
        assert_eq!(
            rules.v4.iter().map(Net4::to_string).collect::<Vec<_>>(),
            ["1.2.3.4/32", "5.6.7.8/32", "10.0.0.0/8"]
        );
        assert_eq!(rules.v6, ["2001:db8::/32"]);
        assert_eq!(
            AddrRules::of(&orgo_net::Policy::for_template(None)),
            AddrRules::default()
        );
    }

    #[test]
    fn the_always_denied_set_yields_only_to_rules_inside_it() {
        let p = policy(EgressMode::Allow, &["169.254.169.254", "0.0.0.0/0"]);
        let (denied, exceptions) = plan(Some(&p)).denied_and_exceptions();
        assert!(denied.contains(&"169.254.0.0/16".parse().expect("valid")));
        assert!(denied.contains(&range()));
        assert_eq!(
            exceptions,
            ["169.254.169.254/32".parse::<Net4>().expect("valid")],
            "a rule naming the whole internet names no denied range"
        );
        let b = policy(EgressMode::Block, &["169.254.169.254"]);
        assert!(plan(Some(&b)).denied_and_exceptions().1.is_empty());
    }

    #[test]
    fn the_nft_script_per_mode() {
        let open = plan(None).nft_script();
        assert!(
            open.contains("iifname \"tap0\" oifname \"veth0\" jump reached"),
            "{open}"
        );
        assert!(!open.contains("add @learned4"), "{open}");
        assert!(open.contains("dnat ip to 10.0.2.3:53"));
        assert!(open.contains("redirect to :3129"));
        assert!(open.contains("192.168.1.10/32"));
        let allow = plan(Some(&policy(EgressMode::Allow, &["10.99.0.0/24"]))).nft_script();
        assert!(allow.contains("ip daddr @rules4 jump reached"), "{allow}");
        assert!(allow.contains("10.99.0.0/24"));
        assert!(
            !allow.contains("oifname \"veth0\" jump reached\n"),
            "{allow}"
        );
        let block = plan(Some(&policy(EgressMode::Block, &["10.99.1.0/24"]))).nft_script();
        assert!(block.contains("ip daddr @rules4 jump refuse"), "{block}");
        let mut learning = plan(None);
        learning.learn = true;
        let learn = learning.nft_script();
        assert!(learn.contains("jump reached"));
        assert!(learn.contains("add @learned4"));
    }

    #[test]
    fn bandwidth_caps_both_ways() {
        assert!(plan(None).tc_commands().is_empty());
        let mut capped = plan(None);
        capped.bandwidth_mbps = Some(20);
        let tc = capped.tc_commands();
        assert_eq!(tc.len(), 4);
        assert!(tc[0].join(" ").contains("dev tap0 root tbf rate 20mbit"));
        assert!(tc[1].join(" ").contains("dev ifb0 root tbf rate 20mbit"));
        assert!(tc[3].join(" ").contains("redirect dev ifb0"));
        assert!(capped.inner_batch().contains("link add ifb0 type ifb"));
        assert!(!plan(None).inner_batch().contains("ifb0"));
    }

    #[test]
    fn batches_name_the_slot() {
        let p = plan(None);
        assert!(
            p.host_batch()
                .contains("addr add 10.200.0.13/30 dev vo-0123456789ab")
        );
        assert!(
            p.inner_batch()
                .contains("route add default via 10.200.0.13")
        );
        assert!(
            p.inner_batch()
                .contains("addr add 10.200.0.14/30 dev veth0")
        );
    }
}
