//! [`Runtime`]: the front door. It owns the parts that do the work (the
//! [`Builder`], the [`Home`] of computer records, the warm [`Pool`]) and
//! hands each call to the module that holds it: builds to [`crate::builder`],
//! launches and the pool to [`crate::launch`], a running computer to
//! [`Computer`].
//!
//! A computer outlives the process that launched it when that process
//! [detaches](Computer::detach) it (the CLI does); any process can then
//! [connect](Runtime::connect) to it and [stop](Runtime::stop) it.

use std::path::PathBuf;
use std::sync::Arc;

use orgo_snapshot::{BuildCache, Built, ImageManifest, LocalStore, Registry};
use orgo_template::{Digest, Template, TemplateRef};

use crate::backend::Backends;
use crate::builder::Builder;
use crate::computer::{Computer, graceful_stop};
use crate::config::RuntimeConfig;
use crate::error::{RuntimeError, store_error};
use crate::guest::{self, QUICK};
use crate::home::{ComputerState, ComputerStatus, Home};
use crate::images::BaseImages;
use crate::launch::{self, LaunchOptions};
use crate::pool::Pool;
use crate::steps::BuildLog;
use crate::support::{self, HostFacts};
use crate::vmm::{Accel, AgentEndpoint, BackendKind};

/// The runtime: a store, a VMM and the computers launched here. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// What a runtime owns.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: RuntimeConfig,
    pub(crate) registry: Registry,
    pub(crate) builder: Builder,
    pub(crate) home: Home,
    pub(crate) pool: Pool,
}

