//! Triggers: a source fires, the actions run in order.
//!
//! - `schedule`: a five-field cron expression ([`crate::cron`]) on the
//!   guest's clock (UTC). One thread wakes at each due minute, and at least
//!   every 5 s to notice a clock that jumped: a due minute more than 60 s
//!   in the past is skipped, not run, so a computer restored from a
//!   snapshot that spent hours on disk does not fire once per minute
//!   missed (nor does one whose clock was set forward).
//! - `webhook`: [`Op::FireWebhook`](orgo_agent_protocol::Op::FireWebhook)
//!   with the trigger's path; the body is the `run` actions' stdin.
//! - `file`: inotify on the path's directory (or on the path, when it is a
//!   directory: then any entry's change fires), re-armed as missing parent
//!   directories appear, so a file created after launch fires. `create` is
//!   created or moved in, `modify` written and closed, `delete` deleted or
//!   moved away.
//! - `health`: an app's check reaching its `retries` (after its `on_fail`).
//!
//! Actions: `run` runs `bash -c COMMAND` as root in `/`, with the
//! computer's environment plus `ORGO_TRIGGER` (the name),
//! `ORGO_TRIGGER_SOURCE` (its type) and `ORGO_TRIGGER_DETAIL` (what fired
//! it: the file and change, the webhook path, the minute, the app), and
//! for a file trigger `ORGO_FILE` and `ORGO_FILE_EVENT`; a webhook's body is
//! its stdin (else stdin is empty). It is killed with its process group
//! after [`RUN_TIMEOUT`] (10 minutes); its output goes to the log
//! `trigger.NAME` (`/var/log/orgo/trigger.NAME.log`). `restart_service`
//! restarts a service; `alert` raises an `alert` event. The first action
//! that fails ends the firing with a `trigger_failed` event.
//!
//! `dedup`: a firing within the window of the last one that ran is dropped,
//! and a `trigger_deduplicated` event says so.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use orgo_agent_protocol::{
    Command, ErrorCode, Event, FileEvent, MAX_WEBHOOK_BYTES, TriggerAction, TriggerSource,
    TriggerSpec,
};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};

use crate::agent::Agent;
use crate::cron::Cron;
use crate::events::now_ms;
use crate::exec::prepare;
use crate::files::OpError;
use crate::logs::{LOG_DIR, lock_log};

/// How long a `run` action may take before it is killed.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// How much of a failed `run` action's output its event carries.
const FAILED_OUTPUT_BYTES: u64 = 1024;

/// The longest the schedule thread sleeps: a clock that jumps is noticed
/// within this.
const SCHEDULE_TICK: Duration = Duration::from_secs(5);

struct Armed {
    spec: TriggerSpec,
    cron: Option<Cron>,
    /// When the last firing that ran started.
    last: Mutex<Option<Instant>>,
}

