//! A test network of namespaces around one `orgo-netd`, with no VM:
//!
//! ```text
//!  guest ns (ong-N)            computer ns (onn-N)          host ns (onh-N)           servers ns (ons-N)
//!  eth0 10.0.2.15/24  <-veth->  gw0 10.0.2.2/24,10.0.2.3     orgo-netd (runs here)     s0 10.99.0.2-4/24
//!  curl, DNS probes             nft: tcp 80,443 -> :3129      h0 10.99.0.1/24  <-veth->  HTTP :80 (in-process)
//!  /etc/netns/ong-N/{resolv.conf,hosts}  udp/tcp 53 -> 10.0.2.3:53   test DNS 127.0.0.1:5353    HTTPS :443 (openssl s_server)
//! ```
//!
//! The guest namespace stands in for the VM behind tap0: its packets enter
//! the computer's namespace on `gw0`, where nftables redirects them to
//! netd's sockets as the runtime does. netd runs in a namespace standing in
//! for the host, so it dials the test servers from there; nothing reaches
//! the real host's network or any public address.

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orgo_net::dns;

/// The proxy's port inside the computer's namespace.
pub(crate) const PROXY_PORT: u16 = 3129;

/// The test DNS server's records.
pub(crate) const RECORDS: &[(&str, Ipv4Addr)] = &[
    ("allowed.test", Ipv4Addr::new(10, 99, 0, 2)),
    ("blocked.test", Ipv4Addr::new(10, 99, 0, 3)),
    ("www.wild.test", Ipv4Addr::new(10, 99, 0, 4)),
    ("wild.test", Ipv4Addr::new(10, 99, 0, 4)),
    ("host.test", Ipv4Addr::new(10, 99, 0, 1)),
    ("meta.test", Ipv4Addr::new(169, 254, 169, 254)),
    ("rebind.test", Ipv4Addr::new(127, 0, 0, 1)),
    ("alias.test", Ipv4Addr::new(10, 99, 0, 3)),
];

/// Fails, naming what is missing, unless the test can build its network.
pub(crate) fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); \
         CI runs as root: run it as root"
    );
    for tool in ["ip", "nft", "curl", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs `{tool}` (scripts/install-deps.sh installs it)"
        );
    }
}

/// Runs a command; panics with its output when it fails.
pub(crate) fn run(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `f` on a thread that joined the namespace `name`: sockets it
/// creates stay there.
pub(crate) fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("the namespace thread")
}

/// The network; everything is removed on drop.
pub(crate) struct Net {
    pub(crate) id: String,
    pub(crate) dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The names the test DNS server was asked, in order.
    pub(crate) asked: Arc<Mutex<Vec<String>>>,
}

impl Net {
    pub(crate) fn ns(&self, role: &str) -> String {
        format!("on{role}-{}", self.id)
    }

