//! The runtime commands: `build`, `launch`, `exec`, `ps`, `stop`.
//!
//! Progress goes to stderr; stdout carries only the answer (`orgo launch`
//! prints the computer's id and nothing else), so scripts can capture it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use orgo_runtime::{
    BuildEvent, ErrorChain, LaunchOptions, Runtime, RuntimeConfig, RuntimeError, SECRET_ENV_PREFIX,
    SharedStore, VAULT_FILE, Vault,
};
use orgo_template::{Template, TemplateRef};

use crate::{Failure, emit};

/// `orgo exec`'s exit status when orgo itself fails (not the command).
pub(crate) const EXEC_FAILED: u8 = 125;

/// Runs `work` to its end, or until SIGINT or SIGTERM: then it is dropped,
/// which stops what it started (VMs, a half-made launch), and the command
/// fails as interrupted. (Left alone, the signal would end the process
/// with no cleanup, and VMs, which run in their own process groups so that
/// a launched computer outlives `orgo launch`, would stay.)
pub(crate) fn until_signal<T>(
    tokio: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::Input(format!("cannot watch for SIGTERM: {e}")))?;
        tokio::select! {
            done = work => Ok(done),
            _ = tokio::signal::ctrl_c() => Err(Failure::Interrupted),
            _ = term.recv() => Err(Failure::Interrupted),
        }
    })
}

/// What the runtime commands share.
#[derive(Args, Clone)]
pub(crate) struct RuntimeArgs {
    /// The static `orgo-agent` to build the base image with, when it must
    /// be built (default: `$ORGO_AGENT`, else the agent built into orgo).
    #[arg(long, global = true, value_name = "BIN")]
    agent: Option<PathBuf>,
}

impl RuntimeArgs {
    /// `--agent`.
    pub(crate) fn agent(&self) -> Option<PathBuf> {
        self.agent.clone()
    }
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// A template file (`-` reads stdin) or a published ref
    /// (`[namespace/]name@version`).
    pub(crate) template: String,
    /// Only say whether this host can run the template: every field it
    /// cannot honour here, and what is missing. Builds nothing.
    #[arg(long)]
    pub(crate) check: bool,
}

#[derive(Args)]
pub(crate) struct LaunchArgs {
    /// A template file or a published ref; built first if needed.
    pub(crate) template: String,
    /// Memory in GiB (at least the snapshot's).
    #[arg(long, value_name = "N")]
    pub(crate) ram_gb: Option<u32>,
    /// vCPUs (at least the snapshot's).
    #[arg(long, value_name = "N")]
    pub(crate) cpu: Option<u32>,
    /// Extra environment, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Record every destination the computer reaches; `orgo egress ID`
    /// prints the smallest `egress_policy` allowing them.
    #[arg(long)]
    pub(crate) egress_learn: bool,
    /// Stop the computer after this many idle minutes (over the template's
    /// `hardware.auto_stop_minutes`; 0 disables). The computer keeps the
    /// clock itself, so it stops after `orgo launch` has exited.
    #[arg(long, value_name = "MINUTES")]
    pub(crate) auto_stop_minutes: Option<u32>,
}

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// The computer's id.
    pub(crate) id: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub(crate) command: Vec<String>,
    /// Run as this user (default root).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub(crate) cwd: Option<String>,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<u64>,
}

