//! `orgo-netd --config <run_dir>/netd.json`: the egress proxy, resolver and
//! port forwarder of one orgo computer (see the `orgo-net` crate). It writes
//! `ready` on stdout once its sockets listen, and serves until killed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use orgo_net::{Netd, NetdConfig};

const USAGE: &str = "usage: orgo-netd --config <netd.json>";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let config = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(path), None) if flag == "--config" => PathBuf::from(path),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("orgo-netd: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("orgo-netd: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: &std::path::Path) -> Result<(), orgo_net::NetError> {
    let netd = Netd::bind(NetdConfig::read(config)?).await?;
    let mut stdout = std::io::stdout().lock();
    let announced = stdout.write_all(b"ready\n").and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(source) = announced {
        return Err(orgo_net::NetError::Io {
            what: "write `ready` for",
            path: config.to_owned(),
            source,
        });
    }
    netd.run().await
}
