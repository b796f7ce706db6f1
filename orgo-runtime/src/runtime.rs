//! Build and launch: templates in, golden snapshots and running computers
//! out. The steps come from [`crate::plan`] (pure); this module does the I/O
//! around them: the store, the VMM, the agent channel.
//!
//! A computer's files live in `<home>/computers/<id>/`: its record
//! (`computer.json`), its copy-on-write disk layer, the VMM's sockets and
//! logs. A computer outlives the process that launched it when that
//! process [detaches](Computer::detach) it (the CLI does); any process can
//! then [connect](Runtime::connect) to it and [stop](Runtime::stop) it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orgo_agent_protocol::{Exec, Hook, Stream};
use orgo_snapshot::{
    BuildCache, BuildFailure, Built, HardwareShape, ImageManifest, LocalStore, LockMode,
    LockService as _, RefKey, Registry, SnapshotArtifacts, StoreError,
};
use orgo_template::{Digest, Template, TemplateRef};
use serde::{Deserialize, Serialize};

use crate::agent::{AgentClient, AgentError, ExecOutput};
use crate::ch::CloudHypervisor;
use crate::image::{BaseImageRecipe, KERNEL_CMDLINE, build_base};
use crate::plan::{self, Action, Content, FileStep, Step};
use crate::qemu::USER_NET_IP;
use crate::qemu_backend::Qemu;
use crate::vault::Vault;
use std::os::unix::fs::DirBuilderExt as _;

use crate::vmm::{
    Accel, AgentEndpoint, Disk, DiskFormat, Network, RestoreConfig, RuntimeError, Vm, VmConfig,
    Vmm, io, process_alive,
};

/// The computer record's format version.
const RECORD_VERSION: u32 = 1;
/// The largest computer record read.
const MAX_RECORD_BYTES: u64 = 1 << 20;
const RECORD_FILE: &str = "computer.json";
/// How long a booting guest may take to answer (TCG boots take seconds).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restored guest may take to answer.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one build step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Requests that do not run user code.
const QUICK: Duration = Duration::from_secs(30);

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The orgo home: the store, the computers, the probe cache.
    pub home: PathBuf,
    /// The static `orgo-agent` the base image is built with (needed only
    /// when the base image must be found or built: a build that misses the
    /// cache).
    pub agent: Option<PathBuf>,
    /// The VMM (QEMU by default).
    pub backend: Backend,
    /// QEMU's accelerator; `None`: probe once (see [`Runtime::accel`]).
    pub accel: Option<Accel>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// How many computers of a launched template to keep restored and
    /// parked, per snapshot and shape, for the next launches (see
    /// [`Runtime::prewarm`]); 0 (the default) keeps none.
    pub warm_pool: usize,
}

impl RuntimeConfig {
    /// The defaults for `home`: no agent, QEMU from `PATH`, the
    /// accelerator probed.
    pub fn new(home: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            home: home.into(),
            agent: None,
            backend: Backend::Qemu,
            accel: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            warm_pool: 0,
        }
    }
}

/// Which VMM builds and runs computers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// QEMU ([`RuntimeConfig::qemu`]): KVM where it works, TCG otherwise;
    /// guests reach the network through QEMU's user-mode NAT.
    Qemu,
    /// Cloud Hypervisor, for hosts with KVM: the binary. Its guests have
    /// no network device yet (a tap device and NAT are the host's to set
    /// up), so build steps that download (apt, pip, npm, http files) need
    /// QEMU for now.
    CloudHypervisor(PathBuf),
}

/// Something a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildEvent {
    /// What the build is doing (`building the base image`, `booting`, ...).
    Status(String),
    /// A step of the template started.
    Step {
        /// Its field (`build.apt`, `files[0]`, `hooks.on_first_boot`).
        field: String,
        /// Its position, from 1.
        index: usize,
        /// How many steps there are.
        total: usize,
    },
    /// Output of the running step.
    Output {
        /// stdout or stderr.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Where build events go.
pub type BuildLog<'a> = &'a mut (dyn FnMut(BuildEvent) + Send);

/// Launch-time choices.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// vCPUs (default: the template's; at least the snapshot's).
    pub cpus: Option<u32>,
    /// Guest memory in MiB (default: the template's; the snapshot's size is
    /// the floor, and a smaller value is raised to it).
    pub memory_mib: Option<u64>,
    /// Extra environment, over the template's.
    pub env: BTreeMap<String, String>,
    /// Where secrets come from.
    pub vault: Vault,
}

/// A launched computer, as recorded in `computer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ComputerRecord {
    /// Format version.
    pub orgo_computer: u32,
    /// The computer's id.
    pub id: String,
    /// The template's `name@version`.
    pub template: String,
    /// The template's digest.
    pub template_digest: Digest,
    /// The snapshot manifest it was restored from.
    pub snapshot: Digest,
    /// The backend.
    pub backend: String,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The VMM's process id.
    pub pid: Option<u32>,
    /// When it was launched (seconds since the Unix epoch).
    pub created_unix: u64,
    /// The `on_shutdown` hook, run by [`Runtime::stop`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_shutdown: Option<String>,
}

/// A computer listed by [`Runtime::computers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerStatus {
    /// Its record.
    pub record: ComputerRecord,
    /// Whether its VMM process still runs.
    pub running: bool,
}

/// A failed build step, as [`RuntimeError::Build`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepFailure {
    /// The template field of the step.
    pub field: String,
    /// What happened (`exited with status 2`).
    pub reason: String,
    /// The step's output (the tail).
    pub output: String,
}

/// The runtime: a store, a VMM and the computers launched here. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RuntimeConfig,
    store: LocalStore,
    cache: BuildCache,
    registry: Registry,
    accel: tokio::sync::OnceCell<Accel>,
    /// The base image's recipe, resolved (from apt's package lists, which
    /// takes seconds) once per runtime.
    recipe: tokio::sync::OnceCell<(BaseImageRecipe, Digest)>,
    pool: std::sync::Mutex<Pool>,
}