/// One set of triggers; replaced whole by [`Triggers::set`].
struct TriggerSet {
    triggers: Vec<Armed>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl TriggerSet {
    fn stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `d` unless stopped; `false` when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        !*guard
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// What fired a trigger, for its actions and events.
struct Firing {
    detail: String,
    env: BTreeMap<String, String>,
    stdin: Option<Vec<u8>>,
}

/// The agent's triggers.
#[derive(Default)]
pub(crate) struct Triggers {
    current: Mutex<Option<Arc<TriggerSet>>>,
}

impl Triggers {
    /// Replaces every trigger with `specs` (checked first: nothing changes
    /// when one is bad).
    pub(crate) fn set(&self, agent: &Arc<Agent>, specs: Vec<TriggerSpec>) -> Result<(), OpError> {
        let mut triggers = Vec::new();
        for spec in specs {
            let cron = match &spec.source {
                TriggerSource::Schedule { cron } => Some(Cron::parse(cron).map_err(|e| {
                    OpError::new(
                        ErrorCode::BadRequest,
                        format!("trigger `{}`: cron {e}", spec.name),
                    )
                })?),
                TriggerSource::File { path, .. } if !path.starts_with('/') => {
                    return Err(OpError::new(
                        ErrorCode::BadRequest,
                        format!("trigger `{}`: `{path}` is not an absolute path", spec.name),
                    ));
                }
                _ => None,
            };
            triggers.push(Armed {
                spec,
                cron,
                last: Mutex::new(None),
            });
        }
        let set = Arc::new(TriggerSet {
            triggers,
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let previous = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Arc::clone(&set));
        if let Some(previous) = previous {
            previous.stop();
        }
        if set.triggers.iter().any(|t| t.cron.is_some()) {
            let (agent, set) = (Arc::downgrade(agent), Arc::clone(&set));
            std::thread::Builder::new()
                .name("triggers-cron".into())
                .spawn(move || schedule_loop(&agent, &set))
                .map_err(|e| OpError::io("cannot start the schedule thread", &e))?;
        }
        if set
            .triggers
            .iter()
            .any(|t| matches!(t.spec.source, TriggerSource::File { .. }))
        {
            let inotify =
                inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
                    .map_err(|e| OpError::io("cannot start inotify", &e.into()))?;
            // Armed before the reply: a file made once `set` returns is seen.
            let watches = Watch::arm_all(&set, &inotify);
            let (agent, set) = (Arc::downgrade(agent), Arc::clone(&set));
            std::thread::Builder::new()
                .name("triggers-file".into())
                .spawn(move || file_loop(&agent, &set, inotify, watches))
                .map_err(|e| OpError::io("cannot start the file watch thread", &e))?;
        }
        Ok(())
    }

    /// Stops every trigger.
    pub(crate) fn clear(&self) {
        if let Some(set) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            set.stop();
        }
    }

    fn current(&self) -> Option<Arc<TriggerSet>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fires the webhook triggers of `path`; the names of those that ran
    /// (not deduplicated). No trigger of that path is an error.
    pub(crate) fn webhook(
        &self,
        agent: &Arc<Agent>,
        path: &str,
        data: Vec<u8>,
    ) -> Result<Vec<String>, OpError> {
        if data.len() > MAX_WEBHOOK_BYTES {
            return Err(OpError::new(
                ErrorCode::TooLarge,
                format!(
                    "the webhook body is {} bytes; at most {MAX_WEBHOOK_BYTES}",
                    data.len()
                ),
            ));
        }
        let set = self.current();
        let matching: Vec<usize> = set.as_ref().map_or_else(Vec::new, |set| {
            (0..set.triggers.len())
                .filter(|&i| {
                    matches!(&set.triggers[i].spec.source,
                        TriggerSource::Webhook { path: p } if p == path)
                })
                .collect()
        });
        let Some(set) = set.filter(|_| !matching.is_empty()) else {
            return Err(OpError::new(
                ErrorCode::NotFound,
                format!("no webhook trigger has the path `{path}`"),
            ));
        };
        let mut fired = Vec::new();
        for i in matching {
            let firing = Firing {
                detail: path.to_owned(),
                env: BTreeMap::from([("ORGO_WEBHOOK_PATH".to_owned(), path.to_owned())]),
                stdin: Some(data.clone()),
            };
            if fire(agent, &set, i, firing) {
                fired.push(set.triggers[i].spec.name.clone());
            }
        }
        Ok(fired)
    }

    /// Fires the health triggers of `app`.
    pub(crate) fn health_failed(&self, agent: &Arc<Agent>, app: &str, message: &str) {
        let Some(set) = self.current() else { return };
        for i in 0..set.triggers.len() {
            if matches!(&set.triggers[i].spec.source, TriggerSource::Health { app: a } if a == app)
            {
                let firing = Firing {
                    detail: format!("{app}: {message}"),
                    env: BTreeMap::new(),
                    stdin: None,
                };
                fire(agent, &set, i, firing);
            }
        }
    }
}

/// Fires trigger `i` of `set`: dropped (and said so) within its dedup
/// window, else its actions run on a thread of their own. `true` if it ran.
fn fire(agent: &Arc<Agent>, set: &Arc<TriggerSet>, i: usize, mut firing: Firing) -> bool {
    let armed = &set.triggers[i];
    let name = armed.spec.name.clone();
    {
        let mut last = armed.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let window = armed.spec.dedup_ms.map(Duration::from_millis);
        if let (Some(window), Some(at)) = (window, *last)
            && now.duration_since(at) < window
        {
            agent.event(Event::TriggerDeduplicated {
                trigger: name,
                detail: Some(firing.detail),
            });
            return false;
        }
        *last = Some(now);
    }
    agent.note_activity();
    let source = armed.spec.source.kind();
    agent.event(Event::TriggerFired {
        trigger: name.clone(),
        source: source.to_owned(),
        detail: Some(firing.detail.clone()),
    });
    firing.env.insert("ORGO_TRIGGER".into(), name.clone());
    firing
        .env
        .insert("ORGO_TRIGGER_SOURCE".into(), source.into());
    firing
        .env
        .insert("ORGO_TRIGGER_DETAIL".into(), firing.detail.clone());
    let actions = armed.spec.actions.clone();
    let agent = Arc::clone(agent);
    let spawned = std::thread::Builder::new()
        .name(format!("trigger-{name}"))
        .spawn(move || run_actions(&agent, &name, &actions, &firing));
    spawned.is_ok()
}

fn run_actions(agent: &Arc<Agent>, name: &str, actions: &[TriggerAction], firing: &Firing) {
    for (index, action) in actions.iter().enumerate() {
        let result = match action {
            TriggerAction::Run { command } => run(agent, name, command, firing),
            TriggerAction::RestartService { service } => {
                agent.supervisor().restart(service).map_err(|e| e.message)
            }
            TriggerAction::Alert { message } => {
                agent.event(Event::Alert {
                    app: String::new(),
                    message: message.clone(),
                    trigger: Some(name.to_owned()),
                });
                Ok(())
            }
        };
        if let Err(message) = result {
            agent.event(Event::TriggerFailed {
                trigger: name.to_owned(),
                action: index,
                message,
            });
            return;
        }
    }
    agent.event(Event::TriggerDone {
        trigger: name.to_owned(),
    });
}

/// A `run` action: `bash -c` as root, output to the trigger's log.
fn run(agent: &Arc<Agent>, name: &str, command: &str, firing: &Firing) -> Result<(), String> {
    let log_name = format!("trigger.{name}");
    let path = agent
        .root()
        .join(LOG_DIR)
        .join(format!("trigger.{name}.log"));
    let log = agent.logs().open(&log_name, &path);
    let start = lock_log(&log).end();
    let mut prepared = prepare(
        agent,
        &Command::Shell(command.to_owned()),
        &firing.env,
        Some("/"),
        None,
    )
    .map_err(|e| e.message)?;
    let piped = crate::logs::piped_to(Arc::clone(&log), format!("log-{log_name}"))
        .map_err(|e| format!("cannot open log `{}`: {e}", path.display()))?;
    let cmd = &mut prepared.command;
    cmd.stdout(piped.stdout).stderr(piped.stderr);
    cmd.stdin(if firing.stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    let (mut child, waiter) = agent
        .spawner()
        .start(cmd)
        .map_err(|e| format!("cannot start `{command}`: {e}"))?;
    drop(prepared);
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), firing.stdin.clone()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
    }
    let (status, timed_out) = waiter.wait_or_kill(Some(RUN_TIMEOUT));
    // What it wrote is in the log (a background process that keeps the
    // pipe open is not waited for beyond a grace period).
    let _ = piped.done.recv_timeout(Duration::from_secs(2));
    if status.success() && !timed_out {
        return Ok(());
    }
    let end = lock_log(&log).end();
    let from = start.max(end.saturating_sub(FAILED_OUTPUT_BYTES));
    let (tail, ..) = lock_log(&log).read(Some(from), None, FAILED_OUTPUT_BYTES);
    let how = if timed_out {
        format!("timed out after {} s", RUN_TIMEOUT.as_secs())
    } else {
        status.to_string()
    };
    Err(format!(
        "`{command}` ended with {how}: {}",
        String::from_utf8_lossy(&tail).trim_end()
    ))
}

fn schedule_loop(agent: &Weak<Agent>, set: &Arc<TriggerSet>) {
    let now_secs = || now_ms() / 1000;
    let mut next: Vec<Option<u64>> = set
        .triggers
        .iter()
        .map(|t| t.cron.as_ref().and_then(|c| c.next_after(now_secs())))
        .collect();
    while !set.stopped() {
        let now = now_secs();
        for (i, due) in next.iter_mut().enumerate() {
            let Some(at) = *due else { continue };
            if now < at {
                continue;
            }
            // Late by a minute or more: the clock jumped (a restore, a
            // suspended VM); skip what was missed.
            if now - at < 60 {
                let Some(agent) = agent.upgrade() else { return };
                let minute = at / 60;
                let firing = Firing {
                    detail: format!(
                        "{} {:02}:{:02} UTC",
                        set.triggers[i].cron_text(),
                        minute / 60 % 24,
                        minute % 60
                    ),
                    env: BTreeMap::new(),
                    stdin: None,
                };
                fire(&agent, set, i, firing);
            }
            *due = set.triggers[i]
                .cron
                .as_ref()
                .and_then(|c| c.next_after(now.max(at)));
        }
        let now_ms = now_ms();
        let sleep = next
            .iter()
            .flatten()
            .map(|at| Duration::from_millis((at * 1000).saturating_sub(now_ms)))
            .min()
            .unwrap_or(SCHEDULE_TICK)
            .min(SCHEDULE_TICK);
        if !set.sleep(sleep.max(Duration::from_millis(10))) {
            return;
        }
    }
}

impl Armed {
    fn cron_text(&self) -> &str {
        match &self.spec.source {
            TriggerSource::Schedule { cron } => cron,
            _ => "",
        }
    }
}

/// One `file` trigger's watch: the directory watched and what it is for.
struct Watch {
    trigger: usize,
    target: PathBuf,
    events: Vec<FileEvent>,
    wd: Option<i32>,
    /// What the watched directory is to the target.
    mode: WatchMode,
    /// Whether the first arming is done (a target present then is old).
    armed: bool,
    /// A `create` was fired for a target found already there on re-arming:
    /// the watch may still report that same creation, which is then not a
    /// second one (until a delete, the target cannot be created again).
    created_unseen: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WatchMode {
    /// The target is a directory: any entry counts.
    Dir,
    /// The target's parent: entries named as the target count.
    Parent,
    /// An ancestor: waiting for the next directory to appear.
    Ancestor,
}

fn watch_flags() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVED_FROM
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
}

impl Watch {
    /// One watch per `file` trigger of `set`, each armed.
    fn arm_all(set: &TriggerSet, inotify: &OwnedFd) -> Vec<Watch> {
        let mut watches: Vec<Watch> = set
            .triggers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.spec.source {
                TriggerSource::File { path, events } => Some(Watch {
                    trigger: i,
                    target: PathBuf::from(path),
                    events: if events.is_empty() {
                        vec![FileEvent::Create, FileEvent::Modify, FileEvent::Delete]
                    } else {
                        events.clone()
                    },
                    wd: None,
                    mode: WatchMode::Parent,
                    armed: false,
                    created_unseen: false,
                }),
                _ => None,
            })
            .collect();
        for watch in &mut watches {
            watch.arm(inotify);
        }
        watches
    }

