//! The agent's automation, measured in a sandbox on the host (no VM):
//! its CPU time and resident memory while idle with 10 triggers armed (4
//! schedules, 3 file watches, 3 webhooks) and a health check, and the time
//! from a file event to its trigger firing and to its `run` action done.
//! Prints medians. Run: `cargo bench -p orgo-agent --bench automation`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark: an unwrap that fails is the run failing"
)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_agent::{Agent, AgentConfig, Server};
use orgo_agent_protocol::{
    AgentMessage, Event, FileEvent, FrameReader, HealthSpec, OnFail, Op, Probe, Reply, Request,
    TriggerAction, TriggerSource, TriggerSpec, encode,
};

struct Host {
    stream: UnixStream,
    frames: FrameReader<UnixStream>,
    next: u64,
}

impl Host {
    fn call(&mut self, op: Op) -> Reply {
        let id = self.next;
        self.next += 1;
        self.stream.write_all(&encode(&Request { id, op })).unwrap();
        loop {
            if let AgentMessage::Response { id: got, reply } = self.frames.read().unwrap().unwrap()
                && got == id
            {
                return reply;
            }
        }
    }

    fn wait(&mut self, pred: impl Fn(&Event) -> bool) -> Instant {
        loop {
            if let AgentMessage::Event { event } = self.frames.read().unwrap().unwrap()
                && pred(&event)
            {
                return Instant::now();
            }
        }
    }
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let root = std::env::temp_dir().join(format!("orgo-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let rss_before = rss_kib();
    let server = Arc::new(Server::new(Agent::new(AgentConfig::sandbox(&root))));
    let (host, guest) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let writer = guest.try_clone().unwrap();
        server.serve(guest, Box::new(writer), true);
    });
    let frames = FrameReader::new(host.try_clone().unwrap());
    let mut host = Host {
        stream: host,
        frames,
        next: 1,
    };
    let mut triggers = Vec::new();
    for i in 0..4 {
        triggers.push(TriggerSpec {
            name: format!("cron-{i}"),
            source: TriggerSource::Schedule {
                cron: format!("{} 3 * * *", i * 10),
            },
            actions: vec![TriggerAction::Run {
                command: "true".into(),
            }],
            dedup_ms: None,
        });
    }
    for i in 0..3 {
        let dir = root.join(format!("watch-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        triggers.push(TriggerSpec {
            name: format!("file-{i}"),
            source: TriggerSource::File {
                path: dir.display().to_string(),
                events: vec![FileEvent::Create],
            },
            actions: vec![TriggerAction::Run {
                command: "true".into(),
            }],
            dedup_ms: None,
        });
        triggers.push(TriggerSpec {
            name: format!("hook-{i}"),
            source: TriggerSource::Webhook {
                path: format!("/hook-{i}"),
            },
            actions: vec![TriggerAction::Alert {
                message: "hook".into(),
            }],
            dedup_ms: None,
        });
    }
    assert_eq!(host.call(Op::SetTriggers { triggers }), Reply::Done);
    host.call(Op::SetHealthChecks {
        checks: vec![HealthSpec {
            app: "app".into(),
            probe: Probe::Process {
                process: "init".into(),
            },
            every_ms: 15_000,
            timeout_ms: 3_000,
            retries: 3,
            on_fail: OnFail::None,
        }],
    });
    let Reply::Metrics { text } = host.call(Op::Metrics) else {
        panic!("metrics")
    };
    assert!(!text.is_empty());

    // Idle: 30 s with everything armed.
    let idle = Duration::from_secs(30);
    let ticks = cpu_ticks();
    std::thread::sleep(idle);
    let used = Duration::from_millis((cpu_ticks() - ticks) * 10);
    println!(
        "idle with 10 triggers and a health check: {:.3}% of one CPU over {} s ({} ms of CPU); resident memory of agent and harness {} KiB ({} KiB more than before the agent)",
        used.as_secs_f64() / idle.as_secs_f64() * 100.0,
        idle.as_secs(),
        used.as_millis(),
        rss_kib(),
        rss_kib().saturating_sub(rss_before),
    );

    // File event to trigger fired, and to its `run` action done.
    let (mut fired, mut done) = (Vec::new(), Vec::new());
    for i in 0..51 {
        let path = root.join("watch-0").join(format!("f{i}"));
        let t0 = Instant::now();
        std::fs::write(&path, b"x").unwrap();
        let t1 =
            host.wait(|e| matches!(e, Event::TriggerFired { trigger, .. } if trigger == "file-0"));
        let t2 = host.wait(|e| matches!(e, Event::TriggerDone { trigger } if trigger == "file-0"));
        fired.push(t1 - t0);
        done.push(t2 - t0);
    }
    println!(
        "file event to trigger fired: median {:?}; to its `run` action done: median {:?} (51 runs)",
        median(fired),
        median(done)
    );
    let _ = std::fs::remove_dir_all(&root);
}