impl Runtime {
    /// Opens the store in `config.home` (creating it if needed).
    pub async fn open(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let store = LocalStore::open(&config.home).await.map_err(store_error)?;
        let shared: Arc<dyn orgo_snapshot::Store> = Arc::new(store.clone());
        let cache = BuildCache::new(Arc::clone(&shared));
        let builder = Builder {
            images: BaseImages::new(store.clone(), cache.clone(), config.agent.clone()),
            backends: Backends::new(&config, &config.home),
            store,
            cache,
        };
        Ok(Runtime {
            inner: Arc::new(Inner {
                registry: Registry::new(shared),
                home: Home::new(&config.home),
                pool: Pool::default(),
                builder,
                config,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The store.
    pub fn store(&self) -> &LocalStore {
        &self.inner.builder.store
    }

    /// The template `reference` points at: a curated `system` template, or
    /// one published in the store.
    pub async fn resolve(&self, reference: &TemplateRef) -> Result<Template, RuntimeError> {
        self.inner
            .registry
            .resolve(reference)
            .await
            .map_err(store_error)?
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("template `{reference}`"),
            })
    }

    /// The accelerator QEMU uses here: the configured one, else the answer
    /// of a probe run once per host and cached in `<home>/probe/`: a host
    /// with an openable `/dev/kvm` boots the base image under KVM once; if
    /// the guest does not come up (a nested, paravirtualized KVM fails
    /// unmodified guests), the answer is TCG.
    pub async fn accel(&self, log: BuildLog<'_>) -> Result<Accel, RuntimeError> {
        let b = &self.inner.builder;
        b.backends.accel(&b.images, &b.store, log).await
    }

    /// The base image, built into the store first if this recipe has none
    /// (once per recipe, also across processes).
    pub async fn base_image(
        &self,
        log: BuildLog<'_>,
    ) -> Result<(Digest, ImageManifest), RuntimeError> {
        self.inner.builder.images.get(log).await
    }

    /// Whether this host can run `template`: every field it sets that this
    /// runtime cannot honour here, with what is missing, at once
    /// ([`RuntimeError::Unsupportable`]). [`build`](Self::build) and
    /// [`launch`](Self::launch) ask this first; it builds nothing.
    pub fn check(&self, template: &Template) -> Result<(), RuntimeError> {
        let host = HostFacts {
            region: self.inner.config.region.clone(),
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
        self.inner.builder.build(None, template, log).await
    }

    /// Launches a computer from `template`'s golden snapshot, building it
    /// first if needed: restores a new VM with its own disk layer (or takes
    /// a parked one from the warm pool), resets its identity, applies the
    /// environment, secrets and runtime files, runs `on_every_boot` and
    /// `on_resume`, starts the health checks. Returns when the computer
    /// answers.
    pub async fn launch(
        &self,
        template: &Template,
        options: LaunchOptions,
        log: BuildLog<'_>,
    ) -> Result<Computer, RuntimeError> {
        self.check(template)?;
        launch::launch(self, template, options, log).await
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
        launch::prewarm(self, template, count).await
    }

    /// The ids of the computers parked by [`Runtime::prewarm`] and not yet
    /// taken.
    pub fn parked(&self) -> Vec<String> {
        self.inner.pool.ids()
    }

    /// Stops every parked computer and frees its lease and files.
    pub async fn drain(&self) {
        launch::drain(self).await;
    }

    /// Every computer of this home (launched, being launched, parked or
    /// orphaned), oldest first.
    pub fn computers(&self) -> Result<Vec<ComputerStatus>, RuntimeError> {
        self.inner.home.statuses()
    }

    /// Removes the computers left behind by launches whose process died
    /// (`kill -9`, a crash): kills their VMMs, releases their leases,
    /// removes their files. Returns their ids. Safe while other processes
    /// launch: a computer whose launcher runs is not touched.
    pub async fn sweep(&self) -> Result<Vec<String>, RuntimeError> {
        let orphans = self.inner.home.orphans()?;
        for id in &orphans {
            self.inner.home.remove_orphan(id)?;
            self.inner
                .builder
                .cache
                .release(id)
                .await
                .map_err(store_error)?;
        }
        Ok(orphans)
    }

    /// Where computer `id`'s agent listens: QEMU's is a socket in its
    /// directory; another backend's is asked of the VMM.
    async fn agent_endpoint(
        &self,
        id: &str,
        backend: BackendKind,
    ) -> Result<AgentEndpoint, RuntimeError> {
        let dir = self.inner.home.dir(id);
        if let BackendKind::Qemu(_) = backend {
            return Ok(AgentEndpoint::Serial(dir.join("agent.sock")));
        }
        let vm = self
            .inner
            .builder
            .backends
            .vmm(backend)?
            .attach(id, &dir)
            .await?;
        Ok(vm.agent_endpoint())
    }

    /// Connects to running computer `id` (launched by this process or any
    /// other from the same home).
    ///
    /// QEMU serves one host connection to a computer's agent at a time: a
    /// process that holds a [`Computer`] of it (from a launch or a connect)
    /// keeps others waiting until it stops, detaches or drops it.
    pub async fn connect(&self, id: &str) -> Result<Computer, RuntimeError> {
        let record = self.inner.home.read(id)?;
        let status = self.status_of(id)?;
        let backend = match (status.state, record.backend) {
            (ComputerState::Running, Some(backend)) => backend,
            (ComputerState::Exited, _) => {
                return Err(RuntimeError::NotFound {
                    what: format!(
                        "running computer `{id}` (it has exited; `orgo stop {id}` cleans up)"
                    ),
                });
            }
            (state, _) => {
                return Err(RuntimeError::NotFound {
                    what: format!("running computer `{id}` (it is {})", state.as_str()),
                });
            }
        };
        let endpoint = self.agent_endpoint(id, backend).await?;
        let agent = guest::connect(endpoint, QUICK).await?;
        Ok(Computer::connected(self.clone(), record, agent))
    }

    fn status_of(&self, id: &str) -> Result<ComputerStatus, RuntimeError> {
        self.inner
            .home
            .statuses()?
            .into_iter()
            .find(|s| s.record.id == id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("computer `{id}`"),
            })
    }

    /// Stops computer `id`: runs `on_shutdown`, powers the guest off, stops
    /// the VMM, ends its lease on the snapshot and removes its files; returns
    /// what `on_shutdown` printed. A computer that already exited, or an
    /// orphan of a dead launch, is cleaned up. A failing `on_shutdown` does
    /// not keep the computer running: it is stopped and cleaned up, then
    /// the failure is returned. A computer a live process is still
    /// launching or keeps parked is not touched.
    pub async fn stop(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        self.inner.home.existing_dir(id)?;
        let status = self.status_of(id)?;
        match status.state {
            ComputerState::Running => {}
            ComputerState::Exited => {
                self.cleanup(id).await?;
                return Ok(None);
            }
            ComputerState::Orphaned => {
                self.inner.home.remove_orphan(id)?;
                self.inner
                    .builder
                    .cache
                    .release(id)
                    .await
                    .map_err(store_error)?;
                return Ok(None);
            }
            state @ (ComputerState::Launching | ComputerState::Parked) => {
                return Err(RuntimeError::Invalid {
                    what: format!(
                        "stop of computer `{id}`: it is {} by another process",
                        match state {
                            ComputerState::Parked => "parked",
                            _ => "being launched",
                        }
                    ),
                });
            }
        }
        let record = status.record;
        let backend = record.backend.ok_or_else(|| RuntimeError::Invalid {
            what: format!("record of computer `{id}`: running, and it names no backend"),
        })?;
        let dir = self.inner.home.dir(id);
        let alive = || record.pid.is_some_and(crate::process::process_alive);
        let mut hook = Ok(None);
        let vm = match self
            .inner
            .builder
            .backends
            .vmm(backend)?
            .attach(id, &dir)
            .await
        {
            Ok(vm) => Some(vm),
            // It exited meanwhile: only the cleanup is left to do.
            Err(_) if !alive() => None,
            Err(error) => return Err(error),
        };
        if let Some(vm) = vm {
            // An agent that does not answer does not keep the VM up.
            if let Ok(agent) = guest::connect(vm.agent_endpoint(), QUICK).await {
                hook = graceful_stop(&agent, record.on_shutdown.clone()).await;
            }
            vm.shutdown().await?;
        }
        self.cleanup(id).await?;
        hook
    }

    /// Ends computer `id`'s lease and removes its files.
    pub(crate) async fn cleanup(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner
            .builder
            .cache
            .release(id)
            .await
            .map_err(store_error)?;
        self.inner.home.remove(id)
    }
}

impl Drop for Inner {
    /// Parked computers die with their handles; their leases and files
    /// are removed here (on a thread of its own: this may run inside an
    /// async runtime, which cannot block on another).
    fn drop(&mut self) {
        let parked = self.pool.drain_owned();
        if parked.is_empty() {
            return;
        }
        let ids: Vec<String> = parked.iter().map(|w| w.id.clone()).collect();
        drop(parked);
        release_blocking(
            &self.builder.cache,
            ids.into_iter().map(|id| (self.home.dir(&id), id)).collect(),
        );
    }
}

/// Frees the leases and removes the directories of computers that never
/// launched, from synchronous code (a `Drop`): on a thread of its own, as
/// this may run inside an async runtime, which cannot block on another.
pub(crate) fn release_blocking(cache: &BuildCache, computers: Vec<(PathBuf, String)>) {
    let cache = cache.clone();
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        for (dir, id) in computers {
            let _ = rt.block_on(cache.release(&id));
            let _ = crate::home::remove_dir(&dir);
        }
    });
    let _ = cleanup.join();
}
