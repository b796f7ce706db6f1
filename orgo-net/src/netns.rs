//! Sockets inside a network namespace, from a process that stays in its
//! own: a thread joins the namespace (`setns`) and creates the sockets it is
//! asked for; a socket keeps the namespace it was created in.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::mpsc;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::sync::oneshot;

/// What the namespace thread makes.
enum Make {
    /// A TCP listener bound to the address, non-blocking.
    TcpListener(SocketAddr),
    /// A UDP socket bound to the address, non-blocking.
    Udp(SocketAddr),
    /// An unconnected, non-blocking TCP socket of the address's family.
    TcpSocket(SocketAddr),
}

type Reply = oneshot::Sender<std::io::Result<OwnedFd>>;

/// A handle on the namespace thread.
#[derive(Clone)]
pub(crate) struct Netns {
    requests: mpsc::Sender<(Make, Reply)>,
}

impl Netns {
    /// Starts a thread in the namespace whose file is `path`
    /// (`/run/netns/NAME`); fails when the file cannot be opened or joined.
    pub(crate) fn enter(path: &Path) -> std::io::Result<Netns> {
        let file = std::fs::File::open(path)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests, rx) = mpsc::channel::<(Make, Reply)>();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                if let Err(e) = setns(&file, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(std::io::Error::from(e)));
                    return;
                }
                drop(file);
                let _ = ready_tx.send(Ok(()));
                // Ends when every handle is dropped.
                for (make, reply) in rx {
                    let _ = reply.send(make_socket(make));
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the namespace thread ended"))??;
        Ok(Netns { requests })
    }

    async fn make(&self, make: Make) -> std::io::Result<OwnedFd> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((make, tx))
            .map_err(|_| std::io::Error::other("the namespace thread ended"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the namespace thread ended"))?
    }

    /// A TCP listener in the namespace.
    pub(crate) async fn tcp_listener(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio::net::TcpListener> {
        let fd = self.make(Make::TcpListener(addr)).await?;
        tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))
    }

    /// A bound UDP socket in the namespace.
    pub(crate) async fn udp(&self, addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
        let fd = self.make(Make::Udp(addr)).await?;
        tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
    }

    /// A TCP connection from inside the namespace to `addr`.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let fd = self.make(Make::TcpSocket(addr)).await?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        socket.connect(addr).await
    }
}

fn make_socket(make: Make) -> std::io::Result<OwnedFd> {
    match make {
        Make::TcpListener(addr) => {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener.into())
        }
        Make::Udp(addr) => {
            let socket = std::net::UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            Ok(socket.into())
        }
        Make::TcpSocket(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            Ok(socket(family, SockType::Stream, flags, None)?)
        }
    }
}
