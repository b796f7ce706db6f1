//! The store commands as a user runs them, each test on its own store.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn orgo(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgo"))
        .arg("--store")
        .arg(store)
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("ORGO_HOME")
        .output()
        .expect("orgo runs")
}

/// stdout and stderr, with the store's path made stable.
fn text(out: &Output, store: &Path) -> String {
    let mut text = String::from_utf8(out.stdout.clone()).expect("UTF-8");
    text.push_str(&String::from_utf8(out.stderr.clone()).expect("UTF-8"));
    text.replace(&store.display().to_string(), "[STORE]")
}

const APP: &str = "examples/my-app.yaml";

#[test]
fn publish_resolve_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let first = orgo(store, &["publish", APP]);
    assert_eq!(first.status.code(), Some(0));
    let again = orgo(store, &["publish", APP]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "publishing the same document is a no-op"
    );
    let team = orgo(
        store,
        &[
            "publish",
            "--namespace",
            "team",
            "examples/workstation.yaml",
        ],
    );
    assert_eq!(team.status.code(), Some(0));
    let listed = orgo(store, &["templates"]);
    let team_only = orgo(store, &["templates", "team"]);
    let resolved = orgo(store, &["resolve", "my-app@1.0.0"]);
    let digest = orgo(store, &["digest", APP]);
    assert_eq!(
        resolved.stdout, digest.stdout,
        "resolve prints the published digest"
    );
    let json = orgo(
        store,
        &["resolve", "default/my-app@1.0.0", "--format", "json"],
    );
    let normalized = orgo(store, &["normalize", APP, "--format", "json"]);
    assert_eq!(
        json.stdout, normalized.stdout,
        "the stored template is the canonical one"
    );
    insta::assert_snapshot!(
        [&first, &again, &team, &listed, &team_only]
            .map(|o| text(o, store))
            .join("---\n")
    );
}

#[test]
fn a_published_version_is_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    assert_eq!(orgo(store, &["publish", APP]).status.code(), Some(0));
    let changed = dir.path().join("changed.yaml");
    let text_in = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(APP),
    )
    .unwrap();
    std::fs::write(&changed, text_in.replace("production", "staging")).unwrap();
    let out = orgo(store, &["publish", changed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out, store));
}

#[test]
fn missing_refs_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let missing = orgo(store, &["resolve", "nothing@1.0.0"]);
    assert_eq!(missing.status.code(), Some(1));
    let bad_ref = orgo(store, &["resolve", "Not A Ref"]);
    assert_eq!(bad_ref.status.code(), Some(2));
    let bad_ns = orgo(store, &["publish", "--namespace", "Bad_NS", APP]);
    assert_eq!(bad_ns.status.code(), Some(2));
    let invalid = orgo(store, &["publish", "bins/orgo/tests/data/broken.yaml"]);
    assert_eq!(
        invalid.status.code(),
        Some(1),
        "an invalid template is not published"
    );
    let listed = String::from_utf8(orgo(store, &["templates"]).stdout).unwrap();
    assert!(
        listed.lines().all(|l| l.starts_with("system/")),
        "only the curated templates: {listed}"
    );
    insta::assert_snapshot!(
        [&missing, &bad_ref, &bad_ns]
            .map(|o| text(o, store))
            .join("---\n")
    );
}

/// The curated templates: listed, resolved and launched by ref without a
/// store of their own, never published. Their digests are in the snapshot:
/// a curated version is immutable, so a change to one of its files shows
/// here and needs a new version.
#[test]
fn system_templates_are_listed_and_resolved_and_not_publishable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let listed = orgo(store, &["templates", "system"]);
    assert_eq!(listed.status.code(), Some(0));
    let resolved = orgo(store, &["resolve", "system/python@1.0.0"]);
    assert_eq!(resolved.status.code(), Some(0));
    let digest = orgo(store, &["digest", "templates/system/python.yaml"]);
    assert_eq!(resolved.stdout, digest.stdout);
    let yaml = orgo(
        store,
        &["resolve", "system/nodejs@1.0.0", "--format", "yaml"],
    );
    let normalized = orgo(store, &["normalize", "templates/system/nodejs.yaml"]);
    assert_eq!(yaml.stdout, normalized.stdout);
    let unknown = orgo(store, &["resolve", "system/ruby@1.0.0"]);
    assert_eq!(unknown.status.code(), Some(1));
    let publish = orgo(store, &["publish", "--namespace", "system", APP]);
    assert_eq!(publish.status.code(), Some(2));
    assert_eq!(orgo(store, &["publish", APP]).status.code(), Some(0));
    let all = orgo(store, &["templates"]);
    insta::assert_snapshot!(
        [&listed, &resolved, &unknown, &publish, &all]
            .map(|o| text(o, store))
            .join("---\n")
    );
}

#[test]
fn verify_finds_corruption_and_gc_keeps_published_templates() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    assert_eq!(orgo(store, &["publish", APP]).status.code(), Some(0));
    let clean = orgo(store, &["store", "verify"]);
    assert_eq!(clean.status.code(), Some(0));
    let gc = orgo(store, &["store", "gc"]);
    assert_eq!(gc.status.code(), Some(0));
    assert_eq!(
        orgo(store, &["resolve", "my-app@1.0.0"]).status.code(),
        Some(0)
    );

    // Flip the stored template's bytes, as a failing disk would.
    let digest = String::from_utf8(orgo(store, &["digest", APP]).stdout).unwrap();
    let hex = digest.trim().strip_prefix("sha256:").unwrap();
    let blob = store.join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let corrupt = orgo(store, &["store", "verify"]);
    assert_eq!(corrupt.status.code(), Some(1));
    let resolved = orgo(store, &["resolve", "my-app@1.0.0", "--format", "yaml"]);
    assert_eq!(
        resolved.status.code(),
        Some(2),
        "corrupt data is never printed as good"
    );
    assert!(resolved.stdout.is_empty());
    let text = [&clean, &gc, &corrupt, &resolved]
        .map(|o| text(o, store))
        .join("---\n");
    insta::assert_snapshot!(text.replace(hex, "[HEX]"));
}
