//! Remote mode: with `--remote URL` (or `$ORGO_URL`) and `$ORGO_API_KEY`,
//! `publish`, `templates`, `resolve`, `build`, `launch` (with
//! `--egress-learn`), `exec`, `ps`, `stop`, `cp`, `egress` and the desktop
//! commands (`screenshot`, `click`, `move`, `drag`, `type`, `key`,
//! `scroll`, `cursor`) talk to an `orgo serve` (`orgo-client`), with the
//! same output and exit codes as locally. The other commands run here.
//!
//! Where remote differs: a template *file* given to `build` or `launch` is
//! first published (in the key's namespace); `build --check` asks this
//! host, so it is refused; a launch's secrets are the `ORGO_SECRET_*`
//! variables of this environment (the server's vault is not used), and so
//! are a fork's; `vnc` and `stream` are refused, saying why (the API serves
//! neither).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use orgo_client::{Client, ClientError, ExecRequest, Launch, Stream};
use orgo_template::{Template, TemplateRef};

use crate::cp::{End, ends, read_local, write_local};
use crate::{Cli, Command, Failure, OutputFormat, emit, fail};

/// Runs `cli` remotely when remote mode is on and the command has a
/// remote form; gives it back otherwise.
pub(crate) fn run(cli: Cli) -> Result<ExitCode, Box<Cli>> {
    let url = cli
        .remote
        .clone()
        .or_else(|| std::env::var("ORGO_URL").ok().filter(|u| !u.is_empty()));
    let Some(url) = url else {
        return Err(Box::new(cli));
    };
    let remote = matches!(
        cli.command,
        Command::Publish { .. }
            | Command::Templates { .. }
            | Command::Resolve { .. }
            | Command::Build(_)
            | Command::Launch(_)
            | Command::Exec(_)
            | Command::Ps(_)
            | Command::Stop(_)
            | Command::Suspend(_)
            | Command::Resume(_)
            | Command::Checkpoint(_)
            | Command::Fork(_)
            | Command::Cp(_)
            | Command::Logs(_)
            | Command::Events(_)
            | Command::Trigger(_)
            | Command::Metrics(_)
            | Command::Egress(_)
            | Command::Ports(_)
            | Command::Desktop(_)
    );
    if !remote {
        return Err(Box::new(cli));
    }
    let is_exec = matches!(cli.command, Command::Exec(_));
    let result = open(&url).and_then(|(tokio, client)| dispatch(&tokio, &client, cli.command));
    Ok(match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) if is_exec => {
            fail(failure);
            ExitCode::from(crate::computer::EXEC_FAILED)
        }
        Err(failure) => fail(failure),
    })
}

fn open(url: &str) -> Result<(tokio::runtime::Runtime, Client), Failure> {
    let key = std::env::var("ORGO_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Failure::Input(format!(
                "remote mode (`{url}`) needs the key in `ORGO_API_KEY`"
            ))
        })?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))?;
    let client = Client::new(url, &key).map_err(Failure::error)?;
    Ok((tokio, client))
}

/// A server's answer as the local command's failure: a "no" (exit 1)
/// where the local command says no, else exit 2.
pub(crate) fn failure(error: ClientError) -> Failure {
    match error.code() {
        Some("not_found" | "version_conflict" | "invalid_template") => {
            Failure::No(error.to_string())
        }
        Some(_) => Failure::Input(error.to_string()),
        None => Failure::error(error),
    }
}

