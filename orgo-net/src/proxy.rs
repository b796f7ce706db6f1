//! The egress proxy: the guest's TCP 80/443, redirected to it inside the
//! VM's namespace. It reads the name the connection carries, decides,
//! resolves the name on the host and dials the result itself.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::learn::{LearnEntry, Via};
use crate::netd::Shared;
use crate::policy::Verdict;
use crate::resolve;
use crate::sniff::{MAX_SNIFF, Sniffed, Target, sniff};

/// The most connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// How long the guest has to send the bytes that name its host.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// The relay's buffer each way (tokio's default 8 KiB costs throughput).
pub(crate) const RELAY_BUF: usize = 64 << 10;
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections while under [`MAX_CONNECTIONS`]; each gets its own task.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept: go on.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_one(&shared, stream).await;
            drop(permit);
        });
    }
}

pub(crate) fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}

/// What the proxy decided for one connection.
enum Decision {
    /// Dial these addresses in turn, on the original port.
    Dial(Vec<IpAddr>, Option<LearnEntry>),
    /// Refuse, with why.
    Deny(String),
}

async fn serve_one(shared: &Shared, mut guest: TcpStream) {
    let Ok(original) = original_destination(&guest) else {
        return;
    };
    // Small TLS records must not wait for the guest's delayed ACK.
    let _ = guest.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let sniffed = read_head(&mut guest, &mut buf).await;
    // HTTP, whether or not its head is valid: it gets a 403 it can read.
    let is_http = matches!(sniffed, Sniffed::Http(_))
        || (matches!(sniffed, Sniffed::Invalid(_))
            && buf.first().is_some_and(u8::is_ascii_uppercase));
    let port = original.port();
    let decision = decide(shared, sniffed, original).await;
    let (addrs, learned) = match decision {
        Decision::Dial(addrs, learned) => (addrs, learned),
        Decision::Deny(why) => {
            shared.log(format_args!("denied {original}: {why}"));
            if is_http {
                let body = format!("orgo egress policy: {why}\n");
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = guest.write_all(response.as_bytes()).await;
                let _ = guest.shutdown().await;
            }
            return;
        }
    };
    let Some(mut upstream) = dial(&addrs, port).await else {
        shared.log(format_args!("cannot reach {addrs:?} port {port}"));
        return;
    };
    if let Some(entry) = learned {
        shared.learn.record(entry);
    }
    if upstream.write_all(&buf).await.is_err() {
        return;
    }
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut guest, &mut upstream, RELAY_BUF, RELAY_BUF)
            .await;
}

/// The destination the guest dialled, before the namespace's redirect.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let raw = getsockopt(stream, OriginalDst)?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(raw.sin_port),
    )))
}

/// Reads until the bytes name their host, or [`MAX_SNIFF`] bytes, or
/// [`SNIFF_TIMEOUT`]; whatever was read stays in `buf` to replay.
async fn read_head(guest: &mut TcpStream, buf: &mut Vec<u8>) -> Sniffed {
    let deadline = Instant::now() + SNIFF_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        let want = (MAX_SNIFF - buf.len()).min(chunk.len());
        let read = tokio::time::timeout_at(deadline, guest.read(&mut chunk[..want])).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            // Closed, failed or silent: decide on what came (the address only).
            _ => {
                return match sniff(buf) {
                    Sniffed::NeedMore => Sniffed::Other,
                    other => other,
                };
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        match sniff(buf) {
            Sniffed::NeedMore if buf.len() < MAX_SNIFF => continue,
            Sniffed::NeedMore => return Sniffed::Invalid("no host named in the first 16 KiB"),
            other => return other,
        }
    }
}

async fn decide(shared: &Shared, sniffed: Sniffed, original: SocketAddr) -> Decision {
    let port = original.port();
    let (target, via) = match sniffed {
        Sniffed::Tls(Some(target)) => (target, Via::Sni),
        Sniffed::Http(Some(target)) => (target, Via::Host),
        Sniffed::Invalid(why) => return Decision::Deny(why.into()),
        Sniffed::Tls(None) | Sniffed::Http(None) | Sniffed::Other | Sniffed::NeedMore => {
            (Target::Addr(original.ip()), Via::Host)
        }
    };
    match target {
        Target::Addr(addr) => match shared.policy.check_addr(addr, &shared.denied) {
            Verdict::Allowed => Decision::Dial(vec![addr], Some(LearnEntry::Addr { addr, port })),
            verdict => Decision::Deny(format!("`{addr}`: {verdict}")),
        },
        Target::Name(name) => {
            if !shared.policy.allows_name(&name) {
                return Decision::Deny(format!("`{name}` is not allowed"));
            }
            let addrs = match resolve::lookup(shared.upstream, &name).await {
                Ok(addrs) if !addrs.is_empty() => addrs,
                Ok(_) => return Decision::Deny(format!("`{name}` has no address")),
                Err(e) => return Decision::Deny(format!("cannot resolve `{name}`: {e}")),
            };
            let mut allowed = Vec::new();
            let mut refused = None;
            for addr in addrs {
                match shared.policy.check_resolved(addr, &shared.denied) {
                    Verdict::Allowed => allowed.push(addr),
                    verdict => {
                        refused.get_or_insert(format!("`{name}` is `{addr}`: {verdict}"));
                    }
                }
            }
            // One denied address denies the name: a name that mixes the
            // host's addresses with public ones is a rebinding attempt.
            if let Some(why) = refused {
                return Decision::Deny(why);
            }
            let entry = LearnEntry::Name {
                name,
                port: Some(port),
                via,
            };
            Decision::Dial(allowed, Some(entry))
        }
    }
}

/// Dials each address in turn on `port`; the first that answers.
async fn dial(addrs: &[IpAddr], port: u16) -> Option<TcpStream> {
    for &addr in addrs {
        let connect = TcpStream::connect(SocketAddr::new(addr, port));
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}
