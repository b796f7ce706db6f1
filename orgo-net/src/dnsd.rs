//! The VM's resolver (UDP and TCP, inside its namespace): names the policy
//! does not allow get NXDOMAIN, the others are asked of the host's upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::dns;
use crate::learn::{LearnEntry, Via};
use crate::netd::Shared;
use crate::proxy::is_transient;
use crate::resolve;

/// The most queries in flight at once (UDP) and TCP connections served.
const MAX_IN_FLIGHT: usize = 256;
/// The most queries on one TCP connection.
const MAX_TCP_QUERIES: usize = 64;
/// How long a TCP connection may stay silent.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The answer to one query: NXDOMAIN, the upstream's answer, or SERVFAIL;
/// `None` when the query cannot be read at all (dropped).
async fn answer(shared: &Shared, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let question = match dns::parse_query(query) {
        Ok(question) => question,
        Err(_) => return dns::answer_with(query, dns::REFUSED).ok(),
    };
    let allowed = question
        .name
        .as_deref()
        .is_some_and(|name| shared.policy.allows_name(name));
    if !allowed {
        return dns::nxdomain(query).ok();
    }
    let reply = if tcp {
        resolve::exchange_tcp(shared.upstream, query).await
    } else {
        resolve::exchange(shared.upstream, query).await
    };
    match reply {
        Ok(reply) => {
            if let Some(name) = question.name {
                shared.learn.record(LearnEntry::Name {
                    name,
                    port: None,
                    via: Via::Dns,
                });
            }
            Some(reply)
        }
        Err(e) => {
            shared.log(format_args!("upstream resolver {}: {e}", shared.upstream));
            dns::answer_with(query, dns::SERVFAIL).ok()
        }
    }
}

/// Serves UDP queries; each in its own task, at most [`MAX_IN_FLIGHT`] at once
/// (queries past that are dropped, as a busy resolver's are).
pub(crate) async fn serve_udp(shared: Arc<Shared>, socket: UdpSocket) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; dns::MAX_MESSAGE];
    loop {
        let (n, from): (usize, SocketAddr) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (shared, socket) = (shared.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&shared, &query, false).await {
                let _ = socket.send_to(&reply, from).await;
            }
            drop(permit);
        });
    }
}

/// Serves TCP connections, each in its own task, at most [`MAX_IN_FLIGHT`] at once.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_tcp_one(&shared, stream).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_one(shared: &Shared, mut stream: TcpStream) {
    for _ in 0..MAX_TCP_QUERIES {
        let read = tokio::time::timeout(TCP_IDLE, async {
            let len = usize::from(stream.read_u16().await?);
            let mut query = vec![0u8; len];
            stream.read_exact(&mut query).await?;
            Ok::<_, std::io::Error>(query)
        })
        .await;
        let Ok(Ok(query)) = read else { return };
        let Some(reply) = answer(shared, &query, true).await else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