    /// Watches the target (a directory), its parent, or the deepest
    /// existing ancestor. Returns whether the target appeared while no
    /// watch could see it (its directory was made, then the target in it,
    /// before this re-arming): that is a `create` no inotify event reports.
    fn arm(&mut self, inotify: &OwnedFd) -> bool {
        let blind = self.armed && (self.wd.is_none() || self.mode == WatchMode::Ancestor);
        let mut place = self.place();
        loop {
            self.wd = inotify::add_watch(inotify, &place.0, watch_flags()).ok();
            self.mode = place.1;
            // A directory made between the look and the watch told no watch:
            // look again until what is watched is still the deepest.
            let now = self.place();
            if now == place {
                break;
            }
            place = now;
        }
        self.armed = true;
        blind && self.mode != WatchMode::Ancestor && self.target.exists()
    }

    /// The directory to watch for the target, and what it is to it.
    fn place(&self) -> (PathBuf, WatchMode) {
        if self.target.is_dir() {
            return (self.target.clone(), WatchMode::Dir);
        }
        let mut dir = self.target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut mode = WatchMode::Parent;
        while !dir.is_dir() {
            dir = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
            mode = WatchMode::Ancestor;
        }
        (dir, mode)
    }

    /// Re-arms the watch (see [`Watch::arm`]) and fires the `create` it
    /// would otherwise miss.
    fn rearm(&mut self, inotify: &OwnedFd, agent: &Arc<Agent>, set: &Arc<TriggerSet>) {
        if self.arm(inotify) && self.events.contains(&FileEvent::Create) {
            self.created_unseen = true;
            fire(
                agent,
                set,
                self.trigger,
                self.firing(FileEvent::Create, &self.target),
            );
        }
    }

