//! A template's `egress_policy` compiled for matching: names against the
//! domain rules, addresses against the IP/CIDR rules and the always-denied set.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use orgo_template::{EgressMode, EgressPolicy, EgressRule};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::denied::{DeniedSet, DenyKind, embedded_ipv4};
use crate::name::normalize_name;

/// How the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only what the rules name is reachable.
    Allow,
    /// Everything but what the rules name is reachable.
    Block,
}

/// An egress policy compiled for matching. [`Policy::open`] is the policy
/// of a computer without `egress_policy`: everything but the always-denied
/// set.
///
/// ```
/// use orgo_net::{DeniedSet, Policy, Verdict};
///
/// let template = orgo_template::Template::from_yaml(
///     "api_version: orgo.ai/v1\nname: x@1.0.0\n\
///      egress_policy: { mode: allow, rules: ['*.github.com', pypi.org, 10.0.0.0/8] }\n",
/// )?;
/// let policy = Policy::from_template(template.egress_policy().expect("set"));
/// assert!(policy.allows_name("api.github.com"));
/// assert!(!policy.allows_name("github.com"));
/// assert!(policy.allows_name("PyPI.org."));
/// assert!(!policy.allows_name("evil.com"));
///
/// let denied = DeniedSet::new([]);
/// assert_eq!(policy.check_addr("10.1.2.3".parse()?, &denied), Verdict::Allowed);
/// assert!(policy.check_addr("192.0.2.1".parse()?, &denied).is_denied());
/// assert!(policy.check_addr("169.254.169.254".parse()?, &denied).is_denied());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `None`: no `egress_policy`.
    mode: Option<Mode>,
    rules: Vec<EgressRule>,
    exact: BTreeSet<String>,
    wildcards: Vec<String>,
    nets: Vec<IpNet>,
}

/// The outcome of an address check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The address may be dialled.
    Allowed,
    /// In the always-denied set, and no rule names it explicitly.
    AlwaysDenied {
        /// The range that holds it.
        range: IpNet,
        /// What the range is.
        kind: DenyKind,
    },
    /// `mode: allow` and no IP/CIDR rule holds it.
    NotAllowed,
    /// `mode: block` and a rule holds it.
    Blocked(IpNet),
    /// An IPv6 address, and no rule allows it.
    Ipv6,
}

impl Verdict {
    /// Whether the address may not be dialled.
    pub fn is_denied(&self) -> bool {
        *self != Verdict::Allowed
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed => f.write_str("allowed"),
            Verdict::AlwaysDenied { range, kind } => {
                write!(f, "always denied: {kind} (`{range}`)")
            }
            Verdict::NotAllowed => f.write_str("no egress rule allows this address"),
            Verdict::Blocked(net) => write!(f, "blocked by the egress rule `{net}`"),
            Verdict::Ipv6 => f.write_str("IPv6 is denied unless an egress rule allows it"),
        }
    }
}

impl Policy {
    /// No `egress_policy`: every name, and every address outside the
    /// always-denied set.
    pub fn open() -> Policy {
        Policy::compile(None, Vec::new())
    }

    /// The template's policy.
    pub fn from_template(policy: &EgressPolicy) -> Policy {
        let mode = match policy.mode {
            EgressMode::Block => Mode::Block,
            // `EgressMode` may grow: an unknown mode is the stricter one.
            _ => Mode::Allow,
        };
        Policy::compile(Some(mode), policy.rules.clone())
    }

    /// `mode` with these rules.
    pub fn new(mode: Mode, rules: Vec<EgressRule>) -> Policy {
        Policy::compile(Some(mode), rules)
    }

    /// A template's `egress_policy`, or [`Policy::open`] without one.
    pub fn for_template(policy: Option<&EgressPolicy>) -> Policy {
        policy.map_or_else(Policy::open, Policy::from_template)
    }

    fn compile(mode: Option<Mode>, rules: Vec<EgressRule>) -> Policy {
        let mut exact = BTreeSet::new();
        let mut wildcards = Vec::new();
        let mut nets = Vec::new();
        for rule in &rules {
            match rule {
                EgressRule::Domain(name) => {
                    exact.insert(name.clone());
                }
                EgressRule::Wildcard(suffix) => wildcards.push(format!(".{suffix}")),
                EgressRule::Ip(ip) => nets.push(IpNet::from(*ip)),
                EgressRule::Cidr(net) => nets.push(*net),
                // `EgressRule` may grow: an unknown rule matches nothing.
                _ => {}
            }
        }
        Policy {
            mode,
            rules,
            exact,
            wildcards,
            nets,
        }
    }