impl Runtime {
    /// Opens the store in `config.home` (creating it if needed).
    pub async fn open(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let store = LocalStore::open(&config.home).await.map_err(store_error)?;
        let shared: Arc<dyn orgo_snapshot::Store> = Arc::new(store.clone());
        let accel = tokio::sync::OnceCell::new_with(config.accel);
        Ok(Runtime {
            inner: Arc::new(Inner {
                cache: BuildCache::new(Arc::clone(&shared)),
                registry: Registry::new(shared),
                store,
                config,
                accel,
                recipe: tokio::sync::OnceCell::new(),
                pool: std::sync::Mutex::new(Pool::default()),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &LocalStore {
        &self.inner.store
    }

    /// The published template `reference` points at.
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
        self.inner
            .accel
            .get_or_try_init(|| self.probe_accel(log))
            .await
            .copied()
    }

    async fn probe_accel(&self, log: BuildLog<'_>) -> Result<Accel, RuntimeError> {
        let kvm_opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !kvm_opens {
            return Ok(Accel::Tcg);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let qemu = crate::vmm::version_output("qemu", &self.inner.config.qemu).await?;
        let key = Digest::of(format!("{}\n{}", host.trim(), qemu).as_bytes());
        let cached = self
            .inner
            .config
            .home
            .join("probe")
            .join(format!("kvm-{}", &key.hex()[..16]));
        match std::fs::read_to_string(&cached).as_deref().map(str::trim) {
            Ok("kvm") => return Ok(Accel::Kvm),
            Ok("tcg") => return Ok(Accel::Tcg),
            _ => {}
        }
        let (_, image) = self.base_image(log).await?;
        log(BuildEvent::Status(
            "probing KVM (once per host): booting the base image under KVM".into(),
        ));
        let scratch = self.inner.store.scratch_dir().await.map_err(store_error)?;
        let works = self.boots_under_kvm(&image, &scratch).await;
        let _ = std::fs::remove_dir_all(&scratch);
        let works = match works {
            Ok(works) => works,
            // Not an answer about KVM: TCG for now, and probe again next time.
            Err(error) => {
                log(BuildEvent::Status(format!(
                    "the KVM probe could not run ({}); using tcg",
                    chain(&error)
                )));
                return Ok(Accel::Tcg);
            }
        };
        let accel = if works { Accel::Kvm } else { Accel::Tcg };
        log(BuildEvent::Status(format!("KVM probe: using {accel}")));
        if let Some(dir) = cached.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&cached, accel.to_string());
        Ok(accel)
    }

    /// Whether the base image boots under KVM to a guest agent that
    /// answers; an error if the probe itself could not be set up.
    async fn boots_under_kvm(
        &self,
        image: &ImageManifest,
        scratch: &Path,
    ) -> Result<bool, RuntimeError> {
        let paths = self.image_paths(image)?;
        let disk = scratch.join("probe.qcow2");
        create_overlay(&paths.rootfs, DiskFormat::Raw, &disk, None).await?;
        let qemu = Qemu::with_binary(&self.inner.config.qemu, Accel::Kvm);
        let config = VmConfig {
            id: "kvm-probe".into(),
            cpus: 1,
            memory_mib: 256,
            kernel: paths.vmlinuz,
            initrd: Some(paths.initrd),
            cmdline: KERNEL_CMDLINE.into(),
            disk: Disk {
                path: disk,
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            memory_file: None,
            network: Network::None,
            run_dir: scratch.join("run"),
        };
        // QEMU refusing KVM, or a guest that does not come up under it, is
        // the answer: no.
        let Ok(vm) = qemu.boot(&config).await else {
            return Ok(false);
        };
        let answered = connect_agent(vm.agent_endpoint(), Duration::from_secs(45))
            .await
            .is_ok();
        let _ = vm.shutdown().await;
        Ok(answered)
    }

    /// The VMM that made snapshots named `backend` (`qemu-tcg`,
    /// `qemu-kvm`, `cloud-hypervisor`) and restores them. QEMU's clones'
    /// disks skip flushes: a computer's disk layer is removed when it
    /// stops, and nothing survives a host crash anyway.
    fn vmm(&self, backend: &str) -> Result<Box<dyn Vmm>, RuntimeError> {
        let qemu = |accel| {
            Box::new(Qemu::with_binary(&self.inner.config.qemu, accel).with_ephemeral_clones())
        };
        match (backend, &self.inner.config.backend) {
            ("qemu-kvm", Backend::Qemu) => Ok(qemu(Accel::Kvm)),
            ("qemu-tcg", Backend::Qemu) => Ok(qemu(Accel::Tcg)),
            ("cloud-hypervisor", Backend::CloudHypervisor(binary)) => {
                Ok(Box::new(CloudHypervisor::new(binary)))
            }
            (other, configured) => Err(RuntimeError::Unsupported {
                backend: match configured {
                    Backend::Qemu => "qemu",
                    Backend::CloudHypervisor(_) => "cloud-hypervisor",
                },
                what: format!("run a snapshot made by `{other}`"),
            }),
        }
    }

    /// What a build boots with: the snapshot's backend name, its kernel
    /// role, its network and the kernel's network settings.
    async fn flavor(&self, log: BuildLog<'_>) -> Result<Flavor, RuntimeError> {
        match &self.inner.config.backend {
            Backend::Qemu => Ok(Flavor {
                backend: format!("qemu-{}", self.accel(log).await?),
                kernel: "vmlinuz",
                network: Network::User,
                cmdline: format!("{KERNEL_CMDLINE} {USER_NET_IP}"),
            }),
            Backend::CloudHypervisor(binary) => {
                CloudHypervisor::new(binary).probe().await?;
                Ok(Flavor {
                    backend: "cloud-hypervisor".into(),
                    kernel: "vmlinux",
                    network: Network::None,
                    cmdline: KERNEL_CMDLINE.into(),
                })
            }
        }
    }

    /// The base image, built into the store first if this recipe has none
    /// (once per recipe, also across processes).
    pub async fn base_image(
        &self,
        log: BuildLog<'_>,
    ) -> Result<(Digest, ImageManifest), RuntimeError> {
        let agent = self
            .inner
            .config
            .agent
            .clone()
            .ok_or(RuntimeError::MissingAgent)?;
        let (recipe, recipe_digest) = self
            .inner
            .recipe
            .get_or_try_init(|| resolve_recipe(agent.clone()))
            .await?
            .clone();
        let cache = &self.inner.cache;
        if let Some(found) = cache
            .base_image(&recipe_digest)
            .await
            .map_err(store_error)?
        {
            return Ok(found);
        }
        let lock =
            RefKey::new(&format!("builds/image-{}", recipe_digest.hex())).map_err(store_error)?;
        let _building = self
            .inner
            .store
            .lock(&lock, LockMode::Exclusive)
            .await
            .map_err(store_error)?;
        if let Some(found) = cache
            .base_image(&recipe_digest)
            .await
            .map_err(store_error)?
        {
            return Ok(found);
        }
        log(BuildEvent::Status(
            "building the base image (once per recipe; a few minutes)".into(),
        ));
        let scratch = self.inner.store.scratch_dir().await.map_err(store_error)?;
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
        let built = job
            .await
            .map_err(|e| RuntimeError::Vmm {
                backend: "orgo",
                op: "base image".into(),
                message: format!("the builder thread failed: {e}"),
            })?
            .map_err(RuntimeError::Image);
        let stored = match built {
            Ok(image) => {
                let files = image
                    .files
                    .keys()
                    .map(|name| (name.clone(), image.dir.join(name)))
                    .collect();
                cache
                    .put_base_image(&recipe_digest, &files)
                    .await
                    .map_err(store_error)
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&scratch);
        stored
    }

    /// Builds `template`'s golden snapshot, or returns the one already
    /// built (a cache hit reads one ref and one manifest). Concurrent builds
    /// of one template, in any process, run once.
    pub async fn build(
        &self,
        template: &Template,
        log: BuildLog<'_>,
    ) -> Result<Built, RuntimeError> {
        self.build_as(None, template, log).await
    }

    async fn build_as(
        &self,
        lease: Option<&str>,
        template: &Template,
        log: BuildLog<'_>,
    ) -> Result<Built, RuntimeError> {
        let digest = template.digest();
        let cache = &self.inner.cache;
        let mut failed = None;
        let mut scratch = None;
        let build = async {
            match self.build_snapshot(template, log, &mut scratch).await {
                Ok(artifacts) => Ok(artifacts),
                Err(error) => {
                    let failure = BuildFailure {
                        message: error.to_string(),
                        log: match &error {
                            RuntimeError::Build(step) => step.output.clone(),
                            _ => String::new(),
                        },
                    };
                    failed = Some(error);
                    Err(failure)
                }
            }
        };
        let outcome = match lease {
            Some(id) => cache.lease_or_build(id, &digest, || build).await,
            None => cache.get_or_build(&digest, || build).await,
        };
        // What the store did not take in: logs, sockets, a failed build's files.
        if let Some(dir) = scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        match outcome {
            Ok(built) => Ok(built),
            // Ours: the typed error, with the step and its output.
            Err(StoreError::BuildFailed { .. }) if failed.is_some() => {
                Err(failed.expect("checked by the guard"))
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// Boots the base image, runs the template's steps, snapshots the VM;
    /// the files are in a scratch directory (named in `scratch` for the
    /// caller to remove once the store has taken them).
    async fn build_snapshot(
        &self,
        template: &Template,
        log: BuildLog<'_>,
        scratch_dir: &mut Option<PathBuf>,
    ) -> Result<SnapshotArtifacts, RuntimeError> {
        let started = Instant::now();
        let flavor = self.flavor(log).await?;
        let (image_digest, image) = self.base_image(log).await?;
        let paths = self.image_paths(&image)?;
        let shape = build_shape(template);
        let scratch = self.inner.store.scratch_dir().await.map_err(store_error)?;
        *scratch_dir = Some(scratch.clone());
        let result = async {
            let disk = scratch.join("disk.qcow2");
            create_overlay(
                &paths.rootfs,
                DiskFormat::Raw,
                &disk,
                Some(disk_bytes(shape.disk_gb)?),
            )
            .await?;
            let memory = scratch.join("memory");
            let config = VmConfig {
                id: format!("build-{}", &template.digest().hex()[..12]),
                cpus: shape.cpu,
                memory_mib: shape.memory_mib,
                kernel: self.image_blob(&image, flavor.kernel)?,
                initrd: Some(paths.initrd.clone()),
                cmdline: flavor.cmdline.clone(),
                disk: Disk {
                    path: disk.clone(),
                    format: DiskFormat::Qcow2,
                    read_only: false,
                },
                memory_file: Some(memory),
                network: flavor.network.clone(),
                run_dir: scratch.join("run"),
            };
            log(BuildEvent::Status(format!(
                "booting the builder VM ({} vCPU, {} MiB, {})",
                shape.cpu, shape.memory_mib, flavor.backend
            )));
            let vm = self.vmm(&flavor.backend)?.boot(&config).await?;
            let agent = connect_agent(vm.agent_endpoint(), BOOT_TIMEOUT).await?;
            log(BuildEvent::Status(format!(
                "the guest is up after {:.1} s",
                started.elapsed().as_secs_f64()
            )));
            let env = plan::environment(&template.env, &BTreeMap::new());
            call(&agent, move |a| a.set_env(env, QUICK)).await?;
            grow_root_filesystem(&agent).await?;
            let mut steps = plan::build_steps(template);
            steps.extend(plan::pre_snapshot(template));
            let total = steps.len();
            for (i, step) in steps.iter().enumerate() {
                log(BuildEvent::Step {
                    field: step.field.clone(),
                    index: i + 1,
                    total,
                });
                run_step(&agent, step, None, log).await?;
            }
            // Nothing may be in flight on the channel when the state is saved.
            drop(agent);
            log(BuildEvent::Status("capturing the golden snapshot".into()));
            vm.pause().await?;
            let mut files = vm.snapshot(&scratch.join("snapshot")).await?;
            vm.shutdown().await?;
            files.insert("disk".into(), disk);
            Ok(files)
        }
        .await;
        let files = result?;
        let kernel = image
            .blobs
            .get(flavor.kernel)
            .map(|b| b.digest)
            .ok_or_else(|| missing_role(flavor.kernel))?;
        log(BuildEvent::Status(format!(
            "storing the snapshot ({:.1} s so far)",
            started.elapsed().as_secs_f64()
        )));
        Ok(SnapshotArtifacts {
            files,
            hardware: shape,
            backend: flavor.backend,
            base_image: image_digest,
            kernel,
        })
    }

    fn image_paths(&self, image: &ImageManifest) -> Result<ImagePaths, RuntimeError> {
        Ok(ImagePaths {
            vmlinuz: self.image_blob(image, "vmlinuz")?,
            initrd: self.image_blob(image, "initrd.cpio")?,
            rootfs: self.image_blob(image, "rootfs.ext4")?,
        })
    }

    /// Where the image's file of `role` is in the store.
    fn image_blob(&self, image: &ImageManifest, role: &str) -> Result<PathBuf, RuntimeError> {
        image
            .blobs
            .get(role)
            .map(|b| self.inner.store.blob_path(&b.digest))
            .ok_or_else(|| missing_role(role))
    }

    /// Launches a computer from `template`'s golden snapshot, building it
    /// first if needed: restores a new VM with its own disk layer, resets
    /// its identity, applies the environment, secrets and runtime files,
    /// runs `on_every_boot` and `on_resume`, starts the health checks.
    /// Returns when the computer answers.
    pub async fn launch(
        &self,
        template: &Template,
        options: LaunchOptions,
        log: BuildLog<'_>,
    ) -> Result<Computer, RuntimeError> {
        // Before anything is built or started: every required secret, and
        // the extra environment's names.
        let secrets = options
            .vault
            .resolve(template)
            .map_err(RuntimeError::Vault)?;
        if let Some(key) = options.env.keys().find(|k| !plan::is_env_name(k)) {
            return Err(RuntimeError::Invalid {
                what: format!(
                    "launch environment variable `{key}`: a name is letters, digits and `_`, not starting with a digit"
                ),
            });
        }
        let digest = template.digest();
        if let Some(built) = self.inner.cache.get(&digest).await.map_err(store_error)?
            && let Some(warm) = self.take(PoolKey::of(&built, &options)).await
        {
            let key = warm.key;
            let guard = Unlaunched::new(self, &warm.id);
            let launched = self
                .personalize(warm, template, &options, secrets, log)
                .await;
            guard.settle(launched.is_ok()).await;
            self.refill(digest, key);
            return launched;
        }
        let id = new_id();
        // A launch cancelled from here on (its future dropped) leaves no
        // lease or directory behind.
        let guard = Unlaunched::new(self, &id);
        let launched = async {
            let built = self.build_as(Some(&id), template, log).await?;
            let key = PoolKey::of(&built, &options);
            let restoring = Instant::now();
            let warm = self.restore_vm(&id, &built, key).await?;
            log(BuildEvent::Status(format!(
                "{id}: restored, agent answering, in {} ms",
                restoring.elapsed().as_millis()
            )));
            self.personalize(warm, template, &options, secrets, log)
                .await
        }
        .await;
        guard.settle(launched.is_ok()).await;
        if let Ok(computer) = &launched {
            let key = PoolKey {
                snapshot: computer.record.snapshot,
                cpus: computer.record.cpus,
                memory_mib: computer.record.memory_mib,
            };
            self.refill(digest, key);
        }
        launched
    }

    /// The ids of the computers parked by [`Runtime::prewarm`] and not yet
    /// taken.
    pub fn parked(&self) -> Vec<String> {
        let pool = self
            .inner
            .pool
            .lock()
            .expect("the pool's lock is never poisoned");
        pool.parked
            .values()
            .flatten()
            .map(|w| w.id.clone())
            .collect()
    }

    /// Tops the pool for `key` up to [`RuntimeConfig::warm_pool`] in the
    /// background.
    fn refill(&self, template: Digest, key: PoolKey) {
        let count = self.inner.config.warm_pool;
        if count == 0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A failure leaves the pool short; launches then restore cold.
            let _ = this.fill(template, key, count).await;
        });
    }

    /// Restores `built` into a new VM `id` with its own disk layer, and
    /// connects to its agent: a computer without its identity yet.
    async fn restore_vm(
        &self,
        id: &str,
        built: &Built,
        key: PoolKey,
    ) -> Result<Warm, RuntimeError> {
        let manifest = &built.manifest;
        let vmm = self.vmm(&manifest.backend)?;
        let dir = self.computer_dir(id);
        // Owner only: the disk layer will hold the computer's secrets.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        let mut snapshot = BTreeMap::new();
        for (role, blob) in &manifest.blobs {
            snapshot.insert(role.clone(), self.inner.store.blob_path(&blob.digest));
        }
        let golden = snapshot
            .remove("disk")
            .ok_or_else(|| missing_role("disk"))?;
        let disk = dir.join("disk.qcow2");
        let size = disk_bytes(manifest.hardware.disk_gb)?;
        create_overlay(&golden, DiskFormat::Qcow2, &disk, Some(size)).await?;
        let config = RestoreConfig {
            id: id.to_owned(),
            snapshot,
            disk: Disk {
                path: disk,
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            cpus: key.cpus,
            memory_mib: key.memory_mib,
            network: match vmm.name() {
                "qemu" => Network::User,
                _ => Network::None,
            },
            run_dir: dir,
        };
        let vm = vmm.restore(&config).await?;
        let pid = vm.info().await?.pid;
        let agent = connect_agent(vm.agent_endpoint(), RESTORE_TIMEOUT).await?;
        let floor = manifest.hardware;
        if key.cpus > floor.cpu || key.memory_mib > floor.memory_mib {
            let script = plan::online_hot_added(key.cpus, key.memory_mib);
            let out = call(&agent, move |a| a.exec(Exec::shell(script), QUICK)).await?;
            if !out.status.success() {
                return Err(RuntimeError::Vmm {
                    backend: "orgo",
                    op: "grow".into(),
                    message: format!(
                        "the guest did not take the hot-added vCPUs or memory: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
        }
        Ok(Warm {
            id: id.to_owned(),
            built: built.clone(),
            key,
            vm,
            agent,
            pid,
        })
    }

    /// Makes a restored VM the computer: its own identity (entropy, clock,
    /// machine-id, hostname), the environment and secrets, the runtime
    /// files, `on_every_boot` and `on_resume`, the health checks, a record.
    async fn personalize(
        &self,
        warm: Warm,
        template: &Template,
        options: &LaunchOptions,
        secrets: BTreeMap<String, String>,
        log: BuildLog<'_>,
    ) -> Result<Computer, RuntimeError> {
        let started = Instant::now();
        let Warm {
            id,
            built,
            key,
            vm,
            agent,
            pid,
        } = warm;
        reset_identity(&agent, &id).await?;
        let identity = started.elapsed();
        let mut env = plan::environment(&template.env, &secrets);
        env.extend(options.env.clone());
        call(&agent, move |a| a.set_env(env, QUICK)).await?;
        let environment = started.elapsed() - identity;
        for (field, spec) in plan::services_with_secrets(template, &secrets) {
            let step = Step {
                field,
                action: Action::Service(spec),
            };
            run_step(&agent, &step, None, log).await?;
        }
        for step in plan::launch_steps(template) {
            run_step(&agent, &step, Some(&secrets), log).await?;
        }
        let checks = plan::health_checks(template);
        if !checks.is_empty() {
            call(&agent, move |a| a.set_health_checks(checks, QUICK)).await?;
        }
        log(BuildEvent::Status(format!(
            "{id}: identity {} ms, environment {} ms, files, hooks and health checks {} ms",
            identity.as_millis(),
            environment.as_millis(),
            (started.elapsed() - identity - environment).as_millis()
        )));
        let record = ComputerRecord {
            orgo_computer: RECORD_VERSION,
            id: id.clone(),
            template: format!("{}@{}", template.template.name, template.template.version),
            template_digest: template.digest(),
            snapshot: built.digest,
            backend: built.manifest.backend.clone(),
            cpus: key.cpus,
            memory_mib: key.memory_mib,
            pid,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            on_shutdown: template.hooks.on_shutdown.clone(),
        };
        write_record(&self.computer_dir(&id), &record)?;
        Ok(Computer {
            runtime: self.clone(),
            record,
            agent,
            vm: Some(vm),
        })
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
        let built = self.build(template, &mut |_| {}).await?;
        let key = PoolKey::of(&built, &LaunchOptions::default());
        self.fill(template.digest(), key, count).await
    }

    async fn fill(&self, template: Digest, key: PoolKey, count: usize) -> Result<(), RuntimeError> {
        loop {
            let id = {
                let mut pool = self
                    .inner
                    .pool
                    .lock()
                    .expect("the pool's lock is never poisoned");
                let have = pool.parked.get(&key).map_or(0, Vec::len)
                    + pool.filling.get(&key).copied().unwrap_or(0);
                if have >= count {
                    return Ok(());
                }
                *pool.filling.entry(key).or_default() += 1;
                (new_id(), pool.generation)
            };
            let (id, generation) = id;
            let parked = self.park(&id, &template, key).await;
            let drained = {
                let mut pool = self
                    .inner
                    .pool
                    .lock()
                    .expect("the pool's lock is never poisoned");
                if let Some(n) = pool.filling.get_mut(&key) {
                    *n -= 1;
                }
                let warm = parked?;
                if pool.generation == generation {
                    pool.parked.entry(key).or_default().push(warm);
                    None
                } else {
                    Some(warm)
                }
            };
            // Drained while it was being parked: it goes too.
            if let Some(warm) = drained {
                let id = warm.id.clone();
                let _ = warm.vm.shutdown().await;
                drop(warm);
                self.discard(&id).await;
                return Ok(());
            }
        }
    }

    async fn park(&self, id: &str, template: &Digest, key: PoolKey) -> Result<Warm, RuntimeError> {
        let guard = Unlaunched::new(self, id);
        let parked = async {
            let built = self
                .inner
                .cache
                .lease(id, template)
                .await
                .map_err(store_error)?;
            let warm = self.restore_vm(id, &built, key).await?;
            // Its identity now (the take sets the clock and fresh entropy
            // again), and a shell run once: under TCG, code the guest has
            // not run since the restore is translated on its first run, and
            // that is the launch's cost otherwise.
            reset_identity(&warm.agent, id).await?;
            call(&warm.agent, |a| a.exec(Exec::shell(":"), QUICK)).await?;
            warm.vm.pause().await?;
            Ok(warm)
        }
        .await;
        guard.settle(parked.is_ok()).await;
        parked
    }

    /// A parked computer for `key`, resumed; `None` if none is parked.
    async fn take(&self, key: PoolKey) -> Option<Warm> {
        loop {
            let warm = {
                let mut pool = self
                    .inner
                    .pool
                    .lock()
                    .expect("the pool's lock is never poisoned");
                pool.parked.get_mut(&key)?.pop()?
            };
            if warm.vm.resume().await.is_ok() {
                return Some(warm);
            }
            let id = warm.id.clone();
            drop(warm);
            self.discard(&id).await;
        }
    }

    /// Stops every parked computer and frees its lease and files.
    pub async fn drain(&self) {
        let parked: Vec<Warm> = {
            let mut pool = self
                .inner
                .pool
                .lock()
                .expect("the pool's lock is never poisoned");
            pool.generation += 1;
            pool.parked.drain().flat_map(|(_, v)| v).collect()
        };
        for warm in parked {
            let id = warm.id.clone();
            let _ = warm.vm.shutdown().await;
            drop(warm);
            self.discard(&id).await;
        }
    }

    /// Removes what a computer that never launched left: its lease and files.
    async fn discard(&self, id: &str) {
        let _ = self.inner.cache.release(id).await;
        let _ = std::fs::remove_dir_all(self.computer_dir(id));
    }

    fn computers_dir(&self) -> PathBuf {
        self.inner.config.home.join("computers")
    }

    fn computer_dir(&self, id: &str) -> PathBuf {
        self.computers_dir().join(id)
    }

    /// The directory of computer `id`, which must look like an id (it
    /// becomes part of a path).
    fn existing_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let hex = id.strip_prefix("c-").unwrap_or_default();
        if hex.len() != 12
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RuntimeError::NotFound {
                what: format!("computer `{id}` (ids look like `c-0123456789ab`)"),
            });
        }
        Ok(self.computer_dir(id))
    }

    /// Where computer `id`'s agent listens: QEMU's is a socket in its
    /// directory; another backend's is asked of the VMM.
    async fn agent_endpoint(
        &self,
        record: &ComputerRecord,
        dir: &Path,
    ) -> Result<AgentEndpoint, RuntimeError> {
        if record.backend.starts_with("qemu") {
            return Ok(AgentEndpoint::Serial(dir.join("agent.sock")));
        }
        let vm = self.vmm(&record.backend)?.attach(&record.id, dir).await?;
        Ok(vm.agent_endpoint())
    }

    /// Every computer launched from this home, running or not.
    pub fn computers(&self) -> Result<Vec<ComputerStatus>, RuntimeError> {
        let dir = self.computers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &dir))?;
            // A launch still writing its record, or a stop removing it.
            let Ok(record) = read_record(&entry.path()) else {
                continue;
            };
            let running = record.pid.is_some_and(process_alive);
            out.push(ComputerStatus { record, running });
        }
        out.sort_by(|a, b| {
            (a.record.created_unix, &a.record.id).cmp(&(b.record.created_unix, &b.record.id))
        });
        Ok(out)
    }

    /// Connects to running computer `id` (launched by this process or any
    /// other from the same home).
    ///
    /// QEMU serves one host connection to a computer's agent at a time: a
    /// process that holds a [`Computer`] of it (from a launch or a connect)
    /// keeps others waiting until it stops, detaches or drops it.
    pub async fn connect(&self, id: &str) -> Result<Computer, RuntimeError> {
        let dir = self.existing_dir(id)?;
        let record = read_record(&dir)?;
        if !record.pid.is_some_and(process_alive) {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "running computer `{id}` (it has exited; `orgo stop {id}` cleans up)"
                ),
            });
        }
        let endpoint = self.agent_endpoint(&record, &dir).await?;
        let agent = connect_agent(endpoint, QUICK).await?;
        Ok(Computer {
            runtime: self.clone(),
            record,
            agent,
            vm: None,
        })
    }

    /// Stops computer `id`: runs `on_shutdown`, powers the guest off, stops
    /// the VMM, ends its lease on the snapshot and removes its files; returns
    /// what `on_shutdown` printed. A computer that already exited is cleaned
    /// up. A failing `on_shutdown` does not keep the computer running: it is
    /// stopped and cleaned up, then the failure is returned.
    pub async fn stop(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        let dir = self.existing_dir(id)?;
        let record = read_record(&dir)?;
        let mut hook = Ok(None);
        if record.pid.is_some_and(process_alive) {
            let vm = match self.vmm(&record.backend)?.attach(id, &dir).await {
                Ok(vm) => Some(vm),
                // It exited meanwhile: only the cleanup is left to do.
                Err(_) if !record.pid.is_some_and(process_alive) => None,
                Err(error) => return Err(error),
            };
            if let Some(vm) = vm {
                // An agent that does not answer does not keep the VM up.
                if let Ok(agent) = connect_agent(vm.agent_endpoint(), QUICK).await {
                    hook = graceful_stop(&agent, record.on_shutdown.clone()).await;
                }
                vm.shutdown().await?;
            }
        }
        self.cleanup(id).await?;
        hook
    }

    async fn cleanup(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.computer_dir(id);
        self.inner.cache.release(id).await.map_err(store_error)?;
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

/// Runs `on_shutdown`, then asks the guest to stop its services and power
/// off (also when the hook failed: the failure is returned after). Returns
/// the hook's output.
async fn graceful_stop(
    agent: &Arc<AgentClient>,
    hook: Option<String>,
) -> Result<Option<String>, RuntimeError> {
    let ran = match hook {
        Some(script) => Some(
            call(agent, move |a| {
                a.run_hook(
                    Hook {
                        name: "on_shutdown".into(),
                        script,
                        timeout_ms: None,
                        env: BTreeMap::new(),
                        cwd: None,
                        user: None,
                    },
                    Duration::from_secs(660),
                    |_, _| {},
                )
            })
            .await,
        ),
        None => None,
    };
    // The guest powers off: the reply may or may not make it out first.
    let _ = call(agent, |a| a.shutdown(QUICK)).await;
    match ran {
        None => Ok(None),
        Some(Ok(out)) if out.status.success() => {
            Ok(Some(String::from_utf8_lossy(&out.output).into_owned()))
        }
        Some(Ok(out)) => Err(RuntimeError::Build(StepFailure {
            field: "hooks.on_shutdown".into(),
            reason: describe(&out.status, out.timed_out),
            output: tail(&out.output),
        })),
        Some(Err(e)) => Err(e),
    }
}

/// A running computer. Stop it ([`Computer::stop`]) or leave it running
/// ([`Computer::detach`]); dropped otherwise, it is killed and cleaned up.
#[derive(Debug)]
pub struct Computer {
    runtime: Runtime,
    record: ComputerRecord,
    agent: Arc<AgentClient>,
    /// The VM's handle, when this process launched it.
    vm: Option<Box<dyn Vm>>,
}

impl Computer {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Its record.
    pub fn record(&self) -> &ComputerRecord {
        &self.record
    }

    /// Runs a command and collects its output.
    pub async fn exec(&self, exec: Exec, timeout: Duration) -> Result<ExecOutput, RuntimeError> {
        let agent = Arc::clone(&self.agent);
        call(&agent, move |a| a.exec(exec, timeout)).await
    }

    /// Runs a command, passing its output to `on_output` as it comes.
    pub async fn exec_streaming(
        &self,
        exec: Exec,
        timeout: Duration,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<orgo_agent_protocol::ExitStatus, RuntimeError> {
        let agent = Arc::clone(&self.agent);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let job = tokio::task::spawn_blocking(move || {
            agent.request_streaming(
                orgo_agent_protocol::Op::Exec(exec),
                timeout,
                |stream, data| {
                    let _ = tx.send((stream, data.to_vec()));
                },
            )
        });
        while let Some((stream, data)) = rx.recv().await {
            on_output(stream, &data);
        }
        match joined(job).await?.map_err(RuntimeError::Agent)? {
            orgo_agent_protocol::Reply::Exit { status, .. } => Ok(status),
            other => Err(RuntimeError::Agent(AgentError::Unexpected {
                op: "exec",
                reply: format!("{other:?}"),
            })),
        }
    }

    /// Writes a file in the guest (atomically).
    pub async fn write_file(
        &self,
        path: &str,
        content: Vec<u8>,
        mode: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let path = path.to_owned();
        call(&self.agent, move |a| {
            a.write_file(&path, &content, mode, None, None, QUICK)
        })
        .await
    }

    /// Reads a file from the guest.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let path = path.to_owned();
        call(&self.agent, move |a| {
            a.read_file(&path, QUICK).map(|(bytes, _)| bytes)
        })
        .await
    }

    /// Stops it (see [`Runtime::stop`]); returns what `on_shutdown` printed.
    pub async fn stop(mut self) -> Result<Option<String>, RuntimeError> {
        let Some(vm) = self.vm.take() else {
            // Connected, not launched here: close our channel, so the stop
            // can open its own.
            let (runtime, id) = (self.runtime.clone(), self.record.id.clone());
            drop(self);
            return runtime.stop(&id).await;
        };
        // Ours: through our own handle and channel.
        let hook = graceful_stop(&self.agent, self.record.on_shutdown.clone()).await;
        vm.shutdown().await?;
        self.runtime.cleanup(&self.record.id).await?;
        hook
    }

    /// Leaves it running after this handle and this process are gone.
    pub fn detach(mut self) {
        if let Some(vm) = self.vm.take() {
            vm.detach();
        }
    }
}

impl Drop for Computer {
    /// A computer launched here and neither stopped nor detached dies with
    /// its handle: its VM is killed (no `on_shutdown`), its lease and files
    /// go. A connected handle leaves the computer as it was.
    fn drop(&mut self) {
        if let Some(vm) = self.vm.take() {
            drop(vm);
            let id = self.record.id.clone();
            let dir = self.runtime.computer_dir(&id);
            release_blocking(&self.runtime.inner.cache, vec![(dir, id)]);
        }
    }
}

/// A restored computer before its identity: parked in the pool, or about to
/// be personalized by a launch.
#[derive(Debug)]
struct Warm {
    id: String,
    built: Built,
    key: PoolKey,
    vm: Box<dyn Vm>,
    agent: Arc<AgentClient>,
    pid: Option<u32>,
}

/// Which parked computers a launch can take: the same snapshot and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    snapshot: Digest,
    cpus: u32,
    memory_mib: u64,
}

impl PoolKey {
    /// The shape `options` ask for, raised to the snapshot's (its floor).
    fn of(built: &Built, options: &LaunchOptions) -> PoolKey {
        let floor = built.manifest.hardware;
        PoolKey {
            snapshot: built.digest,
            cpus: options.cpus.unwrap_or(floor.cpu).max(floor.cpu),
            memory_mib: options
                .memory_mib
                .unwrap_or(floor.memory_mib)
                .max(floor.memory_mib),
        }
    }
}

#[derive(Debug, Default)]
struct Pool {
    parked: std::collections::HashMap<PoolKey, Vec<Warm>>,
    filling: std::collections::HashMap<PoolKey, usize>,
    /// Bumped by [`Runtime::drain`]: a fill that started before a drain
    /// does not park what it made.
    generation: u64,
}

impl Drop for Inner {
    /// Parked computers die with their handles; their leases and files
    /// are removed here (on a thread of its own: this may run inside an
    /// async runtime, which cannot block on another).
    fn drop(&mut self) {
        let parked: Vec<Warm> = self
            .pool
            .get_mut()
            .map(|pool| pool.parked.drain().flat_map(|(_, v)| v).collect())
            .unwrap_or_default();
        if parked.is_empty() {
            return;
        }
        let ids: Vec<String> = parked.iter().map(|w| w.id.clone()).collect();
        drop(parked);
        let home = self.config.home.join("computers");
        release_blocking(
            &self.cache,
            ids.into_iter().map(|id| (home.join(&id), id)).collect(),
        );
    }
}

/// Frees the leases and removes the directories of computers that never
/// launched, from synchronous code (a `Drop`): on a thread of its own, as
/// this may run inside an async runtime, which cannot block on another.
fn release_blocking(cache: &BuildCache, computers: Vec<(PathBuf, String)>) {
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
            let _ = std::fs::remove_dir_all(dir);
        }
    });
    let _ = cleanup.join();
}

/// A computer being launched or parked: unless settled as launched, its
/// lease and directory are removed, also when the launch's future is
/// dropped half-way (its VM dies with its handle).
struct Unlaunched {
    runtime: Runtime,
    id: Option<String>,
}

impl Unlaunched {
    fn new(runtime: &Runtime, id: &str) -> Unlaunched {
        Unlaunched {
            runtime: runtime.clone(),
            id: Some(id.to_owned()),
        }
    }