    fn firing(&self, kind: FileEvent, path: &Path) -> Firing {
        let file = path.display().to_string();
        Firing {
            detail: format!("{} {file}", kind.as_str()),
            env: BTreeMap::from([
                ("ORGO_FILE".to_owned(), file),
                ("ORGO_FILE_EVENT".to_owned(), kind.as_str().to_owned()),
            ]),
            stdin: None,
        }
    }
}

fn file_event(flags: ReadFlags) -> Option<FileEvent> {
    if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
        Some(FileEvent::Create)
    } else if flags.contains(ReadFlags::CLOSE_WRITE) {
        Some(FileEvent::Modify)
    } else if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) {
        Some(FileEvent::Delete)
    } else {
        None
    }
}

fn file_loop(
    agent: &Weak<Agent>,
    set: &Arc<TriggerSet>,
    inotify: OwnedFd,
    mut watches: Vec<Watch>,
) {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    let tick = rustix::time::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    while !set.stopped() {
        let mut fds = [rustix::event::PollFd::new(
            &inotify,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(0) => {
                // Nothing came: re-arm a watch whose directory went away.
                let Some(agent) = agent.upgrade() else { return };
                for watch in watches.iter_mut().filter(|w| w.wd.is_none()) {
                    watch.rearm(&inotify, &agent, set);
                }
                continue;
            }
            Ok(_) => {}
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut seen = Vec::new();
        let mut reader = inotify::Reader::new(inotify.as_fd(), &mut buf);
        while let Ok(event) = reader.next() {
            let name = event
                .file_name()
                .map(|n| PathBuf::from(n.to_string_lossy().into_owned()));
            seen.push((event.wd(), event.events(), name));
        }
        let Some(agent) = agent.upgrade() else { return };
        let mut rearm = false;
        for (wd, flags, name) in seen {
            if flags.intersects(ReadFlags::IGNORED | ReadFlags::QUEUE_OVERFLOW) {
                rearm = true;
            }
            for watch in watches.iter_mut().filter(|w| w.wd == Some(wd)) {
                let Some(name) = &name else {
                    // The watched directory itself moved or went away.
                    rearm = true;
                    watch.wd = None;
                    continue;
                };
                let path = match watch.mode {
                    WatchMode::Dir => watch.target.join(name),
                    WatchMode::Parent if watch.target.file_name() == Some(name.as_os_str()) => {
                        watch.target.clone()
                    }
                    WatchMode::Parent | WatchMode::Ancestor => {
                        if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO)
                            && flags.contains(ReadFlags::ISDIR)
                        {
                            rearm = true;
                        }
                        continue;
                    }
                };
                if watch.mode == WatchMode::Parent && flags.contains(ReadFlags::ISDIR) {
                    // The target appeared as a directory: watch inside it.
                    rearm = true;
                }
                let kind = file_event(flags);
                if path == watch.target {
                    match kind {
                        Some(FileEvent::Create) if watch.created_unseen => {
                            // Already fired when re-arming found it there.
                            watch.created_unseen = false;
                            continue;
                        }
                        Some(FileEvent::Delete) => watch.created_unseen = false,
                        _ => {}
                    }
                }
                if let Some(kind) = kind
                    && watch.events.contains(&kind)
                {
                    fire(&agent, set, watch.trigger, watch.firing(kind, &path));
                }
            }
        }
        if rearm {
            for watch in &mut watches {
                watch.rearm(&inotify, &agent, set);
            }
        }
    }
}
