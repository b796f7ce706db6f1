//! The base image in the store: its recipe resolved once per runtime, the
//! image built into the store once per recipe (also across processes), and
//! where its files are.

use std::path::PathBuf;
use std::sync::Arc;

use orgo_snapshot::{BuildCache, ImageManifest, LocalStore, LockMode, RefKey, Store};
use orgo_template::Digest;

use crate::error::{RuntimeError, joined, store_error};
use crate::fleet::Fleet;
use crate::image::{BaseImageRecipe, DesktopImageRecipe, build_base, build_desktop};
use crate::steps::{BuildEvent, BuildLog};

/// The base images of one store, built with one guest agent.
#[derive(Debug)]
pub(crate) struct BaseImages {
    store: LocalStore,
    cache: BuildCache,
    /// Where base images' build locks are taken (the fleet's, in one) and
    /// what is fetched from it.
    locks: Arc<dyn Store>,
    fleet: Fleet,
    /// The agent given, else `None`: the embedded one.
    agent: Option<PathBuf>,
    /// The recipe, resolved (from apt's package lists, which takes
    /// seconds) once.
    recipe: tokio::sync::OnceCell<(BaseImageRecipe, Digest)>,
    /// The agent's SHA-256, read once.
    agent_digest: tokio::sync::OnceCell<Digest>,
}

/// Where a base image's files are.
pub(crate) struct ImagePaths {
    pub(crate) vmlinuz: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) rootfs: PathBuf,
}

impl BaseImages {
    pub(crate) fn new(
        store: LocalStore,
        cache: BuildCache,
        locks: Arc<dyn Store>,
        fleet: Fleet,
        agent: Option<PathBuf>,
    ) -> BaseImages {
        BaseImages {
            store,
            cache,
            locks,
            fleet,
            agent,
            recipe: tokio::sync::OnceCell::new(),
            agent_digest: tokio::sync::OnceCell::new(),
        }
    }

    /// The agent the base image is built with: the one configured, else
    /// the embedded one, installed under the home.
    fn agent(&self) -> Result<PathBuf, RuntimeError> {
        if let Some(agent) = &self.agent {
            return Ok(agent.clone());
        }
        let home = self.store.root();
        crate::embedded::embedded_agent(home).map_err(|source| RuntimeError::EmbeddedAgent {
            home: home.to_owned(),
            source,
        })
    }

    /// The SHA-256 of the agent images are built with, which every
    /// snapshot built here runs: the embedded one's is known at compile
    /// time, a configured one is read once.
    pub(crate) async fn agent_digest(&self) -> Result<Digest, RuntimeError> {
        let Some(agent) = &self.agent else {
            return Ok(crate::embedded::embedded_agent_digest());
        };
        self.agent_digest
            .get_or_try_init(|| async {
                let path = agent.clone();
                let bytes = joined(
                    "guest agent digest",
                    tokio::task::spawn_blocking(move || std::fs::read(path)),
                )
                .await?
                .map_err(|source| RuntimeError::Io {
                    op: "read the guest agent",
                    path: agent.clone(),
                    source,
                })?;
                Ok(Digest::of(&bytes))
            })
            .await
            .copied()
    }

