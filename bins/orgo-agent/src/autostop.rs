//! Auto-stop: the agent keeps the idle clock, so it runs whether or not
//! any host process does (a computer launched by `orgo launch`, which
//! exits, stops on time too).
//!
//! **Activity** is any host request that runs or moves something, from
//! its start to its end (exec, files, hooks, services, terminals,
//! webhooks; not the observations
//! `hello`, `ping`, `service_status`, `list_logs`, `read_log`,
//! `read_events`, `idle`), a trigger firing, a terminal client attached to
//! tmux, and an established TCP connection from another machine to a port
//! a guest process listens on (a user talking to a service through a
//! public port). It is checked every [`CHECK_EVERY`]; the clock is the
//! guest's monotonic one, so time a snapshot spends on disk is not idle
//! time.
//!
//! **At the limit** the agent raises [`Event::AutoStop`], writes
//! [`AUTO_STOP_MARK`] on the console (the host's serial log of the
//! computer, where `orgo ps` reads why it stopped), runs `on_shutdown`
//! (`bash -c`, `set -e`, 10 minutes at most, output to the console), stops
//! the triggers, health checks and services, and powers off.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use orgo_agent_protocol::{AUTO_STOP_MARK, Command, DEFAULT_HOOK_TIMEOUT_MS, Event};

use crate::agent::Agent;
use crate::exec::prepare;

/// How often activity is sampled and the limit checked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The auto-stop setting; replacing it ends the old watcher.
#[derive(Default)]
pub(crate) struct AutoStop {
    generation: Arc<(Mutex<u64>, Condvar)>,
}

impl AutoStop {
    /// Stops the computer after `idle_ms` without activity (0: never).
    pub(crate) fn set(&self, agent: &Arc<Agent>, idle_ms: u64, on_shutdown: Option<String>) {
        agent.note_activity();
        let (lock, cvar) = &*self.generation;
        let mine = {
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        cvar.notify_all();
        if idle_ms == 0 {
            return;
        }
        let generation = Arc::clone(&self.generation);
        let agent = Arc::downgrade(agent);
        let limit = Duration::from_millis(idle_ms);
        let _ = std::thread::Builder::new()
            .name("auto-stop".into())
            .spawn(move || watch(&agent, &generation, mine, limit, on_shutdown));
    }
}

fn watch(
    agent: &Weak<Agent>,
    generation: &(Mutex<u64>, Condvar),
    mine: u64,
    limit: Duration,
    on_shutdown: Option<String>,
) {
    let tick = CHECK_EVERY.min(limit / 2).max(Duration::from_millis(10));
    loop {
        let (lock, cvar) = generation;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, tick, |g| *g == mine)
            .unwrap_or_else(|e| e.into_inner());
        if *guard != mine {
            return;
        }
        drop(guard);
        let Some(agent) = agent.upgrade() else { return };
        if busy_now(&agent) {
            agent.note_activity();
        }
        let idle = agent.idle();
        if idle >= limit {
            stop(&agent, idle, on_shutdown.as_deref());
            return;
        }
    }
}

fn stop(agent: &Arc<Agent>, idle: Duration, on_shutdown: Option<&str>) {
    let idle_ms = idle.as_millis() as u64;
    agent.event(Event::AutoStop { idle_ms });
    eprintln!("{AUTO_STOP_MARK} after {} s idle", idle.as_secs());
    if let Some(script) = on_shutdown {
        let script = format!("set -e\n{script}");
        if let Ok(mut prepared) = prepare(
            agent,
            &Command::Shell(script),
            &Default::default(),
            Some("/"),
            None,
        ) {
            let cmd = &mut prepared.command;
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::inherit());
            if let Ok((_child, waiter)) = agent.spawner().start(cmd) {
                let (status, timed_out) =
                    waiter.wait_or_kill(Some(Duration::from_millis(DEFAULT_HOOK_TIMEOUT_MS)));
                if !status.success() || timed_out {
                    eprintln!("orgo-agent: on_shutdown ended with {status}");
                }
            }
        }
    }
    agent.shut_down();
}

