//! The always-denied set: address ranges no computer reaches unless a policy
//! rule names them explicitly, and the host's own addresses.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address is in a [`DeniedSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyKind {
    /// A fixed range: loopback, link-local (the cloud metadata address),
    /// "this network", multicast, reserved.
    Always(&'static str),
    /// One of the host's own addresses.
    Host,
    /// A range the runtime added: the computers' range, or one it was told to deny.
    Extra,
}

impl fmt::Display for DenyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyKind::Always(what) => write!(f, "a {what} address"),
            DenyKind::Host => f.write_str("an address of the host"),
            DenyKind::Extra => f.write_str("in a range the runtime denies"),
        }
    }
}

/// The fixed always-denied IPv4 ranges, with what each one is.
const ALWAYS_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this-network"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local (metadata)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved or broadcast"),
];

/// The fixed always-denied IPv6 ranges. IPv6 forms that carry an IPv4
/// address are checked as that address (see [`embedded_ipv4`]).
const ALWAYS_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// The fixed always-denied IPv4 ranges (for the runtime's nftables sets):
/// `0.0.0.0/8`, `127.0.0.0/8`, `169.254.0.0/16`, `224.0.0.0/4`, `240.0.0.0/4`.
pub fn always_denied_v4() -> Vec<Ipv4Net> {
    ALWAYS_V4
        .iter()
        .map(|&(addr, prefix, _)| Ipv4Net::new(addr, prefix).expect("a valid prefix"))
        .collect()
}

/// The fixed always-denied IPv6 ranges: `::/128`, `::1/128`, `fe80::/10`, `ff00::/8`.
pub fn always_denied_v6() -> Vec<Ipv6Net> {
    ALWAYS_V6
        .iter()
        .map(|&(addr, prefix, _)| Ipv6Net::new(addr, prefix).expect("a valid prefix"))
        .collect()
}

/// The IPv4 address an IPv6 address carries, in the forms that reach IPv4
/// hosts: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`
/// (deprecated; not `::` nor `::1`), NAT64 `64:ff9b::a.b.c.d` (RFC 6052)
/// and 6to4 `2002:AABB:CCDD::/48`.
///
/// ```
/// use std::net::Ipv4Addr;
/// use orgo_net::embedded_ipv4;
///
/// let carried = |text: &str| embedded_ipv4(text.parse().unwrap());
/// assert_eq!(carried("::ffff:169.254.169.254"), Some(Ipv4Addr::new(169, 254, 169, 254)));
/// assert_eq!(carried("64:ff9b::7f00:1"), Some(Ipv4Addr::LOCALHOST));
/// assert_eq!(carried("2002:7f00:1::1"), Some(Ipv4Addr::LOCALHOST));
/// assert_eq!(carried("2001:db8::1"), None);
/// ```
pub fn embedded_ipv4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(addr);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let seg = addr.segments();
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Some(v4);
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low32);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::from(
            (u32::from(seg[1]) << 16) | u32::from(seg[2]),
        ));
    }
    None
}

/// The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215), whose IPv4
/// placement varies: denied whole, as the always-denied set cannot see the
/// address it carries.
fn is_local_nat64(addr: Ipv6Addr) -> bool {
    let seg = addr.segments();
    seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1
}

/// The ranges no computer reaches unless a policy rule names them: the
/// fixed ranges, the host's own addresses and the extra ones the runtime
/// gives (the computers' range, its own deny list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedSet {
    ranges: Vec<(IpNet, DenyKind)>,
}

impl DeniedSet {
    /// The fixed ranges and `extra`, without the host's addresses.
    pub fn new(extra: impl IntoIterator<Item = IpNet>) -> DeniedSet {
        let mut ranges: Vec<(IpNet, DenyKind)> = ALWAYS_V4
            .iter()
            .map(|&(addr, prefix, what)| {
                let net = Ipv4Net::new(addr, prefix).expect("a valid prefix");
                (IpNet::V4(net), DenyKind::Always(what))
            })
            .chain(ALWAYS_V6.iter().map(|&(addr, prefix, what)| {
                let net = Ipv6Net::new(addr, prefix).expect("a valid prefix");
                (IpNet::V6(net), DenyKind::Always(what))
            }))
            .collect();
        ranges.extend(extra.into_iter().map(|net| (net.trunc(), DenyKind::Extra)));
        DeniedSet { ranges }
    }

    /// Adds each address as a single-address range of the host.
    pub fn with_host_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> DeniedSet {
        self.ranges.extend(
            addrs
                .into_iter()
                .map(|ip| (IpNet::from(ip), DenyKind::Host)),
        );
        self
    }

    /// The fixed ranges, `extra` and every address of the host's interfaces
    /// ([`host_addresses`]).
    pub fn for_host(extra: impl IntoIterator<Item = IpNet>) -> io::Result<DeniedSet> {
        Ok(DeniedSet::new(extra).with_host_addresses(host_addresses()?))
    }

    /// The first range holding `addr`, as the range and why it is denied.
    /// An IPv6 address carrying an IPv4 one ([`embedded_ipv4`]) is looked
    /// up as that IPv4 address too; the local-use NAT64 prefix is denied whole.
    pub fn find(&self, addr: IpAddr) -> Option<(IpNet, DenyKind)> {
        let direct = self.ranges.iter().find(|(net, _)| net.contains(&addr));
        if let Some(&found) = direct {
            return Some(found);
        }
        let IpAddr::V6(v6) = addr else { return None };
        if is_local_nat64(v6) {
            let net = Ipv6Net::new(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
                .expect("a valid prefix");
            return Some((IpNet::V6(net), DenyKind::Always("local-use NAT64")));
        }
        let v4 = IpAddr::V4(embedded_ipv4(v6)?);
        self.ranges
            .iter()
            .find(|(net, _)| net.contains(&v4))
            .copied()
    }

    /// Every range, in the order they are checked.
    pub fn ranges(&self) -> impl Iterator<Item = (IpNet, DenyKind)> + '_ {
        self.ranges.iter().copied()
    }
}

/// Every address on the host's interfaces (`getifaddrs`), IPv4 and IPv6,
/// sorted and deduplicated.
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(address) = ifaddr.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
