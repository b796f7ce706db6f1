//! [`Runtime`]: the front door. It holds the parts that do the work
//! ([`crate::shared`]: the builder, the home of computer records, the warm
//! pool) and hands each call to the module that owns it: builds to
//! [`crate::builder`], launches and the pool to [`crate::launch`], a
//! computer's connect and stop to [`crate::computer`].
//!
//! A computer outlives the process that launched it when that process
//! [detaches](Computer::detach) it (the CLI does); any process can then
//! [connect](Runtime::connect) to it and [stop](Runtime::stop) it.

use std::sync::Arc;

use orgo_snapshot::{BuildCache, Built, CachedStore, ImageManifest, LocalStore, Registry};
use orgo_template::{Digest, Template, TemplateRef};

use crate::backend::Backends;
use crate::builder::Builder;
use crate::computer::{self, Computer};
use crate::config::RuntimeConfig;
use crate::error::{RuntimeError, store_error};
use crate::fleet::Fleet;
use crate::home::{ComputerStatus, Home};
use crate::images::BaseImages;
use crate::launch::{self, LaunchOptions};
use crate::net::{EgressLearned, Net};
use crate::pool::Pool;
use crate::shared::Shared;
use crate::steps::BuildLog;
use crate::support::{self, HostFacts};
use crate::vmm::Accel;

