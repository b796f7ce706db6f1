//! End to end under QEMU TCG: build the base image (cached across runs by
//! its recipe digest), boot it, and drive the agent: exec, files, a service
//! killed and restarted, a failing health check whose `on_fail` acts, hooks,
//! tmux, the login environment, a new identity, power off.
//!
//! Needs root, `qemu-system-x86_64`, `mmdebstrap`, `apt-get` with Debian
//! sources and `mkfs.ext4` (`.ci/run` installs them). Images are cached in
//! `$ORGO_HOME/images`, else `target/orgo-images`.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{image_dir, overlay, static_agent};
use orgo_agent_protocol::{
    Backoff, Event, Exec, HealthSpec, Hook, OnFail, Probe, RestartPolicy, ServiceSpec, TerminalSpec,
};
use orgo_runtime::{
    Accel, AgentClient, BaseImageRecipe, Disk, DiskFormat, KERNEL_CMDLINE, Network, Qemu,
    USER_NET_IP, VmConfig, Vmm as _, build_base, process_alive,
};

const T: Duration = Duration::from_secs(60);

fn exec_ok(agent: &AgentClient, exec: Exec) -> String {
    let out = agent.exec(exec, T).unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(agent: &AgentClient, script: &str) -> String {
    exec_ok(agent, Exec::shell(script))
}

fn wait(agent: &AgentClient, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    agent
        .wait_event(T, pred)
        .unwrap_or_else(|| panic!("no event within {T:?}: {what}"))
}

#[test]
fn base_image_boots_and_the_agent_does_its_work() {
    let t0 = Instant::now();
    let agent_bin = static_agent();
    let agent_built = t0.elapsed();

    let t1 = Instant::now();
    let recipe = BaseImageRecipe::resolve(&agent_bin).unwrap();
    let image = build_base(&recipe, &agent_bin, &image_dir(), &mut |step: &str| {
        eprintln!("[image] {step}")
    })
    .unwrap();
    let image_time = t1.elapsed();
    // The same recipe is the same image, built once.
    let again = build_base(&recipe, &agent_bin, &image_dir(), &mut |_: &str| {}).unwrap();
    assert_eq!(again, image);
    let image_bytes: u64 = ["vmlinuz", "vmlinux", "initrd.cpio", "rootfs.ext4"]
        .iter()
        .map(|f| std::fs::metadata(image.dir.join(f)).unwrap().len())
        .sum();

    let run_dir = std::env::temp_dir().join(format!("orgo-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).unwrap();
    let disk = run_dir.join("disk.qcow2");
    overlay(&image.rootfs(), "raw", &disk);
    let config = VmConfig {
        id: "e2e".into(),
        cpus: 1,
        memory_mib: 512,
        kernel: image.vmlinuz(),
        initrd: Some(image.initrd()),
        cmdline: format!("{KERNEL_CMDLINE} {USER_NET_IP}"),
        disk: Disk {
            path: disk,
            format: DiskFormat::Qcow2,
            read_only: false,
        },
        memory_file: None,
        network: Network::User,
        run_dir: run_dir.clone(),
    };
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let vm = tokio.block_on(Qemu::new(Accel::Tcg).boot(&config)).unwrap();
    let socket = run_dir.join("agent.sock");
    let console = || std::fs::read_to_string(run_dir.join("console.log")).unwrap_or_default();
    let agent = AgentClient::connect_serial(&socket, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n--- console ---\n{}", console()));
    let boot_to_ready = started.elapsed();
    let qemu_pid = tokio.block_on(vm.info()).unwrap().pid.unwrap();
    assert!(agent.ready().pid1);

    // exec
    let uname = exec_ok(&agent, Exec::argv(["uname", "-a"]));
    assert!(uname.starts_with("Linux "), "{uname}");
    assert!(uname.contains(&image.kernel_release), "{uname}");
    let ip = sh(&agent, "ip -4 addr show eth0");
    assert!(ip.contains("10.0.2.15/24"), "{ip}");
    let mut as_orgo = Exec::argv(["id", "-un"]);
    as_orgo.user = Some("orgo".into());
    assert_eq!(exec_ok(&agent, as_orgo).trim(), "orgo");

    // files
    agent
        .write_file(
            "/home/orgo/notes/hello.txt",
            b"hello, guest\n",
            Some(0o640),
            Some("orgo"),
            None,
            T,
        )
        .unwrap();
    let (content, mode) = agent.read_file("/home/orgo/notes/hello.txt", T).unwrap();
    assert_eq!((content.as_slice(), mode), (&b"hello, guest\n"[..], 0o640));
    assert_eq!(
        sh(&agent, "stat -c '%U:%G %a' /home/orgo/notes/hello.txt").trim(),
        "orgo:orgo 640"
    );
    assert!(agent.read_file("/proc/1/environ", T).is_err());

    // a service, killed and restarted
    let ticker = ServiceSpec {
        name: "ticker".into(),
        run: "while true; do date +%s >> /tmp/ticks; sleep 1; done".into(),
        cwd: None,
        user: Some("orgo".into()),
        env: BTreeMap::new(),
        restart: RestartPolicy::Always,
        stop_signal: "TERM".into(),
        stop_timeout_ms: None,
        log: Some("/var/log/orgo/ticker.log".into()),
        backoff: Backoff::default(),
    };
    agent.start_service(ticker, T).unwrap();
    let pid = match wait(
        &agent,
        "ticker started",
        |e| matches!(e, Event::ServiceStarted { name, .. } if name == "ticker"),
    ) {
        Event::ServiceStarted { pid, .. } => pid,
        _ => unreachable!(),
    };
    sh(&agent, &format!("kill -9 {pid}"));
    wait(
        &agent,
        "ticker killed",
        |e| matches!(e, Event::ServiceExited { name, status, restarting: true } if name == "ticker" && status.signal == Some(9)),
    );
    let pid2 = match wait(
        &agent,
        "ticker restarted",
        |e| matches!(e, Event::ServiceStarted { name, restarts: 1, .. } if name == "ticker"),
    ) {
        Event::ServiceStarted { pid, .. } => pid,
        _ => unreachable!(),
    };
    assert_ne!(pid, pid2);
    assert_eq!(sh(&agent, &format!("ps -o user= -p {pid2}")).trim(), "orgo");

    // a failing health check restarts the service
    agent
        .set_health_checks(
            vec![HealthSpec {
                app: "ticker-app".into(),
                probe: Probe::Tcp {
                    host: "127.0.0.1".into(),
                    port: 8080,
                },
                every_ms: 300,
                timeout_ms: 1_000,
                retries: 2,
                on_fail: OnFail::RestartService {
                    service: "ticker".into(),
                },
            }],
            T,
        )
        .unwrap();
    wait(&agent, "health failing", |e| {
        matches!(
            e,
            Event::Health {
                healthy: false,
                failures: 2,
                ..
            }
        )
    });
    wait(&agent, "on_fail acted", |e| {
        matches!(e, Event::HealthAction { ok: true, .. })
    });
    wait(
        &agent,
        "restarted by health",
        |e| matches!(e, Event::ServiceStarted { name, restarts: 2, .. } if name == "ticker"),
    );
    agent.set_health_checks(vec![], T).unwrap();

    // hooks
    let hook = agent
        .run_hook(
            Hook {
                name: "on_first_boot".into(),
                script: "echo first\nfalse\necho never".into(),
                timeout_ms: None,
                env: BTreeMap::new(),
                cwd: None,
                user: None,
            },
            T,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(
        (hook.status.code, hook.output.as_slice()),
        (Some(1), &b"first\n"[..])
    );

    // tmux and the login environment
    agent
        .create_terminals(
            vec![TerminalSpec {
                name: "main".into(),
                title: None,
                cwd: Some("/tmp".into()),
                run: None,
                user: Some("orgo".into()),
            }],
            T,
        )
        .unwrap();
    let mut tmux = Exec::argv(["tmux", "list-sessions", "-F", "#{session_name}"]);
    tmux.user = Some("orgo".into());
    assert_eq!(exec_ok(&agent, tmux).trim(), "main");
    agent
        .set_env(
            [("GREETING".to_string(), "hello from the host".to_string())].into(),
            T,
        )
        .unwrap();
    let mut login = Exec::argv(["env", "-i", "bash", "-lc", "echo $GREETING"]);
    login.user = Some("orgo".into());
    assert_eq!(exec_ok(&agent, login).trim(), "hello from the host");

    // another host: the first closes its channel, the next is served
    drop(agent);
    let agent = AgentClient::connect_serial(&socket, T)
        .unwrap_or_else(|e| panic!("{e}\n--- console ---\n{}", console()));
    assert_eq!(sh(&agent, "echo again").trim(), "again");

    // a new identity, its machine-id derived from the host's bytes
    let before = sh(&agent, "cat /etc/machine-id");
    assert_eq!(before.trim().len(), 32);
    agent
        .reset_identity(vec![42; 64], Some("clone-1".into()), T)
        .unwrap();
    let after = sh(&agent, "cat /etc/machine-id; hostname");
    assert_ne!(before.trim(), after.lines().next().unwrap());
    assert_eq!(after.lines().nth(1), Some("clone-1"));
    agent
        .reset_identity(vec![42; 64], Some("clone-1".into()), T)
        .unwrap();
    assert_eq!(
        sh(&agent, "cat /etc/machine-id").lines().next(),
        after.lines().next()
    );
    let skew = sh(&agent, "date +%s").trim().parse::<i64>().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!(skew.abs() <= 5, "guest clock is {skew} s off");

    agent.shutdown(T).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while process_alive(qemu_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !process_alive(qemu_pid),
        "QEMU did not exit after the guest powered off"
    );
    drop(vm);
    let _ = std::fs::remove_dir_all(&run_dir);

    eprintln!(
        "[e2e] static agent build {:.1?}; base image {:.1?} ({} MiB on disk, {} MiB apparent); \
         boot to ready {:.2?} under TCG; whole test {:.1?}",
        agent_built,
        image_time,
        du_mib(&image.dir),
        image_bytes >> 20,
        boot_to_ready,
        t0.elapsed()
    );
}

fn du_mib(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sm").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