#[derive(Args)]
pub(crate) struct PsArgs {
    /// One JSON object per computer.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct StopArgs {
    /// The computers' ids.
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

/// A tokio runtime and the orgo runtime over the store at `root`.
pub(crate) fn open(
    root: Option<PathBuf>,
    args: &RuntimeArgs,
) -> Result<(tokio::runtime::Runtime, Runtime), Failure> {
    open_with_agent(root, args.agent.clone())
}

/// [`open`], for the other command modules.
pub(crate) fn open_with_args(
    root: Option<PathBuf>,
    args: &RuntimeArgs,
) -> Result<(tokio::runtime::Runtime, Runtime), Failure> {
    open(root, args)
}

/// [`open`] with the agent given (else `ORGO_AGENT`).
pub(crate) fn open_with_agent(
    root: Option<PathBuf>,
    agent: Option<PathBuf>,
) -> Result<(tokio::runtime::Runtime, Runtime), Failure> {
    open_with(root, agent, Some(0))
}

/// [`open`] for `orgo serve`, which keeps a warm pool (`warm_pool`, else
/// `$ORGO_WARM_POOL`).
pub(crate) fn open_for_server(
    root: Option<PathBuf>,
    args: &RuntimeArgs,
    warm_pool: Option<usize>,
) -> Result<(tokio::runtime::Runtime, Runtime), Failure> {
    open_with(root, args.agent.clone(), warm_pool)
}

/// The tokio and orgo runtimes; `warm_pool` overrides the environment's.
fn open_with(
    root: Option<PathBuf>,
    agent: Option<PathBuf>,
    warm_pool: Option<usize>,
) -> Result<(tokio::runtime::Runtime, Runtime), Failure> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))?;
    let shared = crate::fleet::shared_store(&tokio)?;
    let config = match shared {
        Some(store) => RuntimeConfig::from_env_in_fleet(root, SharedStore(store)),
        None => RuntimeConfig::from_env(root),
    };
    let mut config = config.map_err(|e| match e {
        RuntimeError::Env {
            name: "ORGO_HOME", ..
        } => Failure::Input("no store: set `ORGO_HOME` or `HOME`, or pass `--store DIR`".into()),
        other => Failure::Input(ErrorChain(&other).to_string()),
    })?;
    if agent.is_some() {
        config.agent = agent;
    }
    // A CLI process ends with its command: computers it parked for later
    // launches would only be stopped again (the server keeps its pool).
    if let Some(count) = warm_pool {
        config.warm_pool = count;
    }
    let runtime = tokio
        .block_on(Runtime::open(config))
        .map_err(runtime_error)?;
    Ok((tokio, runtime))
}

pub(crate) fn runtime_error(error: RuntimeError) -> Failure {
    match error {
        RuntimeError::NotFound { what } => Failure::No(format!("no {what}")),
        other => Failure::error(other),
    }
}

/// A failed step's output, on stderr, for steps whose output was not
/// streamed (`on_shutdown`).
fn print_step_output(error: &RuntimeError) {
    if let RuntimeError::Build(step) = error
        && !step.output.is_empty()
    {
        eprintln!("orgo: output of `{}`:", step.field);
        eprint!("{}", step.output);
        if !step.output.ends_with('\n') {
            eprintln!();
        }
    }
}

/// A template from a file, or, when the argument is a ref
/// (`[namespace/]name@version`) and no such file exists, a curated one
/// (`system/...`) or one from the registry.
fn template(
    tokio: &tokio::runtime::Runtime,
    runtime: &Runtime,
    arg: &str,
) -> Result<Template, Failure> {
    match ref_arg(arg)? {
        Some(reference) => resolved(tokio, runtime, &reference),
        None => crate::load(arg, false),
    }
}

/// The template `reference` names (`Runtime::resolve` knows the curated
/// `system/` templates too).
fn resolved(
    tokio: &tokio::runtime::Runtime,
    runtime: &Runtime,
    reference: &TemplateRef,
) -> Result<Template, Failure> {
    tokio
        .block_on(runtime.resolve(reference))
        .map_err(runtime_error)
}

/// What `orgo launch` launches.
enum Source {
    Template(Box<Template>),
    /// A published checkpoint's digest.
    Checkpoint(orgo_template::Digest),
}

impl Source {
    /// What `arg` names: a template file, or a ref (parsed once) to a
    /// published checkpoint or a template.
    fn of(
        tokio: &tokio::runtime::Runtime,
        runtime: &Runtime,
        arg: &str,
    ) -> Result<Source, Failure> {
        let Some(reference) = ref_arg(arg)? else {
            return Ok(Source::Template(Box::new(crate::load(arg, false)?)));
        };
        let checkpoint = tokio
            .block_on(runtime.published_checkpoint(&reference))
            .map_err(runtime_error)?;
        Ok(match checkpoint {
            Some(digest) => Source::Checkpoint(digest),
            None => Source::Template(Box::new(resolved(tokio, runtime, &reference)?)),
        })
    }
}