    /// The base image, built into the store first if this recipe has none
    /// (once per recipe, also across processes).
    pub(crate) async fn get(
        &self,
        log: BuildLog<'_>,
    ) -> Result<(Digest, ImageManifest), RuntimeError> {
        let agent = self.agent()?;
        let (recipe, recipe_digest) = self
            .recipe
            .get_or_try_init(|| resolve_recipe(agent.clone()))
            .await?
            .clone();
        if let Some(found) = self.stored(&recipe_digest).await? {
            return Ok(found);
        }
        let lock =
            RefKey::new(&format!("builds/image-{}", recipe_digest.hex())).map_err(store_error)?;
        let _building = self
            .locks
            .lock(&lock, LockMode::Exclusive)
            .await
            .map_err(store_error)?;
        if let Some(found) = self.stored(&recipe_digest).await? {
            return Ok(found);
        }
        crate::host_tools::require(crate::host_tools::HostTool::BASE_IMAGE)
            .map_err(RuntimeError::MissingTools)?;
        log(BuildEvent::Status(
            "building the base image (once per recipe; a few minutes)".into(),
        ));
        let scratch = self.store.scratch_dir().await.map_err(store_error)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let dir = scratch.clone();
        let job = tokio::task::spawn_blocking(move || {
            build_base(&recipe, &agent, &dir, &mut |step: &str| {
                let _ = tx.send(step.to_owned());
            })
        });
        while let Some(step) = rx.recv().await {
            log(BuildEvent::Status(format!("base image: {step}")));
        }
        let built = joined("base image", job)
            .await?
            .map_err(RuntimeError::Image);
        let stored = match built {
            Ok(image) => {
                let files = image
                    .files
                    .keys()
                    .map(|name| (name.clone(), image.dir.join(name)))
                    .collect();
                self.cache
                    .put_base_image(&recipe_digest, &files)
                    .await
                    .map_err(store_error)
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&scratch);
        stored
    }

    /// The desktop image (see [`DesktopImageRecipe`]), built into the store
    /// first (after the base image, if that is not there either) once per
    /// recipe, also across processes.
    pub(crate) async fn desktop(
        &self,
        log: BuildLog<'_>,
    ) -> Result<(Digest, ImageManifest), RuntimeError> {
        let (_, base_image) = self.get(log).await?;
        let agent = self.agent()?;
        let (base, _) = self
            .recipe
            .get_or_try_init(|| resolve_recipe(agent.clone()))
            .await?
            .clone();
        let recipe = DesktopImageRecipe::over(&base);
        let recipe_digest: Digest = recipe.digest().parse().map_err(|_| RuntimeError::Invalid {
            what: format!("desktop image recipe digest `{}`", recipe.digest()),
        })?;
        if let Some(found) = self.stored(&recipe_digest).await? {
            return Ok(found);
        }
        let lock =
            RefKey::new(&format!("builds/image-{}", recipe_digest.hex())).map_err(store_error)?;
        let _building = self
            .locks
            .lock(&lock, LockMode::Exclusive)
            .await
            .map_err(store_error)?;
        if let Some(found) = self.stored(&recipe_digest).await? {
            return Ok(found);
        }
        crate::host_tools::require(crate::host_tools::HostTool::BASE_IMAGE)
            .map_err(RuntimeError::MissingTools)?;
        log(BuildEvent::Status(
            "building the desktop image (once per recipe; a few minutes)".into(),
        ));
        let mut kernel_files = std::collections::BTreeMap::new();
        for name in ["vmlinuz", "vmlinux", "initrd.cpio"] {
            kernel_files.insert(name.to_owned(), self.blob(&base_image, name)?);
        }
        let scratch = self.store.scratch_dir().await.map_err(store_error)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let dir = scratch.clone();
        let job = tokio::task::spawn_blocking(move || {
            build_desktop(
                &base,
                &recipe,
                &kernel_files,
                &agent,
                &dir,
                &mut |step: &str| {
                    let _ = tx.send(step.to_owned());
                },
            )
        });
        while let Some(step) = rx.recv().await {
            log(BuildEvent::Status(format!("desktop image: {step}")));
        }
        let stored = match joined("desktop image", job)
            .await?
            .map_err(RuntimeError::Image)
        {
            Ok(files) => self
                .cache
                .put_base_image(&recipe_digest, &files)
                .await
                .map_err(store_error),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&scratch);
        stored
    }

    /// The base image of `recipe` in the store, if there is one.
    async fn stored(
        &self,
        recipe: &Digest,
    ) -> Result<Option<(Digest, ImageManifest)>, RuntimeError> {
        let found = self.cache.base_image(recipe).await.map_err(store_error)?;
        if let Some((_, image)) = &found {
            // Built by another host of the fleet: its files come here first.
            self.fleet
                .fetch(image.blobs.values().map(|b| b.digest).collect())
                .await?;
        }
        Ok(found)
    }

    /// Where `image`'s kernel, initramfs and root file system are.
    pub(crate) fn paths(&self, image: &ImageManifest) -> Result<ImagePaths, RuntimeError> {
        Ok(ImagePaths {
            vmlinuz: self.blob(image, "vmlinuz")?,
            initrd: self.blob(image, "initrd.cpio")?,
            rootfs: self.blob(image, "rootfs.ext4")?,
        })
    }

    /// Where the image's file of `role` is in the store.
    pub(crate) fn blob(&self, image: &ImageManifest, role: &str) -> Result<PathBuf, RuntimeError> {
        image
            .blobs
            .get(role)
            .map(|b| self.store.blob_path(&b.digest))
            .ok_or_else(|| RuntimeError::MissingRole {
                what: "base image",
                role: role.to_owned(),
            })
    }
}

/// The default base-image recipe for `agent` and its digest (apt is asked,
/// on a blocking thread).
async fn resolve_recipe(agent: PathBuf) -> Result<(BaseImageRecipe, Digest), RuntimeError> {
    let recipe = joined(
        "base image recipe",
        tokio::task::spawn_blocking(move || BaseImageRecipe::resolve(&agent)),
    )
    .await?
    .map_err(RuntimeError::Image)?;
    let digest = recipe.digest().parse().map_err(|_| RuntimeError::Invalid {
        what: format!("base image recipe digest `{}`", recipe.digest()),
    })?;
    Ok((recipe, digest))
}
