//! `orgo`: validate, normalize and digest `orgo.ai/v1` templates; publish
//! and resolve them in the local store.
//!
//! Exit status: 0 on success; 1 when the answer is no (an invalid document,
//! a published version with other content, a ref not published, a store
//! that fails verification); 2 on usage errors, unreadable files and store
//! failures.

mod automation;
mod computer;
mod cp;
mod desktop;
mod fleet;
mod image;
mod net;
mod remote;
mod remote_desktop;
mod serve;
mod store;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use orgo_template::{MAX_DOCUMENT_BYTES, Segment, Template, TemplateError};

#[derive(Parser)]
#[command(
    name = "orgo",
    version,
    about = "Declarative computer templates and golden snapshots"
)]
struct Cli {
    /// The store's directory (default: `$ORGO_HOME`, else
    /// `$XDG_DATA_HOME/orgo`, else `~/.local/share/orgo`).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<std::path::PathBuf>,
    #[command(flatten)]
    runtime: computer::RuntimeArgs,
    /// Talk to an `orgo serve` at this URL (default: `$ORGO_URL`), with
    /// the key in `$ORGO_API_KEY`: publish, templates, resolve, build,
    /// launch, exec, ps, stop, cp, egress and the desktop commands (but
    /// vnc and stream) then run there.
    #[arg(long, global = true, value_name = "URL")]
    remote: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check templates; print each one's digest.
    Validate {
        /// Template files (YAML or JSON); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<String>,
        /// Print one JSON object per file on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the canonical form of a template.
    Normalize {
        /// Template file; `-` reads stdin.
        file: String,
        /// `json` prints the exact RFC 8785 bytes the digest hashes (plus a newline).
        #[arg(long, value_enum, default_value_t = OutputFormat::Yaml)]
        format: OutputFormat,
        /// Print diagnostics as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print a template's digest, `sha256:<64 hex>`.
    Digest {
        /// Template file; `-` reads stdin.
        file: String,
        /// Print diagnostics as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the format (sugar and canonical forms).
    Schema,
    /// Publish a template as `NAMESPACE/name@version`; versions are
    /// immutable, and `system` holds only the curated templates.
    Publish {
        /// Template file; `-` reads stdin.
        file: String,
        /// The namespace to publish in (default: `default`; remote: the
        /// key's).
        #[arg(long)]
        namespace: Option<String>,
        /// Print diagnostics as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List templates (all namespaces, or one) with their digests: the
    /// curated ones (`system`) and those published in the store.
    Templates {
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// Print the digest of a ref (`[namespace/]name@version`): a curated
    /// template (`system/...`) or a published one.
    Resolve {
        /// The ref; the namespace defaults to `default`.
        reference: String,
        /// Print the canonical template instead of its digest.
        #[arg(long, value_enum)]
        format: Option<OutputFormat>,
    },
    /// Check or clean the local store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Base images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Build a template's golden snapshot (once per digest); print the
    /// template digest and the snapshot's manifest digest.
    Build(computer::BuildArgs),
    /// Launch a computer from a template's snapshot (built first if
    /// needed); print its id, the only line on stdout.
    Launch(computer::LaunchArgs),
    /// Run a command in a computer: its stdout and stderr pass through,
    /// and its exit code is orgo's.
    Exec(computer::ExecArgs),
    /// List the computers.
    Ps(computer::PsArgs),
    /// Stop computers: `on_shutdown`, power off, clean up.
    Stop(computer::StopArgs),
    /// Suspend computers: save each to disk and free its memory and vCPUs
    /// (`orgo ps` shows `suspended`); calls to it fail until it is resumed.
    Suspend(computer::StopArgs),
    /// Resume suspended computers, with the same ids, files, processes and
    /// terminal sessions.
    Resume(computer::StopArgs),
    /// Capture a running computer into a new snapshot (it runs on); print
    /// the checkpoint's digest.
    Checkpoint(computer::CheckpointArgs),
    /// Checkpoint a running computer once and launch computers from it;
    /// print their ids, one per line.
    Fork(computer::ForkArgs),
    /// Copy a file into or out of a computer: `ID:PATH` as the source or
    /// the destination (`-` is stdin or stdout).
    Cp(cp::CpArgs),
    /// Serve the HTTP API (`/api/...`) until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// The HTTP API's keys.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Print a computer's forwarded ports, one per line:
    /// `INTERNAL/PROTOCOL HOST_ADDRESS:HOST_PORT`.
    Ports(net::PortsArgs),
    /// Print the smallest `egress_policy` allowing what a computer launched
    /// with `--egress-learn` has reached, as YAML.
    Egress(net::EgressArgs),
    #[command(flatten)]
    Desktop(desktop::DesktopCommand),
    /// Print a computer's service logs (`/var/log/orgo/<service>.log`).
    Logs(automation::LogsArgs),
    /// Print a computer's events, one JSON object per line (`ts`, `kind`, ...).
    Events(automation::EventsArgs),
    /// Fire a computer's webhook triggers of PATH.
    Trigger(automation::TriggerArgs),
    /// Print a computer's metrics in the Prometheus text format.
    Metrics(automation::MetricsArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Re-hash every blob and check every ref and manifest; exit 1 on a problem.
    Verify,
    /// Remove what no published template, base image or running computer uses.
    Gc,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

/// What ends a command early.
enum Failure {
    /// The document is invalid; diagnostics were printed.
    Invalid,
    /// The input could not be read.
    Input(String),
    /// Some inputs could not be read; each was reported already.
    Unreadable,
    /// The answer is no (a ref not published, a store with problems).
    No(String),
    /// The store failed or refused.
    Store(orgo_snapshot::StoreError),
    /// Another library failed (building an image); exit 2.
    Error(Box<dyn std::error::Error + Send + Sync>),
    /// SIGINT or SIGTERM arrived; what was under way was undone; exit 130.
    Interrupted,
}

impl Failure {
    fn error(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Error(Box::new(error))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match remote::run(cli) {
        Ok(code) => return code,
        Err(cli) => *cli,
    };
    let result = match cli.command {
        Command::Validate { files, json } => validate(&files, json),
        Command::Normalize { file, format, json } => load(&file, json).map(|t| {
            emit(&match format {
                OutputFormat::Yaml => t.to_yaml(),
                OutputFormat::Json => format!("{}\n", t.canonical_json()),
            })
        }),
        Command::Digest { file, json } => {
            load(&file, json).map(|t| emit(&format!("{}\n", t.digest())))
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&orgo_template::json_schema())
                .expect("a JSON value always serializes");
            emit(&format!("{schema}\n"));
            Ok(())
        }
        Command::Publish {
            file,
            namespace,
            json,
        } => store::publish(
            cli.store,
            &file,
            namespace.as_deref().unwrap_or("default"),
            json,
        ),
        Command::Templates { namespace } => store::templates(cli.store, namespace.as_deref()),
        Command::Resolve { reference, format } => store::resolve(cli.store, &reference, format),
        Command::Store(StoreCommand::Verify) => store::verify(cli.store),
        Command::Store(StoreCommand::Gc) => store::gc(cli.store),
        Command::Image(command) => image::run(cli.store, command),
        Command::Build(args) => computer::build(cli.store, &cli.runtime, args),
        Command::Launch(args) => computer::launch(cli.store, &cli.runtime, args),
        // The command's own exit code passes through; orgo's failures exit
        // 125 (as `docker run` does), apart from any code a command returns.
        Command::Exec(args) => match computer::exec(cli.store, &cli.runtime, args) {
            Ok(code) => return ExitCode::from(code),
            Err(failure) => {
                fail(failure);
                return ExitCode::from(computer::EXEC_FAILED);
            }
        },
        Command::Ps(args) => computer::ps(cli.store, &cli.runtime, args),
        Command::Stop(args) => computer::stop(cli.store, &cli.runtime, args),
        Command::Suspend(args) => computer::suspend(cli.store, &cli.runtime, args),
        Command::Resume(args) => computer::resume(cli.store, &cli.runtime, args),
        Command::Checkpoint(args) => computer::checkpoint(cli.store, &cli.runtime, args),
        Command::Fork(args) => computer::fork(cli.store, &cli.runtime, args),
        Command::Cp(args) => cp::local(cli.store, &cli.runtime, args),
        Command::Serve(args) => serve::serve(cli.store, &cli.runtime, args),
        Command::Keys(command) => serve::keys(cli.store, command),
        Command::Ports(args) => net::ports(cli.store, &cli.runtime, args),
        Command::Egress(args) => net::egress(cli.store, &cli.runtime, args),
        Command::Desktop(command) => desktop::run(cli.store, &cli.runtime, command),
        Command::Logs(args) => automation::logs(cli.store, args),
        Command::Events(args) => automation::events(cli.store, args),
        Command::Trigger(args) => automation::trigger(cli.store, args),
        Command::Metrics(args) => automation::metrics(cli.store, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(failure),
    }
}

/// Prints what ended the command; returns its exit status.
pub(crate) fn fail(failure: Failure) -> ExitCode {
    match failure {
        Failure::Invalid => ExitCode::from(1),
        Failure::Interrupted => {
            eprintln!("error: interrupted");
            ExitCode::from(130)
        }
        Failure::Unreadable => ExitCode::from(2),
        Failure::Input(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Failure::No(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Failure::Store(error) => {
            print_error_chain(&error);
            ExitCode::from(store::exit_code(&error))
        }
        Failure::Error(error) => {
            print_error_chain(&*error);
            ExitCode::from(2)
        }
    }
}

/// `error: <top>` then one `caused by: <source>` line per cause.
fn print_error_chain(error: &dyn std::error::Error) {
    eprintln!("error: {:#}", orgo_runtime::ErrorChain(error));
}

fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`orgo schema | head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Reads a file or stdin, at most one byte past the template size limit, so
/// that `orgo validate /dev/zero` ends.
pub(crate) fn read(file: &str) -> Result<String, Failure> {
    let limit = MAX_DOCUMENT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let result = if file == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    let name = display_name(file);
    result.map_err(|e| Failure::Input(format!("cannot read `{name}`: {e}")))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Failure::Input(format!(
            "`{name}` is over the {MAX_DOCUMENT_BYTES}-byte limit of a template"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Failure::Input(format!(
            "`{name}` is not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn display_name(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
    Template::parse_detected((file != "-").then_some(file), text)
}

/// Reads and checks one file, printing its diagnostics on failure.
fn load(file: &str, json: bool) -> Result<Template, Failure> {
    let text = read(file)?;
    parse(file, &text).map_err(|error| {
        report(file, &error, json);
        Failure::Invalid
    })
}

/// Checks every file, also after one fails or cannot be read: exit 2 if any
/// could not be read, else 1 if any is invalid.
fn validate(files: &[String], json: bool) -> Result<(), Failure> {
    let (mut invalid, mut unreadable) = (false, false);
    for file in files {
        let name = display_name(file);
        let result = read(file).map(|text| parse(file, &text));
        let line = match result {
            Ok(Ok(template)) if json => serde_json::json!({
                "file": name, "valid": true, "digest": template.digest().to_string(), "errors": [],
            })
            .to_string(),
            Ok(Ok(template)) => format!("{name}: valid {}", template.digest()),
            Ok(Err(error)) => {
                invalid = true;
                report(file, &error, json);
                continue;
            }
            Err(Failure::Input(message)) => {
                unreadable = true;
                if !json {
                    eprintln!("error: {message}");
                    continue;
                }
                serde_json::json!({ "file": name, "valid": false, "digest": null, "error": message })
                    .to_string()
            }
            Err(_) => continue, // read() gives only Input
        };
        emit(&format!("{line}\n"));
    }
    if unreadable {
        Err(Failure::Unreadable)
    } else if invalid {
        Err(Failure::Invalid)
    } else {
        Ok(())
    }
}

/// Prints diagnostics: compiler-style text on stderr, or one JSON object on stdout.
fn report(file: &str, error: &TemplateError, json: bool) {
    let name = display_name(file);
    if json {
        let errors: Vec<serde_json::Value> = error
            .diagnostics()
            .iter()
            .map(|d| {
                let segments: Vec<serde_json::Value> = d
                    .path
                    .segments()
                    .iter()
                    .map(|s| match s {
                        Segment::Key(key) => serde_json::Value::from(key.as_ref()),
                        Segment::Index(index) => serde_json::Value::from(*index),
                    })
                    .collect();
                serde_json::json!({
                    "path": d.path.to_string(),
                    "segments": segments,
                    "message": d.message,
                    "line": d.location.map(|l| l.line),
                    "column": d.location.map(|l| l.column),
                })
            })
            .collect();
        let line =
            serde_json::json!({ "file": name, "valid": false, "digest": null, "errors": errors });
        emit(&format!("{line}\n"));
        return;
    }
    let mut err = std::io::stderr().lock();
    let diagnostics = error.diagnostics();
    if diagnostics.is_empty() {
        let _ = writeln!(err, "{name}: error: {error}");
        return;
    }
    for d in diagnostics {
        let _ = match d.location {
            Some(l) => writeln!(
                err,
                "{name}:{}:{}: {}: {}",
                l.line, l.column, d.path, d.message
            ),
            None => writeln!(err, "{name}: {}: {}", d.path, d.message),
        };
    }
    let count = diagnostics.len();
    let _ = writeln!(
        err,
        "{name}: invalid, {count} problem{}",
        if count == 1 { "" } else { "s" }
    );
}
