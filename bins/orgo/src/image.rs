//! `orgo image`: base images.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use orgo_runtime::{BaseImageRecipe, build_base};

/// `orgo image ...`
#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the base image (kernel, initramfs, root disk) once per recipe;
    /// print its recipe digest and directory. Needs root, mmdebstrap,
    /// apt-get with Debian sources, and mkfs.ext4.
    BuildBase(BuildBase),
}

#[derive(Args)]
pub(crate) struct BuildBase {
    /// The static `orgo-agent` binary to install as `/sbin/orgo-agent`
    /// (`RUSTFLAGS="-C target-feature=+crt-static" cargo build -p orgo-agent
    /// --release --target x86_64-unknown-linux-gnu`).
    #[arg(long)]
    agent: PathBuf,
    /// Where images are kept (default `$ORGO_HOME/images`, else `~/.orgo/images`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the image's manifest as JSON instead.
    #[arg(long)]
    json: bool,
}

/// Runs an `orgo image` command; an error is the message to print.
pub(crate) fn run(command: ImageCommand) -> Result<(), String> {
    match command {
        ImageCommand::BuildBase(args) => build(args),
    }
}

fn build(args: BuildBase) -> Result<(), String> {
    let out = args.out.unwrap_or_else(default_dir);
    let recipe = BaseImageRecipe::resolve(&args.agent).map_err(|e| chain(&e))?;
    let image = build_base(&recipe, &args.agent, &out, &mut |step: &str| {
        eprintln!("orgo: {step}")
    })
    .map_err(|e| chain(&e))?;
    if args.json {
        let manifest = serde_json::to_string_pretty(&image).expect("a manifest always serializes");
        println!("{manifest}");
    } else {
        println!("{} {}", image.recipe_digest, image.dir.display());
    }
    Ok(())
}

fn default_dir() -> PathBuf {
    match std::env::var_os("ORGO_HOME") {
        Some(home) => PathBuf::from(home).join("images"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".orgo/images"),
    }
}

/// The error and its sources, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}
