//! Launches: a computer restored from its template's golden snapshot (or
//! taken from the warm pool), then personalized: its own identity, the
//! environment and secrets, the runtime files, `on_every_boot` and
//! `on_resume`, the health checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use orgo_agent_protocol::{Exec, Op};
use orgo_snapshot::Built;
use orgo_template::{Digest, Template};

use crate::agent::AgentClient;
use crate::computer::Computer;
use crate::disk::{create_overlay, disk_bytes};
use crate::error::{RuntimeError, store_error};
use crate::guest::{self, QUICK, RESTORE_TIMEOUT, call};
use crate::home::{ComputerRecord, PortMapping, RecordState};
use crate::net::{self, Attached, Spec};
use crate::plan::{self, Action, Step};
use crate::pool::{PoolKey, Warm};
use crate::shared::{Shared, release_blocking};
use crate::steps::{BuildEvent, BuildLog, run_step};
use crate::vault::Vault;
use crate::vmm::{BackendKind, Disk, DiskFormat, RestoreConfig, Vm};

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
    /// Record every destination the computer reaches (names from TLS SNI,
    /// HTTP `Host` and DNS; bare addresses from the firewall), for
    /// [`Computer::egress_learned`] to turn into the smallest
    /// `egress_policy` allowing them. Needs the host network (root or
    /// `CAP_NET_ADMIN`).
    pub egress_learn: bool,
    /// Idle minutes before the computer stops itself (see
    /// [`Computer::idle`](crate::Computer::idle)); over the template's
    /// `hardware.auto_stop_minutes`; `Some(0)` disables it.
    pub auto_stop_minutes: Option<u32>,
    /// The launching process exits once the launch returns, leaving the
    /// computer [detached](Computer::detach) (as `orgo launch` does): no
    /// process stays to act for it, so a template with
    /// `apps[].health.on_fail: restart_vm` is refused, naming the field.
    /// Left unset, such a template's computer is restarted by this process
    /// while it runs (see [`Runtime::launch`](crate::Runtime::launch)).
    pub detached: bool,
}

/// The shape `options` ask for, raised to the snapshot's (its floor).
fn pool_key(built: &Built, options: &LaunchOptions) -> PoolKey {
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

/// What a launch restores.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// The template's golden snapshot, built first if needed.
    Template,
    /// A checkpoint of a running computer, launched from the template.
    Checkpoint(Digest),
}

/// Before anything is built or started: every required secret, and the
/// extra environment's names.
fn checked(
    shared: &Shared,
    template: &Template,
    options: &LaunchOptions,
) -> Result<BTreeMap<String, String>, RuntimeError> {
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
    if options.egress_learn && shared.net.lacking().is_some() {
        return Err(no_learning(shared));
    }
    Ok(secrets)
}

/// Launches a computer from `template` (see [`Runtime::launch`](crate::Runtime::launch)).
pub(crate) async fn launch(
    shared: &Arc<Shared>,
    template: &Template,
    options: LaunchOptions,
    log: BuildLog<'_>,
) -> Result<Computer, RuntimeError> {
    let secrets = checked(shared, template, &options)?;
    let digest = template.digest();
    if let Some(built) = shared
        .builder
        .cache
        .get(&digest)
        .await
        .map_err(store_error)?
        && let Some((warm, guard)) = take(shared, pool_key(&built, &options)).await
    {
        let key = warm.key;
        let launched = personalize(shared, warm, template, &options, secrets, log, None).await;
        guard.settle(launched.is_ok()).await;
        refill(shared, template, key);
        return launched.map(|l| handle(shared, l));
    }
    launch_new(shared, template, Source::Template, options, secrets, log).await
}

/// Launches a computer from checkpoint `digest` of a computer of
/// `template` (see [`Runtime::launch_checkpoint`](crate::Runtime::launch_checkpoint)).
pub(crate) async fn launch_checkpoint(
    shared: &Arc<Shared>,
    template: &Template,
    digest: Digest,
    options: LaunchOptions,
    log: BuildLog<'_>,
) -> Result<Computer, RuntimeError> {
    let secrets = checked(shared, template, &options)?;
    launch_new(
        shared,
        template,
        Source::Checkpoint(digest),
        options,
        secrets,
        log,
    )
    .await
}

