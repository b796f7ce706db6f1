//! Host-enforced egress for orgo computers: the policy matching, the
//! parsers and the daemon (`orgo-netd`) that the runtime runs beside each VM.
//!
//! # What is enforced where
//!
//! Every VM runs in its own network namespace `orgo-<id>` on the host,
//! behind a tap device; the guest is root and hostile, so nothing it does
//! inside can widen its policy. Two things enforce the policy, both outside
//! the guest:
//!
//! - **`orgo-netd`** (this crate's [`Netd`], one process per VM, in the
//!   host's namespace, with sockets in the VM's):
//!   - TCP to ports 80 and 443 is redirected (nftables, in the VM's
//!     namespace) to its **proxy**. The proxy reads the TLS ClientHello's
//!     server name or the HTTP/1 `Host` ([`sniff`], at most 16 KiB within
//!     10 s), decides on that name ([`Policy::allows_name`]), resolves it
//!     **on the host** through the runtime's upstream resolver, checks every
//!     address it gets ([`Policy::check_resolved`]) and dials it itself,
//!     replaying the bytes it read. What the guest's `/etc/hosts` or DNS say,
//!     and which address it dialled, decide nothing. A connection that names
//!     no host (TLS without SNI, not TLS nor HTTP) is checked by the address
//!     it dialled ([`Policy::check_addr`]). A denied HTTP request gets `403`
//!     with a one-line reason; a denied TLS connection is closed.
//!   - DNS (UDP and TCP port 53 to any address is redirected to it): a name
//!     the policy does not allow gets NXDOMAIN, built from the query
//!     ([`dns::nxdomain`]); others are forwarded to the upstream.
//!   - Port forwarding (`apps[].ports` with `public: true`): host listeners
//!     relayed to the guest's port, dialled from inside the namespace.
//!   - Learn mode: each new destination, one JSON line in the learn file
//!     ([`LearnEntry`]); [`Learned::minimal_policy`] turns it into YAML.
//! - **nftables** in the VM's namespace (written by the runtime with
//!   [`Policy::nft_cidrs`], [`always_denied_v4`] and [`always_denied_v6`]):
//!   all other TCP and UDP pass only to addresses the policy's IP/CIDR rules
//!   allow, minus the always-denied set; IPv6 is dropped unless a rule
//!   allows it.
//!
//! # The rules
//!
//! - `api.github.com`: that name exactly; `*.github.com`: any name strictly
//!   below `github.com` (not `github.com` itself); an IP or a CIDR: those
//!   addresses.
//! - `mode: allow`: only what the rules name; `mode: block`: everything
//!   except what they name. No `egress_policy`: everything except the
//!   always-denied set ([`Policy::open`]).
//! - **Domain rules only open ports 80 and 443**, through the proxy, which
//!   is the only place a name can be checked. Raw TCP on other ports, UDP
//!   and anything dialled by address need IP/CIDR rules.
//! - **Always denied**, whatever the mode, unless an IP/CIDR rule of `mode:
//!   allow` lies inside the range (names it explicitly, e.g. `127.0.0.1` or
//!   `169.254.169.254`, not `0.0.0.0/0`): `0.0.0.0/8`, loopback
//!   `127.0.0.0/8` and `::1`, link-local `169.254.0.0/16` (the cloud metadata
//!   address) and `fe80::/10`, multicast, `240.0.0.0/4`, every address of
//!   the host's interfaces ([`host_addresses`]), and the ranges the runtime
//!   adds (the computers' range, so computers never reach each other).
//!   IPv6 forms that carry an IPv4 address (`::ffff:a.b.c.d`, NAT64
//!   `64:ff9b::/96`, 6to4 `2002::/16`, IPv4-compatible `::a.b.c.d`) are
//!   checked as the IPv4 address they carry ([`embedded_ipv4`]).
//! - A name that resolves to any denied address is denied whole (DNS
//!   rebinding to the host or the metadata address gains nothing).
//!
//! # Builds
//!
//! A template's build steps must reach package registries, so a build VM
//! runs with no policy ([`Policy::open`]): open internet minus the
//! always-denied set (never the host's addresses nor the metadata
//! address). The template's `egress_policy` applies to launched computers.
//!
//! # Limits
//!
//! - One decision per connection: later requests on a kept-alive HTTP
//!   connection go to the same server, whatever their `Host`.
//! - Only HTTP/1 and TLS are read; a protocol that speaks first from the
//!   server on port 80/443 waits 10 s, then is checked by address.
//! - TLS Encrypted Client Hello hides the real name: only the outer
//!   (public) name is checked.
//!
//! # Example
//!
//! ```
//! use orgo_net::{DeniedSet, Policy, Sniffed, Target, Verdict, sniff};
//!
//! let template = orgo_template::Template::from_yaml(
//!     "api_version: orgo.ai/v1\nname: x@1.0.0\n\
//!      egress_policy: { mode: allow, rules: ['*.github.com'] }\n",
//! )?;
//! let policy = Policy::for_template(template.egress_policy());
//! let Sniffed::Http(Some(Target::Name(name))) =
//!     sniff(b"GET / HTTP/1.1\r\nHost: api.github.com\r\n\r\n")
//! else {
//!     unreachable!()
//! };
//! assert!(policy.allows_name(&name));
//! let denied = DeniedSet::new(["10.200.0.0/16".parse()?]);
//! assert!(matches!(
//!     policy.check_resolved("10.200.0.6".parse()?, &denied),
//!     Verdict::AlwaysDenied { .. }
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod control;
mod denied;
pub mod dns;
mod dnsd;
mod error;
mod forward;
mod learn;
mod name;
mod netd;
mod netns;
mod policy;
mod proxy;
mod resolve;
mod sniff;

pub use crate::config::NetdConfig;
pub use crate::control::{
    ControlClient, ControlReply, ControlRequest, ForwardPort, MAX_CONTROL_LINE, MAX_FORWARDS, Proto,
};
pub use crate::denied::{
    DeniedSet, DenyKind, always_denied_v4, always_denied_v6, embedded_ipv4, host_addresses,
};
pub use crate::dns::DnsError;
pub use crate::error::NetError;
pub use crate::learn::{LearnEntry, Learned, MAX_LEARN_FILE, MAX_LEARNED, Via};
pub use crate::netd::{GUEST_ADDR, Netd};
pub use crate::policy::{Mode, Policy, Verdict};
pub use crate::sniff::{MAX_SNIFF, Sniffed, Target, sniff};
pub use ipnet;
