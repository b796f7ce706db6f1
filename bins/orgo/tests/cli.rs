//! The `orgo` binary as a user runs it: output, diagnostics and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn orgo(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        // The same answers as root or not: the user-mode network, which
        // refuses the network fields (`net_cli.rs` checks both).
        .env("ORGO_USER_NET", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orgo runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    // orgo may stop reading early (an oversized input): a broken pipe is fine.
    let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
    drop(input);
    child.wait_with_output().expect("orgo finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

const BROKEN: &str = "bins/orgo/tests/data/broken.yaml";

#[test]
fn validate_prints_digests() {
    let out = orgo(
        &[
            "validate",
            "examples/workstation.yaml",
            "examples/workstation-sugar.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn validate_reports_every_problem_with_file_line_and_path() {
    let out = orgo(&["validate", "examples/workstation.yaml", BROKEN], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("examples/workstation.yaml: valid sha256:"));
    insta::assert_snapshot!(text(&out.stderr));
}

#[test]
fn validate_json_is_machine_readable() {
    let out = orgo(&["validate", "--json", BROKEN], None);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["valid"], false);
    let first = &report["errors"][0];
    assert_eq!(first["path"], "name");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(2), Some(7))
    );
    let cpu = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "cpu")
        .expect("a cpu error");
    assert_eq!(cpu["segments"], serde_json::json!(["cpu"]));
    insta::assert_snapshot!(serde_json::to_string_pretty(&report).unwrap());
}

#[test]
fn digest_reads_stdin_and_matches_normalize_json() {
    let sugar = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/workstation-sugar.yaml"
    ))
    .unwrap();
    let out = orgo(&["digest", "-"], Some(&sugar));
    assert_eq!(out.status.code(), Some(0));
    let digest = text(&out.stdout);
    assert_eq!(
        digest,
        "sha256:11e9d150aa5e645753981a75b1e410c11e2058688dca986c0a39a18671c29b87\n"
    );

    let json = orgo(&["normalize", "--format", "json", "-"], Some(&sugar));
    assert_eq!(json.status.code(), Some(0));
    let canonical = text(&json.stdout);
    let hashed = canonical.strip_suffix('\n').expect("one trailing newline");
    let again = orgo(&["digest", "-"], Some(hashed));
    assert_eq!(
        text(&again.stdout),
        digest,
        "the canonical JSON is a document with the same digest"
    );
}

#[test]
fn normalize_prints_the_canonical_yaml() {
    let out = orgo(&["normalize", "examples/workstation-sugar.yaml"], None);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["validate"][..],
        &["frobnicate"],
        &["normalize", "--format", "toml", "x.yaml"],
    ] {
        let out = orgo(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = orgo(&["digest", "no/such/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: cannot read `no/such/file.yaml`: "));
}

#[test]
fn schema_is_the_committed_one() {
    let out = orgo(&["schema"], None);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../orgo-template/schema/orgo.ai-v1.schema.json"
    ))
    .unwrap();
    assert!(
        text(&out.stdout) == committed,
        "`orgo schema` differs from orgo-template/schema/orgo.ai-v1.schema.json; \
         regenerate it with ORGO_BLESS=1 cargo test -p orgo-template --test schema"
    );
}

#[test]
fn stdin_yaml_flow_mapping_is_not_taken_for_json() {
    let out = orgo(
        &["digest", "-"],
        Some("{api_version: orgo.ai/v1, name: x@1.0.0}"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = orgo(
        &["digest", "-"],
        Some(r#"{"api_version": "orgo.ai/v1", "name": "x@1.0.0"}"#),
    );
    assert_eq!(out.stdout, json.stdout);
}

#[test]
fn validate_goes_on_past_an_unreadable_file() {
    let out = orgo(
        &[
            "validate",
            "--json",
            "no/such.yaml",
            "examples/workstation.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot read `no/such.yaml`")
    );
    assert_eq!(lines[1]["valid"], true);
}

#[test]
fn oversized_input_is_refused_without_reading_it_all() {
    let big = "#".repeat(orgo_template::MAX_DOCUMENT_BYTES + 10);
    let out = orgo(&["validate", "-"], Some(&big));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: `<stdin>` is over the 4194304-byte limit of a template\n"
    );
}

#[test]
fn build_check_names_every_field_this_host_cannot_honour_and_builds_nothing() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let home = home.path().to_str().expect("a UTF-8 path");
    let refused = "api_version: orgo.ai/v1\nname: g@1.0.0\nhardware: { gpu: h100, region: iad }\negress_policy: { mode: allow, rules: [api.github.com] }\n";
    let out = orgo(&["--store", home, "build", "--check", "-"], Some(refused));
    assert_eq!(out.status.code(), Some(1), "no is an answer");
    assert_eq!(text(&out.stdout), "");
    insta::assert_snapshot!(text(&out.stderr));
    let fine = orgo(
        &["--store", home, "build", "--check", "examples/hello.yaml"],
        None,
    );
    assert_eq!(fine.status.code(), Some(0), "{}", text(&fine.stderr));
    assert!(text(&fine.stdout).starts_with("examples/hello.yaml: this host can run `sha256:"));
    assert!(!std::path::Path::new(home).join("computers").exists());
}

#[test]
fn desktop_commands_check_their_arguments_and_name_a_missing_computer() {
    for args in [
        &["click", "c-1", "1"][..],
        &["click", "c-1", "1", "2", "--button", "thumb"],
        &["scroll", "c-1", "sideways"],
        &["scroll", "c-1", "down", "2", "--at", "3"],
        &["screenshot", "c-1", "--region", "1,2,3"],
        &["move", "c-1", "-1", "2"],
        &["stream", "restart", "c-1", "live"],
    ] {
        let out = orgo(args, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let home = tempfile::tempdir().expect("a scratch home");
    let store = home.path().to_str().expect("a UTF-8 path");
    let out = orgo(&["--store", store, "screenshot", "c-000000000000"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("c-000000000000"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn orgo_launch_refuses_restart_vm_naming_the_field_and_orgo_build_takes_it() {
    let home = tempfile::tempdir().expect("a scratch home");
    let store = home.path().join("store");
    let template = home.path().join("restart.yaml");
    std::fs::write(
        &template,
        "api_version: orgo.ai/v1\nname: restart@1.0.0\n\
         apps: [{ name: web, services: [{ name: web, run: 'sleep infinity' }],\n  \
         health: { type: command, command: 'true', on_fail: restart_vm } }]\n",
    )
    .expect("write");
    let (store, t) = (
        store.to_str().expect("UTF-8"),
        template.to_str().expect("UTF-8"),
    );
    // `orgo launch` exits at once: nothing would stay to restart it. It
    // fails as a launch of a refused field does, before anything is built.
    let out = orgo(&["--store", store, "launch", t], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(text(&out.stderr));
    // The field matters only at launch: the build takes it.
    let out = orgo(&["--store", store, "build", "--check", t], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
