//! The CLI's remote mode (`--remote URL`, `ORGO_API_KEY`) against a real
//! `orgo serve`, and `orgo cp` both ways in both modes, under QEMU TCG:
//! publish (published, already published, a conflict and an invalid
//! document with the local command's output and exit codes), templates,
//! resolve, build, launch (learning its egress), exec (output and exit
//! code passed through; 125 for orgo's own failures), ps, cp, egress (the
//! local command's output on the same computer), the desktop commands on a
//! headless computer (the local command's error and exit code), `vnc`
//! refused, stop; a bad key.
//!
//! Needs root, QEMU and the base image in `target/orgo-test-home` (shared
//! with the other VM tests); its template is the restart test's, so one
//! of them builds it and the other finds it built.

#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "../../../orgo-runtime/tests/common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::{guest_ca_certs, static_agent, test_home, workspace};

const BASE: &str = "api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: [\"echo base > /opt/base.txt\"]\n";

fn orgo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgo"));
    command
        .current_dir(workspace())
        .env("ORGO_HOME", test_home())
        .env("ORGO_ACCEL", "tcg")
        .env("ORGO_AGENT", static_agent())
        .env_remove("ORGO_URL")
        .env_remove("ORGO_API_KEY")
        .env_remove("ORGO_CLOUD_HYPERVISOR");
    if let Some(certs) = guest_ca_certs() {
        command.env("ORGO_GUEST_CA_CERTS", certs);
    }
    command
}

struct Remote {
    server: Child,
    url: String,
    key: String,
}

impl Remote {
    fn run(&self, args: &[&str]) -> Output {
        self.with_key(&self.key, args)
    }