fn dispatch(
    tokio: &tokio::runtime::Runtime,
    client: &Client,
    command: Command,
) -> Result<u8, Failure> {
    match command {
        Command::Publish {
            file,
            namespace,
            json,
        } => {
            let text = checked(&file, json)?;
            let published = tokio
                .block_on(client.publish(namespace.as_deref(), &text))
                .map_err(failure)?;
            let what = if published.published {
                "published"
            } else {
                "already published"
            };
            emit(&format!(
                "{} {} ({what})\n",
                published.reference, published.digest
            ));
        }
        Command::Templates { namespace } => {
            let listed = tokio
                .block_on(client.templates(namespace.as_deref()))
                .map_err(failure)?;
            let out: String = listed
                .iter()
                .map(|t| format!("{} {}\n", t.reference, t.digest))
                .collect();
            emit(&out);
        }
        Command::Resolve { reference, format } => {
            let reference = crate::computer::parse_ref(&reference)?;
            let found = tokio
                .block_on(client.template(&reference.to_string()))
                .map_err(|e| match e.code() {
                    Some("not_found") => Failure::No(format!("`{reference}` is not published")),
                    _ => failure(e),
                })?;
            let template = || {
                Template::from_value(&found.document)
                    .map_err(|e| Failure::Input(format!("the server's document: {e}")))
            };
            emit(&match format {
                None => format!("{}\n", found.digest),
                Some(OutputFormat::Yaml) => template()?.to_yaml(),
                Some(OutputFormat::Json) => format!("{}\n", template()?.canonical_json()),
            });
        }
        Command::Build(args) => {
            if args.check {
                return Err(Failure::Input(
                    "`orgo build --check` asks this host; run it on the server's host".into(),
                ));
            }
            let reference = reference(tokio, client, &args.template)?;
            let started = Instant::now();
            let built = tokio
                .block_on(client.build(&reference, &mut progress))
                .map_err(failure)?;
            let view = built.view;
            if view.status != "ready" {
                let error = view.error.unwrap_or(orgo_client::BuildFailure {
                    message: format!("the build is {}", view.status),
                    field: None,
                    output: None,
                });
                return Err(Failure::Input(error.message));
            }
            let how = if built.reused {
                "cached".to_owned()
            } else {
                format!("built in {:.1} s", started.elapsed().as_secs_f64())
            };
            emit(&format!(
                "{} {} ({how})\n",
                view.digest,
                view.snapshot.unwrap_or_default()
            ));
        }
        Command::Launch(args) => {
            let reference = reference(tokio, client, &args.template)?;
            let mut launch = Launch::new(&reference);
            launch.egress_learn = args.egress_learn;
            launch.cpu = args.cpu;
            launch.ram_gb = args.ram_gb;
            launch.auto_stop_minutes = args.auto_stop_minutes;
            for pair in &args.env {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| Failure::Input(format!("`--env {pair}` is not `KEY=VALUE`")))?;
                launch.env.insert(key.to_owned(), value.to_owned());
            }
            launch.secrets = secrets();
            let started = Instant::now();
            let computer = tokio.block_on(client.launch(&launch)).map_err(failure)?;
            eprintln!(
                "orgo: launched {} from {} in {} ms",
                computer.id,
                computer.template_ref,
                started.elapsed().as_millis()
            );
            emit(&format!("{}\n", computer.id));
        }
        Command::Exec(args) => {
            let mut exec = ExecRequest::argv(args.command);
            exec.user = args.user;
            exec.cwd = args.cwd;
            exec.timeout_s = args.timeout;
            let mut pass = |stream: Stream, data: &[u8]| {
                let _ = match stream {
                    Stream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(data).and_then(|()| out.flush())
                    }
                    Stream::Stderr => std::io::stderr().lock().write_all(data),
                };
            };
            let status = tokio
                .block_on(client.exec(&args.id, &exec, &mut pass))
                .map_err(failure)?;
            return Ok(match (status.code, status.signal) {
                (Some(code), _) => u8::try_from(code).unwrap_or(1),
                (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
                _ => 1,
            });
        }
        Command::Ps(args) => {
            let computers = tokio.block_on(client.computers()).map_err(failure)?;
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
                if args.json {
                    out.push_str(&format!(
                        "{}\n",
                        serde_json::json!({
                            "id": c.id, "template": c.template_ref, "status": c.status,
                            "cpus": c.cpu, "memory_mib": c.memory_mib, "created_unix": c.created_unix,
                            "ports": c.ports.iter().map(|p| serde_json::json!({
                                "internal": p.internal, "protocol": p.protocol, "address": p.address,
                            })).collect::<Vec<_>>(),
                        })
                    ));
                } else {
                    out.push_str(&format!(
                        "{:<16} {:<25} {:<9} {:>4} {:>5}M  {:<5} {}\n",
                        c.id,
                        c.template_ref,
                        c.status,
                        c.cpu,
                        c.memory_mib,
                        crate::computer::age(now.saturating_sub(c.created_unix)),
                        crate::net::column(c.ports.iter().map(|p| (
                            p.internal,
                            p.protocol.as_str(),
                            p.address.clone()
                        ))),
                    ));
                }
            }
            emit(&out);
        }
        Command::Stop(args) => {
            let mut failed = None;
            for id in &args.ids {
                match tokio.block_on(client.stop(id)) {
                    Ok(said) => {
                        if let Some(text) = said.filter(|t| !t.is_empty()) {
                            eprint!("{text}");
                        }
                        emit(&format!("{id}\n"));
                    }
                    Err(error) => {
                        if let Some(previous) = failed.replace(failure(error)) {
                            fail(previous);
                        }
                    }
                }
            }
            if let Some(failure) = failed {
                return Err(failure);
            }
        }
        Command::Cp(args) => match ends(&args)? {
            (End::Computer { id, path }, End::Local(file)) => {
                let bytes = tokio
                    .block_on(client.read_file(&id, &path))
                    .map_err(failure)?;
                write_local(&file, &bytes)?;
            }
            (End::Local(file), End::Computer { id, path }) => {
                let bytes = read_local(&file)?;
                tokio
                    .block_on(client.write_file(&id, &path, bytes, None))
                    .map_err(failure)?;
            }
            _ => unreachable!("ends() checked one side is a computer"),
        },
        Command::Logs(args) => {
            let prefixed = args.service.is_none();
            let mut print = |service: &str, line: &str| {
                if prefixed {
                    emit(&format!("{service} | {line}\n"));
                } else {
                    emit(&format!("{line}\n"));
                }
            };
            let since = args.since.map(|d| d.as_secs().max(1));
            tokio
                .block_on(client.logs(
                    &args.id,
                    args.service.as_deref(),
                    since,
                    args.follow,
                    &mut print,
                ))
                .map_err(failure)?;
        }
        Command::Events(args) => {
            let mut print = |event: serde_json::Value| emit(&format!("{event}\n"));
            tokio
                .block_on(client.events(&args.id, args.follow, &mut print))
                .map_err(failure)?;
        }
        Command::Trigger(args) => {
            let data = crate::automation::webhook_data(args.data.as_deref())?;
            let fired = tokio
                .block_on(client.trigger(&args.id, &args.path, data))
                .map_err(failure)?;
            if fired.is_empty() {
                crate::automation::none_ran(&args.path);
            }
            emit(&fired.iter().map(|t| format!("{t}\n")).collect::<String>());
        }
        Command::Metrics(args) => {
            let text = tokio.block_on(client.metrics(&args.id)).map_err(failure)?;
            emit(&text);
        }
        Command::Ports(args) => {
            // `orgo ports`'s lines: `INTERNAL/PROTOCOL HOST_ADDRESS:HOST_PORT`.
            let view = tokio.block_on(client.computer(&args.id)).map_err(failure)?;
            let mut out = String::new();
            for port in &view.ports {
                out.push_str(&format!(
                    "{}/{} {}\n",
                    port.internal, port.protocol, port.address
                ));
            }
            emit(&out);
        }
        Command::Egress(args) => {
            let learned = tokio.block_on(client.egress(&args.id)).map_err(failure)?;
            emit(&learned.policy);
        }
        Command::Desktop(command) => crate::remote_desktop::run(tokio, client, command)?,
        Command::Suspend(args) => crate::computer::each(&args.ids, |id| {
            tokio
                .block_on(client.suspend(id))
                .map(drop)
                .map_err(failure)
        })?,
        Command::Resume(args) => crate::computer::each(&args.ids, |id| {
            tokio.block_on(client.resume(id)).map_err(failure)
        })?,
        Command::Checkpoint(args) => {
            let digest = tokio
                .block_on(client.checkpoint(&args.id, args.publish.as_deref()))
                .map_err(failure)?;
            emit(&format!("{digest}\n"));
        }
        Command::Fork(args) => {
            let ids = tokio
                .block_on(client.fork(&args.id, u32::from(args.count), &secrets()))
                .map_err(failure)?;
            for id in ids {
                emit(&format!("{id}\n"));
            }
        }
        _ => unreachable!("run() sends only the remote commands"),
    }
    Ok(0)
}