/// `arg` as a ref (`[namespace/]name@version`), unless it names a file
/// (`-` is stdin) or holds no `@`.
fn ref_arg(arg: &str) -> Result<Option<TemplateRef>, Failure> {
    if arg == "-" || std::path::Path::new(arg).exists() || !arg.contains('@') {
        return Ok(None);
    }
    parse_ref(arg).map(Some)
}

pub(crate) fn parse_ref(text: &str) -> Result<TemplateRef, Failure> {
    text.parse::<TemplateRef>()
        .map_err(|e| Failure::Input(format!("`{text}` is not a file or a ref: {e}")))
}

/// Prints build progress on stderr: status lines, each step with its
/// position, and the steps' own output as it comes.
fn progress() -> impl FnMut(BuildEvent) + Send {
    move |event| {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            BuildEvent::Status(text) => writeln!(err, "orgo: {text}"),
            BuildEvent::Step {
                field,
                index,
                total,
            } => writeln!(err, "orgo: [{index}/{total}] {field}"),
            BuildEvent::Output { data, .. } => err.write_all(&data),
            _ => Ok(()),
        };
    }
}

pub(crate) fn build(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: BuildArgs,
) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    let template = template(&tokio, &runtime, &args.template)?;
    if args.check {
        // "No" is an answer (exit 1), like an invalid template's.
        runtime.check(&template).map_err(|e| match e {
            RuntimeError::Unsupportable(_) => Failure::No(ErrorChain(&e).to_string()),
            other => runtime_error(other),
        })?;
        emit(&format!(
            "{}: this host can run `{}`\n",
            args.template,
            template.digest()
        ));
        return Ok(());
    }
    let started = Instant::now();
    let mut log = progress();
    let built = until_signal(&tokio, runtime.build(&template, &mut log))?.map_err(runtime_error)?;
    let how = if built.built_here {
        format!("built in {:.1} s", started.elapsed().as_secs_f64())
    } else {
        "cached".to_owned()
    };
    emit(&format!("{} {} ({how})\n", template.digest(), built.digest));
    Ok(())
}

pub(crate) fn launch(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: LaunchArgs,
) -> Result<(), Failure> {
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Input(format!("`--env {pair}` is not `KEY=VALUE`")))?;
        env.insert(key.to_owned(), value.to_owned());
    }
    let (tokio, runtime) = open(root, rt)?;
    let source = Source::of(&tokio, &runtime, &args.template)?;
    let vault = launch_vault(&runtime)?;
    let options = LaunchOptions {
        cpus: args.cpu,
        memory_mib: args.ram_gb.map(|gb| u64::from(gb) * 1024),
        env,
        vault,
        egress_learn: args.egress_learn,
        auto_stop_minutes: args.auto_stop_minutes,
        // `orgo launch` exits once the computer answers.
        detached: true,
    };
    let started = Instant::now();
    let mut log = progress();
    let computer = match &source {
        Source::Template(template) => {
            until_signal(&tokio, runtime.launch(template, options, &mut log))?
        }
        Source::Checkpoint(digest) => {
            until_signal(&tokio, runtime.launch_checkpoint(digest, options, &mut log))?
        }
    }
    .map_err(runtime_error)?;
    eprintln!(
        "orgo: launched {} from {} in {} ms",
        computer.id(),
        computer.record().template,
        started.elapsed().as_millis()
    );
    emit(&format!("{}\n", computer.id()));
    computer.detach();
    Ok(())
}