    /// The mode, or `None` for [`Policy::open`].
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The rules, in the template's order.
    pub fn rules(&self) -> &[EgressRule] {
        &self.rules
    }

    /// Whether a domain rule matches `name` (any case, with or without the
    /// final dot): an exact domain, or a `*.` pattern of which it is a
    /// strict subdomain. A text that is not a DNS name matches nothing.
    pub fn matches_name(&self, name: &str) -> bool {
        let Some(name) = normalize_name(name) else {
            return false;
        };
        self.exact.contains(&*name)
            || self
                .wildcards
                .iter()
                .any(|suffix| name.ends_with(&**suffix))
    }

    /// Whether the policy lets the computer use `name` (resolve it, and
    /// reach it through the proxy): every name without a policy, the
    /// matching names in `mode: allow`, the others in `mode: block`. A text
    /// that is not a DNS name is never allowed.
    pub fn allows_name(&self, name: &str) -> bool {
        if normalize_name(name).is_none() {
            return false;
        }
        match self.mode {
            None => true,
            Some(Mode::Allow) => self.matches_name(name),
            Some(Mode::Block) => !self.matches_name(name),
        }
    }

    /// The check of an address the computer dials without a name (raw TCP
    /// and UDP, or the proxy when the connection names no host): the
    /// always-denied set and `denied`, then the IP/CIDR rules (`mode:
    /// allow`: one must hold it; `mode: block`: none may).
    pub fn check_addr(&self, addr: IpAddr, denied: &DeniedSet) -> Verdict {
        self.check(addr, denied, false)
    }

    /// The check of an address a name the policy allows resolved to (on the
    /// host): the always-denied set and `denied`, and in `mode: block` the
    /// IP/CIDR rules. In `mode: allow` the name decided.
    pub fn check_resolved(&self, addr: IpAddr, denied: &DeniedSet) -> Verdict {
        self.check(addr, denied, true)
    }

    fn check(&self, addr: IpAddr, denied: &DeniedSet, named: bool) -> Verdict {
        // An IPv4-mapped address is that IPv4 address.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            IpAddr::V4(_) => addr,
        };
        let allow_nets: &[IpNet] = if self.mode == Some(Mode::Allow) {
            &self.nets
        } else {
            &[]
        };
        if let Some((range, kind)) = denied.find(addr) {
            // A rule names the range explicitly: it holds the address and
            // lies inside the denied range.
            let named_explicitly = allow_nets
                .iter()
                .any(|net| net.contains(&addr) && range.contains(net));
            if !named_explicitly {
                return Verdict::AlwaysDenied { range, kind };
            }
        }
        if let Some(Mode::Block) = self.mode
            && let Some(net) = self.blocking_net(addr)
        {
            return Verdict::Blocked(net);
        }
        let in_rules = allow_nets.iter().any(|net| net.contains(&addr));
        if addr.is_ipv6() && !in_rules {
            return Verdict::Ipv6;
        }
        if self.mode == Some(Mode::Allow) && !named && !in_rules {
            return Verdict::NotAllowed;
        }
        Verdict::Allowed
    }

    /// The block rule holding `addr`, or the IPv4 address it carries.
    fn blocking_net(&self, addr: IpAddr) -> Option<IpNet> {
        let carried = match addr {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .find(|net| net.contains(&addr) || carried.is_some_and(|v4| net.contains(&v4)))
            .copied()
    }

    /// The IP/CIDR rules split by family, for the runtime's nftables sets
    /// (what they mean follows [`Policy::mode`]).
    pub fn nft_cidrs(&self) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in &self.nets {
            match net {
                IpNet::V4(net) => v4.push(*net),
                IpNet::V6(net) => v6.push(*net),
            }
        }
        (v4, v6)
    }
}

/// The policy as `netd.json` holds it: `null` (no policy) or
/// `{"mode": "allow"|"block", "rules": ["*.github.com", ...]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    mode: Mode,
    rules: Vec<String>,
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.mode {
            None => serializer.serialize_none(),
            Some(mode) => serializer.serialize_some(&PolicyFile {
                mode,
                rules: self.rules.iter().map(ToString::to_string).collect(),
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Policy, D::Error> {
        let Some(file) = Option::<PolicyFile>::deserialize(deserializer)? else {
            return Ok(Policy::open());
        };
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, text) in file.rules.iter().enumerate() {
            let rule = text
                .parse::<EgressRule>()
                .map_err(|e| serde::de::Error::custom(format_args!("`policy.rules[{i}]`: {e}")))?;
            rules.push(rule);
        }
        Ok(Policy::new(file.mode, rules))
    }
}
