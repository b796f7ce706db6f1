//! The network commands of `orgo` without a VM: the rootless refusal (run
//! as `nobody` with `setpriv`), and `orgo ports`/`orgo egress` on a computer
//! that does not exist.

use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `orgo ARGS` over the store `store`, as `nobody` when `as_nobody`.
fn orgo(store: &std::path::Path, args: &[&str], as_nobody: bool) -> Output {
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_orgo"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_orgo"))
    };
    command
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("ORGO_HOME")
        .env("HOME", store)
        .output()
        .expect("orgo runs")
}

#[test]
fn without_root_a_template_with_network_fields_is_refused_naming_each() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test drops root with setpriv: run it as root"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    let template = dir.path().join("t.yaml");
    std::fs::write(
        &template,
        "api_version: orgo.ai/v1\nname: net@1.0.0\n\
         egress_policy: { mode: allow, rules: [api.github.com] }\n\
         hardware: { bandwidth_mbps: 10 }\n\
         apps: [{ name: web, ports: [{ internal: 8000, public: true }] }]\n",
    )
    .expect("write");
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "api_version: orgo.ai/v1\nname: plain@1.0.0\n").expect("write");
    for path in [dir.path(), &store, &template, &plain] {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .expect("chown to nobody");
    }
    let t = template.to_str().expect("UTF-8");
    let out = orgo(&store, &["build", "--check", t], true);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for field in [
        "egress_policy",
        "apps[0].ports[0]",
        "hardware.bandwidth_mbps",
    ] {
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
    }
    assert!(err.contains("needs root or CAP_NET_ADMIN"), "{err}");
    // A template without them runs there (user-mode network).
    let out = orgo(
        &store,
        &["build", "--check", plain.to_str().expect("UTF-8")],
        true,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // As root, the same template passes the check.
    let out = orgo(&store, &["build", "--check", t], false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn ports_and_egress_of_an_unknown_computer_say_so() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for command in ["ports", "egress"] {
        let out = orgo(dir.path(), &[command, "c-0123456789ab"], false);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{command}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("c-0123456789ab"),
            "{command}: {}",
            text(&out.stderr)
        );
    }
}
