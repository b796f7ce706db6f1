//! Metrics in the Prometheus text format (version 0.0.4): the computer's
//! CPU, memory, disk and network figures, and each service's state,
//! restarts and health. [`Op::Metrics`](orgo_agent_protocol::Op::Metrics)
//! returns them (`orgo metrics ID`); with `telemetry.metrics: true` the
//! agent also serves them to a Prometheus server at
//! `http://<computer>:9464/metrics` ([`SCRAPE_PORT`]). Scrapes are not
//! activity for auto-stop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use orgo_agent_protocol::ServiceState;

use crate::agent::Agent;

/// The port the scrape endpoint listens on, in the guest.
pub(crate) const SCRAPE_PORT: u16 = 9464;

/// The most bytes of a scrape request read.
const MAX_REQUEST_BYTES: usize = 8 << 10;

/// The last result of each app's health check.
#[derive(Default)]
pub(crate) struct HealthState {
    apps: Mutex<BTreeMap<String, (bool, u32)>>,
}

impl HealthState {
    pub(crate) fn set(&self, app: &str, healthy: bool, failures: u32) {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_owned(), (healthy, failures));
    }

    pub(crate) fn clear(&self) {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn snapshot(&self) -> BTreeMap<String, (bool, u32)> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let joined: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", joined.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// `/proc/stat`'s first line: seconds per mode (USER_HZ is 100).
fn cpu_seconds(stat: &str) -> Vec<(&'static str, f64)> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(1)
        .zip(MODES)
        .filter_map(|(v, mode)| Some((mode, v.parse::<f64>().ok()? / 100.0)))
        .collect()
}

/// `/proc/meminfo`'s `name:` in bytes.
fn meminfo(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: f64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `/proc/net/dev`: (device, received bytes, sent bytes), loopback left out.
fn net_dev(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (dev, rest) = line.split_once(':')?;
            let dev = dev.trim();
            if dev == "lo" {
                return None;
            }
            let fields: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some((dev.to_owned(), *fields.first()?, *fields.get(8)?))
        })
        .collect()
}