/// Launches a new computer (not a parked one) from `source`.
async fn launch_new(
    shared: &Arc<Shared>,
    template: &Template,
    source: Source,
    options: LaunchOptions,
    secrets: BTreeMap<String, String>,
    log: BuildLog<'_>,
) -> Result<Computer, RuntimeError> {
    let id = new_id();
    shared
        .home
        .create(&ComputerRecord::launching(&id, template))?;
    // A launch cancelled from here on (its future dropped) leaves no lease
    // or directory behind.
    let guard = Unlaunched::new(shared, &id);
    let launched = async {
        let built = match source {
            Source::Template => shared.builder.build(Some(&id), template, log).await?,
            Source::Checkpoint(digest) => {
                let manifest = orgo_snapshot::Checkpoints::new(Arc::clone(&shared.store))
                    .lease(&id, &digest)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| RuntimeError::NotFound {
                        what: format!("checkpoint `{digest}`"),
                    })?;
                Built {
                    digest,
                    manifest,
                    built_here: false,
                }
            }
        };
        let key = pool_key(&built, &options);
        let restoring = Instant::now();
        let nic = Nic::Attach {
            learn: options.egress_learn,
        };
        let warm = restore(shared, &id, template, &built, key, nic, None).await?;
        log(BuildEvent::Status(format!(
            "{id}: restored, agent answering, in {} ms",
            restoring.elapsed().as_millis()
        )));
        personalize(shared, warm, template, &options, secrets, log, None).await
    }
    .await;
    guard.settle(launched.is_ok()).await;
    if let (Ok(launched), Source::Template) = (&launched, source) {
        let record = &launched.record;
        if let Some(snapshot) = record.snapshot {
            let key = PoolKey {
                snapshot,
                cpus: record.cpus,
                memory_mib: record.memory_mib,
            };
            refill(shared, template, key);
        }
    }
    launched.map(|l| handle(shared, l))
}

/// The handle of computer `launched`.
fn handle(shared: &Arc<Shared>, launched: Launched) -> Computer {
    let Launched {
        record,
        agent,
        vm,
        net,
    } = launched;
    Computer::launched(Arc::clone(shared), record, agent, vm, net)
}

/// A launched computer's parts, before its handle.
pub(crate) struct Launched {
    pub(crate) record: ComputerRecord,
    pub(crate) agent: Arc<AgentClient>,
    pub(crate) vm: Box<dyn Vm>,
    pub(crate) net: Option<Attached>,
}

/// Where a restore's VM gets its network.
pub(crate) enum Nic {
    /// A new one (learning its egress from the start, if `learn`).
    Attach { learn: bool },
    /// The one the computer has (a restart): its namespace, netd and port
    /// forwards stay; `learning` if it learns its egress.
    Keep { learning: bool },
}