/// Runs the command; returns its exit code (128 + the signal for a signal).
pub(crate) fn exec(root: Option<PathBuf>, rt: &RuntimeArgs, args: ExecArgs) -> Result<u8, Failure> {
    let (tokio, runtime) = open(root, rt)?;
    let computer = tokio
        .block_on(runtime.connect(&args.id))
        .map_err(runtime_error)?;
    let mut exec = orgo_runtime::Exec::argv(args.command);
    exec.user = args.user;
    exec.cwd = args.cwd;
    exec.timeout_ms = args.timeout.map(|s| s.saturating_mul(1000));
    let wait = Duration::from_secs(args.timeout.map_or(365 * 24 * 3600, |s| s + 30));
    let mut pass = |stream: orgo_runtime::Stream, data: &[u8]| {
        let _ = match stream {
            orgo_runtime::Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            orgo_runtime::Stream::Stderr => std::io::stderr().lock().write_all(data),
        };
    };
    let status = until_signal(&tokio, computer.exec_streaming(exec, wait, &mut pass))?
        .map_err(runtime_error)?;
    Ok(match (status.code, status.signal) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        _ => 1,
    })
}

pub(crate) fn ps(root: Option<PathBuf>, rt: &RuntimeArgs, args: PsArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    let computers = runtime.computers().map_err(runtime_error)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    if !args.json {
        out.push_str(
            "ID               TEMPLATE                  STATUS     CPU  MEMORY  AGE   PORTS\n",
        );
    }
    for c in computers {
        let r = &c.record;
        let status = c.state.as_str();
        let services = (c.state == orgo_runtime::ComputerState::Running)
            .then(|| crate::automation::services(&tokio, &runtime, &r.id))
            .flatten();
        let stop_reason = (c.state == orgo_runtime::ComputerState::Exited)
            .then(|| runtime.stop_reason(&r.id))
            .flatten();
        if args.json {
            out.push_str(&format!(
                "{}\n",
                serde_json::json!({
                    "id": r.id, "template": r.template, "template_digest": r.template_digest.to_string(),
                    "snapshot": r.snapshot.map(|d| d.to_string()), "status": status, "cpus": r.cpus,
                    "memory_mib": r.memory_mib, "pid": r.pid, "created_unix": r.created_unix,
                    "ports": crate::net::ports_json(&r.ports),
                    "services": services, "stop_reason": stop_reason, "restarts": r.restarts,
                })
            ));
        } else {
            out.push_str(&format!(
                "{:<16} {:<25} {:<9} {:>4} {:>5}M  {:<5} {}\n",
                r.id,
                r.template,
                status,
                r.cpus,
                r.memory_mib,
                age(now.saturating_sub(r.created_unix)),
                crate::net::ports_column(&r.ports),
            ));
            if let Some(reason) = &stop_reason {
                out.push_str(&format!("  stopped: {reason}\n"));
            }
            // The services that restarted or are down, under their computer.
            for s in services
                .iter()
                .flatten()
                .filter(|s| s.restarts > 0 || s.state != orgo_runtime::ServiceState::Running)
            {
                out.push_str(&format!("  {}\n", crate::automation::describe_service(s)));
            }
        }
    }
    emit(&out);
    Ok(())
}

pub(crate) fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[derive(Args)]
pub(crate) struct CheckpointArgs {
    /// The computer's id.
    pub(crate) id: String,
    /// Also publish it under this ref (`NAMESPACE/NAME@VERSION`), which
    /// `orgo launch` then launches; immutable, as a template's ref.
    #[arg(long, value_name = "REF")]
    pub(crate) publish: Option<String>,
}

#[derive(Args)]
pub(crate) struct ForkArgs {
    /// The computer's id.
    pub(crate) id: String,
    /// How many computers to launch from the checkpoint.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) count: u16,
}

/// The vault `orgo launch` reads: the vault file under the secrets of the
/// environment.
fn launch_vault(runtime: &orgo_runtime::Runtime) -> Result<Vault, Failure> {
    Vault::load(
        &runtime.store().root().join(VAULT_FILE),
        std::env::vars().filter(|(k, _)| k.starts_with(SECRET_ENV_PREFIX)),
    )
    .map_err(Failure::error)
}