    /// Keeps the computer if it launched; else removes what it left.
    async fn settle(mut self, launched: bool) {
        if let Some(id) = self.id.take()
            && !launched
        {
            self.runtime.discard(&id).await;
        }
    }
}

impl Drop for Unlaunched {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let dir = self.runtime.computer_dir(&id);
            release_blocking(&self.runtime.inner.cache, vec![(dir, id)]);
        }
    }
}

/// How a backend boots a builder VM.
struct Flavor {
    /// The name snapshots record (`qemu-tcg`, `cloud-hypervisor`).
    backend: String,
    /// The image's kernel role (`vmlinuz` for QEMU, `vmlinux` for Cloud
    /// Hypervisor).
    kernel: &'static str,
    network: Network,
    cmdline: String,
}

struct ImagePaths {
    vmlinuz: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
}

/// The hardware a template builds with: its own, else the defaults; the
/// disk at least the base image's 2 GiB.
fn build_shape(template: &Template) -> HardwareShape {
    let hw = &template.hardware;
    HardwareShape {
        cpu: hw.cpu.unwrap_or(plan::DEFAULT_CPUS),
        memory_mib: hw
            .ram_gb
            .map_or(plan::DEFAULT_MEMORY_MIB, |gb| u64::from(gb) * 1024),
        disk_gb: hw
            .disk_gb
            .unwrap_or(0)
            .max(crate::image::ROOTFS_MIB.div_ceil(1024)),
    }
}

