//! The proxy's cost, on the namespace test network (`tests/common`; root):
//! - throughput of one 256 MiB HTTP download from a test server, through
//!   orgo-netd (guest namespace -> redirect -> proxy -> server) against the
//!   same download dialled directly from netd's namespace (no proxy);
//! - the latency of a first connection: connect, request, first response
//!   byte (HTTP), and curl's whole HTTPS request (`time_total`), through the
//!   proxy and direct.
//!
//! `cargo bench -p orgo-netd --bench proxy`; prints medians.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use common::{Net, in_ns};

const BULK: usize = 256 << 20;
const ROUNDS: usize = 5;
const LATENCY_ROUNDS: usize = 50;
const CURL_ROUNDS: usize = 15;

/// Downloads `/bulk/BULK` from `addr` in namespace `ns`; seconds taken.
fn download(ns: &str, addr: SocketAddr) -> f64 {
    in_ns(ns, move || {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connects");
        let request = format!("GET /bulk/{BULK} HTTP/1.1\r\nHost: {}\r\n\r\n", addr.ip());
        stream.write_all(request.as_bytes()).expect("sent");
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(total > BULK, "got {total} bytes");
        start.elapsed().as_secs_f64()
    })
}

/// Connect, one request, the first byte of the answer; seconds taken.
fn first_byte(ns: &str, addr: SocketAddr) -> f64 {
    in_ns(ns, move || {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connects");
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", addr.ip());
        stream.write_all(request.as_bytes()).expect("sent");
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("a byte");
        start.elapsed().as_secs_f64()
    })
}

/// curl's `time_total` for one HTTPS request from `ns`.
fn curl_https(ns: &str, args: &[&str]) -> f64 {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a time")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this with no argument: a quick check only.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut net = Net::new();
    net.start_netd(serde_json::json!({"mode": "allow", "rules": ["allowed.test", "10.99.0.4"]}));
    let server: SocketAddr = "10.99.0.4:80".parse().expect("an address");
    let (g, h) = (net.ns("g"), net.ns("h"));
    let rounds = if quick { 1 } else { ROUNDS };
    let mb = BULK as f64 / f64::from(1 << 20);
    let proxied = median((0..rounds).map(|_| mb / download(&g, server)).collect());
    let direct = median((0..rounds).map(|_| mb / download(&h, server)).collect());
    println!(
        "throughput, {} MiB download: through netd {proxied:.0} MiB/s, direct {direct:.0} MiB/s ({:.0}%)",
        BULK >> 20,
        100.0 * proxied / direct
    );
    let rounds = if quick { 2 } else { LATENCY_ROUNDS };
    let proxied = median((0..rounds).map(|_| first_byte(&g, server)).collect());
    let direct = median((0..rounds).map(|_| first_byte(&h, server)).collect());
    println!(
        "first HTTP byte: through netd {:.3} ms, direct {:.3} ms (+{:.3} ms)",
        proxied * 1e3,
        direct * 1e3,
        (proxied - direct) * 1e3
    );
    let rounds = if quick { 1 } else { CURL_ROUNDS };
    // By name through netd (it resolves allowed.test on the host), and the
    // same server dialled directly.
    let proxied = median(
        (0..rounds)
            .map(|_| {
                curl_https(
                    &g,
                    &[
                        "--resolve",
                        "allowed.test:443:10.99.0.2",
                        "https://allowed.test/id",
                    ],
                )
            })
            .collect(),
    );
    let direct = median(
        (0..rounds)
            .map(|_| curl_https(&h, &["https://10.99.0.2/id"]))
            .collect(),
    );
    println!(
        "first HTTPS request (curl time_total): through netd {:.3} ms, direct {:.3} ms (+{:.3} ms)",
        proxied * 1e3,
        direct * 1e3,
        (proxied - direct) * 1e3
    );
}