/// The ref a `build` or `launch` argument names: a file is published
/// first (in the key's namespace).
fn reference(
    tokio: &tokio::runtime::Runtime,
    client: &Client,
    arg: &str,
) -> Result<String, Failure> {
    if arg == "-" || std::path::Path::new(arg).exists() || !arg.contains('@') {
        let text = checked(arg, false)?;
        let published = tokio
            .block_on(client.publish(None, &text))
            .map_err(failure)?;
        return Ok(published.reference);
    }
    // A ref without a namespace is in the key's (the server's default).
    if !arg.contains('/') {
        let _: TemplateRef = crate::computer::parse_ref(arg)?;
        let found = tokio
            .block_on(client.templates(None))
            .map_err(failure)?
            .into_iter()
            .find(|t| {
                t.reference
                    .split_once('/')
                    .is_some_and(|(ns, rest)| ns != "system" && rest == arg)
            });
        return found.map(|t| t.reference).ok_or_else(|| {
            Failure::No(format!("`{arg}` is not published in the key's namespace"))
        });
    }
    Ok(crate::computer::parse_ref(arg)?.to_string())
}

/// A template file's text, checked here first: an invalid one gets the
/// local command's diagnostics (and exit status).
fn checked(file: &str, json: bool) -> Result<String, Failure> {
    let text = crate::read(file)?;
    crate::parse(file, &text).map_err(|error| {
        crate::report(file, &error, json);
        Failure::Invalid
    })?;
    Ok(text)
}

/// Build progress on stderr, as the local command prints it.
fn progress(frame: orgo_client::Frame) {
    let mut err = std::io::stderr().lock();
    let _ = match frame.phase.as_str() {
        "output" => writeln!(err, "{}", frame.line),
        _ => writeln!(err, "orgo: {}", frame.line),
    };
}

/// `ORGO_SECRET_<NAME>` of this environment, as secret `name`s.
fn secrets() -> BTreeMap<String, String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix(orgo_runtime::SECRET_ENV_PREFIX)
                .map(|name| (name.to_lowercase(), v))
        })
        .collect()
}
