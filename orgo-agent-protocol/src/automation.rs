//! The in-guest automation's messages: service logs, the event ring,
//! triggers and metrics ([`Op::ReadLog`](crate::Op::ReadLog),
//! [`Op::ReadEvents`](crate::Op::ReadEvents),
//! [`Op::SetTriggers`](crate::Op::SetTriggers),
//! [`Op::FireWebhook`](crate::Op::FireWebhook)).

use serde::{Deserialize, Serialize};

use crate::message::Event;

/// The most bytes one [`Op::ReadLog`](crate::Op::ReadLog) returns (1 MiB).
pub const MAX_LOG_READ_BYTES: u32 = 1 << 20;

/// The most events one [`Op::ReadEvents`](crate::Op::ReadEvents) returns.
pub const MAX_EVENTS_READ: u32 = 1024;

/// The largest webhook body [`Op::FireWebhook`](crate::Op::FireWebhook) carries (1 MiB).
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// The line the agent writes on the guest's console (its serial log) when
/// auto-stop stops the computer, followed by ` after N s idle`: the host
/// reads it to say why the computer stopped.
pub const AUTO_STOP_MARK: &str = "orgo-agent: stopped: auto_stop";

/// One event of the agent's ring: its sequence number (from 1, never
/// reused), the guest's clock when it happened, and the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Sequence number.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, on the guest's clock.
    pub ts_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// A file change a `file` trigger watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileEvent {
    /// Created, or moved in.
    Create,
    /// Written and closed.
    Modify,
    /// Deleted, or moved away.
    Delete,
}

impl FileEvent {
    /// Its name in templates and events.
    pub fn as_str(self) -> &'static str {
        match self {
            FileEvent::Create => "create",
            FileEvent::Modify => "modify",
            FileEvent::Delete => "delete",
        }
    }
}

/// What fires a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerSource {
    /// A five-field cron expression on the guest's clock (UTC).
    Schedule {
        /// `minute hour day-of-month month day-of-week`.
        cron: String,
    },
    /// [`Op::FireWebhook`](crate::Op::FireWebhook) with this path.
    Webhook {
        /// The path.
        path: String,
    },
    /// A change to a file (or to an entry of a directory).
    File {
        /// Absolute path; it need not exist yet.
        path: String,
        /// The changes watched.
        events: Vec<FileEvent>,
    },
    /// An app's health check reaching its retries.
    Health {
        /// The app.
        app: String,
    },
}

impl TriggerSource {
    /// Its type's name (`schedule`, `webhook`, `file`, `health`).
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerSource::Schedule { .. } => "schedule",
            TriggerSource::Webhook { .. } => "webhook",
            TriggerSource::File { .. } => "file",
            TriggerSource::Health { .. } => "health",
        }
    }
}

/// One action of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TriggerAction {
    /// A shell command line, run as root by `bash -c`.
    Run {
        /// The command line.
        command: String,
    },
    /// Restart a service.
    RestartService {
        /// The service.
        service: String,
    },
    /// Raise an alert event.
    Alert {
        /// The alert's message.
        message: String,
    },
}

/// A trigger: a source, its actions in order, a dedup window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    /// Its name (kebab-case).
    pub name: String,
    /// What fires it.
    pub source: TriggerSource,
    /// What it does, in order; the first that fails ends the firing.
    pub actions: Vec<TriggerAction>,
    /// Firings within this long of the last one that ran are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_ms: Option<u64>,
}
