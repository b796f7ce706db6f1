//! The host side of a VM's network: `ip`, `nft`, `tc` and `sysctl` run on
//! [plans](super::plan), whether this host can do it at all, and what it
//! has to deny (its own addresses).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::plan::{self, Net4, NsPlan};
use crate::error::RuntimeError;

/// `/run/netns/<name>`: where `ip netns` keeps a namespace.
pub(crate) fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `program args`, feeding it `stdin`; an error with what it printed
/// if it fails.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, RuntimeError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
        binary: program.to_owned(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| RuntimeError::Spawn {
            binary: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(RuntimeError::Net {
            op: format!("{program} {}", args.join(" ")),
            message: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may set up namespaces, links and firewalls: root,
/// or `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` in its effective set (`ip netns`
/// mounts), with `ip`, `nft` and `nsenter` installed. `Err` says what is
/// lacking.
pub(crate) fn capable() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    if caps & (NET_ADMIN | SYS_ADMIN) != NET_ADMIN | SYS_ADMIN {
        return Err(
            "needs root or CAP_NET_ADMIN (with CAP_SYS_ADMIN for network namespaces), which this process lacks"
                .into(),
        );
    }
    for tool in ["ip", "nft", "nsenter"] {
        if !in_path(tool) {
            return Err(format!(
                "needs `{tool}` (iproute2, nftables, util-linux), which this host lacks"
            ));
        }
    }
    Ok(())
}

fn in_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// The host's own IPv4 addresses (`ip -o -4 addr`), as /32 networks: a
/// guest may not reach them.
pub(crate) async fn host_addresses() -> Result<Vec<Net4>, RuntimeError> {
    let out = run("ip", &["-o", "-4", "addr", "show"], None).await?;
    Ok(parse_addresses(&out))
}

/// The addresses of `ip -o -4 addr show`'s lines (`2: eth0 inet
/// 192.168.1.10/24 brd ...`).
pub(crate) fn parse_addresses(text: &str) -> Vec<Net4> {
    let mut out: Vec<Net4> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let addr = words.next()?.split('/').next()?;
            addr.parse::<Ipv4Addr>().ok().map(|a| Net4::new(a, 32))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The nameserver a host resolver would ask: the first `nameserver` of
/// `/etc/resolv.conf`.
pub(crate) fn resolv_conf_upstream(text: &str) -> Option<IpAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// Sets up the host namespace once per process: IPv4 forwarding and the
/// shared table `inet orgo` (replaced as a whole: the same for everyone).
pub(crate) async fn prepare_host(range: Net4) -> Result<(), RuntimeError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
        .map_err(crate::error::io("write", "/proc/sys/net/ipv4/ip_forward"))?;
    let script = format!(
        "table inet orgo\ndelete table inet orgo\n{}",
        plan::host_nft_script(range)
    );
    run("nft", &["-f", "-"], Some(&script)).await?;
    Ok(())
}

/// Creates the namespace, links, firewall and rate limits of `plan`.
pub(crate) async fn create(plan: &NsPlan) -> Result<(), RuntimeError> {
    let netns = &plan.names.netns;
    // A leftover of a dead VM of the same id (a build's id is its
    // template's): its slot is free, so nothing of it runs.
    if netns_path(netns).exists() {
        destroy(plan).await;
    }
    run("ip", &["netns", "add", netns], None).await?;
    run("ip", &["-batch", "-"], Some(&plan.host_batch())).await?;
    run(
        "ip",
        &["-n", netns, "-batch", "-"],
        Some(&plan.inner_batch()),
    )
    .await?;
    let script = format!(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=0 >/dev/null && nft -f - <<'ORGO_NFT'\n{}ORGO_NFT\n",
        plan.nft_script()
    );
    run("ip", &["netns", "exec", netns, "sh", "-c", &script], None).await?;
    for args in plan.tc_commands() {
        let mut full: Vec<&str> = vec!["-n", netns];
        full.extend(args.iter().map(String::as_str));
        run("tc", &full, None).await?;
    }
    Ok(())
}

/// Removes what [`create`] made: the host link (synchronously: its address
/// is free once this returns), then the namespace. Best effort.
pub(crate) async fn destroy(plan: &NsPlan) {
    destroy_names(&plan.names).await;
}

/// See [`destroy`].
pub(crate) async fn destroy_names(names: &plan::Names) {
    let _ = run("ip", &["link", "del", &names.veth], None).await;
    let _ = run("ip", &["netns", "del", &names.netns], None).await;
}

/// The namespaces of ours on this host (`/run/netns/orgo-*`).
pub(crate) fn namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| plan::Names::id_of(n).is_some())
        .collect()
}

/// The destinations of the namespace's `learned4` set: `(address,
/// protocol, port)`.
pub(crate) async fn learned(netns: &str) -> Result<Vec<(Ipv4Addr, String, u16)>, RuntimeError> {
    let out = run(
        "ip",
        &[
            "netns", "exec", netns, "nft", "-j", "list", "set", "inet", "orgo", "learned4",
        ],
        None,
    )
    .await?;
    Ok(parse_learned(&out))
}

/// The elements of `nft -j list set`'s answer for a concatenated set
/// (`{"concat": ["1.2.3.4", "tcp", 80]}`), at most [`plan::LEARNED_MAX`].
pub(crate) fn parse_learned(json: &str) -> Vec<(Ipv4Addr, String, u16)> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let sets = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    for item in sets {
        let Some(elems) = item.pointer("/set/elem").and_then(|e| e.as_array()) else {
            continue;
        };
        for elem in elems.iter().take(plan::LEARNED_MAX) {
            // An element with a timeout or counter is wrapped in `elem`.
            let concat = elem
                .pointer("/concat")
                .or_else(|| elem.pointer("/elem/val/concat"));
            let Some(parts) = concat.and_then(|c| c.as_array()) else {
                continue;
            };
            let addr = parts.first().and_then(|a| a.as_str()?.parse().ok());
            let proto = parts.get(1).and_then(|p| p.as_str()).map(str::to_owned);
            let port = parts
                .get(2)
                .and_then(|p| p.as_u64())
                .and_then(|p| u16::try_from(p).ok());
            if let (Some(addr), Some(proto), Some(port)) = (addr, proto, port) {
                out.push((addr, proto, port));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_ip_output() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0    inet 192.168.1.10/24 brd 192.168.1.255 scope global eth0\n";
        let got: Vec<String> = parse_addresses(text).iter().map(Net4::to_string).collect();
        assert_eq!(got, ["127.0.0.1/32", "192.168.1.10/32"]);
    }

    #[test]
    fn the_first_nameserver() {
        let text = "# generated\nsearch x\nnameserver 10.1.2.3\nnameserver 8.8.8.8\n";
        assert_eq!(
            resolv_conf_upstream(text),
            Some("10.1.2.3".parse().expect("valid"))
        );
        assert_eq!(resolv_conf_upstream("search x\n"), None);
    }

    #[test]
    fn learned_elements_of_nft_json() {
        let json = r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"learned4","elem":[{"concat":["10.99.0.10","tcp",9000]},{"concat":["10.99.0.11","udp",9001]},{"concat":["bad","tcp",1]}]}}]}"#;
        assert_eq!(
            parse_learned(json),
            [
                ("10.99.0.10".parse().expect("valid"), "tcp".into(), 9000),
                ("10.99.0.11".parse().expect("valid"), "udp".into(), 9001)
            ]
        );
        assert!(parse_learned("not json").is_empty());
    }
}