/// Restores `built` into VM `id` (recorded already) with its own disk
/// layer, and connects to its agent: a computer without its identity yet.
pub(crate) async fn restore(
    shared: &Arc<Shared>,
    id: &str,
    template: &Template,
    built: &Built,
    key: PoolKey,
    nic: Nic,
    prior: Option<&ComputerRecord>,
) -> Result<Warm, RuntimeError> {
    let manifest = &built.manifest;
    let kind: BackendKind = manifest.backend.parse()?;
    shared.builder.backends.require_restore_tools(kind)?;
    let vmm = shared.builder.backends.vmm(kind)?;
    let mut record = base_record(id, template, prior);
    record.snapshot = Some(built.digest);
    record.backend = Some(kind);
    record.cpus = key.cpus;
    record.memory_mib = key.memory_mib;
    shared.home.update(&record)?;
    let dir = shared.home.dir(id);
    // Built by another host of the fleet: its files, and the layers under
    // its disk, come here first.
    shared
        .builder
        .fleet
        .fetch(manifest.blobs.values().map(|b| b.digest).collect())
        .await?;
    let mut snapshot = BTreeMap::new();
    for (role, blob) in &manifest.blobs {
        snapshot.insert(role.clone(), shared.builder.store.blob_path(&blob.digest));
    }
    let golden = snapshot
        .remove("disk")
        .ok_or_else(|| RuntimeError::MissingRole {
            what: "snapshot",
            role: "disk".into(),
        })?;
    let disk = dir.join("disk.qcow2");
    let size = disk_bytes(manifest.hardware.disk_gb)?;
    let (attached, learning, network) = match nic {
        Nic::Attach { learn } => {
            let spec = Spec {
                template: Some(template),
                learn,
            };
            let (overlay, attached) = tokio::join!(
                create_overlay(&golden, DiskFormat::Qcow2, &disk, Some(size)),
                shared.net.attach(id, &dir, spec)
            );
            let attached = attached?;
            overlay?;
            let network = match &attached {
                Some(attached) => attached.network(),
                None => shared.builder.backends.clone_network(kind),
            };
            (attached, learn, network)
        }
        Nic::Keep { learning } => {
            create_overlay(&golden, DiskFormat::Qcow2, &disk, Some(size)).await?;
            let network = match shared.net.lacking() {
                None => net::kept_network(id),
                Some(_) => shared.builder.backends.clone_network(kind),
            };
            (None, learning, network)
        }
    };
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
        network,
        run_dir: dir,
    };
    let vm = vmm.restore(&config).await?;
    let pid = vm.info().await?.pid;
    let agent = guest::connect(vm.agent_endpoint(), RESTORE_TIMEOUT).await?;
    let floor = manifest.hardware;
    if key.cpus > floor.cpu || key.memory_mib > floor.memory_mib {
        let script = plan::online_hot_added(key.cpus, key.memory_mib);
        let out = call(&agent, move |a| a.exec(Exec::shell(script), QUICK)).await?;
        if !out.status.success() {
            return Err(RuntimeError::HotAdd {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
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
        net: attached,
        learning,
    })
}

/// A record of computer `id` being restored: a new one, or (a restart) its
/// `prior` one, as launching.
fn base_record(id: &str, template: &Template, prior: Option<&ComputerRecord>) -> ComputerRecord {
    match prior {
        None => ComputerRecord::launching(id, template),
        Some(prior) => {
            let mut record = prior.clone();
            record.state = RecordState::Launching;
            record.owner = ComputerRecord::launching(id, template).owner;
            record.pid = None;
            record
        }
    }
}

/// Makes a restored VM the computer: its own identity (entropy, clock,
/// machine-id, hostname), the environment and secrets, the runtime files,
/// `on_every_boot` and `on_resume`, the health checks; then records it as
/// running. A restart's (`prior`, its record) keeps its forwarded ports,
/// and counts the restart.
pub(crate) async fn personalize(
    shared: &Arc<Shared>,
    warm: Warm,
    template: &Template,
    options: &LaunchOptions,
    secrets: BTreeMap<String, String>,
    log: BuildLog<'_>,
    prior: Option<&ComputerRecord>,
) -> Result<Launched, RuntimeError> {
    let started = Instant::now();
    let Warm {
        id,
        built,
        key,
        vm,
        agent,
        pid,
        net,
        learning,
    } = warm;
    let dir = shared.home.dir(&id);
    let ports = match prior {
        Some(prior) => prior.ports.clone(),
        None => forward_ports(shared, &dir, template, net.is_some()).await?,
    };
    if options.egress_learn && !learning {
        match &net {
            Some(_) => net::start_learning(&id, &dir).await?,
            None => return Err(no_learning(shared)),
        }
    }
    guest::reset_identity(&agent, &id).await?;
    let identity = started.elapsed();
    let mut env = plan::environment(template.env(), &secrets);
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
    crate::streams::on_launch(&shared.home.dir(&id), &agent, template, &secrets).await?;
    // Triggers first: a health trigger is armed before its check runs.
    let triggers = crate::automation::triggers(template);
    if !triggers.is_empty() {
        call(&agent, move |a| {
            a.request(Op::SetTriggers { triggers }, QUICK)
        })
        .await?;
    }
    let checks = plan::health_checks(template);
    if !checks.is_empty() {
        call(&agent, move |a| a.set_health_checks(checks, QUICK)).await?;
    }
    if let Some(op) = crate::automation::telemetry(template, &id) {
        call(&agent, move |a| a.request(op, QUICK)).await?;
    }
    if let Some(op) = crate::automation::auto_stop(template, options.auto_stop_minutes) {
        call(&agent, move |a| a.request(op, QUICK)).await?;
    }
    log(BuildEvent::Status(format!(
        "{id}: identity {} ms, environment {} ms, files, hooks and health checks {} ms",
        identity.as_millis(),
        environment.as_millis(),
        (started.elapsed() - identity - environment).as_millis()
    )));
    let mut record = base_record(&id, template, prior);
    record.state = RecordState::Running;
    record.owner = None;
    record.snapshot = Some(built.digest);
    record.backend = Some(built.manifest.backend.parse()?);
    record.cpus = key.cpus;
    record.memory_mib = key.memory_mib;
    record.pid = pid;
    record.ports = ports;
    record.egress_learn = options.egress_learn;
    if prior.is_some() {
        record.restarts += 1;
    }
    shared.home.update(&record)?;
    Ok(Launched {
        record,
        agent,
        vm,
        net,
    })
}

/// Why learning cannot be done here.
fn no_learning(shared: &Shared) -> RuntimeError {
    RuntimeError::Invalid {
        what: format!(
            "launch option `egress_learn`: the host network {}",
            shared
                .net
                .lacking()
                .unwrap_or("is not set up for this computer")
        ),
    }
}

/// Forwards every `apps[].ports[]` of `template` through the computer's
/// netd (run directory `dir`): public ones on the publish address (the
/// exact `external` port, else any), the others on `127.0.0.1`; and a
/// desktop's VNC and noVNC ports on the publish address. A port that
/// cannot be bound fails the launch, naming its field.
async fn forward_ports(
    shared: &Shared,
    dir: &std::path::Path,
    template: &Template,
    host_net: bool,
) -> Result<Vec<PortMapping>, RuntimeError> {
    let mut fields = Vec::new();
    let mut ports = Vec::new();
    for (i, app) in template.apps().iter().enumerate() {
        for (j, port) in app.ports.iter().enumerate() {
            let ip = if port.public {
                shared.config.publish_address
            } else {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            };
            let external = if port.public { port.external } else { 0 };
            fields.push(format!("apps[{i}].ports[{j}]"));
            ports.push(net::ForwardPort {
                internal: port.internal,
                protocol: match port.protocol {
                    orgo_template::Protocol::Udp => net::Proto::Udp,
                    _ => net::Proto::Tcp,
                },
                bind: std::net::SocketAddr::new(ip, external),
            });
        }
    }
    // A desktop's VNC and noVNC, forwarded as public ports are, where the
    // host network is (without it, `orgo vnc` says there is no forward).
    if host_net && crate::desktop::plan(template).is_some() {
        for (internal, what) in [
            (crate::desktop::VNC_PORT, "VNC"),
            (crate::desktop::NOVNC_PORT, "noVNC"),
        ] {
            fields.push(format!("desktop ({what})"));
            ports.push(net::ForwardPort {
                internal,
                protocol: net::Proto::Tcp,
                bind: std::net::SocketAddr::new(shared.config.publish_address, 0),
            });
        }
    }
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    if !host_net {
        // `Runtime::check` refuses these first; a custom path that got here
        // does not run with its ports unforwarded.
        return Err(RuntimeError::Port {
            field: fields[0].clone(),
            reason: format!(
                "the host network {}",
                shared.net.lacking().unwrap_or("is not set up")
            ),
        });
    }
    match net::forward(dir, &ports).await? {
        Ok(bound) if bound.len() == ports.len() => Ok(ports
            .iter()
            .zip(bound)
            .map(|(p, address)| PortMapping {
                internal: p.internal,
                protocol: proto_name(p.protocol).to_owned(),
                address,
            })
            .collect()),
        Ok(bound) => Err(RuntimeError::Net {
            op: "orgo-netd forward".into(),
            message: format!("{} ports asked, {} bound", ports.len(), bound.len()),
        }),
        Err((error, index)) => {
            let i = index.unwrap_or(0).min(ports.len() - 1);
            Err(RuntimeError::Port {
                field: fields[i].clone(),
                reason: format!(
                    "{error} (`{}/{}` on `{}`)",
                    ports[i].internal,
                    proto_name(ports[i].protocol),
                    ports[i].bind
                ),
            })
        }
    }
}

fn proto_name(proto: net::Proto) -> &'static str {
    match proto {
        net::Proto::Tcp => "tcp",
        net::Proto::Udp => "udp",
    }
}

