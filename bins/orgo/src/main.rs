//! `orgo`: validate, normalize and digest `orgo.ai/v1` templates.
//!
//! Exit status: 0 on success, 1 when a document is invalid (diagnostics on
//! stderr), 2 on usage errors and unreadable files.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use orgo_template::{Format, Segment, Template, TemplateError};

#[derive(Parser)]
#[command(
    name = "orgo",
    version,
    about = "Declarative computer templates and golden snapshots"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, json } => validate(&files, json),
        Command::Normalize { file, format, json } => load(&file, json).and_then(|t| {
            let text = match format {
                OutputFormat::Yaml => t.to_yaml(),
                OutputFormat::Json => format!("{}\n", t.canonical_json()),
            };
            emit(&text)
        }),
        Command::Digest { file, json } => {
            load(&file, json).and_then(|t| emit(&format!("{}\n", t.digest())))
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&orgo_template::json_schema())
                .expect("a JSON value always serializes");
            emit(&format!("{schema}\n"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid) => ExitCode::from(1),
        Err(Failure::Input(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`orgo schema | head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

fn read(file: &str) -> Result<String, Failure> {
    let mut text = String::new();
    let result = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map(|_| ())
    };
    result.map_err(|e| Failure::Input(format!("cannot read `{}`: {e}", display_name(file))))?;
    Ok(text)
}

fn display_name(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
    let name = (file != "-").then_some(file);
    Template::parse(text, Format::detect(name, text))
}

/// Reads and checks one file, printing its diagnostics on failure.
fn load(file: &str, json: bool) -> Result<Template, Failure> {
    let text = read(file)?;
    parse(file, &text).map_err(|error| {
        report(file, &error, json);
        Failure::Invalid
    })
}

fn validate(files: &[String], json: bool) -> Result<(), Failure> {
    let mut invalid = false;
    for file in files {
        let text = read(file)?;
        match parse(file, &text) {
            Ok(template) if json => {
                let line = serde_json::json!({
                    "file": display_name(file),
                    "valid": true,
                    "digest": template.digest().to_string(),
                    "errors": [],
                });
                emit(&format!("{line}\n"))?;
            }
            Ok(template) => emit(&format!(
                "{}: valid {}\n",
                display_name(file),
                template.digest()
            ))?,
            Err(error) => {
                invalid = true;
                report(file, &error, json);
            }
        }
    }
    if invalid {
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
        let _ = emit(&format!("{line}\n"));
        return;
    }
    let mut err = std::io::stderr().lock();
    let diagnostics = error.diagnostics();
    if diagnostics.is_empty() {
        let _ = writeln!(err, "{name}: error: {error}");
        print_sources(&mut err, error);
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

/// Prints the `source()` chain under an error, one cause a line.
fn print_sources(out: &mut impl Write, error: &dyn std::error::Error) {
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = writeln!(out, "  caused by: {cause}");
        source = cause.source();
    }
}