/// Runs one step; every failure, the agent's included, names the step's
/// field.
async fn run_step(
    agent: &Arc<AgentClient>,
    step: &Step,
    secrets: Option<&BTreeMap<String, String>>,
    log: BuildLog<'_>,
) -> Result<(), RuntimeError> {
    let failed = |reason: String, output: &[u8]| step_failed(step, reason, output);
    let agent_failed = |error: RuntimeError| match error {
        RuntimeError::Agent(e) => failed(format!("failed in the guest agent: {e}"), b""),
        other => other,
    };
    match &step.action {
        Action::Shell(script) => {
            let exec = Exec {
                timeout_ms: Some(STEP_TIMEOUT.as_millis() as u64),
                ..Exec::shell(format!("set -e\n{script}"))
            };
            let ran = stream_op(agent, orgo_agent_protocol::Op::Exec(exec), log)
                .await
                .map_err(agent_failed)?;
            if !ran.status.success() || ran.timed_out {
                return Err(failed(describe(&ran.status, ran.timed_out), &ran.output));
            }
        }
        Action::Hook { name, script } => {
            let hook = Hook {
                name: (*name).to_owned(),
                script: script.clone(),
                timeout_ms: None,
                env: BTreeMap::new(),
                cwd: None,
                user: None,
            };
            let ran = stream_op(agent, orgo_agent_protocol::Op::RunHook(hook), log)
                .await
                .map_err(agent_failed)?;
            if !ran.status.success() || ran.timed_out {
                return Err(failed(describe(&ran.status, ran.timed_out), &ran.output));
            }
        }
        Action::File(file) => write_file_step(agent, step, file, secrets, log).await?,
        Action::Service(spec) => {
            let spec = spec.clone();
            call(agent, move |a| a.start_service(spec, QUICK))
                .await
                .map_err(|e| failed(format!("did not start: {}", chain(&e)), b""))?;
        }
        Action::Terminals(sessions) => {
            let sessions = sessions.clone();
            call(agent, move |a| a.create_terminals(sessions, QUICK))
                .await
                .map_err(|e| failed(format!("were not created: {}", chain(&e)), b""))?;
        }
    }
    Ok(())
}

