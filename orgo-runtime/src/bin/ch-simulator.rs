//! `ch-simulator`: behaves like `cloud-hypervisor --api-socket path=PATH`
//! (and `--version`) with the simulated REST API of
//! `orgo_runtime::ch::simulator`, for tests on hosts without Cloud
//! Hypervisor. Other arguments are refused.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut socket: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" | "-V" => {
                println!("cloud-hypervisor {}", orgo_runtime::ch::simulator::VERSION);
                return ExitCode::SUCCESS;
            }
            "--api-socket" => {
                let Some(value) = args.next() else {
                    eprintln!("ch-simulator: `--api-socket` needs a value");
                    return ExitCode::from(2);
                };
                let path = value.strip_prefix("path=").unwrap_or(&value);
                socket = Some(PathBuf::from(path));
            }
            other => {
                eprintln!("ch-simulator: unsupported argument `{other}`");
                return ExitCode::from(2);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("ch-simulator: usage: ch-simulator --api-socket path=PATH");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ch-simulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orgo_runtime::ch::simulator::serve(&socket)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ch-simulator: cannot serve on `{}`: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