/// The runtime: a store, a VMM and the computers launched here. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// Why computer `id` stopped on its own (`auto_stop after N s idle`),
    /// when it did; read from its console log, so it is known after every
    /// orgo process is gone. `None` for a computer that did not.
    pub fn stop_reason(&self, id: &str) -> Option<String> {
        crate::automation::stop_reason(&self.shared.home.dir(id))
    }

    /// Opens the store in `config.home` (creating it if needed; the home is
    /// used by its canonical path).
    pub async fn open(mut config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        // One spelling of the home for every process: VMMs are started with
        // paths under it (a disk layer names its backing file by one, which
        // a relative home would make relative to the layer), and a sweep
        // finds them by those paths.
        std::fs::create_dir_all(&config.home).map_err(crate::error::io("create", &config.home))?;
        config.home = std::fs::canonicalize(&config.home)
            .map_err(crate::error::io("resolve", &config.home))?;
        let store = LocalStore::open(&config.home).await.map_err(store_error)?;
        // In a fleet, the registry, the build cache and their locks are the
        // fleet's; this host's store is the cache in front of it.
        let (shared, fleet): (Arc<dyn orgo_snapshot::Store>, _) = match &config.shared_store {
            Some(fleet_store) => {
                let cached = CachedStore::new(store.clone(), Arc::clone(&fleet_store.0));
                (Arc::new(cached.clone()), Fleet::new(Some(cached)))
            }
            None => (Arc::new(store.clone()), Fleet::default()),
        };
        let fleet = fleet.with_cache_max(config.cache_max)?;
        let cache = BuildCache::new(Arc::clone(&shared));
        let net = Arc::new(Net::new(crate::net::Settings {
            user_mode_network: config.user_mode_network,
            netd: config.netd.clone(),
            home: config.home.clone(),
            range: config.net_range,
            dns_upstream: config.upstream_resolver(),
        }));
        // What VMs that died without cleaning up left of their networks.
        net.sweep().await;
        let builder = Builder {
            net: Arc::clone(&net),
            images: BaseImages::new(
                store.clone(),
                cache.clone(),
                Arc::clone(&shared),
                fleet.clone(),
                config.agent.clone(),
            ),
            backends: Backends::new(&config, &config.home),
            guest_ca_certs: config.guest_ca_certs.clone(),
            store,
            cache,
            fleet,
        };
        let runtime = Runtime {
            shared: Arc::new(Shared {
                registry: Registry::new(Arc::clone(&shared)),
                store: shared,
                home: Home::new(&config.home),
                pool: Pool::default(),
                net,
                builder,
                config,
                lives: Default::default(),
            }),
        };
        // Computers a killed checkpoint or suspend left paused run again
        // (or end suspended). One that cannot be yet stays held, for the
        // next open or sweep, which says why.
        let _ = crate::pause::recover(&runtime.shared).await;
        if runtime.shared.builder.fleet.is_some() {
            // This host is alive: its computers' leases in the fleet's
            // registry are set again, now and while the runtime is open.
            crate::leases::keep_leases(&runtime.shared);
        }
        Ok(runtime)
    }

    /// This host's own store (where the files VMMs read are).
    pub fn store(&self) -> &LocalStore {
        &self.shared.builder.store
    }

    /// The store the registry, the build cache and checkpoints use: this
    /// host's own, or in a fleet ([`RuntimeConfig::shared_store`]) this
    /// host's in front of the fleet's. A registry or cache made over it
    /// sees what this runtime sees.
    ///
    /// [`RuntimeConfig::shared_store`]: crate::RuntimeConfig::shared_store
    pub fn shared_store(&self) -> Arc<dyn orgo_snapshot::Store> {
        Arc::clone(&self.shared.store)
    }

    /// The template `reference` points at: a curated `system` template, or
    /// one published in the store.
    pub async fn resolve(&self, reference: &TemplateRef) -> Result<Template, RuntimeError> {
        if let Some(curated) = crate::system::system_template(reference) {
            return Ok(curated);
        }
        // Nothing in a store passes for a curated template.
        if reference.namespace().as_str() == crate::system::SYSTEM_NAMESPACE {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "curated template `{reference}` (`orgo templates system` lists them)"
                ),
            });
        }
        if let Some(template) = self
            .shared
            .registry
            .resolve(reference)
            .await
            .map_err(store_error)?
        {
            return Ok(template);
        }
        // A checkpoint's ref names no template of its own: its template
        // would launch (and build) the template, not the checkpoint.
        if self.published_checkpoint(reference).await?.is_some() {
            return Err(RuntimeError::Invalid {
                what: format!(
                    "use of `{reference}` as a template: it is a published checkpoint; \
                     launch it (`orgo launch {reference}`, `Runtime::launch_checkpoint`)"
                ),
            });
        }
        Err(RuntimeError::NotFound {
            what: format!("template `{reference}`"),
        })
    }

    /// The checkpoint published under `reference`, if one is
    /// ([`publish_checkpoint`](Self::publish_checkpoint)).
    pub async fn published_checkpoint(
        &self,
        reference: &TemplateRef,
    ) -> Result<Option<Digest>, RuntimeError> {
        if reference.namespace().as_str() == crate::system::SYSTEM_NAMESPACE {
            return Ok(None);
        }
        self.checkpoints()
            .resolve(reference)
            .await
            .map_err(store_error)
    }

    /// Publishes checkpoint `digest` under `reference`: `orgo launch
    /// REF` (and [`launch_checkpoint`](Self::launch_checkpoint) with the
    /// digest [`published_checkpoint`](Self::published_checkpoint) gives)
    /// launches it, no smaller than its snapshot. Refs are immutable and
    /// name a template or a checkpoint, never both. `false` when it was
    /// already published there. Every checkpoint was scanned for secrets
    /// before it was stored, so a stored one may be published.
    pub async fn publish_checkpoint(
        &self,
        reference: &TemplateRef,
        digest: &Digest,
    ) -> Result<bool, RuntimeError> {
        self.checkpoints()
            .publish(reference, digest)
            .await
            .map_err(store_error)
    }

    /// The published checkpoints in `namespace` (all if `None`), sorted.
    pub async fn published_checkpoints(
        &self,
        namespace: Option<&orgo_template::Name>,
    ) -> Result<Vec<(TemplateRef, Digest)>, RuntimeError> {
        self.checkpoints()
            .list_published(namespace)
            .await
            .map_err(store_error)
    }

    /// The template checkpoint `digest` came from (its parent snapshot's):
    /// what its computers run, with their state at the checkpoint.
    pub async fn checkpoint_template(&self, digest: &Digest) -> Result<Template, RuntimeError> {
        crate::checkpoint::template_of(&self.shared, digest).await
    }

    fn checkpoints(&self) -> orgo_snapshot::Checkpoints {
        orgo_snapshot::Checkpoints::new(self.shared_store())
    }

    /// The accelerator QEMU uses here: the configured one, else the answer
    /// of a probe run once per host and cached in `<home>/probe/`: a host
    /// with an openable `/dev/kvm` boots the base image under KVM once; if
    /// the guest does not come up (a nested, paravirtualized KVM fails
    /// unmodified guests), the answer is TCG.
    pub async fn accel(&self, log: BuildLog<'_>) -> Result<Accel, RuntimeError> {
        let b = &self.shared.builder;
        b.backends.accel(&b.images, &b.store, log).await
    }

    /// The base image, built into the store first if this recipe has none
    /// (once per recipe, also across processes).
    pub async fn base_image(
        &self,
        log: BuildLog<'_>,
    ) -> Result<(Digest, ImageManifest), RuntimeError> {
        self.shared.builder.images.get(log).await
    }

    /// The SHA-256 of the guest agent this runtime builds snapshots with
    /// (the embedded one, or [`RuntimeConfig::agent`](crate::RuntimeConfig::agent)).
    /// A stored snapshot recording another agent is stale: a build or
    /// launch of its template builds it again.
    pub async fn agent_digest(&self) -> Result<Digest, RuntimeError> {
        self.shared.builder.images.agent_digest().await
    }

    /// The golden snapshot of the template with digest `template`, if one
    /// is built and runs this runtime's agent; builds nothing.
    pub async fn built(&self, template: &Digest) -> Result<Option<Built>, RuntimeError> {
        let agent = self.agent_digest().await?;
        Ok(self
            .shared
            .builder
            .cache
            .get(template)
            .await
            .map_err(store_error)?
            .filter(|b| b.manifest.agent == Some(agent)))
    }

    /// Whether this host can run `template`: every field it sets that this
    /// runtime cannot honour here, with what is missing, at once
    /// ([`RuntimeError::Unsupportable`]). [`build`](Self::build) and
    /// [`launch`](Self::launch) ask this first; it builds nothing.
    pub fn check(&self, template: &Template) -> Result<(), RuntimeError> {
        self.check_with(template, false)
    }

    /// [`check`](Self::check), for a launch whose process exits once it
    /// returns if `detached` (see [`LaunchOptions::detached`]).
    fn check_with(&self, template: &Template, detached: bool) -> Result<(), RuntimeError> {
        self.check_launch(template, detached, false)
    }

    /// [`check_with`](Self::check_with), for a launch from a checkpoint if
    /// `from_checkpoint`.
    fn check_launch(
        &self,
        template: &Template,
        detached: bool,
        from_checkpoint: bool,
    ) -> Result<(), RuntimeError> {
        let host = HostFacts {
            region: self.shared.config.region.clone(),
            network: self.shared.net.lacking().map(str::to_owned),
            detached,
            from_checkpoint,
        };
        let problems = support::unsupported(template, &host);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Unsupportable(problems))
        }
    }

    /// Builds `template`'s golden snapshot, or returns the one already
    /// built (a cache hit reads one ref and one manifest). Concurrent builds
    /// of one template, in any process, run once.
    pub async fn build(
        &self,
        template: &Template,
        log: BuildLog<'_>,
    ) -> Result<Built, RuntimeError> {
        self.check(template)?;
        self.shared.builder.build(None, template, log).await
    }

    /// Launches a computer from `template`'s golden snapshot, building it
    /// first if needed: restores a new VM with its own disk layer (or takes
    /// a parked one from the warm pool), resets its identity, applies the
    /// environment, secrets and runtime files, runs `on_every_boot` and
    /// `on_resume`, starts the health checks. Returns when the computer
    /// answers.
    ///
    /// A template with `apps[].health.on_fail: restart_vm` gets a watcher
    /// in this process that restarts the computer when asked (see the
    /// `restart` module's docs); with [`LaunchOptions::detached`] set, it is
    /// refused instead ([`RuntimeError::Unsupportable`]).
    pub async fn launch(
        &self,
        template: &Template,
        options: LaunchOptions,
        log: BuildLog<'_>,
    ) -> Result<Computer, RuntimeError> {
        self.check_with(template, options.detached)?;
        let watch = crate::restart::wanted(template).then(|| options.clone());
        let computer = launch::launch(&self.shared, template, options, log).await?;
        if let Some(options) = watch {
            crate::restart::watch(&self.shared, computer.live(), template.clone(), options);
        }
        Ok(computer)
    }

    /// Restores `count` computers of `template` ahead of time (building it
    /// first if needed) and parks them, paused, for [`Runtime::launch`] to
    /// take: a launch from the pool skips the restore and the guest's cold
    /// start, and only gives the computer its identity, environment and
    /// hooks. Parked computers hold their snapshot's lease; they are
    /// stopped when the last handle of this runtime drops, or by
    /// [`Runtime::drain`]. With [`RuntimeConfig::warm_pool`] set, each
    /// launch from the pool starts a refill in the background.
    pub async fn prewarm(&self, template: &Template, count: usize) -> Result<(), RuntimeError> {
        self.check(template)?;
        launch::prewarm(&self.shared, template, count).await
    }

    /// The ids of the computers parked by [`Runtime::prewarm`] and not yet
    /// taken.
    pub fn parked(&self) -> Vec<String> {
        self.shared.pool.ids()
    }

    /// Stops every parked computer and frees its lease and files.
    pub async fn drain(&self) {
        launch::drain(&self.shared).await;
    }

    /// Every computer of this home (launched, being launched, parked or
    /// orphaned), oldest first.
    pub fn computers(&self) -> Result<Vec<ComputerStatus>, RuntimeError> {
        self.shared.home.statuses()
    }

    /// Runs again (or ends suspended) the computers that a checkpoint or
    /// a suspend whose process died left paused; removes the computers
    /// left behind by launches whose process died (`kill -9`, a crash): kills their VMMs, releases their leases,
    /// removes their files; then releases the leases that no computer's
    /// directory backs any more (a sweep or stop killed half-way). Returns
    /// the orphans' ids. Safe while other processes launch: a computer
    /// whose launcher runs is not touched (a record is written before its
    /// lease, and removed after it).
    pub async fn sweep(&self) -> Result<Vec<String>, RuntimeError> {
        crate::pause::recover(&self.shared).await?;
        let orphans = self.shared.home.orphans()?;
        for id in &orphans {
            computer::remove_orphan(&self.shared, id).await?;
        }
        self.shared.net.sweep().await;
        // In a fleet, the leases are every host's, and one this home lacks
        // may be another host's computer: none is released here. One that a
        // launch killed here leaked is renewed by nobody, and expires (see
        // `crate::leases::RENEW_LEASES_EVERY`).
        if self.shared.builder.fleet.is_some() {
            return Ok(orphans);
        }
        let cache = &self.shared.builder.cache;
        for id in cache.leases().await.map_err(store_error)? {
            if !self.shared.home.has_dir(&id) {
                cache.release(&id).await.map_err(store_error)?;
            }
        }
        Ok(orphans)
    }

    /// Checkpoints running computer `id` into a new snapshot, the computer
    /// running on after a brief pause ([`Checkpoint::paused`]): its memory,
    /// device state and disk (a layer over its snapshot's), with its
    /// provenance. Refused, naming the secret and where, when what was
    /// captured holds a secret of the vault file, of the `ORGO_SECRET_*`
    /// environment or of `secrets` (give the ones given to its launch).
    /// QEMU only; see [`launch_checkpoint`](Self::launch_checkpoint).
    ///
    /// [`Checkpoint::paused`]: crate::Checkpoint::paused
    pub async fn checkpoint(
        &self,
        id: &str,
        secrets: &crate::Vault,
    ) -> Result<crate::Checkpoint, RuntimeError> {
        crate::checkpoint::checkpoint(&self.shared, id, secrets).await
    }

    /// Launches a computer from checkpoint `digest` as [`launch`](Self::launch)
    /// does from a template's snapshot: its own disk layer over the
    /// checkpoint's, its own identity, the environment and secrets of
    /// `options`, `on_every_boot` and `on_resume`; no smaller than the
    /// snapshot the checkpoint came from.
    pub async fn launch_checkpoint(
        &self,
        digest: &Digest,
        options: LaunchOptions,
        log: BuildLog<'_>,
    ) -> Result<Computer, RuntimeError> {
        let template = crate::checkpoint::template_of(&self.shared, digest).await?;
        self.check_launch(&template, options.detached, true)?;
        launch::launch_checkpoint(&self.shared, &template, *digest, options, log).await
    }

    /// Forks running computer `id`: one [`checkpoint`](Self::checkpoint)
    /// (scanned for the secrets of `options`' vault too), then `count`
    /// computers launched from it with `options`.
    pub async fn fork(
        &self,
        id: &str,
        count: usize,
        options: LaunchOptions,
    ) -> Result<(crate::Checkpoint, Vec<Computer>), RuntimeError> {
        // What a launch from the checkpoint would refuse is refused before
        // anything is captured.
        let record = self.shared.home.status(id)?.record;
        let template = crate::checkpoint::kept_template(&self.shared, id, &record.template_digest)?;
        self.check_launch(&template, options.detached, true)?;
        let checkpoint = self.checkpoint(id, &options.vault).await?;
        let mut forks = Vec::with_capacity(count);
        for _ in 0..count {
            let computer = self
                .launch_checkpoint(&checkpoint.digest, options.clone(), &mut |_| {})
                .await?;
            forks.push(computer);
        }
        Ok((checkpoint, forks))
    }

    /// Suspends running computer `id`: its whole state, memory included,
    /// goes to a file of its own (owner-only, never in the store), and its
    /// VMM stops, freeing its memory and vCPUs; its disk layer, network and
    /// snapshot lease stay. Returns how long its vCPUs stood before the VMM
    /// stopped. Calls to it fail with [`RuntimeError::Suspended`] until
    /// [`resume`](Self::resume). QEMU only; a computer launched with more
    /// vCPUs or memory than its snapshot is refused.
    pub async fn suspend(&self, id: &str) -> Result<std::time::Duration, RuntimeError> {
        crate::suspend::suspend(&self.shared, id).await
    }

    /// Resumes suspended computer `id` under the same id, with its files,
    /// processes and terminal sessions, and the guest's clock set to the
    /// host's; its VM then runs on its own ([`connect`](Self::connect) to
    /// it).
    pub async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        crate::suspend::resume(&self.shared, id).await
    }

    /// Connects to running computer `id` (launched by this process or any
    /// other from the same home).
    ///
    /// QEMU serves one host connection to a computer's agent at a time: a
    /// process that holds a [`Computer`] of it (from a launch or a connect)
    /// keeps others waiting until it stops, detaches or drops it.
    pub async fn connect(&self, id: &str) -> Result<Computer, RuntimeError> {
        computer::connect(&self.shared, id).await
    }

    /// What running computer `id`, launched with
    /// [`LaunchOptions::egress_learn`], has reached so far (names from TLS
    /// SNI, HTTP `Host` and DNS; bare addresses from its firewall), and the
    /// smallest `egress_policy` allowing exactly that, as YAML.
    pub async fn egress_learned(&self, id: &str) -> Result<EgressLearned, RuntimeError> {
        computer::egress_learned(&self.shared, id).await
    }

    /// Stops computer `id`: runs `on_shutdown`, powers the guest off, stops
    /// the VMM, ends its lease on the snapshot and removes its files; returns
    /// what `on_shutdown` printed. A computer that already exited, or an
    /// orphan of a dead launch, is cleaned up. A failing `on_shutdown` does
    /// not keep the computer running: it is stopped and cleaned up, then
    /// the failure is returned. A computer a live process is still
    /// launching or keeps parked is not touched.
    pub async fn stop(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        computer::stop(&self.shared, id).await
    }
}