/// Restores `count` computers of `template` ahead (see
/// [`Runtime::prewarm`](crate::Runtime::prewarm)).
pub(crate) async fn prewarm(
    shared: &Arc<Shared>,
    template: &Template,
    count: usize,
) -> Result<(), RuntimeError> {
    let built = shared.builder.build(None, template, &mut |_| {}).await?;
    let key = pool_key(&built, &LaunchOptions::default());
    fill(shared, template, key, count).await
}

/// Tops the pool for `key` up to `RuntimeConfig::warm_pool` in the
/// background.
fn refill(shared: &Arc<Shared>, template: &Template, key: PoolKey) {
    let count = shared.config.warm_pool;
    if count == 0 {
        return;
    }
    let (shared, template) = (Arc::clone(shared), template.clone());
    tokio::spawn(async move {
        // A failure leaves the pool short; launches then restore cold.
        let _ = fill(&shared, &template, key, count).await;
    });
}

async fn fill(
    shared: &Arc<Shared>,
    template: &Template,
    key: PoolKey,
    count: usize,
) -> Result<(), RuntimeError> {
    let pool = &shared.pool;
    while let Some(claim) = pool.claim(key, count) {
        let parked = park(shared, template, key).await;
        let (warm, error) = match parked {
            Ok(warm) => (Some(warm), None),
            Err(error) => (None, Some(error)),
        };
        // Drained while it was being parked: it goes too.
        if let Some(warm) = pool.settle(claim, warm) {
            let id = warm.id.clone();
            let _ = warm.vm.shutdown().await;
            drop(warm);
            discard(shared, &id).await;
            return Ok(());
        }
        if let Some(error) = error {
            return Err(error);
        }
    }
    Ok(())
}

