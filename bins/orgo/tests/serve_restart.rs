//! `orgo serve` killed and started again, under QEMU TCG: `kill -9`
//! mid-build and mid-launch leaves a consistent state (the build reported
//! `failed` with the reason, never `building`; its builder VM killed; the
//! half-launched computer swept; a running computer found again and
//! usable), `SIGTERM` cancels a build and leaves computers running, and
//! `orgo store verify` passes after each.
//!
//! Needs root, QEMU and the base image in `target/orgo-test-home` (shared
//! with the other VM tests).

#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{guest_ca_certs, nonce, static_agent, test_home, workspace};
use serde_json::{Value, json};

fn orgo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgo"));
    command
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_CLOUD_HYPERVISOR")
        .env_remove("ORGO_WARM_POOL");
    if let Some(certs) = guest_ca_certs() {
        command.env("ORGO_GUEST_CA_CERTS", certs);
    }
    command
}

/// A running `orgo serve` and its base URL.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start() -> Serve {
        let mut child = orgo()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "orgo serve printed no address");
        Serve {
            child,
            url: format!("http://{}", line.trim()),
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn sigterm(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn key() -> String {
    let out = orgo()
        .args(["keys", "create", "--namespace", "restart"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn publish(serve: &Serve, key: &str, document: String) {
    let response = http()
        .post(format!("{}/api/templates", serve.url))
        .bearer_auth(key)
        .body(document)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
}

fn get(serve: &Serve, key: &str, path: &str) -> Value {
    http()
        .get(format!("{}{path}", serve.url))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Reads the build's SSE stream until a frame of `field`'s step.
fn wait_for_step(serve: &Serve, key: &str, build: &str, field: &str) {
    let mut response = http()
        .get(format!("{}{build}/events", serve.url))
        .bearer_auth(key)
        .send()
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    let needle = format!("\"field\":\"{field}\"");
    while !seen.contains(&needle) {
        let n = response.read(&mut buffer).unwrap();
        assert!(n > 0, "the build ended before `{field}`: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
}

fn verify() {
    let out = orgo().args(["store", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "orgo store verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn computer_dirs() -> Vec<String> {
    std::fs::read_dir(test_home().join("computers"))
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line names `text`.
fn processes_naming(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

#[test]
fn kill_9_mid_build_and_mid_launch_then_sigterm() {
    let key = key();
    let serve = Serve::start();
    // A template built once for every run (a cache hit after the first),
    // and a computer launched from it that must survive every restart.
    publish(&serve, &key, "api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: [\"echo base > /opt/base.txt\"]\n".into());
    let launch = || {
        http()
            .post(format!("{}/api/computers", serve.url))
            .bearer_auth(&key)
            .json(&json!({"template_ref": "restart-base@1.0.0"}))
            .send()
    };
    let survivor: Value = launch().unwrap().json().unwrap();
    let survivor = survivor["id"].as_str().unwrap().to_owned();

    // Mid-build: kill -9 once the build runs its step in the guest.
    let run = nonce();
    publish(
        &serve,
        &key,
        format!(
            "api_version: orgo.ai/v1\nname: restart-slow-{run}@1.0.0\nenv: {{ RUN: \"{run}\" }}\nbuild:\n  run: [\"sleep 600\"]\n"
        ),
    );
    // Its own name each run: a version is immutable, and the home is
    // shared by every run of the tests.
    let build = &format!("/api/templates/restart/restart-slow-{run}/1.0.0/build");
    let started = http()
        .post(format!("{}{build}", serve.url))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    wait_for_step(&serve, &key, build, "build.run[0]");
    let scratch = test_home()
        .join("scratch")
        .join(format!("{}-", serve.child.id()));
    let scratch = scratch.to_str().unwrap().to_owned();
    assert!(
        !processes_naming(&scratch).is_empty(),
        "a builder VM runs in `{scratch}*`"
    );

    // Mid-launch: kill -9 once the launch has recorded its computer.
    let before = computer_dirs();
    let url = serve.url.clone();
    let key2 = key.clone();
    let launching = std::thread::spawn(move || {
        let _ = http()
            .post(format!("{url}/api/computers"))
            .bearer_auth(&key2)
            .json(&json!({"template_ref": "restart-base@1.0.0"}))
            .send();
    });
    let half = loop {
        if let Some(new) = computer_dirs()
            .into_iter()
            .find(|d| !before.contains(d) && !d.starts_with('.'))
        {
            break new;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    serve.kill9();
    launching.join().unwrap();
    verify();

    // Started again: the build failed with the reason, its builder VM is
    // gone, the half launch is swept, the survivor runs and answers.
    let serve = Serve::start();
    let status = get(&serve, &key, build);
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{status}"
    );
    assert!(
        processes_naming(&scratch).is_empty(),
        "the builder VM of the killed server was left running"
    );
    assert!(
        !computer_dirs().contains(&half),
        "the half-launched computer `{half}` was not swept"
    );
    let listed = get(&serve, &key, "/api/computers");
    let ids: Vec<&str> = listed["computers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&survivor.as_str()) && !ids.contains(&half.as_str()),
        "{listed}"
    );
    let exec = http()
        .post(format!("{}/api/computers/{survivor}/exec", serve.url))
        .bearer_auth(&key)
        .json(&json!({"command": "cat /opt/base.txt"}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(exec.contains("\"exit_code\":0"), "{exec}");
    verify();

    // SIGTERM mid-build: the build is cancelled, the computer keeps running.
    let again = http()
        .post(format!("{}{build}", serve.url))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 202);
    wait_for_step(&serve, &key, build, "build.run[0]");
    let status = serve.sigterm();
    assert!(
        status.success(),
        "orgo serve exited with {status} on SIGTERM"
    );
    let serve = Serve::start();
    let status = get(&serve, &key, build);
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["error"]["message"], "cancelled", "{status}");
    assert_eq!(
        get(&serve, &key, &format!("/api/computers/{survivor}"))["status"],
        "running"
    );
    verify();
    let stopped = http()
        .delete(format!("{}/api/computers/{survivor}", serve.url))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 200);
    serve.sigterm();
}
