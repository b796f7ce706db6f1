//! The curated templates (`templates/system/`), each built as shipped under
//! QEMU TCG and launched, then used as root and as the default user `orgo`.
//! One test per template; each prints how long its build took (or that it
//! was a cache hit: the templates carry no nonce, so a store that built one
//! already launches it from its snapshot).
//!
//! Needs root, QEMU, mmdebstrap, and Debian's mirror, PyPI and the npm
//! registry reachable from the guest. The store is `target/orgo-test-home`,
//! shared with `runtime_e2e.rs` (the base image is built there once).
//!
//! A host behind a TLS-intercepting proxy trusts the proxy's CA, and the
//! guest, whose HTTPS goes out through the host, must trust it too: the
//! runtime is given the host's locally added CA certificates
//! (`RuntimeConfig::guest_ca_certs`), when it has any.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orgo_runtime::{
    BuildEvent, Computer, Exec, LaunchOptions, Runtime, RuntimeError, Vault, VaultError,
    system_template,
};
use orgo_template::Template;

/// Node and Claude Code start slowly under TCG.
const T: Duration = Duration::from_secs(300);

async fn runtime() -> Runtime {
    common::test_runtime().await
}

/// The curated template `reference`, as shipped.
fn template(reference: &str) -> Template {
    system_template(&reference.parse().unwrap()).unwrap()
}

/// Builds `template` (printing how long that took) and launches it.
async fn build_and_launch(
    runtime: &Runtime,
    template: &Template,
    options: LaunchOptions,
) -> Computer {
    let reference = format!(
        "system/{}@{}",
        template.template().name,
        template.template().version
    );
    let mut log = |event: BuildEvent| {
        if let BuildEvent::Status(text) = &event {
            eprintln!("[{reference}] {text}");
        }
    };
    let started = Instant::now();
    let built = runtime.build(template, &mut log).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    if built.built_here {
        eprintln!("[{reference}] built in {elapsed:.1} s");
    } else {
        eprintln!("[{reference}] cached");
    }
    runtime.launch(template, options, &mut log).await.unwrap()
}

/// Runs `script` as `user` (root when `None`); its stdout, after checking
/// that it exited 0.
async fn sh(computer: &Computer, user: Option<&str>, script: &str) -> String {
    let mut exec = Exec::shell(script);
    exec.user = user.map(str::to_owned);
    let out = computer.exec(exec, T).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}` as {user:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const USERS: [Option<&str>; 2] = [None, Some("orgo")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_has_python3_and_uv_for_root_and_orgo() {
    let runtime = runtime().await;
    let computer = build_and_launch(
        &runtime,
        &template("system/python@1.0.0"),
        LaunchOptions::default(),
    )
    .await;
    for user in USERS {
        assert_eq!(sh(&computer, user, "python3 -c 'print(1+1)'").await, "2\n");
        assert!(
            sh(&computer, user, "python --version")
                .await
                .starts_with("Python 3.")
        );
        let uv = sh(&computer, user, "uv --version").await;
        assert!(uv.starts_with("uv 0.13.9"), "{uv}");
    }
    // uv makes a virtual environment from the system's Python (no network).
    let venv = sh(
        &computer,
        Some("orgo"),
        "cd ~ && uv venv -q --no-python-downloads .venv && .venv/bin/python -c 'import sys; print(sys.prefix)'",
    )
    .await;
    assert_eq!(venv, "/home/orgo/.venv\n");
    computer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_has_node_22_and_npm_for_root_and_orgo() {
    let runtime = runtime().await;
    let computer = build_and_launch(
        &runtime,
        &template("system/nodejs@1.0.0"),
        LaunchOptions::default(),
    )
    .await;
    for user in USERS {
        let node = sh(&computer, user, "node --version").await;
        assert!(node.starts_with("v22."), "{node}");
        assert!(
            sh(&computer, user, "npm --version")
                .await
                .starts_with("10.")
        );
        assert_eq!(
            sh(&computer, user, "node -e 'console.log(1 + 1)'").await,
            "2\n"
        );
    }
    assert_eq!(
        sh(&computer, None, "npm prefix -g").await,
        "/usr/local\n",
        "global packages go where node is"
    );
    computer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_with_its_key_and_refuses_to_launch_without_it() {
    let runtime = runtime().await;
    let reference = "system/claude-code@1.0.0";
    let template = template(reference);
    let mut nothing = |_: BuildEvent| panic!("nothing may be built without the key");
    let error = runtime
        .launch(&template, LaunchOptions::default(), &mut nothing)
        .await
        .unwrap_err();
    let RuntimeError::Vault(VaultError::Missing { names }) = &error else {
        panic!("a missing secret, not {error:?}");
    };
    assert_eq!(
        names,
        &[("secrets[0]".to_owned(), "anthropic_api_key".to_owned())]
    );

    let options = LaunchOptions {
        vault: Vault::new().with(BTreeMap::from([(
            "anthropic_api_key".into(),
            "sk-ant-dummy".into(),
        )])),
        ..LaunchOptions::default()
    };
    let computer = build_and_launch(&runtime, &template, options).await;
    for user in USERS {
        let version = sh(&computer, user, "claude --version").await;
        assert!(version.contains("Claude Code"), "{version}");
        assert_eq!(
            sh(&computer, user, "bash -lc 'echo $ANTHROPIC_API_KEY'").await,
            "sk-ant-dummy\n"
        );
    }
    computer.stop().await.unwrap();
}