    /// Builds the namespaces, links, nftables, servers and test DNS.
    pub(crate) fn new() -> Net {
        require_root_and_tools();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            id,
            dir: tempfile::tempdir().expect("a temporary directory"),
            children: Vec::new(),
            asked: Arc::new(Mutex::new(Vec::new())),
        };
        let (g, n, h, s) = (net.ns("g"), net.ns("n"), net.ns("h"), net.ns("s"));
        for ns in [&g, &n, &h, &s] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // guest <-> computer
        run(&[
            "ip", "-n", &g, "link", "add", "eth0", "type", "veth", "peer", "name", "gw0", "netns",
            &n,
        ]);
        run(&["ip", "-n", &g, "addr", "add", "10.0.2.15/24", "dev", "eth0"]);
        run(&["ip", "-n", &g, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &g, "route", "add", "default", "via", "10.0.2.2"]);
        run(&["ip", "-n", &n, "addr", "add", "10.0.2.2/24", "dev", "gw0"]);
        run(&["ip", "-n", &n, "addr", "add", "10.0.2.3/32", "dev", "gw0"]);
        run(&["ip", "-n", &n, "link", "set", "gw0", "up"]);
        // host <-> servers
        run(&[
            "ip", "-n", &h, "link", "add", "h0", "type", "veth", "peer", "name", "s0", "netns", &s,
        ]);
        run(&["ip", "-n", &h, "addr", "add", "10.99.0.1/24", "dev", "h0"]);
        run(&["ip", "-n", &h, "link", "set", "h0", "up"]);
        for addr in ["10.99.0.2/24", "10.99.0.3/24", "10.99.0.4/24"] {
            run(&["ip", "-n", &s, "addr", "add", addr, "dev", "s0"]);
        }
        run(&["ip", "-n", &s, "link", "set", "s0", "up"]);
        // The runtime's redirects, as NETDESIGN.md has them.
        let rules = format!(
            "table inet orgo {{\n\
             chain prerouting {{\n\
             type nat hook prerouting priority dstnat; policy accept;\n\
             iifname \"gw0\" tcp dport {{ 80, 443 }} redirect to :{PROXY_PORT}\n\
             iifname \"gw0\" meta l4proto {{ tcp, udp }} th dport 53 dnat ip to 10.0.2.3:53\n\
             }}\n}}\n"
        );
        let file = net.dir.path().join("rules.nft");
        std::fs::write(&file, rules).expect("written");
        run(&[
            "ip",
            "netns",
            "exec",
            &n,
            "nft",
            "-f",
            file.to_str().expect("UTF-8"),
        ]);
        // The guest's resolver, and an /etc/hosts that lies.
        let etc = PathBuf::from(format!("/etc/netns/{g}"));
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(etc.join("resolv.conf"), "nameserver 10.0.2.3\n").expect("written");
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n10.99.0.2 blocked.test\n",
        )
        .expect("written");
        net.start_servers();
        net
    }

    fn start_servers(&mut self) {
        // HTTP on every server address: says who answered and for which Host.
        let http = in_ns(&self.ns("s"), || {
            TcpListener::bind("0.0.0.0:80").expect("bind :80")
        });
        std::thread::spawn(move || serve_http(http));
        // HTTPS: one openssl s_server per address, each serving a file naming it.
        let dir = self.dir.path();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=orgo-test",
            "-days",
            "1",
            "-keyout",
            key.to_str().expect("UTF-8"),
            "-out",
            cert.to_str().expect("UTF-8"),
        ]);
        for server in ["10.99.0.2", "10.99.0.3", "10.99.0.4"] {
            let root = dir.join(server);
            std::fs::create_dir_all(&root).expect("created");
            std::fs::write(root.join("id"), format!("tls-server={server}\n")).expect("written");
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns("s"),
                    "openssl",
                    "s_server",
                    "-quiet",
                    "-WWW",
                ])
                .args(["-accept", &format!("{server}:443")])
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl s_server starts");
            self.children.push(child);
        }
        // The upstream resolver the runtime would be configured with.
        let records: BTreeMap<String, Ipv4Addr> =
            RECORDS.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect();
        let records = Arc::new(records);
        let (udp, tcp) = in_ns(&self.ns("h"), || {
            (
                UdpSocket::bind("127.0.0.1:5353").expect("bind DNS UDP"),
                TcpListener::bind("127.0.0.1:5353").expect("bind DNS TCP"),
            )
        });
        let (asked, r) = (self.asked.clone(), records.clone());
        std::thread::spawn(move || serve_dns_udp(udp, r, asked));
        let (asked, r) = (self.asked.clone(), records);
        std::thread::spawn(move || serve_dns_tcp(tcp, r, asked));
        // Wait until every s_server listens.
        for server in ["10.99.0.2", "10.99.0.3", "10.99.0.4"] {
            let addr: SocketAddr = format!("{server}:443").parse().expect("an address");
            let up = in_ns(&self.ns("h"), move || {
                (0..100).any(|_| {
                    let ok =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                            .is_ok();
                    if !ok {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    ok
                })
            });
            assert!(up, "openssl s_server on {addr} did not start");
        }
    }

    /// Starts `orgo-netd` in the host stand-in with this policy (`null` or
    /// `{"mode":..., "rules": [...]}`) and waits for its `ready`.
    pub(crate) fn start_netd(&mut self, policy: serde_json::Value) -> Netd {
        let dir = self.dir.path();
        let config = serde_json::json!({
            "orgo_netd": 1,
            "netns": format!("/run/netns/{}", self.ns("n")),
            "proxy_port": PROXY_PORT,
            "dns": "10.0.2.3:53",
            "dns_upstream": "127.0.0.1:5353",
            "policy": policy,
            "denied": ["10.200.0.0/16"],
            "learn": true,
            "learn_file": dir.join("learned.jsonl"),
            "control": dir.join("netd.sock"),
        });
        let path = dir.join("netd.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("written");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("h"),
                env!("CARGO_BIN_EXE_orgo-netd"),
                "--config",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("orgo-netd starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        if line != "ready\n" {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut stderr);
            panic!("orgo-netd did not say `ready` (said {line:?}): {stderr}");
        }
        let pid = child.id();
        self.children.push(child);
        Netd {
            pid,
            control: dir.join("netd.sock"),
            learn_file: dir.join("learned.jsonl"),
        }
    }

    /// `curl` from the guest: (exit code, body + "\n" + HTTP status).
    pub(crate) fn curl(&self, args: &[&str]) -> (i32, String) {
        let output: Output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("g"),
                "curl",
                "-sS",
                "-m",
                "15",
                "-k",
            ])
            .args(["-w", "\\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.stderr.is_empty() {
            text.push_str(&format!(
                "\n[stderr] {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        (output.status.code().unwrap_or(-1), text)
    }

    /// A DNS query from the guest to `server` (UDP or TCP): the answer's
    /// RCODE and A records.
    pub(crate) fn dig(&self, server: &str, name: &str, tcp: bool) -> (u8, Vec<Ipv4Addr>) {
        let server: SocketAddr = format!("{server}:53").parse().expect("an address");
        let name = name.to_owned();
        in_ns(&self.ns("g"), move || {
            let query = dns::query(0x4242, &name, dns::TYPE_A);
            let reply = if tcp {
                let mut stream =
                    std::net::TcpStream::connect_timeout(&server, Duration::from_secs(5))
                        .expect("DNS over TCP connects");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut out = (query.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&query);
                stream.write_all(&out).expect("sent");
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).expect("a length");
                let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut reply).expect("an answer");
                reply
            } else {
                let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                socket.send_to(&query, server).expect("sent");
                let mut buf = vec![0; 4096];
                let (n, _) = socket.recv_from(&mut buf).expect("an answer");
                buf.truncate(n);
                buf
            };
            let (rcode, addrs) =
                dns::answer_addresses(&reply, 0x4242, &name).expect("an answer to the query");
            let v4 = addrs
                .into_iter()
                .filter_map(|a| match a {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect();
            (rcode, v4)
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for role in ["g", "n", "h", "s"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(role)])
                .output();
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns("g")));
    }
}

/// A running daemon.
pub(crate) struct Netd {
    pub(crate) pid: u32,
    pub(crate) control: PathBuf,
    pub(crate) learn_file: PathBuf,
}

fn serve_http(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&head);
            // `GET /bulk/N`: N zero bytes, for the benchmark.
            if let Some(n) = head
                .strip_prefix("GET /bulk/")
                .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            {
                let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
                let _ = stream.write_all(header.as_bytes());
                let chunk = vec![0u8; 64 << 10];
                let mut left = n;
                while left > 0 {
                    let len = left.min(chunk.len());
                    if stream.write_all(&chunk[..len]).is_err() {
                        return;
                    }
                    left -= len;
                }
                return;
            }
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Host: ")
                        .or_else(|| l.strip_prefix("host: "))
                })
                .unwrap_or("-")
                .to_owned();
            let local = stream
                .local_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let body = format!("server={local} host={host}\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        });
    }
}

/// The answer of the test resolver: its A record, or NXDOMAIN.
fn dns_answer(
    query: &[u8],
    records: &BTreeMap<String, Ipv4Addr>,
    asked: &Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    let question = dns::parse_query(query).ok()?;
    let name = question.name?;
    asked.lock().expect("not poisoned").push(name.clone());
    let Some(addr) = records.get(&name) else {
        return dns::nxdomain(query).ok();
    };
    let mut out = dns::answer_with(query, 0).ok()?;
    if question.qtype == dns::TYPE_A {
        out[7] = 1;
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

fn serve_dns_udp(
    socket: UdpSocket,
    records: Arc<BTreeMap<String, Ipv4Addr>>,
    asked: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = vec![0; 4096];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        if let Some(reply) = dns_answer(&buf[..n], &records, &asked) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn serve_dns_tcp(
    listener: TcpListener,
    records: Arc<BTreeMap<String, Ipv4Addr>>,
    asked: Arc<Mutex<Vec<String>>>,
) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            continue;
        }
        if let Some(reply) = dns_answer(&query, &records, &asked) {
            let mut out = (reply.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            let _ = stream.write_all(&out);
        }
    }
}