async fn park(
    shared: &Arc<Shared>,
    template: &Template,
    key: PoolKey,
) -> Result<Warm, RuntimeError> {
    let id = new_id();
    let mut record = ComputerRecord::launching(&id, template);
    record.state = RecordState::Parked;
    shared.home.create(&record)?;
    let guard = Unlaunched::new(shared, &id);
    let parked = async {
        let built = shared
            .builder
            .cache
            .lease(&id, &template.digest())
            .await
            .map_err(store_error)?;
        let nic = Nic::Attach { learn: false };
        let warm = restore(shared, &id, template, &built, key, nic, None).await?;
        let mut record = ComputerRecord::launching(&id, template);
        record.state = RecordState::Parked;
        record.snapshot = Some(built.digest);
        record.backend = Some(built.manifest.backend.parse()?);
        record.cpus = key.cpus;
        record.memory_mib = key.memory_mib;
        record.pid = warm.pid;
        shared.home.update(&record)?;
        // Its identity now (the take sets the clock and fresh entropy
        // again), and a shell run once: under TCG, code the guest has not
        // run since the restore is translated on its first run, and that
        // is the launch's cost otherwise.
        guest::reset_identity(&warm.agent, &id).await?;
        call(&warm.agent, |a| a.exec(Exec::shell(":"), QUICK)).await?;
        warm.vm.pause().await?;
        Ok(warm)
    }
    .await;
    guard.settle(parked.is_ok()).await;
    parked
}

/// A parked computer for `key`, resumed, with the guard that removes it
/// unless it launches (also if this future is dropped while it resumes);
/// `None` if none is parked.
async fn take(shared: &Arc<Shared>, key: PoolKey) -> Option<(Warm, Unlaunched)> {
    loop {
        let warm = shared.pool.take(key)?;
        let guard = Unlaunched::new(shared, &warm.id);
        if warm.vm.resume().await.is_ok() {
            return Some((warm, guard));
        }
        drop(warm);
        guard.settle(false).await;
    }
}

/// Stops every parked computer and frees its lease and files.
pub(crate) async fn drain(shared: &Arc<Shared>) {
    for mut warm in shared.pool.drain() {
        let id = warm.id.clone();
        let _ = warm.vm.shutdown().await;
        if let Some(net) = warm.net.take() {
            net.teardown().await;
        }
        drop(warm);
        discard(shared, &id).await;
    }
}

/// Removes what a computer that never launched left: its lease and files.
async fn discard(shared: &Arc<Shared>, id: &str) {
    let _ = shared.builder.cache.release(id).await;
    let _ = crate::home::remove_dir(&shared.home.dir(id));
}

/// A fresh computer id: `c-` and 12 hex digits from the OS's CSPRNG.
fn new_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    format!("c-{}", hex::encode(bytes))
}

/// A computer being launched or parked: unless settled as launched, its
/// lease and directory are removed, also when the launch's future is
/// dropped half-way (its VM dies with its handle).
struct Unlaunched {
    shared: Arc<Shared>,
    id: Option<String>,
}

impl Unlaunched {
    fn new(shared: &Arc<Shared>, id: &str) -> Unlaunched {
        Unlaunched {
            shared: Arc::clone(shared),
            id: Some(id.to_owned()),
        }
    }

    /// Keeps the computer if it launched; else removes what it left.
    async fn settle(mut self, launched: bool) {
        if let Some(id) = self.id.take()
            && !launched
        {
            discard(&self.shared, &id).await;
        }
    }
}

impl Drop for Unlaunched {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let dir = self.shared.home.dir(&id);
            release_blocking(&self.shared.builder.cache, vec![(dir, id)]);
        }
    }
}
