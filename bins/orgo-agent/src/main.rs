//! `orgo-agent`: as PID 1 of a guest, sets the machine up and serves the host
//! forever. `orgo-agent --version` prints its version and protocol.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!(
            "orgo-agent {} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            orgo_agent_protocol::PROTOCOL_VERSION
        );
        return;
    }
    if std::process::id() != 1 {
        eprintln!("orgo-agent: runs as the guest's init (PID 1); `--version` prints its version");
        std::process::exit(2);
    }
    orgo_agent::run_init()
}