/// Whether something counts as activity right now: an attached tmux
/// client, or an inbound TCP connection from another machine.
fn busy_now(agent: &Agent) -> bool {
    let root = agent.root();
    tmux_client_attached(root) || inbound_connection(root)
}

fn tmux_client_attached(root: &std::path::Path) -> bool {
    let Ok(dir) = std::fs::read_dir(root.join("proc")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "tmux: client")
    })
}

/// An established connection to a listening port from a non-loopback peer,
/// in `/proc/net/tcp` or `/proc/net/tcp6`.
fn inbound_connection(root: &std::path::Path) -> bool {
    ["proc/net/tcp", "proc/net/tcp6"]
        .iter()
        .any(|table| std::fs::read_to_string(root.join(table)).is_ok_and(|text| inbound_in(&text)))
}

/// The metrics scrape port in `/proc/net/tcp`'s hex: scrapes are not activity.
const SCRAPE_PORT_HEX: &str = "24F8";

/// [`inbound_connection`] of one table's text.
pub(crate) fn inbound_in(table: &str) -> bool {
    let rows: Vec<(&str, &str, &str)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, local, remote, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((local, remote, state))
        })
        .collect();
    let port = |addr: &str| addr.rsplit(':').next().map(str::to_owned);
    let listening: Vec<String> = rows
        .iter()
        .filter(|(_, _, state)| *state == "0A")
        .filter_map(|(local, _, _)| port(local))
        .collect();
    rows.iter().any(|(local, remote, state)| {
        *state == "01"
            && port(local).is_some_and(|p| listening.contains(&p) && p != SCRAPE_PORT_HEX)
            && !loopback(remote.split(':').next().unwrap_or_default())
    })
}

/// Whether a `/proc/net/tcp{,6}` address (hex, in the kernel's byte
/// order) is loopback.
fn loopback(hex: &str) -> bool {
    match hex.len() {
        // IPv4: the first octet is the lowest byte.
        8 => u32::from_str_radix(hex, 16).is_ok_and(|ip| ip & 0xff == 127),
        32 => {
            hex == "00000000000000000000000001000000"
                || (hex.starts_with("0000000000000000FFFF0000") && loopback(&hex[24..]))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    #[test]
    fn only_inbound_connections_from_elsewhere_count() {
        // A listener on 8080; a connection to it from 10.0.2.2 (remote
        // 0202000A), one from 127.0.0.1, and an outbound one to port 443.
        let listening = "   0: 00000000:1F90 00000000:0000 0A 0 0 0\n";
        let from_afar = "   1: 0F02000A:1F90 0202000A:D431 01 0 0 0\n";
        let from_here = "   2: 0100007F:1F90 0100007F:D432 01 0 0 0\n";
        let outbound = "   3: 0F02000A:C350 08080808:01BB 01 0 0 0\n";
        let table = |rows: &[&str]| format!("{HEADER}{}", rows.concat());
        assert!(inbound_in(&table(&[listening, from_afar])));
        assert!(!inbound_in(&table(&[listening, from_here, outbound])));
        assert!(
            !inbound_in(&table(&[from_afar])),
            "no listener on that port"
        );
        let v6 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D433 01 0\n   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D434 01 0\n";
        assert!(
            !inbound_in(&format!("{HEADER}{v6}")),
            "loopback, v6 and v4-mapped"
        );
        let v6_far = "   3: 0000000000000000FFFF00000F02000A:1F90 0000000000000000FFFF00000202000A:D435 01 0\n";
        assert!(inbound_in(&format!("{HEADER}{v6}{v6_far}")));
        // A Prometheus scrape of the metrics port is not activity.
        assert_eq!(
            format!("{:04X}", crate::metrics::SCRAPE_PORT),
            SCRAPE_PORT_HEX
        );
        let scrape =
            "   0: 00000000:24F8 00000000:0000 0A 0\n   1: 0F02000A:24F8 0202000A:D431 01 0\n";
        assert!(!inbound_in(&format!("{HEADER}{scrape}")));
    }
}