/// `orgo checkpoint`: the checkpoint's digest, the only line on stdout;
/// the pause and the stored bytes on stderr.
pub(crate) fn checkpoint(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: CheckpointArgs,
) -> Result<(), Failure> {
    // A bad ref is refused before the computer is paused.
    let publish = args.publish.as_deref().map(parse_ref).transpose()?;
    let (tokio, runtime) = open(root, rt)?;
    let vault = launch_vault(&runtime)?;
    let checkpoint =
        until_signal(&tokio, runtime.checkpoint(&args.id, &vault))?.map_err(runtime_error)?;
    eprintln!(
        "orgo: checkpoint of {} (paused {} ms, {} bytes stored)",
        args.id,
        checkpoint.paused.as_millis(),
        checkpoint.stored_bytes
    );
    if let Some(reference) = publish {
        let created = tokio
            .block_on(runtime.publish_checkpoint(&reference, &checkpoint.digest))
            .map_err(|e| {
                // The checkpoint itself is stored: say so, with its digest.
                eprintln!(
                    "orgo: checkpoint {} is stored, not published",
                    checkpoint.digest
                );
                runtime_error(e)
            })?;
        let what = if created {
            "published"
        } else {
            "already published"
        };
        eprintln!("orgo: {what} as {reference}");
    }
    emit(&format!("{}\n", checkpoint.digest));
    Ok(())
}

/// `orgo fork`: one checkpoint, `count` computers launched from it; their
/// ids, one per line, are all of stdout.
pub(crate) fn fork(root: Option<PathBuf>, rt: &RuntimeArgs, args: ForkArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    let options = LaunchOptions {
        vault: launch_vault(&runtime)?,
        // `orgo fork` exits once the computers answer.
        detached: true,
        ..LaunchOptions::default()
    };
    let started = Instant::now();
    let (checkpoint, forks) = until_signal(
        &tokio,
        runtime.fork(&args.id, usize::from(args.count), options),
    )?
    .map_err(runtime_error)?;
    eprintln!(
        "orgo: forked {} from checkpoint {} (paused {} ms) in {} ms",
        args.id,
        checkpoint.digest,
        checkpoint.paused.as_millis(),
        started.elapsed().as_millis()
    );
    for computer in forks {
        emit(&format!("{}\n", computer.id()));
        computer.detach();
    }
    Ok(())
}

/// `orgo suspend`: each computer saved to disk; its id printed once done,
/// how long its vCPUs stood on stderr.
pub(crate) fn suspend(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: StopArgs,
) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    each(&args.ids, |id| {
        let stood = tokio.block_on(runtime.suspend(id)).map_err(runtime_error)?;
        eprintln!(
            "orgo: {id} suspended (its vCPUs stood {} ms)",
            stood.as_millis()
        );
        Ok(())
    })
}

/// `orgo resume`: each suspended computer back; its id printed once done.
pub(crate) fn resume(
    root: Option<PathBuf>,
    rt: &RuntimeArgs,
    args: StopArgs,
) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    each(&args.ids, |id| {
        tokio.block_on(runtime.resume(id)).map_err(runtime_error)
    })
}

/// Runs `act` on every id, printing each id it succeeds on; each failure is
/// reported as it happens, and the last one decides the exit status.
pub(crate) fn each(
    ids: &[String],
    mut act: impl FnMut(&str) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut failed = None;
    for id in ids {
        match act(id) {
            Ok(()) => emit(&format!("{id}\n")),
            Err(error) => {
                if let Some(previous) = failed.replace(error) {
                    crate::fail(previous);
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

pub(crate) fn stop(root: Option<PathBuf>, rt: &RuntimeArgs, args: StopArgs) -> Result<(), Failure> {
    let (tokio, runtime) = open(root, rt)?;
    // Every id is stopped; each failure is reported as it happens, and the
    // last one decides the exit status.
    let mut failed = None;
    for id in &args.ids {
        match tokio.block_on(runtime.stop(id)) {
            Ok(said) => {
                if let Some(text) = said.filter(|t| !t.is_empty()) {
                    eprint!("{text}");
                }
                emit(&format!("{id}\n"));
            }
            Err(error) => {
                print_step_output(&error);
                if let Some(previous) = failed.replace(runtime_error(error)) {
                    crate::fail(previous);
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
