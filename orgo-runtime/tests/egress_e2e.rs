//! The host network, end to end, with real traffic (QEMU TCG, as root):
//! test hosts in a network namespace this test makes (`orgotest-hosts`,
//! reached from the host by the veth `ot-h0`: HTTP, HTTPS, raw TCP, UDP and
//! a DNS server that the runtime's netd uses as its upstream), then
//! computers whose probes (curl and bash's `/dev/tcp`, `/dev/udp` from the
//! base image) assert what their `egress_policy` lets through. Also: two
//! clones of one snapshot, public ports, the bandwidth cap, learn mode.
//!
//! Test traffic goes only to the test namespace, this host's loopback and
//! its test address `10.99.0.1`. The cloud metadata address is a stand-in
//! in the test namespace: while the test net is up, `169.254.169.254` is
//! routed there (an `ip rule` of its own), so nothing reaches a real one.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use orgo_runtime::{Computer, Exec, LaunchOptions, Runtime, RuntimeConfig};
use orgo_template::Template;

const T: Duration = Duration::from_secs(120);
const HOSTS_NS: &str = "orgotest-hosts";
const HOST_VETH: &str = "ot-h0";
const NS_VETH: &str = "ot-n0";
/// The test hosts' addresses (all in [`HOSTS_NS`]).
const ALLOWED: &str = "10.99.0.10";
const BLOCKED: &str = "10.99.0.20";
const DNS: &str = "10.99.0.53";
const BLOCK_CIDR_HOST: &str = "10.99.1.10";
const ALLOW_CIDR_HOST: &str = "10.99.2.10";
const METADATA: &str = "169.254.169.254";
/// This host's own test address (the host end of [`HOST_VETH`]).
const HOST_ADDR: &str = "10.99.0.1";
const RULE_TABLE: &str = "1099";

/// The test DNS zone: `name=ip`.
const ZONE: &[(&str, &str)] = &[
    ("*.allowed.test", ALLOWED),
    ("hostaddr.allowed.test", HOST_ADDR),
    ("meta.allowed.test", METADATA),
    ("exact.test", ALLOWED),
    ("sub.exact.test", ALLOWED),
    ("blocked.test", BLOCKED),
    ("doh.blocked.test", BLOCKED),
    ("cidr.blocked.test", BLOCK_CIDR_HOST),
];

fn sh(command: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must(command: &str) {
    let (ok, out) = sh(command);
    assert!(ok, "`{command}` failed: {out}");
}

/// The test hosts: the namespace, its servers, and this host's own test
/// servers (on [`HOST_ADDR`] and on loopback). Made once for the tests that
/// run at a time; removed when the last one drops it.
struct TestNet {
    servers: Child,
    _dir: tempfile::TempDir,
}

impl TestNet {
    fn get() -> Arc<TestNet> {
        static NET: Mutex<Weak<TestNet>> = Mutex::new(Weak::new());
        let mut net = NET.lock().unwrap();
        if let Some(up) = net.upgrade() {
            return up;
        }
        let up = Arc::new(TestNet::up());
        *net = Arc::downgrade(&up);
        up
    }

    fn up() -> TestNet {
        assert!(
            rustix::process::geteuid().is_root(),
            "the egress tests need root (network namespaces, nftables)"
        );
        teardown();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        must(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=orgo-test -keyout {} -out {} 2>/dev/null",
            key.display(),
            cert.display()
        ));
        must(&format!(
            "ip netns add {HOSTS_NS} && ip link add {HOST_VETH} type veth peer name {NS_VETH} netns {HOSTS_NS} \
             && ip addr add {HOST_ADDR}/24 dev {HOST_VETH} && ip link set {HOST_VETH} up \
             && ip route add 10.99.1.0/24 via 10.99.0.2 && ip route add 10.99.2.0/24 via 10.99.0.2 \
             && ip route add {METADATA}/32 via 10.99.0.2 table {RULE_TABLE} \
             && ip rule add to {METADATA}/32 lookup {RULE_TABLE} pref {RULE_TABLE}"
        ));
        let mut inner = format!(
            "ip link set lo up && ip addr add 10.99.0.2/24 dev {NS_VETH} && ip link set {NS_VETH} up"
        );
        for addr in [
            ALLOWED,
            BLOCKED,
            DNS,
            BLOCK_CIDR_HOST,
            ALLOW_CIDR_HOST,
            METADATA,
        ] {
            inner.push_str(&format!(" && ip addr add {addr}/32 dev {NS_VETH}"));
        }
        inner.push_str(&format!(" && ip route add default via {HOST_ADDR}"));
        must(&format!("ip netns exec {HOSTS_NS} sh -c '{inner}'"));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/egress/servers.py");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", HOSTS_NS, "python3"])
            .arg(script)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--dns", &format!("{DNS}:53")]);
        for (name, ip) in ZONE {
            command.args(["--zone", &format!("{name}={ip}")]);
        }
        let mut servers = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(servers.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the test servers did not start");
        // This host's own services, which no computer may reach: one on its
        // test address (HTTP, raw TCP), one on loopback only.
        for (addr, reply) in [
            (
                format!("{HOST_ADDR}:80"),
                "HTTP/1.0 200 OK\r\n\r\nhost-exposed\n",
            ),
            (format!("{HOST_ADDR}:8081"), "host-exposed\n"),
            ("127.0.0.1:8082".to_owned(), "host-loopback\n"),
        ] {
            serve(&addr, reply);
        }
        TestNet { servers, _dir: dir }
    }
}

