//! `orgo image`: base images.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use orgo_runtime::BuildEvent;

use crate::Failure;

/// `orgo image ...`
#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the base image (kernel, initramfs, root disk) into the store,
    /// once per recipe; print the recipe digest and the image manifest's
    /// digest. Needs root, mmdebstrap, apt-get with Debian sources, and
    /// mkfs.ext4.
    BuildBase(BuildBase),
}

#[derive(Args)]
pub(crate) struct BuildBase {
    /// The static `orgo-agent` binary to install as `/sbin/orgo-agent`
    /// (`RUSTFLAGS="-C target-feature=+crt-static" cargo build -p orgo-agent
    /// --release --target x86_64-unknown-linux-gnu`).
    #[arg(long)]
    agent: PathBuf,
    /// Print the image's manifest as JSON instead.
    #[arg(long)]
    json: bool,
}

/// Runs an `orgo image` command against the store at `root`.
pub(crate) fn run(root: Option<PathBuf>, command: ImageCommand) -> Result<(), Failure> {
    match command {
        ImageCommand::BuildBase(args) => build(root, args),
    }
}

/// Builds the base image into the store, once per recipe digest (see
/// `Runtime::base_image`: built beside the store, then moved in as blobs
/// under an image manifest, `images/<recipe>` pointing at it).
fn build(root: Option<PathBuf>, args: BuildBase) -> Result<(), Failure> {
    let (tokio, runtime) = crate::computer::open_with_agent(root, Some(args.agent))?;
    let mut log = |event: BuildEvent| {
        if let BuildEvent::Status(text) = event {
            eprintln!("orgo: {text}");
        }
    };
    let (digest, manifest) = crate::computer::until_signal(&tokio, runtime.base_image(&mut log))?
        .map_err(crate::computer::runtime_error)?;
    if args.json {
        let text = serde_json::to_string_pretty(&manifest).expect("a manifest always serializes");
        crate::emit(&format!("{text}\n"));
    } else {
        crate::emit(&format!("{} {digest}\n", manifest.recipe));
    }
    Ok(())
}
