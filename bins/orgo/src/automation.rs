//! The commands on what runs inside a computer: `logs`, `events`,
//! `trigger`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use orgo_runtime::event_json;

use crate::computer::{open_with_agent, runtime_error, until_signal};
use crate::{Failure, emit};

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// The computer's id.
    id: String,
    /// Only this service's log (or `trigger.NAME`, a trigger's `run`
    /// output); else every log, each line prefixed with its name.
    service: Option<String>,
    /// Keep printing new lines as they come (until interrupted).
    #[arg(short, long)]
    follow: bool,
    /// Only lines written in this last while (`30s`, `10m`, `2h`; to the second).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
}

#[derive(Args)]
pub(crate) struct EventsArgs {
    /// The computer's id.
    id: String,
    /// Keep printing new events as they come (until interrupted).
    #[arg(short, long)]
    follow: bool,
}

#[derive(Args)]
pub(crate) struct TriggerArgs {
    /// The computer's id.
    id: String,
    /// The webhook trigger's path (`/deploy`).
    path: String,
    /// The body: text, or `@FILE` for a file's bytes (`@-` reads stdin).
    #[arg(long, value_name = "DATA|@FILE")]
    data: Option<String>,
}

#[derive(Args)]
pub(crate) struct MetricsArgs {
    /// The computer's id.
    id: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

/// `orgo logs`: the lines, one service's bare, else `NAME | line`.
pub(crate) fn logs(root: Option<PathBuf>, args: LogsArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open_with_agent(root, None)?;
    let computer = tokio
        .block_on(runtime.connect(&args.id))
        .map_err(runtime_error)?;
    let mut reader = computer.logs(args.service.as_deref(), args.since, args.follow);
    let prefixed = args.service.is_none();
    let work = async {
        while let Some(line) = reader.next().await? {
            if prefixed {
                emit(&format!("{} | {}\n", line.service, line.line));
            } else {
                emit(&format!("{}\n", line.line));
            }
        }
        Ok(())
    };
    until_signal(&tokio, work)?.map_err(runtime_error)
}

/// `orgo events`: one JSON object per line, with `ts` and `kind`.
pub(crate) fn events(root: Option<PathBuf>, args: EventsArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open_with_agent(root, None)?;
    let computer = tokio
        .block_on(runtime.connect(&args.id))
        .map_err(runtime_error)?;
    let mut reader = computer.events(args.follow);
    let work = async {
        let mut warned = 0;
        while let Some(record) = reader.next().await? {
            if reader.dropped() > warned {
                eprintln!(
                    "orgo: {} older events were dropped from the computer's ring before they were read",
                    reader.dropped() - warned
                );
                warned = reader.dropped();
            }
            emit(&format!("{}\n", event_json(&record)));
        }
        Ok(())
    };
    until_signal(&tokio, work)?.map_err(runtime_error)
}

/// `orgo metrics`: the Prometheus text format.
pub(crate) fn metrics(root: Option<PathBuf>, args: MetricsArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open_with_agent(root, None)?;
    let computer = tokio
        .block_on(runtime.connect(&args.id))
        .map_err(runtime_error)?;
    let text = tokio.block_on(computer.metrics()).map_err(runtime_error)?;
    emit(&text);
    Ok(())
}

/// `orgo trigger`: fires a webhook; prints the triggers that ran.
pub(crate) fn trigger(root: Option<PathBuf>, args: TriggerArgs) -> Result<(), Failure> {
    let data = match args.data.as_deref() {
        None => Vec::new(),
        Some("@-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(|e| Failure::Input(format!("cannot read stdin: {e}")))?;
            bytes
        }
        Some(text) => match text.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map_err(|e| Failure::Input(format!("cannot read `{file}`: {e}")))?,
            None => text.as_bytes().to_vec(),
        },
    };
    let (tokio, runtime) = open_with_agent(root, None)?;
    let computer = tokio
        .block_on(runtime.connect(&args.id))
        .map_err(runtime_error)?;
    let fired = tokio
        .block_on(computer.trigger(&args.path, data))
        .map_err(runtime_error)?;
    if fired.is_empty() {
        eprintln!(
            "orgo: every trigger of `{}` is within its dedup window; none ran",
            args.path
        );
    }
    emit(&fired.iter().map(|t| format!("{t}\n")).collect::<String>());
    Ok(())
}

/// How long `orgo ps` waits for one computer's services (its agent may be
/// busy with another host).
const PS_SERVICES_WAIT: Duration = Duration::from_secs(3);

/// A running computer's services, when its agent answers in time.
pub(crate) fn services(
    tokio: &tokio::runtime::Runtime,
    runtime: &orgo_runtime::Runtime,
    id: &str,
) -> Option<Vec<orgo_runtime::ServiceStatus>> {
    tokio.block_on(async {
        let asked = async {
            let computer = runtime.connect(id).await.ok()?;
            computer.services().await.ok()
        };
        tokio::time::timeout(PS_SERVICES_WAIT, asked).await.ok()?
    })
}

/// One service as `orgo ps` shows it: `web: backoff, 3 restarts, last exit status 1`.
pub(crate) fn describe_service(s: &orgo_runtime::ServiceStatus) -> String {
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut text = format!("{}: {state}, {} restarts", s.name, s.restarts);
    if let Some(exit) = s.last_exit {
        text.push_str(&format!(", last {exit}"));
    }
    text
}