    fn with_key(&self, key: &str, args: &[&str]) -> Output {
        orgo()
            .env("ORGO_URL", &self.url)
            .env("ORGO_API_KEY", key)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn remote_commands_match_the_local_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(&base, BASE).unwrap();
    let base = base.to_str().unwrap();
    let key = text(
        &orgo()
            .args(["keys", "create", "--namespace", "remote"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    let mut server = orgo()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let remote = Remote {
        server,
        url: format!("http://{}", line.trim()),
        key,
    };

    // Publish: the local command's lines and exit codes.
    let first = ok(&remote.run(&["publish", base]), "publish");
    let again = ok(&remote.run(&["publish", base]), "publish again");
    // The shared store may hold it from an earlier run.
    let stem = again.trim_end().trim_end_matches(" (already published)");
    assert!(
        first == format!("{stem} (published)\n") || first == again,
        "{first}"
    );
    assert!(
        again.starts_with("remote/restart-base@1.0.0 sha256:")
            && again.ends_with(" (already published)\n"),
        "{again}"
    );
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, format!("{BASE}env: {{ A: b }}\n")).unwrap();
    let conflict = remote.run(&["publish", other.to_str().unwrap()]);
    assert_eq!(
        conflict.status.code(),
        Some(1),
        "{}",
        text(&conflict.stderr)
    );
    assert!(
        text(&conflict.stderr).contains("already published"),
        "{}",
        text(&conflict.stderr)
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "api_version: orgo.ai/v1\nname: b@1.0.0\nhardwares: {}\n",
    )
    .unwrap();
    let invalid_remote = remote.run(&["publish", broken.to_str().unwrap()]);
    let invalid_local = orgo()
        .args(["validate", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        (invalid_remote.status.code(), text(&invalid_remote.stderr)),
        (invalid_local.status.code(), text(&invalid_local.stderr))
    );
    let unknown = remote.run(&["resolve", "remote/none@1.0.0"]);
    assert_eq!(unknown.status.code(), Some(1));
    let bad_key = remote.with_key("orgo_00", &["templates"]);
    assert_eq!(bad_key.status.code(), Some(2), "{}", text(&bad_key.stderr));

    // Templates and resolve.
    let listed = ok(&remote.run(&["templates", "remote"]), "templates");
    let digest = again.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(listed, format!("remote/restart-base@1.0.0 {digest}\n"));
    assert_eq!(
        ok(
            &remote.run(&["resolve", "remote/restart-base@1.0.0"]),
            "resolve"
        ),
        format!("{digest}\n")
    );
    let local_yaml = ok(
        &orgo().args(["normalize", base]).output().unwrap(),
        "normalize",
    );
    assert_eq!(
        ok(
            &remote.run(&["resolve", "remote/restart-base@1.0.0", "--format", "yaml"]),
            "resolve yaml"
        ),
        local_yaml
    );

    // Build, launch, exec.
    let built = ok(
        &remote.run(&["build", "remote/restart-base@1.0.0"]),
        "build",
    );
    let parts: Vec<&str> = built.split_whitespace().collect();
    assert_eq!(parts[0], digest);
    assert!(
        parts[1].starts_with("sha256:")
            && (built.ends_with("(cached)\n") || built.contains("(built in")),
        "{built}"
    );
    let id = ok(
        &remote.run(&["launch", "--egress-learn", "remote/restart-base@1.0.0"]),
        "launch",
    )
    .trim()
    .to_owned();
    assert!(id.starts_with("c-") && id.len() == 14, "{id}");
    let exec = remote.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "cat /opt/base.txt; echo err >&2; exit 7",
    ]);
    assert_eq!(
        (exec.status.code(), text(&exec.stdout)),
        (Some(7), "base\n".to_owned())
    );
    assert!(text(&exec.stderr).contains("err"));
    assert_eq!(
        remote
            .run(&["exec", "c-000000000000", "--", "true"])
            .status
            .code(),
        Some(125)
    );
    let ps = ok(&remote.run(&["ps"]), "ps");
    assert!(
        ps.starts_with("ID ")
            && ps
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("running")),
        "{ps}"
    );

    // The automation's commands, remote: metrics, events and logs print
    // (this template has no services or triggers; api_vm checks their
    // content), a webhook no trigger has is a "no" (exit 1).
    let metrics = ok(&remote.run(&["metrics", &id]), "metrics");
    assert!(metrics.contains("orgo_cpu_seconds_total"), "{metrics}");
    ok(&remote.run(&["events", &id]), "events");
    ok(&remote.run(&["logs", &id]), "logs");
    let trigger = remote.run(&["trigger", &id, "/nope", "--data", "x"]);
    assert_eq!(trigger.status.code(), Some(1), "{}", text(&trigger.stderr));
    assert!(
        text(&trigger.stderr).contains("/nope"),
        "{}",
        text(&trigger.stderr)
    );

    // cp, remote, both ways.
    let payload = dir.path().join("payload.bin");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&payload, &bytes).unwrap();
    ok(
        &remote.run(&[
            "cp",
            payload.to_str().unwrap(),
            &format!("{id}:/tmp/payload.bin"),
        ]),
        "cp in",
    );
    let back = dir.path().join("back.bin");
    ok(
        &remote.run(&[
            "cp",
            &format!("{id}:/tmp/payload.bin"),
            back.to_str().unwrap(),
        ]),
        "cp out",
    );
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    // Egress: what the server's computer learned, as the local command
    // prints it from the same home.
    let learned = ok(&remote.run(&["egress", &id]), "egress");
    assert!(learned.starts_with("egress_policy:\n"), "{learned}");
    assert_eq!(
        learned,
        ok(
            &orgo().args(["egress", &id]).output().unwrap(),
            "local egress"
        )
    );
    assert_eq!(
        remote.run(&["egress", "c-000000000000"]).status.code(),
        orgo()
            .args(["egress", "c-000000000000"])
            .output()
            .unwrap()
            .status
            .code()
    );
    // Ports: the server's lines are the local command's, from the same home.
    assert_eq!(
        ok(&remote.run(&["ports", &id]), "ports"),
        ok(
            &orgo().args(["ports", &id]).output().unwrap(),
            "local ports"
        )
    );
    assert_eq!(
        remote.run(&["ports", "c-000000000000"]).status.code(),
        Some(1)
    );
    // The desktop commands reach the server: a headless computer says so.
    let mut headless = Vec::new();
    for args in [
        vec!["cursor", &id],
        vec!["screenshot", &id],
        vec!["click", &id, "1", "1"],
        vec!["scroll", &id, "down"],
    ] {
        let out = remote.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            text(&out.stderr).contains("has no desktop"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        headless.push((args[0], text(&out.stderr).replace(&id, "ID")));
    }
    let vnc = remote.run(&["vnc", &id]);
    assert_eq!(vnc.status.code(), Some(2));
    assert!(
        text(&vnc.stderr).contains("run it on the server's host"),
        "{}",
        text(&vnc.stderr)
    );
    assert_eq!(ok(&remote.run(&["stop", &id]), "stop"), format!("{id}\n"));

    // cp, local, both ways, on a computer the CLI launched.
    let local = ok(
        &orgo().args(["launch", base]).output().unwrap(),
        "local launch",
    )
    .trim()
    .to_owned();
    ok(
        &orgo()
            .args([
                "cp",
                payload.to_str().unwrap(),
                &format!("{local}:/tmp/p.bin"),
            ])
            .output()
            .unwrap(),
        "local cp in",
    );
    let out = orgo()
        .args(["cp", &format!("{local}:/tmp/p.bin"), "-"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, bytes, "local cp out: {}", text(&out.stderr));
    // The local desktop commands on a headless computer: the same error
    // and exit code as remote.
    for (command, remote_stderr) in &headless {
        let mut args = vec![*command, local.as_str()];
        if *command == "click" {
            args.extend(["1", "1"]);
        } else if *command == "scroll" {
            args.push("down");
        }
        let out = orgo().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "local {command}");
        assert_eq!(
            &text(&out.stderr).replace(&local, "ID"),
            remote_stderr,
            "{command}"
        );
    }
    let neither = orgo().args(["cp", "a", "b"]).output().unwrap();
    assert_eq!(neither.status.code(), Some(2));
    ok(
        &orgo().args(["stop", &local]).output().unwrap(),
        "local stop",
    );
}