async fn write_file_step(
    agent: &Arc<AgentClient>,
    step: &Step,
    file: &FileStep,
    secrets: Option<&BTreeMap<String, String>>,
    log: BuildLog<'_>,
) -> Result<(), RuntimeError> {
    let failed = |reason: String, output: &[u8]| step_failed(step, reason, output);
    let content = match &file.source {
        Content::Inline(text) => text.clone().into_bytes(),
        Content::HostFile(path) => std::fs::read(path)
            .map_err(|e| failed(format!("cannot read `{}`: {e}", path.display()), b""))?,
        Content::Secret(name) => match secrets.and_then(|s| s.get(name)) {
            Some(value) => value.clone().into_bytes(),
            None => return Err(failed(format!("secret `{name}` has no value"), b"")),
        },
        Content::Http(_) | Content::Git(_) => {
            let script = plan::fetch_script(file).expect("http and git sources have a script");
            let ran = stream_op(
                agent,
                orgo_agent_protocol::Op::Exec(Exec::shell(script)),
                log,
            )
            .await
            .map_err(|e| failed(format!("failed in the guest agent: {}", chain(&e)), b""))?;
            if !ran.status.success() {
                return Err(failed(describe(&ran.status, ran.timed_out), &ran.output));
            }
            return Ok(());
        }
        Content::Unsupported(url) => {
            return Err(failed(
                format!(
                    "`{url}` cannot be fetched by the local runtime (http, https, git, file and secret can)"
                ),
                b"",
            ));
        }
    };
    let (path, mode, owner, group) = (
        file.path.clone(),
        file.mode,
        file.owner.clone(),
        file.group.clone(),
    );
    call(agent, move |a| {
        a.write_file(
            &path,
            &content,
            mode,
            owner.as_deref(),
            group.as_deref(),
            QUICK,
        )
    })
    .await
    .map_err(|e| failed(format!("cannot write `{}`: {}", file.path, chain(&e)), b""))
}

