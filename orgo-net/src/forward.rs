//! Port forwarding: host listeners relayed to the guest's ports, dialled
//! from inside the VM's namespace.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::control::{ForwardPort, Proto};
use crate::netd::{GUEST_ADDR, Shared};
use crate::proxy::{RELAY_BUF, is_transient};

/// The most connections one TCP forward relays at once.
const MAX_TCP_RELAYS: usize = 1024;
/// The most peers one UDP forward relays at once.
const MAX_UDP_PEERS: usize = 256;
/// How long a UDP peer's relay stays without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// A bound host socket, not yet served.
enum Bound {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
}

/// Binds every port's host socket, then serves them all; if one cannot be
/// bound, none is kept and the error names its index.
pub(crate) async fn bind_all(
    shared: &Arc<Shared>,
    ports: &[ForwardPort],
) -> Result<Vec<SocketAddr>, (usize, String)> {
    let mut bound = Vec::with_capacity(ports.len());
    let mut addrs = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let result = match port.protocol {
            Proto::Tcp => TcpListener::bind(port.bind)
                .await
                .and_then(|l| Ok((l.local_addr()?, Bound::Tcp(l, port.internal)))),
            Proto::Udp => UdpSocket::bind(port.bind)
                .await
                .and_then(|s| Ok((s.local_addr()?, Bound::Udp(s, port.internal)))),
        };
        match result {
            Ok((addr, socket)) => {
                addrs.push(addr);
                bound.push(socket);
            }
            // Dropping `bound` closes the sockets already bound.
            Err(e) => {
                let proto = match port.protocol {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                return Err((i, format!("cannot bind `{}` ({proto}): {e}", port.bind)));
            }
        }
    }
    for socket in bound {
        let shared = shared.clone();
        match socket {
            Bound::Tcp(listener, internal) => {
                tokio::spawn(relay_tcp(shared, listener, internal));
            }
            Bound::Udp(socket, internal) => {
                tokio::spawn(relay_udp(shared, socket, internal));
            }
        }
    }
    Ok(addrs)
}

async fn relay_tcp(shared: Arc<Shared>, listener: TcpListener, internal: u16) {
    let guest = SocketAddr::from((GUEST_ADDR, internal));
    let slots = Arc::new(Semaphore::new(MAX_TCP_RELAYS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                shared.log(format_args!("forward to {guest}: {e}"));
                return;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let connect = shared.netns.connect(guest);
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(mut to_guest)) => {
                    let _ = client.set_nodelay(true);
                    let _ = to_guest.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut client,
                        &mut to_guest,
                        RELAY_BUF,
                        RELAY_BUF,
                    )
                    .await;
                }
                Ok(Err(e)) => shared.log(format_args!("forward to {guest}: {e}")),
                Err(_) => shared.log(format_args!("forward to {guest}: timed out")),
            }
            drop(permit);
        });
    }
}

/// Each host peer gets its own socket in the namespace, so the guest's
/// replies find their way back; a peer silent for [`UDP_IDLE`] is dropped.
async fn relay_udp(shared: Arc<Shared>, socket: UdpSocket, internal: u16) {
    let guest = SocketAddr::from((GUEST_ADDR, internal));
    let socket = Arc::new(socket);
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if is_transient(&e) => continue,
            Err(_) => return,
        };
        peers.retain(|_, inner| Arc::strong_count(inner) > 1);
        let inner = match peers.get(&from) {
            Some(inner) => inner.clone(),
            None if peers.len() >= MAX_UDP_PEERS => continue,
            None => {
                let Ok(inner) = shared.netns.udp(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
                    continue;
                };
                if inner.connect(guest).await.is_err() {
                    continue;
                }
                let inner = Arc::new(inner);
                peers.insert(from, inner.clone());
                let (back, outer) = (inner.clone(), socket.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, back.recv(&mut buf)).await
                    {
                        if outer.send_to(&buf[..n], from).await.is_err() {
                            break;
                        }
                    }
                });
                inner
            }
        };
        let _ = inner.send(&buf[..n]).await;
    }
}
