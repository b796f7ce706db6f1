//! The daemon: one per VM, in the host's namespace, serving the VM's
//! namespace (proxy, resolver) and the host (control, port forwards).

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener};

use crate::config::NetdConfig;
use crate::control::{ControlReply, ControlRequest, MAX_CONTROL_LINE, parse_request};
use crate::denied::DeniedSet;
use crate::error::NetError;
use crate::learn::{LearnEntry, MAX_LEARNED};
use crate::netns::Netns;
use crate::policy::Policy;
use crate::{dnsd, forward, proxy};

/// The guest's address inside its namespace (QEMU user networking's plan,
/// kept so snapshots restore unchanged).
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// The most denials written to stderr (a hostile guest could fill the disk).
const MAX_LOGGED: usize = 1000;

/// What every task of the daemon shares.
pub(crate) struct Shared {
    pub(crate) policy: Policy,
    pub(crate) denied: DeniedSet,
    pub(crate) upstream: SocketAddr,
    pub(crate) learn: LearnLog,
    pub(crate) netns: Netns,
    logged: AtomicUsize,
}

impl Shared {
    /// Writes one line to stderr, while under the bound.
    pub(crate) fn log(&self, line: std::fmt::Arguments<'_>) {
        let n = self.logged.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LOGGED {
            eprintln!("orgo-netd: {line}");
        } else if n == MAX_LOGGED {
            eprintln!("orgo-netd: {MAX_LOGGED} lines logged; no more");
        }
    }
}

/// The learn log: on or off, and the destinations already written.
pub(crate) struct LearnLog {
    on: AtomicBool,
    path: PathBuf,
    seen: Mutex<HashSet<LearnEntry>>,
}

impl LearnLog {
    /// Appends `entry` to the learn file when learn mode is on and the entry
    /// is new (at most [`MAX_LEARNED`] entries).
    pub(crate) fn record(&self, entry: LearnEntry) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = self.seen.lock().expect("the learn set is never poisoned");
        if seen.len() >= MAX_LEARNED || seen.contains(&entry) {
            return;
        }
        let mut line = serde_json::to_vec(&entry).expect("an entry serializes");
        line.push(b'\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(&line));
        match written {
            Ok(()) => {
                seen.insert(entry);
            }
            Err(e) => eprintln!("orgo-netd: cannot append to `{}`: {e}", self.path.display()),
        }
    }
}

/// A daemon whose sockets are bound: [`Netd::run`] serves them.
///
/// ```no_run
/// use orgo_net::{Netd, NetdConfig};
///
/// # async fn f() -> Result<(), orgo_net::NetError> {
/// let config = NetdConfig::read("/var/lib/orgo/run/c-0123456789ab/netd.json".as_ref())?;
/// let netd = Netd::bind(config).await?;
/// println!("ready");
/// netd.run().await
/// # }
/// ```
pub struct Netd {
    shared: Arc<Shared>,
    proxy: TcpListener,
    dns_udp: UdpSocket,
    dns_tcp: TcpListener,
    control: UnixListener,
    control_path: PathBuf,
}

impl Netd {
    /// Enumerates the host's addresses, joins the namespace and binds the
    /// proxy, the resolver (UDP and TCP) inside it and the control socket
    /// on the host.
    pub async fn bind(config: NetdConfig) -> Result<Netd, NetError> {
        let denied =
            DeniedSet::for_host(config.denied.iter().copied()).map_err(|source| NetError::Io {
                what: "list the host's addresses for",
                path: config.netns.clone(),
                source,
            })?;
        let netns = Netns::enter(&config.netns).map_err(|source| NetError::Io {
            what: "enter the network namespace",
            path: config.netns.clone(),
            source,
        })?;
        let socket = |what: &'static str, addr: SocketAddr| {
            move |source| NetError::Socket {
                what,
                addr: addr.to_string(),
                source,
            }
        };
        let proxy_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.proxy_port));
        let proxy = netns
            .tcp_listener(proxy_addr)
            .await
            .map_err(socket("bind the proxy to", proxy_addr))?;
        let dns_udp = netns
            .udp(config.dns)
            .await
            .map_err(socket("bind the resolver (UDP) to", config.dns))?;
        let dns_tcp = netns
            .tcp_listener(config.dns)
            .await
            .map_err(socket("bind the resolver (TCP) to", config.dns))?;
        let control_io = |what| {
            let path = config.control.clone();
            move |source| NetError::Io { what, path, source }
        };
        match std::fs::remove_file(&config.control) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(control_io("remove the old control socket")(e)),
        }
        let control =
            UnixListener::bind(&config.control).map_err(control_io("bind the control socket"))?;
        std::fs::set_permissions(
            &config.control,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(control_io("restrict the control socket"))?;
        let learn = LearnLog {
            on: AtomicBool::new(config.learn),
            path: config.learn_file.clone(),
            seen: Mutex::new(HashSet::new()),
        };
        Ok(Netd {
            shared: Arc::new(Shared {
                policy: config.policy,
                denied,
                upstream: config.dns_upstream,
                learn,
                netns,
                logged: AtomicUsize::new(0),
            }),
            proxy,
            dns_udp,
            dns_tcp,
            control,
            control_path: config.control,
        })
    }

    /// Serves until the process is killed.
    pub async fn run(self) -> Result<(), NetError> {
        let Netd {
            shared,
            proxy,
            dns_udp,
            dns_tcp,
            control,
            control_path,
        } = self;
        let proxy = tokio::spawn(proxy::serve(shared.clone(), proxy));
        let udp = tokio::spawn(dnsd::serve_udp(shared.clone(), dns_udp));
        let tcp = tokio::spawn(dnsd::serve_tcp(shared.clone(), dns_tcp));
        let ended = tokio::select! {
            r = proxy => r,
            r = udp => r,
            r = tcp => r,
            r = serve_control(shared, control) => Ok(r),
        };
        let source = match ended {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::io::Error::other("a listener closed"),
            Err(join) => std::io::Error::other(join.to_string()),
        };
        Err(NetError::Io {
            what: "serve",
            path: control_path,
            source,
        })
    }
}

/// Accepts control connections; each gets its own task.
async fn serve_control(shared: Arc<Shared>, control: UnixListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = control.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            loop {
                let mut line = String::new();
                let read = (&mut reader)
                    .take(MAX_CONTROL_LINE as u64)
                    .read_line(&mut line)
                    .await;
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if !line.ends_with('\n') {
                    let reply = ControlReply::error("request line too long or cut short", None);
                    let _ = write_reply(&mut write, &reply).await;
                    return;
                }
                let reply = match parse_request(line.trim_end()) {
                    Ok(request) => handle(&shared, request).await,
                    Err(message) => ControlReply::error(message, None),
                };
                if write_reply(&mut write, &reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &ControlReply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("a reply serializes");
    line.push(b'\n');
    write.write_all(&line).await
}

async fn handle(shared: &Arc<Shared>, request: ControlRequest) -> ControlReply {
    match request {
        ControlRequest::Ping => ControlReply::ok(),
        ControlRequest::Learn { on } => {
            shared.learn.on.store(on, Ordering::Relaxed);
            ControlReply::ok()
        }
        ControlRequest::Forward { ports } => match forward::bind_all(shared, &ports).await {
            Ok(bound) => ControlReply {
                bound: Some(bound),
                ..ControlReply::ok()
            },
            Err((index, message)) => ControlReply::error(message, Some(index)),
        },
    }
}
