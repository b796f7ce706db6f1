//! `orgo image`: base images.

use std::path::PathBuf;

use std::sync::Arc;

use clap::{Args, Subcommand};
use orgo_runtime::{BaseImageRecipe, build_base};
use orgo_snapshot::{BuildCache, LockMode, LockService as _, RefKey};
use orgo_template::Digest;

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

/// Builds the base image into the store, once per recipe digest: the image
/// is built beside the store (same filesystem), then its files are moved in
/// as blobs under an image manifest, `images/<recipe>` pointing at it.
fn build(root: Option<PathBuf>, args: BuildBase) -> Result<(), Failure> {
    let recipe = BaseImageRecipe::resolve(&args.agent).map_err(Failure::error)?;
    let recipe_digest: Digest = recipe.digest().parse().map_err(Failure::error)?;
    let (runtime, store) = crate::store::open(root)?;
    let cache = BuildCache::new(Arc::new(store.clone()));
    // One build per recipe, also across processes.
    let lock =
        RefKey::new(&format!("builds/image-{}", recipe_digest.hex())).map_err(Failure::Store)?;
    let _building = runtime
        .block_on(store.lock(&lock, LockMode::Exclusive))
        .map_err(Failure::Store)?;
    let found = runtime
        .block_on(cache.base_image(&recipe_digest))
        .map_err(Failure::Store)?;
    let (digest, manifest) = match found {
        Some(hit) => hit,
        None => {
            // Built beside the store, in this process's own scratch
            // directory (gc removes it if this process dies), then moved in.
            let scratch = runtime
                .block_on(store.scratch_dir())
                .map_err(Failure::Store)?;
            let image = build_base(&recipe, &args.agent, &scratch, &mut |step: &str| {
                eprintln!("orgo: {step}")
            })
            .map_err(Failure::error);
            let stored = image.and_then(|image| {
                let files = image
                    .files
                    .keys()
                    .map(|name| (name.clone(), image.dir.join(name)))
                    .collect();
                // The store hashes every file as it takes it in: the
                // manifest names exactly the bytes stored.
                runtime
                    .block_on(cache.put_base_image(&recipe_digest, &files))
                    .map_err(Failure::Store)
            });
            let _ = std::fs::remove_dir_all(&scratch);
            stored?
        }
    };
    if args.json {
        let text = serde_json::to_string_pretty(&manifest).expect("a manifest always serializes");
        crate::emit(&format!("{text}\n"));
    } else {
        crate::emit(&format!("{recipe_digest} {digest}\n"));
    }
    Ok(())
}
