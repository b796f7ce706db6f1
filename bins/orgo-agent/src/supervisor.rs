//! Supervised services: one monitor thread per service starts its process,
//! learns how it ended, and restarts it by policy with backoff.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::agent::Agent;
use crate::exec::prepare;
use crate::files::OpError;
use crate::process::{signal_by_name, signal_group};
use crate::protocol::{
    Command, ErrorCode, Event, ExitStatus, RestartPolicy, ServiceSpec, ServiceState, ServiceStatus,
};

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

enum Ctl {
    Exited(ExitStatus),
    Stop(Sender<()>),
    Restart,
}

struct Handle {
    ctl: Sender<Ctl>,
    status: Arc<Mutex<ServiceStatus>>,
}

/// The registered services.
#[derive(Default)]
pub(crate) struct Supervisor {
    services: Mutex<HashMap<String, Handle>>,
}

impl Supervisor {
    /// Registers `spec` and starts it; a service of that name is stopped first.
    pub(crate) fn start(&self, agent: &Arc<Agent>, spec: ServiceSpec) -> Result<(), OpError> {
        let stop_signal = signal_by_name(&spec.stop_signal).ok_or_else(|| {
            OpError::new(
                ErrorCode::BadRequest,
                format!("unknown stop signal `{}`", spec.stop_signal),
            )
        })?;
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(OpError::new(
                ErrorCode::BadRequest,
                format!("bad service name `{}`", spec.name),
            ));
        }
        let _ = self.stop(&spec.name);
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(ServiceStatus {
            name: spec.name.clone(),
            state: ServiceState::Backoff,
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let monitor = Monitor {
            agent: Arc::downgrade(agent),
            spec,
            stop_signal,
            tx: tx.clone(),
            rx,
            status: Arc::clone(&status),
        };
        std::thread::Builder::new()
            .name(format!("svc-{}", monitor.spec.name))
            .spawn(move || monitor.run())
            .map_err(|e| OpError::io("cannot start a monitor thread", &e))?;
        let name = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .name
            .clone();
        self.lock().insert(name, Handle { ctl: tx, status });
        Ok(())
    }

    /// Stops a service (stop signal, grace period, then `KILL`) and forgets it.
    pub(crate) fn stop(&self, name: &str) -> Result<(), OpError> {
        let handle = self.lock().remove(name).ok_or_else(|| not_found(name))?;
        let (tx, rx) = mpsc::channel();
        if handle.ctl.send(Ctl::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
        Ok(())
    }

    /// Stops every service.
    pub(crate) fn stop_all(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in names {
            let _ = self.stop(&name);
        }
    }

    /// Stops and starts a service at once, its backoff reset.
    pub(crate) fn restart(&self, name: &str) -> Result<(), OpError> {
        let services = self.lock();
        let handle = services.get(name).ok_or_else(|| not_found(name))?;
        handle
            .ctl
            .send(Ctl::Restart)
            .map_err(|_| OpError::new(ErrorCode::Io, format!("service `{name}` is gone")))
    }

    /// Every service's status, by name.
    pub(crate) fn status(&self) -> Vec<ServiceStatus> {
        let mut list: Vec<ServiceStatus> = self
            .lock()
            .values()
            .map(|h| h.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(name: &str) -> OpError {
    OpError::new(ErrorCode::NotFound, format!("no service `{name}`"))
}

struct Monitor {
    agent: Weak<Agent>,
    spec: ServiceSpec,
    stop_signal: Signal,
    tx: Sender<Ctl>,
    rx: Receiver<Ctl>,
    status: Arc<Mutex<ServiceStatus>>,
}

impl Monitor {
    fn set(&self, f: impl FnOnce(&mut ServiceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn event(&self, event: Event) {
        if let Some(agent) = self.agent.upgrade() {
            agent.outbox().event(event);
        }
    }

    fn run(self) {
        let backoff = self.spec.backoff;
        let mut delay = Duration::from_millis(backoff.initial_ms);
        let mut restarts = 0u32;
        loop {
            let started = Instant::now();
            let status = match self.start(restarts) {
                Ok(pid) => match self.rx.recv() {
                    Ok(Ctl::Exited(status)) => status,
                    Ok(Ctl::Stop(done)) => {
                        self.terminate(pid);
                        self.set(|s| (s.state, s.pid) = (ServiceState::Stopped, None));
                        let _ = done.send(());
                        return;
                    }
                    Ok(Ctl::Restart) => {
                        self.terminate(pid);
                        restarts += 1;
                        delay = Duration::from_millis(backoff.initial_ms);
                        continue;
                    }
                    Err(_) => return,
                },
                Err(message) => {
                    self.set(|s| s.state = ServiceState::Failed);
                    self.event(Event::ServiceFailed {
                        name: self.spec.name.clone(),
                        message,
                    });
                    ExitStatus {
                        code: None,
                        signal: None,
                    }
                }
            };
            let restarting = match self.spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::No => false,
            };
            self.set(|s| {
                s.pid = None;
                s.last_exit = Some(status);
                s.state = if restarting {
                    ServiceState::Backoff
                } else {
                    ServiceState::Stopped
                };
            });
            self.event(Event::ServiceExited {
                name: self.spec.name.clone(),
                status,
                restarting,
            });
            if started.elapsed() >= Duration::from_millis(backoff.reset_after_ms) {
                delay = Duration::from_millis(backoff.initial_ms);
            }
            let wait = if restarting { Some(delay) } else { None };
            let next = match wait {
                Some(d) => self.rx.recv_timeout(d),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Err(RecvTimeoutError::Timeout) => {
                    delay = (delay * 2).min(Duration::from_millis(backoff.max_ms));
                }
                Ok(Ctl::Restart) => delay = Duration::from_millis(backoff.initial_ms),
                Ok(Ctl::Stop(done)) => {
                    self.set(|s| s.state = ServiceState::Stopped);
                    let _ = done.send(());
                    return;
                }
                Ok(Ctl::Exited(_)) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            restarts += 1;
        }
    }

    /// Starts the process; its exit arrives as [`Ctl::Exited`].
    fn start(&self, restarts: u32) -> Result<u32, String> {
        let agent = self.agent.upgrade().ok_or("the agent is gone")?;
        let spec = &self.spec;
        let mut prepared = prepare(
            &agent,
            &Command::Shell(spec.run.clone()),
            &spec.env,
            spec.cwd.as_deref(),
            spec.user.as_deref(),
        )
        .map_err(|e| e.message)?;
        let cmd = &mut prepared.command;
        cmd.stdin(std::process::Stdio::null());
        match &spec.log {
            Some(log) => {
                if let Some(dir) = std::path::Path::new(log).parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(|e| format!("cannot open log `{log}`: {e}"))?;
                let copy = file
                    .try_clone()
                    .map_err(|e| format!("cannot open log `{log}`: {e}"))?;
                cmd.stdout(file).stderr(copy);
            }
            None => {
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        let tx = self.tx.clone();
        let child = agent
            .spawner()
            .spawn(cmd, move |status| {
                let _ = tx.send(Ctl::Exited(status));
            })
            .map_err(|e| format!("cannot start `{}`: {e}", spec.run))?;
        let pid = child.id();
        self.set(|s| {
            s.state = ServiceState::Running;
            s.pid = Some(pid);
            s.restarts = restarts;
        });
        self.event(Event::ServiceStarted {
            name: spec.name.clone(),
            pid,
            restarts,
        });
        Ok(pid)
    }

    /// Sends the stop signal to the process group, waits out the grace
    /// period, then kills; returns once the process has ended.
    fn terminate(&self, pid: u32) {
        signal_group(pid, self.stop_signal);
        let grace = self
            .spec
            .stop_timeout_ms
            .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_millis);
        let deadline = Instant::now() + grace;
        let mut killed = false;
        let mut pending = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = if killed {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.rx.recv_timeout(left)
            };
            match msg {
                Ok(Ctl::Exited(status)) => {
                    self.set(|s| s.last_exit = Some(status));
                    break;
                }
                Ok(Ctl::Stop(done)) => pending.push(done),
                Ok(Ctl::Restart) => {}
                Err(RecvTimeoutError::Timeout) => {
                    signal_group(pid, Signal::KILL);
                    killed = true;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for done in pending {
            let _ = self.tx.send(Ctl::Stop(done));
        }
    }
}