/// The metrics now, in the Prometheus text format.
pub(crate) fn render(agent: &Agent) -> String {
    let root = agent.root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let cpu = cpu_seconds(&read("proc/stat"));
    if !cpu.is_empty() {
        f.head(
            "orgo_cpu_seconds_total",
            "counter",
            "Seconds the vCPUs spent in each mode.",
        );
        for (mode, secs) in cpu {
            f.sample("orgo_cpu_seconds_total", &[("mode", mode)], secs);
        }
    }
    let mem = read("proc/meminfo");
    for (name, field, help) in [
        (
            "orgo_memory_total_bytes",
            "MemTotal:",
            "Memory the guest has.",
        ),
        (
            "orgo_memory_available_bytes",
            "MemAvailable:",
            "Memory available to new work.",
        ),
    ] {
        if let Some(value) = meminfo(&mem, field) {
            f.head(name, "gauge", help);
            f.sample(name, &[], value);
        }
    }
    if let Ok(vfs) = rustix::fs::statvfs(root) {
        let unit = vfs.f_frsize as f64;
        f.head(
            "orgo_disk_total_bytes",
            "gauge",
            "Size of the root file system.",
        );
        f.sample(
            "orgo_disk_total_bytes",
            &[("mount", "/")],
            vfs.f_blocks as f64 * unit,
        );
        f.head(
            "orgo_disk_free_bytes",
            "gauge",
            "Free space of the root file system.",
        );
        f.sample(
            "orgo_disk_free_bytes",
            &[("mount", "/")],
            vfs.f_bavail as f64 * unit,
        );
    }
    let net = net_dev(&read("proc/net/dev"));
    if !net.is_empty() {
        f.head(
            "orgo_network_receive_bytes_total",
            "counter",
            "Bytes received, by device.",
        );
        for (dev, rx, _) in &net {
            f.sample("orgo_network_receive_bytes_total", &[("device", dev)], *rx);
        }
        f.head(
            "orgo_network_transmit_bytes_total",
            "counter",
            "Bytes sent, by device.",
        );
        for (dev, _, tx) in &net {
            f.sample("orgo_network_transmit_bytes_total", &[("device", dev)], *tx);
        }
    }
    let services = agent.supervisor().status();
    if !services.is_empty() {
        f.head(
            "orgo_service_up",
            "gauge",
            "1 while the service's process runs.",
        );
        for s in &services {
            let up = if s.state == ServiceState::Running {
                1.0
            } else {
                0.0
            };
            f.sample("orgo_service_up", &[("service", &s.name)], up);
        }
        f.head(
            "orgo_service_restarts_total",
            "counter",
            "Starts of the service after its first.",
        );
        for s in &services {
            f.sample(
                "orgo_service_restarts_total",
                &[("service", &s.name)],
                f64::from(s.restarts),
            );
        }
    }
    let health = agent.health_state().snapshot();
    if !health.is_empty() {
        f.head(
            "orgo_health_healthy",
            "gauge",
            "1 when the app's last health probe passed.",
        );
        for (app, (healthy, _)) in &health {
            f.sample(
                "orgo_health_healthy",
                &[("app", app)],
                f64::from(u8::from(*healthy)),
            );
        }
        f.head(
            "orgo_health_failures",
            "gauge",
            "Consecutive failed probes of the app's health check.",
        );
        for (app, (_, failures)) in &health {
            f.sample(
                "orgo_health_failures",
                &[("app", app)],
                f64::from(*failures),
            );
        }
    }
    if let Some(shipper) = agent.shipper() {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, value) in [
            (
                "orgo_telemetry_sent_lines_total",
                "Log lines pushed to the OTLP endpoint.",
                shipper.sent.load(Relaxed),
            ),
            (
                "orgo_telemetry_dropped_lines_total",
                "Log lines dropped because the push buffer was full.",
                shipper.dropped.load(Relaxed),
            ),
            (
                "orgo_telemetry_failed_pushes_total",
                "Pushes to the OTLP endpoint that failed (and were retried).",
                shipper.failures.load(Relaxed),
            ),
        ] {
            f.head(name, "counter", help);
            f.sample(name, &[], value as f64);
        }
    }
    out
}

/// Serves [`render`] at `/metrics` on [`SCRAPE_PORT`] until the agent is
/// gone; one connection at a time, each bounded in size and time.
pub(crate) fn serve(agent: Weak<Agent>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", SCRAPE_PORT))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(agent) = agent.upgrade() else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while request.len() < MAX_REQUEST_BYTES && !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let response = if line.starts_with("GET /metrics ") {
                    let body = render(&agent);
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        })?;
    Ok(())
}

/// Whether the scrape endpoint was started (once per agent).
#[derive(Default)]
pub(crate) struct Endpoint {
    started: Mutex<bool>,
}

impl Endpoint {
    /// Starts serving, once.
    pub(crate) fn start(&self, agent: &Arc<Agent>) -> std::io::Result<()> {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if !*started {
            serve(Arc::downgrade(agent))?;
            *started = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "cpu  100 0 50 1000 5 0 1 0 0 0\ncpu0 100 0 50 1000 5 0 1 0 0 0\n";
        let cpu = cpu_seconds(stat);
        assert_eq!(cpu[0], ("user", 1.0));
        assert_eq!(cpu[3], ("idle", 10.0));
        assert_eq!(
            meminfo(
                "MemTotal:        1000 kB\nMemAvailable:     500 kB\n",
                "MemAvailable:"
            ),
            Some(512_000.0)
        );
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 2000 3 0 0 0 0 0 0 4000 5 0 0 0 0 0 0\n";
        assert_eq!(net_dev(dev), [("eth0".to_owned(), 2000.0, 4000.0)]);
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
