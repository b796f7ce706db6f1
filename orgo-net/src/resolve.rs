//! Names resolved on the host, through the runtime's upstream resolver:
//! what the guest's DNS says never decides where the proxy dials.

use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns;

/// How long one exchange with the upstream may take.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A query id nobody outside can guess from the previous one.
pub(crate) fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish() as u16
}

/// One UDP exchange with `upstream`, asked again over TCP when the answer
/// is truncated. The reply must carry the query's id.
pub(crate) async fn exchange(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let id = dns::id(query).map_err(io::Error::other)?;
    let reply = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let bind: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(upstream).await?;
        socket.send(query).await?;
        let mut buf = vec![0; dns::MAX_MESSAGE];
        loop {
            let n = socket.recv(&mut buf).await?;
            if dns::id(&buf[..n]).ok() == Some(id) {
                buf.truncate(n);
                return Ok::<_, io::Error>(buf);
            }
        }
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if dns::truncated(&reply).unwrap_or(false) {
        return exchange_tcp(upstream, query).await;
    }
    Ok(reply)
}

/// One TCP exchange with `upstream`.
pub(crate) async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut stream = TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(io::Error::other)?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(query);
        stream.write_all(&out).await?;
        let len = usize::from(stream.read_u16().await?);
        let mut buf = vec![0; len];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// The addresses of `name`: its A records, or its AAAA records when it has
/// no A record.
pub(crate) async fn lookup(upstream: SocketAddr, name: &str) -> io::Result<Vec<IpAddr>> {
    for qtype in [dns::TYPE_A, dns::TYPE_AAAA] {
        let id = random_id();
        let reply = exchange(upstream, &dns::query(id, name, qtype)).await?;
        let (rcode, addrs) = dns::answer_addresses(&reply, id, name).map_err(io::Error::other)?;
        if rcode == dns::NXDOMAIN {
            return Ok(Vec::new());
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
    }
    Ok(Vec::new())
}
