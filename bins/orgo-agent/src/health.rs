//! Health checks: one thread per check probes every `every`, counts
//! consecutive failures and acts on `retries` of them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use orgo_agent_protocol::{Command, Event, HealthSpec, OnFail, Probe};

use crate::agent::Agent;
use crate::exec::{Prepared, prepare};

/// The running checks; replacing them bumps a generation that ends the old threads.
#[derive(Default)]
pub(crate) struct HealthChecks {
    generation: Arc<(Mutex<u64>, Condvar)>,
}

impl HealthChecks {
    /// Replaces every check with `checks`.
    pub(crate) fn set(&self, agent: &Arc<Agent>, checks: Vec<HealthSpec>) {
        agent.health_state().clear();
        let (lock, cvar) = &*self.generation;
        let generation = {
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        cvar.notify_all();
        for spec in checks {
            let gen_ref = Arc::clone(&self.generation);
            let agent = Arc::downgrade(agent);
            let _ = std::thread::Builder::new()
                .name(format!("health-{}", spec.app))
                .spawn(move || check_loop(&agent, &spec, &gen_ref, generation));
        }
    }

    /// Stops every check.
    pub(crate) fn clear(&self) {
        let (lock, cvar) = &*self.generation;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cvar.notify_all();
    }
}

/// Sleeps `d` unless the generation moves on; `false` when it did.
fn sleep_current(gen_ref: &(Mutex<u64>, Condvar), mine: u64, d: Duration) -> bool {
    let (lock, cvar) = gen_ref;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = cvar
        .wait_timeout_while(guard, d, |g| *g == mine)
        .unwrap_or_else(|e| e.into_inner());
    *guard == mine
}

fn check_loop(agent: &Weak<Agent>, spec: &HealthSpec, gen_ref: &(Mutex<u64>, Condvar), mine: u64) {
    let every = Duration::from_millis(spec.every_ms.max(10));
    let timeout = Duration::from_millis(spec.timeout_ms.max(10));
    let mut failures = 0u32;
    let mut healthy: Option<bool> = None;
    loop {
        if !sleep_current(gen_ref, mine, every) {
            return;
        }
        let Some(agent) = agent.upgrade() else { return };
        let result = probe(&agent, &spec.probe, timeout);
        // A probe may outlive a replacement of the checks: report nothing then.
        if *gen_ref.0.lock().unwrap_or_else(|e| e.into_inner()) != mine {
            return;
        }
        match result {
            Ok(()) => {
                failures = 0;
                agent.health_state().set(&spec.app, true, 0);
                if healthy != Some(true) {
                    healthy = Some(true);
                    agent.outbox().event(Event::Health {
                        app: spec.app.clone(),
                        healthy: true,
                        failures: 0,
                        message: None,
                    });
                }
            }
            Err(message) => {
                failures += 1;
                agent.health_state().set(&spec.app, false, failures);
                healthy = Some(false);
                agent.outbox().event(Event::Health {
                    app: spec.app.clone(),
                    healthy: false,
                    failures,
                    message: Some(message.clone()),
                });
                if failures >= spec.retries.max(1) {
                    act(&agent, spec, &message);
                    agent.triggers().health_failed(&agent, &spec.app, &message);
                    failures = 0;
                }
            }
        }
    }
}

fn act(agent: &Arc<Agent>, spec: &HealthSpec, message: &str) {
    let app = spec.app.clone();
    let (ok, detail) = match &spec.on_fail {
        OnFail::None => return,
        OnFail::RestartService { service } => match agent.supervisor().restart(service) {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e.message)),
        },
        OnFail::RestartVm => {
            agent
                .outbox()
                .event(Event::RestartVmRequested { app: app.clone() });
            (true, None)
        }
        OnFail::Alert => {
            agent.outbox().event(Event::Alert {
                app: app.clone(),
                message: message.to_string(),
                trigger: None,
            });
            (true, None)
        }
    };
    agent.outbox().event(Event::HealthAction {
        app,
        on_fail: spec.on_fail.clone(),
        ok,
        message: detail,
    });
}

/// Runs one probe within `timeout`.
pub(crate) fn probe(agent: &Arc<Agent>, probe: &Probe, timeout: Duration) -> Result<(), String> {
    match probe {
        Probe::Tcp { host, port } => tcp_connect(host, *port, timeout).map(drop),
        Probe::Http { url } => {
            if url.starts_with("https://") {
                let secs = format!("{:.3}", timeout.as_secs_f64());
                command(
                    agent,
                    Command::Argv(
                        ["curl", "-fsS", "-o", "/dev/null", "--max-time", &secs, url]
                            .map(String::from)
                            .to_vec(),
                    ),
                    timeout,
                )
            } else {
                http_get(url, timeout)
            }
        }
        Probe::Command { command: line } => command(agent, Command::Shell(line.clone()), timeout),
        Probe::Process { process } => {
            if process_running(process) {
                Ok(())
            } else {
                Err(format!("no process named `{process}`"))
            }
        }
    }
}

fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    let mut last = format!("`{host}` has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to `{addr}`: {e}"),
        }
    }
    Err(last)
}

/// `GET url` over HTTP/1.0; 2xx and 3xx pass.
fn http_get(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) => (authority, 80),
        },
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let deadline = Instant::now() + timeout;
    let mut stream = tcp_connect(host, port, timeout)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    let path = path.split('#').next().unwrap_or(path);
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: orgo-agent\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: `{}`", line.trim()))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status `{status}`"))
    }
}

fn command(agent: &Arc<Agent>, command: Command, timeout: Duration) -> Result<(), String> {
    let Prepared { mut command } =
        prepare(agent, &command, &Default::default(), None, None).map_err(|e| e.message)?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (_child, waiter) = agent
        .spawner()
        .start(&mut command)
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    match waiter.wait_or_kill(Some(timeout)) {
        (_, true) => Err(format!("timed out after {} ms", timeout.as_millis())),
        (status, false) if status.success() => Ok(()),
        (status, false) => Err(format!("the probe ended with {status}")),
    }
}

/// Whether a process's `comm` or argv\[0\] file name is `name`.
pub(crate) fn process_running(name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            let path = e.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return true;
            }
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
            !base.is_empty() && base == name.as_bytes()
        })
}
