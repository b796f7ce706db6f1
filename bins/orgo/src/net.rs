//! The network commands: `ports` (a computer's forwarded ports) and
//! `egress` (what a computer launched with `--egress-learn` reached, as the
//! smallest `egress_policy` allowing it).

use std::path::PathBuf;

use clap::Args;
use orgo_runtime::PortMapping;

use crate::computer::{RuntimeArgs, open, runtime_error};
use crate::{Failure, emit};

#[derive(Args)]
pub(crate) struct PortsArgs {
    /// The computer's id.
    pub(crate) id: String,
}

#[derive(Args)]
pub(crate) struct EgressArgs {
    /// The computer's id (launched with `orgo launch --egress-learn`).
    pub(crate) id: String,
}

/// `orgo ports ID`: one line per forwarded port, `INTERNAL/PROTOCOL
/// HOST_ADDRESS:HOST_PORT`.
pub(crate) fn ports(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: PortsArgs,
) -> Result<(), Failure> {
    let (_tokio, runtime) = open(root, rt)?;
    let status = runtime
        .computers()
        .map_err(runtime_error)?
        .into_iter()
        .find(|c| c.record.id == args.id)
        .ok_or_else(|| Failure::No(format!("no computer `{}`", args.id)))?;
    let mut out = String::new();
    for port in &status.record.ports {
        out.push_str(&format!("{port}\n"));
    }
    emit(&out);
    Ok(())
}

/// `orgo egress ID`: the smallest `egress_policy` allowing what the
/// computer reached, as YAML.
pub(crate) fn egress(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: EgressArgs,
) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    let learned = tokio
        .block_on(runtime.egress_learned(&args.id))
        .map_err(runtime_error)?;
    emit(&learned.policy);
    Ok(())
}

/// `orgo ps`'s PORTS column: `8000/tcp->127.0.0.1:41234`, comma-separated
/// (`-` for none).
pub(crate) fn ports_column(ports: &[PortMapping]) -> String {
    column(
        ports
            .iter()
            .map(|p| (p.internal, p.protocol.as_str(), p.address.to_string())),
    )
}

/// The PORTS column of `orgo ps` from `(internal, protocol, address)`
/// triples (a local record's ports or a server's): `-` for none.
pub(crate) fn column<'a>(ports: impl Iterator<Item = (u16, &'a str, String)>) -> String {
    let entries: Vec<String> = ports
        .map(|(internal, protocol, address)| format!("{internal}/{protocol}->{address}"))
        .collect();
    if entries.is_empty() {
        "-".to_owned()
    } else {
        entries.join(",")
    }
}

/// The ports as `orgo ps --json` shows them.
pub(crate) fn ports_json(ports: &[PortMapping]) -> serde_json::Value {
    ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "internal": p.internal, "protocol": p.protocol, "address": p.address.to_string(),
            })
        })
        .collect()
}
