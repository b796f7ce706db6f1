//! `orgo serve` (the HTTP API, `orgo-server`) and `orgo keys` (its API
//! keys).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use orgo_server::{KeyStore, Limits, Server, ServerConfig};
use orgo_template::Name;

use crate::{Failure, emit};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Where to listen (`HOST:PORT`; port 0 picks one). The address bound
    /// is printed on stdout, the only line there.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// The one host directory `file://` sources of templates may name
    /// (default: none may).
    #[arg(long, value_name = "DIR")]
    allow_file_root: Option<PathBuf>,
    /// How many builds may run at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().builds)]
    max_builds: usize,
    /// How many computers one namespace may have.
    #[arg(long, value_name = "N", default_value_t = Limits::default().computers_per_namespace)]
    max_computers: usize,
    /// Computers to keep restored ahead per template and shape (default:
    /// `$ORGO_WARM_POOL`, else 0).
    #[arg(long, value_name = "N")]
    warm_pool: Option<usize>,
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key; print it, the only time it is shown, as the only line
    /// on stdout.
    Create {
        /// The namespace it may use.
        #[arg(long)]
        namespace: String,
        /// It may only read.
        #[arg(long)]
        read_only: bool,
    },
    /// List the keys (never the keys themselves).
    List {
        /// One JSON object per key.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (`k-...`).
        id: String,
    },
}

pub(crate) fn serve(
    root: Option<PathBuf>,
    rt: &crate::computer::RuntimeArgs,
    args: ServeArgs,
) -> Result<(), Failure> {
    let (tokio, runtime) = crate::computer::open_for_server(root, rt, args.warm_pool)?;
    let config = ServerConfig {
        limits: Limits {
            builds: args.max_builds,
            computers_per_namespace: args.max_computers,
            ..Limits::default()
        },
        allow_file_root: args.allow_file_root,
    };
    tokio.block_on(async move {
        let (server, recovered) = Server::open_recovered(runtime, config)
            .await
            .map_err(Failure::error)?;
        if !recovered.orphans.is_empty() {
            eprintln!(
                "orgo: removed orphaned computers: {}",
                recovered.orphans.join(" ")
            );
        }
        if recovered.interrupted_builds > 0 {
            eprintln!(
                "orgo: {} builds interrupted by the last stop are now failed",
                recovered.interrupted_builds
            );
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::Input(format!("cannot listen on `{}`: {e}", args.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Failure::Input(format!("cannot read the bound address: {e}")))?;
        emit(&format!("{bound}\n"));
        eprintln!(
            "orgo: serving http://{bound}/api ({} computers found)",
            recovered.computers
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::Input(format!("cannot watch for SIGTERM: {e}")))?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("orgo: stopping: builds are cancelled, computers keep running");
        };
        server
            .serve(listener, shutdown)
            .await
            .map_err(Failure::error)
    })
}

pub(crate) fn keys(root: Option<PathBuf>, command: KeysCommand) -> Result<(), Failure> {
    let home = root
        .or_else(orgo_snapshot::LocalStore::default_root)
        .ok_or_else(|| {
            Failure::Input("no store: set `ORGO_HOME` or `HOME`, or pass `--store DIR`".into())
        })?;
    let keys = KeyStore::new(&home);
    match command {
        KeysCommand::Create {
            namespace,
            read_only,
        } => {
            let ns = Name::new(&namespace).map_err(|e| Failure::Input(e.to_string()))?;
            let (key, info) = keys.create(&ns, read_only).map_err(Failure::error)?;
            eprintln!(
                "orgo: created key `{}` for namespace `{}`{} (shown once)",
                info.id,
                info.namespace,
                if info.read_only { ", read-only" } else { "" }
            );
            emit(&format!("{key}\n"));
        }
        KeysCommand::List { json } => {
            let mut out = String::new();
            if !json {
                out.push_str("ID               NAMESPACE        ACCESS      CREATED\n");
            }
            for k in keys.list().map_err(Failure::error)? {
                if json {
                    out.push_str(&format!(
                        "{}\n",
                        serde_json::json!({"id": k.id, "namespace": k.namespace, "read_only": k.read_only, "created_unix": k.created_unix})
                    ));
                } else {
                    out.push_str(&format!(
                        "{:<16} {:<16} {:<11} {}\n",
                        k.id,
                        k.namespace,
                        if k.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        },
                        k.created_unix
                    ));
                }
            }
            emit(&out);
        }
        KeysCommand::Revoke { id } => match keys.revoke(&id) {
            Ok(info) => emit(&format!("{}\n", info.id)),
            Err(orgo_server::KeyError::NotFound(id)) => {
                return Err(Failure::No(format!("no key `{id}`")));
            }
            Err(e) => return Err(Failure::error(e)),
        },
    }
    Ok(())
}