/// Answers every connection to `addr` with `reply`, on a thread, for the
/// life of this process.
fn serve(addr: &str, reply: &'static str) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(reply.as_bytes());
        }
    });
}

fn teardown() {
    let _ = sh(&format!(
        "ip rule del pref {RULE_TABLE}; ip route flush table {RULE_TABLE}; ip link del {HOST_VETH}; ip netns del {HOSTS_NS}"
    ));
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = self.servers.kill();
        let _ = self.servers.wait();
        teardown();
    }
}

/// A runtime on the test home whose netd resolves through the test DNS.
async fn runtime() -> Runtime {
    let agent = tokio::task::spawn_blocking(common::static_agent)
        .await
        .unwrap();
    let mut config = RuntimeConfig::new(common::test_home());
    config.agent = Some(agent);
    config.accel = Some(orgo_runtime::Accel::Tcg);
    config.guest_ca_certs = common::guest_ca_certs();
    config.dns_upstream = Some(format!("{DNS}:53").parse().unwrap());
    Runtime::open(config).await.unwrap()
}

fn template(name: &str, body: &str) -> Template {
    Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: {name}@1.0.0\n{body}"
    ))
    .unwrap()
}

async fn launch(runtime: &Runtime, template: &Template, options: LaunchOptions) -> Computer {
    runtime.build(template, &mut |_| {}).await.unwrap();
    runtime
        .launch(template, options, &mut |_| {})
        .await
        .unwrap()
}

