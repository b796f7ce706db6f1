//! Supervised services: one monitor thread per service starts its process,
//! learns how it ended, and restarts it by policy with backoff.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use orgo_agent_protocol::{
    Command, ErrorCode, Event, ExitStatus, RestartPolicy, ServiceSpec, ServiceState, ServiceStatus,
};
use rustix::process::Signal;

use crate::agent::Agent;
use crate::exec::prepare;
use crate::files::OpError;
use crate::process::{signal_by_name, signal_group};

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

enum Ctl {
    Exited(ExitStatus),
    /// Stop for good; the sender, if any, hears when the process has ended.
    Stop(Option<Sender<()>>),
    Restart,
}

/// A registered service. Its monitor holds only a weak reference to the
/// sender, so the monitor's channel lives no longer than its handles and its
/// processes; and a handle that is dropped (a concurrent start displaced it)
/// stops its monitor.
struct Handle {
    ctl: Arc<Sender<Ctl>>,
    status: Arc<Mutex<ServiceStatus>>,
}

impl Handle {
    /// Stops the monitor and waits until its process has ended.
    fn stop(self) {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(Ctl::Stop(Some(tx))).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Stop(None));
    }
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
        let (tx, rx) = mpsc::channel();
        let ctl = Arc::new(tx);
        let status = Arc::new(Mutex::new(ServiceStatus {
            name: spec.name.clone(),
            state: ServiceState::Backoff,
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        // Register under one lock, taking the place of any service of that
        // name; a concurrent start or stop then finds this one.
        let displaced = self.lock().insert(
            spec.name.clone(),
            Handle {
                ctl: Arc::clone(&ctl),
                status: Arc::clone(&status),
            },
        );
        // The displaced service ends before this one starts.
        if let Some(old) = displaced {
            old.stop();
        }
        let name = spec.name.clone();
        let monitor = Monitor {
            agent: Arc::downgrade(agent),
            spec,
            stop_signal,
            tx: Arc::downgrade(&ctl),
            rx,
            status: Arc::clone(&status),
        };
        drop(ctl);
        let spawned = std::thread::Builder::new()
            .name(format!("svc-{name}"))
            .spawn(move || monitor.run());
        if let Err(e) = spawned {
            let mut services = self.lock();
            if services
                .get(&name)
                .is_some_and(|h| Arc::ptr_eq(&h.status, &status))
            {
                services.remove(&name);
            }
            return Err(OpError::io("cannot start a monitor thread", &e));
        }
        Ok(())
    }

    /// Stops a service (stop signal, grace period, then `KILL`) and forgets it.
    pub(crate) fn stop(&self, name: &str) -> Result<(), OpError> {
        let handle = self.lock().remove(name).ok_or_else(|| not_found(name))?;
        handle.stop();
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
    /// The handle's sender: cloned into each process's exit callback, never
    /// kept, so the channel ends once the handle and the process are gone.
    tx: Weak<Sender<Ctl>>,
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
        // A stop may have come before this thread ran (a concurrent start
        // displaced it at once): then start nothing.
        let mut early = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            if let Ctl::Stop(done) = msg {
                early.push(done);
            }
        }
        if !early.is_empty() {
            self.set(|s| s.state = ServiceState::Stopped);
            acknowledge(early);
            return;
        }
        let backoff = self.spec.backoff;
        let mut delay = Duration::from_millis(backoff.initial_ms);
        let mut restarts = 0u32;
        loop {
            // No handle left: the service was forgotten; start nothing.
            let Some(tx) = self.tx.upgrade().map(|tx| Sender::clone(&tx)) else {
                return;
            };
            let started = Instant::now();
            let status = match self.start(restarts, tx) {
                Ok(pid) => match self.rx.recv() {
                    Ok(Ctl::Exited(status)) => status,
                    Ok(Ctl::Stop(done)) => {
                        let mut stops = self.terminate(pid);
                        stops.push(done);
                        self.set(|s| (s.state, s.pid) = (ServiceState::Stopped, None));
                        acknowledge(stops);
                        return;
                    }
                    Ok(Ctl::Restart) => {
                        let stops = self.terminate(pid);
                        if !stops.is_empty() {
                            self.set(|s| (s.state, s.pid) = (ServiceState::Stopped, None));
                            acknowledge(stops);
                            return;
                        }
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
                    acknowledge(vec![done]);
                    return;
                }
                Ok(Ctl::Exited(_)) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            restarts += 1;
        }
    }

    /// Starts the process; its exit arrives as [`Ctl::Exited`].
    fn start(&self, restarts: u32, tx: Sender<Ctl>) -> Result<u32, String> {
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
        // The agent writes the log (rotated at its cap) from a pipe: the
        // service's user need not be able to write the file.
        let path = match &spec.log {
            Some(log) => std::path::PathBuf::from(log),
            None => crate::logs::default_path(agent.root(), &spec.name),
        };
        let log = agent.logs().open(&spec.name, &path);
        let piped = crate::logs::piped_to(log, format!("log-{}", spec.name))
            .map_err(|e| format!("cannot open log `{}`: {e}", path.display()))?;
        cmd.stdout(piped.stdout).stderr(piped.stderr);
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
        if restarts > 0 {
            self.event(Event::ServiceRestarted {
                name: spec.name.clone(),
                restarts,
            });
        }
        Ok(pid)
    }

    /// Sends the stop signal to the process group, waits out the grace
    /// period, then kills; once the process has ended, kills what is left of
    /// its group (a child that ignores the stop signal). Returns the stops
    /// asked for meanwhile.
    fn terminate(&self, pid: u32) -> Vec<Option<Sender<()>>> {
        signal_group(pid, self.stop_signal);
        let grace = self
            .spec
            .stop_timeout_ms
            .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_millis);
        let deadline = Instant::now() + grace;
        let mut killed = false;
        let mut stops = Vec::new();
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
                Ok(Ctl::Stop(done)) => stops.push(done),
                Ok(Ctl::Restart) => {}
                Err(RecvTimeoutError::Timeout) => {
                    signal_group(pid, Signal::KILL);
                    killed = true;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        signal_group(pid, Signal::KILL);
        stops
    }
}

/// Tells each waiting stop that the service has ended.
fn acknowledge(stops: Vec<Option<Sender<()>>>) {
    for done in stops.into_iter().flatten() {
        let _ = done.send(());
    }
}