/// `step` failed, for `reason`, after printing `output`.
fn step_failed(step: &Step, reason: String, output: &[u8]) -> RuntimeError {
    RuntimeError::Build(StepFailure {
        field: step.field.clone(),
        reason,
        output: tail(output),
    })
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a streamed exec or hook ended, and its output (the tail).
struct Ran {
    status: orgo_agent_protocol::ExitStatus,
    timed_out: bool,
    output: Vec<u8>,
}

/// Sends an exec or a hook, streaming its output to `log` as it comes.
/// The host waits a minute longer than the guest's own timeout, so the
/// guest's answer (killed, timed out) is what is reported.
async fn stream_op(
    agent: &Arc<AgentClient>,
    op: orgo_agent_protocol::Op,
    log: BuildLog<'_>,
) -> Result<Ran, RuntimeError> {
    let agent = Arc::clone(agent);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wait = STEP_TIMEOUT + Duration::from_secs(60);
    let job = tokio::task::spawn_blocking(move || {
        agent.request_streaming(op, wait, |stream, data| {
            let _ = tx.send((stream, data.to_vec()));
        })
    });
    let mut output = Vec::new();
    while let Some((stream, data)) = rx.recv().await {
        output.extend_from_slice(&data);
        if output.len() > 2 * MAX_TAIL {
            output.drain(..output.len() - MAX_TAIL);
        }
        log(BuildEvent::Output { stream, data });
    }
    match joined(job).await?.map_err(RuntimeError::Agent)? {
        orgo_agent_protocol::Reply::Exit { status, timed_out } => Ok(Ran {
            status,
            timed_out,
            output,
        }),
        // The hook's reply repeats its output, which was streamed already.
        orgo_agent_protocol::Reply::Hook {
            status, timed_out, ..
        } => Ok(Ran {
            status,
            timed_out,
            output,
        }),
        other => Err(RuntimeError::Agent(AgentError::Unexpected {
            op: "exec",
            reply: format!("{other:?}"),
        })),
    }
}

const MAX_TAIL: usize = 64 * 1024;

/// The end of a step's output, as text.
fn tail(output: &[u8]) -> String {
    let start = output.len().saturating_sub(MAX_TAIL);
    String::from_utf8_lossy(&output[start..]).into_owned()
}

fn describe(status: &orgo_agent_protocol::ExitStatus, timed_out: bool) -> String {
    if timed_out {
        return "timed out".into();
    }
    match (status.code, status.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".into(),
    }
}

/// The base image's 2 GiB root file system grows to the disk the template
/// asks for (the copy-on-write layer is that large already).
async fn grow_root_filesystem(agent: &Arc<AgentClient>) -> Result<(), RuntimeError> {
    let exec = Exec::shell(
        "command -v resize2fs >/dev/null && resize2fs /dev/vda >/dev/null 2>&1 || true",
    );
    call(agent, move |a| a.exec(exec, QUICK)).await.map(drop)
}

/// Connects to the agent behind `endpoint`, within `timeout`.
async fn connect_agent(
    endpoint: AgentEndpoint,
    timeout: Duration,
) -> Result<Arc<AgentClient>, RuntimeError> {
    let job = tokio::task::spawn_blocking(move || match endpoint {
        AgentEndpoint::Serial(path) => AgentClient::connect_serial(&path, timeout),
        AgentEndpoint::HybridVsock { path, port } => {
            AgentClient::connect_hybrid_vsock(&path, port, timeout)
        }
    });
    joined(job)
        .await?
        .map(Arc::new)
        .map_err(RuntimeError::Agent)
}

/// The default base-image recipe for `agent` and its digest (apt is asked,
/// on a blocking thread).
async fn resolve_recipe(agent: PathBuf) -> Result<(BaseImageRecipe, Digest), RuntimeError> {
    let recipe = joined(tokio::task::spawn_blocking(move || {
        BaseImageRecipe::resolve(&agent)
    }))
    .await?
    .map_err(RuntimeError::Image)?;
    let digest = recipe.digest().parse().map_err(|_| RuntimeError::Vmm {
        backend: "orgo",
        op: "base image".into(),
        message: format!("the recipe digest `{}` does not parse", recipe.digest()),
    })?;
    Ok((recipe, digest))
}

/// Gives the guest fresh entropy from the host's CSPRNG, the host's clock,
/// a machine-id derived from that entropy, and `id` as its hostname.
async fn reset_identity(agent: &Arc<AgentClient>, id: &str) -> Result<(), RuntimeError> {
    let mut entropy = vec![0u8; 64];
    getrandom::fill(&mut entropy).map_err(|e| RuntimeError::Vmm {
        backend: "orgo",
        op: "launch".into(),
        message: format!("no entropy from the host: {e}"),
    })?;
    let hostname = id.to_owned();
    call(agent, move |a| {
        a.reset_identity(entropy, Some(hostname), QUICK)
    })
    .await
}

/// Runs a blocking agent request on a blocking thread.
async fn call<T: Send + 'static>(
    agent: &Arc<AgentClient>,
    f: impl FnOnce(&AgentClient) -> Result<T, AgentError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let agent = Arc::clone(agent);
    joined(tokio::task::spawn_blocking(move || f(&agent)))
        .await?
        .map_err(RuntimeError::Agent)
}