async fn bash(computer: &Computer, script: &str) -> String {
    let out = computer
        .exec(Exec::shell(script.to_owned()), T)
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The probes' helpers, in the guest: `http ARGS` prints `CODE BODY`
/// (`000` when curl got no answer), `tcp HOST PORT` the first line the
/// server sent or `FAIL`, `udp HOST PORT` the reply or `FAIL`, `dnsq NAME
/// SERVER` `rcode=N ip=A.B.C.D` (or `noreply`), by a query of its own over
/// UDP.
const LIB: &str = r#"
http() { local code; code=$(curl -sS -m 8 -o /tmp/body -w '%{http_code}' "$@" 2>/dev/null); echo "${code:-000} $(head -c 200 /tmp/body 2>/dev/null | tr -d '\n')"; rm -f /tmp/body; }
tcp() { timeout 8 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3' "$1" "$2" 2>/dev/null || echo FAIL; }
udp() { timeout 5 bash -c 'exec 3<>"/dev/udp/$0/$1"; echo hi >&3; head -n1 <&3' "$1" "$2" 2>/dev/null || echo FAIL; }
dnsq() {
  local q='\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' label labels b bytes
  IFS=. read -ra labels <<<"$1"
  for label in "${labels[@]}"; do q+=$(printf '\\x%02x' "${#label}")$label; done
  q+='\x00\x00\x01\x00\x01'
  bytes=$( { exec 3<>"/dev/udp/$2/53" && printf "$q" >&3 && timeout 5 dd bs=512 count=1 <&3 2>/dev/null; } | od -An -tu1 -v)
  read -ra b <<<"$(echo $bytes)"
  if [ "${#b[@]}" -lt 12 ]; then echo noreply; return; fi
  local n=${#b[@]} an=$(( b[6] * 256 + b[7] ))
  if [ "$an" -gt 0 ]; then echo "rcode=$(( b[3] & 15 )) ip=${b[n-4]}.${b[n-3]}.${b[n-2]}.${b[n-1]}"; else echo "rcode=$(( b[3] & 15 ))"; fi
}
"#;

/// What a probe must print.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Reached: the output contains this.
    Reached(&'static str),
    /// Refused: an HTTP 403 or no answer (`000`), `FAIL`, NXDOMAIN
    /// (`rcode=3`) or no DNS reply; and none of the test hosts' answers.
    Denied,
}

/// Runs `probes` (name, bash command, expectation) in `computer` in one
/// exec; returns the failures, each with what it printed.
async fn run_probes(computer: &Computer, probes: &[(&str, &str, Expect)]) -> Vec<String> {
    let mut script = String::from(LIB);
    for (name, command, _) in probes {
        script.push_str(&format!("echo \"@@{name}@@ $({command})\"\n"));
    }
    let started = Instant::now();
    let out = bash(computer, &script).await;
    eprintln!(
        "{} probes in {:.1} s:\n{out}",
        probes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for (name, _, expect) in probes {
        let marker = format!("@@{name}@@ ");
        let got = out
            .lines()
            .find_map(|l| l.strip_prefix(&marker))
            .unwrap_or("(no output)")
            .trim()
            .to_owned();
        let ok = match expect {
            Expect::Reached(text) => got.contains(text),
            Expect::Denied => {
                let refused = got.starts_with("403")
                    || got.starts_with("000")
                    || got == "FAIL"
                    || got == "noreply"
                    || got.starts_with("rcode=3");
                let answered = [
                    "host=",
                    "tcp-ok",
                    "udp-ok",
                    "host-exposed",
                    "host-loopback",
                    "ip=",
                ]
                .iter()
                .any(|t| got.contains(t));
                refused && !answered
            }
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got `{got}`"));
        }
    }
    failures
}

/// A guest service: a perl one-liner (perl-base is in the base image) that
/// answers each connection to `port` with `guest-<port>`.
fn service(port: u16) -> String {
    format!(
        "      - name: s{port}\n        run: perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>{port},Listen=>5,ReuseAddr=>1) or die; while($c=$s->accept){{print $c \"guest-{port}\\n\"; close $c}}'\n"
    )
}

/// A guest UDP service on `port` answering each datagram with
/// `guest-udp-<port>`.
fn udp_service(port: u16) -> String {
    format!(
        "      - name: u{port}\n        run: perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>{port},Proto=>\"udp\") or die; while($s->recv($m,512)){{$s->send(\"guest-udp-{port}\\n\")}}'\n"
    )
}

/// The tests share two templates (a build under TCG takes minutes):
/// `allow` (the probes, the clones, ports) and `block` (learn mode, the
/// bandwidth cap, an exact public port).
fn allow_template() -> Template {
    template(
        "egress-allow",
        &format!(
            "egress_policy:\n  mode: allow\n  rules: [\"*.allowed.test\", \"exact.test\", \"10.99.0.10\", \"10.99.2.0/24\"]\n\
             apps:\n  - name: web\n    ports:\n      - {{ internal: 8000, public: true }}\n      - {{ internal: 8001 }}\n      - {{ internal: 8003, protocol: udp }}\n    services:\n{}{}{}{}",
            service(8000),
            service(8001),
            service(7000),
            udp_service(8003)
        ),
    )
}

/// The exact public port of [`block_template`].
const EXACT_PORT: u16 = 47613;

fn block_template() -> Template {
    template(
        "egress-block",
        &format!(
            "egress_policy:\n  mode: block\n  rules: [\"blocked.test\", \"10.99.1.0/24\"]\n\
             hardware:\n  bandwidth_mbps: 16\n\
             apps:\n  - name: web\n    ports:\n      - {{ internal: 8002, public: true, external: {EXACT_PORT} }}\n    services:\n{}",
            service(8002)
        ),
    )
}

/// Held by the tests that launch [`block_template`]: its exact port is for
/// one computer at a time.
static BLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One computer under an `allow` policy, probed every way the issue lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_policy_is_enforced_on_the_host_against_every_probe() {
    let _net = TestNet::get();
    let runtime = runtime().await;
    let computer = launch(&runtime, &allow_template(), LaunchOptions::default()).await;
    let a = ALLOWED;
    let b = BLOCKED;
    use Expect::{Denied, Reached};
    let allowed_body = "200 host=www.allowed.test addr=10.99.0.10";
    let probes: Vec<(&str, String, Expect)> = vec![
        // Names: wildcard and exact, HTTP and HTTPS (SNI).
        (
            "wildcard-http",
            "http http://www.allowed.test/".into(),
            Reached(allowed_body),
        ),
        (
            "wildcard-https",
            "http -k https://api.allowed.test/".into(),
            Reached("200 host=api.allowed.test addr=10.99.0.10"),
        ),
        (
            "exact-http",
            "http http://exact.test/".into(),
            Reached("200 host=exact.test addr=10.99.0.10"),
        ),
        (
            "exact-https",
            "http -k https://exact.test/".into(),
            Reached("200 host=exact.test"),
        ),
        (
            "exact-not-subdomain",
            "http --resolve sub.exact.test:80:10.99.0.10 http://sub.exact.test/".into(),
            Denied,
        ),
        // A blocked name, by DNS and with its address given.
        ("blocked-name", "http http://blocked.test/".into(), Denied),
        (
            "blocked-name-resolved",
            format!("http --resolve blocked.test:80:{b} http://blocked.test/"),
            Denied,
        ),
        (
            "blocked-name-https",
            format!("http -k --resolve blocked.test:443:{b} https://blocked.test/"),
            Denied,
        ),
        // A blocked host's IP literal, web and raw.
        ("blocked-ip-http", format!("http http://{b}/"), Denied),
        ("blocked-ip-https", format!("http -k https://{b}/"), Denied),
        // Host and SNI spoofing: an allowed address naming a blocked host,
        // and a blocked address naming an allowed host (dialled by name).
        (
            "host-spoof-blocked",
            format!("http -H 'Host: blocked.test' http://{a}/"),
            Denied,
        ),
        (
            "sni-spoof-blocked",
            format!("http -k --resolve blocked.test:443:{a} https://blocked.test/"),
            Denied,
        ),
        (
            "host-spoof-allowed",
            format!("http --resolve www.allowed.test:80:{b} http://www.allowed.test/"),
            Reached(allowed_body),
        ),
        (
            "sni-spoof-allowed",
            format!("http -k --resolve api.allowed.test:443:{b} https://api.allowed.test/"),
            Reached("200 host=api.allowed.test addr=10.99.0.10"),
        ),
        // A guest-side /etc/hosts override gains nothing.
        (
            "etc-hosts-allowed",
            format!(
                "cp /etc/hosts /tmp/hosts.bak; echo '{b} www.allowed.test' >> /etc/hosts; http http://www.allowed.test/; cp /tmp/hosts.bak /etc/hosts"
            ),
            Reached(allowed_body),
        ),
        (
            "etc-hosts-blocked",
            format!(
                "cp /etc/hosts /tmp/hosts.bak; echo '{a} blocked.test' >> /etc/hosts; http http://blocked.test/; cp /tmp/hosts.bak /etc/hosts"
            ),
            Denied,
        ),
        // DNS: the runtime's resolver, another resolver, DNS over HTTPS.
        (
            "dns-allowed",
            "dnsq www.allowed.test 10.0.2.3".into(),
            Reached("rcode=0 ip=10.99.0.10"),
        ),
        ("dns-blocked", "dnsq blocked.test 10.0.2.3".into(), Denied),
        (
            "dns-other-resolver-blocked",
            format!("dnsq blocked.test {DNS}"),
            Denied,
        ),
        (
            "dns-other-resolver-redirected",
            format!("dnsq www.allowed.test {b}"),
            Reached("rcode=0 ip=10.99.0.10"),
        ),
        (
            "doh-blocked-host",
            "http -k --doh-url https://doh.blocked.test/dns-query http://www.allowed.test/".into(),
            Denied,
        ),
        // The metadata address, the host's own addresses, loopback.
        ("metadata-http", format!("http http://{METADATA}/"), Denied),
        ("metadata-tcp", format!("tcp {METADATA} 9000"), Denied),
        (
            "metadata-by-allowed-name",
            "http http://meta.allowed.test/".into(),
            Denied,
        ),
        ("host-address-tcp", format!("tcp {HOST_ADDR} 8081"), Denied),
        (
            "host-address-by-allowed-name",
            "http http://hostaddr.allowed.test/".into(),
            Denied,
        ),
        (
            "host-loopback-via-gateway",
            "tcp 10.0.2.2 8082".into(),
            Denied,
        ),
        (
            "host-loopback-via-gateway-http",
            "http http://10.0.2.2:8082/".into(),
            Denied,
        ),
        ("computers-range", "tcp 10.200.0.1 22".into(), Denied),
        (
            "own-service-through-gateway",
            "tcp 10.0.2.2 7000".into(),
            Denied,
        ),
        // IPv6, with IPv4 hidden in it.
        (
            "ipv6-literal",
            "http -g 'http://[2001:db8::10]/'".into(),
            Denied,
        ),
        (
            "ipv4-mapped-blocked-tcp",
            format!("tcp ::ffff:{b} 9000"),
            Denied,
        ),
        (
            "ipv4-mapped-blocked-http",
            format!("http -g 'http://[::ffff:{b}]/'"),
            Denied,
        ),
        (
            "ipv4-mapped-allowed-tcp",
            format!("tcp ::ffff:{a} 9000"),
            Reached("tcp-ok 10.99.0.10"),
        ),
        ("nat64-blocked", "tcp 64:ff9b::a63:14 9000".into(), Denied),
        ("6to4-blocked", "tcp 2002:a63:14:: 9000".into(), Denied),
        // UDP and raw TCP by address and CIDR.
        (
            "udp-allowed",
            format!("udp {a} 9001"),
            Reached("udp-ok 10.99.0.10"),
        ),
        ("udp-blocked", format!("udp {b} 9001"), Denied),
        (
            "tcp-allowed-ip",
            format!("tcp {a} 9000"),
            Reached("tcp-ok 10.99.0.10"),
        ),
        ("tcp-blocked-ip", format!("tcp {b} 9000"), Denied),
        (
            "tcp-allowed-cidr",
            format!("tcp {ALLOW_CIDR_HOST} 9000"),
            Reached("tcp-ok 10.99.2.10"),
        ),
        (
            "tcp-blocked-cidr",
            format!("tcp {BLOCK_CIDR_HOST} 9000"),
            Denied,
        ),
    ];
    let probes: Vec<(&str, &str, Expect)> = probes
        .iter()
        .map(|(n, c, e)| (*n, c.as_str(), *e))
        .collect();
    assert!(probes.len() >= 30);
    let failures = run_probes(&computer, &probes).await;
    computer.stop().await.unwrap();
    assert!(
        failures.is_empty(),
        "{} probes failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `mode: block`: everything but the rules (and the always-denied set);
/// learn mode records what the computer reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_policy_denies_only_its_rules_and_learn_mode_records_the_rest() {
    let _net = TestNet::get();
    let _one = BLOCK.lock().await;
    let runtime = runtime().await;
    let options = LaunchOptions {
        egress_learn: true,
        ..LaunchOptions::default()
    };
    let computer = launch(&runtime, &block_template(), options).await;
    use Expect::{Denied, Reached};
    let probes = [
        (
            "block-other-name",
            "http http://www.allowed.test/",
            Reached("200 host=www.allowed.test"),
        ),
        (
            "block-other-https",
            "http -k https://exact.test/",
            Reached("200 host=exact.test"),
        ),
        (
            "block-named",
            "http --resolve blocked.test:80:10.99.0.10 http://blocked.test/",
            Denied,
        ),
        ("block-dns", "dnsq blocked.test 10.0.2.3", Denied),
        ("block-cidr", "tcp 10.99.1.10 9000", Denied),
        (
            "block-other-ip",
            "tcp 10.99.0.20 9000",
            Reached("tcp-ok 10.99.0.20"),
        ),
        (
            "block-udp-other-ip",
            "udp 10.99.0.20 9001",
            Reached("udp-ok 10.99.0.20"),
        ),
        ("block-metadata", "http http://169.254.169.254/", Denied),
        ("block-host-address", "tcp 10.99.0.1 8081", Denied),
    ];
    let failures = run_probes(&computer, &probes).await;
    let learned = computer.egress_learned().await.unwrap();
    let by_runtime = runtime.egress_learned(computer.id()).await.unwrap();
    computer.stop().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(learned, by_runtime);
    for name in ["www.allowed.test", "exact.test"] {
        assert!(learned.names.iter().any(|n| n == name), "{learned:?}");
    }
    assert!(
        learned
            .addresses
            .iter()
            .any(|a| a.to_string() == "10.99.0.20"),
        "{learned:?}"
    );
    assert!(
        !learned
            .addresses
            .iter()
            .any(|a| a.to_string() == "10.99.1.10"),
        "a denied flow is not learned: {learned:?}"
    );
    assert!(
        learned
            .policy
            .starts_with("egress_policy:\n  mode: allow\n"),
        "{}",
        learned.policy
    );
    // The policy it prints is one a template takes.
    let pasted = self::template("egress-learned", &learned.policy);
    let rules = &pasted.egress_policy().unwrap().rules;
    assert!(
        rules.iter().any(|r| r.to_string() == "www.allowed.test"),
        "{rules:?}"
    );
}

/// Two clones of one snapshot (same guest address and MAC) both reach the
/// network and cannot reach each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clones_of_one_snapshot_reach_the_network_and_not_each_other() {
    let _net = TestNet::get();
    let runtime = runtime().await;
    let template = allow_template();
    let a = launch(&runtime, &template, LaunchOptions::default()).await;
    let b = launch(&runtime, &template, LaunchOptions::default()).await;
    let b_addr = bash(
        &b,
        "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1",
    )
    .await
    .trim()
    .to_owned();
    assert_eq!(b_addr, "10.0.2.15", "clones keep the snapshot's address");
    // B's namespace address, as the host sees it.
    let b_ns = namespace_address(b.id());
    use Expect::{Denied, Reached};
    let to_b = format!("tcp {b_ns} 7000");
    let probes = [
        (
            "clone-reaches-hosts",
            "tcp 10.99.0.10 9000",
            Reached("tcp-ok"),
        ),
        (
            "clone-own-service",
            "tcp 10.0.2.15 7000",
            Reached("guest-7000"),
        ),
        ("clone-other-namespace", to_b.as_str(), Denied),
        ("clone-other-gateway", "tcp 10.0.2.2 7000", Denied),
    ];
    let mut failures = run_probes(&a, &probes).await;
    failures.extend(run_probes(&b, &probes[..1]).await);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The address of computer `id`'s namespace end of its veth.
fn namespace_address(id: &str) -> String {
    let (ok, out) = sh(&format!("ip -n orgo-{id} -4 -o addr show dev veth0"));
    assert!(ok, "{out}");
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Public and host-only ports, TCP and UDP, reach the guest's services from
/// the host; stop removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_forwarded_from_the_host_and_removed_on_stop() {
    let _net = TestNet::get();
    let runtime = runtime().await;
    let template = allow_template();
    let computer = launch(&runtime, &template, LaunchOptions::default()).await;
    let ports = computer.ports().to_vec();
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert_eq!(
        (ports[2].internal, ports[2].protocol.as_str()),
        (8003, "udp")
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = [0u8; 64];
    let mut got = None;
    // The guest's service may still be starting: a few tries.
    for _ in 0..10 {
        udp.send_to(b"hi", ports[2].address).unwrap();
        if let Ok(n) = udp.recv(&mut reply) {
            got = Some(String::from_utf8_lossy(&reply[..n]).trim().to_owned());
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("guest-udp-8003"));
    assert_eq!(
        (ports[0].internal, ports[0].protocol.as_str()),
        (8000, "tcp")
    );
    assert_eq!(ports[1].address.ip().to_string(), "127.0.0.1");
    assert_ne!(ports[0].address.port(), 0);
    for (port, want) in [(&ports[0], "guest-8000"), (&ports[1], "guest-8001")] {
        assert_eq!(read_line_from(port.address), want, "{port}");
    }
    let listed = runtime.computers().unwrap();
    let record = listed
        .iter()
        .find(|c| c.record.id == computer.id())
        .unwrap();
    assert_eq!(record.record.ports, ports, "the record holds the mapping");

    let address = ports[0].address;
    computer.stop().await.unwrap();
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err(),
        "the port is closed once the computer stopped"
    );
}

/// An exact public port is that port; taken, it fails the launch, naming
/// its field, and leaves nothing of the launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_port_is_that_port_and_a_taken_one_fails_the_launch() {
    let _net = TestNet::get();
    let _one = BLOCK.lock().await;
    let runtime = runtime().await;
    let template = block_template();
    let computer = launch(&runtime, &template, LaunchOptions::default()).await;
    let ports = computer.ports().to_vec();
    assert_eq!(
        ports[0].address.to_string(),
        format!("127.0.0.1:{EXACT_PORT}")
    );
    assert_eq!(read_line_from(ports[0].address), "guest-8002");
    let before: Vec<String> = runtime
        .computers()
        .unwrap()
        .iter()
        .map(|c| c.record.id.clone())
        .collect();
    let error = runtime
        .launch(&template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    let text = orgo_runtime::ErrorChain(&error).to_string();
    assert!(text.contains("`apps[0].ports[0]`"), "{text}");
    assert!(
        matches!(error, orgo_runtime::RuntimeError::Port { .. }),
        "{error:?}"
    );
    let after: Vec<String> = runtime
        .computers()
        .unwrap()
        .iter()
        .map(|c| c.record.id.clone())
        .collect();
    assert_eq!(before, after, "the failed launch left nothing");
    computer.stop().await.unwrap();
}

fn read_line_from(address: std::net::SocketAddr) -> String {
    // The guest's service may still be starting: a few tries.
    let mut text = String::new();
    for _ in 0..20 {
        if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(10)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            text.clear();
            let _ = stream.read_to_string(&mut text);
            if !text.trim().is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    text.trim().to_owned()
}

/// `hardware.bandwidth_mbps` caps what the computer downloads and uploads
/// to within 20% of the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_is_capped_both_ways() {
    const MBPS: f64 = 16.0;
    let _net = TestNet::get();
    let _one = BLOCK.lock().await;
    let runtime = runtime().await;
    let computer = launch(&runtime, &block_template(), LaunchOptions::default()).await;
    // Download: 8 MiB from the test host's bulk server; the guest times it.
    let down = bash(
        &computer,
        "exec 3<>/dev/tcp/10.99.0.10/9000; head -n1 <&3 >/dev/null; echo 'bulk 8' >&3; \
         s=$(date +%s.%N); n=$(cat <&3 | wc -c); e=$(date +%s.%N); echo \"$n $s $e\"",
    )
    .await;
    let f: Vec<f64> = down
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let down_mbps = f[0] * 8.0 / 1e6 / (f[2] - f[1]);
    // Upload: 6 MiB to the test host's sink, which times them.
    let up = bash(
        &computer,
        "exec 3<>/dev/tcp/10.99.0.10/9002; { echo 6291456; head -c 6291456 /dev/zero; } >&3; head -n1 <&3",
    )
    .await;
    let up_mbps: f64 = up
        .strip_prefix("sink-mbps ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the sink said `{up}`"));
    computer.stop().await.unwrap();
    eprintln!("bandwidth cap {MBPS} Mbit/s: down {down_mbps:.1}, up {up_mbps:.1}");
    for (way, got) in [("down", down_mbps), ("up", up_mbps)] {
        assert!(
            (got - MBPS).abs() <= MBPS * 0.2,
            "{way}: {got:.1} Mbit/s against a cap of {MBPS}"
        );
    }
}

/// Nothing of a computer's network outlives it: namespaces, host links,
/// netd processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_computer_leaves_no_namespace_link_or_netd() {
    let _net = TestNet::get();
    let runtime = runtime().await;
    let computer = launch(&runtime, &allow_template(), LaunchOptions::default()).await;
    let id = computer.id().to_owned();
    let netns = format!("orgo-{id}");
    let veth = format!("vo-{}", &id[2..]);
    assert!(std::path::Path::new("/run/netns").join(&netns).exists());
    assert!(sh(&format!("ip link show {veth}")).0);
    assert!(netd_runs(&id));
    computer.stop().await.unwrap();
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
    assert!(!sh(&format!("ip link show {veth}")).0, "{veth} is gone");
    assert!(!netd_runs(&id), "{id}'s netd is gone");
}

/// Whether a netd of computer `id` runs (a process started with its
/// `netd.json`).
fn netd_runs(id: &str) -> bool {
    let config = format!("computers/{id}/netd.json");
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            c.split(|&b| b == 0)
                .any(|a| String::from_utf8_lossy(a).ends_with(&config))
        })
    })
}
