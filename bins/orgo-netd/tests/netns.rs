//! `orgo-netd` itself, in network namespaces this test creates (see
//! `common/mod.rs` for the picture): real HTTP, HTTPS and DNS from a guest
//! namespace, redirected by nftables to the daemon, which decides, resolves
//! on its side and dials test servers on 10.99.0.0/24. Needs root, as CI has.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use common::{Net, in_ns};
use orgo_net::{ControlClient, ForwardPort, Learned, NetError, Policy, Proto, dns};
use serde_json::json;

/// What a probe must give.
#[derive(Debug)]
enum Expect {
    /// HTTP 200 whose body holds this text.
    Ok(&'static str),
    /// HTTP 403 from the proxy whose reason holds this text.
    Forbidden(&'static str),
    /// curl fails with this exit code (6: not resolved; 35: TLS closed).
    Fails(i32),
}

fn probe(net: &Net, what: &str, args: &[&str], expect: &Expect) {
    let (code, out) = net.curl(args);
    let ok = match expect {
        Expect::Ok(body) => code == 0 && out.ends_with("\n200") && out.contains(body),
        Expect::Forbidden(reason) => {
            code == 0
                && out.ends_with("\n403")
                && out.contains("orgo egress policy: ")
                && out.contains(reason)
        }
        Expect::Fails(expected) => code == *expected,
    };
    assert!(
        ok,
        "{what}: curl {args:?} gave exit {code}:\n{out}\nexpected {expect:?}"
    );
}

const NOT_RESOLVED: i32 = 6;
const TLS_CLOSED: i32 = 35;

#[test]
fn allow_mode_by_name_wildcard_address_and_against_spoofing() {
    use Expect::*;
    let mut net = Net::new();
    let rules = [
        "allowed.test",
        "*.wild.test",
        "10.99.0.4",
        "host.test",
        "meta.test",
        "rebind.test",
    ];
    let netd = net.start_netd(json!({"mode": "allow", "rules": rules}));
    let probes: &[(&str, &[&str], Expect)] = &[
        (
            "exact name, HTTP",
            &["http://allowed.test/"],
            Ok("server=10.99.0.2 host=allowed.test"),
        ),
        (
            "exact name, HTTPS",
            &["https://allowed.test/id"],
            Ok("tls-server=10.99.0.2"),
        ),
        (
            "wildcard, HTTP",
            &["http://www.wild.test/"],
            Ok("server=10.99.0.4 host=www.wild.test"),
        ),
        (
            "wildcard, HTTPS",
            &["https://www.wild.test/id"],
            Ok("tls-server=10.99.0.4"),
        ),
        (
            "the wildcard's own domain: NXDOMAIN",
            &["http://wild.test/"],
            Fails(NOT_RESOLVED),
        ),
        (
            "the wildcard's own domain, dialled by address",
            &["--resolve", "wild.test:80:10.99.0.4", "http://wild.test/"],
            Forbidden("`wild.test` is not allowed"),
        ),
        (
            "a blocked name the guest's /etc/hosts maps to an allowed address",
            &["http://blocked.test/"],
            Forbidden("`blocked.test` is not allowed"),
        ),
        (
            "the same over TLS",
            &["https://blocked.test/id"],
            Fails(TLS_CLOSED),
        ),
        (
            "Host spoofing: a blocked address, an allowed Host",
            &["-H", "Host: allowed.test", "http://10.99.0.3/"],
            Ok("server=10.99.0.2 host=allowed.test"),
        ),
        (
            "Host spoofing: an allowed address, a blocked Host",
            &["-H", "Host: blocked.test", "http://10.99.0.2/"],
            Forbidden("`blocked.test` is not allowed"),
        ),
        (
            "SNI spoofing: a blocked address, an allowed SNI",
            &[
                "--resolve",
                "allowed.test:443:10.99.0.3",
                "https://allowed.test/id",
            ],
            Ok("tls-server=10.99.0.2"),
        ),
        (
            "SNI spoofing: an allowed address, a blocked SNI",
            &[
                "--resolve",
                "other.test:443:10.99.0.2",
                "https://other.test/id",
            ],
            Fails(TLS_CLOSED),
        ),
        (
            "DNS over HTTPS to a blocked host",
            &[
                "-H",
                "accept: application/dns-message",
                "--resolve",
                "doh.test:443:10.99.0.3",
                "https://doh.test/dns-query?dns=AAABAAABAAAAAAAAB2Jsb2NrZWQEdGVzdAAAAQAB",
            ],
            Fails(TLS_CLOSED),
        ),
        (
            "a blocked host's address literal",
            &["http://10.99.0.3/"],
            Forbidden("`10.99.0.3`: no egress rule allows this address"),
        ),
        (
            "an allowed address literal",
            &["http://10.99.0.4/"],
            Ok("server=10.99.0.4 host=10.99.0.4"),
        ),
        (
            "TLS without SNI to a blocked address",
            &["https://10.99.0.3/id"],
            Fails(TLS_CLOSED),
        ),
        (
            "TLS without SNI to an allowed address",
            &["https://10.99.0.4/id"],
            Ok("tls-server=10.99.0.4"),
        ),
        (
            "an allowed name that resolves to the host",
            &["--resolve", "host.test:80:10.99.0.2", "http://host.test/"],
            Forbidden("an address of the host"),
        ),
        (
            "an allowed name that resolves to the metadata address",
            &["--resolve", "meta.test:80:10.99.0.2", "http://meta.test/"],
            Forbidden("link-local (metadata)"),
        ),
        (
            "an allowed name that resolves to loopback",
            &[
                "--resolve",
                "rebind.test:80:10.99.0.2",
                "http://rebind.test/",
            ],
            Forbidden("loopback"),
        ),
        (
            "the host's address as Host",
            &["-H", "Host: 10.99.0.1", "http://10.99.0.2/"],
            Forbidden("an address of the host"),
        ),
        (
            "another computer's address as Host",
            &["-H", "Host: 10.200.0.6", "http://10.99.0.2/"],
            Forbidden("in a range the runtime denies"),
        ),
        (
            "IPv4-mapped loopback as Host",
            &["-H", "Host: [::ffff:127.0.0.1]", "http://10.99.0.2/"],
            Forbidden("loopback"),
        ),
        (
            "NAT64 metadata as Host",
            &["-H", "Host: [64:ff9b::a9fe:a9fe]:80", "http://10.99.0.2/"],
            Forbidden("link-local (metadata)"),
        ),
        (
            "two Host headers",
            &[
                "-H",
                "Host: allowed.test",
                "-H",
                "X: y\r\nHost: blocked.test",
                "http://10.99.0.2/",
            ],
            Forbidden("two HTTP `Host` headers"),
        ),
    ];
    for (what, args, expect) in probes {
        probe(&net, what, args, expect);
    }

    // DNS: to netd's resolver, and to another resolver (redirected).
    let ten_99 = |last| vec![Ipv4Addr::new(10, 99, 0, last)];
    assert_eq!(net.dig("10.0.2.3", "allowed.test", false), (0, ten_99(2)));
    assert_eq!(net.dig("10.0.2.3", "WWW.wild.test.", true), (0, ten_99(4)));
    for server in ["10.0.2.3", "10.99.0.9"] {
        for tcp in [false, true] {
            for name in ["blocked.test", "wild.test", "x.blocked.test"] {
                assert_eq!(
                    net.dig(server, name, tcp),
                    (dns::NXDOMAIN, vec![]),
                    "{name} from {server} (tcp: {tcp})"
                );
            }
        }
    }
    assert_eq!(net.dig("10.99.0.9", "allowed.test", false), (0, ten_99(2)));
    // Names the policy does not allow never reach the upstream resolver.
    let policy: Policy =
        serde_json::from_value(json!({"mode": "allow", "rules": rules})).expect("a policy");
    let asked = net.asked.lock().expect("not poisoned").clone();
    assert!(asked.contains(&"allowed.test".to_owned()), "{asked:?}");
    for name in &asked {
        assert!(
            policy.allows_name(name),
            "the upstream was asked for `{name}`"
        );
    }

    // The learn file: what was reached, nothing that was denied.
    let learned = Learned::read(&netd.learn_file).expect("the learn file");
    assert_eq!(
        learned.minimal_policy(),
        "egress_policy:\n  mode: allow\n  rules:\n    - \"allowed.test\"\n    - \"www.wild.test\"\n    - \"10.99.0.4\"\n"
    );
    let lines = std::fs::read_to_string(&netd.learn_file).expect("readable");
    for line in [
        r#"{"kind":"name","name":"allowed.test","port":80,"via":"host"}"#,
        r#"{"kind":"name","name":"allowed.test","port":443,"via":"sni"}"#,
        r#"{"kind":"name","name":"allowed.test","via":"dns"}"#,
        r#"{"kind":"name","name":"www.wild.test","port":80,"via":"host"}"#,
        r#"{"kind":"addr","addr":"10.99.0.4","port":80}"#,
        r#"{"kind":"addr","addr":"10.99.0.4","port":443}"#,
    ] {
        assert_eq!(
            lines.lines().filter(|l| *l == line).count(),
            1,
            "{line} once in:\n{lines}"
        );
    }
}

#[test]
fn block_mode_and_no_policy() {
    use Expect::*;
    let mut net = Net::new();
    net.start_netd(json!({"mode": "block", "rules": ["blocked.test", "*.evil.test", "10.99.0.3"]}));
    let probes: &[(&str, &[&str], Expect)] = &[
        (
            "a name not blocked",
            &["http://allowed.test/"],
            Ok("server=10.99.0.2"),
        ),
        (
            "another",
            &["https://www.wild.test/id"],
            Ok("tls-server=10.99.0.4"),
        ),
        (
            "a blocked name",
            &[
                "--resolve",
                "blocked.test:80:10.99.0.2",
                "http://blocked.test/",
            ],
            Forbidden("`blocked.test` is not allowed"),
        ),
        (
            "a blocked wildcard",
            &[
                "--resolve",
                "a.evil.test:443:10.99.0.2",
                "https://a.evil.test/id",
            ],
            Fails(TLS_CLOSED),
        ),
        (
            "a blocked address literal",
            &["http://10.99.0.3/"],
            Forbidden("blocked by the egress rule `10.99.0.3/32`"),
        ),
        (
            "a name whose address is blocked",
            &["--resolve", "alias.test:80:10.99.0.2", "http://alias.test/"],
            Forbidden("blocked by the egress rule `10.99.0.3/32`"),
        ),
        (
            "an address not blocked",
            &["http://10.99.0.4/"],
            Ok("server=10.99.0.4"),
        ),
        (
            "Host spoofing: a blocked address, a name not blocked",
            &["-H", "Host: allowed.test", "http://10.99.0.3/"],
            Ok("server=10.99.0.2 host=allowed.test"),
        ),
        (
            "the metadata address, whatever the mode",
            &["--resolve", "meta.test:80:10.99.0.2", "http://meta.test/"],
            Forbidden("link-local (metadata)"),
        ),
    ];
    for (what, args, expect) in probes {
        probe(&net, what, args, expect);
    }
    assert_eq!(net.dig("10.0.2.3", "blocked.test", false).0, dns::NXDOMAIN);
    assert_eq!(net.dig("10.0.2.3", "x.evil.test", true).0, dns::NXDOMAIN);
    assert_eq!(net.dig("10.0.2.3", "allowed.test", false).0, 0);
    drop(net);

    let mut net = Net::new();
    net.start_netd(serde_json::Value::Null);
    let probes: &[(&str, &[&str], Expect)] = &[
        (
            "no policy: any name, dialled where the host resolves it, not where /etc/hosts says",
            &["http://blocked.test/"],
            Ok("server=10.99.0.3 host=blocked.test"),
        ),
        (
            "no policy: any address",
            &["https://10.99.0.3/id"],
            Ok("tls-server=10.99.0.3"),
        ),
        (
            "no policy: never the host",
            &[
                "--resolve",
                "host.test:443:10.99.0.2",
                "https://host.test/id",
            ],
            Fails(TLS_CLOSED),
        ),
        (
            "no policy: never the metadata address",
            &["-H", "Host: 169.254.169.254", "http://10.99.0.2/"],
            Forbidden("link-local (metadata)"),
        ),
    ];
    for (what, args, expect) in probes {
        probe(&net, what, args, expect);
    }
}

#[test]
fn control_forwards_ports_and_turns_learning_off_and_on() {
    let mut net = Net::new();
    let netd = net.start_netd(json!({"mode": "allow", "rules": ["10.99.0.4"]}));
    // The guest's services: TCP 8000 says hello, UDP 8001 echoes.
    let (tcp, udp) = in_ns(&net.ns("g"), || {
        (
            TcpListener::bind("0.0.0.0:8000").expect("bind 8000"),
            UdpSocket::bind("0.0.0.0:8001").expect("bind 8001"),
        )
    });
    std::thread::spawn(move || {
        for stream in tcp.incoming() {
            let _ = stream.and_then(|mut s| s.write_all(b"guest-app\n"));
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = ControlClient::new(&netd.control);
    runtime.block_on(client.ping()).expect("ping");

    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let ports = [
        ForwardPort {
            internal: 8000,
            protocol: Proto::Tcp,
            bind: any,
        },
        ForwardPort {
            internal: 8001,
            protocol: Proto::Udp,
            bind: any,
        },
    ];
    let bound = runtime.block_on(client.forward(&ports)).expect("forwarded");
    assert!(
        bound.iter().all(|a| a.ip().is_loopback() && a.port() != 0),
        "{bound:?}"
    );
    let (tcp_addr, udp_addr) = (bound[0], bound[1]);
    // From the host (netd's namespace), to the guest.
    let (said, echoed) = in_ns(&net.ns("h"), move || {
        let mut stream = std::net::TcpStream::connect(tcp_addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut said = String::new();
        stream.read_to_string(&mut said).expect("read");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        socket.send_to(b"ping over udp", udp_addr).expect("sent");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("an echo");
        (said, buf[..n].to_vec())
    });
    assert_eq!(said, "guest-app\n");
    assert_eq!(echoed, b"ping over udp");

    // All or none: the second port is taken (by the first), so the first
    // is released, and binds again.
    let free = in_ns(&net.ns("h"), || {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("an address")
    });
    let twice = [ForwardPort {
        internal: 8000,
        protocol: Proto::Tcp,
        bind: free,
    }; 2];
    match runtime.block_on(client.forward(&twice)) {
        Err(NetError::Refused {
            op: "forward",
            message,
            index: Some(1),
        }) => {
            assert!(
                message.contains(&format!("cannot bind `{free}` (tcp)")),
                "{message}"
            );
        }
        other => panic!("the same port twice was not refused at index 1: {other:?}"),
    }
    let again = runtime
        .block_on(client.forward(&twice[..1]))
        .expect("bound again");
    assert_eq!(again, [free]);

    // Learning off: a new destination is not recorded; on again: it is.
    runtime.block_on(client.learn(false)).expect("learn off");
    let (code, out) = net.curl(&["http://10.99.0.4/"]);
    assert!(code == 0 && out.ends_with("\n200"), "{out}");
    let learned = Learned::read(&netd.learn_file).expect("the learn file");
    assert!(learned.is_empty(), "{learned:?}");
    runtime.block_on(client.learn(true)).expect("learn on");
    let (code, out) = net.curl(&["http://10.99.0.4/"]);
    assert!(code == 0 && out.ends_with("\n200"), "{out}");
    let learned = Learned::read(&netd.learn_file).expect("the learn file");
    assert_eq!(
        learned.addrs().collect::<Vec<_>>(),
        ["10.99.0.4".parse::<std::net::IpAddr>().expect("an address")]
    );

    // A bad request is answered with an error, and the daemon goes on.
    let raw = std::os::unix::net::UnixStream::connect(&netd.control).expect("connects");
    let mut raw = std::io::BufReader::new(raw);
    raw.get_mut()
        .write_all(b"{\"op\":\"reboot\"}\n")
        .expect("sent");
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut raw, &mut reply).expect("a reply");
    assert!(
        reply.starts_with("{\"ok\":false,\"error\":\"bad request: unknown variant `reboot`"),
        "{reply}"
    );
    runtime.block_on(client.ping()).expect("still answers");
}