async fn joined<T>(job: tokio::task::JoinHandle<T>) -> Result<T, RuntimeError> {
    job.await.map_err(|e| RuntimeError::Vmm {
        backend: "orgo",
        op: "agent".into(),
        message: format!("the agent thread failed: {e}"),
    })
}

/// A fresh computer id: `c-` and 12 hex digits from the OS's CSPRNG.
fn new_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    format!("c-{}", hex::encode(bytes))
}

/// Creates a qcow2 copy-on-write layer over `backing` (`qemu-img create`,
/// without opening the backing file: the size is given, or the backing
/// file's own).
async fn create_overlay(
    backing: &Path,
    backing_format: DiskFormat,
    path: &Path,
    size: Option<u64>,
) -> Result<(), RuntimeError> {
    let format = match backing_format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let mut command = tokio::process::Command::new("qemu-img");
    command
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(backing)
        .arg(path);
    if let Some(bytes) = size {
        command.arg("-u").arg(bytes.to_string());
    }
    let out = command
        .output()
        .await
        .map_err(|source| RuntimeError::Spawn {
            binary: "qemu-img".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Vmm {
            backend: "qemu",
            op: "qemu-img create".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn write_record(dir: &Path, record: &ComputerRecord) -> Result<(), RuntimeError> {
    let path = dir.join(RECORD_FILE);
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(record).expect("a record serializes");
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

fn read_record(dir: &Path) -> Result<ComputerRecord, RuntimeError> {
    let path = dir.join(RECORD_FILE);
    let not_found = || RuntimeError::NotFound {
        what: format!(
            "computer `{}`",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let invalid = |reason: String| RuntimeError::Vmm {
        backend: "orgo",
        op: "read computer record".into(),
        message: format!("`{}` {reason}", path.display()),
    };
    if meta.len() > MAX_RECORD_BYTES {
        return Err(invalid(format!("is over {MAX_RECORD_BYTES} bytes")));
    }
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let record: ComputerRecord =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("is not a record: {e}")))?;
    if record.orgo_computer != RECORD_VERSION {
        return Err(invalid(format!(
            "has format version `{}`; this orgo reads `{RECORD_VERSION}`",
            record.orgo_computer
        )));
    }
    Ok(record)
}

/// The largest disk a computer gets (64 TiB).
const MAX_DISK_GB: u64 = 64 * 1024;

/// `hardware.disk_gb` in bytes, if it is a size a disk can have.
fn disk_bytes(gb: u64) -> Result<u64, RuntimeError> {
    if gb > MAX_DISK_GB {
        return Err(RuntimeError::Invalid {
            what: format!("`hardware.disk_gb` of `{gb}` is over the largest disk, `{MAX_DISK_GB}`"),
        });
    }
    Ok(gb << 30)
}

fn missing_role(role: &str) -> RuntimeError {
    RuntimeError::Vmm {
        backend: "orgo",
        op: "read manifest".into(),
        message: format!("the manifest has no `{role}` blob"),
    }
}

fn store_error(error: StoreError) -> RuntimeError {
    RuntimeError::Store(Box::new(error))
}
